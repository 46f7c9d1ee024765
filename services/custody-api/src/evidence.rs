//! `/api/v1/evidence`: listing, metadata and content (with HTTP Range) of evidence. The content of an
//! original is served only to a user holding a live approved download request (`requests`).

use crate::error::ErrorBody;
use crate::openapi::{DeletedBytes, EvidencePath, EvidenceRefusals, OriginalBytes, RangeHeader};
use crate::{ApiError, ApiState, auth::Actor};
use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use custody_core::{
    DeviceId, ErrorCode, Evidence, EvidenceFilter, EvidenceId, StationId, Timestamp,
};
use custody_ingest::PageCursor;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only evidence from this recorder.
    device: Option<String>,
    /// Only evidence offloaded by this station.
    station: Option<String>,
    /// Capture start at or after this RFC 3339 time.
    #[param(format = DateTime)]
    from: Option<String>,
    /// Capture start before this RFC 3339 time.
    #[param(format = DateTime)]
    to: Option<String>,
    /// Only evidence attributed to this officer (badge).
    officer: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// An evidence item: what was stored, from where, by whom, and what the media pipeline made of it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Evidence)]
pub(crate) struct EvidenceJson {
    id: EvidenceId,
    /// SHA-256 of the original, lowercase hex.
    sha256: String,
    /// SM3 of the original (GB/T 32905), lowercase hex, when it was computed.
    #[serde(skip_serializing_if = "Option::is_none")]
    sm3: Option<String>,
    size: u64,
    device_id: String,
    station_id: String,
    file_name: String,
    #[schema(value_type = custody_core::MediaType)]
    media_type: &'static str,
    /// GA/T 947 importance mark: 1 normal, 2 medium, 3 important.
    #[schema(minimum = 1, maximum = 3)]
    importance: u8,
    captured_at: Timestamp,
    ingested_at: Timestamp,
    /// The officer who held the recorder at capture time (check-out register, else the recorder's own
    /// binding), and whether the two disagree.
    attribution: custody_core::Attribution,
    /// Legal hold, obstruction mark, retention class and, once its retention ended, the deletion (the
    /// bytes are then gone and `content_url` answers 410).
    retention: custody_core::RetentionMarks,
    /// Where the original's bytes are served (an approved download request is needed).
    content_url: String,
    /// What the media pipeline found and made: probe result, how a browser shows it, derived files.
    #[serde(skip_serializing_if = "Option::is_none")]
    media: Option<crate::media::MediaJson>,
}

impl From<Evidence> for EvidenceJson {
    fn from(e: Evidence) -> Self {
        Self {
            content_url: format!("/api/v1/evidence/{}/content", e.id),
            id: e.id,
            sha256: e.sha256.to_hex(),
            sm3: e.sm3.map(|s| s.to_hex()),
            size: e.size,
            device_id: e.device_id.to_string(),
            station_id: e.station_id.to_string(),
            file_name: e.file_name.as_str().to_string(),
            media_type: e.media_type.as_str(),
            importance: e.importance.mark(),
            captured_at: e.captured_at,
            ingested_at: e.ingested_at,
            attribution: e.attribution,
            retention: e.retention,
            media: None,
        }
    }
}

/// Evidence as JSON, each with what the media pipeline knows of it (one query for the whole page).
async fn with_media(s: &ApiState, items: Vec<Evidence>) -> Result<Vec<EvidenceJson>, ApiError> {
    let ids: Vec<EvidenceId> = items.iter().map(|e| e.id).collect();
    let mut media = s.media.of(&ids).await?;
    Ok(items
        .into_iter()
        .map(|e| {
            let m = media
                .iter()
                .position(|m| m.evidence_id == e.id)
                .map(|i| media.swap_remove(i));
            let mut j = EvidenceJson::from(e);
            j.media = m.map(|m| crate::media::MediaJson::new(&j.content_url, m));
            j
        })
        .collect())
}

