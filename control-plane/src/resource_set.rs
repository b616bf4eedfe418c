//! The AS's resource registration API (UMA federated authz §3, `resource_set`) in both
//! dialects: spec/Gluu (`201 {_id}`, `PUT 200 {_id}`, expiring resources, `icon_uri`) and
//! Keycloak (`201` full object, `409` on a duplicate name, `PUT 204`, `uris`, scopes as
//! objects). Every call carries the PAT and gets one refresh-and-retry from `PatSource`.

use std::sync::Arc;

use serde::Deserialize;
use thiserror::Error;
use uma_pep_core::config::AsProfile;
use uma_pep_core::wire::AsError;
use url::Url;

use crate::pat::{PatSource, ProtectedCallError};

#[derive(Debug, Error)]
pub enum ResourceSetError {
    #[error(transparent)]
    Call(#[from] ProtectedCallError),
    #[error("a resource named {0:?} already exists at the AS")]
    Conflict(String),
    #[error("resource {0} does not exist at the AS")]
    NotFound(String),
    #[error("AS answered: {0}")]
    As(AsError),
    #[error("AS answer is unusable: {0}")]
    Garbage(String),
}

/// What we register: the seed's fields, the path in the field the dialect reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    pub name: String,
    pub uri: String,
    pub scopes: Vec<String>,
    pub description: Option<String>,
}

/// What the AS says it has.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Registered {
    pub id: String,
    pub name: Option<String>,
    pub scopes: Vec<String>,
    pub uris: Vec<String>,
    pub description: Option<String>,
    /// Unix seconds (Gluu's resource lifetime).
    pub exp: Option<i64>,
}

impl Registered {
    /// Does the AS's record already say what `want` says? Fields the AS did not echo are not
    /// held against it.
    pub fn matches(&self, want: &Description) -> bool {
        let mut have: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        let mut need: Vec<&str> = want.scopes.iter().map(String::as_str).collect();
        have.sort_unstable();
        have.dedup();
        need.sort_unstable();
        need.dedup();
        self.name.as_deref().is_none_or(|n| n == want.name)
            && have == need
            && (self.uris.is_empty() || self.uris.iter().any(|u| u == &want.uri))
            && (self.description.is_none() || self.description == want.description)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ScopeRepr {
    Name(String),
    Object { name: String },
}

#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "_id", alias = "id")]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    resource_scopes: Vec<ScopeRepr>,
    #[serde(default)]
    uris: Vec<String>,
    #[serde(default)]
    uri: Option<String>,
    #[serde(default)]
    icon_uri: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    exp: Option<serde_json::Number>,
}

impl Wire {
    fn into_registered(self, fallback_id: Option<&str>) -> Result<Registered, ResourceSetError> {
        let id = self
            .id
            .filter(|s| !s.is_empty())
            .or_else(|| fallback_id.map(str::to_string))
            .ok_or_else(|| ResourceSetError::Garbage("no _id".into()))?;
        let mut uris = self.uris;
        uris.extend(self.uri);
        uris.extend(self.icon_uri);
        Ok(Registered {
            id,
            name: self.name,
            scopes: self
                .resource_scopes
                .into_iter()
                .map(|s| match s {
                    ScopeRepr::Name(n) | ScopeRepr::Object { name: n } => n,
                })
                .collect(),
            uris,
            description: self.description,
            exp: self.exp.and_then(|n| n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))),
        })
    }
}

/// Parses a resource description (GET, or Keycloak's POST answer).
pub fn parse_registered(body: &[u8], fallback_id: Option<&str>) -> Result<Registered, ResourceSetError> {
    let wire: Wire = serde_json::from_slice(body).map_err(|e| ResourceSetError::Garbage(e.to_string()))?;
    wire.into_registered(fallback_id)
}

pub struct ResourceSetClient {
    http: reqwest::Client,
    endpoint: Url,
    profile: AsProfile,
    pat: Arc<PatSource>,
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

impl ResourceSetClient {
    pub fn new(http: reqwest::Client, endpoint: Url, profile: AsProfile, pat: Arc<PatSource>) -> Self {
        Self { http, endpoint, profile, pat }
    }

    pub fn profile(&self) -> AsProfile {
        self.profile
    }

