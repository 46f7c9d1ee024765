//! The command centre's telemetry routes: the live feed (WebSocket), latest positions and the nearest
//! officers, tracks as GeoJSON, alarms and their acknowledgement, geofences, and the HTTP auth/ACL
//! hooks an external MQTT broker (EMQX) calls.
//!
//! Coordinates are stored and accepted in WGS-84. Every route that returns or takes coordinates also
//! accepts `crs=gcj02` for Chinese base maps (AMap, Tencent), converting on the way out (and in).

use crate::error::ErrorBody;
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
use utoipa::{IntoParams, ToSchema};

/// The coordinate system of a request's coordinates: `wgs84` (GNSS, the default) or `gcj02` (Chinese
/// base maps such as AMap and Tencent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LiveQuery {
    /// Comma-separated device ids; all when absent.
    devices: Option<String>,
    /// Only positions inside `minLon,minLat,maxLon,maxLat`.
    bbox: Option<String>,
    /// The CRS of `bbox` and of the coordinates sent.
    #[serde(default)]
    crs: Crs,
    /// Send the latest position of every matching device first (default true).
    snapshot: Option<bool>,
}

/// Live feed (WebSocket)
///
/// A WebSocket with a JSON text message per event: `{"type":"position",...}` (a `Position`),
/// `alarm` (an `Alarm`), `status` (a device's self-reported status), `fence` (a `FenceEvent` with
/// `fence_name`), and `{"type":"lagged","missed":N}` when this client read too slowly and lost N events.
/// The first message is `{"type":"snapshot","crs":...,"positions":[...]}` unless `snapshot=false`.
/// Commanders, auditors and admins.
#[utoipa::path(
    get,
    path = "/api/v1/live",
    tag = "telemetry",
    params(
        LiveQuery,
        ("access_token" = Option<String>, Query, description = "the session token, for browsers, which cannot set headers on a WebSocket; instead of `Authorization: Bearer`"),
    ),
    responses(
        (status = 101, description = "switching to the WebSocket protocol"),
        (status = 400, description = "a filter is malformed, or the request is not a WebSocket upgrade", body = ErrorBody),
        (status = 403, description = "the caller may not watch the command centre (audited)", body = ErrorBody),
    )
)]
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LatestQuery {
    /// Only devices inside `minLon,minLat,maxLon,maxLat` (in `crs`).
    bbox: Option<String>,
    /// Only fixes newer than this (e.g. `10m`).
    max_age: Option<String>,
    /// The CRS of `bbox` and of the answer.
    #[serde(default)]
    crs: Crs,
}

/// The newest fix of every device.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = LatestPositions)]
pub(crate) struct LatestJson {
    /// The CRS of the coordinates.
    #[schema(value_type = Crs)]
    crs: &'static str,
    count: usize,
    items: Vec<Position>,
}

/// Latest positions
///
/// The newest fix of every device. Commanders, auditors and admins.
#[utoipa::path(
    get,
    path = "/api/v1/positions/latest",
    tag = "telemetry",
    params(LatestQuery),
    responses(
        (status = 200, description = "the positions", body = LatestJson),
        (status = 400, description = "bbox or max_age is malformed", body = ErrorBody),
        (status = 403, description = "the caller may not watch the command centre (audited)", body = ErrorBody),
    )
)]
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct NearestQuery {
    /// Latitude of the point, degrees (in `crs`).
    lat: f64,
    /// Longitude of the point, degrees (in `crs`).
    lon: f64,
    /// How many (1 to 1000, default 5).
    n: Option<usize>,
    /// Skip devices whose newest fix is older than this (default 10m).
    max_age: Option<String>,
    /// The CRS of the point and of the answer.
    #[serde(default)]
    crs: Crs,
}

/// The devices nearest to a point, nearest first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = NearestDevices)]
pub(crate) struct NearestJson {
    /// The CRS of the coordinates.
    #[schema(value_type = Crs)]
    crs: &'static str,
    items: Vec<Nearby>,
}

