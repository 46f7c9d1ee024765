//! The OpenAPI document, end to end: the real server serves it without a token, it is OpenAPI 3.x with
//! the bearer-token scheme, and what it says of each operation holds on the wire: every documented
//! operation is routed (neither the fallback's 404 nor 405), and without a token it answers 401 exactly
//! when the document asks for the token.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::*;
use serde_json::{Value, json};

async fn document(app: &TestApp) -> Value {
    let r = reqwest::get(format!("{}/api/v1/openapi.json", app.http))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the document needs no token");
    assert_eq!(
        r.headers()[reqwest::header::CONTENT_TYPE],
        "application/json"
    );
    r.json().await.unwrap()
}

#[tokio::test]
async fn the_openapi_document_is_served_without_a_token_and_describes_the_api() {
    let app = spawn_app(Backends::Embedded).await;
    let doc = document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Custody");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(doc["security"], json!([{"bearer": []}]));
    for (method, path) in [
        ("get", "/healthz"),
        ("get", "/ledger/checkpoint"),
        ("get", "/api/v1/openapi.json"),
        ("post", "/api/v1/sessions"),
        ("get", "/api/v1/evidence"),
        ("get", "/api/v1/evidence/{id}/content"),
        ("get", "/api/v1/evidence/{id}/proxy"),
        ("get", "/api/v1/ledger/proof/inclusion"),
        ("post", "/api/v1/cases/{id}/export"),
        ("post", "/api/v1/requests/{id}/approve"),
        ("patch", "/api/v1/users/{name}"),
        ("get", "/api/v1/stations/{id}"),
        ("get", "/api/v1/live"),
        ("delete", "/api/v1/geofences/{id}"),
        ("post", "/api/v1/mqtt/auth"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    // Error answers carry the crate's error body.
    let not_found = &doc["paths"]["/api/v1/evidence/{id}"]["get"]["responses"]["404"];
    assert_eq!(
        not_found["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );
    let error = &doc["components"]["schemas"]["ErrorDetail"];
    let codes = error["properties"]["code"]["enum"].as_array().unwrap();
    assert!(codes.contains(&json!("permission_denied")), "{codes:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_asks_for_a_token_exactly_when_documented() {
    let app = spawn_app(Backends::Embedded).await;
    let doc = document(&app).await;
    let anonymous = reqwest::Client::new();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        // Any value will do: the authentication layer answers before a parameter is read, and the
        // public routes answer a bad one with their own 400 or 404.
        let url = format!(
            "{}{}",
            app.http,
            fill(path, "00000000-0000-0000-0000-000000000000")
        );
        for (method, op) in item.as_object().unwrap() {
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let r = anonymous
                .request(method.clone(), &url)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            assert_ne!(
                status, 405,
                "{method} {path}: the router has no such method"
            );
            assert!(
                !(status == 404 && body.contains("no such route")),
                "{method} {path}: the router has no such path"
            );
            let public = op.get("security") == Some(&json!([{}]));
            if public {
                assert_ne!(
                    status, 401,
                    "{method} {path} is documented as public: {body}"
                );
            } else {
                assert_eq!(
                    status, 401,
                    "{method} {path} is documented as needing a token: {body}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} operations");
    app.shutdown().await;
}

/// `path` with every `{parameter}` replaced by `value`.
fn fill(path: &str, value: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').unwrap() + open;
        out.push_str(&rest[..open]);
        out.push_str(value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}
