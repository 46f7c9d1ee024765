//! The ffmpeg half of custody-media against real media, made by the `ffmpeg` command line in a
//! temporary folder by each test: probe, poster, thumbnail strip and browser proxy, and every kind
//! of bad input a recorder or a user can hand us (cut-off files, empty tracks, not media at all,
//! headers claiming absurd sizes). Outputs are checked with our own probe and with `ffprobe`.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use custody_core::media::{
    MediaInfo, Playback, PlaybackRules, StreamKind, parse_creation_time, playback,
};
use custody_media::{
    MediaError, PictureOptions, ProxyOptions, ProxyReport, make_proxy, poster, probe, thumbs,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Runs the ffmpeg command line; a failure fails the test with ffmpeg's own words.
fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-y"])
        .args(args)
        .output()
        .expect("the ffmpeg command line is installed");
    assert!(
        out.status.success(),
        "ffmpeg {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ffprobe`'s view of the streams: one `codec,width,height,pix_fmt` line per stream.
fn ffprobe_streams(path: &Path) -> Vec<String> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height,pix_fmt,profile",
        ])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe is installed");
    assert!(
        out.status.success(),
        "ffprobe {} failed:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Decodes a whole file with the ffmpeg command line and fails on any decoding error.
fn ffmpeg_decodes_cleanly(path: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg is installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "ffmpeg could not decode {} cleanly:\n{stderr}",
        path.display()
    );
}

/// The top-level MP4 boxes of a file, in order.
fn top_level_boxes(path: &Path) -> Vec<String> {
    let data = std::fs::read(path).unwrap();
    let mut boxes = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= data.len() {
        let size = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as u64;
        let kind = String::from_utf8_lossy(&data[pos + 4..pos + 8]).to_string();
        let size = match size {
            0 => (data.len() - pos) as u64,
            1 => u64::from_be_bytes(data[pos + 8..pos + 16].try_into().unwrap()),
            n => n,
        };
        boxes.push(kind);
        pos += size as usize;
    }
    boxes
}

fn assert_faststart(path: &Path) {
    let boxes = top_level_boxes(path);
    let moov = boxes.iter().position(|b| b == "moov");
    let mdat = boxes.iter().position(|b| b == "mdat");
    assert!(
        matches!((moov, mdat), (Some(m), Some(d)) if m < d),
        "moov must come before mdat in {}: {boxes:?}",
        path.display()
    );
}

/// Makes a test clip: `testsrc2` at `size` and 25 fps, plus a 1 kHz tone unless `audio` is None.
fn clip(
    dir: &Path,
    name: &str,
    size: &str,
    seconds: &str,
    audio: Option<&str>,
    out_args: &[&str],
) -> PathBuf {
    let path = dir.join(name);
    let video = format!("testsrc2=size={size}:rate=25");
    let mut args = vec!["-f", "lavfi", "-i", &video];
    let tone;
    if let Some(rate) = audio {
        tone = format!("sine=frequency=1000:sample_rate={rate}");
        args.extend(["-f", "lavfi", "-i", &tone]);
    }
    args.extend(["-t", seconds]);
    args.extend(out_args);
    let p = path.to_str().unwrap().to_string();
    args.push(&p);
    ffmpeg(&args);
    path
}

const H264_AAC: &[&str] = &[
    "-c:v",
    "libx264",
    "-preset",
    "ultrafast",
    "-pix_fmt",
    "yuv420p",
    "-c:a",
    "aac",
];

fn secs(us: i64) -> f64 {
    us as f64 / 1e6
}

fn decode_jpeg(bytes: &[u8]) -> image::RgbImage {
    assert!(
        bytes.starts_with(&[0xff, 0xd8]),
        "not a JPEG: starts {:02x?}",
        &bytes[..bytes.len().min(4)]
    );
    image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg)
        .expect("the JPEG decodes")
        .to_rgb8()
}

fn no_progress() -> impl FnMut(f64) {
    |_| {}
}

fn proxy(input: &Path, output: &Path) -> Result<ProxyReport, MediaError> {
    let info = probe(input)?;
    make_proxy(
        input,
        output,
        &info,
        &ProxyOptions::default(),
        &AtomicBool::new(false),
        &mut no_progress(),
    )
}

