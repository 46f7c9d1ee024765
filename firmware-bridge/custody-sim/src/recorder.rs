//! `custody-sim recorder`: writes the mount directory of one docked recorder (执法记录仪), with real,
//! playable media, as a docking station would see it over USB mass storage.
//!
//! ```text
//! <out>/ZFY_INFO.TXT                          device-officer binding (custody_core::recorder::DeviceInfo)
//! <out>/DCIM/VIDEO/<device>_<time>_<seq>[_IMP|_MED].MP4   H.264 or H.265 (hvc1) video + AAC audio
//! <out>/DCIM/PHOTO/<device>_<time>_<seq>[_IMP|_MED].JPG   JPEG photos
//! <out>/DCIM/AUDIO/<device>_<time>_<seq>[_IMP|_MED].WAV   16 kHz mono PCM, alternating with .MP3
//! ```
//!
//! The layout and names come from `custody_core::recorder`, which the station agent reads with, so the
//! two cannot drift apart. The directory appears all at once: everything is written and fsynced in a
//! sibling `<out>.partial-<pid>` and renamed into place, because a station watching the slot must never
//! see half a recorder.

mod media;
mod plan;
mod progress;

pub use plan::VideoCodec;

use anyhow::{Context, bail};
use chrono::{FixedOffset, Utc};
use clap::Parser;
use custody_core::media::EmbeddedLocation;
use custody_core::recorder::{DEVICE_INFO_FILE, DeviceInfo, MediaName};
use custody_core::{
    BadgeNo, ContentHasher, DeviceId, Importance, MediaType, Sha256, Sm3, Timestamp,
};
use plan::{Kind, PlannedFile};
use progress::Progress;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Folder of the video files, relative to the mount (`/` separated, as in the manifest).
pub const VIDEO_DIR: &str = "DCIM/VIDEO";
/// Folder of the photos.
pub const PHOTO_DIR: &str = "DCIM/PHOTO";
/// Folder of the audio recordings.
pub const AUDIO_DIR: &str = "DCIM/AUDIO";
/// The manifest format version written today.
pub const MANIFEST_FORMAT: u32 = 1;

/// Which video codec the recorder writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CodecChoice {
    /// Every video H.264 (libx264).
    H264,
    /// Every video H.265/HEVC (libx265, tagged hvc1).
    H265,
    /// Alternate H.264 and H.265 file by file.
    Mixed,
}

/// A video frame size, both sides even (4:2:0 chroma needs that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution {
    pub width: u32,
    pub height: u32,
}

impl FromStr for Resolution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected WIDTHxHEIGHT such as 1920x1080, got {s:?}");
        let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
        let (width, height): (u32, u32) = (
            w.trim().parse().map_err(|_| bad())?,
            h.trim().parse().map_err(|_| bad())?,
        );
        if !(16..=7680).contains(&width) || !(16..=4320).contains(&height) {
            return Err(format!(
                "{s:?}: width must be 16 to 7680 and height 16 to 4320"
            ));
        }
        if width % 2 != 0 || height % 2 != 0 {
            return Err(format!(
                "{s:?}: width and height must be even (4:2:0 video)"
            ));
        }
        Ok(Self { width, height })
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// A bit rate in bits per second. Written as ffmpeg writes it: `4M` is 4 000 000, `800k` 800 000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bitrate(u64);

impl Bitrate {
    pub fn bits_per_second(self) -> u64 {
        self.0
    }
}

impl FromStr for Bitrate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected a bit rate such as 4M, 2.5M or 800k, got {s:?}");
        let t = s.trim();
        let (num, mult) = match t.char_indices().last() {
            Some((i, 'M' | 'm')) => (&t[..i], 1_000_000.0),
            Some((i, 'K' | 'k')) => (&t[..i], 1_000.0),
            _ => (t, 1.0),
        };
        let v: f64 = num.parse().map_err(|_| bad())?;
        let bps = v * mult;
        if !bps.is_finite() || !(50_000.0..=200_000_000.0).contains(&bps) {
            return Err(format!("{s:?}: must be between 50k and 200M"));
        }
        Ok(Self(bps.round() as u64))
    }
}

impl fmt::Display for Bitrate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            b if b % 1_000_000 == 0 => write!(f, "{}M", b / 1_000_000),
            b if b % 1_000 == 0 => write!(f, "{}k", b / 1_000),
            b => write!(f, "{b}"),
        }
    }
}