/// Nearest officers
///
/// The devices nearest to a point, nearest first, with their great-circle distance in metres.
/// Commanders, auditors and admins.
#[utoipa::path(
    get,
    path = "/api/v1/officers/nearest",
    tag = "telemetry",
    params(NearestQuery),
    responses(
        (status = 200, description = "the nearest devices", body = NearestJson),
        (status = 400, description = "the point, n or max_age is malformed", body = ErrorBody),
        (status = 403, description = "the caller may not watch the command centre (audited)", body = ErrorBody),
    )
)]
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TrackQuery {
    /// RFC 3339 start of the time range.
    #[param(format = DateTime)]
    from: String,
    /// RFC 3339 end of the time range.
    #[param(format = DateTime)]
    to: String,
    /// Douglas–Peucker tolerance in metres (0 or absent: every point).
    simplify: Option<f64>,
    /// Drop GPS jitter (inaccurate fixes and moves under 5 m) before measuring (default true).
    jitter: Option<bool>,
    /// Stop detection: radius in metres (default 30).
    stop_radius: Option<f64>,
    /// Stop detection: minimum duration (default 2m).
    stop_min: Option<String>,
    /// Most fixes read (default and maximum 200 000).
    #[param(minimum = 1, maximum = 200000)]
    limit: Option<u32>,
    /// The CRS of the answer.
    #[serde(default)]
    crs: Crs,
}

/// A track as a GeoJSON FeatureCollection (RFC 7946): the track as a LineString feature first, then
/// each stop as a Point feature.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Track)]
pub(crate) struct TrackJson {
    /// `FeatureCollection`.
    #[serde(rename = "type")]
    kind: &'static str,
    features: Vec<TrackFeature>,
}

/// A feature of a track: the line, or a stop.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum TrackFeature {
    Line(LineFeature),
    Stop(StopFeature),
}

/// The track as a GeoJSON LineString feature.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LineFeature {
    /// `Feature`.
    #[serde(rename = "type")]
    kind: &'static str,
    geometry: LineString,
    properties: LineProperties,
}

/// A GeoJSON LineString: `[lon, lat]` positions.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LineString {
    /// `LineString`.
    #[serde(rename = "type")]
    kind: &'static str,
    coordinates: Vec<[f64; 2]>,
}

/// What the track line says about itself.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LineProperties {
    /// `track`.
    kind: &'static str,
    device_id: DeviceId,
    from: Timestamp,
    to: Timestamp,
    /// The CRS of the coordinates.
    #[schema(value_type = Crs)]
    crs: &'static str,
    /// Distance travelled in metres (patrol mileage, 巡查里程), after the jitter filter.
    distance_m: f64,
    /// Fixes read.
    points_stored: usize,
    /// Fixes left after the jitter filter.
    points_after_jitter: usize,
    /// Fixes in the line, after simplification.
    points: usize,
    /// The limit cut the fixes read short.
    truncated: bool,
    /// The time of each position of the line.
    times: Vec<Timestamp>,
}

/// A stop as a GeoJSON Point feature.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StopFeature {
    /// `Feature`.
    #[serde(rename = "type")]
    kind: &'static str,
    geometry: Point,
    properties: StopProperties,
}

/// A GeoJSON Point: `[lon, lat]`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Point {
    /// `Point`.
    #[serde(rename = "type")]
    kind: &'static str,
    coordinates: [f64; 2],
}

/// What a stop says about itself.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StopProperties {
    /// `stop`.
    kind: &'static str,
    /// Time of the stop's first fix.
    start: Timestamp,
    /// Time of the stop's last fix.
    end: Timestamp,
    duration_s: f64,
    /// How many fixes the stop is made of.
    points: usize,
}

const TRACK_MAX: u32 = 200_000;

