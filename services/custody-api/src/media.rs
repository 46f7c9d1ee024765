//! Media in the API: the `media` object of evidence metadata, and the derived files
//! (`/api/v1/evidence/{id}/poster`, `/thumbs`, `/proxy`, the proxy with HTTP Range).

use crate::error::ErrorBody;
use crate::evidence::{bytes_response, parse_id, range_or_refusal};
use crate::openapi::{
    DeletedBytes, EvidencePath, EvidenceRefusals, JpegBytes, Mp4Bytes, RangeHeader,
};
use crate::{ApiError, ApiState, auth::Actor};
use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use custody_core::media::{DerivedKind, MediaInfo, MediaJobKind, MediaState, Playback};
use custody_core::{ErrorCode, EvidenceId, Timestamp};
use custody_media::{DerivedRecord, EvidenceMedia};
use serde::Serialize;
use utoipa::ToSchema;

/// How a browser can show an item right now.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = MediaView)]
pub(crate) struct ViewJson {
    playable: bool,
    /// `original`, `proxy` or `image` (shown through its poster).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(original|proxy|image)$")]
    source: Option<&'static str>,
    /// What to load: the original's content, the proxy or the poster.
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    /// Why it is not playable, or why a proxy is used.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// A file made from the original for viewing: a poster, a thumbnail strip or a browser proxy.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DerivedFile)]
pub(crate) struct DerivedJson {
    kind: DerivedKind,
    url: String,
    /// SHA-256 of the derived file, lowercase hex (also its ETag).
    sha256: String,
    size: u64,
    content_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<u32>,
    /// Kind-specific facts: a strip's `tiles`, `tile_width`, `tile_height`, `interval_us`; a proxy's
    /// `duration_us`.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<serde_json::Value>,
    created_at: Timestamp,
}

/// Where the browser proxy of an item stands.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ProxyState)]
pub(crate) struct ProxyJson {
    /// `not_needed`, `pending`, `ready` or `failed`.
    state: MediaState,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The `media` object of an evidence item.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Media)]
pub(crate) struct MediaJson {
    /// `pending` (not probed yet), `ready` or `failed` (the file could not be read as media).
    state: MediaState,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    probed_at: Option<Timestamp>,
    /// The probe result: container, streams, codecs, resolution, frame rate, duration, bit rate,
    /// creation time, embedded location.
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<MediaInfo>,
    view: ViewJson,
    proxy: ProxyJson,
    derived: Vec<DerivedJson>,
}

fn url(id: EvidenceId, kind: DerivedKind) -> String {
    format!("/api/v1/evidence/{id}/{}", kind.as_str())
}

impl MediaJson {
    pub(crate) fn new(content_url: &str, m: EvidenceMedia) -> Self {
        let id = m.evidence_id;
        let info = m.info.as_deref().and_then(|s| serde_json::from_str(s).ok());
        let playback: Option<Playback> = m
            .playback
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok());
        let has = |k: DerivedKind| m.derived.iter().any(|d| d.kind == k);
        let proxy_job = m.jobs.iter().find(|j| j.kind == MediaJobKind::Proxy);
        let proxy = match proxy_job {
            None => ProxyJson {
                state: MediaState::NotNeeded,
                error: None,
            },
            Some(j) if j.state == "done" && has(DerivedKind::Proxy) => ProxyJson {
                state: MediaState::Ready,
                error: None,
            },
            Some(j) if j.state == "failed" => ProxyJson {
                state: MediaState::Failed,
                error: j.last_error.clone(),
            },
            Some(j) => ProxyJson {
                state: MediaState::Pending,
                // A retry's reason, while it waits.
                error: j.last_error.clone(),
            },
        };
        let not = |reason: String| ViewJson {
            playable: false,
            source: None,
            url: None,
            reason: Some(reason),
        };
        let view = match (m.state, playback) {
            (MediaState::Failed, _) => not(format!(
                "not playable: {}",
                m.error
                    .as_deref()
                    .unwrap_or("the file could not be read as media")
            )),
            (MediaState::Pending, _) | (_, None) => not("not probed yet".into()),
            (_, Some(Playback::Original)) => ViewJson {
                playable: true,
                source: Some("original"),
                url: Some(content_url.to_string()),
                reason: None,
            },
            (_, Some(Playback::Image)) if has(DerivedKind::Poster) => ViewJson {
                playable: true,
                source: Some("image"),
                url: Some(url(id, DerivedKind::Poster)),
                reason: None,
            },
            (_, Some(Playback::Image)) => not("the photo could not be decoded".into()),
            (_, Some(Playback::Proxy { reason })) => match proxy.state {
                MediaState::Ready => ViewJson {
                    playable: true,
                    source: Some("proxy"),
                    url: Some(url(id, DerivedKind::Proxy)),
                    reason: Some(reason),
                },
                MediaState::Failed => not(format!(
                    "not playable: {reason}, and making a browser proxy failed: {}",
                    proxy.error.as_deref().unwrap_or("unknown error")
                )),
                _ => not(format!("a browser proxy is being made ({reason})")),
            },
            (_, Some(Playback::NotPlayable { reason })) => not(format!("not playable: {reason}")),
        };
        let derived = m
            .derived
            .into_iter()
            .map(|d: DerivedRecord| DerivedJson {
                url: url(id, d.kind),
                kind: d.kind,
                sha256: d.sha256.to_hex(),
                size: d.size,
                content_type: d.content_type,
                width: d.width,
                height: d.height,
                detail: d
                    .detail
                    .as_deref()
                    .and_then(|s| serde_json::from_str(s).ok()),
                created_at: d.created_at,
            })
            .collect();
        Self {
            state: m.state,
            error: m.error,
            probed_at: m.probed_at,
            info,
            view,
            proxy,
            derived,
        }
    }
}

