//! The filter's configuration: the JSON an operator writes (Envoy `configuration`, Istio
//! `pluginConfig`), parsed and validated into `PepConfig`. Every key documented in docs/configuration.md,
//! with its default; an error names the key and what is wrong with it.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use url::Url;

use crate::keypath::{self, KeyError};
use crate::matcher::ResourceMatcher;
use crate::resource::canonical_path;
use crate::uri_pattern::UriPattern;
// Defined with the other resource rules; named here too, with the other configuration keys.
pub use crate::resource::{default_method_scopes, Resource};

/// A configuration problem, always naming the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("config key `{key}`: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { key: key.into(), problem: problem.into() }
    }
}

/// A parse error names the key path at fault; one about the document as a whole (not JSON,
/// not an object) names `configuration`.
impl From<KeyError> for ConfigError {
    fn from(e: KeyError) -> Self {
        let key = if e.path.is_empty() { "configuration".to_string() } else { e.path };
        Self { key, problem: e.problem }
    }
}

/// The dialect the AS speaks: `uma2` (the spec, Gluu, Janssen) or `keycloak`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AsProfile {
    /// Spec, Gluu, Janssen: PAT-authenticated `token=` introspection.
    #[default]
    Uma2,
    /// Keycloak: client-authenticated introspection with `token_type_hint=requesting_party_token`.
    Keycloak,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnmatchedPolicy {
    #[default]
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChallengeStyle {
    /// `UMA realm="..", as_uri="..", ticket=".."` (UMA 2.0 grant §3.2.1).
    #[default]
    Uma2,
    /// EOEPCA's unquoted `UMA realm=..,as_uri=..,ticket=..`, for its existing clients.
    Compact,
}

/// What a Bearer token that is not an RPT granting the request becomes (`access_tokens.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccessTokenMode {
    /// It is refused with a ticket (401): only RPTs are tokens here.
    #[default]
    Uma,
    /// It is taken as the requesting party's access token, and the AS is asked for a decision.
    Decide,
}

/// `access_tokens`: decisions for clients that hold an ordinary OIDC access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AccessTokens {
    #[serde(default)]
    pub mode: AccessTokenMode,
    /// uma2: the RPT the AS gave for the user's token goes back to the client in `x-uma-rpt`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub return_rpt: bool,
}

impl AccessTokens {
    pub fn decide(&self) -> bool {
        self.mode == AccessTokenMode::Decide
    }
}

/// `cors_preflight`: what a browser's CORS preflight on a protected path gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CorsPreflight {
    /// An `OPTIONS` with `Origin` and `Access-Control-Request-Method` passes without a token:
    /// browsers send no credentials on a preflight.
    #[default]
    Pass,
    /// Decided like any request.
    Enforce,
}

/// `resource_lookup`: paths no configured resource matches are looked up at the AS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceLookup {
    pub mode: LookupMode,
    /// How long a resource found is cached (seconds).
    #[serde(default = "default_lookup_ttl_s")]
    pub ttl_s: u64,
    /// How long "no resource" is cached (seconds).
    #[serde(default = "default_lookup_negative_ttl_s")]
    pub negative_ttl_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LookupMode {
    /// Looked up on first use, then cached (Keycloak's `lazy-load-paths`).
    Lazy,
}

fn default_lookup_ttl_s() -> u64 {
    30
}

fn default_lookup_negative_ttl_s() -> u64 {
    10
}

/// The request header a `permissive` resource's denied request is forwarded with.
pub const DEFAULT_ENFORCEMENT_HEADER: &str = "x-uma-pep-decision";

/// Headers `enforcement_header` may not be (besides `content-*`, `proxy-*`, `x-envoy-*`,
/// `x-forwarded-*`, the method overrides and the forwarded identity): what carries credentials,
/// frames the message, routes it, or what the filter reads.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "set-cookie",
    "host",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "via",
    "forwarded",
    "x-request-id",
    "x-original-uri",
    "x-original-method",
    "origin",
    "access-control-request-method",
    "x-uma-rpt",
];

/// The response header that carries the RPT obtained for a user's token (`return_rpt`).
pub const RETURNED_RPT_HEADER: &str = "x-uma-rpt";

/// AS endpoints that override discovery; each a path on `as_cluster` or an absolute URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub introspection: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
}

impl EndpointOverrides {
    /// No endpoint overridden: discovery names them all.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
pub enum SigningAlg {
    #[default]
    RS256,
    ES256,
    EdDSA,
}

impl SigningAlg {
    /// The cargo feature of the filter this algorithm needs, when this build left it out.
    pub fn missing_feature(self) -> Option<&'static str> {
        match self {
            Self::RS256 => (!cfg!(feature = "forward-rs256")).then_some("forward-rs256"),
            Self::ES256 | Self::EdDSA => None,
        }
    }

    /// Refuses, naming `forward.alg` and the way out, an algorithm this build left out: a module
    /// built smaller must not load a configuration it would fail on at the first request.
    pub fn check_built_in(self) -> Result<(), ConfigError> {
        match self.missing_feature() {
            None => Ok(()),
            Some(feature) => Err(ConfigError::new(
                "forward.alg",
                format!(
                    "{self:?} is not in this build of the filter: build it with the cargo feature \
                     `{feature}` (make wasm WASM_FEATURES=\"... {feature}\"; the default build has \
                     every algorithm), or use ES256 or EdDSA"
                ),
            )),
        }
    }
}

/// `forward`: the JWT minted for the upstream. A default value is not written back.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    #[serde(default = "default_forward_header", skip_serializing_if = "is_default_forward_header")]
    pub header: String,
    #[serde(default)]
    pub alg: SigningAlg,
    pub key_pem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default = "default_forward_iss", skip_serializing_if = "is_default_forward_iss")]
    pub iss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<Vec<String>>,
    /// Remove the RPT's `Authorization` before the upstream (default keeps it, as the seed does).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strip_authorization: bool,
    /// A path the filter answers itself with the JWKS of the forwarding key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_path: Option<String>,
}

impl ForwardConfig {
    /// `forward` with this key and algorithm, every other key at its default.
    pub fn with_key(key_pem: String, alg: SigningAlg) -> Self {
        Self {
            header: default_forward_header(),
            alg,
            key_pem,
            kid: None,
            iss: default_forward_iss(),
            aud: None,
            claims: None,
            strip_authorization: false,
            jwks_path: None,
        }
    }
}

/// `resource_sync`: poll pepctl for the resource table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSync {
    pub cluster: String,
    #[serde(default = "default_sync_path")]
    pub path: String,
    #[serde(default = "default_sync_interval")]
    pub interval_s: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