fn cut(path: &Path, name: &str, fraction: f64) -> PathBuf {
    let data = std::fs::read(path).unwrap();
    let out = path.with_file_name(name);
    std::fs::write(&out, &data[..(data.len() as f64 * fraction) as usize]).unwrap();
    out
}

// ---------------------------------------------------------------------------------------------
// Probe

#[test]
fn an_h264_aac_mp4_is_probed_with_its_streams_time_and_place() {
    let dir = tempfile::tempdir().unwrap();
    // ffmpeg's mp4 muxer (not only mov) writes the `location` tag (as ©xyz in udta), so a plain
    // .mp4 carries the place, as recorders write it.
    let mut args = H264_AAC.to_vec();
    args.extend([
        "-movflags",
        "+faststart",
        "-metadata",
        "creation_time=2025-11-23T10:02:03Z",
        "-metadata",
        "location=+39.9042+116.4074/",
    ]);
    let path = clip(
        dir.path(),
        "h264.mp4",
        "1280x720",
        "3",
        Some("48000"),
        &args,
    );

    let info = probe(&path).unwrap();
    assert!(
        info.container.split(',').any(|c| c == "mp4"),
        "{}",
        info.container
    );
    let d = secs(info.duration_us.unwrap());
    assert!((d - 3.0).abs() <= 0.1, "duration {d}");
    assert!(info.bit_rate.is_some_and(|b| b > 0));
    assert_eq!(
        info.creation_time.as_deref(),
        Some("2025-11-23T10:02:03.000000Z")
    );
    assert_eq!(info.created_at, parse_creation_time("2025-11-23T10:02:03Z"));
    let loc = info.location.expect("the location tag is read");
    assert!(
        (loc.lat - 39.9042).abs() < 1e-6 && (loc.lon - 116.4074).abs() < 1e-6,
        "{loc:?}"
    );

    let v = info.video().unwrap();
    assert_eq!((v.kind, v.codec.as_str()), (StreamKind::Video, "h264"));
    assert_eq!((v.width, v.height), (Some(1280), Some(720)));
    assert!(
        (v.frame_rate.unwrap() - 25.0).abs() < 0.01,
        "{:?}",
        v.frame_rate
    );
    assert_eq!(v.pixel_format.as_deref(), Some("yuv420p"));
    assert!(v.profile.is_some(), "h264 reports its profile");
    assert_eq!(v.frames, Some(75));
    assert!(v.duration_us.is_some_and(|d| (secs(d) - 3.0).abs() <= 0.1));
    assert_eq!(v.rotation, None);

    let a = info.audio().unwrap();
    assert_eq!(a.codec, "aac");
    assert_eq!(a.sample_rate, Some(48000));
    assert_eq!(a.channels, Some(1));
    assert_eq!(a.profile.as_deref(), Some("LC"));
    assert!(a.frames.is_some_and(|f| f > 100));
    assert_eq!(
        playback(&info, 1 << 20, &PlaybackRules::default()),
        Playback::Original
    );
}

#[test]
fn wav_and_mp3_are_probed_have_no_pictures_and_get_an_audio_only_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("voice.wav");
    let mp3 = dir.path().join("voice.mp3");
    let src = "sine=frequency=440:sample_rate=16000:duration=2";
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        src,
        "-c:a",
        "pcm_s16le",
        "-ac",
        "1",
        wav.to_str().unwrap(),
    ]);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        src,
        "-c:a",
        "libmp3lame",
        "-b:a",
        "32k",
        mp3.to_str().unwrap(),
    ]);

    let info = probe(&wav).unwrap();
    assert_eq!(info.container, "wav");
    let a = info.audio().unwrap();
    assert_eq!(
        (a.codec.as_str(), a.sample_rate, a.channels),
        ("pcm_s16le", Some(16000), Some(1))
    );
    assert!((secs(info.duration_us.unwrap()) - 2.0).abs() <= 0.05);
    assert!(info.video().is_none());

    let info3 = probe(&mp3).unwrap();
    assert_eq!(info3.container, "mp3");
    assert_eq!(info3.audio().unwrap().codec, "mp3");
    assert_eq!(info3.audio().unwrap().sample_rate, Some(16000));
    assert!((secs(info3.duration_us.unwrap()) - 2.0).abs() <= 0.1);

    for (path, info) in [(&wav, &info), (&mp3, &info3)] {
        let err = poster(path, info, &PictureOptions::default()).unwrap_err();
        assert!(matches!(err, MediaError::NoFrames(_)), "{err:?}");
        assert!(err.is_permanent());
        let err = thumbs(path, info, &PictureOptions::default()).unwrap_err();
        assert!(matches!(err, MediaError::NoFrames(_)), "{err:?}");
    }

    // A recorder's odd audio is shown through an audio-only proxy.
    let out = dir.path().join("voice-proxy.mp4");
    let report = proxy(&wav, &out).unwrap();
    assert!(report.has_audio && !report.has_video, "{report:?}");
    assert!((secs(report.duration_us) - 2.0).abs() <= 0.1, "{report:?}");
    assert_eq!(ffprobe_streams(&out), vec!["aac,LC"]);
    assert_faststart(&out);
    ffmpeg_decodes_cleanly(&out);
}

