use crate::status::{invalid, to_status};
use custody_core::station::StationCredential;
use custody_core::{
    BadgeNo, DeviceId, FileName, Importance, MediaType, Sha256, Sm3, StationId, Timestamp,
    UploadDeclaration, UploadId, UploadState,
};
use custody_ingest::{BeginOutcome, Ingest, IngestError, Receipt, Stations};
use custody_proto::v1 as pb;
use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// `custody.v1.Upload`: resumable evidence upload. Every call must carry a station credential
/// (`authorization: Bearer <station id>:<secret>`), and a station may touch only its own uploads.
#[derive(Debug, Clone)]
pub struct UploadService {
    ingest: Ingest,
    stations: Stations,
}

impl UploadService {
    pub fn new(ingest: Ingest, stations: Stations) -> Self {
        Self { ingest, stations }
    }

    /// The station making the request, from its credential.
    async fn caller<T>(&self, request: &Request<T>) -> Result<StationId, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| {
                to_status(IngestError::Unauthenticated(
                    "this call needs a station credential: send the metadata \
                     `authorization: Bearer <station id>:<secret>` (`custody admin station add` issues one)"
                        .into(),
                ))
            })?
            .to_str()
            .map_err(|_| invalid("authorization: not ASCII text"))?;
        let token = header.strip_prefix("Bearer ").ok_or_else(|| {
            to_status(IngestError::Unauthenticated(
                "authorization: expected `Bearer <station id>:<secret>`".into(),
            ))
        })?;
        let cred = StationCredential::parse(token)
            .map_err(|e| to_status(IngestError::Unauthenticated(e)))?;
        self.stations.authenticate(&cred).await.map_err(to_status)
    }
}

fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    let (seconds, nanos) = t.unix_parts();
    prost_types::Timestamp { seconds, nanos }
}

fn parse_upload_id(s: &str) -> Result<UploadId, Status> {
    UploadId::parse(s).map_err(|e| invalid(e.to_string()))
}

pub(crate) fn declaration(
    req: pb::BeginRequest,
    max_size: u64,
) -> Result<UploadDeclaration, Status> {
    let size = UploadDeclaration::check_size(req.size, max_size).map_err(invalid)?;
    let captured = req
        .capture_start
        .ok_or_else(|| invalid("capture_start: required"))?;
    let captured_at =
        Timestamp::from_unix_parts(captured.seconds, captured.nanos).ok_or_else(|| {
            invalid(format!(
                "capture_start: {}s is out of range",
                captured.seconds
            ))
        })?;
    let importance = match pb::Importance::try_from(req.importance) {
        Ok(pb::Importance::Normal) => Importance::Normal,
        Ok(pb::Importance::Medium) => Importance::Medium,
        Ok(pb::Importance::Important) => Importance::Important,
        _ => {
            return Err(invalid(format!(
                "importance: expected 1 (normal), 2 (medium) or 3 (important), got {}",
                req.importance
            )));
        }
    };
    let media_type = match pb::MediaType::try_from(req.media_type) {
        Ok(pb::MediaType::Video) => MediaType::Video,
        Ok(pb::MediaType::Audio) => MediaType::Audio,
        Ok(pb::MediaType::Photo) => MediaType::Photo,
        Ok(pb::MediaType::Text) => MediaType::Text,
        _ => {
            return Err(invalid(format!(
                "media_type: expected 1 (video), 2 (audio), 3 (photo) or 4 (text), got {}",
                req.media_type
            )));
        }
    };
    Ok(UploadDeclaration {
        device_id: DeviceId::parse(req.device_id).map_err(|e| invalid(e.to_string()))?,
        station_id: StationId::parse(req.station_id).map_err(|e| invalid(e.to_string()))?,
        file_name: FileName::parse(req.file_name).map_err(invalid)?,
        size,
        sha256: Sha256::parse_hex(&req.sha256).map_err(|e| invalid(e.to_string()))?,
        sm3: if req.sm3.is_empty() {
            None
        } else {
            Some(Sm3::parse_hex(&req.sm3).map_err(|e| invalid(e.to_string()))?)
        },
        captured_at,
        importance,
        media_type,
        officer: if req.officer_badge.is_empty() {
            None
        } else {
            Some(
                BadgeNo::parse(req.officer_badge)
                    .map_err(|e| invalid(format!("officer_badge: {e}")))?,
            )
        },
        clock_offset_ms: req.clock_offset_ms,
    })
}

pub(crate) fn receipt(r: &Receipt) -> pb::Receipt {
    let e = &r.evidence;
    pb::Receipt {
        evidence_id: e.id.to_string(),
        sha256: e.sha256.to_hex(),
        sm3: e.sm3.map(|s| s.to_hex()).unwrap_or_default(),
        size: i64::try_from(e.size).unwrap_or(i64::MAX),
        ingested_at: Some(timestamp(e.ingested_at)),
        duplicate: r.duplicate,
        ledger: Some(ledger_proof(&r.ledger)),
    }
}

