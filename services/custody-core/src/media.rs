//! What a recording is, as probed from its own bytes, and what a browser can do with it.
//!
//! `custody-media` fills a [`MediaInfo`] with ffmpeg; everything that decides on one lives here, as pure
//! functions: which files a browser plays as they are, which need a browser proxy (H.265, odd containers,
//! very large files) and which cannot be shown at all, and why. The probe result is stored as JSON on the
//! evidence row, so its field names are a stored format: add fields, never rename them.

use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// What kind of data a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StreamKind {
    Video,
    Audio,
    Subtitle,
    Data,
    Attachment,
    Unknown,
}

/// One stream of a container, as the demuxer and its codec parameters describe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamInfo {
    pub index: u32,
    pub kind: StreamKind,
    /// ffmpeg's codec name: `h264`, `hevc`, `aac`, `pcm_s16le`, `mjpeg`, ...
    pub codec: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Average frames per second (video).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_rate: Option<f64>,
    /// `yuv420p`, `yuvj420p`, `yuv420p10le`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixel_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<i64>,
    /// Frames (or audio packets) the container says the stream holds, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<u64>,
    /// Clockwise rotation the player must apply, in degrees (phones and some recorders record sideways).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<i32>,
}

impl StreamInfo {
    pub fn pixels(&self) -> Option<u64> {
        Some(u64::from(self.width?) * u64::from(self.height?))
    }
}

/// A place embedded in the file (ISO 6709 `location` tag of MP4, EXIF GPS of a photo), WGS-84.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EmbeddedLocation {
    pub lat: f64,
    pub lon: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt: Option<f64>,
}

/// What the probe found in a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MediaInfo {
    /// ffmpeg's demuxer name: `mov,mp4,m4a,3gp,3g2,mj2`, `wav`, `mp3`, `image2`, `jpeg_pipe`, ...
    pub container: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time_us: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit_rate: Option<u64>,
    /// The `creation_time` tag as written (recorders differ in format and zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<String>,
    /// `creation_time` (or a photo's EXIF DateTimeOriginal) read as UTC, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<EmbeddedLocation>,
    pub streams: Vec<StreamInfo>,
}

impl MediaInfo {
    /// The main picture: the first video stream that is not a cover image.
    pub fn video(&self) -> Option<&StreamInfo> {
        self.streams
            .iter()
            .find(|s| s.kind == StreamKind::Video && !is_image_codec(&s.codec))
            .or_else(|| {
                // A photo is a one-frame "video" stream of an image codec.
                self.streams.iter().find(|s| s.kind == StreamKind::Video)
            })
    }

    pub fn audio(&self) -> Option<&StreamInfo> {
        self.streams.iter().find(|s| s.kind == StreamKind::Audio)
    }

    /// A still image: one picture of an image codec, no audio.
    pub fn is_image(&self) -> bool {
        self.audio().is_none()
            && self
                .video()
                .is_some_and(|v| is_image_codec(&v.codec) && !self.is_mp4_family())
    }

    fn is_mp4_family(&self) -> bool {
        self.container.split(',').any(|c| c == "mp4" || c == "mov")
    }

    pub fn duration(&self) -> Option<Duration> {
        self.duration_us
            .and_then(|us| u64::try_from(us).ok())
            .map(Duration::from_micros)
    }
}

fn is_image_codec(codec: &str) -> bool {
    matches!(
        codec,
        "mjpeg" | "png" | "bmp" | "webp" | "tiff" | "gif" | "jpeg2000"
    )
}

/// Limits and thresholds for deciding how a file is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaybackRules {
    /// Files larger than this get a proxy even when a browser could play them, so that reviewers on a
    /// slow link do not stream gigabytes.
    pub proxy_above: u64,
    /// Pictures with more pixels than this are not decoded at all (a decompression bomb, or a corrupt
    /// header claiming an absurd size).
    pub max_pixels: u64,
}

impl Default for PlaybackRules {
    fn default() -> Self {
        Self {
            proxy_above: 512 << 20,
            max_pixels: 8192 * 8192,
        }
    }
}