/// Poster frame
///
/// One JPEG: a frame of a video, or a photo downscaled.
#[utoipa::path(
    get,
    path = "/api/v1/evidence/{id}/poster",
    tag = "media",
    params(EvidencePath, RangeHeader),
    responses(
        JpegBytes,
        EvidenceRefusals,
        DeletedBytes,
        (status = 404, description = "no such evidence, or no poster for it (yet): the message says why", body = ErrorBody),
    )
)]
pub(crate) async fn poster(
    state: State<ApiState>,
    actor: Extension<Actor>,
    id: Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(state, actor, id, headers, DerivedKind::Poster).await
}

/// Thumbnail strip
///
/// One JPEG holding a row of small frames, evenly spaced through a video (tile sizes in the item's `media.derived[].detail`).
#[utoipa::path(
    get,
    path = "/api/v1/evidence/{id}/thumbs",
    tag = "media",
    params(EvidencePath, RangeHeader),
    responses(
        JpegBytes,
        EvidenceRefusals,
        DeletedBytes,
        (status = 404, description = "no such evidence, or no thumbnail strip for it (yet): the message says why", body = ErrorBody),
    )
)]
pub(crate) async fn thumbs(
    state: State<ApiState>,
    actor: Extension<Actor>,
    id: Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(state, actor, id, headers, DerivedKind::Thumbs).await
}

/// Browser proxy
///
/// H.264/AAC MP4 with fast-start, at most 720p, for originals a browser cannot play. Watching it is a `view` event in the ledger, once per playback.
#[utoipa::path(
    get,
    path = "/api/v1/evidence/{id}/proxy",
    tag = "media",
    params(EvidencePath, RangeHeader),
    responses(
        Mp4Bytes,
        EvidenceRefusals,
        DeletedBytes,
        (status = 404, description = "no such evidence, or no proxy for it (yet): the message says why", body = ErrorBody),
    )
)]
pub(crate) async fn proxy(
    state: State<ApiState>,
    actor: Extension<Actor>,
    id: Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(state, actor, id, headers, DerivedKind::Proxy).await
}

/// Serves a derived file with its own content type, ETag (its SHA-256) and HTTP Range.
async fn serve(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    headers: HeaderMap,
    kind: DerivedKind,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    // 404 names the evidence when it does not exist at all; 403 (audited) when it is not the caller's
    // to see.
    s.cases
        .check_evidence_access(actor.user(), id, "evidence.view")
        .await?;
    // 410 once retention deleted the original: the files made from it went with it.
    custody_ingest::require_bytes(&s.ingest.evidence(id).await?)?;
    let Some(d) = s.media.derived(id, kind).await? else {
        let why = match s.media.of(&[id]).await?.pop() {
            Some(m) if m.state == MediaState::Pending => "it has not been probed yet".to_string(),
            Some(m) if m.state == MediaState::Failed => format!(
                "it could not be read as media: {}",
                m.error.unwrap_or_default()
            ),
            Some(m) => match m.jobs.iter().find(|j| j.kind == MediaJobKind::Proxy) {
                Some(j) if j.state == "failed" => format!(
                    "making it failed: {}",
                    j.last_error.clone().unwrap_or_default()
                ),
                Some(_) => "it is being made".to_string(),
                None if kind == DerivedKind::Proxy => {
                    "the original plays in browsers as it is (use /content)".to_string()
                }
                None => "the file has no picture to show".to_string(),
            },
            None => "it has not been probed yet".to_string(),
        };
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("evidence {id} has no {kind}: {why}"),
        ));
    };
    let range = match range_or_refusal(&headers, d.size)? {
        Ok(r) => r,
        Err(refusal) => return Ok(refusal),
    };
    // Watching the proxy is viewing the evidence: logged once per playback (the request that starts
    // at the first byte), not once per range a player asks for while seeking.
    if kind == DerivedKind::Proxy && range.as_ref().is_none_or(|r| r.start == 0) {
        s.ingest.view(id, &actor.label()).await?;
    }
    let partial = range.is_some();
    let (size, served, stream) = s.media.blobs().get(&d.path, range).await?;
    let mut resp = bytes_response(stream, &d.content_type, &d.sha256, served, size, partial);
    // Derived files never change under their key; a remade one has a new ETag.
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    Ok(resp)
}