#[test]
fn a_fragmented_mp4_reports_its_real_frame_counts() {
    // Crash-safe recorders write fragmented MP4; ffmpeg reports nb_frames 0 for every track of
    // such a file, which must not read as "empty".
    let dir = tempfile::tempdir().unwrap();
    let mut args = H264_AAC.to_vec();
    args.extend(["-movflags", "frag_keyframe+empty_moov"]);
    let path = clip(dir.path(), "frag.mp4", "320x240", "2", Some("48000"), &args);
    let info = probe(&path).unwrap();
    assert_eq!(info.video().unwrap().frames, Some(50));
    assert!(info.audio().unwrap().frames.is_some_and(|f| f > 90));
    assert!(!matches!(
        playback(&info, 1 << 20, &PlaybackRules::default()),
        Playback::NotPlayable { .. }
    ));
}

// ---------------------------------------------------------------------------------------------
// Pictures

#[test]
fn a_video_poster_and_thumbnail_strip_have_the_promised_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let path = clip(dir.path(), "hd.mp4", "1280x720", "3", None, H264_AAC);
    let info = probe(&path).unwrap();

    let p = poster(&path, &info, &PictureOptions::default()).unwrap();
    assert_eq!((p.width, p.height), (1280, 720));
    let img = decode_jpeg(&p.jpeg);
    assert_eq!(img.dimensions(), (1280, 720));

    let t = thumbs(&path, &info, &PictureOptions::default()).unwrap();
    assert_eq!((t.tiles, t.tile_width, t.tile_height), (10, 160, 90));
    assert!(
        (secs(t.interval_us) - 0.3).abs() < 0.01,
        "{}",
        t.interval_us
    );
    assert_eq!(decode_jpeg(&t.jpeg).dimensions(), (1600, 90));

    // Tiles are different moments: testsrc2 changes every frame, so neighbouring tiles differ
    // (the clip is one long GOP, so this also covers decoding on instead of seeking).
    let strip = decode_jpeg(&t.jpeg);
    let tile = |i: u32| image::imageops::crop_imm(&strip, i * 160, 0, 160, 90).to_image();
    for i in 0..9 {
        assert_ne!(
            tile(i).as_raw(),
            tile(i + 1).as_raw(),
            "tiles {i} and {}",
            i + 1
        );
    }
}

#[test]
fn a_photo_is_probed_and_downscaled_into_a_poster_that_fits_the_box() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("photo.jpg");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=4000x3000",
        "-frames:v",
        "1",
        path.to_str().unwrap(),
    ]);

    let info = probe(&path).unwrap();
    let v = info.video().unwrap();
    assert_eq!(
        (v.codec.as_str(), v.width, v.height),
        ("mjpeg", Some(4000), Some(3000))
    );
    assert!(info.is_image(), "{info:?}");
    assert_eq!(
        playback(&info, 1 << 20, &PlaybackRules::default()),
        Playback::Image
    );

    // 4:3 in a 1280×720 box: the short side limits it to 960×720.
    let p = poster(&path, &info, &PictureOptions::default()).unwrap();
    assert_eq!((p.width, p.height), (960, 720));
    assert_eq!(decode_jpeg(&p.jpeg).dimensions(), (960, 720));

    // A box of 1280 on both sides gives 1280×960.
    let square = PictureOptions {
        poster_short_side: 1280,
        ..Default::default()
    };
    let p = poster(&path, &info, &square).unwrap();
    assert_eq!(decode_jpeg(&p.jpeg).dimensions(), (1280, 960));

    // A photo has one frame: its strip is one tile.
    let t = thumbs(&path, &info, &PictureOptions::default()).unwrap();
    assert_eq!((t.tiles, t.tile_width, t.tile_height), (1, 160, 120));
}

