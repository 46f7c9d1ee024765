//! The OpenAPI 3.1 document of the HTTP API, served without a token at `GET /api/v1/openapi.json`.
//!
//! It is generated from the code: each handler carries its own `#[utoipa::path]` (method, path,
//! parameters, body, answers), the JSON types derive `ToSchema` next to their serde attributes, and the
//! wire types of the domain crates derive theirs behind those crates' `openapi` feature. [`ApiDoc`] lists
//! the documented handlers, in one place: a route added to the router (`crate::routes`) is added there
//! too, and a test fails while the router serves a route the list lacks, or the other way round.
//!
//! Answers that every handler of a kind gives are added here rather than repeated on each handler
//! ([`CommonAnswers`]): the 401 of the authentication layer, the opaque 500, and axum's plain-text
//! refusals of a JSON body it cannot read.

use crate::error::ErrorBody;
use crate::{
    ApiError, cases, evidence, export, ledger, media, people, requests, retention, stations,
    telemetry,
};
use axum::http::header;
use axum::response::IntoResponse;
use std::collections::BTreeMap;
use std::sync::LazyLock;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    Content, HeaderBuilder, KnownFormat, ObjectBuilder, RefOr, Required, Response, ResponseBuilder,
    SchemaFormat, Type,
};
use utoipa::{IntoParams, IntoResponses, OpenApi, PartialSchema, ToSchema};

/// The name of the bearer-token security scheme (also spelled out in `ApiDoc`'s `security`).
const BEARER: &str = "bearer";

/// Operations whose handler answers an unreadable JSON body itself, with the JSON error body and 400,
/// instead of axum's plain-text 400, 415 and 422.
const OWN_BODY_REFUSALS: &[&str] = &["ack", "add_fence"];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Custody",
        version = env!("CARGO_PKG_VERSION"),
        description = "Evidence custody for body-worn recorders: evidence and its media, the \
            tamper-evident ledger, cases and their recording coverage, approval before copy, people and \
            recorder check-outs, docking stations, and the command centre's live telemetry.\n\n\
            Every `/api/v1` route needs a user session, `Authorization: Bearer <token>` (log in with \
            `POST /api/v1/sessions`), except logging in, the public ledger proofs, the MQTT broker hooks \
            and this document. Errors answer with the JSON body `ErrorBody`, whose `code` is shared with \
            the gRPC API.",
        license(name = "Apache-2.0"),
    ),
    paths(
        // service
        crate::healthz,
        crate::readyz,
        crate::metrics,
        document,
        // sessions
        people::login,
        people::logout,
        people::me,
        // evidence
        evidence::list,
        evidence::get_one,
        evidence::content,
        // media
        media::poster,
        media::thumbs,
        media::proxy,
        // ledger
        ledger::checkpoint,
        ledger::tile,
        ledger::inclusion,
        ledger::consistency,
        ledger::history,
        ledger::receipt,
        // retention
        retention::get_one,
        retention::set_marks,
        retention::hold,
        retention::release,
        // cases
        cases::list,
        cases::create,
        cases::get_one,
        cases::set_status,
        cases::history,
        cases::steps,
        cases::add_step,
        cases::explain,
        cases::links,
        cases::link,
        cases::unlink,
        cases::coverage,
        export::export,
        // requests
        requests::list,
        requests::create,
        requests::get_one,
        requests::approve,
        requests::refuse,
        requests::withdraw,
        // people
        people::list_users,
        people::add_user,
        people::update_user,
        people::audit_log,
        people::list_officers,
        people::get_officer,
        people::put_officer,
        people::checkout,
        people::return_recorder,
        people::checkouts,
        // stations
        stations::list,
        stations::get_one,
        // telemetry
        telemetry::live,
        telemetry::latest,
        telemetry::nearest,
        telemetry::track,
        telemetry::alarms,
        telemetry::alarm,
        telemetry::ack,
        telemetry::fences,
        telemetry::add_fence,
        telemetry::fence_events,
        telemetry::delete_fence,
        // mqtt
        telemetry::broker_auth,
        telemetry::broker_acl,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerToken, &CommonAnswers),
    security(("bearer" = [])),
    tags(
        (name = "service", description = "Liveness, readiness, metrics and this document"),
        (name = "sessions", description = "Logging in and out"),
        (name = "evidence", description = "Evidence: listing, metadata and the originals (approval before copy)"),
        (name = "media", description = "What the media pipeline made of an item: poster, thumbnails, browser proxy"),
        (name = "ledger", description = "The tamper-evident evidence ledger: public checkpoints, tiles and proofs; each item's history and receipt"),
        (name = "cases", description = "Cases, their status flow, steps, evidence links, recording coverage and export packages"),
        (name = "requests", description = "Approval before copy: download and export requests and their decisions"),
        (name = "people", description = "Accounts, the audit log, the officer registry and recorder check-outs"),
        (name = "stations", description = "Docking stations and the state of their slots"),
        (name = "telemetry", description = "The command centre: live feed, positions, tracks, alarms and geofences. Coordinates are WGS-84 unless `crs=gcj02`"),
        (name = "mqtt", description = "HTTP hooks an external MQTT broker (EMQX) calls to authenticate and authorize devices and stations"),
    )
)]
pub(crate) struct ApiDoc;