fn parse_hours(s: &str) -> Result<f64, String> {
    let h: f64 = s
        .parse()
        .map_err(|_| format!("expected a number of hours such as 8 or 0.5, got {s:?}"))?;
    if !h.is_finite() || h <= 0.0 || h > 240.0 {
        return Err(format!(
            "expected more than 0 and at most 240 hours, got {s}"
        ));
    }
    Ok(h)
}

/// One recording of a scripted shift (`--recording AT+LEN[@LAT,LON]`): when the officer pressed record,
/// counted from `--start`, how long it ran, and where it was made. Tests lay out recordings and the holes
/// between them with these, so they know exactly what a recorder did not record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordingSpec {
    /// Seconds from the shift's start (`--start`) to the start of the recording.
    pub at_s: u64,
    /// Its length in seconds; the recorder splits it into `--segment` files like any recording.
    pub len_s: u64,
    /// Where it was made (WGS-84), embedded in each of its MP4 files as the ISO 6709 `location` tag.
    pub location: Option<EmbeddedLocation>,
}

impl RecordingSpec {
    /// Seconds from the shift's start to the end of the recording.
    pub fn end_s(&self) -> u64 {
        self.at_s + self.len_s
    }
}

impl FromStr for RecordingSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let form = "AT+LEN[@LAT,LON] such as 90s+2m or 0s+30s@22.5431,114.0579";
        let (times, place) = match s.split_once('@') {
            Some((t, p)) => (t, Some(p)),
            None => (s, None),
        };
        let (at, len) = times
            .split_once('+')
            .ok_or_else(|| format!("expected {form}, got {s:?}"))?;
        let seconds = |what: &str, v: &str| -> Result<u64, String> {
            let d = humantime::parse_duration(v.trim())
                .map_err(|e| format!("{s:?}: {what} {v:?}: {e}; expected {form}"))?;
            if d.subsec_nanos() != 0 {
                return Err(format!("{s:?}: {what} must be whole seconds, got {v:?}"));
            }
            Ok(d.as_secs())
        };
        let (at_s, len_s) = (seconds("start", at)?, seconds("length", len)?);
        if len_s == 0 {
            return Err(format!("{s:?}: length must be at least 1s"));
        }
        let location = match place {
            None => None,
            Some(p) => {
                let (lat, lon) =
                    crate::parse_lat_lon(p, 90.0).map_err(|e| format!("{s:?}: place: {e}"))?;
                Some(EmbeddedLocation {
                    lat,
                    lon,
                    alt: None,
                })
            }
        };
        Ok(Self {
            at_s,
            len_s,
            location,
        })
    }
}

impl fmt::Display for RecordingSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s+{}s", self.at_s, self.len_s)?;
        if let Some(l) = &self.location {
            write!(f, "@{},{}", l.lat, l.lon)?;
        }
        Ok(())
    }
}

fn parse_device(s: &str) -> Result<DeviceId, String> {
    DeviceId::parse(s).map_err(|e| e.reason)
}

fn parse_badge(s: &str) -> Result<BadgeNo, String> {
    BadgeNo::parse(s).map_err(|e| e.reason)
}

fn parse_tz(s: &str) -> Result<FixedOffset, String> {
    s.parse()
        .map_err(|_| format!("expected a UTC offset such as +08:00, got {s:?}"))
}

fn parse_time(s: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(s)
}

