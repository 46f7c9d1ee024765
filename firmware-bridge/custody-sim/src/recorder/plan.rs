//! The recorder's shift, decided before any byte is written: who carries it, which files it records,
//! when, for how long, with which codec and mark, and their sequence numbers.
//!
//! Planning is pure and driven by one seeded random generator, so the same `--seed` (with the same
//! `--start` and build) gives the same officer, schedule and file names. Times here are offsets in
//! seconds from the first capture; the caller anchors them to a start instant and the recorder's clock.

use super::{CodecChoice, RecorderArgs, RecordingSpec};
use anyhow::{Context, bail};
use custody_core::media::EmbeddedLocation;
use custody_core::{BadgeNo, DeviceId, Importance, MediaType};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

/// A recording session (press record … press stop) lasts this long, except the last, which takes what
/// is left of the requested hours. Recorders split a session into `--segment` files.
const RECORDING_S: std::ops::RangeInclusive<u64> = 5 * 60..=40 * 60;
/// A session shorter than this is folded into the one before it: officers rarely record for under two
/// minutes, and a tiny tail would only add a file.
const MIN_RECORDING_S: u64 = 2 * 60;
/// The pause between two recordings (or audio recordings) of a shift.
const GAP_S: std::ops::RangeInclusive<u64> = 2 * 60..=10 * 60;
/// The longest audio-only recording, and the usual shortest.
const AUDIO_MAX_S: u64 = 5 * 60;
const AUDIO_MIN_S: u64 = 30;
/// One photo per this many seconds of video by default.
const PHOTO_EVERY_S: u64 = 20 * 60;

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "林", "高", "罗", "郑", "梁", "谢", "宋", "唐",
];
const GIVEN_NAMES: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "强", "磊", "军", "洋", "勇", "艳", "杰", "涛", "明", "超",
    "秀英", "建华", "志强", "海燕", "晓东", "文斌", "俊杰", "浩然", "宇航", "丽娟", "国平",
];
/// Units by their GB/T 2260 district code (Shenzhen's districts) and name: plausible defaults for the
/// device-info file.
const UNITS: &[(&str, &str)] = &[
    ("440304000000", "深圳市城市管理和综合执法局福田大队"),
    ("440303000000", "深圳市城市管理和综合执法局罗湖大队"),
    ("440305000000", "深圳市城市管理和综合执法局南山大队"),
    ("440306000000", "深圳市城市管理和综合执法局宝安大队"),
    ("440307000000", "深圳市城市管理和综合执法局龙岗大队"),
];

/// The officer data and device the recorder is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Officer {
    pub device_id: DeviceId,
    pub badge: BadgeNo,
    pub name: String,
    pub unit_no: String,
    pub unit_name: String,
}

/// A video codec the simulator encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VideoCodec {
    H264,
    H265,
}

impl VideoCodec {
    /// The codec's name as ffprobe reports it and as the manifest records it.
    pub fn probe_name(self) -> &'static str {
        match self {
            Self::H264 => "h264",
            Self::H265 => "hevc",
        }
    }
}

/// What kind of file a planned file is; the extension and folder follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// MP4: video in this codec plus AAC audio.
    Video(VideoCodec),
    /// JPEG.
    Photo,
    /// WAV, 16 kHz mono 16-bit PCM.
    Wav,
    /// MP3 (LAME).
    Mp3,
}

impl Kind {
    pub fn ext(self) -> &'static str {
        match self {
            Self::Video(_) => "MP4",
            Self::Photo => "JPG",
            Self::Wav => "WAV",
            Self::Mp3 => "MP3",
        }
    }

    pub fn media_type(self) -> MediaType {
        match self {
            Self::Video(_) => MediaType::Video,
            Self::Photo => MediaType::Photo,
            Self::Wav | Self::Mp3 => MediaType::Audio,
        }
    }

    /// Among files that start in the same second, videos come first, then audio, then photos, so the
    /// order (and so the sequence numbers) never depends on sort stability.
    fn rank(self) -> u8 {
        match self {
            Self::Video(_) => 0,
            Self::Wav | Self::Mp3 => 1,
            Self::Photo => 2,
        }
    }
}

