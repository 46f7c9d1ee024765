//! `POST /api/v1/cases/{id}/export`: the export package of a case, as a ZIP download.
//!
//! The package is written to a temporary file by `custody-cases` (on a blocking thread) and streamed
//! from it, so that the response never holds a recording in memory. The file is unlinked as soon as it
//! is open; the open handle keeps its bytes until the response ends.

use crate::auth::Actor;
use crate::error::ErrorBody;
use crate::openapi::{Binary, CasePath, CaseRefusals};
use crate::people::bad;
use crate::{ApiError, ApiState};
use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Response, StatusCode, header};
use custody_core::CaseId;
use tokio::io::AsyncReadExt;

const CHUNK: usize = 1 << 20;

/// Export a case
///
/// The export package of a case as a ZIP download: linked originals, their ledger proofs, the case
/// record and a manifest that `custody verify package` checks offline. Needs read access to the case and
/// a live export request approved by another supervisor.
#[utoipa::path(
    post,
    path = "/api/v1/cases/{id}/export",
    tag = "cases",
    params(CasePath),
    responses(
        (status = 200, description = "the package", content_type = "application/zip", body = Binary, headers(
            ("Content-Disposition" = String, description = "attachment; `custody-export-<case no>-<package id>.zip`"),
            ("X-Custody-Package-Id" = String, description = "the package id, as in its manifest"),
        )),
        CaseRefusals,
        (status = 403, description = "not the caller's to read, or no approved export request (audited)", body = ErrorBody),
        (status = 409, description = "the case has no linked evidence to export", body = ErrorBody),
    )
)]
pub(crate) async fn export(
    State(s): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Response<Body>, ApiError> {
    let id = CaseId::parse(&id).map_err(bad)?;
    let tmp = tokio::task::spawn_blocking(tempfile::NamedTempFile::new)
        .await
        .map_err(|e| ApiError::internal(format!("temporary file task failed: {e}")))?
        .map_err(|e| {
            ApiError::internal(format!("creating a temporary file for the export: {e}"))
        })?;
    let summary = s.exporter.export(actor.user(), id, tmp.path()).await?;
    let file = tokio::task::spawn_blocking(move || {
        let f = tmp.reopen();
        drop(tmp); // unlinks the path; the open handle keeps the bytes
        f
    })
    .await
    .map_err(|e| ApiError::internal(format!("temporary file task failed: {e}")))?
    .map_err(|e| ApiError::internal(format!("reopening the export package: {e}")))?;
    let len = file.metadata().map(|m| m.len()).ok();
    let file = tokio::fs::File::from_std(file);
    let stream = futures::stream::try_unfold(file, |mut f| async move {
        let mut buf = vec![0u8; CHUNK];
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok::<_, std::io::Error>(None);
        }
        buf.truncate(n);
        Ok(Some((bytes_of(buf), f)))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = StatusCode::OK;
    let name = format!(
        "custody-export-{}-{}.zip",
        sanitize(&summary.case_no),
        summary.package_id
    );
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some(len) = len
        && let Ok(v) = HeaderValue::from_str(&len.to_string())
    {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if let Ok(v) = HeaderValue::from_str(&summary.package_id.to_string()) {
        h.insert("x-custody-package-id", v);
    }
    Ok(resp)
}

fn bytes_of(v: Vec<u8>) -> axum::body::Bytes {
    axum::body::Bytes::from(v)
}

/// A case number as an ASCII file-name part: anything but letters, digits, `-` and `_` becomes `_`.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_numbers_become_safe_ascii_file_name_parts() {
        assert_eq!(
            sanitize("深公(福)行罚决字[2026]1号"),
            // Ten characters before the year (深公(福)行罚决字[), then "]", then 号.
            "__________2026_1_"
        );
        assert_eq!(sanitize("A-2026_7"), "A-2026_7");
    }
}
