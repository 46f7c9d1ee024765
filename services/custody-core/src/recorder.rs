//! What a docked recorder (执法记录仪) shows a docking station: a device-info file binding the recorder to
//! its officer, and media files whose names carry the device number, the capture time and the importance
//! mark. The station agent reads this layout and the recorder simulator writes it; both use this module,
//! so the format is defined once.
//!
//! ```text
//! <mount>/ZFY_INFO.TXT                         device-info (key=value lines, UTF-8, see [`DeviceInfo`])
//! <mount>/<any folder>/<device>_<yyyymmddhhmmss>_<seq>[_IMP|_MED].<MP4|JPG|WAV|MP3>
//! <mount>/uploaded/...                         files a station moved aside after a verified receipt
//! ```
//!
//! Names follow the vendors' practice (device number, local capture time, sequence number); `_IMP` marks a
//! file important (GA/T 947 mark 3) and `_MED` medium (mark 2); no mark is normal (1). Times in names and
//! in the device-info file are the recorder's local clock, which may drift; `tz` in the device-info file
//! says which offset it runs at (China: +08:00).

use crate::evidence::{Importance, MediaType};
use crate::ids::{BadgeNo, DeviceId};
use crate::time::Timestamp;
use chrono::{FixedOffset, NaiveDateTime, TimeZone};
use std::fmt;

/// Name of the device-info file at the root of a recorder's mount.
pub const DEVICE_INFO_FILE: &str = "ZFY_INFO.TXT";
/// Folder, at the root of a recorder's mount, that a station moves uploaded files into when its free
/// policy is `move`. Never scanned for new files.
pub const UPLOADED_DIR: &str = "uploaded";
/// The device-info format version written today.
pub const DEVICE_INFO_FORMAT: u32 = 1;
/// The clock offset recorders in China run at when the device-info file does not say.
pub const DEFAULT_TZ: &str = "+08:00";

/// Why a device-info file or a media file name was not understood. The message names the field or the
/// part of the name and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LayoutError(pub String);

/// The device↔officer binding held on the recorder (the fields of `ZFY_INFO`): device serial, officer
/// badge number (警号), officer name, unit number and unit name; plus the recorder's clock as read at
/// docking, and the UTC offset its clock runs at.
///
/// On disk: UTF-8 `key=value` lines; `#` starts a comment line; unknown keys are ignored (newer
/// recorders may add some); `format` names the version (1).
/// ```text
/// format=1
/// serial=ZFY00012
/// badge=0123456
/// name=张三
/// unit_no=440300000000
/// unit_name=深圳市城市管理和综合执法局
/// tz=+08:00
/// clock=2026-11-23T08:30:02+08:00
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub device_id: DeviceId,
    pub badge: BadgeNo,
    pub officer_name: String,
    pub unit_no: String,
    pub unit_name: String,
    /// The offset of the recorder's local clock from UTC.
    pub tz: FixedOffset,
    /// The recorder's clock when it was docked (what the station's "read time" command returns).
    pub clock: Option<Timestamp>,
}

fn parse_tz(s: &str) -> Result<FixedOffset, LayoutError> {
    s.parse::<FixedOffset>()
        .map_err(|_| LayoutError(format!("tz: expected an offset such as +08:00, got {s:?}")))
}

impl DeviceInfo {
    /// Parses the device-info file's text.
    pub fn parse(text: &str) -> Result<Self, LayoutError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut fields = std::collections::HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once('=').ok_or_else(|| {
                LayoutError(format!(
                    "{DEVICE_INFO_FILE} line {}: expected key=value, got {line:?}",
                    n + 1
                ))
            })?;
            fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let get = |k: &str| -> Result<String, LayoutError> {
            fields
                .get(k)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| LayoutError(format!("{DEVICE_INFO_FILE}: {k}: missing")))
        };
        if let Some(f) = fields.get("format") {
            let v: u32 = f.parse().map_err(|_| {
                LayoutError(format!(
                    "{DEVICE_INFO_FILE}: format: expected a number, got {f:?}"
                ))
            })?;
            if v != DEVICE_INFO_FORMAT {
                return Err(LayoutError(format!(
                    "{DEVICE_INFO_FILE}: format {v} is not understood; this build reads format {DEVICE_INFO_FORMAT}"
                )));
            }
        }
        let in_file = |e: crate::ids::IdError| LayoutError(format!("{DEVICE_INFO_FILE}: {e}"));
        Ok(Self {
            device_id: DeviceId::parse(get("serial")?)
                .map_err(|e| LayoutError(format!("{DEVICE_INFO_FILE}: serial: {}", e.reason)))?,
            badge: BadgeNo::parse(get("badge")?).map_err(in_file)?,
            officer_name: get("name")?,
            unit_no: fields.get("unit_no").cloned().unwrap_or_default(),
            unit_name: fields.get("unit_name").cloned().unwrap_or_default(),
            tz: parse_tz(fields.get("tz").map_or(DEFAULT_TZ, String::as_str))?,
            clock: match fields.get("clock").filter(|v| !v.is_empty()) {
                Some(c) => Some(
                    Timestamp::parse_rfc3339(c)
                        .map_err(|e| LayoutError(format!("{DEVICE_INFO_FILE}: clock: {e}")))?,
                ),
                None => None,
            },
        })
    }

    /// The file's text, as [`DeviceInfo::parse`] reads it.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "# device-officer binding of this recorder (ZFY_INFO)\nformat={DEVICE_INFO_FORMAT}\nserial={}\nbadge={}\nname={}\nunit_no={}\nunit_name={}\ntz={}\n",
            self.device_id, self.badge, self.officer_name, self.unit_no, self.unit_name, self.tz
        );
        if let Some(c) = self.clock {
            let local = c.to_datetime().with_timezone(&self.tz);
            s.push_str(&format!(
                "clock={}\n",
                local.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
            ));
        }
        s
    }
}

