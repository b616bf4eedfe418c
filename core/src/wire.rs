//! The AS calls other than introspection: discovery, the PAT, and the permission request that
//! yields a ticket. Bodies are built and answers parsed here; the glue only moves bytes.

use base64::Engine as _;
use serde::Deserialize;
use thiserror::Error;

use crate::challenge::is_safe_ticket;
use crate::config::AsProfile;

/// What came back from a dispatched call. `status` is `None` when Envoy delivered no headers:
/// a reset, a refused connection or a timeout.
#[derive(Debug, Clone, Copy)]
pub struct AsResponse<'a> {
    pub status: Option<u16>,
    pub body: &'a [u8],
}

/// Why an AS call gave no usable answer. Every variant ends in a fail-closed decision.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AsError {
    #[error("no response (reset, refused or timed out)")]
    Unreachable,
    /// 401/403: our PAT or client credentials were refused; worth one refresh and retry. The
    /// error code names the cause in the log (Janssen with UMA off: `access_denied` even on
    /// discovery; Keycloak: `invalid_clientId` for a client that is no resource server).
    #[error("refused with status {status} ({error})")]
    CredentialsRefused { status: u16, error: String },
    #[error("unexpected status {status} ({error})")]
    Status { status: u16, error: String },
    #[error("unparseable answer: {0}")]
    Garbage(String),
    /// A well-formed answer that cannot be used with this configuration (another issuer).
    #[error("{0}")]
    Mismatch(String),
}

impl AsError {
    pub fn from_status(status: u16, body: &[u8]) -> Self {
        // The error code of the body (`{"error": ..}`, UMA federated authz §6) helps the log.
        #[derive(Deserialize)]
        struct ErrorBody {
            error: Option<String>,
        }
        let error = serde_json::from_slice::<ErrorBody>(body)
            .ok()
            .and_then(|b| b.error)
            .filter(|e| !e.is_empty() && e.len() < 100 && e.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or_else(|| "-".to_string());
        if status == 401 || status == 403 {
            return AsError::CredentialsRefused { status, error };
        }
        AsError::Status { status, error }
    }
}

/// Checks status and returns the body of a successful answer.
fn expect_success<'a>(response: &AsResponse<'a>, ok: &[u16]) -> Result<&'a [u8], AsError> {
    match response.status {
        None => Err(AsError::Unreachable),
        Some(s) if ok.contains(&s) => Ok(response.body),
        Some(s) => Err(AsError::from_status(s, response.body)),
    }
}

/// The endpoints of `{issuer}/.well-known/uma2-configuration` that the filter uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub token_endpoint: String,
    pub permission_endpoint: String,
    pub resource_registration_endpoint: String,
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
}

impl Discovery {
    pub fn parse(response: &AsResponse<'_>) -> Result<Self, AsError> {
        let body = expect_success(response, &[200])?;
        serde_json::from_slice(body).map_err(|e| AsError::Garbage(format!("discovery: {e}")))
    }
}

/// An OAuth token response (the PAT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub value: String,
    /// Seconds until it expires, as the AS said (a default when it did not).
    pub expires_in: u64,
}

/// The largest AS answer the filter reads (a bigger one is garbage, and fails closed). The
/// rendered Envoy configurations make Envoy stop receiving at the same size
/// (`http.async_response_buffer_limit`): Envoy gathers a dispatched call's whole answer before
/// the filter sees it, up to 32 MiB per call by default.
pub const MAX_AS_ANSWER_BYTES: usize = 1024 * 1024;

/// Used when a token response has no `expires_in`: short, so a PAT is never trusted for long.
pub const DEFAULT_TOKEN_LIFETIME_S: u64 = 300;

/// The longest lifetime taken from a token response: a PAT the AS says lives longer is
/// refreshed daily anyway (a refresh costs one call; an unbounded number overflows times).
pub const MAX_TOKEN_LIFETIME_S: u64 = 86_400;
/// The shortest: an `expires_in` of 0 (or less) would make every request fetch a PAT.
pub const MIN_TOKEN_LIFETIME_S: u64 = 1;

/// A lifetime in seconds as the AS stated it (an integer of any size, negative, or a float),
/// within `MIN_TOKEN_LIFETIME_S..=MAX_TOKEN_LIFETIME_S`.
pub fn bounded_lifetime_s(n: &serde_json::Number) -> u64 {
    let s = match (n.as_u64(), n.as_i64(), n.as_f64()) {
        (Some(u), _, _) => u,
        (None, Some(_), _) => 0,
        // `as` saturates (and a float of JSON is never NaN).
        (None, None, Some(f)) => f.max(0.0) as u64,
        (None, None, None) => DEFAULT_TOKEN_LIFETIME_S,
    };
    s.clamp(MIN_TOKEN_LIFETIME_S, MAX_TOKEN_LIFETIME_S)
}