fn default_forward_header() -> String {
    DEFAULT_FORWARD_HEADER.to_string()
}
fn default_forward_iss() -> String {
    "uma-pep".to_string()
}
fn is_default_forward_header(h: &str) -> bool {
    h == DEFAULT_FORWARD_HEADER
}
fn is_default_forward_iss(i: &str) -> bool {
    i == "uma-pep"
}
fn default_sync_path() -> String {
    "/filter-config".to_string()
}
fn default_sync_interval() -> u64 {
    10
}

/// Header that carries the minted JWT when `forward.header` is not set. It is stripped from
/// client requests even when nothing is minted: an upstream may trust it.
pub const DEFAULT_FORWARD_HEADER: &str = "x-user-id";

/// The filter's configuration as written (Envoy `configuration`, Istio `pluginConfig`): the
/// document pepctl renders and the filter parses. A key left out is `None` (or empty) and is
/// not written back; `PepConfig::from_document` applies the defaults and checks the values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilterDocument {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_authority: Option<String>,
    #[serde(default)]
    pub as_profile: AsProfile,
    #[serde(default, skip_serializing_if = "EndpointOverrides::is_empty")]
    pub endpoints: EndpointOverrides,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatched: Option<UnmatchedPolicy>,
    #[serde(default)]
    pub resources: Vec<Resource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method_scopes: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpt_margin_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpt_max_uses: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge_style: Option<ChallengeStyle>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<ForwardConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorize_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_sync: Option<ResourceSync>,
    /// The pepctl repository generation `resources` come from (pepctl writes it): an empty
    /// table of another generation than the one in force is refused (see `table_sync`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_generation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_slots: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_max_ttl_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_cache_ttl_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_introspections_in_flight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_facts: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_jwt_validation: Option<bool>,
    /// Absent: the dialect's default; `null`: no audience check; a string: that audience.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub rpt_audience: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_method_override: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_tokens: Option<AccessTokens>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_preflight: Option<CorsPreflight>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcement_header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_lookup: Option<ResourceLookup>,
}

/// Tells a key written as `null` (`Some(None)`) from a key left out (`None`, by `default`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// The validated configuration the filter runs with.
#[derive(Debug, Clone)]
pub struct PepConfig {
    pub realm: String,
    pub issuer: String,
    pub as_cluster: String,
    pub as_authority: String,
    pub as_profile: AsProfile,
    pub endpoints: EndpointOverrides,
    pub client_id: String,
    pub client_secret: String,
    pub timeout_ms: u64,
    pub path_prefix: String,
    pub unmatched: UnmatchedPolicy,
    pub resources: ResourceMatcher,
    pub method_scopes: BTreeMap<String, String>,
    pub rpt_margin_s: u64,
    pub rpt_max_uses: u32,
    pub challenge_style: ChallengeStyle,
    pub forward: Option<ForwardConfig>,
    pub authorize_path: Option<String>,
    pub resource_sync: Option<ResourceSync>,
    /// The pepctl repository generation of `resources`, when pepctl rendered or served them.
    pub resource_generation: Option<String>,
    /// Tolerated clock difference with the AS for `iat`/`nbf` (seconds).
    pub clock_skew_s: u64,
    /// Slots of each cache in shared data (decisions, minted tokens, use counts): the bound on
    /// what a flood of distinct tokens can make Envoy hold.
    pub cache_slots: u32,
    /// Longest a decision is cached, whatever the RPT's `exp`.
    pub cache_max_ttl_s: u64,
    /// How long an inactive or invalid RPT is remembered.
    pub negative_cache_ttl_s: u64,
    /// Introspections one worker has in flight at most; a request that would start another gets
    /// 503 with `Retry-After` (a flood of fresh tokens must not flood the AS).
    pub max_introspections_in_flight: u32,
    /// Put each decision's facts in the request's filter state for the access log
    /// (`wasm.uma_pep.*`). Off saves their hostcalls (a few µs a request) where nothing logs them.
    pub access_log_facts: bool,
    /// Validate JWT RPTs against the AS's JWKS instead of introspecting them. Off for
    /// deployments that must see revocations at once.
    pub local_jwt_validation: bool,
    /// The `aud` a JWT RPT must carry, when set (keycloak: the PEP's `client_id` by default).
    pub rpt_audience: Option<String>,
    /// Let `X-HTTP-Method-Override` and its kin through (FULL) and vouch for checks that carry
    /// them (PARTIAL). Off by default: the upstream may run the overriding method.
    pub keep_method_override: bool,
    /// What an ordinary access token (not an RPT granting the request) becomes.
    pub access_tokens: AccessTokens,
    pub cors_preflight: CorsPreflight,
    /// The request header that tells the upstream a `permissive` resource's request was denied
    /// (`denied`); always stripped from clients.
    pub enforcement_header: String,
    pub resource_lookup: Option<ResourceLookup>,
}

/// Longest generation id taken: pepctl's are 32 hex digits.
pub const MAX_GENERATION_LEN: usize = 128;

/// Whether `g` may be a repository generation id (`resource_generation`, a table's
/// `generation`). It is compared and logged: printable ASCII, short, never empty.
pub fn is_generation(g: &str) -> bool {
    !g.is_empty() && g.len() <= MAX_GENERATION_LEN && g.bytes().all(|b| b.is_ascii_graphic())
}

pub const DEFAULT_REALM: &str = "eoepca";
pub const DEFAULT_TIMEOUT_MS: u64 = 2000;
pub const DEFAULT_RPT_MARGIN_S: u64 = 5;
pub const DEFAULT_CACHE_SLOTS: u32 = 8192;
pub const DEFAULT_CACHE_MAX_TTL_S: u64 = 300;
pub const DEFAULT_NEGATIVE_CACHE_TTL_S: u64 = 5;
pub const DEFAULT_MAX_INTROSPECTIONS_IN_FLIGHT: u32 = 100;
/// As Envoy's `jwt_authn` (`clock_skew_seconds`): an AS clock a little ahead must not make
/// fresh RPTs fail (`iat` in the future) and send clients round the ticket loop.
pub const DEFAULT_CLOCK_SKEW_S: u64 = 60;

fn required(value: Option<String>, key: &str) -> Result<String, ConfigError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        Some(_) => Err(ConfigError::new(key, "must not be empty")),
        None => Err(ConfigError::new(key, "is required")),
    }
}

