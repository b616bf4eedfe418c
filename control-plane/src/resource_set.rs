//! The AS's resource registration API (UMA federated authz §3, `resource_set`) in both
//! dialects: spec/Gluu (`201 {_id}`, `PUT 200 {_id}`, expiring resources, `icon_uri`) and
//! Keycloak (`201` full object, `409` on a duplicate name, `PUT 204`, `uris`, scopes as
//! objects). Every call carries the PAT and gets one refresh-and-retry from `PatSource`.
//!
//! The body holds only what the dialect models. Keycloak's `ResourceRepresentation` refuses
//! unknown fields (`400 Unrecognized field "description"`): it gets `name`, `uris`,
//! `resource_scopes`, `owner` + `ownerManagedAccess` and `attributes` (the description goes
//! to `attributes.description`). Gluu/Janssen (`UmaResource`) get `name`, `description`,
//! `icon_uri` (where EOEPCA keeps the path) and `resource_scopes`; they have no owner field,
//! so owners stay in pepctl's repository.
//!
//! A resource's paths (a path or a pattern, `uma_pep_core::uri_pattern`) reach Keycloak as
//! `uris` in Keycloak's own pattern form (`keycloak_uris`), so that its `matchingUri` lookups
//! and its policy enforcer match what the filter matches; Gluu/Janssen keep the canonical
//! spelling in `icon_uri`, as information only.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use thiserror::Error;
use uma_pep_core::config::AsProfile;
use uma_pep_core::uri_pattern::UriPattern;
use url::Url;

use crate::pat::{PatSource, ProtectedCallError};
use crate::refusal::Refusal;

#[derive(Debug, Error)]
pub enum ResourceSetError {
    #[error(transparent)]
    Call(#[from] ProtectedCallError),
    #[error("a resource named {0:?} already exists at the AS")]
    Conflict(String),
    #[error("resource {0} does not exist at the AS")]
    NotFound(String),
    #[error("AS answered: {0}")]
    Refused(String),
    /// Keycloak refused the owner of a new resource: no user of the realm has that id or
    /// username. The caller's mistake, not the AS's failure.
    #[error(
        "{detail}; the owner {owner:?} is not the id or username of a user of the realm: fix the resource's \
         owner (default_owner in the resources file, `uuid` or `ownership_id` in the Resource API; \"{nobody}\" \
         lets the resource server own it)",
        nobody = crate::repository::NOBODY
    )]
    UnknownOwner { owner: String, detail: String },
    #[error("AS answer is unusable: {0}")]
    Garbage(String),
}

/// What we register: the seed's fields, the path in the field the dialect reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    pub name: String,
    /// The path or pattern, canonical.
    pub uri: String,
    /// The path alone, not what is below it (Keycloak's `uris` differ).
    pub exact: bool,
    pub scopes: Vec<String>,
    pub description: Option<String>,
    /// The owner to tell the AS (Keycloak: a user id or username of the realm). `None`: the
    /// resource server owns it (the seed's placeholder owner, `repository::NOBODY`).
    pub owner: Option<String>,
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
    /// Unix seconds (Gluu: when the registration was made or last given its `exp`).
    pub iat: Option<i64>,
}

/// Gluu/Janssen's default `umaResourceLifetime` (`DEFAULT_RESOURCE_LIFETIME`, 30 days).
pub const DEFAULT_RESOURCE_LIFETIME_S: i64 = 2_592_000;

fn epoch(n: Option<serde_json::Number>) -> Option<i64> {
    n.and_then(|n| n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)))
}