/// Options of `custody-sim recorder`. Build one in code with [`RecorderArgs::new`], which applies the
/// same defaults as the command line, then change fields.
#[derive(Debug, Clone, clap::Args)]
pub struct RecorderArgs {
    /// Directory to create as the recorder's mount. It must not exist, or be an empty directory (an empty
    /// slot): the recorder is built beside it in DIR.partial-<pid> and renamed into place when complete
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Hours of video on the recorder, as recordings of random lengths with random pauses between them
    /// (fractions allowed: 0.5 is 30 minutes). Give either this or --recording
    #[arg(long, value_name = "H", value_parser = parse_hours, required_unless_present = "recordings")]
    pub hours: Option<f64>,
    /// Instead of --hours, a recording at a chosen time: AT+LEN[@LAT,LON], AT counted from --start and
    /// LEN its length (whole seconds, e.g. 90s+2m), LAT,LON (WGS-84 degrees) embedded in its MP4 files
    /// as their location. Repeat for each recording; they may not overlap. The recorder then holds
    /// exactly these videos, split into --segment files, and neither audio nor photos
    #[arg(
        long = "recording",
        value_name = "AT+LEN[@LAT,LON]",
        conflicts_with_all = ["hours", "audio", "photos"]
    )]
    pub recordings: Vec<RecordingSpec>,
    /// Device serial written in ZFY_INFO.TXT and every file name [default: ZFY + 5 digits from --seed]
    #[arg(long, value_parser = parse_device)]
    pub device: Option<DeviceId>,
    /// Officer badge number (警号) [default: 6 or 7 digits from --seed]
    #[arg(long, value_parser = parse_badge)]
    pub badge: Option<BadgeNo>,
    /// Officer name [default: a Chinese name from --seed]
    #[arg(long)]
    pub name: Option<String>,
    /// Unit number [default: that of a Shenzhen unit drawn from --seed, e.g. 440304000000]
    #[arg(long)]
    pub unit_no: Option<String>,
    /// Unit name [default: that of the same unit, e.g. 深圳市城市管理和综合执法局福田大队]
    #[arg(long)]
    pub unit_name: Option<String>,
    /// UTC offset the recorder's clock runs at; file names carry local times at this offset
    #[arg(long, value_name = "OFFSET", default_value = "+08:00", value_parser = parse_tz)]
    pub tz: FixedOffset,
    /// True start of the first recording (with --recording: the instant AT counts from), RFC 3339 (e.g.
    /// 2026-11-22T08:30:00+08:00) [default: so that the last recording ends about an hour before now]
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub start: Option<Timestamp>,
    /// Seconds the recorder's clock is ahead (+) or behind (-) true time. File names, MP4 creation_time
    /// and the clock field of ZFY_INFO.TXT (now + drift) use the drifted clock
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub clock_drift: i64,
    /// Video codec: h264, h265, or mixed (alternate file by file, so two videos are one of each)
    #[arg(long, value_enum, default_value_t = CodecChoice::Mixed)]
    pub codec: CodecChoice,
    /// Video frame size
    #[arg(long, value_name = "WxH", default_value = "1920x1080")]
    pub resolution: Resolution,
    /// Video frames per second
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..=120))]
    pub fps: u32,
    /// Video bit rate (k = 1000, M = 1 000 000 bit/s); each MP4 is about this times its duration, plus
    /// 64 kbit/s AAC audio
    #[arg(long, value_name = "RATE", default_value = "4M")]
    pub video_bitrate: Bitrate,
    /// Length at which the recorder closes a video file and starts the next; the last file of a
    /// recording is shorter (e.g. 10m, 30s)
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub segment: humantime::Duration,
    /// Number of photos [default: one per 20 minutes of video, at least 1]
    #[arg(long, value_name = "N")]
    pub photos: Option<u32>,
    /// Number of audio-only recordings, alternately WAV and MP3 [default: one per hour of video, at
    /// least 1]
    #[arg(long, value_name = "N")]
    pub audio: Option<u32>,
    /// Number of files marked important (_IMP, GA/T 947 mark 3) [default: about 10% of files, at least 1]
    #[arg(long, value_name = "N")]
    pub important: Option<u32>,
    /// Number of files marked medium (_MED, mark 2)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub medium: u32,
    /// Seed of the schedule and officer data: the same seed and --start give the same officer, schedule
    /// and file names (the media bytes differ) [default: random, printed in the summary]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also write a JSON manifest here: per file its path, size, SHA-256, SM3, media type, mark, capture
    /// time, codec and duration. Must be outside --out
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Number of ffmpeg processes run at once
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: u32,
    /// Keep the encoded seed clips (a few seconds per codec) in this directory and reuse them when the
    /// codec, resolution, fps and bit rate match; saves the encoding when making many recorders
    #[arg(long, value_name = "DIR")]
    pub clip_cache: Option<PathBuf>,
    /// Print no progress (the summary is still printed)
    #[arg(long, short)]
    pub quiet: bool,
}

/// Parses `RecorderArgs` alone, so code gets exactly the command line's defaults.
#[derive(Debug, Parser)]
struct Standalone {
    #[command(flatten)]
    args: RecorderArgs,
}

impl RecorderArgs {
    /// The options `custody-sim recorder --out OUT --hours HOURS` would have.
    pub fn new(out: impl Into<PathBuf>, hours: f64) -> anyhow::Result<Self> {
        let argv: [std::ffi::OsString; 5] = [
            "custody-sim-recorder".into(),
            "--out".into(),
            out.into().into_os_string(),
            "--hours".into(),
            hours.to_string().into(),
        ];
        Ok(Standalone::try_parse_from(argv)?.args)
    }