/// Splices an EXIF APP1 segment (time, GPS, orientation) right after the SOI of a JPEG.
fn with_exif(jpeg: &[u8]) -> Vec<u8> {
    use exif::{Field, In, Rational, Tag, Value};
    let r = |num, denom| Rational { num, denom };
    let fields = [
        Field {
            tag: Tag::DateTimeOriginal,
            ifd_num: In::PRIMARY,
            value: Value::Ascii(vec![b"2025:11:23 18:02:03".to_vec()]),
        },
        Field {
            tag: Tag::OffsetTimeOriginal,
            ifd_num: In::PRIMARY,
            value: Value::Ascii(vec![b"+08:00".to_vec()]),
        },
        Field {
            tag: Tag::GPSLatitudeRef,
            ifd_num: In::PRIMARY,
            value: Value::Ascii(vec![b"N".to_vec()]),
        },
        // 39° 54' 15.12" = 39.9042°
        Field {
            tag: Tag::GPSLatitude,
            ifd_num: In::PRIMARY,
            value: Value::Rational(vec![r(39, 1), r(54, 1), r(1512, 100)]),
        },
        Field {
            tag: Tag::GPSLongitudeRef,
            ifd_num: In::PRIMARY,
            value: Value::Ascii(vec![b"E".to_vec()]),
        },
        // 116° 24' 26.64" = 116.4074°
        Field {
            tag: Tag::GPSLongitude,
            ifd_num: In::PRIMARY,
            value: Value::Rational(vec![r(116, 1), r(24, 1), r(2664, 100)]),
        },
        Field {
            tag: Tag::GPSAltitudeRef,
            ifd_num: In::PRIMARY,
            value: Value::Byte(vec![0]),
        },
        Field {
            tag: Tag::GPSAltitude,
            ifd_num: In::PRIMARY,
            value: Value::Rational(vec![r(435, 10)]),
        },
    ];
    let mut writer = exif::experimental::Writer::new();
    for f in &fields {
        writer.push_field(f);
    }
    let mut tiff = std::io::Cursor::new(Vec::new());
    writer.write(&mut tiff, false).unwrap();
    let tiff = tiff.into_inner();
    let mut app1 = vec![0xff, 0xe1];
    app1.extend_from_slice(&((tiff.len() + 8) as u16).to_be_bytes());
    app1.extend_from_slice(b"Exif\0\0");
    app1.extend_from_slice(&tiff);
    [&jpeg[..2], &app1, &jpeg[2..]].concat()
}

#[test]
fn exif_time_and_gps_of_a_photo_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.jpg");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x480",
        "-frames:v",
        "1",
        plain.to_str().unwrap(),
    ]);
    let path = dir.path().join("exif.jpg");
    std::fs::write(&path, with_exif(&std::fs::read(&plain).unwrap())).unwrap();

    let info = probe(&path).unwrap();
    assert_eq!(info.creation_time.as_deref(), Some("2025:11:23 18:02:03"));
    // The EXIF offset (+08:00) makes the local time UTC.
    assert_eq!(info.created_at, parse_creation_time("2025-11-23T10:02:03Z"));
    let loc = info.location.expect("EXIF GPS is read");
    assert!(
        (loc.lat - 39.9042).abs() < 1e-4 && (loc.lon - 116.4074).abs() < 1e-4,
        "{loc:?}"
    );
    assert_eq!(loc.alt, Some(43.5));
    // The picture itself is untouched by the EXIF.
    let p = poster(&path, &info, &PictureOptions::default()).unwrap();
    assert_eq!((p.width, p.height), (640, 480));
}