/// How a probed file is shown in a browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "as", rename_all = "snake_case")]
pub enum Playback {
    /// The original plays as it is.
    Original,
    /// A still image, shown through its downscaled poster.
    Image,
    /// A browser proxy (H.264/AAC MP4, at most 720p) must be made; `reason` says why.
    Proxy { reason: String },
    /// Nothing can be shown; `reason` says why. The evidence itself is stored and intact.
    NotPlayable { reason: String },
}

/// Decides how a probed file of `size` bytes is shown.
pub fn playback(info: &MediaInfo, size: u64, rules: &PlaybackRules) -> Playback {
    let video = info.video();
    let audio = info.audio();
    if video.is_none() && audio.is_none() {
        return Playback::NotPlayable {
            reason: "the file holds no audio or video stream".into(),
        };
    }
    if let Some(v) = video {
        match (v.width, v.height) {
            (Some(w), Some(h)) if w == 0 || h == 0 => {
                return Playback::NotPlayable {
                    reason: format!("the {} stream has no picture size ({w}x{h})", v.codec),
                };
            }
            (Some(w), Some(h)) if u64::from(w) * u64::from(h) > rules.max_pixels => {
                return Playback::NotPlayable {
                    reason: format!(
                        "resolution {w}x{h} exceeds the limit of {} megapixels",
                        rules.max_pixels / 1_000_000
                    ),
                };
            }
            (None, _) | (_, None) => {
                return Playback::NotPlayable {
                    reason: format!("the {} stream has no picture size", v.codec),
                };
            }
            _ => {}
        }
    }
    if info.is_image() {
        return Playback::Image;
    }
    if info.duration_us.is_some_and(|d| d <= 0)
        || video.and_then(|v| v.frames).is_some_and(|f| f == 0)
    {
        return Playback::NotPlayable {
            reason: "the recording is empty (zero duration or no frames)".into(),
        };
    }
    if let Some(reason) = browser_refusal(info) {
        return Playback::Proxy { reason };
    }
    if size > rules.proxy_above {
        return Playback::Proxy {
            reason: format!(
                "the original is {} MiB, more than the {} MiB a browser streams as it is",
                size >> 20,
                rules.proxy_above >> 20
            ),
        };
    }
    Playback::Original
}

/// Why common browsers (Chromium, Firefox, Safari) would not play the file as it is, if they would not.
fn browser_refusal(info: &MediaInfo) -> Option<String> {
    let containers: Vec<&str> = info.container.split(',').collect();
    let has = |c: &str| containers.contains(&c);
    let video = info.video();
    let audio = info.audio();
    if let Some(v) = video {
        let mp4_ok = has("mp4") && v.codec == "h264";
        let webm_ok = has("webm") && matches!(v.codec.as_str(), "vp8" | "vp9" | "av1");
        if !(mp4_ok || webm_ok) {
            return Some(if v.codec == "hevc" {
                "H.265 (HEVC) video does not play in most browsers".to_string()
            } else {
                format!(
                    "{} video in a {} container does not play in browsers",
                    v.codec, info.container
                )
            });
        }
        // Browsers decode 8-bit 4:2:0 H.264 only (not High 10 or 4:2:2).
        if let Some(pf) = &v.pixel_format
            && !matches!(pf.as_str(), "yuv420p" | "yuvj420p")
        {
            return Some(format!(
                "{} pictures in {pf} do not play in browsers",
                v.codec
            ));
        }
    }
    if let Some(a) = audio {
        let ok = match a.codec.as_str() {
            "aac" | "mp3" | "opus" | "vorbis" | "flac" => true,
            "pcm_s16le" | "pcm_u8" | "pcm_f32le" => video.is_none() && has("wav"),
            _ => false,
        };
        if !ok {
            return Some(format!(
                "{} audio in a {} container does not play in browsers",
                a.codec, info.container
            ));
        }
    }
    None
}

