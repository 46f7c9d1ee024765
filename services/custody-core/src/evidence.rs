//! Evidence: one recorded file, stored once by its SHA-256, with what the recorder and station said of it.

use crate::hash::{Sha256, Sm3};
use crate::ids::{BadgeNo, DeviceId, EvidenceId, StationId};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The recorder's importance mark (GA/T 947: 1 normal, 2 medium, 3 important). Important files are never
/// overwritten by loop recording and are offloaded first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Importance {
    Normal,
    Medium,
    Important,
}

impl Importance {
    /// The GA/T 947 number.
    pub fn mark(self) -> u8 {
        match self {
            Self::Normal => 1,
            Self::Medium => 2,
            Self::Important => 3,
        }
    }

    pub fn from_mark(mark: i64) -> Result<Self, String> {
        match mark {
            1 => Ok(Self::Normal),
            2 => Ok(Self::Medium),
            3 => Ok(Self::Important),
            other => Err(format!(
                "importance: expected 1 (normal), 2 (medium) or 3 (important), got {other}"
            )),
        }
    }
}

/// What kind of recording a file is (GA/T 947 media types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MediaType {
    Video,
    Audio,
    Photo,
    Text,
}

impl MediaType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Photo => "photo",
            Self::Text => "text",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "video" => Ok(Self::Video),
            "audio" => Ok(Self::Audio),
            "photo" => Ok(Self::Photo),
            "text" => Ok(Self::Text),
            other => Err(format!(
                "media_type: expected video, audio, photo or text, got {other:?}"
            )),
        }
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The original file name on the recorder: a single path component, kept for display and for the court's
/// evidence list. It never becomes a storage path (evidence is stored by hash).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FileName(String);

impl FileName {
    pub const MAX_LEN: usize = 255;

    pub fn parse(s: impl Into<String>) -> Result<Self, String> {
        let s = s.into();
        if s.is_empty() {
            return Err("file_name: must not be empty".into());
        }
        if s.len() > Self::MAX_LEN {
            return Err(format!(
                "file_name: must be at most {} bytes, got {}",
                Self::MAX_LEN,
                s.len()
            ));
        }
        if s.contains(['/', '\\']) || s == "." || s == ".." {
            return Err(format!(
                "file_name: must be a bare file name without a directory, got {s:?}"
            ));
        }
        if s.chars().any(char::is_control) {
            return Err(format!(
                "file_name: must not contain control characters, got {s:?}"
            ));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FileName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl From<FileName> for String {
    fn from(f: FileName) -> String {
        f.0
    }
}

/// One item of evidence as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub id: EvidenceId,
    pub sha256: Sha256,
    pub sm3: Option<Sm3>,
    pub size: u64,
    pub device_id: DeviceId,
    pub station_id: StationId,
    pub file_name: FileName,
    pub media_type: MediaType,
    pub importance: Importance,
    /// Start of the recording by the recorder's own clock.
    pub captured_at: Timestamp,
    /// When the server made the bytes evidence.
    pub ingested_at: Timestamp,
    /// Who held the recorder when it recorded, and how that is known.
    #[serde(default)]
    pub attribution: Attribution,
    /// What keeps it (legal hold, obstruction, class) and, once its time is over, its deletion.
    #[serde(default)]
    pub retention: RetentionMarks,
}

/// How an evidence item is attributed to an officer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AttributionSource {
    /// The check-out register (领用/归还) says who held the recorder at capture time.
    Checkout,
    /// No check-out covers the capture time; the officer bound on the recorder (ZFY_INFO) is used.
    Recorder,
    /// Nothing says who held it.
    #[default]
    None,
}

impl AttributionSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Checkout => "checkout",
            Self::Recorder => "recorder",
            Self::None => "none",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "checkout" => Ok(Self::Checkout),
            "recorder" => Ok(Self::Recorder),
            "none" => Ok(Self::None),
            _ => Err(format!(
                "attribution: {s:?} is not one of checkout, recorder, none"
            )),
        }
    }
}

/// Who an evidence item belongs to: the officer holding the recorder at capture time (by the check-out
/// register, with the capture time corrected for the recorder's clock offset), cross-checked with the
/// officer the docking station read from the recorder.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Attribution {
    pub officer: Option<BadgeNo>,
    pub source: AttributionSource,
    /// The officer bound on the recorder, as the docking station reported it.
    pub reported: Option<BadgeNo>,
    /// The register and the recorder's binding name different officers.
    pub conflict: bool,
    /// Recorder clock minus station clock at docking, in milliseconds.
    pub clock_offset_ms: Option<i64>,
}

/// A legal hold (诉讼保全, 复议 or 信访 in progress): the item is kept whatever its age until released.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegalHold {
    pub reason: String,
    pub by: String,
    pub at: Timestamp,
}

/// The bytes were deleted because the item's retention ended; the row stays as a tombstone.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    /// When the item was marked deleted (its `retention_delete` ledger event is queued at that instant).
    pub at: Timestamp,
    /// Which retention rule ended, e.g. "the default class: 6 months from capture ended ...".
    pub reason: String,
    /// When the bytes and every file made from them were removed from the object store; `None` while a
    /// worker has still to finish (it does so after a crash too).
    pub bytes_gone_at: Option<Timestamp>,
}

/// What retention knows of an item beyond its capture time (`custody_core::retention::Facts` adds the
/// cases it is linked to).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RetentionMarks {
    pub legal_hold: Option<LegalHold>,
    /// Marked as showing obstruction of duty (妨碍执法).
    pub obstruction: bool,
    /// A named retention class (`retention_classes` in the configuration).
    pub class: Option<String>,
    pub deleted: Option<Deletion>,
}

impl Evidence {
    /// The deletion, when retention has removed (or is removing) the bytes.
    pub fn deleted(&self) -> Option<&Deletion> {
        self.retention.deleted.as_ref()
    }

    /// Where the bytes live in the object store.
    pub fn content_path(&self) -> String {
        content_path(&self.sha256)
    }
}

/// The object-store key of evidence bytes: `evidence/sha256/<aa>/<bb>/<hex>`. Two levels of fan-out keep
/// directories small on local disk.
pub fn content_path(sha256: &Sha256) -> String {
    let hex = sha256.to_hex();
    format!("evidence/sha256/{}/{}/{}", &hex[0..2], &hex[2..4], hex)
}

/// Which evidence a listing returns. All conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvidenceFilter {
    pub device_id: Option<DeviceId>,
    pub station_id: Option<StationId>,
    /// Capture start at or after this instant.
    pub captured_from: Option<Timestamp>,
    /// Capture start before this instant.
    pub captured_to: Option<Timestamp>,
    /// Attributed to this officer.
    pub officer: Option<BadgeNo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_path_fans_out_by_the_first_two_bytes() {
        let d =
            Sha256::parse_hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
                .unwrap();
        assert_eq!(
            content_path(&d),
            "evidence/sha256/ba/78/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn importance_marks_follow_ga_t_947() {
        for m in 1..=3 {
            assert_eq!(i64::from(Importance::from_mark(m).unwrap().mark()), m);
        }
        assert!(Importance::from_mark(4).unwrap_err().contains("got 4"));
    }

    #[test]
    fn a_file_name_with_a_directory_is_refused() {
        assert!(FileName::parse("../../etc/passwd").is_err());
        assert!(FileName::parse("a\\b.mp4").is_err());
        assert!(FileName::parse("").is_err());
        assert_eq!(
            FileName::parse("ZFY00012345_20261122083000_0001.MP4")
                .unwrap()
                .as_str(),
            "ZFY00012345_20261122083000_0001.MP4"
        );
    }
}