/// The document as JSON, built once.
static DOCUMENT: LazyLock<Result<String, String>> =
    LazyLock::new(|| ApiDoc::openapi().to_json().map_err(|e| e.to_string()));

/// This document
///
/// The OpenAPI document of this API. Public: it describes, it holds no data.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "service",
    security(()),
    responses((status = 200, description = "the OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub(crate) async fn document() -> Result<impl IntoResponse, ApiError> {
    let json = DOCUMENT
        .as_deref()
        .map_err(|e| ApiError::internal(format!("serialising the OpenAPI document: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json))
}

type Answers = BTreeMap<String, RefOr<Response>>;

/// Answers with the JSON error body, by status.
fn refusals<const N: usize>(list: [(&str, &str); N]) -> Answers {
    list.into_iter()
        .map(|(status, description)| (status.to_string(), error(description)))
        .collect()
}

/// The refusals of a route about the evidence item named in its path. (The types of this kind are
/// empty enums: they only name a set of answers for `responses(...)`.)
pub(crate) enum EvidenceRefusals {}

impl IntoResponses for EvidenceRefusals {
    fn responses() -> Answers {
        refusals([
            ("400", "the id is not a UUID"),
            ("403", "not the caller's to see (audited)"),
            ("404", "no such evidence"),
        ])
    }
}

/// The answer of a route that needs an item's bytes (or changes its retention) once retention deleted
/// them: the row remains as a tombstone.
pub(crate) enum DeletedBytes {}

impl IntoResponses for DeletedBytes {
    fn responses() -> Answers {
        refusals([(
            "410",
            "retention deleted the item's bytes (its record and ledger history remain); the message says when and why",
        )])
    }
}

/// The refusals of a route that reads the case named in its path.
pub(crate) enum CaseRefusals {}

impl IntoResponses for CaseRefusals {
    fn responses() -> Answers {
        refusals([
            ("400", "the id is not a UUID"),
            (
                "403",
                "the caller neither handles the case nor reads every case (audited)",
            ),
            ("404", "no such case"),
        ])
    }
}

/// The refusals of a route that changes the case named in its path.
pub(crate) enum CaseChangeRefusals {}

impl IntoResponses for CaseChangeRefusals {
    fn responses() -> Answers {
        refusals([
            ("400", "the id or a field is malformed"),
            ("403", "the caller may not manage this case (audited)"),
            ("404", "no such case"),
            ("409", "the case is closed"),
        ])
    }
}

/// The id of the evidence item a route is about, in its path.
pub(crate) enum EvidencePath {}

impl IntoParams for EvidencePath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![path_id::<custody_core::EvidenceId>("evidence id")]
    }
}

/// The id of the case a route is about, in its path.
pub(crate) enum CasePath {}

impl IntoParams for CasePath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![path_id::<custody_core::CaseId>("case id")]
    }
}

/// The path parameter `id`, of the schema of `T`.
fn path_id<T: ToSchema>(description: &str) -> Parameter {
    ParameterBuilder::new()
        .name("id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
            T::name(),
        ))))
        .build()
}

/// The `Range` header of a route that serves bytes.
pub(crate) enum RangeHeader {}

impl IntoParams for RangeHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("Range")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "one byte range, e.g. `bytes=0-1023`; several ranges are answered with the whole file",
                ))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build(),
        ]
    }
}

/// A body of raw bytes.
pub(crate) enum Binary {}