    /// `rreguri/{id}`: the id is one path segment, escaped.
    fn item_url(&self, id: &str) -> Url {
        let mut url = self.endpoint.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push(id);
        }
        url
    }

    /// The body in the dialect's shape. Keycloak matches paths on `uris`; the spec and Gluu
    /// have no path field, and the seed (and its clients) keep the path in `icon_uri`.
    pub fn body(&self, d: &Description) -> serde_json::Value {
        let mut body = serde_json::json!({
            "name": d.name,
            "resource_scopes": d.scopes,
        });
        if let Some(map) = body.as_object_mut() {
            if let Some(desc) = &d.description {
                map.insert("description".into(), desc.clone().into());
            }
            match self.profile {
                AsProfile::Keycloak => {
                    map.insert("uris".into(), serde_json::json!([d.uri]));
                }
                AsProfile::Uma2 => {
                    map.insert("icon_uri".into(), d.uri.clone().into());
                }
            }
        }
        body
    }

    /// Registers a new resource; `Conflict` on Keycloak's duplicate name.
    pub async fn create(&self, d: &Description) -> Result<Registered, ResourceSetError> {
        let body = self.body(d);
        let (status, bytes, _) = self.pat.send(|_| self.http.post(self.endpoint.clone()).json(&body)).await?;
        match status {
            200 | 201 => {
                let mut r = parse_registered(&bytes, None)?;
                // Gluu and the spec answer only `{_id}`: the rest is what we sent.
                if r.name.is_none() {
                    r.name = Some(d.name.clone());
                }
                if r.scopes.is_empty() {
                    r.scopes = d.scopes.clone();
                }
                Ok(r)
            }
            409 => Err(ResourceSetError::Conflict(d.name.clone())),
            _ => Err(ResourceSetError::As(AsError::from_status(status, &bytes))),
        }
    }

    /// Reads one resource; `None` when the AS does not know the id.
    pub async fn get(&self, id: &str) -> Result<Option<Registered>, ResourceSetError> {
        let url = self.item_url(id);
        let (status, bytes, _) = self.pat.send(|_| self.http.get(url.clone())).await?;
        match status {
            200 => Ok(Some(parse_registered(&bytes, Some(id))?)),
            404 => Ok(None),
            _ => Err(ResourceSetError::As(AsError::from_status(status, &bytes))),
        }
    }

    /// Full replacement; Gluu answers `200 {_id}`, Keycloak `204`.
    pub async fn update(&self, id: &str, d: &Description) -> Result<(), ResourceSetError> {
        let url = self.item_url(id);
        let body = self.body(d);
        let (status, bytes, _) = self.pat.send(|_| self.http.put(url.clone()).json(&body)).await?;
        match status {
            s if is_success(s) => Ok(()),
            404 => Err(ResourceSetError::NotFound(id.to_string())),
            _ => Err(ResourceSetError::As(AsError::from_status(status, &bytes))),
        }
    }

    /// Deletes; a resource the AS no longer has counts as deleted. `true` if it was there.
    pub async fn delete(&self, id: &str) -> Result<bool, ResourceSetError> {
        let url = self.item_url(id);
        let (status, bytes, _) = self.pat.send(|_| self.http.delete(url.clone())).await?;
        match status {
            s if is_success(s) => Ok(true),
            404 => Ok(false),
            _ => Err(ResourceSetError::As(AsError::from_status(status, &bytes))),
        }
    }

