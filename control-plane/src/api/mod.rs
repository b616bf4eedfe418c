//! `pepctl serve`: the Resource API of the seed (PEP-UC-005) with its ownership rules, made
//! safe: the caller is the verified `sub` of the bearer token (identity.rs); a user creates
//! only under a path they own; an operator (`isOperator`) may create on behalf of a user
//! (`uuid`) and transfer ownership (`ownership_id`), as may the owner; every error is a JSON
//! body `{"error","error_description"}` (with the seed's `Error` header for old clients).
//! Also `/openapi.json` (PEP-UC-007), `/docs`, and `/filter-config`, which the filter polls.
//!
//! The server starts without the AS: `/filter-config` and `/healthz` answer at once (the
//! filter keeps enforcing the table it has), the AS is reached in the background, retried
//! until it answers (and the changes a stop interrupted are settled there: `reconcile`), and
//! `/readyz` says 503 with the cause until then. Calls that need the
//! AS (every call with a token: its JWKS or userinfo verifies the caller) answer 503 meanwhile.
//!
//! One module per concern: `state` (what handlers share), `error` (the one error shape),
//! `extract` (caller and body), `views` (bodies and representations), `service` (the rules
//! and their AS/PDP/repository steps), `handlers`, `openapi` (the generated document),
//! `reconcile` (the intent journal settled at start), `rollout` (a write published over xDS and
//! waited for), `serve` (flags, AS connection, refresher, signals).

mod error;
mod extract;
mod handlers;
mod openapi;
mod reconcile;
mod rollout;
mod serve;
mod service;
mod state;
mod views;

use axum::routing::get;
use axum::Router;

pub use error::{ApiError, ErrorBody};
pub use openapi::document as openapi_document;
pub use reconcile::{settle_journal, ReconcileError};
pub use rollout::ROLLOUT_HEADER;
pub use serve::{serve, ServeArgs, ServeError};
pub use service::{PolicyPoint, Registry, ResourceService, ServiceError};
pub use state::{AppState, AsLink, Connected, Shared};

