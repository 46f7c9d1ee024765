//! The ledger over HTTP. Public and read-only, for outside verifiers: `/ledger/checkpoint`,
//! `/ledger/tile/...` (C2SP tlog-tiles), `/api/v1/ledger/proof/{inclusion,consistency}`. Per item (behind
//! the auth layer): `/api/v1/evidence/{id}/history` and `/api/v1/evidence/{id}/receipt`.

use crate::error::ErrorBody;
use crate::evidence::parse_id;
use crate::openapi::{Binary, EvidencePath, EvidenceRefusals};
use crate::{ApiError, ApiState, auth::Actor};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use custody_core::ErrorCode;
use custody_core::ledger::{LedgerEntry, LedgerProof, TreeHash, parse_tile_path};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The newest signed checkpoint
///
/// The newest signed checkpoint of the evidence ledger, as `text/plain` (C2SP tlog-checkpoint in a
/// signed note). Public, for outside verifiers.
#[utoipa::path(
    get,
    path = "/ledger/checkpoint",
    tag = "ledger",
    security(()),
    responses(
        (status = 200, description = "the signed checkpoint", content_type = "text/plain; charset=utf-8", body = String),
        (status = 404, description = "nothing has been logged yet", body = ErrorBody),
    )
)]
pub(crate) async fn checkpoint(State(s): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let cp = s.ingest.ledger().checkpoint().await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            "the ledger has no checkpoint yet: nothing has been logged",
        )
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        cp.note,
    ))
}

/// A ledger tile
///
/// A tile of the Merkle tree, `tile/<L>/<N>[.p/<W>]`, or of entries, `tile/entries/<N>[.p/<W>]` (C2SP
/// tlog-tiles). Public. A full tile is cached for ever; a partial one for a minute.
#[utoipa::path(
    get,
    path = "/ledger/tile/{rest}",
    tag = "ledger",
    security(()),
    params(("rest" = String, Path, description = "the tile path after `tile/`, slashes included: `<L>/<N>[.p/<W>]` or `entries/<N>[.p/<W>]`", allow_reserved)),
    responses(
        (status = 200, description = "the tile's bytes", content_type = "application/octet-stream", body = Binary),
        (status = 400, description = "not a tile path", body = ErrorBody),
        (status = 404, description = "no such tile yet", body = ErrorBody),
    )
)]
pub(crate) async fn tile(
    State(s): State<ApiState>,
    Path(rest): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let path = format!("tile/{rest}");
    let tile = parse_tile_path(&path).map_err(ApiError::bad_request)?;
    let data = s.ingest.ledger().tile(&path).await?;
    // A full tile never changes; a partial one is replaced by a wider one as the log grows.
    let cache = if tile.width() == 256 || tile.width() == 0 {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=60"
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, cache),
        ],
        data,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct InclusionQuery {
    /// Leaf index.
    index: u64,
    /// Tree size (a published checkpoint size; default: the newest).
    size: Option<u64>,
}

/// A Merkle proof: inclusion (`index`, `size`) or consistency (`old`, `new`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Proof)]
pub(crate) struct ProofJson {
    /// Inclusion: the leaf index.
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<u64>,
    /// Inclusion: the tree size the proof leads to.
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    /// Consistency: the older tree size.
    #[serde(skip_serializing_if = "Option::is_none")]
    old: Option<u64>,
    /// Consistency: the newer tree size.
    #[serde(skip_serializing_if = "Option::is_none")]
    new: Option<u64>,
    /// Proof hashes, hex, in RFC 6962 order.
    hashes: Vec<String>,
}

fn hex_hashes(h: Vec<TreeHash>) -> Vec<String> {
    h.into_iter().map(|h| hex::encode(h.0)).collect()
}

async fn newest_size(s: &ApiState) -> Result<u64, ApiError> {
    Ok(s.ingest.ledger().state().await?.checkpoint_size)
}

