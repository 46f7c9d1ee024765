//! The command centre's telemetry routes: the live feed (WebSocket), latest positions and the nearest
//! officers, tracks as GeoJSON, alarms and their acknowledgement, geofences, and the HTTP auth/ACL
//! hooks an external MQTT broker (EMQX) calls.
//!
//! Coordinates are stored and accepted in WGS-84. Every route that returns or takes coordinates also
//! accepts `crs=gcj02` for Chinese base maps (AMap, Tencent), converting on the way out (and in).

use crate::{ApiError, ApiState};
use axum::Extension;
use axum::Json;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use custody_core::geo::{self, BBox};
use custody_core::live::{Alarm, FenceEvent, Geofence, LiveEvent};
use custody_core::track::{self, JitterOptions, StopOptions, TrackPoint};
use custody_core::{AlarmId, DeviceId, FenceId, Position, Timestamp};
use custody_mqtt::topics;
use custody_tracking::{LiveFilter, Nearby, Watched};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;

/// The coordinate system of a request's coordinates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Crs {
    #[default]
    Wgs84,
    Gcj02,
}

impl Crs {
    fn out(self, lat: f64, lon: f64) -> (f64, f64) {
        match self {
            Crs::Wgs84 => (lat, lon),
            Crs::Gcj02 => geo::wgs84_to_gcj02(lat, lon),
        }
    }

    fn into_wgs84(self, lat: f64, lon: f64) -> (f64, f64) {
        match self {
            Crs::Wgs84 => (lat, lon),
            Crs::Gcj02 => geo::gcj02_to_wgs84(lat, lon),
        }
    }

    fn position(self, mut p: Position) -> Position {
        (p.lat, p.lon) = self.out(p.lat, p.lon);
        p
    }

    fn name(self) -> &'static str {
        match self {
            Crs::Wgs84 => "wgs84",
            Crs::Gcj02 => "gcj02",
        }
    }
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::bad_request(m)
}

fn device(s: &str) -> Result<DeviceId, ApiError> {
    DeviceId::parse(s).map_err(|e| bad(e.to_string()))
}

fn time(name: &str, s: &str) -> Result<Timestamp, ApiError> {
    Timestamp::parse_rfc3339(s).map_err(|e| bad(format!("{name}: {e}")))
}

fn duration(name: &str, s: &str) -> Result<Duration, ApiError> {
    humantime::parse_duration(s).map_err(|e| {
        bad(format!(
            "{name}: expected a duration such as 90s or 10m, got {s:?}: {e}"
        ))
    })
}

/// `bbox=minLon,minLat,maxLon,maxLat` (GeoJSON order), in the request's CRS.
fn bbox(s: &str, crs: Crs) -> Result<BBox, ApiError> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            bad(format!(
                "bbox: expected minLon,minLat,maxLon,maxLat, got {s:?}"
            ))
        })?;
    let [min_lon, min_lat, max_lon, max_lat] = v[..] else {
        return Err(bad(format!(
            "bbox: expected 4 numbers minLon,minLat,maxLon,maxLat, got {s:?}"
        )));
    };
    let valid = min_lat <= max_lat
        && min_lon <= max_lon
        && (-90.0..=90.0).contains(&min_lat)
        && (-90.0..=90.0).contains(&max_lat)
        && (-180.0..=180.0).contains(&min_lon)
        && (-180.0..=180.0).contains(&max_lon);
    if !valid {
        return Err(bad(format!(
            "bbox: {s:?} is not a box of valid coordinates with min <= max"
        )));
    }
    let (a_lat, a_lon) = crs.into_wgs84(min_lat, min_lon);
    let (b_lat, b_lon) = crs.into_wgs84(max_lat, max_lon);
    Ok(BBox {
        min_lat: a_lat.min(b_lat),
        min_lon: a_lon.min(b_lon),
        max_lat: a_lat.max(b_lat),
        max_lon: a_lon.max(b_lon),
    })
}

// ---------------------------------------------------------------------------------------------- live

#[derive(Debug, Deserialize)]
pub(crate) struct LiveQuery {
    /// Comma-separated device ids; all when absent.
    devices: Option<String>,
    /// Only positions inside `minLon,minLat,maxLon,maxLat`.
    bbox: Option<String>,
    #[serde(default)]
    crs: Crs,
    /// Send the latest position of every matching device first (default true).
    snapshot: Option<bool>,
}

