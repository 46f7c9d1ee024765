//! Making each media file with ffmpeg.
//!
//! Encoding hours of video frame by frame would take hours on two cores, so video is made in two steps:
//! a short *seed clip* per codec is encoded from a noisy test pattern (noise, because a clean pattern
//! compresses so well the encoder would not spend the bitrate a recorder does), then every video file is
//! the seed looped by stream copy to its duration. Copying runs at disk speed, and each copy gets its own
//! `creation_time` and `comment`, so no two files share bytes. Photos and audio are cheap enough to
//! encode one by one.

use super::plan::VideoCodec;
use super::{Bitrate, Resolution};
use crate::ffmpeg;
use anyhow::Context;
use custody_core::media::EmbeddedLocation;
use std::path::{Path, PathBuf};

/// Length of a seed clip: two 2-second GOPs, so a loop restarts on a key frame.
const SEED_SECONDS: u32 = 4;
/// AAC audio in every video (mono, 48 kHz), as body-worn recorders record it.
pub(crate) const VIDEO_AUDIO_BITRATE: u64 = 64_000;
/// A seed clip whose bitrate is this close to the target is kept; otherwise it is encoded again with a
/// corrected target, because the encoders overshoot or undershoot a few-second clip by 10 % or more.
const BITRATE_TOLERANCE: f64 = 0.08;
const SEED_ATTEMPTS: u32 = 3;
/// Bump when the seed encoding changes, so a `--clip-cache` never hands out a clip made the old way.
const SEED_VERSION: u32 = 1;

/// What encoding a seed clip produced.
#[derive(Debug, Clone)]
pub(crate) struct SeedClip {
    pub path: PathBuf,
    /// Bits per second of the whole clip (video and audio), as measured from its size.
    pub bitrate: u64,
}

