//! Who is calling the Resource API, and whether an operator. A caller presents one of:
//!
//! * a bearer token in `Authorization` (one header, parsed as the filter parses it:
//!   `uma_pep_core::credential`):
//!   - a JWT the AS signed (a user's access token, or a JWT RPT) is verified against the AS's
//!     JWKS with the filter's own key code (`uma_pep_core::jwt_rpt::JwtKeys`: key by `kid`, the
//!     algorithm the key is for, never `none` or HMAC), then `iss`, `exp`, `nbf`, and `aud`
//!     when configured;
//!   - an opaque token is resolved by the AS: its userinfo endpoint (an access token), else its
//!     introspection endpoint (an opaque RPT, as a service behind the PEP received it); a JWT no
//!     JWKS can verify (signed with a client secret) is introspected too;
//! * without `Authorization`, the identity JWT the filter minted for the upstream (`forward`, in
//!   `x-user-id` by default), as a service behind the PEP passes it on: verified with the forward
//!   key's JWKS, its `iss` and `aud` exactly the filter's, and its `exp`.
//!
//! The party is the token's `sub`, else the `sub` the party pushed (`pct_claims.sub`: Gluu and
//! Janssen RPTs name no user); an operator is one whose `isOperator` (or `pct_claims.isOperator`)
//! is true. There is no way to accept an unsigned or self-signed token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use thiserror::Error;
use tokio::sync::{Mutex, RwLock};
use uma_pep_core::config::AsProfile;
use uma_pep_core::credential::Credential;
use uma_pep_core::introspection::{introspection_body, pushed_claim, Clock, IntrospectionResult};
use uma_pep_core::jwt_rpt::{check_issuer_and_audience, JwtKeys, Signed};
use uma_pep_core::wire::{basic_authorization, AsResponse};
use url::Url;

use crate::pat::{PatSource, ProtectedCallError};
use crate::repository::now_s;
use crate::transport::NetError;

/// How often an unknown `kid` may trigger a JWKS download (key rotation vs. a flood of forged
/// kids).
const JWKS_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("no bearer token in Authorization")]
    Missing,
    #[error("token refused: {0}")]
    Invalid(String),
    #[error("cannot verify tokens now: {0}")]
    Unavailable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub sub: String,
    pub is_operator: bool,
}

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub issuer: String,
    /// When set, a JWT's `aud` must contain it.
    pub audience: Option<String>,
    pub jwks_uri: Option<Url>,
    pub userinfo: Option<Url>,
    pub leeway_s: u64,
}

/// How opaque RPTs are resolved: the AS's introspection endpoint, called as the filter calls it
/// (uma2: the PAT; keycloak: the client's credentials).
pub struct Introspection {
    pub endpoint: Url,
    pub profile: AsProfile,
    pub pat: Arc<PatSource>,
}

/// The identity JWTs the filter mints (`forward`): the public keys they are signed with (the
/// JWKS `pepctl jwks` prints) and what their `iss` and `aud` must be.
pub struct ForwardedIdentity {
    /// Lower case, as HTTP/2 and the filter write it.
    pub header: String,
    pub keys: JwtKeys,
    pub issuer: String,
    pub audience: String,
}

/// What a request presents: every `Authorization` value and every value of the forwarded
/// identity header. A value that is not UTF-8 is passed as U+FFFD, which no parser accepts.
#[derive(Debug, Default, Clone, Copy)]
pub struct Presented<'a> {
    pub authorization: &'a [&'a str],
    pub forwarded: &'a [&'a str],
}

pub struct Verifier {
    http: reqwest::Client,
    config: IdentityConfig,
    jwks: RwLock<Arc<JwtKeys>>,
    last_fetch: Mutex<Option<Instant>>,
    introspection: Option<Introspection>,
    forwarded: Option<ForwardedIdentity>,
}

/// `isOperator` as the AS puts it: a boolean, or the string "true" from a user attribute or a
/// pushed claim (Gluu's introspection lists every pushed claim as strings).
fn operator_flag(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// The caller an accepted token names: its party (`sub`, else `pct_claims.sub`), whether an
/// operator, once the token is active and within its times (with `leeway_s` either way).
pub fn caller_of(result: &IntrospectionResult, now: i64, leeway_s: u64) -> Result<Caller, IdentityError> {
    if !result.active {
        return Err(IdentityError::Invalid("the AS says the token is not active".into()));
    }
    let leeway = i64::try_from(leeway_s).unwrap_or(i64::MAX);
    let clock = Clock { now, margin_s: leeway.saturating_neg(), skew_s: leeway };
    result.check_times(clock).map_err(|why| IdentityError::Invalid(format!("token {}", why.as_str())))?;
    let sub = result
        .sub
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| IdentityError::Invalid("the token names no party (no sub)".into()))?;
    let flag = result.claims.get("isOperator").or_else(|| pushed_claim(&result.claims, "isOperator"));
    Ok(Caller { sub, is_operator: operator_flag(flag) })
}

