//! Black-box tests of `custody-sim recorder`: the library function for the generated recorder, the binary
//! for what the command line promises. They need ffmpeg and ffprobe on PATH (scripts/test.sh installs
//! them).
//!
//! Generating is the slow part, so one small recorder is made once and shared by the tests that only
//! read it.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use custody_core::recorder::{DEVICE_INFO_FILE, DeviceInfo, MediaName};
use custody_core::{ContentHasher, Importance, MediaType, Timestamp};
use custody_sim::ffmpeg;
use custody_sim::recorder::{Manifest, RecorderArgs, RecordingSpec, make_recorder};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_custody-sim");

struct Fixture {
    _dir: tempfile::TempDir,
    slot: PathBuf,
    manifest_file: PathBuf,
    manifest: Manifest,
    bitrate: u64,
}

/// A 72-second recorder in 30-second segments at 640x360 (three videos, so both codecs), two audio
/// files (WAV and MP3), two photos, one medium mark; written into an existing empty slot directory.
fn small_recorder() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let slot = dir.path().join("slot-03");
        std::fs::create_dir(&slot).unwrap();
        let manifest_file = dir.path().join("manifest.json");
        let mut args = RecorderArgs::new(&slot, 0.02).unwrap();
        args.segment = "30s".parse().unwrap();
        args.resolution = "640x360".parse().unwrap();
        args.audio = Some(2);
        args.photos = Some(2);
        args.medium = 1;
        args.manifest = Some(manifest_file.clone());
        args.quiet = true;
        let manifest = make_recorder(&args).unwrap();
        Fixture {
            _dir: dir,
            slot,
            manifest_file,
            manifest,
            bitrate: args.video_bitrate.bits_per_second(),
        }
    })
}