/// One file the recorder will hold.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PlannedFile {
    pub kind: Kind,
    /// Seconds from the first capture of the shift to this file's capture start (true time).
    pub offset_s: u64,
    /// Length in seconds; 0 for a photo.
    pub duration_s: u64,
    pub seq: u32,
    pub importance: Importance,
    /// Where it was made, embedded in the file (scripted recordings only).
    pub location: Option<EmbeddedLocation>,
}

/// The whole shift.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub officer: Officer,
    /// In capture order; sequence numbers increase along it.
    pub files: Vec<PlannedFile>,
    /// Seconds from the first capture start to the end of the last recording.
    pub span_s: u64,
}

/// An audio recording or a video recording session, before it is placed on the timeline.
enum Session {
    Video { len_s: u64 },
    Audio { len_s: u64 },
}

/// Plans a recorder from the options and a seed: the random shift of `--hours`, or exactly the
/// `--recording`s. Fails when the options contradict each other (both or neither of those, overlapping
/// recordings, more marked files than files).
pub(crate) fn plan(args: &RecorderArgs, seed: u64) -> anyhow::Result<Plan> {
    let mut rng = StdRng::seed_from_u64(seed);
    // Officer data is drawn first and always, even when an option overrides it, so overriding the
    // device or the name does not shift the schedule drawn after it.
    let officer = officer(args, &mut rng)?;
    let segment_s = args.segment.as_secs().max(1);

    let (mut files, span_s) = match (args.hours, args.recordings.as_slice()) {
        (Some(hours), []) => random_shift(args, hours, segment_s, &mut rng),
        (None, []) => bail!("expected --hours or at least one --recording"),
        (None, recordings) => scripted_shift(recordings, segment_s)?,
        (Some(_), _) => bail!("--hours and --recording: give one or the other, not both"),
    };

    files.sort_by_key(|f| (f.offset_s, f.kind.rank()));

    // Recorders keep counting across shifts, so a docked recorder rarely starts at 1.
    let first_seq: u32 = rng.random_range(1..=900);
    let mut video_index = 0usize;
    for (i, f) in files.iter_mut().enumerate() {
        f.seq = first_seq + i as u32;
        if let Kind::Video(codec) = &mut f.kind {
            *codec = match args.codec {
                CodecChoice::H264 => VideoCodec::H264,
                CodecChoice::H265 => VideoCodec::H265,
                // Alternating gives at least one file of each as soon as there are two videos.
                CodecChoice::Mixed if video_index.is_multiple_of(2) => VideoCodec::H264,
                CodecChoice::Mixed => VideoCodec::H265,
            };
            video_index += 1;
        }
    }

    let n = files.len();
    let important = args.important.map_or_else(
        || ((n as f64 * 0.1).round() as usize).max(1),
        |k| k as usize,
    );
    let medium = args.medium as usize;
    if important + medium > n {
        bail!(
            "--important {important} and --medium {medium} mark {} files, but this recorder has only {n}",
            important + medium
        );
    }
    let marked = rand::seq::index::sample(&mut rng, n, important + medium);
    for (k, i) in marked.iter().enumerate() {
        files[i].importance = if k < important {
            Importance::Important
        } else {
            Importance::Medium
        };
    }

    Ok(Plan {
        officer,
        files,
        span_s,
    })
}