impl utoipa::PartialSchema for Binary {
    fn schema() -> RefOr<utoipa::openapi::Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl utoipa::ToSchema for Binary {}

/// The answers of a route that serves stored bytes of `content_type` with HTTP Range: the whole file
/// (with `headers` besides the usual), a range, or 416.
fn ranged(content_type: &str, headers: &[(&str, &str)]) -> Answers {
    let bytes = || Content::new(Some(Binary::schema()));
    let header = |description: &str| {
        HeaderBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .description(Some(description))
            .build()
    };
    let whole = ResponseBuilder::new()
        .description("the whole file")
        .content(content_type, bytes())
        .header("ETag", header("the file's SHA-256, quoted"))
        .header("X-Custody-Sha256", header("the file's SHA-256, hex"))
        .header("Accept-Ranges", header("`bytes`"));
    let whole = headers.iter().fold(whole, |r, (name, description)| {
        r.header(*name, header(description))
    });
    let mut out = Answers::new();
    out.insert("200".into(), whole.into());
    out.insert(
        "206".into(),
        ResponseBuilder::new()
            .description("the range asked for in `Range`")
            .content(content_type, bytes())
            .header("Content-Range", header("`bytes first-last/size`"))
            .into(),
    );
    out.insert(
        "416".into(),
        ResponseBuilder::new()
            .description("the range lies outside the file")
            .content("application/json", Content::new(Some(error_schema())))
            .header("Content-Range", header("`bytes */size`"))
            .into(),
    );
    out
}

/// An original, with HTTP Range.
pub(crate) enum OriginalBytes {}

impl IntoResponses for OriginalBytes {
    fn responses() -> Answers {
        ranged(
            "application/octet-stream",
            &[(
                "Content-Disposition",
                "`attachment` with the original file name",
            )],
        )
    }
}

/// A JPEG made from an item (poster, thumbnail strip), with HTTP Range.
pub(crate) enum JpegBytes {}

impl IntoResponses for JpegBytes {
    fn responses() -> Answers {
        ranged("image/jpeg", &[])
    }
}

/// An MP4 made from an item (browser proxy), with HTTP Range.
pub(crate) enum Mp4Bytes {}

impl IntoResponses for Mp4Bytes {
    fn responses() -> Answers {
        ranged("video/mp4", &[])
    }
}

/// Declares the bearer-token scheme the document's `security` names.
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut http = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        http.description = Some(
            "A session token from `POST /api/v1/sessions`, as `Authorization: Bearer <token>`. \
             `/api/v1/live` also takes it as the `access_token` query parameter."
                .into(),
        );
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER, SecurityScheme::Http(http));
    }
}

/// Adds the answers that come from layers and extractors rather than from handlers.
struct CommonAnswers;

impl utoipa::Modify for CommonAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                let answers = &mut op.responses.responses;
                // No `security` of its own: the document's bearer token applies, and so does the
                // authentication layer's refusal.
                if op.security.is_none() {
                    answers.entry("401".into()).or_insert_with(|| {
                        error(
                            "no session: the bearer token is missing, unknown, expired or not a user's",
                        )
                    });
                }
                answers.entry("500".into()).or_insert_with(|| {
                    error("an internal error; the message only points at the server log")
                });
                let own = op
                    .operation_id
                    .as_deref()
                    .is_some_and(|id| OWN_BODY_REFUSALS.contains(&id));
                if op.request_body.is_some() && !own {
                    body_refusals(answers);
                }
            }
        }
    }
}

/// An answer with the JSON error body.
fn error(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", Content::new(Some(error_schema())))
        .into()
}

fn error_schema() -> RefOr<utoipa::openapi::Schema> {
    RefOr::Ref(utoipa::openapi::Ref::from_schema_name("ErrorBody"))
}

/// axum's `Json` extractor refuses a body it cannot read before the handler runs, in plain text: 400
/// for a body that is not JSON, 415 without `Content-Type: application/json`, 422 for JSON that does
/// not fit the type.
fn body_refusals(answers: &mut Answers) {
    match answers.get_mut("400") {
        Some(RefOr::T(r)) => {
            r.description
                .push_str("; or, in plain text, the body is not JSON");
            r.content.insert("text/plain".into(), RefOr::T(text()));
        }
        _ => {
            answers.insert(
                "400".into(),
                ResponseBuilder::new()
                    .description("the body is not JSON (plain text)")
                    .content("text/plain", text())
                    .into(),
            );
        }
    }
    answers.entry("415".into()).or_insert_with(|| {
        ResponseBuilder::new()
            .description("the body is not `Content-Type: application/json` (plain text)")
            .content("text/plain", text())
            .into()
    });
    answers.entry("422".into()).or_insert_with(|| {
        ResponseBuilder::new()
            .description("the JSON body lacks a field or a field has the wrong type (plain text)")
            .content("text/plain", text())
            .into()
    });
}

