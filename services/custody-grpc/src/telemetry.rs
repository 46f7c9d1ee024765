//! `custody.v1.Telemetry`: positions in (`Report`), live events out (`Watch`), and the conversion
//! between the protobuf telemetry messages and domain types (also used for MQTT protobuf payloads).

use crate::status::{invalid, to_status};
use custody_core::geo::BBox;
use custody_core::live::LiveEvent;
use custody_core::{DeviceCredential, DeviceId, Position, Timestamp};
use custody_proto::v1 as pb;
use custody_tracking::{Devices, LiveFilter, Tracking, TrackingError, Watched};
use futures::{Stream, StreamExt};
use prost::Message;
use std::pin::Pin;
use tonic::{Request, Response, Status, Streaming};

fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    let (seconds, nanos) = t.unix_parts();
    prost_types::Timestamp { seconds, nanos }
}

/// The fixes of a protobuf batch, for `device`. A batch naming another device is refused.
pub fn positions_from_proto(
    device: &DeviceId,
    batch: pb::PositionBatch,
) -> Result<Vec<Position>, String> {
    if !batch.device_id.is_empty() && batch.device_id != device.as_str() {
        return Err(format!(
            "PositionBatch.device_id {:?} is not the sending device {device}",
            batch.device_id
        ));
    }
    batch
        .positions
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let t = p
                .time
                .ok_or_else(|| format!("position {i}: time is missing"))?;
            let time = Timestamp::from_unix_parts(t.seconds, t.nanos)
                .ok_or_else(|| format!("position {i}: time is out of range"))?;
            let battery_pct = p
                .battery_pct
                .map(|b| {
                    u8::try_from(b).map_err(|_| format!("position {i}: battery_pct {b} > 255"))
                })
                .transpose()?;
            Ok(Position {
                device: device.clone(),
                time,
                lat: p.lat,
                lon: p.lon,
                alt_m: p.alt_m,
                speed_mps: p.speed_mps,
                course_deg: p.course_deg,
                accuracy_m: p.accuracy_m,
                sos: p.sos,
                battery_pct,
            })
        })
        .collect()
}

/// Decodes an MQTT protobuf position payload (`PositionBatch`) of `device`.
pub fn decode_position_batch(device: &DeviceId, payload: &[u8]) -> Result<Vec<Position>, String> {
    let batch =
        pb::PositionBatch::decode(payload).map_err(|e| format!("PositionBatch protobuf: {e}"))?;
    positions_from_proto(device, batch)
}

pub fn position_to_proto(p: &Position) -> pb::Position {
    pb::Position {
        time: Some(timestamp(p.time)),
        lat: p.lat,
        lon: p.lon,
        alt_m: p.alt_m,
        speed_mps: p.speed_mps,
        course_deg: p.course_deg,
        accuracy_m: p.accuracy_m,
        sos: p.sos,
        battery_pct: p.battery_pct.map(u32::from),
    }
}

/// A live event as the `Watch` stream sends it.
pub fn live_to_proto(e: &LiveEvent) -> pb::LiveEvent {
    use pb::live_event::Event;
    let event = match e {
        LiveEvent::Position(p) => Event::Position(pb::DevicePosition {
            device_id: p.device.to_string(),
            position: Some(position_to_proto(p)),
        }),
        LiveEvent::Alarm(a) => Event::Alarm(pb::Alarm {
            id: a.id.to_string(),
            device_id: a.device_id.to_string(),
            kind: a.kind.clone(),
            raised_at: Some(timestamp(a.raised_at)),
            lat: a.lat,
            lon: a.lon,
            note: a.note.clone(),
            acked_at: a.acked_at.map(timestamp),
            acked_by: a.acked_by.clone().unwrap_or_default(),
        }),
        LiveEvent::Status(s) => Event::Status(pb::DeviceStatus {
            device_id: s.device_id.to_string(),
            json: s.status.to_string(),
            received_at: Some(timestamp(s.received_at)),
        }),
        LiveEvent::Fence { event, fence_name } => Event::Fence(pb::FenceEvent {
            device_id: event.device_id.to_string(),
            fence_id: event.fence_id.to_string(),
            fence_name: fence_name.clone(),
            kind: event.kind.as_str().to_string(),
            time: Some(timestamp(event.t)),
            lat: event.lat,
            lon: event.lon,
        }),
    };
    pb::LiveEvent { event: Some(event) }
}

