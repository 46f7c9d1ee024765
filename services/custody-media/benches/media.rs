//! How long the ffmpeg half takes on realistic media: probe, poster, thumbnail strip and browser
//! proxy of a 1080p H.265/AAC recording (what body-worn recorders write), a 12-megapixel photo and
//! a voice recording. The ffmpeg command line making the same proxy is timed beside ours as the
//! ceiling on this machine.
//!
//! Run with `cargo bench -p custody-media --bench media`. The inputs are generated once into
//! `$CARGO_TARGET_DIR/../custody-bench-media` (else the system temp folder) and reused;
//! `CUSTODY_BENCH_MEDIA_SECONDS` sets the recording's length (default 30).

use custody_media::{PictureOptions, ProxyOptions, make_proxy, poster, probe, thumbs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

fn main() {
    let seconds: u32 = std::env::var("CUSTODY_BENCH_MEDIA_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).expect("the cache folder can be created");

    // x265's default keyframe distance (250 frames, 8 s here) and the 1 s that body-worn recorders
    // typically use: pictures cost far more with long GOPs.
    let video = hevc_1080p(&dir, seconds, None);
    let short_gop = hevc_1080p(&dir, seconds, Some(30));
    let photo = generate(&dir, "photo-4000x3000.jpg", |out| {
        [
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=4000x3000,noise=alls=12:allf=u",
            "-frames:v",
            "1",
            "-q:v",
            "3",
        ]
        .into_iter()
        .map(String::from)
        .chain([out])
        .collect()
    });
    let wav = generate(&dir, "voice-60s.wav", |out| {
        [
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=300:sample_rate=16000:duration=60",
            "-c:a",
            "pcm_s16le",
            "-ac",
            "1",
        ]
        .into_iter()
        .map(String::from)
        .chain([out])
        .collect()
    });

    let info = probe(&video).expect("the generated recording probes");
    let v = info.video().expect("it has video");
    let media_s = info.duration_us.unwrap_or(0) as f64 / 1e6;
    let size = std::fs::metadata(&video).map(|m| m.len()).unwrap_or(0);
    println!(
        "input: {} {}x{} {:.1} s, {:.1} MB ({:.1} Mbit/s), {} cores",
        v.codec,
        v.width.unwrap_or(0),
        v.height.unwrap_or(0),
        media_s,
        size as f64 / 1e6,
        size as f64 * 8.0 / media_s.max(1e-9) / 1e6,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    for (label, path) in [
        ("hevc 1080p mp4", &video),
        ("jpeg 4000x3000", &photo),
        ("wav 16 kHz 60 s", &wav),
    ] {
        let times = timed(50, || {
            probe(path).expect("probe");
        });
        println!("probe   {label:<16} {}", summary(&times));
    }

    let opts = PictureOptions::default();
    let photo_info = probe(&photo).expect("the photo probes");
    let times = timed(5, || {
        poster(&video, &info, &opts).expect("poster");
    });
    println!("poster  {:<16} {}", "hevc 1080p mp4", summary(&times));
    let times = timed(5, || {
        poster(&photo, &photo_info, &opts).expect("poster");
    });
    println!("poster  {:<16} {}", "jpeg 4000x3000", summary(&times));
    let short_info = probe(&short_gop).expect("the recording probes");
    let times = timed(5, || {
        poster(&short_gop, &short_info, &opts).expect("poster");
    });
    println!("poster  {:<16} {}", "hevc 1s GOP", summary(&times));
    for (label, path, info) in [
        ("hevc 1080p mp4", &video, &info),
        ("hevc 1s GOP", &short_gop, &short_info),
    ] {
        let mut tiles = 0;
        let times = timed(3, || {
            tiles = thumbs(path, info, &opts).expect("thumbs").tiles;
        });
        println!("thumbs  {label:<16} {} ({tiles} tiles)", summary(&times));
    }

    // Ours and the ffmpeg command line (the same work, as the ceiling for this machine) take
    // turns, twice, and the faster run of each counts: other work on a 2-core machine only ever
    // slows a run down.
    let mut ours: Option<(f64, custody_media::ProxyReport, u64)> = None;
    let mut cli_best = f64::MAX;
    for _ in 0..2 {
        let out = tempfile::Builder::new()
            .suffix(".mp4")
            .tempfile()
            .expect("a temp file");
        let started = Instant::now();
        let report = make_proxy(
            &video,
            out.path(),
            &info,
            &ProxyOptions::default(),
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .expect("proxy");
        let wall = started.elapsed().as_secs_f64();
        let bytes = std::fs::metadata(out.path()).map_or(0, |m| m.len());
        if ours.as_ref().is_none_or(|(w, _, _)| wall < *w) {
            ours = Some((wall, report, bytes));
        }
        cli_best = cli_best.min(cli_proxy(&video));
    }
    if let Some((wall, report, bytes)) = ours {
        println!(
            "proxy   {:<16} -> h264 {}x{} + aac, {:.1} s of media in {:.1} s = {:.2}x real time (veryfast, crf 23), {:.1} MB",
            "hevc 1080p mp4",
            report.width.unwrap_or(0),
            report.height.unwrap_or(0),
            report.duration_us as f64 / 1e6,
            wall,
            media_s / wall.max(1e-9),
            bytes as f64 / 1e6
        );
    }
    println!(
        "ceiling ffmpeg CLI, same proxy:  {:.1} s = {:.2}x real time",
        cli_best,
        media_s / cli_best.max(1e-9)
    );
}

/// Wall seconds the ffmpeg command line takes to make the same proxy.
fn cli_proxy(video: &Path) -> f64 {
    let out = tempfile::Builder::new()
        .suffix(".mp4")
        .tempfile()
        .expect("a temp file");
    let started = Instant::now();
    run_ffmpeg(&[
        "-i".into(),
        video.display().to_string(),
        "-vf".into(),
        "scale=1280:720,format=yuv420p".into(),
        "-c:v".into(),
        "libx264".into(),
        "-preset".into(),
        "veryfast".into(),
        "-crf".into(),
        "23".into(),
        "-g".into(),
        "60".into(),
        "-c:a".into(),
        "aac".into(),
        "-b:a".into(),
        "96k".into(),
        "-movflags".into(),
        "+faststart".into(),
        out.path().display().to_string(),
    ]);
    started.elapsed().as_secs_f64()
}

/// A noisy 1080p H.265 + AAC recording (~4 Mbit/s), made once.
fn hevc_1080p(dir: &Path, seconds: u32, keyint: Option<u32>) -> PathBuf {
    let name = match keyint {
        Some(k) => format!("hevc-1080p-{seconds}s-keyint{k}.mp4"),
        None => format!("hevc-1080p-{seconds}s.mp4"),
    };
    let x265_params = match keyint {
        Some(k) => format!("log-level=error:keyint={k}:min-keyint={k}"),
        None => "log-level=error".to_string(),
    };
    let seconds = seconds.to_string();
    generate(dir, &name, |out| {
        [
            "-f",
            "lavfi",
            "-i",
            // Noise on every frame makes the encoder work as on real footage.
            "testsrc2=size=1920x1080:rate=30,noise=alls=12:allf=t+u",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            &seconds,
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-b:v",
            "4M",
            "-x265-params",
            &x265_params,
            "-tag:v",
            "hvc1",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-ac",
            "2",
            "-movflags",
            "+faststart",
        ]
        .into_iter()
        .map(String::from)
        .chain([out])
        .collect()
    })
}

fn cache_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => Path::new(&t)
            .parent()
            .map_or_else(|| PathBuf::from(&t), Path::to_path_buf)
            .join("custody-bench-media"),
        None => std::env::temp_dir().join("custody-bench-media"),
    }
}

/// Makes `name` in `dir` with the ffmpeg command line unless it is already there.
fn generate(dir: &Path, name: &str, args: impl FnOnce(String) -> Vec<String>) -> PathBuf {
    let path = dir.join(name);
    if path.exists() {
        return path;
    }
    let partial = dir.join(format!("partial-{name}"));
    eprintln!("generating {} (once) ...", path.display());
    run_ffmpeg(&args(partial.display().to_string()));
    std::fs::rename(&partial, &path).expect("the generated file can be renamed");
    path
}

fn run_ffmpeg(args: &[String]) {
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

fn timed(runs: usize, mut f: impl FnMut()) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times
}

fn summary(sorted: &[Duration]) -> String {
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    format!(
        "median {:>8.2} ms  p90 {:>8.2} ms  ({} runs)",
        at(0.5).as_secs_f64() * 1e3,
        at(0.9).as_secs_f64() * 1e3,
        sorted.len()
    )
}