impl AccessToken {
    pub fn parse(response: &AsResponse<'_>) -> Result<Self, AsError> {
        #[derive(Deserialize)]
        struct TokenBody {
            access_token: String,
            #[serde(default)]
            expires_in: Option<serde_json::Number>,
        }
        let body = expect_success(response, &[200])?;
        let parsed: TokenBody =
            serde_json::from_slice(body).map_err(|e| AsError::Garbage(format!("token response: {e}")))?;
        if parsed.access_token.is_empty() || !parsed.access_token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AsError::Garbage("token response: unusable access_token".into()));
        }
        let expires_in = parsed.expires_in.map_or(DEFAULT_TOKEN_LIFETIME_S, |n| bounded_lifetime_s(&n));
        Ok(Self { value: parsed.access_token, expires_in })
    }
}

/// The permission request: always a JSON array (Keycloak accepts nothing else, the spec and
/// Gluu accept both).
pub fn permission_request_body(resource_id: &str, scopes: &[&str]) -> Vec<u8> {
    serde_json::json!([{ "resource_id": resource_id, "resource_scopes": scopes }]).to_string().into_bytes()
}

/// The ticket from a permission endpoint answer (`201 {"ticket": ..}`).
pub fn parse_ticket(response: &AsResponse<'_>) -> Result<String, AsError> {
    #[derive(Deserialize)]
    struct TicketBody {
        ticket: String,
    }
    let body = expect_success(response, &[200, 201])?;
    let parsed: TicketBody =
        serde_json::from_slice(body).map_err(|e| AsError::Garbage(format!("permission response: {e}")))?;
    if !is_safe_ticket(&parsed.ticket) {
        return Err(AsError::Garbage("permission response: unsafe ticket".into()));
    }
    Ok(parsed.ticket)
}

/// `Authorization: Basic` for the PEP's client (RFC 6749 §2.3.1 form-encodes id and secret).
pub fn basic_authorization(client_id: &str, client_secret: &str) -> String {
    let id: String = url::form_urlencoded::byte_serialize(client_id.as_bytes()).collect();
    let secret: String = url::form_urlencoded::byte_serialize(client_secret.as_bytes()).collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    format!("Basic {encoded}")
}

/// A form body from pairs.
pub fn form_body(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish().into_bytes()
}