#[test]
fn a_sideways_recording_gives_an_upright_poster_and_proxy_as_ffmpeg_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    // A white block in the top-left corner of a black picture shows which way it is turned.
    let flat = dir.path().join("flat.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=black:size=320x240:rate=25:duration=1",
        "-vf",
        "drawbox=x=0:y=0:w=80:h=60:color=white:t=fill",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        flat.to_str().unwrap(),
    ]);
    let turned = dir.path().join("turned.mp4");
    ffmpeg(&[
        "-i",
        flat.to_str().unwrap(),
        "-c",
        "copy",
        "-metadata:s:v:0",
        "rotate=90",
        turned.to_str().unwrap(),
    ]);
    // What ffmpeg (and so every player) shows: its autorotated first frame.
    let reference = dir.path().join("reference.jpg");
    ffmpeg(&[
        "-i",
        turned.to_str().unwrap(),
        "-frames:v",
        "1",
        reference.to_str().unwrap(),
    ]);
    let reference = decode_jpeg(&std::fs::read(&reference).unwrap());
    assert_eq!(reference.dimensions(), (240, 320));
    let bright_corner = |img: &image::RgbImage| {
        let (w, h) = img.dimensions();
        [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)]
            .iter()
            .position(|&(x, y)| img.get_pixel(x, y)[0] > 128)
    };

    let info = probe(&turned).unwrap();
    assert!(
        info.video()
            .unwrap()
            .rotation
            .is_some_and(|r| r == 90 || r == 270)
    );
    let p = poster(&turned, &info, &PictureOptions::default()).unwrap();
    let img = decode_jpeg(&p.jpeg);
    assert_eq!(img.dimensions(), (240, 320));
    assert_eq!(bright_corner(&img), bright_corner(&reference));

    let out = dir.path().join("turned-proxy.mp4");
    let report = proxy(&turned, &out).unwrap();
    assert_eq!((report.width, report.height), (Some(240), Some(320)));
}

// ---------------------------------------------------------------------------------------------
// Proxies

#[test]
fn an_h265_mp4_gets_an_h264_aac_faststart_proxy_that_ffprobe_plays() {
    let dir = tempfile::tempdir().unwrap();
    let path = clip(
        dir.path(),
        "hevc.mp4",
        "640x360",
        "2",
        Some("48000"),
        &[
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "log-level=error",
            "-tag:v",
            "hvc1",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
        ],
    );
    let info = probe(&path).unwrap();
    assert_eq!(info.video().unwrap().codec, "hevc");
    assert!(matches!(
        playback(&info, 1 << 20, &PlaybackRules::default()),
        Playback::Proxy { .. }
    ));

    let out = dir.path().join("proxy.mp4");
    let mut calls = Vec::new();
    let report = make_proxy(
        &path,
        &out,
        &info,
        &ProxyOptions::default(),
        &AtomicBool::new(false),
        &mut |f| calls.push(f),
    )
    .unwrap();
    assert!(report.has_video && report.has_audio, "{report:?}");
    assert_eq!(
        (report.width, report.height),
        (Some(640), Some(360)),
        "never upscaled"
    );
    assert!((secs(report.duration_us) - 2.0).abs() <= 0.2, "{report:?}");
    assert!(report.speed > 0.0);
    assert_eq!(calls.first(), Some(&0.0));
    assert_eq!(calls.last(), Some(&1.0));
    assert!(calls.windows(2).all(|w| w[0] <= w[1]), "{calls:?}");

    let made = probe(&out).unwrap();
    let v = made.video().unwrap();
    assert_eq!(
        (v.codec.as_str(), v.pixel_format.as_deref()),
        ("h264", Some("yuv420p"))
    );
    assert!(
        (v.frame_rate.unwrap() - 25.0).abs() < 0.01,
        "the frame rate is kept: {:?}",
        v.frame_rate
    );
    assert_eq!(v.frames, Some(50));
    assert_eq!(made.audio().unwrap().codec, "aac");
    assert_eq!(made.audio().unwrap().sample_rate, Some(48000));
    assert_eq!(
        playback(&made, 1 << 20, &PlaybackRules::default()),
        Playback::Original
    );

    let streams = ffprobe_streams(&out);
    assert_eq!(streams.len(), 2, "{streams:?}");
    assert!(
        streams[0].starts_with("h264,") && streams[0].contains("640,360,yuv420p"),
        "{streams:?}"
    );
    assert!(streams[1].starts_with("aac,LC"), "{streams:?}");
    assert_faststart(&out);
    ffmpeg_decodes_cleanly(&out);
}