/// Encodes (or takes from `cache`) the seed clip for `codec`, in `dir`.
pub(crate) fn seed_clip(
    codec: VideoCodec,
    resolution: Resolution,
    fps: u32,
    video_bitrate: Bitrate,
    dir: &Path,
    cache: Option<&Path>,
) -> anyhow::Result<SeedClip> {
    let name = format!(
        "seed-v{SEED_VERSION}-{}-{resolution}-{fps}fps-{}.mp4",
        codec.probe_name(),
        video_bitrate.bits_per_second()
    );
    let path = match cache {
        Some(c) => c.join(&name),
        None => dir.join(&name),
    };
    if cache.is_some() && path.is_file() {
        return measure(path);
    }
    // Encode next to the final path and rename, so a cache shared by parallel runs (processes, or
    // threads of one benchmark) never holds half a clip.
    let tmp = path.with_extension(format!(
        "tmp-{}-{:08x}.mp4",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = calibrated(codec, resolution, fps, video_bitrate, &tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    result
}

/// Encodes the seed clip into `tmp` until its bit rate is close to the target (at most
/// [`SEED_ATTEMPTS`] times), keeping the closest at `path`.
fn calibrated(
    codec: VideoCodec,
    resolution: Resolution,
    fps: u32,
    video_bitrate: Bitrate,
    tmp: &Path,
    path: &Path,
) -> anyhow::Result<SeedClip> {
    let target = (video_bitrate.bits_per_second() + VIDEO_AUDIO_BITRATE) as f64;
    let mut asked = video_bitrate.bits_per_second() as f64;
    let mut best: Option<(f64, SeedClip)> = None;
    for _ in 0..SEED_ATTEMPTS {
        encode_seed(codec, resolution, fps, asked as u64, tmp)?;
        let clip = measure(tmp.to_path_buf())?;
        let ratio = clip.bitrate as f64 / target;
        let error = (ratio - 1.0).abs();
        if best.as_ref().is_none_or(|(e, _)| error < *e) {
            std::fs::rename(tmp, path)
                .with_context(|| format!("could not move the seed clip to {}", path.display()))?;
            best = Some((
                error,
                SeedClip {
                    path: path.to_path_buf(),
                    bitrate: clip.bitrate,
                },
            ));
        }
        if error <= BITRATE_TOLERANCE {
            break;
        }
        // Scale the request by how far off the result was; bounded so a pattern the encoder cannot fill
        // does not send the request to absurd values.
        let original = video_bitrate.bits_per_second() as f64;
        asked = (asked / ratio).clamp(original / 4.0, original * 4.0);
    }
    best.map(|(_, c)| c)
        .context("no seed clip was encoded (this is a bug)")
}

fn measure(path: PathBuf) -> anyhow::Result<SeedClip> {
    let size = std::fs::metadata(&path)
        .with_context(|| format!("seed clip {}", path.display()))?
        .len();
    Ok(SeedClip {
        path,
        bitrate: size * 8 / u64::from(SEED_SECONDS),
    })
}

fn encode_seed(
    codec: VideoCodec,
    resolution: Resolution,
    fps: u32,
    video_bps: u64,
    out: &Path,
) -> anyhow::Result<()> {
    let gop = (fps * 2).to_string();
    let b = video_bps.to_string();
    // A VBV cap like a recorder's hardware encoder: peaks at most 25 % over the average.
    let maxrate = (video_bps + video_bps / 4).to_string();
    let bufsize = (video_bps * 2).to_string();
    let source = format!(
        "testsrc2=size={}x{}:rate={fps},noise=alls=40:allf=t+u",
        resolution.width, resolution.height
    );
    let mut args: Vec<String> = [
        "-f",
        "lavfi",
        "-i",
        &source,
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=1000:sample_rate=48000,volume=0.3",
        "-t",
        &SEED_SECONDS.to_string(),
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-pix_fmt",
        "yuv420p",
        // ultrafast: no B-frames, so looping by stream copy never reorders across the seam, and the seed
        // encodes in seconds even at 1080p.
        "-preset",
        "ultrafast",
        "-b:v",
        &b,
        "-maxrate",
        &maxrate,
        "-bufsize",
        &bufsize,
        "-g",
        &gop,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match codec {
        VideoCodec::H264 => args.extend(["-c:v", "libx264"].map(String::from)),
        // hvc1 (not ffmpeg's default hev1) is the tag Apple players and browsers require for HEVC in MP4.
        VideoCodec::H265 => args.extend(
            [
                "-c:v",
                "libx265",
                "-x265-params",
                "log-level=error",
                "-tag:v",
                "hvc1",
            ]
            .map(String::from),
        ),
    }
    args.extend(
        [
            "-c:a",
            "aac",
            "-b:a",
            &VIDEO_AUDIO_BITRATE.to_string(),
            "-ac",
            "1",
            "-ar",
            "48000",
            "-f",
            "mp4",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let mut all: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    all.push(out.into());
    ffmpeg::run(all).with_context(|| format!("encoding the {} seed clip", codec.probe_name()))
}

/// Makes an MP4 of `duration_s` seconds by looping `seed` with stream copy, tagged with `location` when
/// given (ISO 6709, which ffmpeg's MP4 muxer stores in a `loci` box and its demuxer reads back as
/// `location`).
pub(crate) fn video(
    seed: &Path,
    codec: VideoCodec,
    duration_s: u64,
    creation_time: &str,
    comment: &str,
    location: Option<&EmbeddedLocation>,
    out: &Path,
) -> anyhow::Result<()> {
    let mut args: Vec<std::ffi::OsString> = vec![
        "-stream_loop".into(),
        "-1".into(),
        "-i".into(),
        seed.into(),
        "-t".into(),
        duration_s.to_string().into(),
        "-map".into(),
        "0".into(),
        "-c".into(),
        "copy".into(),
        "-map_metadata".into(),
        "-1".into(),
    ];
    if codec == VideoCodec::H265 {
        args.extend(["-tag:v".into(), "hvc1".into()]);
    }
    args.extend(
        [
            // Index first, as recorders write it, so players can start before reading the whole file.
            "-movflags",
            "+faststart",
            "-metadata",
            &format!("creation_time={creation_time}"),
            "-metadata",
            &format!("comment={comment}"),
        ]
        .iter()
        .map(Into::into),
    );
    if let Some(l) = location {
        args.extend([
            "-metadata".into(),
            format!("location={}", iso6709(l)).into(),
        ]);
    }
    args.extend(["-f".into(), "mp4".into()]);
    args.push(out.into());
    ffmpeg::run(args)
}

/// A point as ISO 6709 (`+22.543100+114.057900/`): latitude with two integer digits, longitude with three.
fn iso6709(l: &EmbeddedLocation) -> String {
    format!("{:+010.6}{:+011.6}/", l.lat, l.lon)
}

/// Makes a JPEG photo: the test pattern with noise from `noise_seed`, so every photo differs.
pub(crate) fn photo(resolution: Resolution, noise_seed: u32, out: &Path) -> anyhow::Result<()> {
    let source = format!(
        "testsrc2=size={}x{}:rate=1,noise=alls=25:allf=u:all_seed={noise_seed}",
        resolution.width, resolution.height
    );
    let mut args: Vec<std::ffi::OsString> = [
        "-f",
        "lavfi",
        "-i",
        &source,
        "-frames:v",
        "1",
        "-pix_fmt",
        "yuvj420p",
        "-c:v",
        "mjpeg",
        "-q:v",
        "3",
        "-f",
        "image2",
        "-update",
        "1",
    ]
    .iter()
    .map(Into::into)
    .collect();
    args.push(out.into());
    ffmpeg::run(args)
}

/// The audio-only formats recorders write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AudioFormat {
    /// 16 kHz mono 16-bit PCM.
    Wav,
    /// 16 kHz mono MP3 at 32 kbit/s (LAME).
    Mp3,
}

/// Makes an audio recording: a tone under pink noise (the noise, seeded by `noise_seed`, makes every file
/// differ and keeps MP3 from compressing to nothing).
pub(crate) fn audio(
    format: AudioFormat,
    duration_s: u64,
    frequency: u32,
    noise_seed: u32,
    date: &str,
    comment: &str,
    out: &Path,
) -> anyhow::Result<()> {
    let tone = format!("sine=frequency={frequency}:sample_rate=16000:duration={duration_s}");
    let noise = format!(
        "anoisesrc=color=pink:sample_rate=16000:amplitude=0.05:seed={noise_seed}:duration={duration_s}"
    );
    let codec: &[&str] = match format {
        AudioFormat::Wav => &["-c:a", "pcm_s16le", "-f", "wav"],
        AudioFormat::Mp3 => &["-c:a", "libmp3lame", "-b:a", "32k", "-f", "mp3"],
    };
    let mut args: Vec<std::ffi::OsString> = [
        "-f",
        "lavfi",
        "-i",
        &tone,
        "-f",
        "lavfi",
        "-i",
        &noise,
        "-filter_complex",
        "[0:a][1:a]amix=inputs=2:duration=shortest[a]",
        "-map",
        "[a]",
        "-ac",
        "1",
        "-ar",
        "16000",
        "-metadata",
        &format!("date={date}"),
        "-metadata",
        &format!("comment={comment}"),
    ]
    .iter()
    .chain(codec)
    .map(Into::into)
    .collect();
    args.push(out.into());
    ffmpeg::run(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_written_as_iso_6709() {
        let at = |lat, lon| EmbeddedLocation {
            lat,
            lon,
            alt: None,
        };
        assert_eq!(iso6709(&at(22.5431, 114.0579)), "+22.543100+114.057900/");
        assert_eq!(iso6709(&at(-5.5, -70.25)), "-05.500000-070.250000/");
        let back = custody_core::media::parse_iso6709(&iso6709(&at(22.5431, 114.0579))).unwrap();
        assert_eq!((back.lat, back.lon), (22.5431, 114.0579));
    }
}