/// `custody.v1.Telemetry`. `Report` needs a device credential (`authorization: Bearer <device
/// id>:<secret>`); `Watch` is open like the rest of the command-centre API until user accounts exist.
#[derive(Debug, Clone)]
pub struct TelemetryService {
    tracking: Tracking,
    devices: Devices,
}

impl TelemetryService {
    pub fn new(tracking: Tracking, devices: Devices) -> Self {
        Self { tracking, devices }
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<DeviceId, Status> {
        let unauth = |m: &str| to_status(TrackingError::Unauthenticated(m.to_string()));
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| {
                unauth(
                    "Report needs a device credential: send the metadata \
                     `authorization: Bearer <device id>:<secret>` (`custody admin device add` issues one)",
                )
            })?
            .to_str()
            .map_err(|_| invalid("authorization: not ASCII text"))?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| unauth("authorization: expected `Bearer <device id>:<secret>`"))?;
        let cred = DeviceCredential::parse(token).map_err(|e| unauth(&e))?;
        self.devices.authenticate(&cred).await.map_err(to_status)
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl pb::telemetry_server::Telemetry for TelemetryService {
    type ReportStream = BoxStream<pb::ReportAck>;
    type WatchStream = BoxStream<pb::LiveEvent>;

    async fn report(
        &self,
        request: Request<Streaming<pb::PositionBatch>>,
    ) -> Result<Response<Self::ReportStream>, Status> {
        let device = self.caller(&request).await?;
        let mut input = request.into_inner();
        let tracking = self.tracking.clone();
        let out = async_stream(move |tx| async move {
            while let Some(batch) = input.next().await {
                let batch = match batch {
                    Ok(b) => b,
                    Err(s) => {
                        tracing::debug!(%device, status = %s, "report stream ended with an error");
                        return;
                    }
                };
                let seq = batch.seq;
                let ack = match positions_from_proto(&device, batch) {
                    Err(e) => {
                        tracking.metrics().malformed("grpc");
                        Err(invalid(e))
                    }
                    Ok(fixes) => tracking
                        .report(&device, fixes)
                        .await
                        .map(|o| pb::ReportAck {
                            seq,
                            accepted: u32::try_from(o.accepted).unwrap_or(u32::MAX),
                            rejected: o
                                .rejected
                                .into_iter()
                                .map(|(i, r)| pb::Rejected {
                                    index: u32::try_from(i).unwrap_or(u32::MAX),
                                    reason: r.as_str().to_string(),
                                })
                                .collect(),
                        })
                        .map_err(to_status),
                };
                let stop = ack.is_err();
                if tx.send(ack).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(Response::new(out))
    }

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        let devices = if req.device_ids.is_empty() {
            None
        } else {
            Some(
                req.device_ids
                    .iter()
                    .map(|d| DeviceId::parse(d.as_str()).map_err(|e| invalid(e.to_string())))
                    .collect::<Result<_, _>>()?,
            )
        };
        let area = req.area.map(|a| BBox {
            min_lat: a.min_lat,
            min_lon: a.min_lon,
            max_lat: a.max_lat,
            max_lon: a.max_lon,
        });
        let mut watcher = self.tracking.hub().watch(LiveFilter { devices, area });
        let metrics = self.tracking.metrics().clone();
        let out = async_stream(move |tx| async move {
            while let Some(w) = watcher.next().await {
                let e = match w {
                    Watched::Event(e) => live_to_proto(&e),
                    Watched::Lagged(n) => {
                        metrics.live_lagged.inc_by(n);
                        pb::LiveEvent {
                            event: Some(pb::live_event::Event::Lagged(pb::Lagged { missed: n })),
                        }
                    }
                };
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(out))
    }
}

/// A stream fed by a task through a small channel; the task ends when the receiver is dropped.
fn async_stream<T, F, Fut>(f: F) -> BoxStream<T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
