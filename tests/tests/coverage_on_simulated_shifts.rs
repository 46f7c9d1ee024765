//! Recording coverage (执法全过程记录) on simulated shifts, end to end. Three officers' recorders are made
//! by `custody-sim` with recordings and holes at known times and places; one recorder's clock runs 137 s
//! ahead and one 95 s behind. They are docked into a real docking-station agent (`custody-station`, a
//! child process) that offloads them into a real `custody serve`, measuring each recorder's clock offset.
//! A case handler then builds a case over the shift. Its coverage report must find exactly the known
//! holes of each officer present (in true time, so only with the station's clock correction), suggest
//! the unlinked footage of those officers that fills a gap, nearest the step's place first, and never
//! footage of an officer not at the step or made outside its place; and review (审核) must be refused,
//! listing every gap, until the suggestions are linked and the rest explained.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::answer;
use common::station::{StationProcess, StationSetup, dock, tail};
use custody::process::{ServerProcess, sibling_binary};
use custody_core::geo::haversine_m;
use custody_core::media::EmbeddedLocation;
use custody_core::{BadgeNo, DeviceId, Timestamp};
use custody_sim::recorder::{
    CodecChoice, Manifest, RecorderArgs, RecordingSpec, make_recorder, wind_clock,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How far a gap's ends may lie from the known hole's, in seconds: the station reads a recorder's clock
/// (whole seconds, wound at a whole second) up to a poll interval after it docks, and a stream-copied
/// MP4 runs a few hundredths of a second past its planned length.
const TOLERANCE_S: f64 = 1.5;
/// Pauses at most this long are not gaps (the server's `coverage_min_gap` for this test).
const MIN_GAP: &str = "2s";
/// Every recorder closes a file after this long, so a recording longer than it is several files.
const SEGMENT: &str = "10s";

/// The step of the inspection (现场检查): `[START, END)` seconds into the shift, at `SCENE`.
const INSPECTION: (i64, i64) = (0, 50);
const SCENE: (f64, f64) = (22.5431, 114.0579);
const SCENE_RADIUS_M: f64 = 300.0;
/// The step of serving the decision (送达): `[START, END)` seconds into the shift, at `DOOR`.
const SERVING: (i64, i64) = (101, 105);
const DOOR: (f64, f64) = (22.5500, 114.0700);
const DOOR_RADIUS_M: f64 = 200.0;

/// The officers of the shift: badge, name, the recorder they checked out, and how many seconds its
/// clock is ahead of true time.
const OFFICERS: [(&str, &str, &str, i64); 3] = [
    ("0710001", "张三", "ZFY71001", 137),
    ("0710002", "李四", "ZFY71002", -95),
    ("0710003", "王五", "ZFY71003", 0),
];

/// Every recording of the shift: whose, when (start and length in seconds into the shift, true time)
/// and how many metres north of the scene or the door. Known holes:
/// - 张三 records 0–20 and 32–52 at the scene and 97–107 at the door: hole 20–32.
/// - 李四 records 0–16 and 36–52 at the scene and 96–106 at the door: hole 16–36.
/// - 王五 records 5–15 at the scene, though not part of the inspection, and 99–109 900 m from the
///   door, outside its radius, while serving.
const RECORDINGS: [(&str, u64, u64, Near); 8] = [
    ("0710001", 0, 20, Near::Scene(30.0)),
    ("0710001", 32, 20, Near::Scene(30.0)),
    ("0710001", 97, 10, Near::Door(30.0)),
    ("0710002", 0, 16, Near::Scene(100.0)),
    ("0710002", 36, 16, Near::Scene(100.0)),
    ("0710002", 96, 10, Near::Door(150.0)),
    ("0710003", 5, 10, Near::Scene(0.0)),
    ("0710003", 99, 10, Near::Door(900.0)),
];

/// Where a recording was made: metres due north of the scene or of the door.
#[derive(Debug, Clone, Copy)]
enum Near {
    Scene(f64),
    Door(f64),
}

impl Near {
    fn point(self) -> (f64, f64) {
        let ((lat, lon), metres) = match self {
            Near::Scene(m) => (SCENE, m),
            Near::Door(m) => (DOOR, m),
        };
        (lat + metres / 111_195.0, lon)
    }
}

/// One officer with the recorder they checked out, and what it recorded: `(at, length, where)` in
/// seconds into the shift, each recording split into `SEGMENT` files.
struct Officer {
    badge: &'static str,
    name: &'static str,
    device: &'static str,
    /// Seconds the recorder's clock is ahead of true time.
    drift_s: i64,
    recordings: Vec<(u64, u64, (f64, f64))>,
}

fn officers() -> [Officer; 3] {
    OFFICERS.map(|(badge, name, device, drift_s)| Officer {
        badge,
        name,
        device,
        drift_s,
        recordings: RECORDINGS
            .iter()
            .filter(|r| r.0 == badge)
            .map(|&(_, at, len, near)| (at, len, near.point()))
            .collect(),
    })
}

/// The server, the station and the people of one run.
struct Rig {
    dir: tempfile::TempDir,
    server: ServerProcess,
    station_config: PathBuf,
    station_log: PathBuf,
    slots: PathBuf,
    /// An administrator: the officer registry and the check-out register.
    admin: reqwest::Client,
    /// The case handler (办案人员) who builds the case.
    handler: reqwest::Client,
    /// An auditor, who reads all evidence, to watch the offload and the media probe.
    reader: reqwest::Client,
    /// The shift's true start, Unix seconds.
    start: i64,
}

impl Drop for Rig {
    fn drop(&mut self) {
        common::keep_if_failed(&mut self.dir);
    }
}

impl Rig {
    async fn new(real: bool) -> Self {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let config = dir.path().join("custody.toml");
        std::fs::write(
            &config,
            format!("coverage_min_gap = \"{MIN_GAP}\"\nmedia_poll = \"200ms\"\n"),
        )
        .unwrap();
        let mut args: Vec<String> = vec![
            "--config".into(),
            config.display().to_string(),
            "--ledger-batch-interval".into(),
            "20ms".into(),
        ];
        if real {
            args.extend(common::real_backend_args(dir.path(), "coverage-e2e").await);
        }
        let data_dir = dir.path().join("data");
        let server = ServerProcess::spawn(&sibling_binary().unwrap(), &data_dir, &args).unwrap();
        let credential_file = dir.path().join("credential");
        std::fs::write(&credential_file, server.add_station("ST-07").unwrap()).unwrap();
        let token =
            |name: &str, roles: &str| common::authed(&server.user_token(name, roles).unwrap());
        let (admin, handler, reader) = (
            token("admin", "admin"),
            token("handler", "case_handler"),
            token("reader", "auditor"),
        );
        let slots = dir.path().join("slots");
        for i in 1..=officers().len() {
            std::fs::create_dir_all(slots.join(format!("{i:02}"))).unwrap();
        }
        let station_config = dir.path().join("station.toml");
        StationSetup {
            station_id: "ST-07".into(),
            credential_file,
            server: format!("http://{}", server.addrs.grpc),
            ledger_key: data_dir.join("keys/ledger.pub"),
            slots_dir: slots.clone(),
            journal: dir.path().join("station/journal.db"),
            mqtt_url: None,
            extra: Vec::new(),
        }
        .write(&station_config);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        Self {
            station_log: dir.path().join("station.log"),
            station_config,
            slots,
            admin,
            handler,
            reader,
            // The shift ended more than an hour ago; the officer docks after the paperwork.
            start: now - 2 * 3600,
            server,
            dir,
        }
    }

    fn api(&self, path: &str) -> String {
        format!("http://{}/api/v1{path}", self.server.addrs.http)
    }

    /// An instant `s` seconds into the shift, as the API writes it.
    fn at(&self, s: i64) -> String {
        Timestamp::from_unix_micros((self.start + s) * 1_000_000).to_string()
    }

    /// Seconds into the shift of an instant the API wrote.
    fn offset_of(&self, t: &Value) -> f64 {
        let t = Timestamp::parse_rfc3339(t.as_str().unwrap()).unwrap();
        (t.unix_micros() - self.start * 1_000_000) as f64 / 1e6
    }

    /// The officers in the registry, each holding their recorder from before the shift (领用).
    async fn check_out_recorders(&self) {
        for o in officers() {
            let officer = json!({"name": o.name, "unit": "福田大队"});
            let (s, b) = answer(
                self.admin
                    .put(self.api(&format!("/officers/{}", o.badge)))
                    .json(&officer),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{b}");
            let checkout = json!({"badge": o.badge, "at": self.at(-600)});
            let (s, b) = answer(
                self.admin
                    .post(self.api(&format!("/recorders/{}/checkout", o.device)))
                    .json(&checkout),
            )
            .await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
        }
    }

    /// Each officer's recorder as `custody-sim` writes it, outside the slots.
    async fn make_recorders(&self) -> Vec<(PathBuf, Manifest)> {
        let mut made = Vec::new();
        for (i, o) in officers().into_iter().enumerate() {
            let staged = self.dir.path().join(format!("recorder-{i}"));
            let specs: Vec<RecordingSpec> = o
                .recordings
                .iter()
                .map(|&(at_s, len_s, (lat, lon))| RecordingSpec {
                    at_s,
                    len_s,
                    location: Some(EmbeddedLocation {
                        lat,
                        lon,
                        alt: None,
                    }),
                })
                .collect();
            let mut args = RecorderArgs::scripted(&staged, &specs).unwrap();
            args.device = Some(DeviceId::parse(o.device).unwrap());
            args.badge = Some(BadgeNo::parse(o.badge).unwrap());
            args.name = Some(o.name.into());
            args.start = Some(Timestamp::from_unix_micros(self.start * 1_000_000));
            args.clock_drift = o.drift_s;
            args.segment = SEGMENT.parse().unwrap();
            // H.264 plays in browsers: the media jobs probe it and need no proxy, so the test is quick.
            args.codec = CodecChoice::H264;
            args.resolution = "640x360".parse().unwrap();
            args.video_bitrate = "1M".parse().unwrap();
            args.clip_cache = Some(std::env::temp_dir().join("custody-test-clips"));
            args.seed = Some(7100 + i as u64);
            args.quiet = true;
            let manifest = tokio::task::spawn_blocking(move || make_recorder(&args))
                .await
                .unwrap()
                .unwrap();
            made.push((staged, manifest));
        }
        made
    }

    /// Starts the agent, then docks each recorder with its clock wound to now plus its drift (a live
    /// recorder's clock, as the station reads it when it docks).
    async fn dock_all(&self, recorders: &[(PathBuf, Manifest)]) -> StationProcess {
        let station = StationProcess::spawn(&self.station_config, &self.station_log);
        for (i, (staged, m)) in recorders.iter().enumerate() {
            let (mount, drift) = (staged.clone(), m.clock_drift_s);
            tokio::task::spawn_blocking(move || wind_clock(&mount, drift))
                .await
                .unwrap()
                .unwrap();
            dock(staged, &self.slots.join(format!("{:02}", i + 1)));
        }
        station
    }

    /// Waits until the server holds every file of every recorder, probed, and returns the evidence
    /// items by SHA-256.
    async fn offloaded_and_probed(
        &self,
        recorders: &[(PathBuf, Manifest)],
    ) -> HashMap<String, Value> {
        let want: usize = recorders.iter().map(|(_, m)| m.files.len()).sum();
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let mut ready = HashMap::new();
            for (_, m) in recorders {
                let url = format!("/evidence?device={}&limit=1000", m.device.device_id);
                let (s, page) = answer(self.reader.get(self.api(&url))).await;
                assert_eq!(s, StatusCode::OK, "{page}");
                for e in page["items"].as_array().unwrap() {
                    assert_ne!(e["media"]["state"], "failed", "the probe failed: {e}");
                    if e["media"]["state"] == "ready" {
                        ready.insert(e["sha256"].as_str().unwrap().to_string(), e.clone());
                    }
                }
            }
            if ready.len() == want {
                return ready;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {want} files offloaded and probed in 240 s; agent log:\n{}",
                ready.len(),
                tail(&self.station_log)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        answer(self.handler.post(self.api(path)).json(&body)).await
    }

    /// Asserts that moving `case` to review (审核) is refused for `gaps` unexplained gaps, and returns
    /// the refusal's message.
    async fn review_refused(&self, case: &str, gaps: usize) -> String {
        let (s, b) = self
            .post(
                &format!("/cases/{case}/status"),
                json!({"status": "review"}),
            )
            .await;
        assert_eq!(s, StatusCode::CONFLICT, "{b}");
        let why = b["error"]["message"].as_str().unwrap().to_string();
        assert!(
            why.contains(&format!("{gaps} unexplained recording gap(s)")),
            "{why}"
        );
        why
    }

    async fn coverage(&self, case: &str) -> Value {
        let url = self.api(&format!("/cases/{case}/coverage"));
        let (s, cov) = answer(self.handler.get(url)).await;
        assert_eq!(s, StatusCode::OK, "{cov}");
        cov
    }

    /// The gaps of officer `badge` at step `step` of `cov`, in seconds into the shift, and whether each
    /// is explained.
    fn gaps(&self, cov: &Value, step: usize, badge: &str) -> Vec<(f64, f64, bool)> {
        let officer = cov["steps"][step]["officers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["officer"] == badge)
            .unwrap_or_else(|| panic!("no officer {badge} at step {step}: {cov}"));
        officer["gaps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    self.offset_of(&g["interval"]["start"]),
                    self.offset_of(&g["interval"]["end"]),
                    g["explained"].as_bool().unwrap(),
                )
            })
            .collect()
    }

    /// Asserts that officer `badge`'s gaps at `step` are exactly `holes` (seconds into the shift, within
    /// the tolerance), explained or not as `explained` says.
    fn assert_gaps(
        &self,
        cov: &Value,
        step: usize,
        badge: &str,
        holes: &[(i64, i64)],
        explained: bool,
    ) {
        let got = self.gaps(cov, step, badge);
        let near = |a: f64, b: i64| (a - b as f64).abs() <= TOLERANCE_S;
        assert!(
            got.len() == holes.len()
                && got
                    .iter()
                    .zip(holes)
                    .all(|(g, h)| near(g.0, h.0) && near(g.1, h.1) && g.2 == explained),
            "officer {badge} at step {step}: gaps {got:?}, expected {holes:?} (explained: {explained}) within {TOLERANCE_S} s; report: {cov}"
        );
    }
}

/// The evidence ids of one recorder's recordings, by `(at, file index within the recording)`: the
/// files in capture order, as `custody-sim` planned them.
fn ids_of(m: &Manifest, items: &HashMap<String, Value>) -> Vec<String> {
    m.files
        .iter()
        .map(|f| {
            items[&f.sha256.to_hex()]["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// The suggestions of step `step`: evidence id, officer, gap filled (s) and distance from the place (m).
fn suggestions(cov: &Value, step: usize) -> Vec<(String, String, f64, Option<f64>)> {
    cov["steps"][step]["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["evidence_id"].as_str().unwrap().to_string(),
                s["officer"].as_str().unwrap().to_string(),
                s["fills_gap_us"].as_i64().unwrap() as f64 / 1e6,
                s["distance_m"].as_f64(),
            )
        })
        .collect()
}

/// Metres from `place` to `at`. The server reads a recording's place back at about 10 m precision
/// (four decimals of ISO 6709, from the MP4's `loci` box).
fn distance(place: (f64, f64), at: (f64, f64)) -> f64 {
    haversine_m(place.0, place.1, at.0, at.1)
}

async fn coverage_of_a_simulated_shift(real: bool) {
    let rig = Rig::new(real).await;
    rig.check_out_recorders().await;
    let recorders = rig.make_recorders().await;
    let station = rig.dock_all(&recorders).await;
    let items = rig.offloaded_and_probed(&recorders).await;
    let [zhang, li, wang] = officers();

    // Every file is attributed by the register, and the station measured each recorder's clock: the
    // names carry the recorder's time, so 张三's footage claims to start 137 s late and 李四's 95 s
    // early, which would put 张三's first recording wholly outside the inspection.
    for ((_, m), o) in recorders.iter().zip([&zhang, &li, &wang]) {
        for f in &m.files {
            let e = &items[&f.sha256.to_hex()];
            assert_eq!(e["attribution"]["officer"], o.badge, "{e}");
            assert_eq!(e["attribution"]["source"], "checkout", "{e}");
            assert_eq!(e["attribution"]["conflict"], false, "{e}");
            assert_eq!(
                rig.offset_of(&e["captured_at"]),
                rig.offset_of(&json!(f.true_captured_at.to_string())) + o.drift_s as f64,
                "{e}"
            );
            let offset_ms = e["attribution"]["clock_offset_ms"].as_i64().unwrap();
            assert!(
                (offset_ms - o.drift_s * 1000).abs() <= (TOLERANCE_S * 1000.0) as i64,
                "the station measured {offset_ms} ms for a clock {} s off: {e}",
                o.drift_s
            );
        }
    }
    // 张三: 0–10, 10–20 | 32–42, 42–52 | 97–107; 李四: 0–10, 10–16 | 36–46, 46–52 | 96–106;
    // 王五: 5–15 | 99–109.
    let (a, b, c) = (
        ids_of(&recorders[0].1, &items),
        ids_of(&recorders[1].1, &items),
        ids_of(&recorders[2].1, &items),
    );
    assert_eq!((a.len(), b.len(), c.len()), (5, 5, 2));

    // The case, and its two steps that need continuous recording.
    let (s, case) = rig
        .post(
            "/cases",
            json!({"case_no": "深福城执罚〔2026〕107号", "title": "占道经营", "procedure": "general"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{case}");
    let case = case["id"].as_str().unwrap().to_string();
    for to in ["filed", "investigating"] {
        let (s, b) = rig
            .post(&format!("/cases/{case}/status"), json!({"status": to}))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let mut steps = Vec::new();
    for (title, (from, to), (lat, lon), radius_m, present) in [
        (
            "现场检查",
            INSPECTION,
            SCENE,
            SCENE_RADIUS_M,
            vec![zhang.badge, li.badge],
        ),
        (
            "送达",
            SERVING,
            DOOR,
            DOOR_RADIUS_M,
            vec![zhang.badge, li.badge, wang.badge],
        ),
    ] {
        let (s, step) = rig
            .post(
                &format!("/cases/{case}/steps"),
                json!({
                    "title": title, "from": rig.at(from), "to": rig.at(to), "officers": present,
                    "continuous": true,
                    "place": {"name": title, "lat": lat, "lon": lon, "radius_m": radius_m},
                }),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{step}");
        steps.push(step["id"].as_str().unwrap().to_string());
    }
    let link = |id: &String, step: usize| {
        let body = json!({"evidence_id": id, "step_id": steps[step], "role": "现场执法"});
        let path = format!("/cases/{case}/links");
        let rig = &rig;
        async move {
            let (s, b) = rig.post(&path, body).await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
        }
    };

    // The handler links part of the inspection: 张三's 0–10 and 32–52, 李四's 0–16 and 36–46.
    for id in [&a[0], &a[2], &a[3], &b[0], &b[1], &b[2]] {
        link(id, 0).await;
    }

    // Coverage finds what is not linked yet, per officer: 张三 10–32 (an unlinked file, then a hole),
    // 李四 16–36 (a hole) and 46–50 (an unlinked file up to the end of the step); at the door, everyone.
    let cov = rig.coverage(&case).await;
    rig.assert_gaps(&cov, 0, zhang.badge, &[(10, 32)], false);
    rig.assert_gaps(&cov, 0, li.badge, &[(16, 36), (46, 50)], false);
    for o in [&zhang, &li, &wang] {
        rig.assert_gaps(&cov, 1, o.badge, &[SERVING], false);
    }
    assert_eq!(cov["blocking_gaps"], 6, "{cov}");
    // It suggests the unlinked files that fill those gaps, most filled first: 张三's 10–20 (10 s), then
    // 李四's 46–52 (4 s). Not 王五's footage at the scene: he was not part of the inspection.
    let inspection = suggestions(&cov, 0);
    let ids: Vec<&str> = inspection.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(ids, [a[1].as_str(), b[3].as_str()], "{cov}");
    assert!((inspection[0].2 - 10.0).abs() <= TOLERANCE_S, "{cov}");
    assert!((inspection[1].2 - 4.0).abs() <= TOLERANCE_S, "{cov}");
    // At the door both 张三's and 李四's recordings cover the whole step, so they fill as much: the nearer
    // (张三's, 30 m) comes first although 李四's (150 m) started earlier. 王五's was made 900 m away,
    // outside the place, and is not suggested.
    let serving = suggestions(&cov, 1);
    let ids: Vec<&str> = serving.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(ids, [a[4].as_str(), b[4].as_str()], "{cov}");
    let whole_step = (SERVING.1 - SERVING.0) as f64;
    assert_eq!(
        (serving[0].2, serving[1].2),
        (whole_step, whole_step),
        "{cov}"
    );
    for (s, (_, _, at)) in serving
        .iter()
        .zip([&zhang.recordings[2], &li.recordings[2]])
    {
        let d =
            s.3.unwrap_or_else(|| panic!("no distance for {s:?}: {cov}"));
        let want = distance(DOOR, *at);
        assert!(
            (d - want).abs() < 15.0,
            "distance {d} m, expected {want} m: {cov}"
        );
    }
    for s in &inspection {
        assert!(s.3.is_some_and(|d| d < SCENE_RADIUS_M), "{s:?}: {cov}");
    }

    // Review (审核) is refused while gaps are unexplained, and the refusal lists each one.
    let why = rig.review_refused(&case, 6).await;
    for (step, badge, n) in [
        ("现场检查", zhang.badge, 1),
        ("现场检查", li.badge, 2),
        ("现场检查", wang.badge, 0),
        ("送达", zhang.badge, 1),
        ("送达", li.badge, 1),
        ("送达", wang.badge, 1),
    ] {
        let listed = why
            .matches(&format!("step \"{step}\", officer {badge}: "))
            .count();
        assert_eq!(listed, n, "{step} / {badge}: {why}");
    }

    // Linking the suggestions leaves exactly the holes the recorders really have, and nothing more to
    // suggest.
    for (id, step) in [(&a[1], 0), (&b[3], 0), (&a[4], 1), (&b[4], 1)] {
        link(id, step).await;
    }
    let cov = rig.coverage(&case).await;
    rig.assert_gaps(&cov, 0, zhang.badge, &[(20, 32)], false);
    rig.assert_gaps(&cov, 0, li.badge, &[(16, 36)], false);
    rig.assert_gaps(&cov, 1, zhang.badge, &[], false);
    rig.assert_gaps(&cov, 1, li.badge, &[], false);
    rig.assert_gaps(&cov, 1, wang.badge, &[SERVING], false);
    assert_eq!(cov["blocking_gaps"], 3, "{cov}");
    assert!(suggestions(&cov, 0).is_empty(), "{cov}");
    assert!(suggestions(&cov, 1).is_empty(), "{cov}");
    rig.review_refused(&case, 3).await;

    // The officers explain the rest on the record; then the case goes to review.
    for (step, badge, (from, to), reason) in [
        (
            0,
            zhang.badge,
            (19, 33),
            "记录仪电量耗尽，更换电池后恢复录像",
        ),
        (0, li.badge, (15, 37), "协助处置突发情况，暂停录像"),
        (
            1,
            wang.badge,
            (SERVING.0 - 1, SERVING.1 + 1),
            "记录仪遗留在执法车内",
        ),
    ] {
        let (s, x) = rig
            .post(
                &format!("/cases/{case}/steps/{}/explanations", steps[step]),
                json!({"badge": badge, "from": rig.at(from), "to": rig.at(to), "reason": reason}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{x}");
    }
    let cov = rig.coverage(&case).await;
    rig.assert_gaps(&cov, 0, zhang.badge, &[(20, 32)], true);
    rig.assert_gaps(&cov, 0, li.badge, &[(16, 36)], true);
    rig.assert_gaps(&cov, 1, wang.badge, &[SERVING], true);
    assert_eq!(cov["blocking_gaps"], 0, "{cov}");
    let (s, b) = rig
        .post(
            &format!("/cases/{case}/status"),
            json!({"status": "review", "note": "提交法制审核"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "review", "{b}");

    assert!(
        station.stop().success(),
        "the agent stops cleanly on SIGTERM"
    );
    let errors = common::station::log_lines(&rig.station_log, "ERROR", "");
    assert!(errors.is_empty(), "agent errors: {errors:?}");
}

#[tokio::test]
async fn coverage_of_simulated_shifts_finds_exactly_the_known_holes_and_suggests_the_footage_that_fills_them_on_sqlite_and_disk()
 {
    coverage_of_a_simulated_shift(false).await;
}

#[tokio::test]
async fn coverage_of_simulated_shifts_finds_exactly_the_known_holes_and_suggests_the_footage_that_fills_them_on_postgres_and_s3()
 {
    coverage_of_a_simulated_shift(true).await;
}