/// A page of evidence, newest capture first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = EvidencePage)]
pub(crate) struct ListJson {
    items: Vec<EvidenceJson>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

pub(crate) fn parse_id(s: &str) -> Result<EvidenceId, ApiError> {
    EvidenceId::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn parse_time(field: &str, s: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    s.map(|s| {
        Timestamp::parse_rfc3339(s).map_err(|e| ApiError::bad_request(format!("{field}: {e}")))
    })
    .transpose()
}

/// List evidence
///
/// The evidence the caller may see (an officer their own recorders' footage, a case handler what their
/// cases hold, supervisors and auditors everything), filtered and paged.
#[utoipa::path(
    get,
    path = "/api/v1/evidence",
    operation_id = "list_evidence",
    tag = "evidence",
    params(ListQuery),
    responses(
        (status = 200, description = "a page of evidence", body = ListJson),
        (status = 400, description = "a filter, the limit or the cursor is malformed", body = ErrorBody),
        (status = 403, description = "the caller's roles see no evidence", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListJson>, ApiError> {
    let scope = actor.user().scope();
    if scope.is_empty() {
        s.cases
            .audit_denied(actor.user(), "evidence.list", None, "sees no evidence")
            .await;
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            format!(
                "user {} ({}) may not read evidence",
                actor.user().username,
                actor.user().roles.to_list()
            ),
        ));
    }
    let filter = EvidenceFilter {
        device_id: q
            .device
            .map(DeviceId::parse)
            .transpose()
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        station_id: q
            .station
            .map(StationId::parse)
            .transpose()
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        captured_from: parse_time("from", q.from.as_deref())?,
        captured_to: parse_time("to", q.to.as_deref())?,
        officer: q
            .officer
            .map(custody_core::BadgeNo::parse)
            .transpose()
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit: must be between 1 and {MAX_LIMIT}, got {limit}"
        )));
    }
    let after = q
        .cursor
        .as_deref()
        .map(PageCursor::decode)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let page = s.ingest.list(&filter, &scope, after, limit).await?;
    Ok(Json(ListJson {
        items: with_media(&s, page.items).await?,
        next_cursor: page.next.map(|c| c.encode()),
    }))
}

/// One evidence item
///
/// Reading it is a `view` event in the item's ledger history.
#[utoipa::path(
    get,
    path = "/api/v1/evidence/{id}",
    operation_id = "get_evidence",
    tag = "evidence",
    params(EvidencePath),
    responses((status = 200, description = "the item", body = EvidenceJson), EvidenceRefusals)
)]
pub(crate) async fn get_one(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<EvidenceJson>, ApiError> {
    let id = parse_id(&id)?;
    s.cases
        .check_evidence_access(actor.user(), id, "evidence.read")
        .await?;
    let e = s.ingest.view(id, &actor.label()).await?;
    let mut one = with_media(&s, vec![e]).await?;
    one.pop()
        .map(Json)
        .ok_or_else(|| ApiError::internal("evidence vanished while being read"))
}

fn content_type(e: &Evidence) -> &'static str {
    let name = e.file_name.as_str().to_ascii_lowercase();
    let ext = name.rsplit_once('.').map(|(_, x)| x).unwrap_or("");
    match ext {
        "mp4" | "m4v" => "video/mp4",
        "mov" => "video/quicktime",
        "avi" => "video/x-msvideo",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "aac" => "audio/aac",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Which bytes a Range header asks for: `None` for the whole object (no header, or several ranges, which
/// this server answers in full as RFC 9110 allows), or one range (end exclusive).
pub(crate) fn requested_range(
    headers: &HeaderMap,
    size: u64,
) -> Result<Option<std::ops::Range<u64>>, ApiError> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let s = value
        .to_str()
        .map_err(|_| ApiError::bad_request("range: header is not ASCII"))?;
    let parsed = http_range_header::parse_range_header(s).map_err(|e| {
        ApiError::new(
            ErrorCode::OutOfRange,
            format!("range: cannot parse {s:?}: {e}"),
        )
    })?;
    let ranges = parsed.validate(size).map_err(|e| {
        ApiError::new(
            ErrorCode::OutOfRange,
            format!("range: {s:?} does not fit {size} bytes: {e}"),
        )
    })?;
    match ranges.as_slice() {
        [one] => Ok(Some(*one.start()..one.end() + 1)),
        _ => Ok(None),
    }
}

/// The range a request asks for, or the 416 answer (with `Content-Range: bytes */size`) to send instead.
pub(crate) fn range_or_refusal(
    headers: &HeaderMap,
    size: u64,
) -> Result<Result<Option<std::ops::Range<u64>>, Response>, ApiError> {
    match requested_range(headers, size) {
        Ok(r) => Ok(Ok(r)),
        Err(e) if e.code() == ErrorCode::OutOfRange => {
            let mut resp = e.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            Ok(Err(resp))
        }
        Err(e) => Err(e),
    }
}

/// A 200 or 206 answer streaming stored bytes, with the headers every download carries: content type
/// and length, `Accept-Ranges`, the SHA-256 as ETag and `X-Custody-Sha256`, and `Content-Range` for a range.
pub(crate) fn bytes_response<E: std::fmt::Display + Send + Sync + 'static>(
    stream: futures::stream::BoxStream<'static, Result<axum::body::Bytes, E>>,
    content_type: &str,
    sha256: &custody_core::Sha256,
    served: std::ops::Range<u64>,
    size: u64,
    partial: bool,
) -> Response {
    let body =
        Body::from_stream(stream.map(|r| r.map_err(|e| std::io::Error::other(e.to_string()))));
    let mut resp = Response::new(body);
    *resp.status_mut() = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let h = resp.headers_mut();
    let mut set = |name: header::HeaderName, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(name, v);
        }
    };
    set(header::CONTENT_TYPE, content_type.to_string());
    set(
        header::CONTENT_LENGTH,
        (served.end - served.start).to_string(),
    );
    set(header::ACCEPT_RANGES, "bytes".to_string());
    set(header::ETAG, format!("\"{}\"", sha256.to_hex()));
    set(
        header::HeaderName::from_static("x-custody-sha256"),
        sha256.to_hex(),
    );
    if partial {
        set(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{size}", served.start, served.end - 1),
        );
    }
    resp
}

