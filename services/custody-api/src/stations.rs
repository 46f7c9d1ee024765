//! `/api/v1/stations`: docking stations with their newest heartbeat and slot status, for the command
//! centre. Status arrives over MQTT; these routes only read it.

use crate::error::ErrorBody;
use crate::{ApiError, ApiState};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use custody_core::StationId;
use custody_ingest::StationView;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page (the last station id it held).
    cursor: Option<String>,
}

/// A page of stations, by id.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = StationPage)]
pub(crate) struct ListJson {
    items: Vec<StationView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// List docking stations
///
/// By id, with each one's newest heartbeat and slot report. Admins, auditors and commanders.
#[utoipa::path(
    get,
    path = "/api/v1/stations",
    operation_id = "list_stations",
    tag = "stations",
    params(ListQuery),
    responses(
        (status = 200, description = "a page of stations", body = ListJson),
        (status = 400, description = "the limit or the cursor is malformed", body = ErrorBody),
        (status = 403, description = "the caller may not read stations (audited)", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(s): State<ApiState>,
    Extension(actor): Extension<crate::auth::Actor>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListJson>, ApiError> {
    actor
        .require(
            &s,
            custody_core::access::Capability::ReadStations,
            "station.read",
        )
        .await?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit: must be between 1 and {MAX_LIMIT}, got {limit}"
        )));
    }
    let after = q
        .cursor
        .as_deref()
        .map(|c| {
            StationId::parse(c).map_err(|_| {
                ApiError::bad_request(format!(
                    "cursor: expected a token returned as next_cursor by a previous page, got {c:?}"
                ))
            })
        })
        .transpose()?;
    // One more than asked tells whether another page follows.
    let mut items = s.stations.list(after.as_ref(), limit + 1).await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|v| v.id.to_string())
    } else {
        None
    };
    Ok(Json(ListJson { items, next_cursor }))
}

/// One docking station
#[utoipa::path(
    get,
    path = "/api/v1/stations/{id}",
    operation_id = "get_station",
    tag = "stations",
    params(("id" = StationId, Path, description = "station id")),
    responses(
        (status = 200, description = "the station", body = StationView),
        (status = 400, description = "the id is malformed", body = ErrorBody),
        (status = 403, description = "the caller may not read stations (audited)", body = ErrorBody),
        (status = 404, description = "no such station", body = ErrorBody),
    )
)]
pub(crate) async fn get_one(
    State(s): State<ApiState>,
    Extension(actor): Extension<crate::auth::Actor>,
    Path(id): Path<String>,
) -> Result<Json<StationView>, ApiError> {
    actor
        .require(
            &s,
            custody_core::access::Capability::ReadStations,
            "station.read",
        )
        .await?;
    let id = StationId::parse(id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Json(s.stations.get(&id).await?))
}