/// Where a probe or a derived file stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MediaState {
    /// Queued or running.
    Pending,
    /// Done.
    Ready,
    /// Gave up; the error says why.
    Failed,
    /// Not made, because the file does not need it (no proxy for a browser-playable file).
    NotNeeded,
}

impl MediaState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::NotNeeded => "not_needed",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(Self::Pending),
            "ready" => Ok(Self::Ready),
            "failed" => Ok(Self::Failed),
            "not_needed" => Ok(Self::NotNeeded),
            other => Err(format!(
                "media state: expected pending, ready, failed or not_needed, got {other:?}"
            )),
        }
    }
}

/// A file made from an evidence item for viewing. It never replaces the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DerivedKind {
    /// One JPEG: a frame of a video, or a photo downscaled.
    Poster,
    /// One JPEG holding a row of small frames, evenly spaced through a video.
    Thumbs,
    /// H.264/AAC MP4 with fast-start, at most 720p.
    Proxy,
}

impl DerivedKind {
    pub const ALL: [DerivedKind; 3] = [Self::Poster, Self::Thumbs, Self::Proxy];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Poster => "poster",
            Self::Thumbs => "thumbs",
            Self::Proxy => "proxy",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "poster" => Ok(Self::Poster),
            "thumbs" => Ok(Self::Thumbs),
            "proxy" => Ok(Self::Proxy),
            other => Err(format!(
                "derived kind: expected poster, thumbs or proxy, got {other:?}"
            )),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Poster | Self::Thumbs => "image/jpeg",
            Self::Proxy => "video/mp4",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Poster | Self::Thumbs => "jpg",
            Self::Proxy => "mp4",
        }
    }
}

impl fmt::Display for DerivedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a background media job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaJobKind {
    /// Probe the file, then make its poster (and a thumbnail strip for video). Queued for every
    /// committed evidence item.
    Probe,
    /// Make the browser proxy. Queued by a probe that found the file needs one.
    Proxy,
}

impl MediaJobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Probe => "probe",
            Self::Proxy => "proxy",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "probe" => Ok(Self::Probe),
            "proxy" => Ok(Self::Proxy),
            other => Err(format!(
                "media job kind: expected probe or proxy, got {other:?}"
            )),
        }
    }
}

impl fmt::Display for MediaJobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The object-store key of a derived file: under `derived/`, grouped by the original's SHA-256, named by
/// the first 64 bits of its own (the full hash is in its database row). A remade file with other bytes
/// gets a new key, so a file being served is never overwritten. Keys stay short (about 110 bytes) because
/// some S3 servers keep an object's metadata in a file named after its key.
pub fn derived_path(
    original: &crate::hash::Sha256,
    kind: DerivedKind,
    own: &crate::hash::Sha256,
) -> String {
    format!(
        "{}{}-{}.{}",
        derived_dir(original),
        kind.as_str(),
        &own.to_hex()[..16],
        kind.extension()
    )
}

/// The object-store folder holding every file made from an original (see [`derived_path`]): what retention
/// removes with the original's bytes, including files a worker stored but never recorded.
pub fn derived_dir(original: &crate::hash::Sha256) -> String {
    let o = original.to_hex();
    format!("derived/{}/{}/{o}/", &o[0..2], &o[2..4])
}

/// The delay before retry number `attempt` (1 for the first retry) of a job that failed for a reason
/// that may pass (storage down, database busy): doubling from `base`, at most `max`.
pub fn retry_delay(attempt: u32, base: Duration, max: Duration) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1).min(31))
        .unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(max).min(max)
}