/// Track of a device
///
/// A GeoJSON FeatureCollection with the track as a LineString (properties: distance travelled in
/// metres — patrol mileage 巡查里程 —, point counts, fix times) and each stop as a Point. Commanders,
/// auditors and admins.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{id}/track",
    tag = "telemetry",
    params(("id" = DeviceId, Path, description = "the recorder's serial number"), TrackQuery),
    responses(
        (status = 200, description = "the track", body = TrackJson, content_type = "application/geo+json"),
        (status = 400, description = "a parameter is malformed", body = ErrorBody),
        (status = 403, description = "the caller may not watch the command centre (audited)", body = ErrorBody),
    )
)]
pub(crate) async fn track(
    State(s): State<ApiState>,
    Extension(actor): Extension<crate::auth::Actor>,
    Path(id): Path<String>,
    Query(q): Query<TrackQuery>,
) -> Result<Json<TrackJson>, ApiError> {
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
        [lon, lat]
    };
    let mut features = vec![TrackFeature::Line(LineFeature {
        kind: "Feature",
        geometry: LineString {
            kind: "LineString",
            coordinates: shown.iter().map(|p| coord(p.lat, p.lon)).collect(),
        },
        properties: LineProperties {
            kind: "track",
            points_stored: raw.len(),
            points_after_jitter: filtered.len(),
            points: shown.len(),
            truncated: raw.len() as u32 >= limit,
            times: shown.iter().map(|p| p.t).collect(),
            device_id: dev,
            from,
            to,
            crs: q.crs.name(),
            distance_m,
        },
    })];
    features.extend(stops.iter().map(|st| {
        TrackFeature::Stop(StopFeature {
            kind: "Feature",
            geometry: Point {
                kind: "Point",
                coordinates: coord(st.lat, st.lon),
            },
            properties: StopProperties {
                kind: "stop",
                start: st.start,
                end: st.end,
                duration_s: (st.end.unix_micros() - st.start.unix_micros()) as f64 / 1e6,
                points: st.points,
            },
        })
    }));
    Ok(Json(TrackJson {
        kind: "FeatureCollection",
        features,
    }))
}

// ------------------------------------------------------------------------------------------- alarms

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AlarmsQuery {
    /// Only unacknowledged alarms (default false).
    open: Option<bool>,
    /// Only alarms of this recorder.
    device_id: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// The CRS of the answer.
    #[serde(default)]
    crs: Crs,
}

/// A page of alarms, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AlarmPage)]
pub(crate) struct AlarmsJson {
    items: Vec<Alarm>,
    /// Pass as `cursor` to get the next page; absent on the last page.
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

/// List alarms
///
/// SOS alarms raised by recorders, newest first. Commanders, auditors and admins.
#[utoipa::path(
    get,
    path = "/api/v1/alarms",
    tag = "telemetry",
    params(AlarmsQuery),
    responses(
        (status = 200, description = "a page of alarms", body = AlarmsJson),
        (status = 400, description = "a filter, the limit or the cursor is malformed", body = ErrorBody),
        (status = 403, description = "the caller may not watch the command centre (audited)", body = ErrorBody),
    )
)]
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

/// One alarm
///
/// Commanders, auditors and admins. Coordinates are WGS-84.
#[utoipa::path(
    get,
    path = "/api/v1/alarms/{id}",
    tag = "telemetry",
    params(("id" = AlarmId, Path, description = "alarm id")),
    responses(
        (status = 200, description = "the alarm", body = Alarm),
        (status = 400, description = "the id is not a UUID", body = ErrorBody),
        (status = 403, description = "the caller may not watch the command centre (audited)", body = ErrorBody),
        (status = 404, description = "no such alarm", body = ErrorBody),
    )
)]
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

/// An acknowledgement; the operator is the logged-in user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AlarmAck)]
pub(crate) struct AckBody {
    /// What the operator did about it.
    #[serde(default)]
    note: String,
}

/// An acknowledged alarm.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AlarmAckResult)]
pub(crate) struct AckJson {
    alarm: Alarm,
    /// False when it had already been acknowledged; the first acknowledgement stands.
    first: bool,
    /// Whether the acknowledgement went out on the device's command topic.
    sent_to_device: bool,
}

/// Acknowledge an alarm
///
/// The acknowledgement names the logged-in operator and goes out on the device's command topic.
/// Commanders only.
#[utoipa::path(
    post,
    path = "/api/v1/alarms/{id}/ack",
    tag = "telemetry",
    params(("id" = AlarmId, Path, description = "alarm id")),
    request_body = AckBody,
    responses(
        (status = 200, description = "the alarm, acknowledged", body = AckJson),
        (status = 400, description = "the id or the body is malformed", body = ErrorBody),
        (status = 403, description = "the caller may not direct the command centre (audited)", body = ErrorBody),
        (status = 404, description = "no such alarm", body = ErrorBody),
    )
)]
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct CrsQuery {
    /// The CRS of the answer.
    #[serde(default)]
    crs: Crs,
}

/// A geofence to draw.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewGeofence)]
pub(crate) struct FenceBody {
    name: String,
    /// Free-form category such as `grid` (网格) or `precinct` (辖区).
    #[serde(default)]
    kind: String,
    /// A GeoJSON Polygon; only its outer ring is used. Coordinates are `[lon, lat]`.
    #[schema(value_type = Polygon)]
    geometry: Value,
    /// The CRS of `geometry` (default wgs84; gcj02 when drawn on a Chinese base map).
    #[serde(default)]
    crs: Crs,
}