    /// The options `custody-sim recorder --out OUT --recording R1 --recording R2 …` would have: a
    /// recorder holding exactly these recordings.
    pub fn scripted(out: impl Into<PathBuf>, recordings: &[RecordingSpec]) -> anyhow::Result<Self> {
        let mut argv: Vec<std::ffi::OsString> = vec![
            "custody-sim-recorder".into(),
            "--out".into(),
            out.into().into_os_string(),
        ];
        for r in recordings {
            argv.push("--recording".into());
            argv.push(r.to_string().into());
        }
        Ok(Standalone::try_parse_from(argv)?.args)
    }
}

/// What was written: the recorder's binding and every media file, with its hashes. Serialized as the
/// `--manifest` JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Version of this JSON shape ([`MANIFEST_FORMAT`]).
    pub format: u32,
    pub generator: String,
    /// The seed the schedule was drawn from (given or random).
    pub seed: u64,
    /// The recorder's mount directory, absolute.
    pub out: PathBuf,
    pub device: ManifestDevice,
    /// Seconds the recorder's clock is ahead of true time.
    pub clock_drift_s: i64,
    /// Media files in sequence order. ZFY_INFO.TXT is described by `device`, not listed here.
    pub files: Vec<ManifestFile>,
}

/// The contents of ZFY_INFO.TXT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestDevice {
    pub device_id: DeviceId,
    pub badge: BadgeNo,
    pub officer_name: String,
    pub unit_no: String,
    pub unit_name: String,
    /// The recorder clock's UTC offset, e.g. `+08:00`.
    pub tz: String,
    /// The recorder's clock at generation (true time plus drift).
    pub clock: Timestamp,
}

/// One media file of the recorder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path relative to the mount, `/` separated, e.g. `DCIM/VIDEO/ZFY00012_20261122083000_0007_IMP.MP4`.
    pub path: String,
    pub size: u64,
    pub sha256: Sha256,
    pub sm3: Sm3,
    pub media_type: MediaType,
    pub importance: Importance,
    /// GA/T 947 importance mark: 1 normal, 2 medium, 3 important.
    pub importance_mark: u8,
    pub seq: u32,
    /// Capture start by the recorder's (possibly drifted) clock: what the file name says.
    pub captured_at: Timestamp,
    /// Capture start in true time (`captured_at` minus the drift).
    pub true_captured_at: Timestamp,
    /// Main codec as ffprobe names it: `h264`, `hevc`, `mjpeg`, `pcm_s16le` or `mp3`.
    pub codec: String,
    /// The audio codec of a video (`aac`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_codec: Option<String>,
    /// Planned duration in seconds of a video or audio file; the file's own is within a second of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// The location embedded in the file (the `@LAT,LON` of a `--recording`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<EmbeddedLocation>,
}

impl Manifest {
    /// Reads a manifest written by `--manifest`.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let bytes = fs::read(path).with_context(|| format!("manifest {}", path.display()))?;
        let m: Self = serde_json::from_slice(&bytes)
            .with_context(|| format!("manifest {}: not a custody-sim manifest", path.display()))?;
        if m.format != MANIFEST_FORMAT {
            bail!(
                "manifest {}: format {} is not understood; this build reads format {MANIFEST_FORMAT}",
                path.display(),
                m.format
            );
        }
        Ok(m)
    }

    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// One line: what was written, how big, and where.
    pub fn summary(&self) -> String {
        let of = |t: MediaType| self.files.iter().filter(move |f| f.media_type == t);
        let seconds = |t: MediaType| -> u64 {
            of(t)
                .map(|f| f.duration_s.unwrap_or(0.0).round() as u64)
                .sum()
        };
        let codec_count = |c: &str| of(MediaType::Video).filter(|f| f.codec == c).count();
        let files = |n: usize| {
            if n == 1 {
                "1 file".to_string()
            } else {
                format!("{n} files")
            }
        };
        let photos = of(MediaType::Photo).count();
        format!(
            "{}: {}, {} in {}; video {} in {} ({} h264, {} hevc); {} photo{}; audio {} in {}; seed {}",
            self.device.device_id,
            files(self.files.len()),
            bytesize::ByteSize(self.total_size()),
            self.out.display(),
            humantime::format_duration(Duration::from_secs(seconds(MediaType::Video))),
            files(of(MediaType::Video).count()),
            codec_count("h264"),
            codec_count("hevc"),
            photos,
            if photos == 1 { "" } else { "s" },
            humantime::format_duration(Duration::from_secs(seconds(MediaType::Audio))),
            files(of(MediaType::Audio).count()),
            self.seed,
        )
    }
}

/// One file to write, with its name and times settled.
#[derive(Debug)]
struct Job {
    file: PlannedFile,
    /// Relative to the mount, `/` separated.
    rel_path: String,
    recorder_at: Timestamp,
    true_at: Timestamp,
}