/// A ledger proof on the wire: the audit path as raw 32-byte hashes.
pub(crate) fn ledger_proof(p: &custody_core::ledger::LedgerProof) -> pb::LedgerProof {
    pb::LedgerProof {
        entry: p.entry.clone(),
        leaf_index: p.leaf_index,
        inclusion_proof: p
            .proof_hashes()
            .unwrap_or_default()
            .into_iter()
            .map(|h| h.0.to_vec().into())
            .collect(),
        checkpoint: p.checkpoint.clone(),
    }
}

fn state(s: UploadState) -> pb::UploadState {
    match s {
        UploadState::Open => pb::UploadState::Open,
        UploadState::Committing => pb::UploadState::Committing,
        UploadState::Committed => pb::UploadState::Committed,
        UploadState::Failed => pb::UploadState::Failed,
        UploadState::Expired => pb::UploadState::Expired,
    }
}

fn size_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[tonic::async_trait]
impl pb::upload_server::Upload for UploadService {
    async fn begin(
        &self,
        request: Request<pb::BeginRequest>,
    ) -> Result<Response<pb::BeginResponse>, Status> {
        let station = self.caller(&request).await?;
        let decl = declaration(request.into_inner(), self.ingest.config().max_upload_size)?;
        if decl.station_id != station {
            return Err(to_status(IngestError::PermissionDenied(format!(
                "station_id: the credential is station {station}'s, but the upload declares station {}",
                decl.station_id
            ))));
        }
        let result = match self.ingest.begin(decl).await.map_err(to_status)? {
            BeginOutcome::Session {
                upload_id,
                committed,
                size,
            } => pb::begin_response::Result::Session(pb::UploadSession {
                upload_id: upload_id.to_string(),
                committed_size: size_i64(committed),
                size: size_i64(size),
            }),
            BeginOutcome::Existing(r) => pb::begin_response::Result::Receipt(receipt(&r)),
        };
        Ok(Response::new(pb::BeginResponse {
            result: Some(result),
        }))
    }

    async fn write(
        &self,
        request: Request<Streaming<pb::WriteRequest>>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let station = self.caller(&request).await?;
        let mut stream = request.into_inner();
        let Some(first) = stream.next().await else {
            return Err(invalid(
                "write stream was empty: the first message must name upload_id",
            ));
        };
        let first = first?;
        let id = parse_upload_id(&first.upload_id)?;
        let mut writer = self.ingest.writer(id, &station).await.map_err(to_status)?;
        let id_str = id.to_string();
        let mut next = Some(Ok(first));
        // Every path out of this loop finishes the writer, so bytes received before an error or a broken
        // stream are made durable and counted before the answer goes out.
        let outcome: Result<(), Status> = loop {
            let msg = match next.take() {
                Some(m) => m,
                None => match stream.next().await {
                    Some(m) => m,
                    None => break Ok(()),
                },
            };
            let msg = match msg {
                Ok(m) => m,
                Err(status) => break Err(status),
            };
            if !msg.upload_id.is_empty() && msg.upload_id != id_str {
                break Err(invalid(format!(
                    "upload_id: a write stream carries one upload; expected {id}, got {:?}",
                    msg.upload_id
                )));
            }
            if let Err(e) = writer.write(msg.offset, msg.data).await {
                break Err(to_status(e));
            }
        };
        let received = writer.received();
        let committed = writer.finish().await;
        match (outcome, committed) {
            (Ok(()), Ok(committed)) => Ok(Response::new(pb::WriteResponse {
                committed_size: size_i64(committed),
            })),
            (Err(status), Ok(committed)) => {
                tracing::info!(upload = %id, received, committed, error = %status.message(), "write stream ended with an error");
                Err(status)
            }
            (Ok(()), Err(e)) => Err(to_status(e)),
            (Err(status), Err(e)) => {
                tracing::warn!(upload = %id, error = %e, "could not save the bytes received before a stream error");
                Err(status)
            }
        }
    }

    async fn query(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        let station = self.caller(&request).await?;
        let id = parse_upload_id(&request.into_inner().upload_id)?;
        let u = self.ingest.query(id, &station).await.map_err(to_status)?;
        Ok(Response::new(pb::QueryResponse {
            committed_size: size_i64(u.committed_size),
            state: state(u.state).into(),
            size: size_i64(u.declaration.size),
            expires_at: Some(timestamp(u.expires_at)),
            failure: u.failure.unwrap_or_default(),
        }))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let station = self.caller(&request).await?;
        let id = parse_upload_id(&request.into_inner().upload_id)?;
        let r = self.ingest.commit(id, &station).await.map_err(to_status)?;
        Ok(Response::new(pb::CommitResponse {
            receipt: Some(receipt(&r)),
        }))
    }
}
