//! A server killed with SIGKILL while a recorder streams QoS 1 positions loses none that it
//! acknowledged: every fix whose PUBACK the recorder got is stored after the restart.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use custody::process::ServerProcess;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::time::Duration;

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_custody"))
}

/// Registers a recorder with `custody admin device add`, as an operator would.
fn add_device(data_dir: &Path, storage: &[String], id: &str) -> String {
    let out = std::process::Command::new(exe())
        .args(["admin", "device", "add", id, "--data-dir"])
        .arg(data_dir)
        .args(storage)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Streams fixes (one per message, QoS 1, up to 100 unacknowledged) until the connection dies;
/// returns the fix times (ms) whose PUBACK arrived.
async fn stream_until_killed(addr: std::net::SocketAddr, cred: &str, t0: i64) -> BTreeSet<i64> {
    let (user, secret) = cred.rsplit_once(':').unwrap();
    let mut opts = MqttOptions::new("crash-rec", addr.ip().to_string(), addr.port());
    opts.set_credentials(user, secret);
    opts.set_inflight(100);
    let (client, mut el) = AsyncClient::new(opts, 200);
    let topic = format!("custody/v1/dev/{user}/pos");
    // Requests go out in the order they were queued, so the n-th outgoing PUBLISH is the n-th fix.
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<i64>();
    let producer = tokio::spawn(async move {
        for i in 0..1_000_000i64 {
            let ts = t0 + i * 100;
            let body = format!(
                r#"{{"ts":{ts},"lat":{},"lon":120.15}}"#,
                30.0 + i as f64 * 1e-6
            );
            if sent_tx.send(ts).is_err()
                || client
                    .publish(&topic, QoS::AtLeastOnce, false, body)
                    .await
                    .is_err()
            {
                return;
            }
        }
    });
    let mut queued: VecDeque<i64> = VecDeque::new();
    let mut in_flight: HashMap<u16, i64> = HashMap::new();
    let mut acked = BTreeSet::new();
    loop {
        match el.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                while let Ok(ts) = sent_rx.try_recv() {
                    queued.push_back(ts);
                }
                in_flight.insert(pkid, queued.pop_front().unwrap());
            }
            Ok(Event::Incoming(Packet::PubAck(a))) => {
                acked.insert(in_flight.remove(&a.pkid).unwrap());
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    producer.abort();
    acked
}

async fn an_acknowledged_position_survives_a_server_kill(storage: Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = ServerProcess::spawn(exe(), &data, &storage).unwrap();
    let cred = add_device(&data, &storage, "CRASH-1");
    // Fixes 100 ms apart starting 6 h ago: all in the past (a future one would be rejected, not lost).
    let t0 = chrono::Utc::now().timestamp_millis() - 6 * 3_600_000;
    let addr = server.addrs.mqtt.unwrap();
    let streaming = tokio::spawn(async move { stream_until_killed(addr, &cred, t0).await });
    // Let it stream for a while, then kill the server mid-batch.
    tokio::time::sleep(Duration::from_millis(1500 + rand::random::<u64>() % 1000)).await;
    server.kill_hard().unwrap();
    let acked = tokio::time::timeout(Duration::from_secs(30), streaming)
        .await
        .expect("the recorder notices the dead server")
        .unwrap();
    assert!(
        acked.len() > 100,
        "the recorder streamed before the kill: {} acked",
        acked.len()
    );

    let server = ServerProcess::spawn(exe(), &data, &storage).unwrap();
    let from = chrono::DateTime::from_timestamp_millis(t0)
        .unwrap()
        .to_rfc3339();
    let to = chrono::DateTime::from_timestamp_millis(t0 + 1_000_000 * 100)
        .unwrap()
        .to_rfc3339();
    let url = format!(
        "http://{}/api/v1/devices/CRASH-1/track?jitter=false&from={}&to={}",
        server.addrs.http,
        from.replace('+', "%2B"),
        to.replace('+', "%2B")
    );
    let token = server.user_token("reader", "commander").unwrap();
    let track: serde_json::Value = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored: BTreeSet<i64> = track["features"][0]["properties"]["times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap())
                .unwrap()
                .timestamp_millis()
        })
        .collect();
    let lost: Vec<&i64> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged fixes lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    println!(
        "{} fixes acknowledged before the kill, {} stored after the restart (the rest were never acknowledged)",
        acked.len(),
        stored.len()
    );
    server.stop().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_position_survives_a_server_kill_on_sqlite() {
    an_acknowledged_position_survives_a_server_kill(vec![]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_position_survives_a_server_kill_on_postgres() {
    let url = custody_store::testing::fresh_postgres_url().await;
    an_acknowledged_position_survives_a_server_kill(vec!["--database-url".into(), url]).await
}
