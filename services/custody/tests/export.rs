//! Export packages through the real server and the real `custody verify package` binary: a case with
//! linked recordings is exported only after a second supervisor approved the request, the package
//! verifies offline, its export events are in each item's ledger history, and a flipped byte, an edited
//! manifest or an extra member makes the verifier fail naming the file — on the embedded backends and
//! on PostgreSQL + S3.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;
use custody_proto::v1 as pb;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

/// Capture times are around this instant (2026-11-18T05:46:40Z).
const T0: i64 = 1_795_000_000;

/// Uploads a recording as a station does; returns (evidence id, file name).
async fn upload(app: &TestApp, data: &[u8], device: &str, at: i64) -> (String, String) {
    let mut up = app.uploader().await;
    let mut req = begin_request(data, device);
    let name = format!("{device}_{at}_0001.WAV");
    req.file_name = name.clone();
    req.capture_start = Some(prost_types::Timestamp {
        seconds: at,
        nanos: 0,
    });
    req.media_type = pb::MediaType::Audio.into();
    (
        up.upload(req, &source(data)).await.unwrap().evidence_id,
        name,
    )
}

/// Runs the real `custody verify package`; returns (exit code, stdout).
fn verify(package: &Path, key: Option<&Path>) -> (i32, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_custody"));
    c.args(["verify", "package"]).arg(package);
    if let Some(k) = key {
        c.arg("--key").arg(k);
    }
    let o = c.output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    (
        o.status.code().unwrap_or(-1),
        format!("{out}{}", String::from_utf8_lossy(&o.stderr)),
    )
}