#[test]
fn large_portrait_and_odd_sized_recordings_get_proxies_that_fit_720p_with_even_sides() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("1920x1080", (1280, 720)),
        ("1080x1920", (720, 1280)),
        ("642x362", (642, 362)),
        ("641x361", (640, 360)),
    ];
    for (size, want) in cases {
        let path = clip(
            dir.path(),
            &format!("in-{size}.mp4"),
            size,
            "0.4",
            None,
            &[
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv444p",
            ],
        );
        let out = dir.path().join(format!("out-{size}.mp4"));
        let report = proxy(&path, &out).unwrap();
        assert_eq!(
            (report.width, report.height),
            (Some(want.0), Some(want.1)),
            "{size}"
        );
        assert!(report.has_video && !report.has_audio, "{size}: {report:?}");
        let streams = ffprobe_streams(&out);
        assert_eq!(streams.len(), 1, "{streams:?}");
        assert!(
            streams[0].contains(&format!("{},{},yuv420p", want.0, want.1)),
            "{size}: {streams:?}"
        );
        assert_faststart(&out);
    }
}

#[test]
fn a_proxy_can_be_cancelled_from_its_progress_callback_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = clip(dir.path(), "c.mp4", "320x240", "2", Some("48000"), H264_AAC);
    let info = probe(&path).unwrap();
    let out = dir.path().join("c-proxy.mp4");
    let cancel = AtomicBool::new(false);
    let mut calls = 0;
    let err = make_proxy(
        &path,
        &out,
        &info,
        &ProxyOptions::default(),
        &cancel,
        &mut |_| {
            calls += 1;
            cancel.store(true, Ordering::Relaxed);
        },
    )
    .unwrap_err();
    assert!(matches!(err, MediaError::Cancelled), "{err:?}");
    assert!(!err.is_permanent());
    assert_eq!(calls, 1);
    assert!(!out.exists(), "a cancelled proxy is removed");
}

// ---------------------------------------------------------------------------------------------
// Bad input: every case is a permanent error, never a panic.

#[test]
fn a_cut_off_mp4_without_its_index_is_unreadable_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    // Without faststart the index (moov) is written last: a recording cut short has none.
    let path = clip(
        dir.path(),
        "slow.mp4",
        "320x240",
        "3",
        Some("48000"),
        H264_AAC,
    );
    assert_eq!(
        top_level_boxes(&path).last().map(String::as_str),
        Some("moov")
    );
    let cut = cut(&path, "slow-cut.mp4", 0.4);

    let err = probe(&cut).unwrap_err();
    assert!(matches!(err, MediaError::Unreadable(_)), "{err:?}");
    assert!(err.is_permanent());
    assert!(err.to_string().contains("moov"), "{err}");

    let info = probe(&path).unwrap();
    let err = poster(&cut, &info, &PictureOptions::default()).unwrap_err();
    assert!(matches!(err, MediaError::Unreadable(_)), "{err:?}");
    let out = dir.path().join("never.mp4");
    let err = make_proxy(
        &cut,
        &out,
        &info,
        &ProxyOptions::default(),
        &AtomicBool::new(false),
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(err.is_permanent(), "{err:?}");
    assert!(!out.exists());
}

#[test]
fn a_cut_off_faststart_mp4_still_gives_a_poster_thumbs_and_a_shorter_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = H264_AAC.to_vec();
    args.extend(["-movflags", "+faststart"]);
    let path = clip(dir.path(), "fast.mp4", "320x240", "3", Some("48000"), &args);
    let cut = cut(&path, "fast-cut.mp4", 0.4);

    // The index at the front still describes the whole recording: the probe cannot tell that
    // the data is missing (same duration, same frame count).
    let info = probe(&cut).unwrap();
    assert!((secs(info.duration_us.unwrap()) - 3.0).abs() <= 0.1);
    assert_eq!(info.video().unwrap().frames, Some(75));

    let p = poster(&cut, &info, &PictureOptions::default()).unwrap();
    assert_eq!(decode_jpeg(&p.jpeg).dimensions(), (320, 240));
    let t = thumbs(&cut, &info, &PictureOptions::default()).unwrap();
    assert!(
        (1..10).contains(&t.tiles),
        "only the tiles that exist: {}",
        t.tiles
    );
    assert_eq!(decode_jpeg(&t.jpeg).dimensions(), (160 * t.tiles, 120));

    let out = dir.path().join("fast-cut-proxy.mp4");
    let report = proxy(&cut, &out).unwrap();
    assert!(report.has_video, "{report:?}");
    let d = secs(report.duration_us);
    println!("cut to 40 %: {} tiles, proxy of {d:.2} s", t.tiles);
    assert!(d > 0.2 && d < 2.5, "a shorter proxy of what decodes: {d}");
    assert_faststart(&out);
    ffmpeg_decodes_cleanly(&out);
}