    /// GETs `url` (a listing) and reads what it lists: full objects (Keycloak with
    /// `deep=true`) or ids (spec, Gluu), each of which is then read.
    async fn read_listing(&self, url: Url) -> Result<Vec<Registered>, ResourceSetError> {
        let (status, bytes, _) = self.pat.send(|_| self.http.get(url.clone())).await?;
        if status != 200 {
            return Err(ResourceSetError::As(AsError::from_status(status, &bytes)));
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Item {
            Id(String),
            Full(Box<serde_json::Value>),
        }
        let items: Vec<Item> =
            serde_json::from_slice(&bytes).map_err(|e| ResourceSetError::Garbage(e.to_string()))?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Item::Id(id) => out.extend(self.get(&id).await?),
                Item::Full(v) => out.push(parse_registered(v.to_string().as_bytes(), None)?),
            }
        }
        Ok(out)
    }

    /// A resource of ours by exact name, with Keycloak's filter
    /// (`?name=..&exactName=true&deep=true`); an AS that ignores the query lists all ours.
    pub async fn find_by_name(&self, name: &str) -> Result<Option<Registered>, ResourceSetError> {
        let mut url = self.endpoint.clone();
        url.query_pairs_mut()
            .append_pair("name", name)
            .append_pair("exactName", "true")
            .append_pair("deep", "true");
        Ok(self.read_listing(url).await?.into_iter().find(|r| r.name.as_deref() == Some(name)))
    }

    /// Every resource of ours at the AS (UMA federated authz §3.2.5 list, then reads).
    pub async fn list_registered(&self) -> Result<Vec<Registered>, ResourceSetError> {
        let mut url = self.endpoint.clone();
        if self.profile == AsProfile::Keycloak {
            url.query_pairs_mut().append_pair("deep", "true");
        }
        self.read_listing(url).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc() -> Description {
        Description {
            name: "Alice".into(),
            uri: "/alice".into(),
            scopes: vec!["protected_get".into(), "protected_put".into()],
            description: Some("home".into()),
        }
    }

    #[test]
    fn parses_both_dialects() {
        let gluu = parse_registered(br#"{"_id":"g1"}"#, None).unwrap();
        assert_eq!(gluu.id, "g1");
        let kc = parse_registered(
            br#"{"_id":"k1","name":"Alice","owner":{"id":"x"},"uris":["/alice"],
                "resource_scopes":[{"id":"s","name":"protected_put"},{"name":"protected_get"}]}"#,
            None,
        )
        .unwrap();
        assert_eq!(kc.scopes, vec!["protected_put", "protected_get"]);
        assert!(kc.matches(&desc()));
        let g = parse_registered(
            br#"{"name":"Alice","icon_uri":"/alice","resource_scopes":["protected_get","protected_put"],"description":"home","exp":1900000000,"iat":1}"#,
            Some("g2"),
        )
        .unwrap();
        assert_eq!(g.id, "g2");
        assert_eq!(g.exp, Some(1_900_000_000));
        assert!(g.matches(&desc()));
        assert!(parse_registered(br#"{"name":"x"}"#, None).is_err());
        assert!(parse_registered(b"<html>", None).is_err());
    }

    #[test]
    fn differences_are_seen() {
        let base = Registered {
            id: "1".into(),
            name: Some("Alice".into()),
            scopes: vec!["protected_get".into(), "protected_put".into()],
            uris: vec!["/alice".into()],
            description: None,
            exp: None,
        };
        assert!(base.matches(&desc()));
        let mut other = desc();
        other.scopes.push("protected_delete".into());
        assert!(!base.matches(&other));
        let mut other = desc();
        other.uri = "/bob".into();
        assert!(!base.matches(&other));
        let mut other = desc();
        other.name = "Bob".into();
        assert!(!base.matches(&other));
    }

    fn client(profile: AsProfile) -> ResourceSetClient {
        let http = reqwest::Client::new();
        let pat = Arc::new(PatSource::new(
            http.clone(),
            Url::parse("http://127.0.0.1:1/token").unwrap(),
            crate::pat::ClientCredentials { client_id: "c".into(), client_secret: "s".into() },
        ));
        ResourceSetClient::new(
            http,
            Url::parse("http://127.0.0.1:1/realms/r/authz/protection/resource_set").unwrap(),
            profile,
            pat,
        )
    }

    #[test]
    fn bodies_follow_the_dialect_and_ids_are_escaped() {
        let kc = client(AsProfile::Keycloak).body(&desc());
        assert_eq!(kc["uris"], serde_json::json!(["/alice"]));
        assert!(kc.get("icon_uri").is_none());
        let spec = client(AsProfile::Uma2).body(&desc());
        assert_eq!(spec["icon_uri"], "/alice");
        assert_eq!(spec["resource_scopes"], serde_json::json!(["protected_get", "protected_put"]));
        assert_eq!(
            client(AsProfile::Uma2).item_url("a/b c").as_str(),
            "http://127.0.0.1:1/realms/r/authz/protection/resource_set/a%2Fb%20c"
        );
    }
}