/// Rewrites a ZIP: `edit` may replace a member's bytes (by returning `Some`); `extra` members are
/// appended.
fn rewrite_zip(
    src: &Path,
    dst: &Path,
    edit: impl Fn(&str, &[u8]) -> Option<Vec<u8>>,
    extra: &[(&str, &[u8])],
) {
    let mut z = zip::ZipArchive::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut w = zip::ZipWriter::new(std::fs::File::create(dst).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..z.len() {
        let mut f = z.by_index(i).unwrap();
        let name = f.name().unwrap().to_string();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        let bytes = edit(&name, &bytes).unwrap_or(bytes);
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(&bytes).unwrap();
    }
    for (name, bytes) in extra {
        w.start_file(*name, opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap();
}

async fn a_case_is_exported_and_verified_offline(backends: Backends) {
    let app = spawn_app(backends).await;
    let admin = app.http_client.clone();
    let api = |p: &str| app.api(p);

    let (s, b) = call(
        &admin,
        "PUT",
        api("/officers/0001"),
        Some(json!({"name": "张三", "unit": "福田中队"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = call(
        &admin,
        "POST",
        api("/recorders/REC-A/checkout"),
        Some(json!({"badge": "0001", "at": rfc3339(T0 - 3600)})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let dir = tempfile::tempdir().unwrap();
    let (a1, n1) = upload(&app, &wav(dir.path(), 2, 300), "REC-A", T0).await;
    let (a2, n2) = upload(&app, &wav(dir.path(), 2, 500), "REC-A", T0 + 10).await;

    // A case with one step and both recordings linked.
    let (s, case) = call(
        &admin,
        "POST",
        api("/cases"),
        Some(json!({"case_no": "深福城执罚〔2026〕007号", "title": "占道经营 <店铺> & 噪声", "procedure": "general"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{case}");
    let id = case["id"].as_str().unwrap().to_string();
    let (s, step) = call(
        &admin,
        "POST",
        api(&format!("/cases/{id}/steps")),
        Some(json!({
            "title": "现场检查", "from": rfc3339(T0), "to": rfc3339(T0 + 30), "officers": ["0001"]
        })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{step}");
    for e in [&a1, &a2] {
        let (s, b) = call(
            &admin,
            "POST",
            api(&format!("/cases/{id}/links")),
            Some(json!({"evidence_id": e, "step_id": step["id"], "role": "现场检查", "note": "全程"})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }

    // Without an approved export request the export is refused, saying how to ask.
    let (s, b) = call(&admin, "POST", api(&format!("/cases/{id}/export")), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(b.to_string().contains("/api/v1/requests"), "{b}");

    // Asked for, and approved by a second supervisor.
    let (s, r) = call(
        &admin,
        "POST",
        api("/requests"),
        Some(json!({"kind": "export", "case_id": id, "reason": "移送法院"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let approver = authed(&user_token(&app.accounts, "approver", "supervisor").await);
    let (s, b) = call(
        &approver,
        "POST",
        api(&format!("/requests/{}/approve", r["id"].as_str().unwrap())),
        Some(json!({"note": "同意"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let resp = admin
        .post(api(&format!("/cases/{id}/export")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/zip");
    let disposition = resp.headers()["content-disposition"].to_str().unwrap();
    assert!(disposition.starts_with("attachment;"), "{disposition}");
    let package_id = resp.headers()["x-custody-package-id"]
        .to_str()
        .unwrap()
        .to_string();
    let bytes = resp.bytes().await.unwrap();
    let package = dir.path().join("package.zip");
    std::fs::write(&package, &bytes).unwrap();
    let key = dir.path().join("ledger.pub");
    std::fs::write(&key, format!("{}\n", app.verifier_key)).unwrap();

    // The package holds what the format says.
    let mut z = zip::ZipArchive::new(std::fs::File::open(&package).unwrap()).unwrap();
    let mut manifest = String::new();
    z.by_name("manifest.json")
        .unwrap()
        .read_to_string(&mut manifest)
        .unwrap();
    let m: Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(m["version"], 1);
    assert_eq!(m["package_id"], package_id.as_str());
    assert_eq!(m["case"]["case_no"], "深福城执罚〔2026〕007号");
    assert_eq!(m["files"].as_array().unwrap().len(), 2);
    assert_eq!(m["files"][0]["officer"]["name"], "张三", "{m}");
    let mut html = String::new();
    z.by_name("evidence-list.html")
        .unwrap()
        .read_to_string(&mut html)
        .unwrap();
    assert!(
        html.contains("证据清单") && html.contains("视听资料"),
        "{html}"
    );
    assert!(html.contains("占道经营 &lt;店铺&gt; &amp; 噪声"), "{html}");
    for name in [
        "checkpoint.txt",
        "keys/ledger.pub",
        "README.txt",
        &format!("receipts/{a1}.json"),
        &format!("files/{a1}/{n1}"),
        &format!("files/{a2}/{n2}"),
    ] {
        assert!(z.by_name(name).is_ok(), "{name} missing");
    }
    drop(z);
    let path1 = format!("files/{a1}/{n1}");
    let path2 = format!("files/{a2}/{n2}");

    // The real verifier passes it, with the published key and (warning) with the package's own.
    let (code, out) = verify(&package, Some(&key));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("PASS {path1}")), "{out}");
    assert!(out.contains(&format!("PASS {path2}")), "{out}");
    let (code, out) = verify(&package, None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("WARNING") && out.contains("SHA-256"), "{out}");

    // One flipped byte of one file: that file fails, naming what differed; the other passes.
    let flipped = dir.path().join("flipped.zip");
    rewrite_zip(
        &package,
        &flipped,
        |name, b| {
            (name == path1).then(|| {
                let mut b = b.to_vec();
                let i = b.len() / 2;
                b[i] ^= 0x01;
                b
            })
        },
        &[],
    );
    let (code, out) = verify(&flipped, Some(&key));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("FAIL {path1}: sha256 of the bytes is")),
        "{out}"
    );
    assert!(out.contains(&format!("PASS {path2}")), "{out}");

    // A manifest whose SHA-256 was edited: the file no longer matches it, nor does its receipt.
    let edited = dir.path().join("edited.zip");
    let a1_sha = m["files"][0]["sha256"].as_str().unwrap().to_string();
    rewrite_zip(
        &package,
        &edited,
        |name, b| {
            (name == "manifest.json").then(|| {
                String::from_utf8(b.to_vec())
                    .unwrap()
                    .replacen(&a1_sha, &"ab".repeat(32), 1)
                    .into_bytes()
            })
        },
        &[],
    );
    let (code, out) = verify(&edited, Some(&key));
    assert_eq!(code, 1, "{out}");
    let first = m["files"][0]["path"].as_str().unwrap();
    assert!(out.contains(&format!("FAIL {first}:")), "{out}");
    assert!(out.contains("the manifest says"), "{out}");

    // An extra member the manifest does not list.
    let extra = dir.path().join("extra.zip");
    rewrite_zip(
        &package,
        &extra,
        |_, _| None,
        &[("files/x/planted.MP4", b"x")],
    );
    let (code, out) = verify(&extra, Some(&key));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL files/x/planted.MP4: is in the archive but not listed"),
        "{out}"
    );

    // A missing file.
    let missing = dir.path().join("missing.zip");
    {
        let mut z = zip::ZipArchive::new(std::fs::File::open(&package).unwrap()).unwrap();
        let mut w = zip::ZipWriter::new(std::fs::File::create(&missing).unwrap());
        for i in 0..z.len() {
            let f = z.by_index(i).unwrap();
            if f.name().unwrap() != path2.as_str() {
                w.raw_copy_file(f).unwrap();
            }
        }
        w.finish().unwrap();
    }
    let (code, out) = verify(&missing, Some(&key));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("FAIL {path2}: missing from the archive")),
        "{out}"
    );

    // A receipt for other bytes: a2's receipt in a1's place.
    let swapped = dir.path().join("swapped.zip");
    let mut z = zip::ZipArchive::new(std::fs::File::open(&package).unwrap()).unwrap();
    let mut r2 = Vec::new();
    z.by_name(&format!("receipts/{a2}.json"))
        .unwrap()
        .read_to_end(&mut r2)
        .unwrap();
    drop(z);
    let r1_name = format!("receipts/{a1}.json");
    rewrite_zip(
        &package,
        &swapped,
        |name, _| (name == r1_name).then(|| r2.clone()),
        &[],
    );
    let (code, out) = verify(&swapped, Some(&key));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("FAIL {path1}: receipt")), "{out}");

    // A key other than the log's: nothing verifies.
    let other = dir.path().join("other.pub");
    let (_, vkey) =
        custody_core::ledger::generate_key(&mut rand_core_06::OsRng, custody::admin::TEST_ORIGIN);
    std::fs::write(&other, vkey).unwrap();
    let (code, out) = verify(&package, Some(&other));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL checkpoint.txt"), "{out}");

    // Each item's history holds this package's export event, naming the case and the package.
    app.settle_ledger().await;
    for e in [&a1, &a2] {
        let (s, h) = call(&admin, "GET", api(&format!("/evidence/{e}/history")), None).await;
        assert_eq!(s, StatusCode::OK, "{h}");
        let exports: Vec<&Value> = h["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["event"]["kind"] == "export")
            .collect();
        assert_eq!(exports.len(), 1, "{h}");
        let detail = exports[0]["event"]["detail"].as_str().unwrap();
        assert!(
            detail.contains(&package_id) && detail.contains(&id),
            "{detail}"
        );
        assert_eq!(exports[0]["event"]["actor"], "user:tester", "{h}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_case_is_exported_and_verified_offline_on_embedded_backends() {
    a_case_is_exported_and_verified_offline(Backends::Embedded).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_case_is_exported_and_verified_offline_on_postgres_and_s3() {
    a_case_is_exported_and_verified_offline(Backends::Real).await
}