/// What a media file's name says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaName {
    pub device_id: DeviceId,
    /// Capture start by the recorder's clock, as written in the name (local time, no zone).
    pub local_time: NaiveDateTime,
    /// The recorder's sequence number of the file.
    pub seq: u32,
    pub importance: Importance,
    pub media_type: MediaType,
    /// The extension as written (case kept).
    pub ext: String,
}

/// The media type of a file extension recorders write, or `None` for any other file.
pub fn media_type_of_ext(ext: &str) -> Option<MediaType> {
    match ext.to_ascii_lowercase().as_str() {
        "mp4" | "mov" | "avi" | "ts" => Some(MediaType::Video),
        "jpg" | "jpeg" => Some(MediaType::Photo),
        "wav" | "mp3" | "aac" | "amr" => Some(MediaType::Audio),
        _ => None,
    }
}

const NAME_FORM: &str = "<device>_<yyyymmddhhmmss>_<seq>[_IMP|_MED].<ext>";

impl MediaName {
    /// Parses a media file name. The device number may itself contain `_`: the name is read from the end.
    pub fn parse(name: &str) -> Result<Self, LayoutError> {
        let bad =
            |why: &str| LayoutError(format!("file name {name:?}: {why}; expected {NAME_FORM}"));
        let (stem, ext) = name.rsplit_once('.').ok_or_else(|| bad("no extension"))?;
        let media_type = media_type_of_ext(ext)
            .ok_or_else(|| bad(&format!("{ext:?} is not a media extension")))?;
        let mut parts: Vec<&str> = stem.split('_').collect();
        let importance = match parts.last().map(|p| p.to_ascii_uppercase()) {
            Some(m) if m == "IMP" => {
                parts.pop();
                Importance::Important
            }
            Some(m) if m == "MED" => {
                parts.pop();
                Importance::Medium
            }
            _ => Importance::Normal,
        };
        if parts.len() < 3 {
            return Err(bad("too few parts"));
        }
        let seq_s = parts.pop().unwrap_or_default();
        let time_s = parts.pop().unwrap_or_default();
        let device_s = parts.join("_");
        let seq: u32 = seq_s
            .parse()
            .map_err(|_| bad(&format!("sequence number {seq_s:?} is not a number")))?;
        if time_s.len() != 14 {
            return Err(bad(&format!("capture time {time_s:?} is not 14 digits")));
        }
        let local_time = NaiveDateTime::parse_from_str(time_s, "%Y%m%d%H%M%S")
            .map_err(|_| bad(&format!("capture time {time_s:?} is not a valid time")))?;
        let device_id =
            DeviceId::parse(device_s).map_err(|e| bad(&format!("device number: {}", e.reason)))?;
        Ok(Self {
            device_id,
            local_time,
            seq,
            importance,
            media_type,
            ext: ext.to_string(),
        })
    }

    /// The capture start as an instant, reading the name's local time at the recorder's offset.
    pub fn captured_at(&self, tz: FixedOffset) -> Timestamp {
        match tz.from_local_datetime(&self.local_time).single() {
            Some(t) => Timestamp::from_datetime(t.with_timezone(&chrono::Utc)),
            None => Timestamp::from_datetime(self.local_time.and_utc()),
        }
    }

    /// A name in the recorder format.
    pub fn new(
        device_id: DeviceId,
        captured_at: Timestamp,
        tz: FixedOffset,
        seq: u32,
        importance: Importance,
        ext: &str,
    ) -> Result<Self, LayoutError> {
        let media_type = media_type_of_ext(ext)
            .ok_or_else(|| LayoutError(format!("{ext:?} is not a media extension")))?;
        Ok(Self {
            device_id,
            local_time: captured_at.to_datetime().with_timezone(&tz).naive_local(),
            seq,
            importance,
            media_type,
            ext: ext.to_string(),
        })
    }
}