/// Every regular file under `root`, relative and `/` separated, sorted.
fn files_under(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn media_names(f: &Fixture) -> Vec<MediaName> {
    files_under(&f.slot)
        .iter()
        .filter(|p| p.as_str() != DEVICE_INFO_FILE)
        .map(|p| MediaName::parse(p.rsplit('/').next().unwrap()).unwrap())
        .collect()
}

#[test]
fn a_generated_recorder_has_a_parsable_device_info_file_bound_to_its_device() {
    let f = small_recorder();
    let text = std::fs::read_to_string(f.slot.join(DEVICE_INFO_FILE)).unwrap();
    let info = DeviceInfo::parse(&text).unwrap();
    assert_eq!(info.device_id, f.manifest.device.device_id);
    assert_eq!(info.badge, f.manifest.device.badge);
    assert_eq!(info.officer_name, f.manifest.device.officer_name);
    assert!(info.unit_name.starts_with("深圳市"), "{}", info.unit_name);
    assert_eq!(info.tz.to_string(), "+08:00");
    let clock = info.clock.expect("the clock field is written");
    let age = Timestamp::from_datetime(chrono::Utc::now()).unix_micros() - clock.unix_micros();
    assert!((0..120_000_000).contains(&age), "clock is now: {clock}");
}

#[test]
fn every_media_file_name_parses_carries_the_device_and_sits_in_its_folder() {
    let f = small_recorder();
    let paths = files_under(&f.slot);
    assert_eq!(paths.len(), f.manifest.files.len() + 1, "{paths:?}");
    for p in paths.iter().filter(|p| p.as_str() != DEVICE_INFO_FILE) {
        let name = MediaName::parse(p.rsplit('/').next().unwrap()).unwrap();
        assert_eq!(name.device_id, f.manifest.device.device_id, "{p}");
        let folder = match name.media_type {
            MediaType::Video => "DCIM/VIDEO/",
            MediaType::Photo => "DCIM/PHOTO/",
            _ => "DCIM/AUDIO/",
        };
        assert!(p.starts_with(folder), "{p}");
    }
}

#[test]
fn sequence_numbers_increase_with_the_capture_time_in_the_names() {
    let f = small_recorder();
    let mut names = media_names(f);
    names.sort_by_key(|n| n.seq);
    for w in names.windows(2) {
        assert_eq!(w[0].seq + 1, w[1].seq);
        assert!(w[0].local_time <= w[1].local_time, "{} {}", w[0], w[1]);
    }
}

#[test]
fn at_least_one_file_is_marked_important_and_the_asked_for_one_medium() {
    let names = media_names(small_recorder());
    let count = |i| names.iter().filter(|n| n.importance == i).count();
    assert!(count(Importance::Important) >= 1);
    assert_eq!(count(Importance::Medium), 1);
}

#[test]
fn videos_are_h264_and_hevc_with_aac_audio_and_of_the_planned_duration() {
    let f = small_recorder();
    let mut seen = HashSet::new();
    for m in f
        .manifest
        .files
        .iter()
        .filter(|m| m.media_type == MediaType::Video)
    {
        let p = ffmpeg::probe(&f.slot.join(&m.path)).unwrap();
        assert_eq!(p.codecs, [m.codec.as_str(), "aac"], "{}", m.path);
        if m.codec == "hevc" {
            assert_eq!(p.codec_tags[0], "hvc1", "{}", m.path);
        }
        seen.insert(m.codec.clone());
        let want = m.duration_s.unwrap();
        let got = p.duration_s.unwrap();
        assert!(
            (got - want).abs() <= (want * 0.05).max(1.0),
            "{}: {got} s, planned {want} s",
            m.path
        );
    }
    assert_eq!(seen, HashSet::from(["h264".into(), "hevc".into()]));
}

#[test]
fn photos_and_audio_are_what_their_extensions_say() {
    let f = small_recorder();
    let mut codecs = HashSet::new();
    for m in f
        .manifest
        .files
        .iter()
        .filter(|m| m.media_type != MediaType::Video)
    {
        let p = ffmpeg::probe(&f.slot.join(&m.path)).unwrap();
        assert_eq!(p.codecs, [m.codec.as_str()], "{}", m.path);
        codecs.insert(m.codec.clone());
        if let Some(want) = m.duration_s {
            let got = p.duration_s.unwrap();
            assert!(
                (got - want).abs() <= 1.0,
                "{}: {got} s, planned {want} s",
                m.path
            );
        }
    }
    assert_eq!(
        codecs,
        HashSet::from(["mjpeg".into(), "pcm_s16le".into(), "mp3".into()])
    );
}

#[test]
fn video_sizes_are_near_bitrate_times_duration() {
    let f = small_recorder();
    for m in f
        .manifest
        .files
        .iter()
        .filter(|m| m.media_type == MediaType::Video)
    {
        let expected = f.bitrate as f64 / 8.0 * m.duration_s.unwrap();
        let ratio = m.size as f64 / expected;
        assert!(
            (0.75..=1.25).contains(&ratio),
            "{}: {} bytes is {ratio:.2} times the {expected} expected",
            m.path,
            m.size
        );
    }
}

#[test]
fn short_files_of_every_kind_decode_without_errors() {
    let f = small_recorder();
    let shortest = |codec: &str| {
        f.manifest
            .files
            .iter()
            .filter(|m| m.codec == codec)
            .min_by(|a, b| a.duration_s.partial_cmp(&b.duration_s).unwrap())
            .unwrap()
    };
    for codec in ["h264", "hevc", "mjpeg", "pcm_s16le", "mp3"] {
        let m = shortest(codec);
        let errors = ffmpeg::decode_errors(&f.slot.join(&m.path)).unwrap();
        assert!(errors.trim().is_empty(), "{}: {errors}", m.path);
    }
}

#[test]
fn no_two_files_have_the_same_sha256() {
    let f = small_recorder();
    let distinct: HashSet<_> = f.manifest.files.iter().map(|m| m.sha256).collect();
    assert_eq!(distinct.len(), f.manifest.files.len());
}

#[test]
fn the_manifest_file_matches_the_bytes_on_disk() {
    let f = small_recorder();
    assert_eq!(Manifest::read(&f.manifest_file).unwrap(), f.manifest);
    let tz = "+08:00".parse().unwrap();
    for m in &f.manifest.files {
        let bytes = std::fs::read(f.slot.join(&m.path)).unwrap();
        let d = ContentHasher::digest(&bytes, true);
        assert_eq!(d.size, m.size, "{}", m.path);
        assert_eq!(d.sha256, m.sha256, "{}", m.path);
        assert_eq!(d.sm3, Some(m.sm3), "{}", m.path);
        let name = MediaName::parse(m.path.rsplit('/').next().unwrap()).unwrap();
        assert_eq!(name.captured_at(tz), m.captured_at, "{}", m.path);
        assert_eq!(name.seq, m.seq);
        assert_eq!(name.importance.mark(), m.importance_mark);
        assert_eq!(m.captured_at, m.true_captured_at, "no drift asked for");
    }
}

#[test]
fn an_empty_slot_directory_is_replaced_whole_and_no_partial_directory_is_left() {
    let f = small_recorder();
    assert!(f.slot.join(DEVICE_INFO_FILE).is_file());
    let parent = f.slot.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".partial-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A very small recorder at a fixed start; seed clips come from `cache`, so repeated runs encode once.
fn tiny_args(out: &Path, cache: &Path, seed: u64) -> RecorderArgs {
    let mut a = RecorderArgs::new(out, 0.006).unwrap();
    a.segment = "10s".parse().unwrap();
    a.resolution = "320x240".parse().unwrap();
    a.video_bitrate = "500k".parse().unwrap();
    a.start = Some(Timestamp::parse_rfc3339("2026-11-22T08:30:00+08:00").unwrap());
    a.seed = Some(seed);
    a.clip_cache = Some(cache.to_path_buf());
    a.quiet = true;
    a
}

#[test]
fn the_same_seed_gives_the_same_officer_and_names_but_different_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let a = make_recorder(&tiny_args(&dir.path().join("a"), &cache, 42)).unwrap();
    let b = make_recorder(&tiny_args(&dir.path().join("b"), &cache, 42)).unwrap();
    let c = make_recorder(&tiny_args(&dir.path().join("c"), &cache, 43)).unwrap();
    let names = |m: &Manifest| m.files.iter().map(|f| f.path.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b));
    assert_ne!(names(&a), names(&c));
    let without_clock = |m: &Manifest| {
        let mut d = m.device.clone();
        d.clock = Timestamp::from_unix_micros(0);
        d
    };
    assert_eq!(without_clock(&a), without_clock(&b));
    let first = a.files.first().unwrap();
    assert!(first.path.contains("_20261122083000_"), "{}", first.path);
    // The server de-duplicates by hash: two recorders must never share a file.
    let hashes: HashSet<_> = a.files.iter().chain(&b.files).map(|f| f.sha256).collect();
    assert_eq!(hashes.len(), a.files.len() + b.files.len());
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        2,
        "one clip per codec"
    );
}

