//! Looking at slots: is a recorder docked (its device-info file readable), and which media files does it
//! hold. Blocking filesystem work: the agent calls these on a blocking thread.

use custody_core::recorder::{
    DEVICE_INFO_FILE, DeviceInfo, MediaName, UPLOADED_DIR, media_type_of_ext,
};
use custody_core::{Importance, MediaType, Timestamp};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a slot shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// No recorder: the mount point is missing, empty, or has no device-info file.
    Empty,
    /// A recorder with a readable device-info file.
    Docked(DeviceInfo),
    /// Something is mounted but its device-info file cannot be read or understood: nothing is offloaded
    /// (the files could not be attributed to a recorder).
    Unreadable(String),
}

/// Looks at one slot's mount point.
pub fn probe(mount: &Path) -> Probe {
    let info = mount.join(DEVICE_INFO_FILE);
    match std::fs::read(&info) {
        Ok(bytes) => match std::str::from_utf8(&bytes) {
            Ok(text) => match DeviceInfo::parse(text) {
                Ok(i) => Probe::Docked(i),
                Err(e) => Probe::Unreadable(e.to_string()),
            },
            Err(_) => Probe::Unreadable(format!("{DEVICE_INFO_FILE} is not UTF-8 text")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Probe::Empty,
        Err(e) => Probe::Unreadable(format!("reading {}: {e}", info.display())),
    }
}

/// A media file on a recorder, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Path inside the mount, `/`-separated.
    pub rel_path: String,
    /// Size and modification time in ns; -1 and 0 when the metadata could not be read.
    pub size: i64,
    pub mtime_ns: i64,
    pub file_name: String,
    pub media_type: MediaType,
    pub importance: Importance,
    pub captured_at: Timestamp,
    /// Why the name is not in the recorder format (capture time then comes from the modification time).
    pub name_problem: Option<String>,
    /// Why the metadata could not be read.
    pub unreadable: Option<String>,
}

/// Nanoseconds since the epoch of a modification time.
pub fn mtime_ns(m: &std::fs::Metadata) -> i64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Every media file under `mount` (not under `uploaded/`, not hidden), skipping files modified within
/// `settle` of now (the recorder may still be writing them).
pub fn list_media(mount: &Path, info: &DeviceInfo, settle: Duration) -> Vec<Listed> {
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, String, usize)> = vec![(mount.to_path_buf(), String::new(), 0)];
    let now = SystemTime::now();
    while let Some((dir, rel, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.')
                || (depth == 0 && (name == UPLOADED_DIR || name == DEVICE_INFO_FILE))
            {
                continue;
            }
            let rel_path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let path = e.path();
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir {
                if depth < 8 {
                    stack.push((path, rel_path, depth + 1));
                }
                continue;
            }
            let Some(ext) = name.rsplit_once('.').map(|(_, x)| x) else {
                continue;
            };
            let Some(media_type) = media_type_of_ext(ext) else {
                continue;
            };
            let (size, mtime, unreadable) = match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => {
                    if now
                        .duration_since(m.modified().unwrap_or(UNIX_EPOCH))
                        .is_ok_and(|age| age < settle)
                    {
                        continue;
                    }
                    (
                        i64::try_from(m.len()).unwrap_or(i64::MAX),
                        mtime_ns(&m),
                        None,
                    )
                }
                Ok(_) => continue,
                Err(e) => (-1, 0, Some(format!("reading the file's metadata: {e}"))),
            };
            let (importance, captured_at, name_problem) = match MediaName::parse(&name) {
                Ok(n) => (n.importance, n.captured_at(info.tz), None),
                Err(e) => (
                    Importance::Normal,
                    Timestamp::from_unix_micros(mtime / 1000),
                    Some(e.to_string()),
                ),
            };
            out.push(Listed {
                rel_path,
                size,
                mtime_ns: mtime,
                file_name: name,
                media_type,
                importance,
                captured_at,
                name_problem,
                unreadable,
            });
        }
    }
    out.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    out
}

/// The size and modification time of a file now, or `None` when it is gone.
pub fn fingerprint(path: &Path) -> std::io::Result<Option<(i64, i64)>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some((
            i64::try_from(m.len()).unwrap_or(i64::MAX),
            mtime_ns(&m),
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> DeviceInfo {
        DeviceInfo::parse("serial=ZFY1\nbadge=1\nname=x\n").unwrap()
    }

    #[test]
    fn an_empty_slot_a_docked_recorder_and_a_broken_device_info_are_told_apart() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(probe(&d.path().join("missing")), Probe::Empty);
        assert_eq!(probe(d.path()), Probe::Empty);
        std::fs::write(d.path().join(DEVICE_INFO_FILE), info().to_text()).unwrap();
        assert_eq!(probe(d.path()), Probe::Docked(info()));
        std::fs::write(d.path().join(DEVICE_INFO_FILE), "serial=ZFY1\n").unwrap();
        match probe(d.path()) {
            Probe::Unreadable(why) => assert!(why.contains("badge"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn media_files_are_listed_with_their_marks_skipping_uploaded_and_other_files() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path();
        std::fs::create_dir_all(m.join("DCIM/VIDEO")).unwrap();
        std::fs::create_dir_all(m.join("uploaded/DCIM/VIDEO")).unwrap();
        std::fs::write(m.join(DEVICE_INFO_FILE), info().to_text()).unwrap();
        std::fs::write(m.join("DCIM/VIDEO/ZFY1_20261122083000_0001_IMP.MP4"), b"v").unwrap();
        std::fs::write(m.join("DCIM/VIDEO/odd name.mp4"), b"w").unwrap();
        std::fs::write(m.join("DCIM/VIDEO/notes.txt"), b"t").unwrap();
        std::fs::write(
            m.join("uploaded/DCIM/VIDEO/ZFY1_20261122080000_0000.MP4"),
            b"u",
        )
        .unwrap();
        let l = list_media(m, &info(), Duration::ZERO);
        let names: Vec<&str> = l.iter().map(|f| f.rel_path.as_str()).collect();
        assert_eq!(
            names,
            [
                "DCIM/VIDEO/ZFY1_20261122083000_0001_IMP.MP4",
                "DCIM/VIDEO/odd name.mp4"
            ]
        );
        assert_eq!(l[0].importance, Importance::Important);
        assert_eq!(l[0].captured_at.to_string(), "2026-11-22T00:30:00Z");
        assert!(l[1].name_problem.is_some());
        // A file still being written is left alone until it settles.
        assert!(list_media(m, &info(), Duration::from_secs(3600)).is_empty());
    }
}