/// Keycloak's form of a resource's paths: the `uris` that make Keycloak match what the filter
/// matches. Read from Keycloak's `org.keycloak.common.util.PathMatcher` (common/, `matches`,
/// `exactMatch`, `buildUriFromTemplate`, `validateTemplate`), which both `ResourceSetService.find`
/// (services/.../authorization/admin/, behind the protection API's `ResourceService.find` with
/// `matchingUri=true`) and the policy enforcer's `PolicyEnforcer.PathConfigMatcher` use:
/// - a uri without `*` or `{` matches that path only (`exactMatch`: equality);
/// - a trailing `/*` matches the path before it and everything below, at any depth (`exactMatch`:
///   the target starts with `<base>/`, or equals `<base>`); so a resource that covers what is
///   below its path (a plain uri, or one ending in `/**`) is `[<base>, <base>/*]`, the base kept
///   so that a lookup by exact `uri=` still finds it; `/` is `["/", "/*"]`;
/// - `{name}` matches exactly one segment (`buildUriFromTemplate` puts the target's segment in
///   its place, then the whole must match), so `{id}` stays `{id}`;
/// - a `*` anywhere but last matches nothing (it is neither a template nor a trailing wildcard,
///   and `validateTemplate`, with which Keycloak 26.7 checks resource uris at create and update,
///   keycloak/keycloak#50289 and #50359, refuses it), so the filter's one-segment `*` becomes the
///   template `{_N}`, N its segment's position (any name will do: `buildUriFromTemplate` fills
///   the placeholders in order).
///
/// Keycloak matches `uris` as strings: a literal segment keeps its canonical escapes.
pub fn keycloak_uris(uri: &str, exact: bool) -> Vec<String> {
    let rest = UriPattern::parse(uri, exact).map(|(_, p)| p.rest).unwrap_or(!exact);
    let segments: Vec<String> = uri
        .split('/')
        .skip(1)
        .filter(|s| !s.is_empty() && *s != "**")
        .enumerate()
        .map(|(i, s)| if s == "*" { format!("{{_{}}}", i + 1) } else { s.to_string() })
        .collect();
    let base = format!("/{}", segments.join("/"));
    if !rest {
        return vec![base];
    }
    let below = if segments.is_empty() { "/*".to_string() } else { format!("{base}/*") };
    vec![base, below]
}

impl Registered {
    /// Does the AS's record already say what `want` says, `uris` being the paths as the
    /// dialect registers them (`ResourceSetClient::uris`)? Fields the AS did not echo are not
    /// held against it.
    pub fn matches(&self, want: &Description, uris: &[String]) -> bool {
        let mut have: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        let mut need: Vec<&str> = want.scopes.iter().map(String::as_str).collect();
        have.sort_unstable();
        have.dedup();
        need.sort_unstable();
        need.dedup();
        let have_uris: BTreeSet<&str> = self.uris.iter().map(String::as_str).collect();
        let want_uris: BTreeSet<&str> = uris.iter().map(String::as_str).collect();
        self.name.as_deref().is_none_or(|n| n == want.name)
            && have == need
            && (self.uris.is_empty() || have_uris == want_uris)
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
    /// Keycloak's `ResourceRepresentation` (deep listings) names them `scopes`.
    #[serde(default)]
    scopes: Vec<ScopeRepr>,
    /// Keycloak: where pepctl keeps the description (`{"description": ["..."]}`).
    #[serde(default)]
    attributes: Option<HashMap<String, serde_json::Value>>,
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
    #[serde(default)]
    iat: Option<serde_json::Number>,
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
        let attribute_description = self
            .attributes
            .as_ref()
            .and_then(|a| a.get("description"))
            .and_then(|d| d.as_array().and_then(|l| l.first()).or(Some(d)))
            .and_then(|d| d.as_str().map(str::to_string));
        Ok(Registered {
            id,
            name: self.name,
            scopes: self
                .resource_scopes
                .into_iter()
                .chain(self.scopes)
                .map(|s| match s {
                    ScopeRepr::Name(n) | ScopeRepr::Object { name: n } => n,
                })
                .collect(),
            uris,
            description: self.description.or(attribute_description),
            exp: epoch(self.exp),
            iat: epoch(self.iat),
        })
    }
}