impl fmt::Display for MediaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}_{}_{:04}",
            self.device_id,
            self.local_time.format("%Y%m%d%H%M%S"),
            self.seq
        )?;
        match self.importance {
            Importance::Important => f.write_str("_IMP")?,
            Importance::Medium => f.write_str("_MED")?,
            Importance::Normal => {}
        }
        write!(f, ".{}", self.ext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> DeviceInfo {
        DeviceInfo {
            device_id: DeviceId::parse("ZFY00012").unwrap(),
            badge: BadgeNo::parse("0123456").unwrap(),
            officer_name: "张三".into(),
            unit_no: "440300000000".into(),
            unit_name: "深圳市城市管理和综合执法局".into(),
            tz: parse_tz("+08:00").unwrap(),
            clock: Some(Timestamp::parse_rfc3339("2026-11-23T08:30:02+08:00").unwrap()),
        }
    }

    #[test]
    fn device_info_round_trips_through_its_text() {
        let i = info();
        let text = i.to_text();
        assert!(text.contains("clock=2026-11-23T08:30:02+08:00"), "{text}");
        assert_eq!(DeviceInfo::parse(&text).unwrap(), i);
    }

    #[test]
    fn device_info_tolerates_a_bom_comments_and_unknown_keys_but_names_a_missing_field() {
        let text = "\u{feff}# hi\nserial=ZFY1\nbadge=7\nname=李四\nbattery=80\n";
        let i = DeviceInfo::parse(text).unwrap();
        assert_eq!(i.device_id.as_str(), "ZFY1");
        assert_eq!(i.tz, parse_tz("+08:00").unwrap());
        assert_eq!(i.clock, None);
        let e = DeviceInfo::parse("serial=ZFY1\nname=x\n").unwrap_err();
        assert!(e.0.contains("badge: missing"), "{e}");
        let e = DeviceInfo::parse("serial=ZFY/1\nbadge=1\nname=x\n").unwrap_err();
        assert!(e.0.contains("serial"), "{e}");
        let e = DeviceInfo::parse("format=2\nserial=Z\nbadge=1\nname=x\n").unwrap_err();
        assert!(e.0.contains("format 2"), "{e}");
        let e = DeviceInfo::parse("garbage line\n").unwrap_err();
        assert!(e.0.contains("line 1"), "{e}");
    }

    #[test]
    fn a_media_name_carries_device_time_sequence_and_mark() {
        let n = MediaName::parse("ZFY_0012_20261122083000_0007_IMP.MP4").unwrap();
        assert_eq!(n.device_id.as_str(), "ZFY_0012");
        assert_eq!(n.seq, 7);
        assert_eq!(n.importance, Importance::Important);
        assert_eq!(n.media_type, MediaType::Video);
        let tz = parse_tz("+08:00").unwrap();
        assert_eq!(n.captured_at(tz).to_string(), "2026-11-22T00:30:00Z");
        assert_eq!(n.to_string(), "ZFY_0012_20261122083000_0007_IMP.MP4");
        let photo = MediaName::parse("ZFY1_20261122083000_0001.jpg").unwrap();
        assert_eq!(
            (photo.media_type, photo.importance),
            (MediaType::Photo, Importance::Normal)
        );
        let med = MediaName::parse("ZFY1_20261122083000_0002_MED.WAV").unwrap();
        assert_eq!(med.importance, Importance::Medium);
    }

    #[test]
    fn names_written_are_names_read() {
        let tz = parse_tz("+08:00").unwrap();
        let t = Timestamp::parse_rfc3339("2026-11-22T01:02:03Z").unwrap();
        let d = DeviceId::parse("ZFY9").unwrap();
        let n = MediaName::new(d, t, tz, 12, Importance::Medium, "MP3").unwrap();
        assert_eq!(n.to_string(), "ZFY9_20261122090203_0012_MED.MP3");
        let back = MediaName::parse(&n.to_string()).unwrap();
        assert_eq!(back, n);
        assert_eq!(back.captured_at(tz), t);
    }

    #[test]
    fn odd_names_are_refused_saying_what_part_is_wrong() {
        for (name, part) in [
            ("notes.txt", "not a media extension"),
            ("ZFY1.MP4", "too few parts"),
            ("ZFY1_2026112208300_0001.MP4", "not 14 digits"),
            ("ZFY1_20261399083000_0001.MP4", "not a valid time"),
            ("ZFY1_20261122083000_x1.MP4", "not a number"),
            ("ZF Y1_20261122083000_0001.MP4", "device number"),
            ("noextension", "no extension"),
        ] {
            let e = MediaName::parse(name).unwrap_err();
            assert!(e.0.contains(part), "{name}: {e}");
        }
    }
}
