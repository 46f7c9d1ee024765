//! Identifiers. Device and station ids come from hardware and configuration, so they are checked on the
//! way in; evidence and upload ids are UUIDv7 made here, so they sort by creation time.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// Why an identifier was refused. The message names the field and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct IdError {
    pub field: &'static str,
    pub reason: String,
}

const MAX_NAME_ID_LEN: usize = 64;

fn check_name_id(field: &'static str, s: &str) -> Result<(), IdError> {
    let err = |reason: String| IdError { field, reason };
    if s.is_empty() {
        return Err(err("must not be empty".into()));
    }
    if s.len() > MAX_NAME_ID_LEN {
        return Err(err(format!(
            "must be at most {MAX_NAME_ID_LEN} bytes, got {}",
            s.len()
        )));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(err(format!(
            "may hold only ASCII letters, digits and - _ . :, found {c:?} in {s:?}"
        )));
    }
    Ok(())
}

macro_rules! name_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        // The pattern says in OpenAPI what `check_name_id` checks.
        #[cfg_attr(
            feature = "openapi",
            derive(utoipa::ToSchema),
            schema(value_type = String, pattern = "^[A-Za-z0-9._:-]{1,64}$")
        )]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check_name_id($field, &s)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

name_id!(
    /// A recorder's serial number (the 8-byte device serial of `ZFY_INFO`, or a longer vendor serial).
    DeviceId,
    "device_id"
);
name_id!(
    /// A docking station (采集站) id, from its configuration.
    StationId,
    "station_id"
);
name_id!(
    /// An officer's badge number (警号), as held on the recorder and in the officer registry.
    BadgeNo,
    "badge"
);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        #[cfg_attr(
            feature = "openapi",
            derive(utoipa::ToSchema),
            schema(value_type = String, format = "uuid")
        )]
        pub struct $name(Uuid);

        impl $name {
            /// A new id whose order follows creation time (UUIDv7).
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn parse(s: &str) -> Result<Self, IdError> {
                Uuid::parse_str(s).map(Self).map_err(|_| IdError {
                    field: $field,
                    reason: format!("expected a UUID such as 0190b3f4-5c6d-7e8f-9a0b-1c2d3e4f5a6b, got {s:?}"),
                })
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.to_string()
            }
        }
    };
}

uuid_id!(
    /// One item of evidence: one file's bytes, stored once by content hash.
    EvidenceId,
    "evidence_id"
);
uuid_id!(
    /// An alarm raised by a recorder (SOS).
    AlarmId,
    "alarm_id"
);
uuid_id!(
    /// A geofence (网格, 辖区).
    FenceId,
    "fence_id"
);
uuid_id!(
    /// A case (案件); its human-readable number is `custody_core::case::CaseNo`.
    CaseId,
    "case_id"
);
uuid_id!(
    /// One step of a case: an enforcement action with a time window, a place and officers.
    StepId,
    "step_id"
);
uuid_id!(
    /// A request for a copy of evidence (download of an original, export of a case) awaiting or
    /// holding a supervisor's decision.
    RequestId,
    "request_id"
);
uuid_id!(
    /// One resumable upload session.
    UploadId,
    "upload_id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorder_serial_is_accepted() {
        assert_eq!(
            DeviceId::parse("ZFY-00012345").unwrap().as_str(),
            "ZFY-00012345"
        );
    }

    #[test]
    fn an_empty_or_odd_device_id_is_refused_naming_the_field() {
        let e = DeviceId::parse("").unwrap_err();
        assert_eq!(e.field, "device_id");
        let e = DeviceId::parse("abc/../etc").unwrap_err();
        assert!(e.to_string().contains("'/'"), "{e}");
        let e = StationId::parse("s".repeat(65)).unwrap_err();
        assert!(
            e.to_string().starts_with("station_id: must be at most 64"),
            "{e}"
        );
    }

    #[test]
    fn uuid_ids_round_trip_and_sort_by_creation() {
        let a = UploadId::new();
        let b = UploadId::new();
        assert!(a <= b);
        assert_eq!(UploadId::parse(&a.to_string()).unwrap(), a);
        assert!(
            EvidenceId::parse("nope")
                .unwrap_err()
                .to_string()
                .starts_with("evidence_id:")
        );
    }
}