/// A value that is placed inside a quoted header parameter must not break out of it.
fn check_header_safe(value: &str, key: &str) -> Result<(), ConfigError> {
    if value.chars().any(|c| c == '"' || c == '\\' || c.is_control() || !c.is_ascii()) {
        return Err(ConfigError::new(key, "must be printable ASCII without '\"' or '\\'"));
    }
    Ok(())
}

fn check_absolute_path(value: &str, key: &str) -> Result<String, ConfigError> {
    if value.contains(['?', '#']) {
        // Checked first: the normaliser would cut them off, and "/#x" would become "/".
        return Err(ConfigError::new(
            key,
            format!("{value:?}: a path here has no query or fragment: remove them"),
        ));
    }
    canonical_path(value).map_err(|e| ConfigError::new(key, format!("{value:?}: {e}")))
}

/// Checks a resource table (also used for tables polled from pepctl) and normalises each uri.
pub fn validate_resources(resources: Vec<Resource>) -> Result<ResourceMatcher, ConfigError> {
    // Shape (what a pattern matches, and at which precedence) → the entry that has it.
    let mut shapes: HashMap<String, (usize, String)> = HashMap::new();
    let mut out = Vec::with_capacity(resources.len());
    for (i, mut r) in resources.into_iter().enumerate() {
        let key = format!("resources[{i}]");
        if r.id.trim().is_empty() {
            return Err(ConfigError::new(format!("{key}.id"), "must not be empty"));
        }
        check_header_safe(&r.id, &format!("{key}.id"))?;
        let (uri, pattern) = UriPattern::parse(&r.uri, r.exact)
            .map_err(|e| ConfigError::new(format!("{key}.uri"), format!("{:?}: {e}", r.uri)))?;
        r.uri = uri;
        match shapes.entry(pattern.shape_key()) {
            Entry::Occupied(first) => {
                let (j, first_uri) = first.get();
                let problem = if *first_uri == r.uri {
                    format!("{:?} is listed twice (resources[{j}])", r.uri)
                } else {
                    format!(
                        "{:?} and resources[{j}] {first_uri:?} match the same paths with the same precedence: keep one",
                        r.uri
                    )
                };
                return Err(ConfigError::new(format!("{key}.uri"), problem));
            }
            Entry::Vacant(slot) => {
                slot.insert((i, r.uri.clone()));
            }
        }
        check_resource_rules(&mut r, &key)?;
        out.push(r);
    }
    Ok(ResourceMatcher::new(out))
}

/// A resource's `methods`: method names as HTTP has them (RFC 9110 `token`), upper-cased as in
/// `method_scopes` (Envoy passes the method as the client sent it; clients send it upper-case),
/// each with at least one scope.
fn check_resource_rules(r: &mut Resource, key: &str) -> Result<(), ConfigError> {
    let Some(methods) = r.methods.take() else { return Ok(()) };
    let mut out = BTreeMap::new();
    for (method, scopes) in methods {
        let at = format!("{key}.methods.{method}");
        if !is_method_name(&method) {
            return Err(ConfigError::new(at, "not an HTTP method name (RFC 9110 token characters)"));
        }
        if scopes.is_empty() || scopes.iter().any(|s| s.trim().is_empty()) {
            return Err(ConfigError::new(
                at,
                "list at least one scope, none blank (or leave the method out: 405)",
            ));
        }
        if out.insert(method.to_ascii_uppercase(), scopes).is_some() {
            return Err(ConfigError::new(at, "listed twice (methods are upper-cased)"));
        }
    }
    r.methods = Some(out);
    Ok(())
}