/// The claims of a verified JWT as the filter reads an RPT's (its `sub`, `pct_claims`...).
fn claims_result(claims: &Value) -> Result<IntrospectionResult, IdentityError> {
    let bytes = serde_json::to_vec(claims).map_err(|e| IdentityError::Invalid(format!("JWT claims: {e}")))?;
    IntrospectionResult::from_json(&bytes).map_err(|e| IdentityError::Invalid(format!("JWT claims: {e}")))
}

/// The one bearer token of the `Authorization` values, or why none: no header or another
/// scheme is no token (a 401 "no token passed"); a malformed one or two headers are refused.
pub fn bearer_token<'a>(authorization: &[&'a str]) -> Result<&'a str, IdentityError> {
    match Credential::from_headers(authorization) {
        Credential::Bearer(token) => Ok(token),
        Credential::Absent => Err(IdentityError::Missing),
        Credential::Unusable(why @ ("not a bearer token" | "empty bearer token")) => {
            tracing::debug!(reason = why, "Authorization holds no bearer token");
            Err(IdentityError::Missing)
        }
        Credential::Unusable(why) => Err(IdentityError::Invalid(why.into())),
        Credential::Duplicated => Err(IdentityError::Invalid("more than one Authorization header".into())),
    }
}

impl Verifier {
    pub fn new(http: reqwest::Client, config: IdentityConfig) -> Self {
        Self::with_keys(http, config, JwtKeys::default())
    }

    /// A verifier that starts with the AS keys `keys` (tests, and a JWKS already fetched).
    pub fn with_keys(http: reqwest::Client, config: IdentityConfig, keys: JwtKeys) -> Self {
        Self {
            http,
            config,
            jwks: RwLock::new(Arc::new(keys)),
            last_fetch: Mutex::new(None),
            introspection: None,
            forwarded: None,
        }
    }

    /// Opaque RPTs (and JWTs no JWKS verifies) are resolved at the AS's introspection endpoint.
    pub fn with_introspection(mut self, introspection: Introspection) -> Self {
        self.introspection = Some(introspection);
        self
    }

    /// Identity JWTs minted by the filter are accepted in `forwarded.header`.
    pub fn with_forwarded(mut self, forwarded: ForwardedIdentity) -> Self {
        self.forwarded = Some(forwarded);
        self
    }

    /// The header the filter's identity JWT comes in, when those are accepted.
    pub fn forwarded_header(&self) -> Option<&str> {
        self.forwarded.as_ref().map(|f| f.header.as_str())
    }

    /// The caller of a request: `Authorization` when present (it alone decides), else the
    /// forwarded identity JWT.
    pub async fn verify(&self, presented: Presented<'_>) -> Result<Caller, IdentityError> {
        if presented.authorization.is_empty() && !presented.forwarded.is_empty() {
            return self.verify_forwarded(presented.forwarded);
        }
        let token = bearer_token(presented.authorization)?;
        if token.split('.').count() == 3 {
            self.verify_jwt(token).await
        } else {
            self.resolve_opaque(token).await
        }
    }

    /// The identity JWT the filter minted: signed by the forward key, `iss` and `aud` exactly
    /// the filter's, not expired.
    fn verify_forwarded(&self, values: &[&str]) -> Result<Caller, IdentityError> {
        let Some(forwarded) = &self.forwarded else {
            return Err(IdentityError::Invalid(
                "an identity JWT was passed, but pepctl serve was started without --forward-jwks".into(),
            ));
        };
        let [token] = values else {
            return Err(IdentityError::Invalid(format!("more than one {} header", forwarded.header)));
        };
        let claims = match forwarded.keys.verify_signature(token.trim()) {
            Signed::Verified { claims, .. } => claims,
            Signed::NotAJwt => return Err(IdentityError::Invalid("the identity header holds no JWT".into())),
            Signed::UnknownKey(_) => {
                return Err(IdentityError::Invalid("identity JWT not signed by the forward key".into()))
            }
            Signed::Uncheckable(why) | Signed::Invalid(why) => {
                return Err(IdentityError::Invalid(format!("identity JWT: {why}")))
            }
        };
        check_issuer_and_audience(&claims, &forwarded.issuer, Some(&forwarded.audience))
            .map_err(|why| IdentityError::Invalid(format!("identity JWT: {why}")))?;
        caller_of(&claims_result(&claims)?, now_s(), self.config.leeway_s)
    }