/// A geofence: a polygon on the map whose entries and exits are reported.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Geofence)]
pub(crate) struct FenceJson {
    id: FenceId,
    name: String,
    /// Free-form category such as `grid` (网格) or `precinct` (辖区).
    kind: String,
    created_at: Timestamp,
    /// The CRS of `geometry`.
    #[schema(value_type = Crs)]
    crs: &'static str,
    geometry: Polygon,
}

/// A GeoJSON Polygon with its outer ring: `[lon, lat]` positions, the first repeated at the end.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Polygon {
    /// `Polygon`.
    #[serde(rename = "type")]
    kind: &'static str,
    coordinates: Vec<Vec<[f64; 2]>>,
}

/// Geofences.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Geofences)]
pub(crate) struct FencesJson {
    items: Vec<FenceJson>,
}

/// Enter and leave events.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = FenceEvents)]
pub(crate) struct FenceEventsJson {
    items: Vec<FenceEvent>,
}

fn fence_json(f: &Geofence, crs: Crs) -> FenceJson {
    let mut ring: Vec<[f64; 2]> = f
        .ring
        .iter()
        .map(|&(lat, lon)| {
            let (lat, lon) = crs.out(lat, lon);
            [lon, lat]
        })
        .collect();
    if let Some(first) = ring.first().copied() {
        ring.push(first);
    }
    FenceJson {
        id: f.id,
        name: f.name.clone(),
        kind: f.kind.clone(),
        created_at: f.created_at,
        crs: crs.name(),
        geometry: Polygon {
            kind: "Polygon",
            coordinates: vec![ring],
        },
    }
}

/// List geofences
///
/// Commanders, auditors and admins.
#[utoipa::path(
    get,
    path = "/api/v1/geofences",
    tag = "telemetry",
    params(CrsQuery),
    responses(
        (status = 200, description = "every geofence", body = FencesJson),
        (status = 400, description = "crs is malformed", body = ErrorBody),
        (status = 403, description = "the caller may not watch the command centre (audited)", body = ErrorBody),
    )
)]
pub(crate) async fn fences(
    State(s): State<ApiState>,
    Extension(actor): Extension<crate::auth::Actor>,
    Query(q): Query<CrsQuery>,
) -> Result<Json<FencesJson>, ApiError> {
    actor
        .require(
            &s,
            custody_core::access::Capability::ReadCommandCentre,
            "geofence.read",
        )
        .await?;
    let items = s
        .tracking
        .geofences()
        .iter()
        .map(|f| fence_json(f, q.crs))
        .collect();
    Ok(Json(FencesJson { items }))
}

/// Draw a geofence
///
/// Commanders only. The answer's coordinates are WGS-84, whatever the CRS drawn in.
#[utoipa::path(
    post,
    path = "/api/v1/geofences",
    tag = "telemetry",
    request_body = FenceBody,
    responses(
        (status = 201, description = "the geofence", body = FenceJson),
        (status = 400, description = "the body or the polygon is malformed", body = ErrorBody),
        (status = 403, description = "the caller may not direct the command centre (audited)", body = ErrorBody),
    )
)]
pub(crate) async fn add_fence(
    State(s): State<ApiState>,
    Extension(actor): Extension<crate::auth::Actor>,
    body: Result<Json<FenceBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(axum::http::StatusCode, Json<FenceJson>), ApiError> {
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

/// Remove a geofence
///
/// Commanders only.
#[utoipa::path(
    delete,
    path = "/api/v1/geofences/{id}",
    tag = "telemetry",
    params(("id" = FenceId, Path, description = "geofence id")),
    responses(
        (status = 204, description = "removed"),
        (status = 400, description = "the id is not a UUID", body = ErrorBody),
        (status = 403, description = "the caller may not direct the command centre (audited)", body = ErrorBody),
        (status = 404, description = "no such geofence", body = ErrorBody),
    )
)]
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct FenceEventsQuery {
    /// Only events of this recorder.
    device_id: Option<String>,
    /// RFC 3339 start of the time range.
    #[param(format = DateTime)]
    from: String,
    /// RFC 3339 end of the time range.
    #[param(format = DateTime)]
    to: String,
    /// Most events (default 10 000, at most 100 000).
    limit: Option<u32>,
}