pub fn router(state: Shared) -> Router {
    let resources = Router::new()
        .route("/resources", get(handlers::list).post(handlers::create))
        .route(
            "/resources/{id}",
            get(handlers::show).put(handlers::replace).patch(handlers::patch).delete(handlers::remove),
        )
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), rollout::roll_out_writes));
    Router::new()
        .merge(resources)
        .route("/filter-config", get(handlers::filter_config))
        .route("/xds-status", get(rollout::xds_status))
        .route("/openapi.json", get(handlers::openapi))
        .route("/healthz", get(handlers::health))
        .route("/readyz", get(handlers::ready))
        .merge(crate::docs_page::routes())
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use http_body_util::BodyExt;
    use serde_json::{json, Value};
    use tower::ServiceExt;
    use url::Url;

    use crate::identity::{IdentityConfig, Verifier};
    use crate::pat::{ClientCredentials, PatSource};
    use crate::repository::{Repository, Source, StoredResource};
    use crate::resource_set::ResourceSetClient;

    /// AS clients whose URLs point at a closed port: a test that reached the AS would fail.
    fn dead_as() -> Connected {
        let http = reqwest::Client::new();
        let dead = |p: &str| Url::parse(&format!("http://127.0.0.1:9/{p}")).unwrap();
        let pat = Arc::new(PatSource::new(
            http.clone(),
            dead("token"),
            ClientCredentials { client_id: "c".into(), client_secret: "s".into() },
            uma_pep_core::config::AsProfile::Keycloak,
        ));
        Connected {
            resource_set: Arc::new(ResourceSetClient::new(
                http.clone(),
                dead("rs"),
                uma_pep_core::config::AsProfile::Keycloak,
                pat,
            )),
            verifier: Verifier::new(
                http,
                IdentityConfig {
                    issuer: "http://127.0.0.1:9".into(),
                    audience: None,
                    jwks_uri: None,
                    userinfo: None,
                    leeway_s: 0,
                },
            ),
        }
    }

    fn ready(repo: Repository) -> Shared {
        Arc::new(AppState::new(repo, AsLink::Ready(Arc::new(dead_as())), None))
    }

    struct Answer {
        status: StatusCode,
        headers: axum::http::HeaderMap,
        body: Value,
    }

    /// One request through the router, as a service: no socket.
    async fn call(state: &Shared, method: Method, path: &str, token: Option<&str>, body: &str) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        let response =
            router(state.clone()).oneshot(request.body(Body::from(body.to_string())).unwrap()).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Answer { status, headers, body }
    }

    fn stored(id: &str, uri: &str, owner: &str) -> StoredResource {
        StoredResource {
            id: id.into(),
            name: id.into(),
            uri: uri.into(),
            owner: owner.into(),
            scopes: vec!["protected_get".into()],
            description: None,
            source: Source::File,
            as_expires_at: None,
            created_at: 0,
            updated_at: 0,
            ..StoredResource::default()
        }
    }

    #[tokio::test]
    async fn unauthenticated_calls_get_json_401s() {
        let state = ready(Repository::open_in_memory().unwrap());
        for (method, path) in [
            (Method::GET, "/resources"),
            (Method::POST, "/resources"),
            (Method::GET, "/resources/x"),
            (Method::PUT, "/resources/x"),
            (Method::PATCH, "/resources/x"),
            (Method::DELETE, "/resources/x"),
        ] {
            let r = call(&state, method.clone(), path, None, "{}").await;
            assert_eq!(r.status, 401, "{method} {path}");
            assert_eq!(r.headers["www-authenticate"], "Bearer");
            assert_eq!(r.headers["error"], "no token passed");
            assert_eq!(r.body, json!({"error": "invalid_token", "error_description": "no token passed"}));
        }
        // An unsigned token with a made-up kid is refused without any AS call.
        let r = call(
            &state,
            Method::GET,
            "/resources",
            Some("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4IiwiaXNPcGVyYXRvciI6dHJ1ZX0."),
            "",
        )
        .await;
        assert_eq!(r.status, 401);
        assert_eq!(r.body["error_description"], "invalid token");
    }

    #[tokio::test]
    async fn filter_config_and_openapi_need_no_token() {
        let repo = Repository::open_in_memory().unwrap();
        repo.upsert(&stored("r1", "/a", "alice")).unwrap();
        repo.upsert(&stored("r2", "/b", "bob")).unwrap();
        let state = ready(repo.clone());
        let fc = call(&state, Method::GET, "/filter-config", None, "").await;
        assert_eq!(fc.headers["cache-control"], "no-store");
        assert_eq!(fc.body["version"], 2);
        assert_eq!(
            fc.body["resources"][0],
            json!({"id": "r1", "uri": "/a", "scopes": ["protected_get"], "name": "r1"})
        );
        // The table is what the filter's own parser accepts.
        let table =
            uma_pep_core::resource_table::ResourceTable::from_json(fc.body.to_string().as_bytes()).unwrap();
        assert_eq!(table.version, 2);
        let generation = repo.generation().unwrap();
        assert_eq!(table.generation.as_deref(), Some(generation.as_str()));
        repo.delete("r2").unwrap();
        let fc = call(&state, Method::GET, "/filter-config", None, "").await;
        assert_eq!(fc.body["version"], 3);
        assert_eq!(fc.body["resources"].as_array().unwrap().len(), 1);
        // The last one deleted: an empty table, of the same generation (which the filter takes).
        repo.delete("r1").unwrap();
        let fc = call(&state, Method::GET, "/filter-config", None, "").await;
        assert_eq!(fc.body["resources"], json!([]));
        assert_eq!(fc.body["generation"], generation.as_str());
        let doc = call(&state, Method::GET, "/openapi.json", None, "").await;
        assert_eq!(doc.body["info"]["title"], "Policy Enforcement Point Interfaces");
        assert!(doc.body["paths"]["/resources/{id}"]["delete"].is_object());
    }

    #[tokio::test]
    async fn without_the_as_the_table_is_served_and_readiness_says_why() {
        let repo = Repository::open_in_memory().unwrap();
        repo.upsert(&stored("r1", "/a", "alice")).unwrap();
        let cause = "discovery request failed: http://127.0.0.1:1/x: connection refused";
        let waiting = AsLink::Waiting { cause: cause.into(), attempts: 3 };
        let state = Arc::new(AppState::new(repo, waiting, None));
        let fc = call(&state, Method::GET, "/filter-config", None, "").await;
        assert_eq!(fc.body["resources"][0]["uri"], "/a");
        assert_eq!(call(&state, Method::GET, "/healthz", None, "").await.status, 200);
        let r = call(&state, Method::GET, "/readyz", None, "").await;
        assert_eq!(r.status, 503);
        assert_eq!(r.body["ready"], false);
        assert_eq!(r.body["attempts"], 3);
        assert!(r.body["error_description"].as_str().unwrap().contains("connection refused"), "{}", r.body);
        let r = call(&state, Method::POST, "/resources", Some("t"), "{}").await;
        assert_eq!(r.status, 503);
        assert_eq!(r.body["error"], "temporarily_unavailable");
        assert!(r.body["error_description"].as_str().unwrap().contains("connection refused"), "{}", r.body);
        let r = call(&state, Method::GET, "/resources", None, "").await;
        assert_eq!(r.status, 401, "no token is a 401 whether or not the AS is there");
        state.link.send_replace(AsLink::Ready(Arc::new(dead_as())));
        assert_eq!(call(&state, Method::GET, "/readyz", None, "").await.status, 200);
    }

    /// A stored resource whose every rule differs from its default.
    fn with_rules(id: &str, uri: &str, owner: &str) -> StoredResource {
        let mut methods = std::collections::BTreeMap::new();
        methods.insert("GET".to_string(), vec!["read".to_string()]);
        methods.insert("MKCOL".to_string(), vec!["write".to_string(), "admin".to_string()]);
        StoredResource {
            exact: true,
            methods: Some(methods),
            scopes_mode: uma_pep_core::resource::ScopesMode::Any,
            enforcement: uma_pep_core::resource::Enforcement::Permissive,
            scopes: vec!["read".into(), "write".into(), "admin".into()],
            ..stored(id, uri, owner)
        }
    }

    #[tokio::test]
    async fn the_filter_gets_each_resources_rules() {
        let repo = Repository::open_in_memory().unwrap();
        repo.upsert(&with_rules("r1", "/orders/{id}", "alice")).unwrap();
        repo.upsert(&stored("r2", "/users/{u}/**", "bob")).unwrap();
        let state = ready(repo);
        let fc = call(&state, Method::GET, "/filter-config", None, "").await;
        assert_eq!(
            fc.body["resources"][0],
            json!({"id": "r1", "uri": "/orders/{id}", "scopes": ["read", "write", "admin"], "name": "r1",
                   "exact": true, "methods": {"GET": ["read"], "MKCOL": ["write", "admin"]},
                   "scopes_mode": "any", "enforcement": "permissive"})
        );
        // Defaults are left out, as the filter writes them.
        assert_eq!(
            fc.body["resources"][1],
            json!({"id": "r2", "uri": "/users/{u}/**", "scopes": ["protected_get"], "name": "r2"})
        );
        let table =
            uma_pep_core::resource_table::ResourceTable::from_json(fc.body.to_string().as_bytes()).unwrap();
        assert_eq!(table.version, 2);
    }

    #[test]
    fn the_document_describes_what_is_sent() {
        let doc = serde_json::to_value(openapi_document()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let resource: Vec<&str> =
            schemas["Resource"]["properties"].as_object().unwrap().keys().map(String::as_str).collect();
        let sent = serde_json::to_value(views::ResourceView::from(&with_rules("r", "/a", "o"))).unwrap();
        let mut sent_keys: Vec<&str> = sent.as_object().unwrap().keys().map(String::as_str).collect();
        let mut documented = resource.clone();
        documented.sort_unstable();
        sent_keys.sort_unstable();
        assert_eq!(documented, sent_keys);
        // The rules are sent only when they differ from their default: not required.
        let required: Vec<&str> =
            schemas["Resource"]["required"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
        for rule in ["exact", "methods", "scopes_mode", "enforcement"] {
            assert!(!required.contains(&rule), "{rule} is not always sent");
        }
        let plain = serde_json::to_value(views::ResourceView::from(&stored("r", "/a", "o"))).unwrap();
        for key in required {
            assert!(plain.get(key).is_some(), "{key} is required and sent");
        }
        assert_eq!(schemas["NewResource"]["required"], json!(["name", "icon_uri"]));
        assert_eq!(schemas["ScopesMode"]["enum"], json!(["all", "any"]));
        assert_eq!(schemas["Enforcement"]["enum"], json!(["enforcing", "permissive", "disabled"]));
        for body in ["NewResource", "ResourceUpdate"] {
            for rule in ["exact", "methods", "scopes_mode", "enforcement"] {
                assert!(schemas[body]["properties"][rule].is_object(), "{body}.{rule}");
            }
        }
        // GET /resources answers a list (or one resource with ?path=), not one object.
        let listing =
            &doc["paths"]["/resources"]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
        assert_eq!(listing["$ref"], "#/components/schemas/Listing");
        let one_of = schemas["Listing"]["oneOf"].as_array().unwrap();
        assert!(one_of.iter().any(|s| s["type"] == "array"), "{one_of:?}");
        let table = uma_pep_core::resource_table::FilterTable {
            resources: vec![crate::rules::filter_resource(&with_rules("i", "/u", "o"))],
            version: 1,
            generation: Some("g".into()),
        };
        let sent = serde_json::to_value(&table).unwrap();
        for (object, schema) in [(&sent, "FilterTable"), (&sent["resources"][0], "FilterResource")] {
            let mut keys: Vec<&str> = object.as_object().unwrap().keys().map(String::as_str).collect();
            let mut props: Vec<&str> =
                schemas[schema]["properties"].as_object().unwrap().keys().map(String::as_str).collect();
            keys.sort_unstable();
            props.sort_unstable();
            assert_eq!(keys, props, "{schema}");
        }
    }
}