/// Removes the partial directory unless the recorder was renamed into place, so a failed or interrupted
/// run (error or panic) leaves nothing a station could mistake for a recorder.
struct PartialDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for PartialDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Writes the recorder `args` describes and returns its manifest (also written to `args.manifest` when
/// set). Prints progress to stderr unless `args.quiet`; prints no summary (see [`Manifest::summary`]).
pub fn make_recorder(args: &RecorderArgs) -> anyhow::Result<Manifest> {
    crate::ffmpeg::check_installed()?;
    if args.segment.as_secs() < 1 {
        bail!("--segment: expected at least 1s, got {}", args.segment);
    }
    let out =
        std::path::absolute(&args.out).with_context(|| format!("--out {}", args.out.display()))?;
    check_out(&out)?;
    if let Some(m) = &args.manifest
        && std::path::absolute(m)
            .with_context(|| format!("--manifest {}", m.display()))?
            .starts_with(&out)
    {
        bail!(
            "--manifest {}: must be outside --out, which holds only what a recorder holds",
            m.display()
        );
    }
    let parent = out
        .parent()
        .context("--out: the root directory cannot be a recorder")?;
    let dir_name = out
        .file_name()
        .context("--out: expected a directory path ending in a name")?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;

    let seed = args.seed.unwrap_or_else(rand::random);
    let plan = plan::plan(args, seed)?;

    let now = whole_seconds(Timestamp::from_datetime(Utc::now()));
    let start = whole_seconds(args.start.unwrap_or_else(|| {
        // Place the shift so that it ended an hour ago, as if the officer docked after the paperwork.
        let back = (plan.span_s as i64 + 3600) * 1_000_000;
        now.saturating_add_micros(-back)
    }));
    let drift = args.clock_drift * 1_000_000;
    let officer = &plan.officer;
    let info = DeviceInfo {
        device_id: officer.device_id.clone(),
        badge: officer.badge.clone(),
        officer_name: officer.name.clone(),
        unit_no: officer.unit_no.clone(),
        unit_name: officer.unit_name.clone(),
        tz: args.tz,
        clock: Some(now.saturating_add_micros(drift)),
    };

    let mut jobs = Vec::with_capacity(plan.files.len());
    for f in &plan.files {
        let true_at = start.saturating_add_micros(f.offset_s as i64 * 1_000_000);
        let recorder_at = true_at.saturating_add_micros(drift);
        let name = MediaName::new(
            officer.device_id.clone(),
            recorder_at,
            args.tz,
            f.seq,
            f.importance,
            f.kind.ext(),
        )?;
        let folder = match f.kind.media_type() {
            MediaType::Video => VIDEO_DIR,
            MediaType::Photo => PHOTO_DIR,
            _ => AUDIO_DIR,
        };
        jobs.push(Job {
            file: f.clone(),
            rel_path: format!("{folder}/{name}"),
            recorder_at,
            true_at,
        });
    }

    let mut partial_name = dir_name.to_os_string();
    partial_name.push(format!(".partial-{}", std::process::id()));
    let partial_path = parent.join(partial_name);
    // create_dir, not create_dir_all: it fails if the directory exists, so two writers of the same --out
    // in one process never share it, and a directory left by a killed run is not silently reused.
    fs::create_dir(&partial_path).with_context(|| {
        format!(
            "creating {} (if a killed run left it, remove it)",
            partial_path.display()
        )
    })?;
    let mut partial = PartialDir {
        path: partial_path,
        keep: false,
    };
    for d in [VIDEO_DIR, PHOTO_DIR, AUDIO_DIR] {
        fs::create_dir_all(partial.path.join(d))
            .with_context(|| format!("creating {}", partial.path.join(d).display()))?;
    }
    write_synced(
        &partial.path.join(DEVICE_INFO_FILE),
        info.to_text().as_bytes(),
    )?;

    let progress = Progress::new(jobs.len() as u64, args.quiet);
    let scratch = tempfile::Builder::new()
        .prefix("custody-sim-seed-")
        .tempdir()
        .context("creating a temporary directory for seed clips")?;
    if let Some(c) = &args.clip_cache {
        fs::create_dir_all(c).with_context(|| format!("--clip-cache {}", c.display()))?;
    }
    let codecs: Vec<VideoCodec> = {
        let mut c: Vec<_> = plan
            .files
            .iter()
            .filter_map(|f| match f.kind {
                Kind::Video(c) => Some(c),
                _ => None,
            })
            .collect();
        c.sort();
        c.dedup();
        c
    };
    let seeds: BTreeMap<VideoCodec, media::SeedClip> = run_parallel(&codecs, args.jobs, |&c| {
        progress.step(&format!(
            "encoding the {} seed clip ({}, {} fps, {})",
            c.probe_name(),
            args.resolution,
            args.fps,
            args.video_bitrate
        ));
        let clip = media::seed_clip(
            c,
            args.resolution,
            args.fps,
            args.video_bitrate,
            scratch.path(),
            args.clip_cache.as_deref(),
        )?;
        let target = args.video_bitrate.bits_per_second() + media::VIDEO_AUDIO_BITRATE;
        let off = clip.bitrate.abs_diff(target) as f64 / target as f64;
        if off > 0.2 && !args.quiet {
            eprintln!(
                "custody-sim: warning: the {} seed clip runs at {} bit/s, {:.0}% off the {target} asked for; video sizes will be off as much",
                c.probe_name(),
                clip.bitrate,
                off * 100.0
            );
        }
        Ok((c, clip))
    })?
    .into_iter()
    .collect();

    // Noise seeds of photos and audio, and a nonce in every file's comment tag, come from outside the
    // schedule seed: two recorders made with the same --seed (and the same cached seed clips) must still
    // not share a single byte-identical file, or the server would de-duplicate them.
    let noise_base: u32 = rand::random::<u32>() >> 2;
    let nonce: u64 = rand::random();
    let ctx = WriteCtx {
        root: &partial.path,
        seeds: &seeds,
        resolution: args.resolution,
        device: &officer.device_id,
        tz: args.tz,
        noise_base,
        nonce,
    };
    let files = run_parallel(&jobs, args.jobs, |job| {
        let f = write_file(job, &ctx)?;
        progress.file_done(&f.path, f.size);
        Ok(f)
    })?;
    progress.finish();

    for d in [VIDEO_DIR, PHOTO_DIR, AUDIO_DIR, "DCIM", ""] {
        sync_dir(&partial.path.join(d))?;
    }
    // An empty directory at --out (an empty slot) is replaced by rename(2) itself; one that filled up
    // while we worked makes the rename fail, and we never merge into it.
    check_out(&out)?;
    fs::rename(&partial.path, &out).with_context(|| {
        format!(
            "could not rename {} to {}",
            partial.path.display(),
            out.display()
        )
    })?;
    partial.keep = true;
    sync_dir(parent)?;

    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        generator: format!("custody-sim {}", env!("CARGO_PKG_VERSION")),
        seed,
        out,
        device: ManifestDevice {
            device_id: info.device_id,
            badge: info.badge,
            officer_name: info.officer_name,
            unit_no: info.unit_no,
            unit_name: info.unit_name,
            tz: info.tz.to_string(),
            clock: now.saturating_add_micros(drift),
        },
        clock_drift_s: args.clock_drift,
        files,
    };
    if let Some(path) = &args.manifest {
        let mut json = serde_json::to_vec_pretty(&manifest)?;
        json.push(b'\n');
        let mut tmp = path.as_os_str().to_os_string();
        tmp.push(format!(".tmp-{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        write_synced(&tmp, &json)?;
        fs::rename(&tmp, path).with_context(|| format!("--manifest {}", path.display()))?;
    }
    Ok(manifest)
}

/// Sets the recorder's clock in `ZFY_INFO.TXT` to true time now plus `clock_drift_s` seconds, as a
/// station reading a live recorder's clock would find it at this moment, and returns the clock written.
///
/// [`make_recorder`] writes the clock as it was when it began. A recorder docked later reads as slow by
/// the time in between, and the station, which measures the offset as the recorder's clock minus its own
/// when the recorder docks, would shift every capture time by as much. Call this right before docking a
/// recorder made earlier. The file holds whole seconds, so this first waits for the next whole second:
/// the clock written is exact at the moment it is written.
pub fn wind_clock(mount: &Path, clock_drift_s: i64) -> anyhow::Result<Timestamp> {
    let path = mount.join(DEVICE_INFO_FILE);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut info = DeviceInfo::parse(&text).with_context(|| format!("{}", path.display()))?;
    let into_second = u64::from(Utc::now().timestamp_subsec_nanos().min(999_999_999));
    std::thread::sleep(Duration::from_nanos(1_000_000_000 - into_second));
    let clock = whole_seconds(Timestamp::from_datetime(Utc::now()))
        .saturating_add_micros(clock_drift_s.saturating_mul(1_000_000));
    info.clock = Some(clock);
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    write_synced(&tmp, info.to_text().as_bytes())?;
    fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
    sync_dir(mount)?;
    Ok(clock)
}

/// Refuses an `--out` that holds anything: merging into or replacing another recorder would make a test
/// fixture that lies about what the recorder recorded.
fn check_out(out: &Path) -> anyhow::Result<()> {
    match fs::symlink_metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("--out {}", out.display()))),
        Ok(m) if !m.is_dir() => bail!(
            "--out {}: exists and is not a directory; expected a new path or an empty directory",
            out.display()
        ),
        Ok(_) => {
            let mut entries =
                fs::read_dir(out).with_context(|| format!("--out {}", out.display()))?;
            if entries.next().is_some() {
                bail!(
                    "--out {}: exists and is not empty; expected a new path or an empty directory (a recorder is never written over another)",
                    out.display()
                );
            }
            Ok(())
        }
    }
}