#[test]
fn a_drifting_clock_shows_in_the_names_and_the_device_clock() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rec");
    let mut args = tiny_args(&out, &dir.path().join("cache"), 7);
    args.clock_drift = -90;
    args.codec = custody_sim::recorder::CodecChoice::H264;
    let m = make_recorder(&args).unwrap();
    let first = m.files.first().unwrap();
    assert_eq!(
        first.true_captured_at.to_string(),
        "2026-11-22T00:30:00Z",
        "--start is true time"
    );
    assert_eq!(first.captured_at.to_string(), "2026-11-22T00:28:30Z");
    assert!(first.path.contains("_20261122082830_"), "{}", first.path);
    let info =
        DeviceInfo::parse(&std::fs::read_to_string(out.join(DEVICE_INFO_FILE)).unwrap()).unwrap();
    let behind = chrono::Utc::now().timestamp() - info.clock.unwrap().to_datetime().timestamp();
    assert!((90..150).contains(&behind), "clock is {behind} s behind");
}

#[test]
fn a_scripted_recorder_holds_exactly_the_recordings_asked_for_with_their_places() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rec");
    let specs: Vec<RecordingSpec> = ["0s+14s@22.5431,114.0579", "30s+4s"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let mut args = RecorderArgs::scripted(&out, &specs).unwrap();
    args.segment = "10s".parse().unwrap();
    args.resolution = "320x240".parse().unwrap();
    args.video_bitrate = "500k".parse().unwrap();
    args.codec = custody_sim::recorder::CodecChoice::H264;
    args.start = Some(Timestamp::parse_rfc3339("2026-11-22T08:30:00+08:00").unwrap());
    args.clock_drift = 120;
    args.clip_cache = Some(dir.path().join("cache"));
    args.quiet = true;
    let m = make_recorder(&args).unwrap();
    let layout: Vec<(String, f64)> = m
        .files
        .iter()
        .map(|f| (f.true_captured_at.to_string(), f.duration_s.unwrap()))
        .collect();
    assert_eq!(
        layout,
        [
            ("2026-11-22T00:30:00Z".to_string(), 10.0),
            ("2026-11-22T00:30:10Z".to_string(), 4.0),
            ("2026-11-22T00:30:30Z".to_string(), 4.0),
        ]
    );
    assert!(m.files.iter().all(|f| f.media_type == MediaType::Video));
    assert_eq!(files_under(&out.join("DCIM/PHOTO")), Vec::<String>::new());
    assert_eq!(files_under(&out.join("DCIM/AUDIO")), Vec::<String>::new());
    // The place is in the files of the first recording only, where the server's probe reads it.
    for (f, place) in m.files.iter().zip([true, true, false]) {
        let p = ffmpeg::probe(&out.join(&f.path)).unwrap();
        assert!(
            (p.duration_s.unwrap() - f.duration_s.unwrap()).abs() < 1.0,
            "{p:?}"
        );
        match place {
            true => {
                let at = custody_core::media::parse_iso6709(p.location.as_deref().unwrap());
                let at = at.unwrap();
                assert!((at.lat - 22.5431).abs() < 1e-4 && (at.lon - 114.0579).abs() < 1e-4);
                assert_eq!(f.location.unwrap().lat, 22.5431);
            }
            false => assert_eq!((p.location, f.location), (None, None)),
        }
    }
    // Wound just before docking, the recorder's clock is now plus its drift.
    let clock = custody_sim::recorder::wind_clock(&out, args.clock_drift).unwrap();
    let info =
        DeviceInfo::parse(&std::fs::read_to_string(out.join(DEVICE_INFO_FILE)).unwrap()).unwrap();
    assert_eq!(info.clock, Some(clock));
    let ahead = clock.unix_micros() - Timestamp::from_datetime(chrono::Utc::now()).unix_micros();
    assert!(
        (119_000_000..=120_000_000).contains(&ahead),
        "clock is {ahead} µs ahead"
    );
}