/// RFC 9110 §5.6.2 `token`: what a method name is made of (`PROPFIND`, `VERSION-CONTROL`, …).
pub fn is_method_name(method: &str) -> bool {
    !method.is_empty() && method.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl PepConfig {
    /// Parses and validates the configuration JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        // serde would also read a struct from a list, by position: only an object is taken.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ConfigError::new("configuration", "must be a JSON object"));
        }
        let raw: FilterDocument = keypath::from_slice(bytes).map_err(ConfigError::from)?;
        Self::from_document(raw)
    }

    /// Validates a document (pepctl checks what it renders with this) and applies defaults.
    pub fn from_document(raw: FilterDocument) -> Result<Self, ConfigError> {
        let realm = raw.realm.unwrap_or_else(|| DEFAULT_REALM.to_string());
        check_header_safe(&realm, "realm")?;

        let issuer = required(raw.issuer, "issuer")?;
        if issuer.trim() != issuer {
            // The URL parser would forgive the blanks; discovery's byte-for-byte comparison not
            // (found by the `config` fuzz target).
            return Err(ConfigError::new("issuer", "must not have blanks around it"));
        }
        let issuer_url =
            Url::parse(&issuer).map_err(|e| ConfigError::new("issuer", format!("not a URL: {e}")))?;
        if !matches!(issuer_url.scheme(), "http" | "https") {
            return Err(ConfigError::new("issuer", "must be an http or https URL"));
        }
        check_header_safe(&issuer, "issuer")?;
        if issuer.ends_with('/') {
            // Discovery's `issuer` is compared byte for byte, and neither Keycloak
            // (`{base}/realms/{realm}`) nor Gluu/Janssen (`https://host`) ends it with a slash:
            // accepting one here would turn every request into "AS unreachable" later.
            return Err(ConfigError::new(
                "issuer",
                format!(
                    "must not end with '/' (the AS's discovery document has none): write {:?}",
                    issuer.trim_end_matches('/')
                ),
            ));
        }
        let as_authority = match raw.as_authority {
            Some(a) if !a.trim().is_empty() => a,
            Some(_) => return Err(ConfigError::new("as_authority", "must not be empty")),
            None => authority_of(&issuer_url).ok_or_else(|| ConfigError::new("issuer", "has no host"))?,
        };

        let as_cluster = required(raw.as_cluster, "as_cluster")?;
        let client_id = required(raw.client_id, "client_id")?;
        let client_secret = required(raw.client_secret, "client_secret")?;

        for (key, value) in [
            ("endpoints.token", &raw.endpoints.token),
            ("endpoints.permission", &raw.endpoints.permission),
            ("endpoints.introspection", &raw.endpoints.introspection),
            ("endpoints.jwks", &raw.endpoints.jwks),
        ] {
            if let Some(v) = value {
                endpoint_path(v).map_err(|p| ConfigError::new(key, p))?;
            }
        }

        let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if timeout_ms == 0 || timeout_ms > 60_000 {
            // 0 means "no timeout" to Envoy: a hung AS would hang every request.
            return Err(ConfigError::new("timeout_ms", "must be between 1 and 60000"));
        }

        let path_prefix = match raw.path_prefix.as_deref() {
            None | Some("") | Some("/") => String::new(),
            // A spelling of the root ("//", "/.") is no prefix either.
            Some(p) => Some(check_absolute_path(p, "path_prefix")?).filter(|p| p != "/").unwrap_or_default(),
        };

        let resources = validate_resources(raw.resources)?;

        let method_scopes = match raw.method_scopes {
            None => default_method_scopes(),
            Some(map) => {
                let mut out = BTreeMap::new();
                for (method, scope) in map {
                    let key = format!("method_scopes.{method}");
                    if !is_method_name(&method) {
                        return Err(ConfigError::new(
                            key,
                            "not an HTTP method name (RFC 9110 token characters)",
                        ));
                    }
                    if scope.trim().is_empty() {
                        return Err(ConfigError::new(key, "scope must not be empty"));
                    }
                    out.insert(method.to_ascii_uppercase(), scope);
                }
                out
            }
        };

        if let Some(f) = &raw.forward {
            if f.header.is_empty()
                || !f.header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(ConfigError::new("forward.header", "must be a header name"));
            }
            if f.key_pem.trim().is_empty() {
                return Err(ConfigError::new("forward.key_pem", "must not be empty"));
            }
            f.alg.check_built_in()?;
            if let Some(p) = &f.jwks_path {
                check_absolute_path(p, "forward.jwks_path")?;
            }
        }

        let authorize_path = match raw.authorize_path {
            None => None,
            Some(p) => Some(check_absolute_path(&p, "authorize_path")?),
        };

        if let Some(g) = &raw.resource_generation {
            if !is_generation(g) {
                return Err(ConfigError::new(
                    "resource_generation",
                    format!(
                        "must be 1 to {} printable ASCII characters (pepctl writes it)",
                        MAX_GENERATION_LEN
                    ),
                ));
            }
        }

        if let Some(sync) = &raw.resource_sync {
            if sync.cluster.trim().is_empty() {
                return Err(ConfigError::new("resource_sync.cluster", "must not be empty"));
            }
            if sync.interval_s == 0 {
                return Err(ConfigError::new("resource_sync.interval_s", "must be at least 1"));
            }
            if !sync.path.starts_with('/') {
                return Err(ConfigError::new("resource_sync.path", "must start with '/'"));
            }
        }

        let max_introspections_in_flight =
            raw.max_introspections_in_flight.unwrap_or(DEFAULT_MAX_INTROSPECTIONS_IN_FLIGHT);
        if !(1..=100_000).contains(&max_introspections_in_flight) {
            return Err(ConfigError::new("max_introspections_in_flight", "must be between 1 and 100000"));
        }
        let cache_slots = raw.cache_slots.unwrap_or(DEFAULT_CACHE_SLOTS);
        if !(16..=1_048_576).contains(&cache_slots) {
            return Err(ConfigError::new("cache_slots", "must be between 16 and 1048576"));
        }

        let access_tokens = raw.access_tokens.unwrap_or_default();
        if access_tokens.decide()
            && raw.as_profile == AsProfile::Uma2
            && raw.local_jwt_validation == Some(false)
        {
            // Gluu takes the claim token without checking it (`umaValidateClaimToken` is off by
            // default), and the party forwarded upstream is read from it: the filter verifies it.
            return Err(ConfigError::new(
                "access_tokens.mode",
                "\"decide\" with as_profile uma2 needs local_jwt_validation (the ID token is verified against the AS's JWKS before Gluu sees it)",
            ));
        }
        if access_tokens.return_rpt && !(access_tokens.decide() && raw.as_profile == AsProfile::Uma2) {
            // Keycloak's decision (`response_mode=decision`) carries no RPT to return.
            return Err(ConfigError::new(
                "access_tokens.return_rpt",
                "needs \"mode\": \"decide\" and as_profile uma2 (a Keycloak decision carries no RPT)",
            ));
        }

        let enforcement_header = raw
            .enforcement_header
            .unwrap_or_else(|| DEFAULT_ENFORCEMENT_HEADER.to_string())
            .to_ascii_lowercase();
        if enforcement_header.is_empty()
            || !enforcement_header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::new("enforcement_header", "must be a header name"));
        }
        // It is stripped from every request and set on denied ones: a header anything else
        // reads (the credentials, the body's framing, the forwarded identity) must not be it.
        let folded = enforcement_header.replace('_', "-");
        let identity = raw.forward.as_ref().map_or(DEFAULT_FORWARD_HEADER, |f| f.header.as_str());
        if RESERVED_HEADERS.contains(&folded.as_str())
            || folded.starts_with("x-envoy-")
            || folded.starts_with("x-forwarded-")
            || folded.starts_with("content-")
            || folded.starts_with("proxy-")
            || folded == identity.to_ascii_lowercase().replace('_', "-")
            || crate::headers::METHOD_OVERRIDE_HEADERS.contains(&folded.as_str())
        {
            return Err(ConfigError::new(
                "enforcement_header",
                format!("{enforcement_header:?} is a header the request needs or the filter sets: name another, e.g. {DEFAULT_ENFORCEMENT_HEADER}"),
            ));
        }

        if let Some(lookup) = &raw.resource_lookup {
            if raw.as_profile != AsProfile::Keycloak {
                // Gluu's and Janssen's resource list matches no uri (UmaResourceRegistrationWS).
                return Err(ConfigError::new(
                    "resource_lookup",
                    "needs as_profile keycloak (matchingUri lookups)",
                ));
            }
            if lookup.ttl_s == 0 || lookup.ttl_s > 86_400 {
                return Err(ConfigError::new("resource_lookup.ttl_s", "must be between 1 and 86400"));
            }
            if lookup.negative_ttl_s > 86_400 {
                return Err(ConfigError::new("resource_lookup.negative_ttl_s", "must be at most 86400"));
            }
        }

        Ok(Self {
            realm,
            issuer,
            as_cluster,
            as_authority,
            as_profile: raw.as_profile,
            endpoints: raw.endpoints,
            client_secret,
            timeout_ms,
            path_prefix,
            unmatched: raw.unmatched.unwrap_or_default(),
            resources,
            method_scopes,
            rpt_margin_s: raw.rpt_margin_s.unwrap_or(DEFAULT_RPT_MARGIN_S),
            rpt_max_uses: raw.rpt_max_uses.unwrap_or(0),
            challenge_style: raw.challenge_style.unwrap_or_default(),
            forward: raw.forward,
            authorize_path,
            resource_sync: raw.resource_sync,
            resource_generation: raw.resource_generation,
            clock_skew_s: raw.clock_skew_s.unwrap_or(DEFAULT_CLOCK_SKEW_S),
            cache_slots,
            cache_max_ttl_s: raw.cache_max_ttl_s.unwrap_or(DEFAULT_CACHE_MAX_TTL_S),
            negative_cache_ttl_s: raw.negative_cache_ttl_s.unwrap_or(DEFAULT_NEGATIVE_CACHE_TTL_S),
            max_introspections_in_flight,
            access_log_facts: raw.access_log_facts.unwrap_or(true),
            local_jwt_validation: raw.local_jwt_validation.unwrap_or(true),
            rpt_audience: match raw.rpt_audience {
                Some(explicit) => explicit.filter(|a| !a.is_empty()),
                // Keycloak always puts the resource server's client id into an RPT's `aud`
                // (`AuthorizationTokenService.createAuthorizationResponse`); Gluu's JWT RPTs carry
                // the requesting client there instead, so uma2 has no default.
                None => match raw.as_profile {
                    AsProfile::Keycloak => Some(client_id.clone()),
                    AsProfile::Uma2 => None,
                },
            },
            client_id,
            keep_method_override: raw.keep_method_override,
            access_tokens,
            cors_preflight: raw.cors_preflight.unwrap_or_default(),
            enforcement_header,
            resource_lookup: raw.resource_lookup,
        })
    }

    /// `{issuer}/.well-known/uma2-configuration`, as a path on `as_cluster`.
    pub fn discovery_path(&self) -> String {
        let base = endpoint_path(&self.issuer).unwrap_or_default();
        format!("{}/.well-known/uma2-configuration", base.trim_end_matches('/'))
    }

    /// The header that carries the minted JWT (and is always stripped from clients).
    pub fn forward_header(&self) -> &str {
        self.forward.as_ref().map_or(DEFAULT_FORWARD_HEADER, |f| f.header.as_str())
    }

    /// Every spelling of the forwarded header a client could use to be read as it: CGI, WSGI
    /// and PHP upstreams read `x_user_id` and `x-user-id` alike (Envoy passes underscores).
    pub fn forward_header_spellings(&self) -> [String; 2] {
        let header = self.forward_header().to_ascii_lowercase();
        [header.replace('_', "-"), header.replace('-', "_")]
    }

    /// The scope a method needs, if the method is mapped.
    pub fn scope_for(&self, method: &str) -> Option<&str> {
        self.method_scopes.get(method).map(String::as_str)
    }
}