fn whole_seconds(t: Timestamp) -> Timestamp {
    let us = t.unix_micros();
    Timestamp::from_unix_micros(us - us.rem_euclid(1_000_000))
}

struct WriteCtx<'a> {
    root: &'a Path,
    seeds: &'a BTreeMap<VideoCodec, media::SeedClip>,
    resolution: Resolution,
    device: &'a DeviceId,
    tz: FixedOffset,
    noise_base: u32,
    nonce: u64,
}

fn write_file(job: &Job, ctx: &WriteCtx<'_>) -> anyhow::Result<ManifestFile> {
    let f = &job.file;
    let path = ctx.root.join(&job.rel_path);
    // Tags name the recorder, the sequence number and this run, so no two copies of a seed clip are equal.
    let comment = format!("{}/{:04} sim-{:016x}", ctx.device, f.seq, ctx.nonce);
    let noise_seed = ctx.noise_base.wrapping_add(f.seq);
    let local = job
        .recorder_at
        .to_datetime()
        .with_timezone(&ctx.tz)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let (codec, audio_codec, duration_s) = match f.kind {
        Kind::Video(c) => {
            let seed = ctx
                .seeds
                .get(&c)
                .with_context(|| format!("no {} seed clip (this is a bug)", c.probe_name()))?;
            media::video(
                &seed.path,
                c,
                f.duration_s,
                &job.recorder_at.to_string(),
                &comment,
                f.location.as_ref(),
                &path,
            )?;
            (c.probe_name(), Some("aac"), Some(f.duration_s as f64))
        }
        Kind::Photo => {
            media::photo(ctx.resolution, noise_seed, &path)?;
            ("mjpeg", None, None)
        }
        Kind::Wav | Kind::Mp3 => {
            let (format, codec) = if f.kind == Kind::Wav {
                (media::AudioFormat::Wav, "pcm_s16le")
            } else {
                (media::AudioFormat::Mp3, "mp3")
            };
            let frequency = 300 + (f.seq * 37) % 700;
            media::audio(
                format,
                f.duration_s,
                frequency,
                noise_seed,
                &local,
                &comment,
                &path,
            )?;
            (codec, None, Some(f.duration_s as f64))
        }
    };
    let digests = sync_and_hash(&path)?;
    Ok(ManifestFile {
        path: job.rel_path.clone(),
        size: digests.size,
        sha256: digests.sha256,
        sm3: digests
            .sm3
            .context("SM3 was asked for but not computed (this is a bug)")?,
        media_type: f.kind.media_type(),
        importance: f.importance,
        importance_mark: f.importance.mark(),
        seq: f.seq,
        captured_at: job.recorder_at,
        true_captured_at: job.true_at,
        codec: codec.to_string(),
        audio_codec: audio_codec.map(String::from),
        duration_s,
        location: f.location,
    })
}