#[test]
fn a_non_empty_out_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("slot");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("other.MP4"), b"someone else's").unwrap();
    let run = Command::new(BIN)
        .args(["recorder", "--hours", "0.01", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("exists and is not empty"), "{stderr}");
    assert_eq!(files_under(&out), ["other.MP4"]);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_failed_run_leaves_neither_a_recorder_nor_a_partial_directory() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("cache-is-a-file");
    std::fs::write(&not_a_dir, b"").unwrap();
    // The clip cache cannot be created, which fails the run after the partial directory exists.
    let args = tiny_args(&dir.path().join("rec"), &not_a_dir, 1);
    let e = make_recorder(&args).unwrap_err();
    assert!(format!("{e:#}").contains("--clip-cache"), "{e:#}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["cache-is-a-file"]);
}

#[test]
fn without_ffmpeg_it_says_which_package_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let run = Command::new(BIN)
        .args(["recorder", "--hours", "0.01", "--out"])
        .arg(dir.path().join("rec"))
        .env("PATH", dir.path())
        .output()
        .unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains(
            "ffmpeg not found on PATH: install the Debian package ffmpeg (scripts/test.sh does)"
        ),
        "{stderr}"
    );
}

#[test]
fn the_help_explains_every_option() {
    let run = Command::new(BIN)
        .args(["recorder", "--help"])
        .output()
        .unwrap();
    assert!(run.status.success());
    let help = String::from_utf8_lossy(&run.stdout);
    for opt in [
        "--out",
        "--hours",
        "--recording",
        "--device",
        "--badge",
        "--name",
        "--unit-no",
        "--unit-name",
        "--tz",
        "--start",
        "--clock-drift",
        "--codec",
        "--resolution",
        "--fps",
        "--video-bitrate",
        "--segment",
        "--photos",
        "--audio",
        "--important",
        "--medium",
        "--seed",
        "--manifest",
        "--jobs",
    ] {
        assert!(
            help.contains(&format!("{opt} ")),
            "{opt} missing from:\n{help}"
        );
    }
}