/// `GET /api/v1/live` (WebSocket): a JSON text message per event: `{"type":"position",...}`,
/// `alarm`, `status`, `fence`, and `{"type":"lagged","missed":N}` when this client read too slowly
/// and lost N events. The first message is `{"type":"snapshot","positions":[...]}` unless
/// `snapshot=false`.
pub(crate) async fn live(
    State(s): State<ApiState>,
    Extension(actor): Extension<crate::auth::Actor>,
    Query(q): Query<LiveQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    actor
        .require(
            &s,
            custody_core::access::Capability::ReadCommandCentre,
            "live.watch",
        )
        .await?;
    let devices = q
        .devices
        .as_deref()
        .filter(|d| !d.is_empty())
        .map(|d| d.split(',').map(device).collect::<Result<_, _>>())
        .transpose()?;
    let area = q.bbox.as_deref().map(|b| bbox(b, q.crs)).transpose()?;
    let filter = LiveFilter { devices, area };
    // Subscribe before the snapshot, so nothing falls between the two.
    let watcher = s.tracking.hub().watch(filter.clone());
    let snapshot = q.snapshot.unwrap_or(true).then(|| {
        s.tracking
            .latest(filter.area.as_ref(), None)
            .into_iter()
            .filter(|p| {
                filter
                    .devices
                    .as_ref()
                    .is_none_or(|d| d.contains(&p.device))
            })
            .map(|p| q.crs.position(p))
            .collect::<Vec<_>>()
    });
    let metrics = s.tracking.metrics().clone();
    let crs = q.crs;
    Ok(ws.on_upgrade(move |socket| feed(socket, watcher, snapshot, crs, metrics)))
}

fn event_json(e: &LiveEvent, crs: Crs) -> String {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if crs != Crs::Wgs84 {
        convert_coords(&mut v, crs);
        v["crs"] = crs.name().into();
    }
    v.to_string()
}

/// Converts the `lat`/`lon` pair of a live event's JSON.
fn convert_coords(v: &mut Value, crs: Crs) {
    if let (Some(lat), Some(lon)) = (v["lat"].as_f64(), v["lon"].as_f64()) {
        let (lat, lon) = crs.out(lat, lon);
        v["lat"] = lat.into();
        v["lon"] = lon.into();
    }
}

