//! The seed's PDP hook: when a resource is created through the API, its default ownership
//! policy is registered at the PDP, one policy per method scope. A failure here makes the
//! caller (api.rs) undo the AS registration; policies already made for the resource are
//! deleted best-effort when the PDP told us their ids.

use serde_json::{json, Value};
use thiserror::Error;
use url::Url;

use crate::apply::NOBODY;
use crate::transport::NetError;

#[derive(Debug, Error)]
pub enum PdpError {
    #[error("PDP request failed: {0}")]
    Request(#[source] NetError),
    #[error("PDP refused the policy for scope {scope}: status {status}")]
    Refused { scope: String, status: u16 },
}

pub struct PdpClient {
    http: reqwest::Client,
    policy_endpoint: Url,
}

/// The action a method scope stands for (`protected_get` → `get`).
pub fn action_of(scope: &str) -> Option<&str> {
    scope.strip_prefix("protected_")
}

/// The seed's default ownership policy body for one scope. The all-zero owner means nobody:
/// only operators.
pub fn policy_body(resource_id: &str, owner: &str, scope: &str, action: &str) -> Value {
    let rule = if owner.chars().all(|c| c == '0') || owner == NOBODY {
        json!({"EQUAL": {"isOperator": true}})
    } else {
        json!({"EQUAL": {"id": owner}})
    };
    json!({
        "name": format!("Default Ownership Policy of {resource_id} with action {action}"),
        "description": "This is the default ownership policy for created resources through PEP",
        "config": {"resource_id": resource_id, "action": action, "T&C": [], "rules": [{"AND": [rule]}]},
        "scopes": [scope],
    })
}

fn policy_id(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    ["id", "_id", "policy_id"].iter().find_map(|k| v.get(*k).and_then(|x| x.as_str()).map(str::to_string))
}

impl PdpClient {
    pub fn new(http: reqwest::Client, policy_endpoint: Url) -> Self {
        Self { http, policy_endpoint }
    }

    /// Registers one policy per method scope of the resource, authenticated with the caller's
    /// own token (the PDP decides whether the caller may do so, as in the seed).
    pub async fn register_defaults(
        &self,
        resource_id: &str,
        owner: &str,
        scopes: &[String],
        caller_authorization: &str,
    ) -> Result<(), PdpError> {
        let mut created: Vec<String> = Vec::new();
        for scope in scopes {
            let Some(action) = action_of(scope) else {
                continue;
            };
            let result = self
                .http
                .post(self.policy_endpoint.clone())
                .header(reqwest::header::AUTHORIZATION, caller_authorization)
                .json(&policy_body(resource_id, owner, scope, action))
                .send()
                .await;
            let failure = match result {
                Ok(r) if r.status().is_success() => {
                    if let Ok(body) = r.bytes().await {
                        created.extend(policy_id(&body));
                    }
                    continue;
                }
                Ok(r) => PdpError::Refused { scope: scope.clone(), status: r.status().as_u16() },
                Err(e) => PdpError::Request(e.into()),
            };
            self.delete_policies(&created, caller_authorization).await;
            return Err(failure);
        }
        Ok(())
    }

    async fn delete_policies(&self, ids: &[String], caller_authorization: &str) {
        for id in ids {
            let mut url = self.policy_endpoint.clone();
            if let Ok(mut s) = url.path_segments_mut() {
                s.pop_if_empty().push(id);
            }
            if let Err(e) = self
                .http
                .delete(url)
                .header(reqwest::header::AUTHORIZATION, caller_authorization)
                .send()
                .await
            {
                tracing::warn!(policy = %id, error = %e, "could not delete a policy while rolling back");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_policy_shape() {
        let p = policy_body("rid", "u-1", "protected_get", "get");
        assert_eq!(p["name"], "Default Ownership Policy of rid with action get");
        assert_eq!(p["config"]["rules"][0]["AND"][0]["EQUAL"]["id"], "u-1");
        assert_eq!(p["scopes"], json!(["protected_get"]));
        let nobody = policy_body("rid", NOBODY, "protected_put", "put");
        assert_eq!(nobody["config"]["rules"][0]["AND"][0]["EQUAL"]["isOperator"], true);
        assert_eq!(action_of("protected_delete"), Some("delete"));
        assert_eq!(action_of("public_access"), None);
        assert_eq!(policy_id(br#"{"id":"p1"}"#).as_deref(), Some("p1"));
        assert_eq!(policy_id(b"ok"), None);
    }
}
