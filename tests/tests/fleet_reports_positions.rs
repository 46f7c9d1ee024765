//! A simulated fleet (`custody-sim fleet`) logs in to a real server process with credentials from
//! `custody admin device add --count`, and everything it says it delivered is stored: positions, SOS
//! alarms, latest positions; on SQLite with the embedded endpoint and on PostgreSQL.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use custody::process::{ServerProcess, sibling};
use std::process::Command;

async fn a_fleet_is_stored_as_it_reports(storage: Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let exe = sibling("custody").unwrap();
    let server = ServerProcess::spawn(&exe, &data, &storage).unwrap();
    let creds = dir.path().join("fleet.credentials");
    let out = Command::new(&exe)
        .args([
            "admin",
            "device",
            "add",
            "--count",
            "30",
            "--prefix",
            "FLEET-",
            "--credential-out",
        ])
        .arg(&creds)
        .arg("--data-dir")
        .arg(&data)
        .args(&storage)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats_path = dir.path().join("stats.json");
    let mqtt = server.addrs.mqtt.unwrap();
    let st = Command::new(sibling("custody-sim").unwrap())
        .args([
            "fleet",
            "--broker",
            &format!("mqtt://{mqtt}"),
            "--devices",
            "30",
            "--rate",
            "5",
        ])
        .args([
            "--duration",
            "4s",
            "--batch",
            "2",
            "--sos-per-hour",
            "900",
            "--seed",
            "7",
            "-q",
        ])
        .arg("--credentials")
        .arg(&creds)
        .arg("--stats-json")
        .arg(&stats_path)
        .status()
        .unwrap();
    assert!(st.success());
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&stats_path).unwrap()).unwrap();
    let delivered = stats["positions"].as_u64().unwrap();
    assert!(delivered > 300, "{stats}");

    let http = server.addrs.http;
    let reader = common::authed(&server.user_token("reader", common::READER_ROLES).unwrap());
    let metrics = reqwest::get(format!("http://{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let accepted = metric(&metrics, "custody_telemetry_positions_accepted_total");
    // Every acknowledged fix is stored; none was rejected (the simulator's officers obey the rules).
    assert_eq!(accepted, delivered, "stored vs acknowledged by the server");
    for reason in ["too_fast", "future_time", "lat_out_of_range", "null_island"] {
        assert_eq!(
            metric(
                &metrics,
                &format!("custody_telemetry_positions_rejected_total{{reason=\"{reason}\"}}")
            ),
            0,
            "{reason}"
        );
    }
    let latest: serde_json::Value = reader
        .get(format!("http://{http}/api/v1/positions/latest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(latest["count"], 30);
    for item in latest["items"].as_array().unwrap() {
        assert!(
            item["device"].as_str().unwrap().starts_with("FLEET-"),
            "{item}"
        );
    }
    let alarms: serde_json::Value = reader
        .get(format!("http://{http}/api/v1/alarms?limit=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored_alarms = alarms["items"].as_array().unwrap().len() as u64;
    assert!(
        stats["alarms"].as_u64().unwrap() > 0,
        "the SOS rate makes some: {stats}"
    );
    // Each SOS arrives twice (its alarm message, then the SOS flag on the next fixes) and is stored
    // once; presses of one recorder within a minute of each other are one alarm.
    let sent = stats["alarms"].as_u64().unwrap();
    assert!(
        (1..=sent).contains(&stored_alarms),
        "{sent} SOS sent, {stored_alarms} alarms stored"
    );
    println!(
        "fleet: {delivered} positions and {sent} SOS delivered; {accepted} stored, {stored_alarms} alarms"
    );
    server.stop().unwrap();
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[tokio::test]
async fn a_fleet_is_stored_as_it_reports_on_sqlite() {
    a_fleet_is_stored_as_it_reports(vec![]).await
}

#[tokio::test]
async fn a_fleet_is_stored_as_it_reports_on_postgres() {
    let url = custody_store::testing::fresh_postgres_url().await;
    a_fleet_is_stored_as_it_reports(vec!["--database-url".into(), url]).await
}