/// A plain-text body.
fn text() -> Content {
    Content::new(Some(ObjectBuilder::new().schema_type(Type::String).build()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeSet;

    type Routes = BTreeSet<(String, String)>;

    /// Method and path of every route the router serves. axum has no public way to list them, so they
    /// are read from the router's `Debug` output: `RouteId(n): MethodRouter(MethodRouter { get: …,
    /// post: None, … })` per route and `RouteId(n): "/path"` in its path table. A change of that format
    /// fails `the_router_can_be_read` rather than passing silently.
    fn served() -> Routes {
        let router = crate::routes(tower::layer::util::Identity::new());
        let text = format!("{router:?}");
        let start = text.find("path_router:").expect("a path router");
        let end = text.find("fallback_router:").expect("a fallback router");
        let paths_at = text[start..end].find("node: Node").expect("a node") + start;
        let (endpoints, node) = (&text[start..paths_at], &text[paths_at..end]);
        let paths: std::collections::HashMap<&str, &str> = entries(node)
            .map(|(id, rest)| (id, rest.split('"').nth(1).expect("a quoted path")))
            .collect();
        let mut out = Routes::new();
        for (id, rest) in entries(endpoints) {
            let fields = rest
                .strip_prefix("MethodRouter(MethodRouter { ")
                .expect("a method router")
                .split("fallback:")
                .next()
                .expect("method fields");
            let methods: Vec<&str> = fields
                .split(", ")
                .filter_map(|f| f.split_once(": "))
                .filter(|(_, endpoint)| endpoint.trim() != "None")
                .map(|(m, _)| m)
                .collect();
            let path = normalise(paths[id]);
            for m in &methods {
                // A GET route answers HEAD too; HEAD is not listed on its own.
                if *m == "head" && methods.contains(&"get") {
                    continue;
                }
                out.insert((m.to_uppercase(), path.clone()));
            }
        }
        out
    }

    /// `(id, what follows "RouteId(id): ")` for each route id in `text`.
    fn entries(text: &str) -> impl Iterator<Item = (&str, &str)> {
        text.split("RouteId(").skip(1).filter_map(|part| {
            let (id, rest) = part.split_once(')')?;
            Some((id, rest.strip_prefix(": ")?))
        })
    }

    /// An axum path in OpenAPI's spelling: a wildcard `{*rest}` is a parameter `{rest}`.
    fn normalise(path: &str) -> String {
        path.replace("{*", "{")
    }

    fn document() -> serde_json::Value {
        serde_json::from_str(DOCUMENT.as_ref().unwrap()).unwrap()
    }

    fn documented() -> Routes {
        let doc = document();
        let mut out = Routes::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in [
                "get", "put", "post", "delete", "patch", "head", "options", "trace",
            ] {
                if item.get(method).is_some() {
                    out.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn the_router_can_be_read() {
        let served = served();
        assert!(served.len() > 50, "found only {served:?}");
        for route in [
            ("GET", "/healthz"),
            ("POST", "/api/v1/sessions"),
            ("DELETE", "/api/v1/geofences/{id}"),
        ] {
            assert!(
                served.contains(&(route.0.to_string(), route.1.to_string())),
                "{route:?} not found in the router's Debug output; did axum change its format?"
            );
        }
    }

    #[test]
    fn every_route_is_documented_and_every_documented_route_is_served() {
        let served = served();
        let documented = documented();
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty(),
            "routes without an OpenAPI operation (annotate the handler with #[utoipa::path] and list it in openapi::ApiDoc): {undocumented:?}"
        );
        assert!(
            unserved.is_empty(),
            "OpenAPI operations the router does not serve: {unserved:?}"
        );
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = document();
        let mut seen = BTreeSet::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                if let Some(id) = op.get("operationId").and_then(|v| v.as_str()) {
                    assert!(
                        seen.insert(id.to_string()),
                        "operationId {id} is used twice"
                    );
                }
            }
        }
        for id in OWN_BODY_REFUSALS {
            assert!(
                seen.contains(*id),
                "OWN_BODY_REFUSALS names {id}, which no operation has"
            );
        }
    }

    #[test]
    fn every_operation_is_tagged_and_every_tag_declared() {
        let doc = document();
        let declared: BTreeSet<&str> = doc["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let tags: Vec<&str> = op["tags"]
                    .as_array()
                    .map(|t| t.iter().filter_map(|t| t.as_str()).collect())
                    .unwrap_or_default();
                assert!(
                    !tags.is_empty() && tags.iter().all(|t| declared.contains(t)),
                    "{method} {path} has tags {tags:?}; declared are {declared:?}"
                );
            }
        }
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected reference {r}"));
            assert!(schemas.contains_key(name), "{r} has no schema");
        }
    }

    fn collect_refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v.as_str()) {
                        ("$ref", Some(r)) => out.push(r.to_string()),
                        _ => collect_refs(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn user_session_operations_say_so_and_answer_401() {
        let doc = document();
        assert_eq!(doc["security"], serde_json::json!([{ BEARER: [] }]));
        assert_eq!(
            doc["components"]["securitySchemes"][BEARER]["scheme"],
            "bearer"
        );
        let evidence = &doc["paths"]["/api/v1/evidence"]["get"];
        assert!(evidence.get("security").is_none());
        assert_eq!(
            evidence["responses"]["401"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
        let login = &doc["paths"]["/api/v1/sessions"]["post"];
        assert_eq!(login["security"], serde_json::json!([{}]));
        assert!(
            login["responses"]["422"].is_object(),
            "axum's refusal of a bad body"
        );
    }
}
