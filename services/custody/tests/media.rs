//! The media pipeline through the real server: recordings made by ffmpeg are uploaded as a station
//! uploads them, probed by the background jobs, and shown through poster, thumbnails and proxy, on the
//! embedded backends and on PostgreSQL + S3. Broken files stay stored untouched and say why they cannot
//! be shown. Jobs are rows: they survive a restart.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;
use custody_proto::v1 as pb;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Runs the ffmpeg command-line tool (scripts/test-servers.sh installs it) to make a fixture.
fn ffmpeg(args: &[&str], out: &Path) -> Vec<u8> {
    let o = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-v", "error", "-y"])
        .args(args)
        .arg(out)
        .output()
        .expect("ffmpeg runs (Debian package ffmpeg)");
    assert!(
        o.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read(out).unwrap()
}

struct Fixtures {
    dir: tempfile::TempDir,
}

impl Fixtures {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn video(&self, name: &str, codec: &[&str], size: &str, faststart: bool) -> Vec<u8> {
        let src = format!("testsrc2=size={size}:rate=25");
        let mut args = vec![
            "-f",
            "lavfi",
            "-i",
            &src,
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=1000:sample_rate=48000",
            "-t",
            "2",
            "-pix_fmt",
            "yuv420p",
        ];
        args.extend_from_slice(codec);
        args.extend_from_slice(&[
            "-c:a",
            "aac",
            "-metadata",
            "creation_time=2026-11-20T08:30:00Z",
            "-f",
            "mp4",
        ]);
        if faststart {
            args.extend_from_slice(&["-movflags", "+faststart"]);
        }
        ffmpeg(&args, &self.path(name))
    }

    fn h264(&self) -> Vec<u8> {
        self.video(
            "h264.mp4",
            &["-c:v", "libx264", "-preset", "ultrafast"],
            "640x360",
            true,
        )
    }

    fn h265(&self) -> Vec<u8> {
        self.video(
            "h265.mp4",
            &[
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-x265-params",
                "log-level=error",
                "-tag:v",
                "hvc1",
            ],
            "1280x720",
            true,
        )
    }

    fn photo(&self) -> Vec<u8> {
        ffmpeg(
            &[
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=2000x1500",
                "-frames:v",
                "1",
                "-update",
                "1",
            ],
            &self.path("photo.jpg"),
        )
    }

    fn wav(&self) -> Vec<u8> {
        ffmpeg(
            &[
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=16000:duration=2",
                "-ac",
                "1",
                "-c:a",
                "pcm_s16le",
            ],
            &self.path("audio.wav"),
        )
    }
}

/// Uploads `data` as a station does and returns its evidence id.
async fn upload(app: &TestApp, data: &[u8], name: &str, kind: pb::MediaType) -> String {
    let mut up = app.uploader().await;
    let mut req = begin_request(data, "ZFYMEDIA");
    req.file_name = name.into();
    req.media_type = kind.into();
    up.upload(req, &source(data)).await.unwrap().evidence_id
}

/// Polls the evidence listing (which, unlike the single-item read, is not a logged view) until the
/// item's media work is over.
async fn settled(app: &TestApp, id: &str) -> Value {
    for _ in 0..600 {
        let page: Value = app
            .get("/api/v1/evidence?device=ZFYMEDIA&limit=1000")
            .await
            .json()
            .await
            .unwrap();
        let item = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("evidence {id} is listed"));
        let media = &item["media"];
        if media["state"] != "pending" && media["proxy"]["state"] != "pending" {
            return item;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("media jobs of {id} did not finish in 120 s");
}

async fn fetch(app: &TestApp, path: &str, range: Option<&str>) -> reqwest::Response {
    let mut req = app.http_client.get(format!("{}{path}", app.http));
    if let Some(r) = range {
        req = req.header("range", r);
    }
    req.send().await.unwrap()
}

fn is_jpeg(b: &[u8]) -> bool {
    b.starts_with(&[0xFF, 0xD8]) && b.ends_with(&[0xFF, 0xD9])
}

fn sha256_hex(b: &[u8]) -> String {
    custody_core::ContentHasher::digest(b, false)
        .sha256
        .to_hex()
}

/// The streams ffprobe (the command-line tool, independent of our probe) sees in a file.
fn ffprobe_streams(path: &Path) -> Value {
    let o = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

async fn test_config(backends: Backends, dir: &Path) -> custody::config::Config {
    let mut c = config_for(backends, dir.join("data"));
    if backends == Backends::Real {
        c.database_url = Some(custody_store::testing::fresh_postgres_url().await);
    }
    c.media_poll = Duration::from_millis(100);
    c.media_proxy_preset = "ultrafast".into();
    c
}

async fn every_kind_of_recording_is_probed_and_shown(backends: Backends) {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(test_config(backends, dir.path()).await, None).await;
    let fx = Fixtures::new();
    let (h264, h265, photo, wav) = (fx.h264(), fx.h265(), fx.photo(), fx.wav());
    let h264_id = upload(
        &app,
        &h264,
        "ZFYMEDIA_20261120083000_0001.MP4",
        pb::MediaType::Video,
    )
    .await;
    let h265_id = upload(
        &app,
        &h265,
        "ZFYMEDIA_20261120083100_0002.MP4",
        pb::MediaType::Video,
    )
    .await;
    let photo_id = upload(
        &app,
        &photo,
        "ZFYMEDIA_20261120083200_0003.JPG",
        pb::MediaType::Photo,
    )
    .await;
    let wav_id = upload(
        &app,
        &wav,
        "ZFYMEDIA_20261120083300_0004.WAV",
        pb::MediaType::Audio,
    )
    .await;

    // H.264/AAC MP4: probed, plays as it is, has a poster and a thumbnail strip, needs no proxy.
    let e = settled(&app, &h264_id).await;
    let m = &e["media"];
    assert_eq!(m["state"], "ready", "{m}");
    assert!(m["info"]["container"].as_str().unwrap().contains("mp4"));
    let v = m["info"]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "video")
        .unwrap();
    assert_eq!(
        (
            v["codec"].as_str(),
            v["width"].as_u64(),
            v["height"].as_u64()
        ),
        (Some("h264"), Some(640), Some(360))
    );
    assert!((v["frame_rate"].as_f64().unwrap() - 25.0).abs() < 0.01);
    let a = m["info"]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "audio")
        .unwrap();
    assert_eq!(
        (a["codec"].as_str(), a["sample_rate"].as_u64()),
        (Some("aac"), Some(48_000))
    );
    let duration = m["info"]["duration_us"].as_i64().unwrap();
    assert!((1_900_000..=2_200_000).contains(&duration), "{duration}");
    assert_eq!(m["info"]["created_at"], "2026-11-20T08:30:00Z");
    assert_eq!(m["view"]["playable"], true);
    assert_eq!(m["view"]["source"], "original");
    assert_eq!(m["view"]["url"], e["content_url"]);
    assert_eq!(m["proxy"]["state"], "not_needed");
    let poster = fetch(&app, &format!("/api/v1/evidence/{h264_id}/poster"), None).await;
    assert_eq!(poster.status(), 200);
    assert_eq!(poster.headers()["content-type"], "image/jpeg");
    let etag = poster.headers()["etag"].to_str().unwrap().to_string();
    let body = poster.bytes().await.unwrap();
    assert!(is_jpeg(&body));
    assert_eq!(
        etag,
        format!("\"{}\"", sha256_hex(&body)),
        "derived files carry their own hash"
    );
    let thumbs = m["derived"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "thumbs")
        .unwrap();
    assert_eq!(thumbs["detail"]["tiles"], 10);
    let strip = fetch(&app, &format!("/api/v1/evidence/{h264_id}/thumbs"), None).await;
    assert_eq!(strip.status(), 200);
    assert_eq!(strip.headers()["content-type"], "image/jpeg");
    assert!(is_jpeg(&strip.bytes().await.unwrap()));
    let none = fetch(&app, &format!("/api/v1/evidence/{h264_id}/proxy"), None).await;
    assert_eq!(none.status(), 404);
    let err: Value = none.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("plays in browsers as it is"),
        "{err}"
    );

    // H.265: a browser proxy is made, H.264/AAC, at most 720p, fast-start, served with Range.
    let e = settled(&app, &h265_id).await;
    let m = &e["media"];
    assert_eq!(m["proxy"]["state"], "ready", "{m}");
    assert_eq!(m["view"]["source"], "proxy");
    assert!(m["view"]["reason"].as_str().unwrap().contains("H.265"));
    let proxy_url = format!("/api/v1/evidence/{h265_id}/proxy");
    let head = fetch(&app, &proxy_url, Some("bytes=0-99")).await;
    assert_eq!(head.status(), 206);
    assert_eq!(head.headers()["content-type"], "video/mp4");
    assert_eq!(head.headers()["accept-ranges"], "bytes");
    let total: u64 = head.headers()["content-range"]
        .to_str()
        .unwrap()
        .strip_prefix("bytes 0-99/")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(head.bytes().await.unwrap().len(), 100);
    let whole = fetch(&app, &proxy_url, None).await;
    assert_eq!(whole.status(), 200);
    let sha = whole.headers()["x-custody-sha256"]
        .to_str()
        .unwrap()
        .to_string();
    let proxy = whole.bytes().await.unwrap();
    assert_eq!(proxy.len() as u64, total);
    assert_eq!(sha256_hex(&proxy), sha);
    let recorded = m["derived"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "proxy")
        .unwrap();
    assert_eq!(recorded["sha256"], sha.as_str());
    let moov = proxy.windows(4).position(|w| w == b"moov").unwrap();
    let mdat = proxy.windows(4).position(|w| w == b"mdat").unwrap();
    assert!(
        moov < mdat,
        "fast-start: the index comes before the media data"
    );
    let path = fx.path("proxy-out.mp4");
    std::fs::write(&path, &proxy).unwrap();
    let probed = ffprobe_streams(&path);
    let streams = probed["streams"].as_array().unwrap();
    let pv = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    assert_eq!(pv["codec_name"], "h264");
    assert!(pv["height"].as_u64().unwrap() <= 720);
    assert_eq!(pv["pix_fmt"], "yuv420p");
    assert!(
        streams
            .iter()
            .any(|s| s["codec_type"] == "audio" && s["codec_name"] == "aac")
    );
    // The original is untouched by all of this.
    app.approve_download(&h265_id).await;
    let original = fetch(&app, &format!("/api/v1/evidence/{h265_id}/content"), None).await;
    assert_eq!(
        sha256_hex(&original.bytes().await.unwrap()),
        sha256_hex(&h265)
    );

    // A photo: shown through its downscaled poster.
    let e = settled(&app, &photo_id).await;
    assert_eq!(e["media"]["view"]["source"], "image", "{}", e["media"]);
    let poster = e["media"]["derived"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "poster")
        .unwrap();
    let (w, h) = (
        poster["width"].as_u64().unwrap(),
        poster["height"].as_u64().unwrap(),
    );
    assert!(w < 2000 && w.max(h) <= 1280, "downscaled: {w}x{h}");
    assert_eq!(w * 3, h * 4, "aspect ratio kept: {w}x{h}");

    // A WAV recording plays as it is and has no picture.
    let e = settled(&app, &wav_id).await;
    assert_eq!(e["media"]["view"]["source"], "original", "{}", e["media"]);
    assert_eq!(e["media"]["info"]["streams"][0]["codec"], "pcm_s16le");
    assert_eq!(
        fetch(&app, &format!("/api/v1/evidence/{wav_id}/poster"), None)
            .await
            .status(),
        404
    );

    // Derived files live under derived/ in the object store.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("custody_media_jobs_total{kind=\"proxy\",outcome=\"done\"} 1"),
        "{metrics}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn every_kind_of_recording_is_probed_and_shown_on_sqlite_and_local_disk() {
    every_kind_of_recording_is_probed_and_shown(Backends::Embedded).await;
}