/// Geofence events
///
/// Enter and leave events, oldest first. Commanders, auditors and admins. Coordinates are WGS-84.
#[utoipa::path(
    get,
    path = "/api/v1/geofences/events",
    tag = "telemetry",
    params(FenceEventsQuery),
    responses(
        (status = 200, description = "the events", body = FenceEventsJson),
        (status = 400, description = "a parameter is malformed", body = ErrorBody),
        (status = 403, description = "the caller may not watch the command centre (audited)", body = ErrorBody),
    )
)]
pub(crate) async fn fence_events(
    State(s): State<ApiState>,
    Extension(actor): Extension<crate::auth::Actor>,
    Query(q): Query<FenceEventsQuery>,
) -> Result<Json<FenceEventsJson>, ApiError> {
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
    Ok(Json(FenceEventsJson { items }))
}

// ------------------------------------------------------------------------------- MQTT broker hooks

/// An MQTT login, as EMQX's HTTP authenticator sends it.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct BrokerAuth {
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    clientid: String,
}

/// What the broker hooks answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BrokerAnswer {
    result: BrokerResult,
    /// Login only, when allowed: whether the client is a superuser (Custody's own bridge).
    #[serde(skip_serializing_if = "Option::is_none")]
    is_superuser: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BrokerResult {
    Allow,
    Deny,
}

impl BrokerAnswer {
    /// A login allowed, as a superuser or not.
    fn login(superuser: bool) -> Json<Self> {
        Json(Self {
            result: BrokerResult::Allow,
            is_superuser: Some(superuser),
        })
    }

    fn allow_if(allow: bool) -> Json<Self> {
        Json(Self {
            result: if allow {
                BrokerResult::Allow
            } else {
                BrokerResult::Deny
            },
            is_superuser: None,
        })
    }
}

/// MQTT login hook
///
/// EMQX's HTTP authenticator: stations and recorders log in with their credential (user = id,
/// password = secret hex); the user names in `mqtt_superusers` with the password of
/// `mqtt_password_file` (Custody's own bridge) log in as superusers. Public: the broker calls it.
#[utoipa::path(
    post,
    path = "/api/v1/mqtt/auth",
    tag = "mqtt",
    security(()),
    request_body = BrokerAuth,
    responses(
        (status = 200, description = "allow or deny", body = BrokerAnswer),
    )
)]
pub(crate) async fn broker_auth(
    State(s): State<ApiState>,
    Json(req): Json<BrokerAuth>,
) -> Json<BrokerAnswer> {
    if s.mqtt_superusers.contains(&req.username) {
        let ok = s
            .mqtt_password
            .as_deref()
            .is_some_and(|p| constant_eq(p.as_bytes(), req.password.as_bytes()));
        if !ok {
            tracing::warn!(user = %req.username, client = %req.clientid, "mqtt superuser login refused");
        }
        return if ok {
            BrokerAnswer::login(true)
        } else {
            BrokerAnswer::allow_if(false)
        };
    }
    let principal = crate::mqtt_principal(&s, &req.username, &req.password).await;
    match principal {
        Ok(_) => BrokerAnswer::login(false),
        Err(e) => {
            tracing::info!(user = %req.username, client = %req.clientid, reason = %e, "mqtt login refused");
            BrokerAnswer::allow_if(false)
        }
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A publish or subscribe, as EMQX's HTTP authorizer sends it.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct BrokerAcl {
    username: String,
    topic: String,
    /// `publish` or `subscribe`.
    #[schema(pattern = "^(publish|subscribe)$")]
    action: String,
}

/// MQTT topic access hook
///
/// EMQX's HTTP authorizer. A station or recorder may publish only under its own topics and subscribe
/// only to its own cmd topic (the same rules as the embedded endpoint); superusers may subscribe to
/// anything and publish only cmd topics. Public: the broker calls it.
#[utoipa::path(
    post,
    path = "/api/v1/mqtt/acl",
    tag = "mqtt",
    security(()),
    request_body = BrokerAcl,
    responses(
        (status = 200, description = "allow or deny", body = BrokerAnswer),
    )
)]
pub(crate) async fn broker_acl(
    State(s): State<ApiState>,
    Json(req): Json<BrokerAcl>,
) -> Json<BrokerAnswer> {
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
    BrokerAnswer::allow_if(allow)
}
