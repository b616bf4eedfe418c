//! A Resource API write, once done, is rolled out: with `--xds-listen`, the repository's new
//! table is published over ECDS and the answer waits, bounded by `--xds-ack-timeout-ms`,
//! until every subscribed Envoy applied it. The answer keeps its status either way (the write
//! is done, at the AS and in the repository: a client must not repeat it) and says how the
//! rollout went in `x-uma-pep-rollout`; when an Envoy refused it or did not answer in time, a
//! `Warning` says so, and pepctl logs it at warn.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::state::Shared;
use crate::xds::hub::{Rollout, SubscriberStatus};

/// The header that says how a write's table reached the Envoys.
pub const ROLLOUT_HEADER: &str = "x-uma-pep-rollout";

fn describe(r: &Rollout) -> String {
    format!(
        "version={}; envoys={}; applied={}; refused={}; pending={}; waited_ms={}",
        r.version,
        r.envoys,
        r.applied,
        r.refused.len(),
        r.pending.len(),
        r.waited_ms
    )
}

/// The `Warning` of a rollout that did not reach every Envoy.
fn warning(r: &Rollout, timeout_ms: u128) -> String {
    let mut parts = Vec::new();
    if !r.refused.is_empty() {
        parts.push(format!("refused by {} (they keep the table they had)", r.refused.len()));
    }
    if !r.pending.is_empty() {
        parts.push(format!("not applied within {timeout_ms} ms by {}", r.pending.len()));
    }
    format!(
        "199 pepctl \"done, but the filter configuration {} of {} Envoys: see GET /xds-status\"",
        parts.join(" and "),
        r.envoys
    )
}

pub async fn roll_out_writes(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let writes = matches!(*request.method(), Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    let mut response = next.run(request).await;
    let Some(publisher) = state.xds.as_ref().filter(|_| writes && response.status().is_success()) else {
        return response;
    };
    let headers = response.headers_mut();
    match publisher.roll_out(&state.repo).await {
        Ok(rollout) => {
            if let Ok(v) = HeaderValue::from_str(&describe(&rollout)) {
                headers.insert(ROLLOUT_HEADER, v);
            }
            if !rollout.complete() {
                if let Ok(v) = HeaderValue::from_str(&warning(&rollout, publisher.ack_timeout.as_millis())) {
                    headers.append(axum::http::header::WARNING, v);
                }
            }
        }
        Err(e) => {
            // The watcher publishes it on its next look; meanwhile the Envoys keep the last table.
            tracing::warn!(error = %e, "the write is done but its table could not be published");
            headers.append(
                axum::http::header::WARNING,
                HeaderValue::from_static(
                    "199 pepctl \"done, but the filter configuration could not be published: see pepctl's log\"",
                ),
            );
        }
    }
    response
}

/// What `GET /xds-status` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct XdsStatus {
    /// Whether pepctl serves the filter configuration over xDS (`--xds-listen`).
    pub serving: bool,
    /// The version in force (`<generation>.<repository version>`), as Envoy's config dump shows it.
    pub version: Option<String>,
    /// Every subscribed Envoy, by node id, with what it applied or refused last.
    pub envoys: Vec<SubscriberStatus>,
}

/// `GET /xds-status`: the Envoys subscribed over xDS and the version each applied.
#[utoipa::path(get, path = "/xds-status", tag = "filter",
    summary = "The Envoys subscribed over xDS and the version each applied",
    security(()),
    responses((status = 200, description = "the subscribed Envoys", body = XdsStatus)))]
pub async fn xds_status(State(state): State<Shared>) -> Json<XdsStatus> {
    Json(match &state.xds {
        None => XdsStatus { serving: false, version: None, envoys: Vec::new() },
        Some(p) => XdsStatus {
            serving: true,
            version: p.hub.current().map(|c| c.version_info.clone()),
            envoys: p.hub.status(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warning_names_refusals_and_silence() {
        let r = Rollout {
            version: "g.3".into(),
            envoys: 3,
            applied: 1,
            refused: vec![("a".into(), "bad".into())],
            pending: vec!["b".into()],
            waited_ms: 2001,
        };
        assert_eq!(describe(&r), "version=g.3; envoys=3; applied=1; refused=1; pending=1; waited_ms=2001");
        let w = warning(&r, 2000);
        assert!(w.starts_with("199 pepctl \""), "{w}");
        assert!(
            w.contains("refused by 1") && w.contains("within 2000 ms by 1") && w.contains("of 3 Envoys"),
            "{w}"
        );
        assert!(HeaderValue::from_str(&w).is_ok());
    }
}