/// The paths of a resource as `profile` registers them: Keycloak's `uris`, or the canonical
/// spelling (Gluu/Janssen's `icon_uri`).
pub fn dialect_uris(profile: AsProfile, uri: &str, exact: bool) -> Vec<String> {
    match profile {
        AsProfile::Keycloak => keycloak_uris(uri, exact),
        AsProfile::Uma2 => vec![uri.to_string()],
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

    /// The paths of `d` as this dialect registers them.
    pub fn uris(&self, d: &Description) -> Vec<String> {
        dialect_uris(self.profile, &d.uri, d.exact)
    }

    /// `rreguri/{id}`: the id is one path segment, escaped.
    fn item_url(&self, id: &str) -> Url {
        let mut url = self.endpoint.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push(id);
        }
        url
    }

    /// The body in the dialect's shape, with only the fields the dialect models (see the
    /// module comment). Keycloak matches paths on `uris` (`keycloak_uris`); the spec and
    /// Gluu/Janssen have no path field (`UmaResource`: no `uri` or `uris`, unknown fields
    /// ignored) and match no paths: the seed (and its clients) keep the path in `icon_uri`, as
    /// information, in its canonical spelling.
    ///
    /// Keycloak's owner goes in the create only: a PUT cannot change it (`RepresentationToModel
    /// .toModel` keeps the existing resource's owner) but an owner it does not know still
    /// fails the call. `ownerManagedAccess` is in both, since a PUT without it turns it off.
    pub fn body(&self, d: &Description, create: bool) -> serde_json::Value {
        match self.profile {
            AsProfile::Keycloak => {
                let mut body = json!({
                    "name": d.name,
                    "uris": keycloak_uris(&d.uri, d.exact),
                    "resource_scopes": d.scopes,
                    // Always sent: on a PUT it replaces the attributes, so a removed description goes.
                    "attributes": {},
                });
                if let Some(desc) = &d.description {
                    body["attributes"]["description"] = json!([desc]);
                }
                if let Some(owner) = &d.owner {
                    if create {
                        body["owner"] = json!({ "id": owner });
                    }
                    body["ownerManagedAccess"] = json!(true);
                }
                body
            }
            AsProfile::Uma2 => {
                let mut body = json!({"name": d.name, "icon_uri": d.uri, "resource_scopes": d.scopes});
                if let Some(desc) = &d.description {
                    body["description"] = json!(desc);
                }
                body
            }
        }
    }

    fn refused(&self, status: u16, body: &[u8]) -> ResourceSetError {
        ResourceSetError::Refused(Refusal::parse(status, body).explained(self.profile))
    }

    /// Registers a new resource; `Conflict` on Keycloak's duplicate name.
    pub async fn create(&self, d: &Description) -> Result<Registered, ResourceSetError> {
        let body = self.body(d, true);
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
            // Keycloak refuses an owner that is no user of the realm (a RuntimeException in
            // `RepresentationToModel.toModel`: a 500 on a real server).
            400 | 500 if self.profile == AsProfile::Keycloak && d.owner.is_some() => {
                Err(ResourceSetError::UnknownOwner {
                    owner: d.owner.clone().unwrap_or_default(),
                    detail: Refusal::parse(status, &bytes).explained(self.profile),
                })
            }
            _ => Err(self.refused(status, &bytes)),
        }
    }

    /// Reads one resource; `None` when the AS does not know the id.
    pub async fn get(&self, id: &str) -> Result<Option<Registered>, ResourceSetError> {
        let url = self.item_url(id);
        let (status, bytes, _) = self.pat.send(|_| self.http.get(url.clone())).await?;
        match status {
            200 => Ok(Some(parse_registered(&bytes, Some(id))?)),
            404 => Ok(None),
            _ => Err(self.refused(status, &bytes)),
        }
    }

    /// Full replacement; Gluu answers `200 {_id}`, Keycloak `204`. The AS's expiry is kept.
    pub async fn update(&self, id: &str, d: &Description) -> Result<(), ResourceSetError> {
        self.put(id, self.body(d, false)).await
    }

    async fn put(&self, id: &str, body: serde_json::Value) -> Result<(), ResourceSetError> {
        let url = self.item_url(id);
        let (status, bytes, _) = self.pat.send(|_| self.http.put(url.clone()).json(&body)).await?;
        match status {
            s if is_success(s) => Ok(()),
            404 => Err(ResourceSetError::NotFound(id.to_string())),
            _ => Err(self.refused(status, &bytes)),
        }
    }

    /// The `exp` that renews an expiring registration for as long as the AS gave it at first
    /// (`exp - iat`; Gluu's default lifetime when the AS did not say). `None` for what does
    /// not expire (Keycloak).
    pub fn renewed_exp(&self, current: &Registered, now: i64) -> Option<i64> {
        if self.profile != AsProfile::Uma2 {
            return None;
        }
        let exp = current.exp?;
        let lifetime =
            current.iat.map(|iat| exp - iat).filter(|l| *l > 0).unwrap_or(DEFAULT_RESOURCE_LIFETIME_S);
        Some(now + lifetime)
    }

    /// Full replacement that also renews the registration, and the AS's `exp` read back.
    /// Gluu/Janssen change a resource's expiry on PUT only when the body has `exp`
    /// (`UmaResourceRegistrationWS.updateResource`): a PUT without it renews nothing.
    pub async fn update_and_renew(
        &self,
        id: &str,
        d: &Description,
        current: &Registered,
    ) -> Result<Option<i64>, ResourceSetError> {
        let mut body = self.body(d, false);
        let renewed = self.renewed_exp(current, crate::repository::now_s());
        if let Some(exp) = renewed {
            body["exp"] = json!(exp);
        }
        self.put(id, body).await?;
        match renewed {
            Some(_) => Ok(self.get(id).await?.and_then(|r| r.exp)),
            None => Ok(None),
        }
    }

    /// Renews the registration `id` (read, then `update_and_renew`); `NotFound` when the AS
    /// no longer has it.
    pub async fn renew(&self, id: &str, d: &Description) -> Result<Option<i64>, ResourceSetError> {
        let current = self.get(id).await?.ok_or_else(|| ResourceSetError::NotFound(id.to_string()))?;
        self.update_and_renew(id, d, &current).await
    }

    /// Deletes; a resource the AS no longer has counts as deleted. `true` if it was there.
    pub async fn delete(&self, id: &str) -> Result<bool, ResourceSetError> {
        let url = self.item_url(id);
        let (status, bytes, _) = self.pat.send(|_| self.http.delete(url.clone())).await?;
        match status {
            s if is_success(s) => Ok(true),
            404 => Ok(false),
            _ => Err(self.refused(status, &bytes)),
        }
    }

    /// GETs `url` (a listing) and reads what it lists: full objects (Keycloak with
    /// `deep=true`) or ids (spec, Gluu), each of which is then read.
    async fn read_listing(&self, url: Url) -> Result<Vec<Registered>, ResourceSetError> {
        let (status, bytes, _) = self.pat.send(|_| self.http.get(url.clone())).await?;
        if status != 200 {
            return Err(self.refused(status, &bytes));
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

    /// Every resource of ours of exactly that name: Keycloak filters (`ResourceSetService.find`
    /// with `name` and `exactName=true`); the spec and Gluu list ids only, each then read.
    pub async fn list_named(&self, name: &str) -> Result<Vec<Registered>, ResourceSetError> {
        let listed = match self.profile {
            AsProfile::Keycloak => {
                let mut url = self.endpoint.clone();
                url.query_pairs_mut()
                    .append_pair("name", name)
                    .append_pair("exactName", "true")
                    .append_pair("deep", "true")
                    .append_pair("max", "-1");
                self.read_listing(url).await?
            }
            AsProfile::Uma2 => self.list_registered().await?,
        };
        Ok(listed.into_iter().filter(|r| r.name.as_deref() == Some(name)).collect())
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
            exact: false,
            scopes: vec!["protected_get".into(), "protected_put".into()],
            description: Some("home".into()),
            owner: Some("alice-0001".into()),
        }
    }

    #[test]
    fn parses_both_dialects() {
        let gluu = parse_registered(br#"{"_id":"g1"}"#, None).unwrap();
        assert_eq!(gluu.id, "g1");
        let kc = parse_registered(
            br#"{"_id":"k1","name":"Alice","owner":{"id":"x"},"uris":["/alice","/alice/*"],
                "resource_scopes":[{"id":"s","name":"protected_put"},{"name":"protected_get"}]}"#,
            None,
        )
        .unwrap();
        assert_eq!(kc.scopes, vec!["protected_put", "protected_get"]);
        assert!(kc.matches(&desc(), &keycloak_uris("/alice", false)));
        assert!(!kc.matches(&desc(), &keycloak_uris("/alice", true)), "exact: the uris differ");
        let g = parse_registered(
            br#"{"name":"Alice","icon_uri":"/alice","resource_scopes":["protected_get","protected_put"],"description":"home","exp":1900000000,"iat":1}"#,
            Some("g2"),
        )
        .unwrap();
        assert_eq!(g.id, "g2");
        assert_eq!(g.exp, Some(1_900_000_000));
        assert!(g.matches(&desc(), &dialect_uris(AsProfile::Uma2, "/alice", false)));
        assert!(parse_registered(br#"{"name":"x"}"#, None).is_err());
        assert!(parse_registered(b"<html>", None).is_err());
    }

    #[test]
    fn differences_are_seen() {
        let base = Registered {
            id: "1".into(),
            name: Some("Alice".into()),
            scopes: vec!["protected_get".into(), "protected_put".into()],
            uris: vec!["/alice".into(), "/alice/*".into()],
            description: None,
            exp: None,
            iat: None,
        };
        let kc = |d: &Description| keycloak_uris(&d.uri, d.exact);
        assert!(base.matches(&desc(), &kc(&desc())));
        let mut other = desc();
        other.scopes.push("protected_delete".into());
        assert!(!base.matches(&other, &kc(&other)));
        let mut other = desc();
        other.uri = "/bob".into();
        assert!(!base.matches(&other, &kc(&other)));
        let mut other = desc();
        other.name = "Bob".into();
        assert!(!base.matches(&other, &kc(&other)));
        // A registration of before (its path alone) is updated to Keycloak's pattern form.
        let old = Registered { uris: vec!["/alice".into()], ..base.clone() };
        assert!(!old.matches(&desc(), &kc(&desc())));
    }

    #[test]
    fn keycloak_gets_its_own_pattern_form() {
        for (uri, exact, want) in [
            ("/a", false, vec!["/a", "/a/*"]),
            ("/a", true, vec!["/a"]),
            ("/a/**", false, vec!["/a", "/a/*"]),
            ("/", false, vec!["/", "/*"]),
            ("/", true, vec!["/"]),
            ("/**", false, vec!["/", "/*"]),
            ("/orders/{id}", false, vec!["/orders/{id}"]),
            ("/orders/{id}", true, vec!["/orders/{id}"]),
            ("/users/{u}/**", false, vec!["/users/{u}", "/users/{u}/*"]),
            ("/a/*", false, vec!["/a/{_2}"]),
            ("/a/*/b/*/**", false, vec!["/a/{_2}/b/{_4}", "/a/{_2}/b/{_4}/*"]),
            ("/caf%C3%A9/{id}", false, vec!["/caf%C3%A9/{id}"]),
        ] {
            assert_eq!(keycloak_uris(uri, exact), want, "{uri} exact={exact}");
        }
    }

    fn client(profile: AsProfile) -> ResourceSetClient {
        let http = reqwest::Client::new();
        let pat = Arc::new(PatSource::new(
            http.clone(),
            Url::parse("http://127.0.0.1:1/token").unwrap(),
            crate::pat::ClientCredentials { client_id: "c".into(), client_secret: "s".into() },
            profile,
        ));
        ResourceSetClient::new(
            http,
            Url::parse("http://127.0.0.1:1/realms/r/authz/protection/resource_set").unwrap(),
            profile,
            pat,
        )
    }

    #[test]
    fn gluu_renewal_sends_exp_for_the_lifetime_the_as_gave() {
        let gluu = client(AsProfile::Uma2);
        let g = parse_registered(br#"{"_id":"g","exp":1000120,"iat":1000000}"#, None).unwrap();
        assert_eq!((g.exp, g.iat), (Some(1_000_120), Some(1_000_000)));
        assert_eq!(gluu.renewed_exp(&g, 2_000_000), Some(2_000_120));
        let no_iat = Registered { iat: None, ..g.clone() };
        assert_eq!(gluu.renewed_exp(&no_iat, 0), Some(DEFAULT_RESOURCE_LIFETIME_S));
        assert_eq!(gluu.renewed_exp(&Registered { exp: None, ..g.clone() }, 0), None, "never expires");
        assert_eq!(client(AsProfile::Keycloak).renewed_exp(&g, 0), None);
    }

    #[test]
    fn bodies_hold_only_what_the_dialect_models_and_ids_are_escaped() {
        // Keycloak: ResourceRepresentation's fields only (it refuses unknown ones); the owner
        // on create, the description as an attribute.
        let kc = client(AsProfile::Keycloak).body(&desc(), true);
        let keys: std::collections::BTreeSet<&str> =
            kc.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["attributes", "name", "owner", "ownerManagedAccess", "resource_scopes", "uris"]
                .into_iter()
                .collect()
        );
        assert_eq!(kc["uris"], json!(["/alice", "/alice/*"]));
        assert_eq!(kc["owner"], json!({"id": "alice-0001"}));
        assert_eq!(kc["ownerManagedAccess"], true);
        assert_eq!(kc["attributes"], json!({"description": ["home"]}));
        let put = client(AsProfile::Keycloak).body(&desc(), false);
        assert!(put.get("owner").is_none(), "a PUT cannot move the owner");
        assert_eq!(put["ownerManagedAccess"], true);
        let rs_owned = Description { owner: None, description: None, ..desc() };
        let kc = client(AsProfile::Keycloak).body(&rs_owned, true);
        assert!(kc.get("owner").is_none() && kc.get("ownerManagedAccess").is_none());
        assert_eq!(kc["attributes"], json!({}));
        // The description comes back from the attribute.
        let back = parse_registered(
            br#"{"_id":"k","name":"Alice","uris":["/alice/*","/alice"],"scopes":[{"name":"protected_get"},{"name":"protected_put"}],"attributes":{"description":["home"]}}"#,
            None,
        )
        .unwrap();
        assert_eq!(back.description.as_deref(), Some("home"));
        assert!(back.matches(&desc(), &client(AsProfile::Keycloak).uris(&desc())), "in any order");

        // Gluu/Janssen: UmaResource's fields; no owner (pepctl's repository keeps it).
        let spec = client(AsProfile::Uma2).body(&desc(), true);
        let keys: std::collections::BTreeSet<&str> =
            spec.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["description", "icon_uri", "name", "resource_scopes"].into_iter().collect());
        assert_eq!(spec["icon_uri"], "/alice");
        let pattern = Description { uri: "/users/{u}/**".into(), ..desc() };
        assert_eq!(client(AsProfile::Uma2).body(&pattern, true)["icon_uri"], "/users/{u}/**");
        assert_eq!(
            client(AsProfile::Keycloak).body(&pattern, true)["uris"],
            json!(["/users/{u}", "/users/{u}/*"])
        );
        assert_eq!(spec["resource_scopes"], json!(["protected_get", "protected_put"]));
        assert_eq!(
            client(AsProfile::Uma2).item_url("a/b c").as_str(),
            "http://127.0.0.1:1/realms/r/authz/protection/resource_set/a%2Fb%20c"
        );
    }
}
