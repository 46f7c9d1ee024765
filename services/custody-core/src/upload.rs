//! Upload sessions and the rules a write must follow. The ingest service enforces them; they live here so
//! that they are pure and tested without any storage.

use crate::evidence::{FileName, Importance, MediaType};
use crate::hash::{Sha256, Sm3};
use crate::ids::{BadgeNo, DeviceId, EvidenceId, StationId, UploadId};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a station declares before sending a file's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadDeclaration {
    pub device_id: DeviceId,
    pub station_id: StationId,
    pub file_name: FileName,
    /// Exact size in bytes, at least 1.
    pub size: u64,
    pub sha256: Sha256,
    pub sm3: Option<Sm3>,
    /// Start of the recording by the recorder's clock.
    pub captured_at: Timestamp,
    pub importance: Importance,
    pub media_type: MediaType,
    /// The officer the recorder was bound to when docked (ZFY_INFO), as the station read it.
    pub officer: Option<BadgeNo>,
    /// Recorder clock minus station clock at docking, in milliseconds, when measured.
    pub clock_offset_ms: Option<i64>,
}

impl UploadDeclaration {
    /// Checks the declared size against the server's limit. Zero-byte files are refused: a recorder never
    /// produces one, and an empty file would prove nothing.
    pub fn check_size(size: i64, max: u64) -> Result<u64, String> {
        if size <= 0 {
            return Err(format!("size: must be at least 1 byte, got {size}"));
        }
        let size = size as u64;
        if size > max {
            return Err(format!(
                "size: {size} bytes exceeds the server's maximum of {max} bytes"
            ));
        }
        Ok(size)
    }
}

/// The life of an upload session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadState {
    /// Accepting bytes.
    Open,
    /// Commit started; retrying it is safe.
    Committing,
    /// The bytes are evidence.
    Committed,
    /// The stored bytes did not match the declaration; nothing became evidence.
    Failed,
    /// Abandoned; staged bytes were removed.
    Expired,
}

impl UploadState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Committing => "committing",
            Self::Committed => "committed",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(Self::Open),
            "committing" => Ok(Self::Committing),
            "committed" => Ok(Self::Committed),
            "failed" => Ok(Self::Failed),
            "expired" => Ok(Self::Expired),
            other => Err(format!("unknown upload state {other:?}")),
        }
    }

    /// Whether the session still holds staged bytes that expiry must remove.
    pub fn holds_staged_bytes(self) -> bool {
        matches!(self, Self::Open | Self::Committing)
    }
}

impl fmt::Display for UploadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One upload session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub id: UploadId,
    pub declaration: UploadDeclaration,
    pub state: UploadState,
    /// Bytes durable on the server.
    pub committed_size: u64,
    /// Backend-specific staging state (multipart id and parts on S3), opaque to the domain.
    pub staging: String,
    /// Why the upload failed, when it did.
    pub failure: Option<String>,
    /// The evidence the bytes became (or already were), once committed.
    pub evidence_id: Option<EvidenceId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When an idle session is expired.
    pub expires_at: Timestamp,
}

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteRefusal {
    #[error("offset: must not be negative, got {offset}")]
    NegativeOffset { offset: i64 },
    #[error(
        "write at offset {offset} refused: the upload has {received} bytes; resume writing at offset {received}"
    )]
    WrongOffset { offset: u64, received: u64 },
    #[error("write of {len} bytes at offset {offset} runs past the declared size of {size} bytes")]
    PastDeclaredSize { offset: u64, len: u64, size: u64 },
}

/// Checks one chunk: it must start exactly where the bytes received so far end (no gap, no overlap), and
/// must not run past the declared size. Returns the offset as unsigned.
pub fn check_write(offset: i64, len: u64, received: u64, size: u64) -> Result<u64, WriteRefusal> {
    if offset < 0 {
        return Err(WriteRefusal::NegativeOffset { offset });
    }
    let offset = offset as u64;
    if offset != received {
        return Err(WriteRefusal::WrongOffset { offset, received });
    }
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(WriteRefusal::PastDeclaredSize { offset, len, size });
    }
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_at_the_received_offset_within_the_size_is_accepted() {
        assert_eq!(check_write(0, 10, 0, 10), Ok(0));
        assert_eq!(check_write(4, 6, 4, 10), Ok(4));
    }

    #[test]
    fn overlapping_gapped_and_negative_offsets_are_refused_with_the_resume_point() {
        let e = check_write(2, 1, 4, 10).unwrap_err();
        assert_eq!(
            e,
            WriteRefusal::WrongOffset {
                offset: 2,
                received: 4
            }
        );
        assert!(e.to_string().contains("resume writing at offset 4"), "{e}");
        assert!(matches!(
            check_write(5, 1, 4, 10),
            Err(WriteRefusal::WrongOffset { .. })
        ));
        assert!(matches!(
            check_write(-1, 1, 0, 10),
            Err(WriteRefusal::NegativeOffset { .. })
        ));
    }

    #[test]
    fn a_chunk_past_the_declared_size_is_refused() {
        assert!(matches!(
            check_write(8, 3, 8, 10),
            Err(WriteRefusal::PastDeclaredSize { .. })
        ));
        assert!(matches!(
            check_write(8, u64::MAX, 8, 10),
            Err(WriteRefusal::PastDeclaredSize { .. })
        ));
    }

    #[test]
    fn zero_and_oversized_declarations_are_refused() {
        assert!(
            UploadDeclaration::check_size(0, 100)
                .unwrap_err()
                .contains("at least 1")
        );
        assert!(UploadDeclaration::check_size(-5, 100).is_err());
        assert!(
            UploadDeclaration::check_size(101, 100)
                .unwrap_err()
                .contains("maximum of 100")
        );
        assert_eq!(UploadDeclaration::check_size(100, 100), Ok(100));
    }
}