/// Reads an ISO 6709 point as MP4 `location` tags hold it: `+39.9042+116.4074/`,
/// `+39.9042+116.4074+043.500/` (degrees, optional altitude in metres).
pub fn parse_iso6709(s: &str) -> Option<EmbeddedLocation> {
    let s = s.trim().trim_end_matches('/');
    let mut parts = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices() {
        if c == '+' || c == '-' {
            if let Some(st) = start {
                parts.push(&s[st..i]);
            }
            start = Some(i);
        } else if !(c.is_ascii_digit() || c == '.') {
            return None;
        }
    }
    parts.push(&s[start?..]);
    let num = |p: &str| p.parse::<f64>().ok().filter(|v| v.is_finite());
    let (lat, lon) = (num(parts.first()?)?, num(parts.get(1)?)?);
    let alt = match parts.get(2) {
        Some(p) => Some(num(p)?),
        None => None,
    };
    if parts.len() > 3 || !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return None;
    }
    Some(EmbeddedLocation { lat, lon, alt })
}

/// Reads a `creation_time` tag as UTC: RFC 3339 (`2025-11-23T10:02:03.000000Z`, what ffmpeg writes) or a
/// bare `YYYY-MM-DD HH:MM:SS` / `YYYY:MM:DD HH:MM:SS` (EXIF), which is taken as UTC.
pub fn parse_creation_time(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    if let Ok(t) = Timestamp::parse_rfc3339(s) {
        return Some(t);
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y:%m:%d %H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
    ] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Some(Timestamp::from_datetime(naive.and_utc()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(kind: StreamKind, codec: &str) -> StreamInfo {
        StreamInfo {
            index: 0,
            kind,
            codec: codec.into(),
            profile: None,
            width: None,
            height: None,
            frame_rate: None,
            pixel_format: None,
            sample_rate: None,
            channels: None,
            bit_rate: None,
            duration_us: None,
            frames: None,
            rotation: None,
        }
    }

    fn video(codec: &str, w: u32, h: u32) -> StreamInfo {
        StreamInfo {
            width: Some(w),
            height: Some(h),
            pixel_format: Some("yuv420p".into()),
            ..stream(StreamKind::Video, codec)
        }
    }

    fn info(container: &str, streams: Vec<StreamInfo>) -> MediaInfo {
        MediaInfo {
            container: container.into(),
            duration_us: Some(10_000_000),
            start_time_us: None,
            bit_rate: None,
            creation_time: None,
            created_at: None,
            location: None,
            streams,
        }
    }

    const MP4: &str = "mov,mp4,m4a,3gp,3g2,mj2";
    const RULES: PlaybackRules = PlaybackRules {
        proxy_above: 100 << 20,
        max_pixels: 8192 * 8192,
    };

    #[test]
    fn h264_aac_mp4_plays_as_it_is() {
        let i = info(
            MP4,
            vec![video("h264", 1920, 1080), stream(StreamKind::Audio, "aac")],
        );
        assert_eq!(playback(&i, 10 << 20, &RULES), Playback::Original);
    }

    #[test]
    fn h265_needs_a_proxy_and_says_why() {
        let i = info(MP4, vec![video("hevc", 1920, 1080)]);
        match playback(&i, 10 << 20, &RULES) {
            Playback::Proxy { reason } => assert!(reason.contains("H.265"), "{reason}"),
            other => panic!("expected a proxy, got {other:?}"),
        }
    }

    #[test]
    fn a_large_playable_file_still_gets_a_proxy() {
        let i = info(MP4, vec![video("h264", 1920, 1080)]);
        assert!(matches!(
            playback(&i, 200 << 20, &RULES),
            Playback::Proxy { .. }
        ));
    }

    #[test]
    fn ten_bit_h264_and_odd_audio_need_a_proxy() {
        let mut v = video("h264", 1280, 720);
        v.pixel_format = Some("yuv420p10le".into());
        assert!(matches!(
            playback(&info(MP4, vec![v]), 1, &RULES),
            Playback::Proxy { .. }
        ));
        let amr = info("amr", vec![stream(StreamKind::Audio, "amr_nb")]);
        assert!(matches!(playback(&amr, 1, &RULES), Playback::Proxy { .. }));
    }

    #[test]
    fn wav_and_mp3_play_as_they_are() {
        let wav = info("wav", vec![stream(StreamKind::Audio, "pcm_s16le")]);
        assert_eq!(playback(&wav, 1, &RULES), Playback::Original);
        let mp3 = info("mp3", vec![stream(StreamKind::Audio, "mp3")]);
        assert_eq!(playback(&mp3, 1, &RULES), Playback::Original);
    }

    #[test]
    fn a_photo_is_an_image() {
        let jpeg = info("image2", vec![video("mjpeg", 4000, 3000)]);
        assert_eq!(playback(&jpeg, 1, &RULES), Playback::Image);
    }

    #[test]
    fn a_huge_resolution_is_not_playable_and_says_so() {
        let jpeg = info("jpeg_pipe", vec![video("mjpeg", 60000, 60000)]);
        match playback(&jpeg, 1, &RULES) {
            Playback::NotPlayable { reason } => {
                assert!(reason.contains("60000x60000"), "{reason}")
            }
            other => panic!("expected not playable, got {other:?}"),
        }
    }

    #[test]
    fn a_file_without_streams_or_frames_is_not_playable() {
        assert!(matches!(
            playback(&info("data", vec![]), 1, &RULES),
            Playback::NotPlayable { .. }
        ));
        let mut v = video("h264", 640, 480);
        v.frames = Some(0);
        assert!(matches!(
            playback(&info(MP4, vec![v]), 1, &RULES),
            Playback::NotPlayable { .. }
        ));
    }

    #[test]
    fn iso6709_locations_are_read_with_and_without_altitude() {
        assert_eq!(
            parse_iso6709("+39.9042+116.4074/"),
            Some(EmbeddedLocation {
                lat: 39.9042,
                lon: 116.4074,
                alt: None
            })
        );
        assert_eq!(
            parse_iso6709("-33.8688+151.2093+043.500/"),
            Some(EmbeddedLocation {
                lat: -33.8688,
                lon: 151.2093,
                alt: Some(43.5)
            })
        );
        assert_eq!(parse_iso6709("+99.0+10.0/"), None);
        assert_eq!(parse_iso6709("north"), None);
        assert_eq!(parse_iso6709(""), None);
    }

    #[test]
    fn creation_times_are_read_in_the_formats_recorders_write() {
        let t = parse_creation_time("2025-11-23T10:02:03.000000Z").unwrap();
        assert_eq!(t, Timestamp::parse_rfc3339("2025-11-23T10:02:03Z").unwrap());
        assert_eq!(parse_creation_time("2025-11-23 10:02:03"), Some(t));
        assert_eq!(parse_creation_time("2025:11:23 10:02:03"), Some(t));
        assert_eq!(parse_creation_time("yesterday"), None);
    }

    #[test]
    fn retries_back_off_doubling_up_to_the_cap() {
        let base = Duration::from_secs(10);
        let max = Duration::from_secs(600);
        assert_eq!(retry_delay(1, base, max), Duration::from_secs(10));
        assert_eq!(retry_delay(2, base, max), Duration::from_secs(20));
        assert_eq!(retry_delay(4, base, max), Duration::from_secs(80));
        assert_eq!(retry_delay(10, base, max), max);
        assert_eq!(retry_delay(200, base, max), max);
    }

    #[test]
    fn derived_files_live_under_derived_by_the_originals_hash() {
        let o = crate::hash::ContentHasher::digest(b"original", false).sha256;
        let d = crate::hash::ContentHasher::digest(b"poster", false).sha256;
        let p = derived_path(&o, DerivedKind::Poster, &d);
        assert!(p.starts_with("derived/"), "{p}");
        assert!(p.contains(&o.to_hex()));
        assert!(p.ends_with(&format!("poster-{}.jpg", &d.to_hex()[..16])));
        assert!(p.len() < 120, "{p}");
        assert!(p.starts_with(&derived_dir(&o)), "{p}");
    }

    #[test]
    fn probe_results_round_trip_through_json() {
        let i = info(MP4, vec![video("h264", 1280, 720)]);
        let json = serde_json::to_string(&i).unwrap();
        let back: MediaInfo = serde_json::from_str(&json).unwrap();
        assert_eq!(back, i);
    }
}