#[test]
fn random_bytes_text_and_empty_files_are_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let mut x = 0x9e37_79b9_u32;
    let noise: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let files = [
        ("noise.mp4", noise),
        (
            "notes.txt",
            b"Officer's notes: nothing to see here.\n".repeat(100),
        ),
        ("empty.mp4", Vec::new()),
    ];
    for (name, bytes) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = probe(&path).unwrap_err();
        assert!(matches!(err, MediaError::Unreadable(_)), "{name}: {err:?}");
        assert!(err.is_permanent(), "{name}");
        println!("{name}: {err}");
        if name == "empty.mp4" {
            assert_eq!(err.to_string(), "the file is empty");
        }
        if name == "notes.txt" {
            assert!(err.to_string().contains("text"), "{err}");
        }
    }
    let err = probe(&dir.path().join("missing.mp4")).unwrap_err();
    assert!(
        matches!(err, MediaError::Io { .. }),
        "a missing file is not bad media: {err:?}"
    );
}

#[test]
fn an_mp4_whose_video_track_is_empty_is_detected_and_has_no_poster() {
    let dir = tempfile::tempdir().unwrap();
    let src = clip(
        dir.path(),
        "src.mp4",
        "320x240",
        "2",
        Some("48000"),
        H264_AAC,
    );
    // An MP4 that lists a video track holding no frames, as a recorder that died right after
    // starting leaves it. The mp4 muxer leaves empty tracks out of a plain MP4, and
    // `-frames:v 0` makes ffmpeg write no tracks at all, but a fragmented MP4 announces every
    // track in its initial moov: so copy the streams, drop every video packet (`noise`
    // bitstream filter with dropamount=1), and fragment.
    let empty = dir.path().join("empty-video.mp4");
    ffmpeg(&[
        "-i",
        src.to_str().unwrap(),
        "-c",
        "copy",
        "-bsf:v",
        "noise=dropamount=1",
        "-movflags",
        "frag_keyframe+empty_moov",
        empty.to_str().unwrap(),
    ]);

    let info = probe(&empty).unwrap();
    let v = info.video().expect("the track is listed");
    assert_eq!(
        (v.codec.as_str(), v.width, v.height),
        ("h264", Some(320), Some(240))
    );
    assert_eq!(v.frames, Some(0), "{v:?}");
    assert!(info.audio().unwrap().frames.is_some_and(|f| f > 0));
    assert!(matches!(
        playback(&info, 1 << 20, &PlaybackRules::default()),
        Playback::NotPlayable { .. }
    ));

    let err = poster(&empty, &info, &PictureOptions::default()).unwrap_err();
    assert!(matches!(err, MediaError::NoFrames(_)), "{err:?}");
    let err = thumbs(&empty, &info, &PictureOptions::default()).unwrap_err();
    assert!(matches!(err, MediaError::NoFrames(_)), "{err:?}");
    // The sound is still there: its proxy is audio-only.
    let out = dir.path().join("empty-video-proxy.mp4");
    let report = proxy(&empty, &out).unwrap();
    assert!(report.has_audio && !report.has_video, "{report:?}");
}

