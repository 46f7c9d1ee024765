//! Black-box tests of `custody-sim fleet`: the built binary publishes to the real Mosquitto at
//! `CUSTODY_TEST_MQTT_URL` (default mqtt://127.0.0.1:1883, anonymous access; `scripts/test.sh` starts
//! one) while a subscriber here decodes every message as Custody would and holds it against the stats
//! the binary wrote. Each run names its devices with a prefix of its own, so runs (and other tests on the
//! same broker) do not see each other's devices. Set `CUSTODY_TEST_MQTT_URL=none` to skip the tests that
//! need a broker.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use custody_core::geo::haversine_m;
use custody_core::position::{AlarmMessage, OwnTracks, parse_json, parse_owntracks};
use custody_core::{DeviceId, Position, Timestamp};
use custody_proto::v1::PositionBatch;
use custody_sim::fleet::FleetStats;
use prost::Message;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_custody-sim");

fn broker_url() -> Option<String> {
    match std::env::var("CUSTODY_TEST_MQTT_URL") {
        Ok(url) if url == "none" => {
            eprintln!("CUSTODY_TEST_MQTT_URL=none: skipping a test that needs an MQTT broker");
            None
        }
        Ok(url) => Some(url),
        Err(_) => Some("mqtt://127.0.0.1:1883".to_owned()),
    }
}

fn host_port(url: &str) -> (String, u16) {
    let rest = url.strip_prefix("mqtt://").expect("mqtt:// url");
    match rest.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().unwrap()),
        None => (rest.to_owned(), 1883),
    }
}