async fn feed(
    mut socket: WebSocket,
    mut watcher: custody_tracking::Watcher,
    snapshot: Option<Vec<Position>>,
    crs: Crs,
    metrics: custody_tracking::TrackingMetrics,
) {
    if let Some(positions) = snapshot {
        let msg =
            json!({"type": "snapshot", "crs": crs.name(), "positions": positions}).to_string();
        if socket.send(Message::Text(msg.into())).await.is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            w = watcher.next() => {
                let text = match w {
                    None => return,
                    Some(Watched::Event(e)) => event_json(&e, crs),
                    Some(Watched::Lagged(n)) => {
                        metrics.live_lagged.inc_by(n);
                        tracing::debug!(missed = n, "live client lagged");
                        json!({"type": "lagged", "missed": n}).to_string()
                    }
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            m = socket.recv() => match m {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {} // pings are answered by axum; anything else is ignored
            }
        }
    }
}

// ------------------------------------------------------------------------------- latest and nearest

#[derive(Debug, Deserialize)]
pub(crate) struct LatestQuery {
    bbox: Option<String>,
    /// Only fixes newer than this (e.g. `10m`).
    max_age: Option<String>,
    #[serde(default)]
    crs: Crs,
}

#[derive(Debug, Serialize)]
pub(crate) struct LatestJson {
    crs: &'static str,
    count: usize,
    items: Vec<Position>,
}

/// `GET /api/v1/positions/latest`: the newest fix of every device.
pub(crate) async fn latest(
    State(s): State<ApiState>,
    Extension(actor): Extension<crate::auth::Actor>,
    Query(q): Query<LatestQuery>,
) -> Result<Json<LatestJson>, ApiError> {
    actor
        .require(
            &s,
            custody_core::access::Capability::ReadCommandCentre,
            "positions.read",
        )
        .await?;
    let area = q.bbox.as_deref().map(|b| bbox(b, q.crs)).transpose()?;
    let max_age = q
        .max_age
        .as_deref()
        .map(|a| duration("max_age", a))
        .transpose()?;
    let items: Vec<Position> = s
        .tracking
        .latest(area.as_ref(), max_age)
        .into_iter()
        .map(|p| q.crs.position(p))
        .collect();
    Ok(Json(LatestJson {
        crs: q.crs.name(),
        count: items.len(),
        items,
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct NearestQuery {
    lat: f64,
    lon: f64,
    /// How many (1 to 1000, default 5).
    n: Option<usize>,
    /// Skip devices whose newest fix is older than this (default 10m).
    max_age: Option<String>,
    #[serde(default)]
    crs: Crs,
}

#[derive(Debug, Serialize)]
pub(crate) struct NearestJson {
    crs: &'static str,
    items: Vec<Nearby>,
}

/// `GET /api/v1/officers/nearest?lat=&lon=&n=`: the devices nearest to a point, nearest first, with
/// their great-circle distance in metres.
pub(crate) async fn nearest(
    State(s): State<ApiState>,
    Extension(actor): Extension<crate::auth::Actor>,
    Query(q): Query<NearestQuery>,
) -> Result<Json<NearestJson>, ApiError> {
    actor
        .require(
            &s,
            custody_core::access::Capability::ReadCommandCentre,
            "positions.read",
        )
        .await?;
    if !(-90.0..=90.0).contains(&q.lat) || !(-180.0..=180.0).contains(&q.lon) {
        return Err(bad(format!(
            "lat/lon: ({}, {}) is not a valid point",
            q.lat, q.lon
        )));
    }
    let n = q.n.unwrap_or(5);
    if !(1..=1000).contains(&n) {
        return Err(bad(format!("n: must be between 1 and 1000, got {n}")));
    }
    let max_age = duration("max_age", q.max_age.as_deref().unwrap_or("10m"))?;
    let (lat, lon) = q.crs.into_wgs84(q.lat, q.lon);
    let items = s
        .tracking
        .nearest(lat, lon, n, Some(max_age))
        .into_iter()
        .map(|mut x| {
            x.position = q.crs.position(x.position);
            x
        })
        .collect();
    Ok(Json(NearestJson {
        crs: q.crs.name(),
        items,
    }))
}

// ------------------------------------------------------------------------------------------- tracks

#[derive(Debug, Deserialize)]
pub(crate) struct TrackQuery {
    from: String,
    to: String,
    /// Douglas–Peucker tolerance in metres (0 or absent: every point).
    simplify: Option<f64>,
    /// Drop GPS jitter (inaccurate fixes and moves under 5 m) before measuring (default true).
    jitter: Option<bool>,
    /// Stop detection: radius in metres (default 30) and minimum duration (default 2m).
    stop_radius: Option<f64>,
    stop_min: Option<String>,
    /// Most fixes read (default and maximum 200 000).
    limit: Option<u32>,
    #[serde(default)]
    crs: Crs,
}

const TRACK_MAX: u32 = 200_000;

/// `GET /api/v1/devices/{id}/track?from=&to=`: a GeoJSON FeatureCollection with the track as a
/// LineString (properties: distance travelled in metres — patrol mileage 巡查里程 —, point counts,
/// fix times) and each stop as a Point.
pub(crate) async fn track(
    State(s): State<ApiState>,
    Extension(actor): Extension<crate::auth::Actor>,
    Path(id): Path<String>,
    Query(q): Query<TrackQuery>,
) -> Result<Json<Value>, ApiError> {
    actor
        .require(
            &s,
            custody_core::access::Capability::ReadCommandCentre,
            "track.read",
        )
        .await?;
    let dev = device(&id)?;
    let from = time("from", &q.from)?;
    let to = time("to", &q.to)?;
    let limit = q.limit.unwrap_or(TRACK_MAX);
    if !(1..=TRACK_MAX).contains(&limit) {
        return Err(bad(format!(
            "limit: must be between 1 and {TRACK_MAX}, got {limit}"
        )));
    }
    let tolerance = q.simplify.unwrap_or(0.0);
    if !tolerance.is_finite() || tolerance < 0.0 {
        return Err(bad("simplify: must be a tolerance in metres, 0 or more"));
    }
    let stop_opts = StopOptions {
        radius_m: q.stop_radius.unwrap_or(StopOptions::default().radius_m),
        min_duration: match q.stop_min.as_deref() {
            Some(d) => duration("stop_min", d)?,
            None => StopOptions::default().min_duration,
        },
    };
    let fixes = s.tracking.track(&dev, from, to, limit).await?;
    let raw: Vec<TrackPoint> = fixes
        .iter()
        .map(|p| TrackPoint {
            t: p.time,
            lat: p.lat,
            lon: p.lon,
            accuracy_m: p.accuracy_m,
            speed_mps: p.speed_mps,
        })
        .collect();
    let filtered = if q.jitter.unwrap_or(true) {
        track::filter_jitter(&raw, &JitterOptions::default())
    } else {
        raw.clone()
    };
    let distance_m = track::distance_m(&filtered);
    let stops = track::stops(&filtered, &stop_opts);
    let shown = track::simplify(&filtered, tolerance);
    let coord = |lat: f64, lon: f64| {
        let (lat, lon) = q.crs.out(lat, lon);
        json!([lon, lat])
    };
    let mut features = vec![json!({
        "type": "Feature",
        "geometry": {
            "type": "LineString",
            "coordinates": shown.iter().map(|p| coord(p.lat, p.lon)).collect::<Vec<_>>(),
        },
        "properties": {
            "kind": "track",
            "device_id": dev,
            "from": from,
            "to": to,
            "crs": q.crs.name(),
            "distance_m": distance_m,
            "points_stored": raw.len(),
            "points_after_jitter": filtered.len(),
            "points": shown.len(),
            "truncated": raw.len() as u32 >= limit,
            "times": shown.iter().map(|p| p.t).collect::<Vec<_>>(),
        },
    })];
    for st in &stops {
        features.push(json!({
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": coord(st.lat, st.lon)},
            "properties": {
                "kind": "stop",
                "start": st.start,
                "end": st.end,
                "duration_s": (st.end.unix_micros() - st.start.unix_micros()) as f64 / 1e6,
                "points": st.points,
            },
        }));
    }
    Ok(Json(
        json!({"type": "FeatureCollection", "features": features}),
    ))
}

// ------------------------------------------------------------------------------------------- alarms

#[derive(Debug, Deserialize)]
pub(crate) struct AlarmsQuery {
    /// Only unacknowledged alarms (default false).
    open: Option<bool>,
    device_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
    #[serde(default)]
    crs: Crs,
}

#[derive(Debug, Serialize)]
pub(crate) struct AlarmsJson {
    items: Vec<Alarm>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

fn alarm_out(mut a: Alarm, crs: Crs) -> Alarm {
    if let (Some(lat), Some(lon)) = (a.lat, a.lon) {
        let (lat, lon) = crs.out(lat, lon);
        (a.lat, a.lon) = (Some(lat), Some(lon));
    }
    a
}

/// `GET /api/v1/alarms`: newest first, paged.
pub(crate) async fn alarms(
    State(s): State<ApiState>,
    Extension(actor): Extension<crate::auth::Actor>,
    Query(q): Query<AlarmsQuery>,
) -> Result<Json<AlarmsJson>, ApiError> {
    actor
        .require(
            &s,
            custody_core::access::Capability::ReadCommandCentre,
            "alarm.read",
        )
        .await?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(bad(format!(
            "limit: must be between 1 and 1000, got {limit}"
        )));
    }
    let dev = q.device_id.as_deref().map(device).transpose()?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| {
            let bad_cursor = || {
                bad(format!(
                    "cursor: expected a next_cursor of a previous page, got {c:?}"
                ))
            };
            let (t, id) = c.split_once('_').ok_or_else(bad_cursor)?;
            Ok::<_, ApiError>(custody_store_cursor(
                t.parse().map_err(|_| bad_cursor())?,
                AlarmId::parse(id).map_err(|_| bad_cursor())?,
            ))
        })
        .transpose()?;
    let mut items = s
        .tracking
        .list_alarms(q.open.unwrap_or(false), dev.as_ref(), after, limit + 1)
        .await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items
            .last()
            .map(|a| format!("{}_{}", a.raised_at.unix_micros(), a.id))
    } else {
        None
    };
    Ok(Json(AlarmsJson {
        items: items.into_iter().map(|a| alarm_out(a, q.crs)).collect(),
        next_cursor,
    }))
}

fn custody_store_cursor(t: i64, id: AlarmId) -> custody_tracking::AlarmCursor {
    custody_tracking::AlarmCursor {
        raised_at: Timestamp::from_unix_micros(t),
        id,
    }
}

pub(crate) async fn alarm(
    State(s): State<ApiState>,
    Extension(actor): Extension<crate::auth::Actor>,
    Path(id): Path<String>,
) -> Result<Json<Alarm>, ApiError> {
    actor
        .require(
            &s,
            custody_core::access::Capability::ReadCommandCentre,
            "alarm.read",
        )
        .await?;
    let id = AlarmId::parse(&id).map_err(|e| bad(e.to_string()))?;
    Ok(Json(s.tracking.get_alarm(&id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AckBody {
    #[serde(default)]
    note: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct AckJson {
    alarm: Alarm,
    /// False when it had already been acknowledged; the first acknowledgement stands.
    first: bool,
    /// Whether the acknowledgement went out on the device's command topic.
    sent_to_device: bool,
}

/// `POST /api/v1/alarms/{id}/ack` with `{"by": "...", "note": "..."}`.
pub(crate) async fn ack(
    State(s): State<ApiState>,
    Extension(actor): Extension<crate::auth::Actor>,
    Path(id): Path<String>,
    body: Result<Json<AckBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<AckJson>, ApiError> {
    actor
        .require(
            &s,
            custody_core::access::Capability::DirectCommandCentre,
            "alarm.ack",
        )
        .await?;
    let Json(body) = body.map_err(|e| bad(format!("body: {}", e.body_text())))?;
    let id = AlarmId::parse(&id).map_err(|e| bad(e.to_string()))?;
    // The acknowledgement names the logged-in operator.
    let a = s
        .tracking
        .ack_alarm(&id, actor.user().username.as_str(), &body.note)
        .await?;
    Ok(Json(AckJson {
        alarm: a.alarm,
        first: a.first,
        sent_to_device: a.sent_to_device,
    }))
}

// ---------------------------------------------------------------------------------------- geofences

#[derive(Debug, Deserialize)]
pub(crate) struct CrsQuery {
    #[serde(default)]
    crs: Crs,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FenceBody {
    name: String,
    #[serde(default)]
    kind: String,
    /// A GeoJSON Polygon; only its outer ring is used. Coordinates are `[lon, lat]`.
    geometry: Value,
    /// The CRS of `geometry` (default wgs84; gcj02 when drawn on a Chinese base map).
    #[serde(default)]
    crs: Crs,
}

fn fence_json(f: &Geofence, crs: Crs) -> Value {
    let mut ring: Vec<Value> = f
        .ring
        .iter()
        .map(|&(lat, lon)| {
            let (lat, lon) = crs.out(lat, lon);
            json!([lon, lat])
        })
        .collect();
    if let Some(first) = ring.first().cloned() {
        ring.push(first);
    }
    json!({
        "id": f.id,
        "name": f.name,
        "kind": f.kind,
        "created_at": f.created_at,
        "crs": crs.name(),
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    })
}

/// `GET /api/v1/geofences`.
pub(crate) async fn fences(
    State(s): State<ApiState>,
    Extension(actor): Extension<crate::auth::Actor>,
    Query(q): Query<CrsQuery>,
) -> Result<Json<Value>, ApiError> {
    actor
        .require(
            &s,
            custody_core::access::Capability::ReadCommandCentre,
            "geofence.read",
        )
        .await?;
    let items: Vec<Value> = s
        .tracking
        .geofences()
        .iter()
        .map(|f| fence_json(f, q.crs))
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// `POST /api/v1/geofences` with `{"name", "kind", "geometry": <GeoJSON Polygon>, "crs"}`.
pub(crate) async fn add_fence(
    State(s): State<ApiState>,
    Extension(actor): Extension<crate::auth::Actor>,
    body: Result<Json<FenceBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    actor
        .require(
            &s,
            custody_core::access::Capability::DirectCommandCentre,
            "geofence.write",
        )
        .await?;
    let Json(b) = body.map_err(|e| bad(format!("body: {}", e.body_text())))?;
    if b.geometry["type"] != "Polygon" {
        return Err(bad("geometry: must be a GeoJSON Polygon"));
    }
    let ring = b.geometry["coordinates"][0]
        .as_array()
        .ok_or_else(|| bad("geometry.coordinates: expected [[[lon, lat], ...]]"))?;
    let ring = ring
        .iter()
        .enumerate()
        .map(|(i, c)| match (c[0].as_f64(), c[1].as_f64()) {
            (Some(lon), Some(lat)) => Ok(b.crs.into_wgs84(lat, lon)),
            _ => Err(bad(format!(
                "geometry.coordinates[0][{i}]: expected [lon, lat]"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let f = s.tracking.add_geofence(&b.name, &b.kind, ring).await?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(fence_json(&f, Crs::Wgs84)),
    ))
}

/// `DELETE /api/v1/geofences/{id}`.
pub(crate) async fn delete_fence(
    State(s): State<ApiState>,
    Extension(actor): Extension<crate::auth::Actor>,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    actor
        .require(
            &s,
            custody_core::access::Capability::DirectCommandCentre,
            "geofence.write",
        )
        .await?;
    let id = FenceId::parse(&id).map_err(|e| bad(e.to_string()))?;
    s.tracking.delete_geofence(&id).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub(crate) struct FenceEventsQuery {
    device_id: Option<String>,
    from: String,
    to: String,
    limit: Option<u32>,
}

/// `GET /api/v1/geofences/events?from=&to=[&device_id=]`: enter and leave events, oldest first.
pub(crate) async fn fence_events(
    State(s): State<ApiState>,
    Extension(actor): Extension<crate::auth::Actor>,
    Query(q): Query<FenceEventsQuery>,
) -> Result<Json<Value>, ApiError> {
    actor
        .require(
            &s,
            custody_core::access::Capability::ReadCommandCentre,
            "geofence.read",
        )
        .await?;
    let dev = q.device_id.as_deref().map(device).transpose()?;
    let limit = q.limit.unwrap_or(10_000).clamp(1, 100_000);
    let items: Vec<FenceEvent> = s
        .tracking
        .meta()
        .fence_events(
            dev.as_ref(),
            time("from", &q.from)?,
            time("to", &q.to)?,
            limit,
        )
        .await?;
    Ok(Json(json!({ "items": items })))
}

// ------------------------------------------------------------------------------- MQTT broker hooks

#[derive(Debug, Deserialize)]
pub(crate) struct BrokerAuth {
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    clientid: String,
}

/// `POST /api/v1/mqtt/auth`: EMQX's HTTP authenticator. Answers `{"result":"allow"|"deny"}`:
/// stations and recorders log in with their credential (user = id, password = secret hex); the user
/// names in `mqtt_superusers` with the password of `mqtt_password_file` (Custody's own bridge) log in
/// as superusers.
pub(crate) async fn broker_auth(
    State(s): State<ApiState>,
    Json(req): Json<BrokerAuth>,
) -> Json<Value> {
    if s.mqtt_superusers.contains(&req.username) {
        let ok = s
            .mqtt_password
            .as_deref()
            .is_some_and(|p| constant_eq(p.as_bytes(), req.password.as_bytes()));
        if !ok {
            tracing::warn!(user = %req.username, client = %req.clientid, "mqtt superuser login refused");
        }
        return Json(if ok {
            json!({"result": "allow", "is_superuser": true})
        } else {
            json!({"result": "deny"})
        });
    }
    let principal = crate::mqtt_principal(&s, &req.username, &req.password).await;
    Json(match principal {
        Ok(_) => json!({"result": "allow", "is_superuser": false}),
        Err(e) => {
            tracing::info!(user = %req.username, client = %req.clientid, reason = %e, "mqtt login refused");
            json!({"result": "deny"})
        }
    })
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Deserialize)]
pub(crate) struct BrokerAcl {
    username: String,
    topic: String,
    /// `publish` or `subscribe`.
    action: String,
}

/// `POST /api/v1/mqtt/acl`: EMQX's HTTP authorizer. A station or recorder may publish only under its
/// own topics and subscribe only to its own cmd topic (the same rules as the embedded endpoint);
/// superusers may subscribe to anything and publish only cmd topics.
pub(crate) async fn broker_acl(
    State(s): State<ApiState>,
    Json(req): Json<BrokerAcl>,
) -> Json<Value> {
    let allow = if s.mqtt_superusers.contains(&req.username) {
        match req.action.as_str() {
            "subscribe" => true,
            "publish" => req.topic.starts_with("custody/v1/") && req.topic.ends_with("/cmd"),
            _ => false,
        }
    } else {
        match crate::mqtt_registered(&s, &req.username).await {
            Some(p) => match req.action.as_str() {
                "publish" => topics::may_publish(&p, &req.topic),
                "subscribe" => topics::may_subscribe(&p, &req.topic),
                _ => false,
            },
            None => false,
        }
    };
    if !allow {
        tracing::info!(user = %req.username, topic = %req.topic, action = %req.action, "mqtt topic access refused");
    }
    Json(json!({"result": if allow { "allow" } else { "deny" }}))
}