#[test]
fn a_jpeg_claiming_60000x60000_is_too_large_and_never_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.jpg");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48",
        "-frames:v",
        "1",
        small.to_str().unwrap(),
    ]);
    let mut bytes = std::fs::read(&small).unwrap();
    // Patch the frame header (SOF0 baseline / SOF2 progressive): FF Cn, length, precision,
    // height, width.
    let sof = bytes
        .windows(2)
        .position(|w| w[0] == 0xff && (w[1] == 0xc0 || w[1] == 0xc2))
        .expect("the JPEG has a frame header");
    bytes[sof + 5..sof + 7].copy_from_slice(&60000u16.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&60000u16.to_be_bytes());
    let huge = dir.path().join("huge.jpg");
    std::fs::write(&huge, &bytes).unwrap();

    // ffmpeg itself reports 0×0 for it; the probe reads the header.
    let info = probe(&huge).unwrap();
    let v = info.video().unwrap();
    assert_eq!(
        (v.codec.as_str(), v.width, v.height),
        ("mjpeg", Some(60000), Some(60000))
    );
    match playback(&info, 1 << 20, &PlaybackRules::default()) {
        Playback::NotPlayable { reason } => assert!(reason.contains("60000x60000"), "{reason}"),
        other => panic!("expected not playable, got {other:?}"),
    }

    let err = poster(&huge, &info, &PictureOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            MediaError::TooLarge {
                width: 60000,
                height: 60000,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_permanent());
    let err = thumbs(&huge, &info, &PictureOptions::default()).unwrap_err();
    assert!(matches!(err, MediaError::TooLarge { .. }), "{err:?}");
    // Even with a probe that says nothing about the size, the header is checked before decoding.
    let mut blind: MediaInfo = info.clone();
    blind.streams[0].width = None;
    blind.streams[0].height = None;
    let err = poster(&huge, &blind, &PictureOptions::default()).unwrap_err();
    assert!(matches!(err, MediaError::TooLarge { .. }), "{err:?}");
}

#[test]
fn damaged_copies_of_real_media_never_panic_and_fail_only_permanently() {
    let dir = tempfile::tempdir().unwrap();
    let mut sources = vec![
        clip(dir.path(), "d.mp4", "320x240", "1", Some("48000"), H264_AAC),
        clip(
            dir.path(),
            "d.mkv",
            "320x240",
            "1",
            Some("44100"),
            &[
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-x265-params",
                "log-level=error",
                "-c:a",
                "libmp3lame",
            ],
        ),
    ];
    let jpg = dir.path().join("d.jpg");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240",
        "-frames:v",
        "1",
        jpg.to_str().unwrap(),
    ]);
    let mp3 = dir.path().join("d.mp3");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=duration=1",
        "-c:a",
        "libmp3lame",
        mp3.to_str().unwrap(),
    ]);
    sources.extend([jpg, mp3]);

    let mut seed = 0x2545_f491_u32;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for src in &sources {
        let original = std::fs::read(src).unwrap();
        let ext = src.extension().unwrap().to_str().unwrap();
        let mut variants: Vec<(String, Vec<u8>)> = [0.1, 0.5, 0.9]
            .iter()
            .map(|f| {
                (
                    format!("cut {f}"),
                    original[..(original.len() as f64 * f) as usize].to_vec(),
                )
            })
            .collect();
        for round in 0..3 {
            let mut bytes = original.clone();
            for _ in 0..(bytes.len() / 200).max(4) {
                let at = next() as usize % bytes.len();
                bytes[at] = next() as u8;
            }
            variants.push((format!("flipped bytes {round}"), bytes));
        }
        for (what, bytes) in variants {
            let path = dir.path().join(format!("damaged.{ext}"));
            std::fs::write(&path, &bytes).unwrap();
            let label = format!("{} ({what})", src.display());
            let info = match probe(&path) {
                Ok(info) => info,
                Err(e) => {
                    assert!(e.is_permanent(), "{label}: probe: {e:?}");
                    continue;
                }
            };
            let opts = PictureOptions::default();
            for result in [
                poster(&path, &info, &opts).map(|_| ()),
                thumbs(&path, &info, &opts).map(|_| ()),
            ] {
                if let Err(e) = result {
                    assert!(e.is_permanent(), "{label}: picture: {e:?}");
                }
            }
            let out = dir.path().join("damaged-proxy.mp4");
            match make_proxy(
                &path,
                &out,
                &info,
                &ProxyOptions::default(),
                &AtomicBool::new(false),
                &mut no_progress(),
            ) {
                Ok(report) => assert!(report.has_video || report.has_audio, "{label}: {report:?}"),
                Err(e) => assert!(e.is_permanent(), "{label}: proxy: {e:?}"),
            }
        }
    }
}