/// A device prefix no other run uses.
fn unique_prefix(tag: &str) -> String {
    format!("{tag}{:08x}-", rand::random::<u32>())
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// One message as the subscriber got it.
#[derive(Debug, Clone)]
struct Received {
    topic: String,
    payload: Vec<u8>,
    /// Receive time, microseconds since the Unix epoch.
    at: i64,
}

impl Received {
    /// The device level of the topic (`custody/v1/dev/{device}/..`, `owntracks/{user}/{device}`).
    fn device(&self) -> DeviceId {
        DeviceId::parse(device_level(&self.topic).unwrap()).unwrap()
    }
}

/// The device level of a topic, if it is one of the device topics.
fn device_level(topic: &str) -> Option<&str> {
    let levels: Vec<&str> = topic.split('/').collect();
    match levels.as_slice() {
        ["custody", "v1", "dev", id, _] | ["owntracks", _, id] => Some(id),
        _ => None,
    }
}

/// A subscriber on the real broker that keeps what arrives on its filters for one prefix.
struct Subscriber {
    got: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Subscribes (QoS 1) and returns once the broker acknowledged every filter.
    async fn start(url: &str, prefix: &str, filters: &[&str]) -> Self {
        let (host, port) = host_port(url);
        let mut opts = MqttOptions::new(format!("{prefix}sub"), host, port);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        for f in filters {
            client.subscribe(*f, QoS::AtLeastOnce).await.unwrap();
        }
        let got = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let want = filters.len();
        let prefix = prefix.to_owned();
        let sink = got.clone();
        let task = tokio::spawn(async move {
            let _client = client;
            let mut acked = 0;
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        acked += 1;
                        if acked == want {
                            ready.take().map(|r| r.send(()));
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        // Other tests publish on the same broker, some with ids that are not valid.
                        if device_level(&p.topic).is_some_and(|d| d.starts_with(&prefix)) {
                            sink.lock().unwrap().push(Received {
                                topic: p.topic.clone(),
                                payload: p.payload.to_vec(),
                                at: now_micros(),
                            });
                        }
                    }
                    Ok(_) => {}
                    Err(e) => panic!("subscriber lost the broker: {e}"),
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("the broker acknowledges the subscriptions")
            .unwrap();
        Self { got, task }
    }

    /// Waits a little for messages still on their way, then stops and returns everything received.
    async fn finish(self) -> Vec<Received> {
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.task.abort();
        std::mem::take(&mut *self.got.lock().unwrap())
    }
}

/// A finished run of the binary.
struct Run {
    output: Output,
    stats: Option<FleetStats>,
    _dir: tempfile::TempDir,
}

impl Run {
    fn stats(&self) -> &FleetStats {
        self.stats.as_ref().expect("the run wrote its stats")
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    fn assert_success(&self) {
        assert!(
            self.output.status.success(),
            "custody-sim fleet failed: {}\n{}",
            self.output.status,
            self.stderr()
        );
    }
}

/// Runs `custody-sim fleet` with `args` and a stats file to completion.
async fn run_fleet(url: &str, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let stats_file: PathBuf = dir.path().join("stats.json");
    let output = tokio::process::Command::new(BIN)
        .arg("fleet")
        .args(["--broker", url])
        .arg("--stats-json")
        .arg(&stats_file)
        .args(args)
        .output()
        .await
        .unwrap();
    let stats = std::fs::read(&stats_file)
        .ok()
        .map(|b| serde_json::from_slice(&b).unwrap());
    Run {
        output,
        stats,
        _dir: dir,
    }
}

/// Every fix of every message, by device, in arrival order.
fn fixes_by_device(
    msgs: &[Received],
    decode: impl Fn(&DeviceId, &[u8]) -> Vec<Position>,
) -> BTreeMap<DeviceId, Vec<(Position, i64)>> {
    let mut by: BTreeMap<DeviceId, Vec<(Position, i64)>> = BTreeMap::new();
    for m in msgs {
        let dev = m.device();
        for p in decode(&dev, &m.payload) {
            assert_eq!(p.device, dev);
            by.entry(dev.clone()).or_default().push((p, m.at));
        }
    }
    by
}

fn decode_proto(dev: &DeviceId, payload: &[u8]) -> Vec<Position> {
    let b = PositionBatch::decode(payload).unwrap();
    assert_eq!(
        b.device_id,
        dev.as_str(),
        "the batch names the device of its topic"
    );
    b.positions
        .into_iter()
        .map(|p| {
            let t = p.time.unwrap();
            Position {
                device: dev.clone(),
                time: Timestamp::from_unix_parts(t.seconds, t.nanos).unwrap(),
                lat: p.lat,
                lon: p.lon,
                alt_m: p.alt_m,
                speed_mps: p.speed_mps,
                course_deg: p.course_deg,
                accuracy_m: p.accuracy_m,
                sos: p.sos,
                battery_pct: p.battery_pct.map(|b| b as u8),
            }
        })
        .collect()
}

/// Checks what every run must hold: each device's fixes are in time order, no faster than 70 m/s apart,
/// pass the server's checks, and were made shortly before they arrived (within `max_delay_s`).
fn assert_plausible_tracks(by: &BTreeMap<DeviceId, Vec<(Position, i64)>>, max_delay_s: f64) {
    let limits = custody_core::position::Limits::default();
    for (dev, fixes) in by {
        for w in fixes.windows(2) {
            let (a, b) = (&w[0].0, &w[1].0);
            assert!(b.time > a.time, "{dev}: fixes out of order");
            let dt = (b.time.unix_micros() - a.time.unix_micros()) as f64 / 1e6;
            let d = haversine_m(a.lat, a.lon, b.lat, b.lon);
            assert!(d / dt < 70.0, "{dev}: {d:.1} m in {dt:.3} s");
        }
        for (p, at) in fixes {
            assert_eq!(
                limits.check(p, Timestamp::from_unix_micros(*at)),
                Ok(()),
                "{p:?}"
            );
            let delay = (*at - p.time.unix_micros()) as f64 / 1e6;
            assert!(
                (-0.05..max_delay_s).contains(&delay),
                "{dev}: fix made {delay:.3} s before it arrived"
            );
        }
    }
}

fn expected_ids(prefix: &str, n: usize) -> BTreeSet<DeviceId> {
    (1..=n)
        .map(|i| DeviceId::parse(format!("{prefix}{i:05}")).unwrap())
        .collect()
}

#[tokio::test]
async fn a_proto_fleet_delivers_every_fix_of_every_device_as_the_stats_say() {
    let Some(url) = broker_url() else { return };
    let prefix = unique_prefix("FP");
    let sub = Subscriber::start(&url, &prefix, &["custody/v1/dev/+/pos"]).await;
    let run = run_fleet(
        &url,
        &[
            "--devices",
            "20",
            "--rate",
            "5",
            "--duration",
            "3s",
            "--prefix",
            &prefix,
            "--seed",
            "1",
            "--sos-per-hour",
            "0",
        ],
    )
    .await;
    let msgs = sub.finish().await;
    run.assert_success();
    let s = run.stats();
    assert_eq!((s.devices, s.connections), (20, 20));
    assert_eq!(s.publish_errors, 0, "{}", run.stderr());
    // 20 devices × 5 Hz × 3 s, give or take the phases at the edges.
    assert!((260..=320).contains(&s.positions), "{s:?}");
    assert_eq!(s.messages, s.positions, "one fix per message");
    assert!((s.positions_per_s - s.positions as f64 / s.elapsed_s).abs() < 1e-6);
    // Every acknowledged message reached the subscriber.
    assert_eq!(msgs.len() as u64, s.messages);

    let by = fixes_by_device(&msgs, decode_proto);
    assert_eq!(
        by.keys().cloned().collect::<BTreeSet<_>>(),
        expected_ids(&prefix, 20)
    );
    assert_eq!(by.values().map(Vec::len).sum::<usize>() as u64, s.positions);
    // At 5 Hz and one fix per message, a fix is published the moment it is made.
    assert_plausible_tracks(&by, 1.0);
    for fixes in by.values() {
        let p = &fixes[0].0;
        assert!(p.accuracy_m.is_some() && p.battery_pct.is_some() && p.speed_mps.is_some());
        // Every device reports about 5 times a second, evenly.
        assert!((13..=17).contains(&fixes.len()), "{}", fixes.len());
    }
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    assert!(stdout.contains("20 devices on 20 connections"), "{stdout}");
}

#[tokio::test]
async fn a_json_fleet_batches_fixes_into_arrays_and_raises_sos_alarms_with_flagged_fixes() {
    let Some(url) = broker_url() else { return };
    let prefix = unique_prefix("FJ");
    let sub = Subscriber::start(
        &url,
        &prefix,
        &["custody/v1/dev/+/pos", "custody/v1/dev/+/alarm"],
    )
    .await;
    let run = run_fleet(
        &url,
        &[
            "--devices",
            "20",
            "--rate",
            "4",
            "--duration",
            "3s",
            "--prefix",
            &prefix,
            "--format",
            "json",
            "--batch",
            "3",
            "--sos-per-hour",
            "1800",
        ],
    )
    .await;
    let msgs = sub.finish().await;
    run.assert_success();
    let s = run.stats();
    assert_eq!(s.publish_errors, 0, "{}", run.stderr());
    let (alarms, pos): (Vec<Received>, Vec<Received>) =
        msgs.into_iter().partition(|m| m.topic.ends_with("/alarm"));
    assert_eq!(pos.len() as u64, s.messages);
    assert_eq!(alarms.len() as u64, s.alarms);
    // 20 devices × 3 s at 0.5 presses a second each: about 30.
    assert!((10..=60).contains(&s.alarms), "{s:?}");

    for m in &pos {
        assert!(m.payload.starts_with(b"["), "a batch is an array");
    }
    let by = fixes_by_device(&pos, |d, p| parse_json(d, p).unwrap());
    assert_eq!(
        by.keys().cloned().collect::<BTreeSet<_>>(),
        expected_ids(&prefix, 20)
    );
    assert_eq!(by.values().map(Vec::len).sum::<usize>() as u64, s.positions);
    // Full batches while running; the last one, flushed at the stop, may be shorter.
    for m in &pos {
        let n = parse_json(&m.device(), &m.payload).unwrap().len();
        assert!((1..=3).contains(&n));
    }
    assert!(s.positions > 2 * s.messages, "{s:?}");
    // The oldest fix of a batch of 3 at 4 Hz waited half a second for the other two.
    assert_plausible_tracks(&by, 1.5);

    for a in &alarms {
        let alarm = AlarmMessage::parse(&a.payload).unwrap();
        assert_eq!(alarm.kind, "sos");
        assert!(alarm.lat.is_some() && alarm.lon.is_some());
        // The fix made with the alarm carries sos, and so do the device's fixes of the next 10 s.
        let fixes = &by[&a.device()];
        let t = alarm.time().unix_micros();
        let same = fixes
            .iter()
            .find(|(p, _)| (p.time.unix_micros() - t).abs() < 1000)
            .unwrap_or_else(|| panic!("no fix made with the alarm of {}", a.device()));
        assert!(same.0.sos);
        assert!(
            fixes
                .iter()
                .filter(|(p, _)| (t..t + 9_000_000).contains(&p.time.unix_micros()))
                .all(|(p, _)| p.sos)
        );
    }
}

#[tokio::test]
async fn an_owntracks_share_publishes_owntracks_locations_through_gateway_connections() {
    let Some(url) = broker_url() else { return };
    let prefix = unique_prefix("FO");
    let sub = Subscriber::start(&url, &prefix, &["custody/v1/dev/+/pos", "owntracks/sim/+"]).await;
    let run = run_fleet(
        &url,
        &[
            "--devices",
            "20",
            "--rate",
            "2",
            "--duration",
            "3s",
            "--prefix",
            &prefix,
            "--owntracks-share",
            "0.5",
            "--connections",
            "4",
            "--qos",
            "0",
        ],
    )
    .await;
    let msgs = sub.finish().await;
    run.assert_success();
    let s = run.stats();
    assert_eq!((s.devices, s.connections), (20, 4));
    let (own, pos): (Vec<Received>, Vec<Received>) = msgs
        .into_iter()
        .partition(|m| m.topic.starts_with("owntracks/"));
    // QoS 0 on loopback loses nothing in practice, but promises nothing either.
    let got = (own.len() + pos.len()) as u64;
    assert!(
        got <= s.messages && got * 100 >= s.messages * 95,
        "{got} of {s:?}"
    );

    let own_by = fixes_by_device(&own, |d, p| match parse_owntracks(d, p).unwrap() {
        OwnTracks::Location(p) => vec![p],
        OwnTracks::Other(t) => panic!("an OwnTracks {t} message"),
    });
    let pos_by = fixes_by_device(&pos, decode_proto);
    assert_eq!(own_by.len(), 10, "half the devices run OwnTracks");
    assert_eq!(pos_by.len(), 10);
    let all: BTreeSet<DeviceId> = own_by.keys().chain(pos_by.keys()).cloned().collect();
    assert_eq!(all, expected_ids(&prefix, 20));
    for m in &own {
        assert!(m.topic.starts_with("owntracks/sim/"));
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["_type"], "location");
        // tst is whole seconds: up to a second older than the fix.
        let tst = v["tst"].as_i64().unwrap();
        let delay = m.at as f64 / 1e6 - tst as f64;
        assert!((0.0..2.0).contains(&delay), "{delay}");
        assert!(v["vel"].is_i64() && v["acc"].is_i64() && v["batt"].is_u64());
    }
    assert_plausible_tracks(&pos_by, 1.0);
}

#[tokio::test]
async fn devices_log_in_with_their_credentials_and_publish_under_those_ids() {
    let Some(url) = broker_url() else { return };
    let prefix = unique_prefix("FC");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("devices.txt");
    let ids: Vec<String> = (0..5).map(|i| format!("{prefix}ZFY{i}")).collect();
    let lines: String = ids
        .iter()
        .map(|id| format!("{id}:{}\n", hex_secret()))
        .collect();
    std::fs::write(
        &file,
        format!("# issued by custody admin device add\n{lines}"),
    )
    .unwrap();
    let sub = Subscriber::start(&url, &prefix, &["custody/v1/dev/+/pos"]).await;
    let run = run_fleet(
        &url,
        &[
            "--devices",
            "5",
            "--rate",
            "2",
            "--duration",
            "2s",
            "--credentials",
            file.to_str().unwrap(),
        ],
    )
    .await;
    let msgs = sub.finish().await;
    run.assert_success();
    let seen: BTreeSet<String> = msgs.iter().map(|m| m.device().to_string()).collect();
    assert_eq!(seen, ids.into_iter().collect());
    assert_eq!(msgs.len() as u64, run.stats().messages);
}

fn hex_secret() -> String {
    (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

#[tokio::test]
async fn sigterm_stops_the_fleet_cleanly_with_nothing_left_unacknowledged() {
    let Some(url) = broker_url() else { return };
    let prefix = unique_prefix("FT");
    let dir = tempfile::tempdir().unwrap();
    let stats_file = dir.path().join("stats.json");
    let child = tokio::process::Command::new(BIN)
        .args([
            "fleet",
            "--broker",
            &url,
            "--devices",
            "10",
            "--rate",
            "10",
            "--batch",
            "7",
        ])
        .args(["--prefix", &prefix, "--stats-json"])
        .arg(&stats_file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("the fleet stops within its drain timeout")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: FleetStats = serde_json::from_slice(&std::fs::read(&stats_file).unwrap()).unwrap();
    assert_eq!(s.publish_errors, 0);
    // The fixes buffered at the stop (batches of 7 at 10 Hz) were flushed, not dropped: positions are
    // not a multiple of 7 per message.
    assert!(s.positions > 150, "{s:?}");
    assert!(s.positions < s.messages * 7, "{s:?}");
}

#[tokio::test]
async fn a_fleet_that_never_reaches_its_broker_fails_after_writing_its_stats() {
    // A port nothing listens on: connections are refused at once.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let run = run_fleet(
        &format!("mqtt://127.0.0.1:{port}"),
        &[
            "--devices",
            "3",
            "--duration",
            "2s",
            "--drain-timeout",
            "1s",
        ],
    )
    .await;
    assert!(!run.output.status.success());
    assert!(
        run.stderr().contains("no connection to the broker"),
        "{}",
        run.stderr()
    );
    let s = run.stats();
    assert_eq!((s.messages, s.positions), (0, 0));
    assert!(s.publish_errors > 0, "{s:?}");
}

#[test]
fn too_few_credentials_or_a_gateway_with_credentials_is_refused_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("devices.txt");
    std::fs::write(
        &file,
        format!("ZFY1:{}\nZFY2:{}\n", hex_secret(), hex_secret()),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        std::process::Command::new(BIN)
            .args(["fleet", "--broker", "mqtt://127.0.0.1:1", "--credentials"])
            .arg(&file)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&["--devices", "3"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 credentials for 3 devices"), "{err}");
    let out = run(&["--devices", "2", "--connections", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("one connection per device"), "{err}");
}

#[test]
fn the_help_documents_every_flag_with_examples() {
    let out = std::process::Command::new(BIN)
        .args(["fleet", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--broker",
        "--devices",
        "--rate",
        "--duration",
        "--seed",
        "--credentials",
        "--prefix",
        "--connections",
        "--format",
        "--batch",
        "--qos",
        "--owntracks-share",
        "--center",
        "--radius-m",
        "--driving-share",
        "--sos-per-hour",
        "--stats-json",
        "--connect-rate",
    ] {
        assert!(help.contains(flag), "{flag} is not in the help");
    }
    assert!(help.contains("Examples:"));
}