/// fsyncs a file ffmpeg wrote (ffmpeg does not) and hashes it while it is still in the page cache.
fn sync_and_hash(path: &Path) -> anyhow::Result<custody_core::Digests> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("fsync {}", path.display()))?;
    let mut hasher = ContentHasher::new(true);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync {}", dir.display()))
}

/// Runs `work` on every item with at most `jobs` threads, and returns the results in item order. Stops
/// handing out items after the first error, which it returns.
fn run_parallel<T, R, F>(items: &[T], jobs: u32, work: F) -> anyhow::Result<Vec<R>>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> anyhow::Result<R> + Sync,
{
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let threads = (jobs as usize).clamp(1, items.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    match work(item) {
                        Ok(r) => {
                            if let Ok(mut v) = results.lock() {
                                v[i] = Some(r);
                            }
                        }
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            if let Ok(mut slot) = first_error.lock() {
                                slot.get_or_insert(e);
                            }
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a worker thread panicked"))?
        .into_iter()
        .collect::<Option<Vec<R>>>()
        .context("a file was not written (this is a bug)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitrates_read_and_print_as_ffmpeg_writes_them() {
        for (s, bps, shown) in [
            ("4M", 4_000_000, "4M"),
            ("2.5M", 2_500_000, "2500k"),
            ("800k", 800_000, "800k"),
            ("1234567", 1_234_567, "1234567"),
        ] {
            let b: Bitrate = s.parse().unwrap();
            assert_eq!(b.bits_per_second(), bps);
            assert_eq!(b.to_string(), shown);
        }
        assert!("fast".parse::<Bitrate>().is_err());
        assert!("1k".parse::<Bitrate>().unwrap_err().contains("between"));
    }

    #[test]
    fn resolutions_must_be_even_and_plausible() {
        let r: Resolution = "640x360".parse().unwrap();
        assert_eq!(
            (r.width, r.height, r.to_string().as_str()),
            (640, 360, "640x360")
        );
        assert!(
            "641x360"
                .parse::<Resolution>()
                .unwrap_err()
                .contains("even")
        );
        assert!(
            "640"
                .parse::<Resolution>()
                .unwrap_err()
                .contains("WIDTHxHEIGHT")
        );
        assert!("8x8".parse::<Resolution>().is_err());
    }

    #[test]
    fn code_gets_the_command_line_defaults() {
        let a = RecorderArgs::new("/tmp/rec", 0.5).unwrap();
        assert_eq!(a.hours, Some(0.5));
        assert!(a.recordings.is_empty());
        assert_eq!(a.tz.to_string(), "+08:00");
        assert_eq!(a.codec, CodecChoice::Mixed);
        assert_eq!(a.resolution.to_string(), "1920x1080");
        assert_eq!(a.fps, 25);
        assert_eq!(a.video_bitrate.bits_per_second(), 4_000_000);
        assert_eq!(a.segment.as_secs(), 600);
        assert_eq!((a.jobs, a.medium, a.clock_drift), (2, 0, 0));
        assert!(RecorderArgs::new("/tmp/rec", 0.0).is_err());
    }

    #[test]
    fn scripted_recordings_read_and_print_as_the_command_line_writes_them() {
        let r: RecordingSpec = "1m30s+12s@22.5431,114.0579".parse().unwrap();
        assert_eq!((r.at_s, r.len_s, r.end_s()), (90, 12, 102));
        let l = r.location.unwrap();
        assert_eq!((l.lat, l.lon), (22.5431, 114.0579));
        assert_eq!(r.to_string(), "90s+12s@22.5431,114.0579");
        assert_eq!(r.to_string().parse::<RecordingSpec>().unwrap(), r);
        let plain: RecordingSpec = "0s+2m".parse().unwrap();
        assert_eq!((plain.at_s, plain.len_s, plain.location), (0, 120, None));
        for (bad, says) in [
            ("30s", "AT+LEN"),
            ("0s+0s", "at least 1s"),
            ("0s+1500ms", "whole seconds"),
            ("0s+10s@91,114", "latitude"),
            ("0s+10s@22.5", "LAT,LON"),
            ("soon+10s", "start"),
        ] {
            let e = bad.parse::<RecordingSpec>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_scripted_recorder_takes_recordings_instead_of_hours_never_both() {
        let specs: Vec<RecordingSpec> = ["0s+20s@22.54,114.05", "40s+5s"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let a = RecorderArgs::scripted("/tmp/rec", &specs).unwrap();
        assert_eq!(a.recordings, specs);
        assert_eq!(a.hours, None);
        let parse = |argv: &[&str]| Standalone::try_parse_from(argv).map(|s| s.args);
        let e = parse(&[
            "r",
            "--out",
            "/tmp/r",
            "--hours",
            "1",
            "--recording",
            "0s+5s",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("cannot be used with"), "{e}");
        let e = parse(&[
            "r",
            "--out",
            "/tmp/r",
            "--recording",
            "0s+5s",
            "--photos",
            "2",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("cannot be used with"), "{e}");
        let e = parse(&["r", "--out", "/tmp/r"]).unwrap_err().to_string();
        assert!(e.contains("--hours"), "{e}");
    }

    #[test]
    fn parallel_work_keeps_item_order_and_returns_the_first_error() {
        let items: Vec<u32> = (0..20).collect();
        let doubled = run_parallel(&items, 3, |&i| Ok(i * 2)).unwrap();
        assert_eq!(doubled, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        let e = run_parallel(&items, 2, |&i| {
            if i == 5 {
                bail!("item 5 failed")
            }
            Ok(i)
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "item 5 failed");
    }
}