/// The PAT request body, per dialect: the two real servers want opposite things.
/// - uma2 (Gluu oxAuth, Janssen): `scope=uma_protection` is required. Without it the grant
///   carries no scope and every protection call is refused with `406 invalid_client_scope`
///   (oxAuth `UmaValidationService.validateAuthorization`).
/// - keycloak: no `scope`. `uma_protection` is a client *role* there, granted to the resource
///   server's service account, not a client scope: asking for it as a scope is refused with
///   `400 invalid_scope "Invalid scopes: uma_protection"` (`TokenManager.isValidScope`).
pub fn pat_request_body(profile: AsProfile) -> Vec<u8> {
    match profile {
        AsProfile::Uma2 => form_body(&[("grant_type", "client_credentials"), ("scope", "uma_protection")]),
        AsProfile::Keycloak => form_body(&[("grant_type", "client_credentials")]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> AsResponse<'_> {
        AsResponse { status: Some(status), body: body.as_bytes() }
    }

    #[test]
    fn discovery_requires_the_uma_endpoints() {
        let full = r#"{"issuer":"http://a","token_endpoint":"http://a/t","permission_endpoint":"http://a/p",
            "resource_registration_endpoint":"http://a/r","introspection_endpoint":"http://a/i","jwks_uri":"http://a/j","extra":1}"#;
        let d = Discovery::parse(&resp(200, full)).unwrap();
        assert_eq!(d.permission_endpoint, "http://a/p");
        assert_eq!(d.introspection_endpoint.as_deref(), Some("http://a/i"));
        let missing =
            r#"{"issuer":"http://a","token_endpoint":"http://a/t","resource_registration_endpoint":"x"}"#;
        assert!(matches!(Discovery::parse(&resp(200, missing)), Err(AsError::Garbage(_))));
        assert!(matches!(Discovery::parse(&resp(500, full)), Err(AsError::Status { status: 500, .. })));
        let gone = AsResponse { status: None, body: b"" };
        assert_eq!(Discovery::parse(&gone), Err(AsError::Unreachable));
    }

    #[test]
    fn token_responses() {
        let t = AccessToken::parse(&resp(200, r#"{"access_token":"abc","expires_in":60}"#)).unwrap();
        assert_eq!(t, AccessToken { value: "abc".into(), expires_in: 60 });
        let t = AccessToken::parse(&resp(200, r#"{"access_token":"abc"}"#)).unwrap();
        assert_eq!(t.expires_in, DEFAULT_TOKEN_LIFETIME_S);
        let t = AccessToken::parse(&resp(200, r#"{"access_token":"abc","expires_in":59.5}"#)).unwrap();
        assert_eq!(t.expires_in, 59);
        assert!(matches!(AccessToken::parse(&resp(200, "not json")), Err(AsError::Garbage(_))));
        assert!(matches!(AccessToken::parse(&resp(200, r#"{"access_token":""}"#)), Err(AsError::Garbage(_))));
        assert_eq!(
            AccessToken::parse(&resp(401, r#"{"error":"invalid_client"}"#)),
            Err(AsError::CredentialsRefused { status: 401, error: "invalid_client".into() })
        );
    }

    #[test]
    fn token_lifetimes_are_bounded_whatever_the_as_says() {
        let life = |v: &str| {
            AccessToken::parse(&resp(200, &format!(r#"{{"access_token":"abc","expires_in":{v}}}"#)))
                .unwrap()
                .expires_in
        };
        for huge in ["18446744073709551615", "2300000000000000", "1e308", "99999999999999999999999", "3.5e15"]
        {
            assert_eq!(life(huge), MAX_TOKEN_LIFETIME_S, "{huge}");
        }
        for tiny in ["0", "-1", "-9223372036854775808", "-1e308", "0.2"] {
            assert_eq!(life(tiny), MIN_TOKEN_LIFETIME_S, "{tiny}");
        }
        assert_eq!(life("86400.9"), 86_400);
        assert_eq!(life("3600"), 3600);
        // Not a number at all: the answer is garbage, not a PAT of some lifetime.
        let quoted = r#"{"access_token":"abc","expires_in":"3600"}"#;
        assert!(matches!(AccessToken::parse(&resp(200, quoted)), Err(AsError::Garbage(_))));
    }

    #[test]
    fn permission_body_is_always_an_array() {
        let body = permission_request_body("res-1", &["protected_get"]);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"[{"resource_id":"res-1","resource_scopes":["protected_get"]}]"#
        );
        let body = permission_request_body("r\"x", &[]);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v[0]["resource_id"], "r\"x");
        assert_eq!(v[0]["resource_scopes"], serde_json::json!([]));
    }

    #[test]
    fn tickets() {
        assert_eq!(parse_ticket(&resp(201, r#"{"ticket":"t-1"}"#)).unwrap(), "t-1");
        assert_eq!(parse_ticket(&resp(200, r#"{"ticket":"t-1"}"#)).unwrap(), "t-1");
        assert!(matches!(parse_ticket(&resp(201, r#"{"ticket":"a\"b"}"#)), Err(AsError::Garbage(_))));
        assert!(matches!(parse_ticket(&resp(201, "<html>")), Err(AsError::Garbage(_))));
        assert_eq!(
            parse_ticket(&resp(400, r#"{"error":"invalid_resource_id"}"#)),
            Err(AsError::Status { status: 400, error: "invalid_resource_id".into() })
        );
        assert_eq!(
            parse_ticket(&resp(403, "{}")),
            Err(AsError::CredentialsRefused { status: 403, error: "-".into() })
        );
        assert_eq!(
            parse_ticket(&resp(403, r#"{"error":"access_denied"}"#)).unwrap_err().to_string(),
            "refused with status 403 (access_denied)"
        );
        // An empty code reads as none (found by the `wire` fuzz target).
        assert_eq!(
            parse_ticket(&resp(400, r#"{"error":""}"#)),
            Err(AsError::Status { status: 400, error: "-".into() })
        );
        assert_eq!(
            parse_ticket(&resp(502, "bad gateway")),
            Err(AsError::Status { status: 502, error: "-".into() })
        );
    }

    #[test]
    fn basic_auth_and_forms() {
        assert_eq!(basic_authorization("pep", "s3cr:t"), "Basic cGVwOnMzY3IlM0F0");
        assert_eq!(
            String::from_utf8(pat_request_body(AsProfile::Uma2)).unwrap(),
            "grant_type=client_credentials&scope=uma_protection"
        );
        assert_eq!(
            String::from_utf8(pat_request_body(AsProfile::Keycloak)).unwrap(),
            "grant_type=client_credentials"
        );
        assert_eq!(String::from_utf8(form_body(&[("token", "a+b/c=")])).unwrap(), "token=a%2Bb%2Fc%3D");
    }
}