#[tokio::test]
async fn every_kind_of_recording_is_probed_and_shown_on_postgres_and_s3() {
    every_kind_of_recording_is_probed_and_shown(Backends::Real).await;
}

#[tokio::test]
async fn broken_files_are_stored_untouched_and_shown_as_not_playable_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(test_config(Backends::Embedded, dir.path()).await, None).await;
    let fx = Fixtures::new();
    // Index at the end (no fast-start), cut at 40 %: the index is gone.
    let whole = fx.video(
        "slow.mp4",
        &["-c:v", "libx264", "-preset", "ultrafast"],
        "320x240",
        false,
    );
    let truncated = whole[..whole.len() * 2 / 5].to_vec();
    let text = b"ZFY_INFO=not a video at all\n".repeat(40);
    // A real JPEG whose frame header claims 60000 x 60000 pixels.
    let mut huge = fx.photo();
    let sof = huge
        .windows(2)
        .position(|w| w[0] == 0xFF && (w[1] == 0xC0 || w[1] == 0xC2))
        .unwrap();
    huge[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
    let cases = [
        (
            "truncated",
            truncated,
            "ZFYMEDIA_20261120090000_0010.MP4",
            pb::MediaType::Video,
        ),
        (
            "text",
            text,
            "ZFYMEDIA_20261120090100_0011.MP4",
            pb::MediaType::Video,
        ),
        (
            "huge",
            huge,
            "ZFYMEDIA_20261120090200_0012.JPG",
            pb::MediaType::Photo,
        ),
    ];
    for (what, data, name, kind) in cases {
        let id = upload(&app, &data, name, kind).await;
        let e = settled(&app, &id).await;
        let m = &e["media"];
        assert_eq!(m["view"]["playable"], false, "{what}: {m}");
        let reason = m["view"]["reason"].as_str().unwrap();
        assert!(reason.starts_with("not playable: "), "{what}: {reason}");
        if what == "huge" {
            assert!(reason.contains("60000x60000"), "{what}: {reason}");
        } else {
            assert_eq!(m["state"], "failed", "{what}: {m}");
            assert!(
                m["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{what}: {m}"
            );
        }
        // The evidence bytes are kept exactly as uploaded.
        app.approve_download(&id).await;
        let stored = fetch(&app, &format!("/api/v1/evidence/{id}/content"), None).await;
        assert_eq!(stored.status(), 200);
        assert_eq!(
            sha256_hex(&stored.bytes().await.unwrap()),
            sha256_hex(&data),
            "{what}"
        );
        let poster = fetch(&app, &format!("/api/v1/evidence/{id}/poster"), None).await;
        assert_eq!(poster.status(), 404, "{what}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn queued_media_jobs_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(Backends::Embedded, dir.path()).await;
    // No workers: the job can only wait in the database.
    config.media_jobs = 0;
    let app = spawn_with(config.clone(), None).await;
    let fx = Fixtures::new();
    let id = upload(
        &app,
        &fx.h264(),
        "ZFYMEDIA_20261120100000_0020.MP4",
        pb::MediaType::Video,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let page: Value = app
        .get("/api/v1/evidence?device=ZFYMEDIA")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"][0]["media"]["state"], "pending");
    assert_eq!(
        page["items"][0]["media"]["view"]["reason"],
        "not probed yet"
    );
    app.shutdown().await;

    config.media_jobs = 2;
    let app = spawn_with(config, None).await;
    let e = settled(&app, &id).await;
    assert_eq!(e["media"]["state"], "ready");
    assert_eq!(e["media"]["view"]["playable"], true);
    app.shutdown().await;
}