    async fn keys(&self) -> Arc<JwtKeys> {
        self.jwks.read().await.clone()
    }

    async fn refresh_jwks(&self) -> Result<(), IdentityError> {
        let Some(uri) = &self.config.jwks_uri else {
            return Ok(());
        };
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < JWKS_REFRESH_MIN_INTERVAL) {
            return Ok(());
        }
        *last = Some(Instant::now());
        let response = self
            .http
            .get(uri.clone())
            .send()
            .await
            .map_err(|e| IdentityError::Unavailable(format!("JWKS: {}", NetError::from(e))))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| IdentityError::Unavailable(format!("JWKS: {}", NetError::from(e))))?;
        let keys = JwtKeys::parse(&AsResponse { status: Some(status), body: &body })
            .map_err(|e| IdentityError::Unavailable(format!("JWKS: {e}")))?;
        for dropped in keys.dropped() {
            tracing::warn!(kid = %dropped.kid, reason = %dropped.reason, "AS JWKS key left out");
        }
        tracing::debug!(keys = keys.len(), "refreshed the AS JWKS");
        *self.jwks.write().await = Arc::new(keys);
        Ok(())
    }

    async fn verify_jwt(&self, token: &str) -> Result<Caller, IdentityError> {
        let mut signed = self.keys().await.verify_signature(token);
        if matches!(signed, Signed::UnknownKey(_)) {
            self.refresh_jwks().await?;
            signed = self.keys().await.verify_signature(token);
        }
        let claims = match signed {
            Signed::Verified { claims, .. } => claims,
            Signed::UnknownKey(_) => return Err(IdentityError::Invalid("unknown signing key".into())),
            Signed::NotAJwt => return Err(IdentityError::Invalid("malformed JWT".into())),
            Signed::Invalid(why) => return Err(IdentityError::Invalid(why)),
            // Only the AS can tell (a JWT RPT signed with a client secret): ask it, if we can.
            Signed::Uncheckable(why) => {
                return match &self.introspection {
                    Some(_) => self.introspect(token).await,
                    None => Err(IdentityError::Invalid(why)),
                }
            }
        };
        check_issuer_and_audience(&claims, &self.config.issuer, self.config.audience.as_deref())
            .map_err(IdentityError::Invalid)?;
        caller_of(&claims_result(&claims)?, now_s(), self.config.leeway_s)
    }

    /// An opaque token: an access token the userinfo endpoint knows, else an RPT the
    /// introspection endpoint says is active.
    async fn resolve_opaque(&self, token: &str) -> Result<Caller, IdentityError> {
        match self.userinfo(token).await {
            Err(IdentityError::Invalid(why)) if self.introspection.is_some() => {
                tracing::debug!(reason = %why, "not an access token userinfo knows; introspecting it as an RPT");
                self.introspect(token).await
            }
            other => other,
        }
    }

    async fn userinfo(&self, token: &str) -> Result<Caller, IdentityError> {
        let uri = self.config.userinfo.as_ref().ok_or_else(|| {
            IdentityError::Invalid("opaque token and no userinfo endpoint to resolve it".into())
        })?;
        let response = self
            .http
            .get(uri.clone())
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| IdentityError::Unavailable(format!("userinfo: {}", NetError::from(e))))?;
        let status = response.status().as_u16();
        if status == 401 || status == 403 {
            return Err(IdentityError::Invalid("the AS does not know this token".into()));
        }
        if status != 200 {
            return Err(IdentityError::Unavailable(format!("userinfo answered {status}")));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| IdentityError::Unavailable(format!("userinfo: {}", NetError::from(e))))?;
        let result = IntrospectionResult::from_json(&body)
            .map_err(|e| IdentityError::Unavailable(format!("userinfo unparseable: {e}")))?;
        caller_of(&result, now_s(), self.config.leeway_s)
    }

    /// Asks the AS about an RPT, as the filter does (same body, same credentials per dialect).
    async fn introspect(&self, token: &str) -> Result<Caller, IdentityError> {
        let Some(i) = &self.introspection else {
            return Err(IdentityError::Invalid("no introspection endpoint to resolve the token".into()));
        };
        let body = introspection_body(i.profile, token);
        let basic = {
            let c = i.pat.credentials();
            basic_authorization(&c.client_id, &c.client_secret)
        };
        let build = |_: &str| {
            self.http
                .post(i.endpoint.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body.clone())
        };
        let (status, bytes) = match i.profile {
            // Gluu/Janssen: the PAT (with uma_protection), refreshed once if refused.
            AsProfile::Uma2 => {
                let (status, bytes, _) = i.pat.send(build).await.map_err(|e| match e {
                    ProtectedCallError::Pat(e) => IdentityError::Unavailable(format!("introspection: {e}")),
                    ProtectedCallError::Request(e) => {
                        IdentityError::Unavailable(format!("introspection: {e}"))
                    }
                })?;
                (status, bytes)
            }
            // Keycloak: the resource server's own credentials.
            AsProfile::Keycloak => {
                let response =
                    build("").header(reqwest::header::AUTHORIZATION, basic).send().await.map_err(|e| {
                        IdentityError::Unavailable(format!("introspection: {}", NetError::from(e)))
                    })?;
                let status = response.status().as_u16();
                let bytes = response.bytes().await.map_err(|e| {
                    IdentityError::Unavailable(format!("introspection: {}", NetError::from(e)))
                })?;
                (status, bytes.to_vec())
            }
        };
        let mut result = IntrospectionResult::parse(&AsResponse { status: Some(status), body: &bytes })
            .map_err(|e| IdentityError::Unavailable(format!("introspection: {e}")))?;
        // Keycloak's RPT introspection names no party; the RPT the AS just vouched for does.
        result.complete_identity_from_jwt(token);
        caller_of(&result, now_s(), self.config.leeway_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use serde_json::json;

    const RSA_PEM: &str = include_str!("../tests/keys/rsa.pem");
    const ED_PEM: &str = include_str!("../tests/keys/ed25519.pem");
    const P256_PEM: &str = include_str!("../tests/keys/p256.pem");
    const ISS: &str = "http://127.0.0.1:1/realms/r";

    fn jwk_set(pems: &[&str]) -> JwtKeys {
        let keys: Vec<Value> = pems
            .iter()
            .map(|p| serde_json::to_value(crate::jwks::public_key_from_pem(p.as_bytes()).unwrap()).unwrap())
            .collect();
        let body = json!({ "keys": keys }).to_string();
        JwtKeys::parse(&AsResponse { status: Some(200), body: body.as_bytes() }).unwrap()
    }

    fn kid(pem: &str) -> String {
        crate::jwks::public_key_from_pem(pem.as_bytes()).unwrap().common.key_id.unwrap()
    }

    fn config(audience: Option<&str>) -> IdentityConfig {
        IdentityConfig {
            issuer: ISS.into(),
            audience: audience.map(str::to_string),
            jwks_uri: None,
            userinfo: None,
            leeway_s: 0,
        }
    }

    fn verifier(audience: Option<&str>) -> Verifier {
        Verifier::with_keys(reqwest::Client::new(), config(audience), jwk_set(&[RSA_PEM, ED_PEM]))
    }

    /// Accepts the filter's identity JWTs signed with the P-256 key, for `ades`.
    fn with_forwarding() -> Verifier {
        verifier(None).with_forwarded(ForwardedIdentity {
            header: "x-user-id".into(),
            keys: jwk_set(&[P256_PEM]),
            issuer: "uma-pep".into(),
            audience: "ades".into(),
        })
    }

    fn now() -> i64 {
        crate::repository::now_s()
    }

    fn sign(pem: &str, alg: Algorithm, claims: Value) -> String {
        let key = match alg {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        };
        let mut header = Header::new(alg);
        header.kid = Some(kid(pem));
        encode(&header, &claims, &key).unwrap()
    }

    fn claims(extra: Value) -> Value {
        let mut c = json!({"iss": ISS, "sub": "alice", "exp": now() + 300, "aud": "pepctl"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    fn minted(extra: Value) -> String {
        let mut c = json!({"iss": "uma-pep", "sub": "alice", "aud": "ades", "iat": now(), "exp": now() + 60,
                           "permissions": [], "client_id": "demo-app"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        sign(P256_PEM, Algorithm::ES256, c)
    }

    fn bearer(t: &str) -> String {
        format!("Bearer {t}")
    }

    async fn verify(v: &Verifier, authorization: Option<&str>) -> Result<Caller, IdentityError> {
        let auth: Vec<&str> = authorization.into_iter().collect();
        v.verify(Presented { authorization: &auth, forwarded: &[] }).await
    }

    async fn verify_forwarded(v: &Verifier, token: &str) -> Result<Caller, IdentityError> {
        v.verify(Presented { authorization: &[], forwarded: &[token] }).await
    }

    #[tokio::test]
    async fn valid_tokens_give_the_caller() {
        let v = verifier(Some("pepctl"));
        let t = sign(RSA_PEM, Algorithm::RS256, claims(json!({})));
        assert_eq!(
            verify(&v, Some(&bearer(&t))).await.unwrap(),
            Caller { sub: "alice".into(), is_operator: false }
        );
        let t = sign(ED_PEM, Algorithm::EdDSA, claims(json!({"isOperator": true})));
        assert!(verify(&v, Some(&bearer(&t))).await.unwrap().is_operator);
        let t =
            sign(RSA_PEM, Algorithm::RS256, claims(json!({"isOperator": "true", "aud": ["x", "pepctl"]})));
        assert!(verify(&v, Some(&bearer(&t))).await.unwrap().is_operator);
    }

    #[tokio::test]
    async fn a_jwt_rpt_names_its_party_and_operator_in_the_pushed_claims() {
        let v = verifier(None);
        // A Gluu JWT RPT: no sub, the party's claims in pct_claims.
        let gluu = json!({"iss": ISS, "client_id": "jwt-app", "aud": "jwt-app", "exp": now() + 300,
                          "permissions": [], "pct_claims": {"sub": "admin-0003", "isOperator": true}});
        let t = sign(RSA_PEM, Algorithm::RS256, gluu.clone());
        assert_eq!(
            verify(&v, Some(&bearer(&t))).await.unwrap(),
            Caller { sub: "admin-0003".into(), is_operator: true }
        );
        // Introspection's shape of the same: lists of strings.
        let mut listed = gluu.clone();
        listed["pct_claims"] = json!({"sub": ["admin-0003"], "isOperator": ["true"]});
        let t = sign(RSA_PEM, Algorithm::RS256, listed);
        assert!(verify(&v, Some(&bearer(&t))).await.unwrap().is_operator);
        // The RPT's own claims win over pushed ones.
        let t = sign(RSA_PEM, Algorithm::RS256, claims(json!({"pct_claims": {"sub": "mallory"}})));
        assert_eq!(verify(&v, Some(&bearer(&t))).await.unwrap().sub, "alice");
        // isOperator in pct_claims but a signature of a key the AS never published: refused.
        let forged = {
            let key = EncodingKey::from_ec_pem(P256_PEM.as_bytes()).unwrap();
            let mut h = Header::new(Algorithm::ES256);
            h.kid = Some(kid(RSA_PEM));
            encode(&h, &gluu, &key).unwrap()
        };
        assert!(matches!(verify(&v, Some(&bearer(&forged))).await, Err(IdentityError::Invalid(_))));
        // The same payload with the signature of a genuine token of other claims: refused.
        let genuine = sign(RSA_PEM, Algorithm::RS256, claims(json!({})));
        let parts: Vec<&str> = genuine.split('.').collect();
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(gluu.to_string());
        let spliced = format!("{}.{}.{}", parts[0], payload, parts[2]);
        assert!(matches!(verify(&v, Some(&bearer(&spliced))).await, Err(IdentityError::Invalid(_))));
    }

    #[tokio::test]
    async fn bad_tokens_are_refused() {
        let v = verifier(Some("pepctl"));
        let cases = [
            ("expired", sign(RSA_PEM, Algorithm::RS256, claims(json!({"exp": now() - 10})))),
            ("foreign issuer", sign(RSA_PEM, Algorithm::RS256, claims(json!({"iss": "http://evil"})))),
            ("wrong audience", sign(RSA_PEM, Algorithm::RS256, claims(json!({"aud": "other"})))),
            ("not yet valid", sign(RSA_PEM, Algorithm::RS256, claims(json!({"nbf": now() + 600})))),
            ("no exp", {
                let mut c = claims(json!({}));
                c.as_object_mut().unwrap().remove("exp");
                sign(RSA_PEM, Algorithm::RS256, c)
            }),
            // A P-256 key the AS never published, with the kid of a published one.
            ("wrongly signed", {
                let key = EncodingKey::from_ec_pem(P256_PEM.as_bytes()).unwrap();
                let mut h = Header::new(Algorithm::ES256);
                h.kid = Some(kid(RSA_PEM));
                encode(&h, &claims(json!({})), &key).unwrap()
            }),
            ("unknown kid", {
                let key = EncodingKey::from_ec_pem(P256_PEM.as_bytes()).unwrap();
                let mut h = Header::new(Algorithm::ES256);
                h.kid = Some(kid(P256_PEM));
                encode(&h, &claims(json!({})), &key).unwrap()
            }),
            ("no kid", {
                let key = EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap();
                encode(&Header::new(Algorithm::RS256), &claims(json!({})), &key).unwrap()
            }),
            ("HS256 with the public key as secret", {
                let jwk = serde_json::to_value(crate::jwks::public_key_from_pem(RSA_PEM.as_bytes()).unwrap())
                    .unwrap();
                let n = jwk["n"].as_str().unwrap().to_string();
                let mut h = Header::new(Algorithm::HS256);
                h.kid = Some(kid(RSA_PEM));
                encode(&h, &claims(json!({})), &EncodingKey::from_secret(n.as_bytes())).unwrap()
            }),
            (
                "no sub",
                sign(RSA_PEM, Algorithm::RS256, json!({"iss": ISS, "exp": now() + 60, "aud": "pepctl"})),
            ),
        ];
        for (what, token) in cases {
            let r = verify(&v, Some(&bearer(&token))).await;
            assert!(matches!(r, Err(IdentityError::Invalid(_))), "{what}: {r:?}");
        }
    }

    #[tokio::test]
    async fn forged_operator_claim_and_unsigned_tokens_are_refused() {
        let v = verifier(None);
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let genuine = sign(RSA_PEM, Algorithm::RS256, claims(json!({})));
        let parts: Vec<&str> = genuine.split('.').collect();
        let forged_payload = b64(&claims(json!({"isOperator": true})).to_string());
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert!(matches!(verify(&v, Some(&bearer(&forged))).await, Err(IdentityError::Invalid(_))));
        let none =
            format!("{}.{}.", b64(&format!(r#"{{"alg":"none","kid":"{}"}}"#, kid(RSA_PEM))), forged_payload);
        assert!(verify(&v, Some(&bearer(&none))).await.is_err());
        assert!(matches!(verify(&v, Some(&bearer("a.b.c"))).await, Err(IdentityError::Invalid(_))));
    }

    #[tokio::test]
    async fn only_one_authorization_bearer_counts() {
        let v = verifier(None);
        assert!(matches!(verify(&v, None).await, Err(IdentityError::Missing)));
        assert!(matches!(verify(&v, Some("Basic YTpi")).await, Err(IdentityError::Missing)));
        assert!(matches!(verify(&v, Some("Bearer")).await, Err(IdentityError::Missing)));
        assert!(matches!(verify(&v, Some("Bearer a\"b")).await, Err(IdentityError::Invalid(_))));
        // Opaque token without a userinfo endpoint: refused, not trusted.
        assert!(matches!(verify(&v, Some("Bearer opaque-123")).await, Err(IdentityError::Invalid(_))));
        let t = sign(RSA_PEM, Algorithm::RS256, claims(json!({})));
        assert!(verify(&v, Some(&format!("bearer {t}"))).await.is_ok());
        // Two credentials are ambiguous about who is asking.
        let two = [bearer(&t), bearer(&t)];
        let both: Vec<&str> = two.iter().map(String::as_str).collect();
        let r = v.verify(Presented { authorization: &both, forwarded: &[] }).await;
        assert!(matches!(r, Err(IdentityError::Invalid(_))), "{r:?}");
    }

    #[tokio::test]
    async fn the_filters_identity_jwt_names_the_caller() {
        let v = with_forwarding();
        let caller = verify_forwarded(&v, &minted(json!({}))).await.unwrap();
        assert_eq!(caller, Caller { sub: "alice".into(), is_operator: false });
        let op =
            verify_forwarded(&v, &minted(json!({"sub": "admin-0003", "isOperator": true}))).await.unwrap();
        assert!(op.is_operator);
        // Authorization, when present, decides alone.
        let t = sign(RSA_PEM, Algorithm::RS256, claims(json!({"sub": "bob"})));
        let auth = [bearer(&t)];
        let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
        let token = minted(json!({"isOperator": true}));
        let both = v.verify(Presented { authorization: &auth, forwarded: &[&token] }).await.unwrap();
        assert_eq!(both, Caller { sub: "bob".into(), is_operator: false });
    }

    #[tokio::test]
    async fn forged_expired_or_misdirected_identity_jwts_are_refused() {
        let v = with_forwarding();
        let cases = [
            ("expired", minted(json!({"exp": now() - 10}))),
            ("wrong aud", minted(json!({"aud": "another-service"}))),
            ("no aud", {
                let c = json!({"iss": "uma-pep", "sub": "alice", "exp": now() + 60});
                sign(P256_PEM, Algorithm::ES256, c)
            }),
            ("wrong iss", minted(json!({"iss": ISS}))),
            ("no exp", {
                let c = json!({"iss": "uma-pep", "sub": "alice", "aud": "ades"});
                sign(P256_PEM, Algorithm::ES256, c)
            }),
            // Signed by the AS, not the forward key: an AS token is no identity JWT.
            (
                "the AS's key",
                sign(
                    RSA_PEM,
                    Algorithm::RS256,
                    json!({"iss": "uma-pep", "sub": "alice",
                                  "aud": "ades", "exp": now() + 60, "isOperator": true}),
                ),
            ),
            // A key the PEP does not have, with the forward key's kid.
            ("forged", {
                let key = EncodingKey::from_ed_pem(ED_PEM.as_bytes()).unwrap();
                let mut h = Header::new(Algorithm::EdDSA);
                h.kid = Some(kid(P256_PEM));
                let c = json!({"iss": "uma-pep", "sub": "admin-0003", "aud": "ades", "exp": now() + 60,
                               "isOperator": true});
                encode(&h, &c, &key).unwrap()
            }),
            ("unsigned", {
                let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
                format!(
                    "{}.{}.",
                    b64(&format!(r#"{{"alg":"none","kid":"{}"}}"#, kid(P256_PEM))),
                    b64(r#"{"iss":"uma-pep","sub":"admin-0003","aud":"ades","isOperator":true}"#)
                )
            }),
            ("garbage", "alice".to_string()),
        ];
        for (what, token) in cases {
            let r = verify_forwarded(&v, &token).await;
            assert!(matches!(r, Err(IdentityError::Invalid(_))), "{what}: {r:?}");
        }
        let two = minted(json!({}));
        let r = v.verify(Presented { authorization: &[], forwarded: &[&two, &two] }).await;
        assert!(matches!(r, Err(IdentityError::Invalid(_))), "two identity headers: {r:?}");
        // Without --forward-jwks an identity JWT is never taken.
        let r = verify_forwarded(&verifier(None), &minted(json!({}))).await;
        assert!(matches!(r, Err(IdentityError::Invalid(_))), "{r:?}");
    }

    #[test]
    fn the_party_comes_from_the_answer_within_its_times() {
        let parse = |body: Value| IntrospectionResult::from_json(body.to_string().as_bytes()).unwrap();
        let n = 1_900_000_000;
        let gluu = parse(json!({"active": true, "exp": n + 60, "sub": null,
                                "pct_claims": {"sub": ["carol"], "isOperator": ["true"]}}));
        assert_eq!(caller_of(&gluu, n, 0).unwrap(), Caller { sub: "carol".into(), is_operator: true });
        assert!(caller_of(&parse(json!({"active": false})), n, 0).is_err());
        assert!(caller_of(&parse(json!({"active": true, "exp": n - 1, "sub": "a"})), n, 0).is_err());
        assert!(
            caller_of(&parse(json!({"active": true, "exp": n - 1, "sub": "a"})), n, 30).is_ok(),
            "leeway"
        );
        assert!(caller_of(&parse(json!({"active": true, "nbf": n + 60, "sub": "a"})), n, 0).is_err());
        assert!(caller_of(&parse(json!({"active": true, "client_id": "robot"})), n, 0).is_err(), "no party");
        let not_op = parse(json!({"active": true, "sub": "a", "isOperator": "yes"}));
        assert!(!caller_of(&not_op, n, 0).unwrap().is_operator);
    }
}