/// Inclusion proof
///
/// The RFC 6962 inclusion proof of a leaf in a tree of the given size. Public, for outside verifiers.
#[utoipa::path(
    get,
    path = "/api/v1/ledger/proof/inclusion",
    tag = "ledger",
    security(()),
    params(InclusionQuery),
    responses(
        (status = 200, description = "the proof", body = ProofJson),
        (status = 400, description = "a parameter is missing, the size is not a published tree size, or the index is not inside it", body = ErrorBody),
    )
)]
pub(crate) async fn inclusion(
    State(s): State<ApiState>,
    Query(q): Query<InclusionQuery>,
) -> Result<Json<ProofJson>, ApiError> {
    let size = match q.size {
        Some(n) => n,
        None => newest_size(&s).await?,
    };
    let hashes = s.ingest.ledger().inclusion_proof(q.index, size).await?;
    Ok(Json(ProofJson {
        index: Some(q.index),
        size: Some(size),
        old: None,
        new: None,
        hashes: hex_hashes(hashes),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ConsistencyQuery {
    /// The older tree size.
    old: u64,
    /// Default: the newest checkpoint's size.
    new: Option<u64>,
}

/// Consistency proof
///
/// The RFC 6962 consistency proof between two tree sizes: the newer tree extends the older one.
/// Public, for outside verifiers.
#[utoipa::path(
    get,
    path = "/api/v1/ledger/proof/consistency",
    tag = "ledger",
    security(()),
    params(ConsistencyQuery),
    responses(
        (status = 200, description = "the proof", body = ProofJson),
        (status = 400, description = "a parameter is missing, or not 0 < old <= new <= the newest checkpoint's size", body = ErrorBody),
    )
)]
pub(crate) async fn consistency(
    State(s): State<ApiState>,
    Query(q): Query<ConsistencyQuery>,
) -> Result<Json<ProofJson>, ApiError> {
    let new = match q.new {
        Some(n) => n,
        None => newest_size(&s).await?,
    };
    let hashes = s.ingest.ledger().consistency_proof(q.old, new).await?;
    Ok(Json(ProofJson {
        index: None,
        size: None,
        old: Some(q.old),
        new: Some(new),
        hashes: hex_hashes(hashes),
    }))
}

/// One ledger event of an evidence item.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = HistoryEvent)]
pub(crate) struct HistoryEventJson {
    /// The leaf index.
    index: u64,
    /// The entry, decoded.
    event: LedgerEntry,
    /// The entry with its inclusion proof and checkpoint, as `custody verify receipt` reads it.
    proof: LedgerProof,
}

/// The ledger history of an evidence item.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = EvidenceHistory)]
pub(crate) struct HistoryJson {
    evidence_id: String,
    events: Vec<HistoryEventJson>,
}

/// Ledger history of an item
///
/// Every event of an item covered by the newest checkpoint, with proofs. Reading it is itself a `view`,
/// which shows up in later reads.
#[utoipa::path(
    get,
    path = "/api/v1/evidence/{id}/history",
    operation_id = "evidence_history",
    tag = "ledger",
    params(EvidencePath),
    responses(
        (status = 200, description = "the events, oldest first", body = HistoryJson),
        EvidenceRefusals,
    )
)]
pub(crate) async fn history(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<HistoryJson>, ApiError> {
    let id = parse_id(&id)?;
    s.cases
        .check_evidence_access(actor.user(), id, "evidence.history")
        .await?;
    s.ingest.view(id, &actor.label()).await?;
    let events = s
        .ingest
        .ledger()
        .history(id)
        .await?
        .into_iter()
        .map(|h| HistoryEventJson {
            index: h.index,
            event: h.entry,
            proof: h.proof,
        })
        .collect();
    Ok(Json(HistoryJson {
        evidence_id: id.to_string(),
        events,
    }))
}

/// Ingest receipt of an item
///
/// The ingest receipt (entry, inclusion proof, signed checkpoint): the file `custody verify receipt`
/// checks offline.
#[utoipa::path(
    get,
    path = "/api/v1/evidence/{id}/receipt",
    tag = "ledger",
    params(EvidencePath),
    responses(
        (status = 200, description = "the receipt", body = LedgerProof),
        EvidenceRefusals,
        (status = 503, description = "no checkpoint covers the ingest yet (waited the receipt timeout); retry", body = ErrorBody),
    )
)]
pub(crate) async fn receipt(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<LedgerProof>, ApiError> {
    let id = parse_id(&id)?;
    s.cases
        .check_evidence_access(actor.user(), id, "evidence.receipt")
        .await?;
    s.ingest.view(id, &actor.label()).await?;
    Ok(Json(s.ingest.ledger().ingest_receipt(id).await?))
}