/// The files of one video recording of `len_s` seconds from `at_s`: the recorder closes a file every
/// segment length, so the last file of a recording is shorter.
fn push_video(
    files: &mut Vec<PlannedFile>,
    at_s: u64,
    len_s: u64,
    segment_s: u64,
    location: Option<EmbeddedLocation>,
) {
    let mut at = 0;
    while at < len_s {
        let dur = segment_s.min(len_s - at);
        files.push(PlannedFile {
            kind: Kind::Video(VideoCodec::H264),
            offset_s: at_s + at,
            duration_s: dur,
            seq: 0,
            importance: Importance::Normal,
            location,
        });
        at += dur;
    }
}

/// `hours` of video as recordings of random lengths with random pauses, audio-only recordings between
/// them and photos at random moments; and the span from the first capture to the end of the last.
fn random_shift(
    args: &RecorderArgs,
    hours: f64,
    segment_s: u64,
    rng: &mut StdRng,
) -> (Vec<PlannedFile>, u64) {
    let video_total_s = ((hours * 3600.0).round() as u64).max(1);

    let mut sessions = Vec::new();
    let mut left = video_total_s;
    while left > 0 {
        let mut len = rng.random_range(RECORDING_S).min(left);
        if left - len < MIN_RECORDING_S {
            len = left;
        }
        sessions.push(Session::Video { len_s: len });
        left -= len;
    }

    let audio_count = args.audio.unwrap_or_else(|| (hours.round() as u32).max(1));
    // Short test recorders get short audio: never longer than a quarter of the video.
    let audio_max = (video_total_s / 4).clamp(3, AUDIO_MAX_S);
    let audio_min = AUDIO_MIN_S.min(audio_max);
    for _ in 0..audio_count {
        let at = rng.random_range(0..=sessions.len());
        let len_s = rng.random_range(audio_min..=audio_max);
        sessions.insert(at, Session::Audio { len_s });
    }

    let mut files = Vec::new();
    let mut t = 0u64;
    let mut audio_index = 0usize;
    for (i, session) in sessions.iter().enumerate() {
        if i > 0 {
            t += rng.random_range(GAP_S);
        }
        match *session {
            Session::Video { len_s } => {
                push_video(&mut files, t, len_s, segment_s, None);
                t += len_s;
            }
            Session::Audio { len_s } => {
                let kind = if audio_index.is_multiple_of(2) {
                    Kind::Wav
                } else {
                    Kind::Mp3
                };
                audio_index += 1;
                files.push(PlannedFile {
                    kind,
                    offset_s: t,
                    duration_s: len_s,
                    seq: 0,
                    importance: Importance::Normal,
                    location: None,
                });
                t += len_s;
            }
        }
    }
    let span_s = t;

    // Officers take photos during recordings and between them.
    let photo_count = args
        .photos
        .unwrap_or_else(|| ((video_total_s / PHOTO_EVERY_S) as u32).max(1));
    for _ in 0..photo_count {
        files.push(PlannedFile {
            kind: Kind::Photo,
            offset_s: rng.random_range(0..=span_s),
            duration_s: 0,
            seq: 0,
            importance: Importance::Normal,
            location: None,
        });
    }
    (files, span_s)
}

/// Exactly the given video recordings, which may not overlap (a recorder records one thing at a time);
/// and the span from the shift's start to the end of the last.
fn scripted_shift(
    recordings: &[RecordingSpec],
    segment_s: u64,
) -> anyhow::Result<(Vec<PlannedFile>, u64)> {
    let mut sorted = recordings.to_vec();
    sorted.sort_by_key(|r| r.at_s);
    for w in sorted.windows(2) {
        if w[1].at_s < w[0].end_s() {
            bail!(
                "--recording {} overlaps --recording {}: a recorder records one thing at a time",
                w[0],
                w[1]
            );
        }
    }
    let mut files = Vec::new();
    for r in &sorted {
        push_video(&mut files, r.at_s, r.len_s, segment_s, r.location);
    }
    let span_s = sorted.iter().map(RecordingSpec::end_s).max().unwrap_or(0);
    Ok((files, span_s))
}