/// Download the original
///
/// The original's bytes, with HTTP Range. Needs a live download request approved by another supervisor
/// (`/api/v1/requests`); the download is a ledger event written before the first byte leaves.
#[utoipa::path(
    get,
    path = "/api/v1/evidence/{id}/content",
    tag = "evidence",
    params(EvidencePath, RangeHeader),
    responses(
        OriginalBytes,
        EvidenceRefusals,
        (status = 403, description = "not the caller's to see, or no approved download request (audited)", body = ErrorBody),
        DeletedBytes,
    )
)]
pub(crate) async fn content(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    s.cases
        .check_evidence_access(actor.user(), id, "evidence.download")
        .await?;
    let evidence = s.ingest.evidence(id).await?;
    // 410, saying when and why, once retention deleted the bytes (before asking for an approval that
    // could not help).
    custody_ingest::require_bytes(&evidence)?;
    // Approval before copy: an original leaves only on a live request approved by another
    // supervisor; without one the refusal is audited and says how to ask.
    s.requests.require_download(actor.user(), id).await?;
    let size = evidence.size;
    let range = match range_or_refusal(&headers, size)? {
        Ok(r) => r,
        Err(refusal) => return Ok(refusal),
    };
    let partial = range.is_some();
    let ctype = content_type(&evidence);
    let sha256 = evidence.sha256;
    let disposition = format!(
        "attachment; filename*=UTF-8''{}",
        percent_encode(evidence.file_name.as_str())
    );
    // The download is in the ledger before the first byte leaves.
    s.ingest
        .record_download(evidence.id, &actor.label())
        .await?;
    let content = s.ingest.content(evidence, range).await?;
    let served = content.range.clone();
    let mut resp = bytes_response(content.stream, ctype, &sha256, served, size, partial);
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// RFC 5987 encoding of a file name for Content-Disposition.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(range: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
        h
    }

    #[test]
    fn a_single_range_is_served_end_exclusive() {
        assert_eq!(
            requested_range(&headers("bytes=0-9"), 100).unwrap(),
            Some(0..10)
        );
        assert_eq!(
            requested_range(&headers("bytes=90-"), 100).unwrap(),
            Some(90..100)
        );
        assert_eq!(
            requested_range(&headers("bytes=-5"), 100).unwrap(),
            Some(95..100)
        );
    }

    #[test]
    fn a_range_past_the_end_is_out_of_range() {
        let e = requested_range(&headers("bytes=200-300"), 100).unwrap_err();
        assert_eq!(e.code(), ErrorCode::OutOfRange);
    }

    #[test]
    fn no_range_means_the_whole_object() {
        assert_eq!(requested_range(&HeaderMap::new(), 100).unwrap(), None);
    }

    #[test]
    fn file_names_are_percent_encoded_for_content_disposition() {
        assert_eq!(percent_encode("执法 1.mp4"), "%E6%89%A7%E6%B3%95%201.mp4");
    }
}