fn authority_of(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    })
}

/// The path (and query) an endpoint is called with on `as_cluster`: an absolute URL gives its
/// path, a bare path is used as it is. Calls always go to `as_authority`, so that a discovery
/// document naming public host names still works through an internal cluster.
pub fn endpoint_path(value: &str) -> Result<String, String> {
    if value.starts_with('/') {
        return Ok(value.to_string());
    }
    let url = Url::parse(value).map_err(|e| format!("{value:?} is neither a path nor a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{value:?} must be an http or https URL"));
    }
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"issuer":"http://as.local:8080/realms/eoepca","as_cluster":"as",
        "client_id":"pep","client_secret":"s"}"#;

    fn parse(json: &str) -> Result<PepConfig, ConfigError> {
        PepConfig::from_json(json.as_bytes())
    }

    fn with(extra: &str) -> String {
        format!("{},{extra}}}", MINIMAL.trim_end_matches('}'))
    }

    #[test]
    fn resource_patterns_and_their_conflicts() {
        let ok = parse(&with(
            r#""resources":[{"id":"o","uri":"/orders"},{"id":"i","uri":"/orders/{id}"},{"id":"n","uri":"/orders/new","exact":true},{"id":"a","uri":"/a/**"},{"id":"ae","uri":"/a","exact":true}]"#,
        ))
        .unwrap();
        assert_eq!(ok.resources.find("/orders/9").map(|r| r.id.as_str()), Some("i"));
        for (table, key, says) in [
            (r#"[{"id":"x","uri":"/a/{id}"},{"id":"y","uri":"/a/*"}]"#, "resources[1].uri", "resources[0]"),
            (r#"[{"id":"x","uri":"/a"},{"id":"y","uri":"/a/**"}]"#, "resources[1].uri", "\"/a\""),
            (
                r#"[{"id":"x","uri":"/a/{id}","exact":true},{"id":"y","uri":"/a/{n}"}]"#,
                "resources[1].uri",
                "same",
            ),
            (r#"[{"id":"x","uri":"/a/{id}x"}]"#, "resources[0].uri", "whole segment"),
            (
                r#"[{"id":"x","uri":"/a","methods":{"GET":["s"],"get":["t"]}}]"#,
                "resources[0].methods.get",
                "twice",
            ),
            (r#"[{"id":"x","uri":"/a/**/b"}]"#, "resources[0].uri", "last"),
            (r#"[{"id":"x","uri":"/a/**","exact":true}]"#, "resources[0].uri", "contradict"),
            (r#"[{"id":"x","uri":"/a","methods":{"GET":[]}}]"#, "resources[0].methods.GET", "at least one"),
            (r#"[{"id":"x","uri":"/a","methods":{"G T":["s"]}}]"#, "resources[0].methods.G T", "method"),
            (r#"[{"id":"x","uri":"/a","scopes_mode":"some"}]"#, "resources[0].scopes_mode", ""),
            (r#"[{"id":"x","uri":"/a","enforcement":"off"}]"#, "resources[0].enforcement", ""),
        ] {
            let err = parse(&with(&format!(r#""resources":{table}"#))).unwrap_err();
            assert_eq!(err.key, key, "{table}: {err}");
            assert!(err.to_string().contains(says), "{table}: {err}");
        }
    }

    #[test]
    fn resource_lookup_keys() {
        assert_eq!(parse(MINIMAL).unwrap().resource_lookup, None);
        let kc = parse(&with(r#""as_profile":"keycloak","resource_lookup":{"mode":"lazy"}"#)).unwrap();
        let lookup = kc.resource_lookup.unwrap();
        assert_eq!((lookup.mode, lookup.ttl_s, lookup.negative_ttl_s), (LookupMode::Lazy, 30, 10));
        for (bad, key) in [
            (r#""as_profile":"uma2","resource_lookup":{"mode":"lazy"}"#, "resource_lookup"),
            (r#""as_profile":"keycloak","resource_lookup":{"mode":"eager"}"#, "resource_lookup.mode"),
            (
                r#""as_profile":"keycloak","resource_lookup":{"mode":"lazy","ttl_s":0}"#,
                "resource_lookup.ttl_s",
            ),
            (r#""as_profile":"keycloak","resource_lookup":{"ttl_s":5}"#, "resource_lookup"),
            (r#""enforcement_header":"x y""#, "enforcement_header"),
            (r#""cors_preflight":"allow""#, "cors_preflight"),
        ] {
            let err = parse(&with(bad)).unwrap_err();
            assert!(err.key.starts_with(key), "{bad}: {err}");
        }
        for taken in [
            "Authorization",
            "content-type",
            "x-user-id",
            "X_User_Id",
            "x-envoy-original-path",
            "host",
            "x-http-method-override",
        ] {
            let err = parse(&with(&format!(r#""enforcement_header":"{taken}""#))).unwrap_err();
            assert_eq!(err.key, "enforcement_header", "{taken}");
        }
        let c = parse(&with(r#""enforcement_header":"X-Decision","cors_preflight":"enforce""#)).unwrap();
        assert_eq!((c.enforcement_header.as_str(), c.cors_preflight), ("x-decision", CorsPreflight::Enforce));
    }

    #[test]
    fn access_tokens_keys() {
        assert_eq!(parse(MINIMAL).unwrap().access_tokens, AccessTokens::default());
        let decide = parse(&with(r#""access_tokens":{"mode":"decide"}"#)).unwrap();
        assert!(decide.access_tokens.decide() && !decide.access_tokens.return_rpt);
        assert!(!parse(&with(r#""access_tokens":{"mode":"uma"}"#)).unwrap().access_tokens.decide());
        let uma2_rpt = r#""as_profile":"uma2","access_tokens":{"mode":"decide","return_rpt":true}"#;
        assert!(parse(&with(uma2_rpt)).unwrap().access_tokens.return_rpt);
        for (bad, key) in [
            (r#""access_tokens":{"mode":"rpt"}"#, "access_tokens.mode"),
            (r#""access_tokens":{"mode":"decide","extra":1}"#, "access_tokens"),
            (
                r#""as_profile":"keycloak","access_tokens":{"mode":"decide","return_rpt":true}"#,
                "access_tokens.return_rpt",
            ),
            (r#""as_profile":"uma2","access_tokens":{"return_rpt":true}"#, "access_tokens.return_rpt"),
            (
                r#""as_profile":"uma2","local_jwt_validation":false,"access_tokens":{"mode":"decide"}"#,
                "access_tokens.mode",
            ),
        ] {
            let err = parse(&with(bad)).unwrap_err();
            assert!(err.key.starts_with(key), "{bad}: {err}");
        }
        let kc = r#""as_profile":"keycloak","local_jwt_validation":false,"access_tokens":{"mode":"decide"}"#;
        assert!(parse(&with(kc)).is_ok(), "Keycloak checks the Bearer token itself");
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.realm, "eoepca");
        assert_eq!(c.as_authority, "as.local:8080");
        assert_eq!(c.as_profile, AsProfile::Uma2);
        assert_eq!(c.timeout_ms, 2000);
        assert_eq!(c.path_prefix, "");
        assert_eq!(c.unmatched, UnmatchedPolicy::Allow);
        assert!(c.resources.is_empty());
        assert_eq!(c.scope_for("GET"), Some("protected_get"));
        assert_eq!(c.scope_for("HEAD"), Some("protected_head"));
        assert_eq!(c.scope_for("POST"), Some("protected_post"));
        assert_eq!(c.scope_for("PUT"), Some("protected_put"));
        assert_eq!(c.scope_for("PATCH"), Some("protected_patch"));
        assert_eq!(c.scope_for("DELETE"), Some("protected_delete"));
        assert_eq!(c.scope_for("OPTIONS"), None);
        assert_eq!(c.rpt_margin_s, 5);
        assert_eq!(c.rpt_max_uses, 0);
        assert_eq!(c.challenge_style, ChallengeStyle::Uma2);
        assert!(c.forward.is_none());
        assert_eq!(c.forward_header(), "x-user-id");
        assert_eq!(c.forward_header_spellings(), ["x-user-id".to_string(), "x_user_id".to_string()]);
        assert!(c.authorize_path.is_none());
        assert!(c.resource_sync.is_none());
        assert_eq!(c.cache_slots, 8192);
        assert!(c.local_jwt_validation);
        assert_eq!(c.clock_skew_s, 60);
        assert_eq!(c.rpt_audience, None);
        assert!(!c.keep_method_override);
        assert!(parse(&with(r#""keep_method_override":true"#)).unwrap().keep_method_override);
        assert_eq!(parse(&with(r#""keep_method_override":"yes""#)).unwrap_err().key, "keep_method_override");
        assert_eq!(parse(&with(r#""cache_slots":1"#)).unwrap_err().key, "cache_slots");
        assert_eq!(c.max_introspections_in_flight, 100);
        assert!(c.access_log_facts);
        assert!(!parse(&with(r#""access_log_facts":false"#)).unwrap().access_log_facts);
        for bad in ["0", "100001", "-1"] {
            let e = parse(&with(&format!(r#""max_introspections_in_flight":{bad}"#))).unwrap_err();
            assert_eq!(e.key, "max_introspections_in_flight", "{bad}");
        }
        assert_eq!(c.discovery_path(), "/realms/eoepca/.well-known/uma2-configuration");
    }

    #[test]
    fn authority_without_port_and_discovery_at_root() {
        let c = parse(
            r#"{"issuer":"https://as.example.org","as_cluster":"as","client_id":"p","client_secret":"s"}"#,
        )
        .unwrap();
        assert_eq!(c.as_authority, "as.example.org");
        assert_eq!(c.discovery_path(), "/.well-known/uma2-configuration");
    }

    #[test]
    fn keycloak_rpts_must_name_the_pep_unless_turned_off() {
        let kc = parse(&with(r#""as_profile":"keycloak""#)).unwrap();
        assert_eq!(kc.rpt_audience.as_deref(), Some("pep"));
        let off = parse(&with(r#""as_profile":"keycloak","rpt_audience":null"#)).unwrap();
        assert_eq!(off.rpt_audience, None);
        let other = parse(&with(r#""as_profile":"keycloak","rpt_audience":"gw""#)).unwrap();
        assert_eq!(other.rpt_audience.as_deref(), Some("gw"));
        let gluu = parse(&with(r#""rpt_audience":"pep""#)).unwrap();
        assert_eq!(gluu.rpt_audience.as_deref(), Some("pep"));
    }

    #[test]
    fn an_issuer_with_blanks_around_it_is_refused() {
        for issuer in ["   https://gluu.local", "https://gluu.local "] {
            let json =
                format!(r#"{{"issuer":"{issuer}","as_cluster":"as","client_id":"p","client_secret":"s"}}"#);
            assert_eq!(parse(&json).unwrap_err().key, "issuer");
        }
    }

    #[test]
    fn an_issuer_with_a_trailing_slash_is_refused_with_the_fix() {
        for issuer in ["https://as.example.org/", "http://kc:8080/realms/eoepca/"] {
            let json =
                format!(r#"{{"issuer":"{issuer}","as_cluster":"as","client_id":"p","client_secret":"s"}}"#);
            let err = parse(&json).unwrap_err();
            assert_eq!(err.key, "issuer");
            assert!(err.to_string().contains(issuer.trim_end_matches('/')), "{err}");
        }
    }

    #[test]
    fn required_keys_are_named() {
        for key in ["issuer", "as_cluster", "client_id", "client_secret"] {
            let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
            v.as_object_mut().unwrap().remove(key);
            let err = parse(&v.to_string()).unwrap_err();
            assert_eq!(err.key, key);
            assert!(err.to_string().contains(key));
        }
    }

    #[test]
    fn unknown_and_mistyped_keys_are_refused_with_their_name() {
        let err = parse(&with(r#""timout_ms":5"#)).unwrap_err();
        assert!(err.to_string().contains("timout_ms"), "{err}");
        let err = parse(&with(r#""timeout_ms":"fast""#)).unwrap_err();
        assert!(err.to_string().contains("timeout_ms") || err.to_string().contains("u64"), "{err}");
        let err = parse(&with(r#""as_profile":"okta""#)).unwrap_err();
        assert!(err.to_string().contains("okta"), "{err}");
    }

    #[test]
    fn unknown_keys_name_their_path_and_the_closest_key() {
        let cases = [
            (r#""unmached":"deny""#, "unmached", "unmatched"),
            (r#""forward":{"key_pem":"k","algo":"ES256"}"#, "forward.algo", "forward.alg"),
            (
                r#""resource_sync":{"cluster":"c","intervall_s":5}"#,
                "resource_sync.intervall_s",
                "resource_sync.interval_s",
            ),
            (
                r#""resources":[{"id":"a","uri":"/a"},{"id":"b","uri":"/b"},{"id":"c","urii":"/c"}]"#,
                "resources[2].urii",
                "resources[2].uri",
            ),
            (r#""endpoints":{"tokn":"/t"}"#, "endpoints.tokn", "endpoints.token"),
            (r#""Clock_Skew_S":5"#, "Clock_Skew_S", "clock_skew_s"),
            (r#""local-jwt-validation":false"#, "local-jwt-validation", "local_jwt_validation"),
        ];
        for (extra, key, suggestion) in cases {
            let err = parse(&with(extra)).unwrap_err();
            assert_eq!(err.key, key, "{extra}");
            assert_eq!(
                err.to_string(),
                format!("config key `{key}`: unknown key; did you mean `{suggestion}`?"),
                "{extra}"
            );
        }
        // Nothing near: the valid keys of that object are listed.
        let err = parse(&with(r#""endpoints":{"userinfo":"/u"}"#)).unwrap_err();
        assert_eq!(err.key, "endpoints.userinfo");
        assert_eq!(err.problem, "unknown key (valid here: `token`, `permission`, `introspection`, `jwks`)");
    }

    #[test]
    fn wrong_values_name_their_path() {
        let err = parse(&with(r#""forward":{"key_pem":"k","alg":"es256"}"#)).unwrap_err();
        assert_eq!(err.to_string(), "config key `forward.alg`: unknown value `es256`; did you mean `ES256`?");
        let err = parse(&with(r#""as_profile":"okta""#)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key `as_profile`: unknown value `okta` (valid: `uma2`, `keycloak`)"
        );
        let err = parse(&with(r#""forward":{"alg":"EdDSA"}"#)).unwrap_err();
        assert_eq!(err.to_string(), "config key `forward.key_pem`: is required");
        let err = parse(&with(r#""resource_sync":{"cluster":"c","interval_s":-1}"#)).unwrap_err();
        assert_eq!(err.key, "resource_sync.interval_s");
        assert!(err.problem.ends_with("expected a non-negative integer"), "{err}");
        let err = parse(&with(r#""method_scopes":{"GET":5}"#)).unwrap_err();
        assert_eq!(err.key, "method_scopes.GET");
        let err = parse(&with(r#""cache_slots":5000000000"#)).unwrap_err();
        assert_eq!(err.key, "cache_slots");
        let err = parse(&with(r#""rpt_audience":7"#)).unwrap_err();
        assert_eq!(err.key, "rpt_audience");
    }

    #[test]
    fn a_config_error_never_shows_a_secret() {
        let pem = "-----BEGIN PRIVATE KEY-----MC4CAQAwBQYDK2VwBCIEI-----END PRIVATE KEY-----";
        for extra in [
            format!(r#""forward":"{pem}""#),
            format!(r#""forward":["{pem}"]"#),
            r#""client_secret":["s3cr3t-value"]"#.to_string(),
        ] {
            let json =
                format!(r#"{{"issuer":"http://as.local","as_cluster":"as","client_id":"pep",{extra}}}"#);
            let err = parse(&json).unwrap_err();
            let text = err.to_string();
            assert!(!text.contains("PRIVATE KEY") && !text.contains("s3cr3t"), "{text}");
        }
        // The whole configuration written as a JSON string (encoded twice).
        let twice = serde_json::to_string(MINIMAL).unwrap();
        let err = parse(&twice).unwrap_err();
        assert_eq!(err.to_string(), "config key `configuration`: must be a JSON object");
        assert_eq!(parse("[1]").unwrap_err().key, "configuration");
        assert_eq!(parse("").unwrap_err().key, "configuration");
        let err = parse(&with(r#""endpoints":{"token":"/t",}"#)).unwrap_err();
        assert_eq!(err.key, "endpoints");
        assert!(err.problem.starts_with("not valid JSON: trailing comma"), "{err}");
        let err = parse("{\"issuer\": ").unwrap_err();
        assert_eq!(err.key, "issuer");
        assert!(err.problem.starts_with("not valid JSON"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        assert_eq!(parse(&with(r#""timeout_ms":0"#)).unwrap_err().key, "timeout_ms");
        assert_eq!(parse(&with(r#""realm":"a\"b""#)).unwrap_err().key, "realm");
        assert_eq!(
            parse(r#"{"issuer":"ftp://x","as_cluster":"a","client_id":"p","client_secret":"s"}"#)
                .unwrap_err()
                .key,
            "issuer"
        );
        assert_eq!(parse(&with(r#""resources":[{"id":"","uri":"/a"}]"#)).unwrap_err().key, "resources[0].id");
        assert_eq!(
            parse(&with(r#""resources":[{"id":"x","uri":"/a/../.."}]"#)).unwrap_err().key,
            "resources[0].uri"
        );
        assert_eq!(
            parse(&with(r#""resources":[{"id":"x","uri":"/a"},{"id":"y","uri":"/a/"}]"#)).unwrap_err().key,
            "resources[1].uri"
        );
        assert_eq!(parse(&with(r#""method_scopes":{"G T":"x"}"#)).unwrap_err().key, "method_scopes.G T");
        assert_eq!(parse(&with(r#""method_scopes":{"G:T":"x"}"#)).unwrap_err().key, "method_scopes.G:T");
        // WebDAV's methods are methods (RFC 4918, RFC 3253's `VERSION-CONTROL`).
        let dav =
            parse(&with(r#""method_scopes":{"PROPFIND":"dav_read","VERSION-CONTROL":"dav_admin"}"#)).unwrap();
        assert_eq!(dav.method_scopes.get("VERSION-CONTROL").map(String::as_str), Some("dav_admin"));
        assert_eq!(parse(&with(r#""endpoints":{"token":"ftp://x/y"}"#)).unwrap_err().key, "endpoints.token");
        assert_eq!(parse(&with(r#""forward":{"key_pem":" "}"#)).unwrap_err().key, "forward.key_pem");
    }

    #[test]
    fn resources_are_normalised_and_matched() {
        let c = parse(&with(
            r#""resources":[{"id":"r1","uri":"/a//b/"},{"id":"r0","uri":"/"},{"id":"r2","uri":"/%61"}]"#,
        ))
        .unwrap();
        assert_eq!(c.resources.find("/a/b/c").unwrap().id, "r1");
        assert_eq!(c.resources.find("/a/x").unwrap().id, "r2");
        assert_eq!(c.resources.find("/zzz").unwrap().id, "r0");
    }

    #[test]
    fn method_scopes_replace_defaults_and_uppercase_methods() {
        let c = parse(&with(r#""method_scopes":{"get":"read","PROPFIND":"dav"}"#)).unwrap();
        assert_eq!(c.scope_for("GET"), Some("read"));
        assert_eq!(c.scope_for("PROPFIND"), Some("dav"));
        assert_eq!(c.scope_for("POST"), None);
    }

    /// A module built without an algorithm refuses, at load, a configuration that asks for it,
    /// naming the key and the feature to build with; the default build takes it.
    #[test]
    fn an_algorithm_left_out_of_the_build_is_refused_naming_the_key_and_the_feature() {
        for forward in [r#""forward":{"key_pem":"k","alg":"RS256"}"#, r#""forward":{"key_pem":"k"}"#] {
            let result = parse(&with(forward));
            if cfg!(feature = "forward-rs256") {
                assert!(result.is_ok(), "{forward}: {result:?}");
            } else {
                let err = result.unwrap_err();
                assert_eq!(err.key, "forward.alg", "{forward}");
                assert!(err.problem.contains("cargo feature `forward-rs256`"), "{}", err.problem);
                assert!(err.to_string().starts_with("config key `forward.alg`: RS256 is not in this build"));
            }
        }
        for alg in ["ES256", "EdDSA"] {
            assert!(parse(&with(&format!(r#""forward":{{"key_pem":"k","alg":"{alg}"}}"#))).is_ok(), "{alg}");
        }
        assert_eq!(SigningAlg::RS256.check_built_in().is_ok(), cfg!(feature = "forward-rs256"));
    }

    #[test]
    fn endpoint_paths_from_urls_or_paths() {
        assert_eq!(endpoint_path("/t").unwrap(), "/t");
        assert_eq!(endpoint_path("https://h:1/a/b?x=1").unwrap(), "/a/b?x=1");
        assert!(endpoint_path("nope").is_err());
    }

    #[test]
    fn the_document_writes_back_what_was_written() {
        let written = with(
            r#""unmatched":"deny","challenge_style":"compact","rpt_audience":null,"keep_method_override":true,
            "resources":[{"id":"o","uri":"/o","scopes":["open"]}],"endpoints":{"jwks":"/k"},
            "forward":{"key_pem":"k","alg":"ES256","jwks_path":"/j"},
            "resource_sync":{"cluster":"pepctl","path":"/filter-config","interval_s":3}"#,
        );
        let doc: FilterDocument = serde_json::from_str(&written).unwrap();
        let back: serde_json::Value = serde_json::to_value(&doc).unwrap();
        let mut expected: serde_json::Value = serde_json::from_str(&written).unwrap();
        expected["as_profile"] = "uma2".into();
        assert_eq!(back, expected, "only what was written, plus the profile");
        let minimal: FilterDocument = serde_json::from_str(MINIMAL).unwrap();
        let keys: Vec<String> =
            serde_json::to_value(&minimal).unwrap().as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["as_cluster", "as_profile", "client_id", "client_secret", "issuer", "resources"]);
        let c = PepConfig::from_document(doc).unwrap();
        assert_eq!(c.unmatched, UnmatchedPolicy::Deny);
        assert_eq!(c.challenge_style, ChallengeStyle::Compact);
        assert_eq!(c.forward.as_ref().map(|f| f.header.as_str()), Some(DEFAULT_FORWARD_HEADER));
        let err = parse(&with(r#""unmatched":"maybe""#)).unwrap_err();
        assert_eq!(err.key, "unmatched");
    }

    #[test]
    fn path_prefix_and_authorize_path_are_normalised() {
        let c = parse(&with(r#""path_prefix":"/pep/","authorize_path":"/authorize""#)).unwrap();
        assert_eq!(c.path_prefix, "/pep");
        assert_eq!(c.authorize_path.as_deref(), Some("/authorize"));
    }

    #[test]
    fn a_path_key_with_a_query_or_fragment_is_refused_and_a_root_spelling_is_no_prefix() {
        // Found by the config fuzz target: "/#pe&" was cut to "/", a prefix that is no prefix.
        for (key, value) in
            [("path_prefix", "/#pe&"), ("path_prefix", "/pep?x"), ("authorize_path", "/authorize#")]
        {
            let err = parse(&with(&format!(r#""{key}":"{value}""#))).unwrap_err();
            assert_eq!(err.key, key);
            assert!(err.to_string().contains("no query or fragment"), "{err}");
        }
        for root in ["//", "/.", "/%2e/"] {
            let c = parse(&with(&format!(r#""path_prefix":"{root}""#))).unwrap();
            assert_eq!(c.path_prefix, "", "{root:?}");
        }
    }
}