fn officer(args: &RecorderArgs, rng: &mut StdRng) -> anyhow::Result<Officer> {
    let device = format!("ZFY{:05}", rng.random_range(0..100_000u32));
    let badge_len = rng.random_range(6..=7);
    let badge: String = (0..badge_len)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect();
    let surname = SURNAMES.choose(rng).copied().unwrap_or("王");
    let given = GIVEN_NAMES.choose(rng).copied().unwrap_or("伟");
    let (unit_no, unit_name) = UNITS.choose(rng).copied().unwrap_or(UNITS[0]);
    Ok(Officer {
        device_id: match &args.device {
            Some(d) => d.clone(),
            None => DeviceId::parse(device).context("generated device number")?,
        },
        badge: match &args.badge {
            Some(b) => b.clone(),
            None => BadgeNo::parse(badge).context("generated badge number")?,
        },
        name: args
            .name
            .clone()
            .unwrap_or_else(|| format!("{surname}{given}")),
        unit_no: args.unit_no.clone().unwrap_or_else(|| unit_no.to_string()),
        unit_name: args
            .unit_name
            .clone()
            .unwrap_or_else(|| unit_name.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(hours: f64) -> RecorderArgs {
        RecorderArgs::new("/nonexistent/rec", hours).unwrap()
    }

    fn videos(p: &Plan) -> Vec<&PlannedFile> {
        p.files
            .iter()
            .filter(|f| matches!(f.kind, Kind::Video(_)))
            .collect()
    }

    #[test]
    fn the_same_seed_plans_the_same_shift_and_another_seed_another() {
        let a = args(2.0);
        assert_eq!(plan(&a, 7).unwrap(), plan(&a, 7).unwrap());
        assert_ne!(plan(&a, 7).unwrap(), plan(&a, 8).unwrap());
    }

    #[test]
    fn a_shift_holds_the_requested_hours_of_video_in_segments_with_gaps_between_recordings() {
        let p = plan(&args(3.0), 1).unwrap();
        let v = videos(&p);
        assert_eq!(v.iter().map(|f| f.duration_s).sum::<u64>(), 3 * 3600);
        assert!(v.iter().all(|f| f.duration_s <= 600 && f.duration_s > 0));
        assert!(
            p.span_s > 3 * 3600 + GAP_S.start(),
            "recordings are spaced: {}",
            p.span_s
        );
        // Default counts: a photo per 20 minutes and an audio recording per hour.
        assert_eq!(p.files.iter().filter(|f| f.kind == Kind::Photo).count(), 9);
        let audio: Vec<_> = p
            .files
            .iter()
            .filter(|f| f.kind.media_type() == MediaType::Audio)
            .collect();
        assert_eq!(audio.len(), 3);
        assert_eq!(
            audio.iter().map(|f| f.kind).collect::<Vec<_>>(),
            [Kind::Wav, Kind::Mp3, Kind::Wav]
        );
    }

    #[test]
    fn sequence_numbers_increase_with_capture_time_across_all_files() {
        let p = plan(&args(2.0), 3).unwrap();
        for w in p.files.windows(2) {
            assert!(w[0].offset_s <= w[1].offset_s);
            assert_eq!(w[0].seq + 1, w[1].seq);
        }
    }

    #[test]
    fn mixed_codecs_alternate_so_two_videos_are_one_of_each() {
        let mut a = args(0.02);
        a.segment = "40s".parse().unwrap();
        let p = plan(&a, 5).unwrap();
        let codecs: Vec<_> = videos(&p)
            .iter()
            .map(|f| match f.kind {
                Kind::Video(c) => c,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(codecs, [VideoCodec::H264, VideoCodec::H265]);
        a.codec = CodecChoice::H265;
        let p = plan(&a, 5).unwrap();
        assert!(
            videos(&p)
                .iter()
                .all(|f| f.kind == Kind::Video(VideoCodec::H265))
        );
    }

    #[test]
    fn about_a_tenth_of_files_are_marked_important_by_default_and_at_least_one() {
        let p = plan(&args(0.01), 2).unwrap();
        let imp = |p: &Plan, i| p.files.iter().filter(|f| f.importance == i).count();
        assert_eq!(imp(&p, Importance::Important), 1);
        let p = plan(&args(4.0), 2).unwrap();
        let want = (p.files.len() as f64 * 0.1).round() as usize;
        assert_eq!(imp(&p, Importance::Important), want);
        let mut a = args(4.0);
        a.important = Some(0);
        a.medium = 5;
        let p = plan(&a, 2).unwrap();
        assert_eq!(imp(&p, Importance::Important), 0);
        assert_eq!(imp(&p, Importance::Medium), 5);
    }

    #[test]
    fn more_marks_than_files_is_refused_naming_both_options() {
        let mut a = args(0.01);
        a.important = Some(50);
        let e = plan(&a, 1).unwrap_err().to_string();
        assert!(
            e.contains("--important 50") && e.contains("--medium 0"),
            "{e}"
        );
    }

    fn scripted(specs: &[&str]) -> RecorderArgs {
        let specs: Vec<RecordingSpec> = specs.iter().map(|s| s.parse().unwrap()).collect();
        let mut a = RecorderArgs::scripted("/nonexistent/rec", &specs).unwrap();
        a.segment = "10s".parse().unwrap();
        a
    }

    #[test]
    fn scripted_recordings_are_laid_out_exactly_split_into_segments_with_their_place() {
        // Given out of order: the plan sorts them.
        let p = plan(&scripted(&["40s+6s", "0s+25s@22.54,114.05"]), 1).unwrap();
        let layout: Vec<(u64, u64)> = p.files.iter().map(|f| (f.offset_s, f.duration_s)).collect();
        assert_eq!(layout, [(0, 10), (10, 10), (20, 5), (40, 6)]);
        assert!(p.files.iter().all(|f| matches!(f.kind, Kind::Video(_))));
        assert_eq!(p.span_s, 46);
        let places: Vec<bool> = p.files.iter().map(|f| f.location.is_some()).collect();
        assert_eq!(places, [true, true, true, false]);
        assert_eq!(p.files[0].location.unwrap().lat, 22.54);
        for w in p.files.windows(2) {
            assert_eq!(w[0].seq + 1, w[1].seq);
        }
    }

    #[test]
    fn overlapping_recordings_are_refused_naming_both() {
        let e = plan(&scripted(&["0s+20s", "15s+10s"]), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("0s+20s") && e.contains("15s+10s"), "{e}");
        // Touching is not overlapping: one press of stop, then of record.
        assert!(plan(&scripted(&["0s+20s", "20s+10s"]), 1).is_ok());
    }

    #[test]
    fn hours_and_recordings_are_one_or_the_other() {
        let mut a = scripted(&["0s+5s"]);
        a.hours = Some(1.0);
        assert!(plan(&a, 1).unwrap_err().to_string().contains("not both"));
        a.hours = None;
        a.recordings.clear();
        assert!(plan(&a, 1).unwrap_err().to_string().contains("--hours"));
    }

    #[test]
    fn options_override_the_officer_without_changing_the_schedule() {
        let mut a = args(1.0);
        let p = plan(&a, 9).unwrap();
        assert!(p.officer.device_id.as_str().starts_with("ZFY"));
        assert_eq!(p.officer.device_id.as_str().len(), 8);
        assert!((6..=7).contains(&p.officer.badge.as_str().len()));
        a.device = Some(DeviceId::parse("ZFY99999").unwrap());
        a.name = Some("张三".into());
        let q = plan(&a, 9).unwrap();
        assert_eq!(q.officer.device_id.as_str(), "ZFY99999");
        assert_eq!(q.officer.name, "张三");
        assert_eq!(q.files, p.files);
    }
}
