//! Who is calling the Resource API. The token comes only from `Authorization: Bearer`; a JWT
//! is verified against the AS's JWKS (key by `kid`, algorithm from an allow-list and matching
//! the key, `iss`, `exp`, `nbf`, and `aud` when configured); an opaque token is resolved by
//! the AS's userinfo endpoint. There is no way to accept an unsigned or self-signed token:
//! the seed's `verify_signature: false` hole is what this module exists to close.

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::{Mutex, RwLock};
use url::Url;

use crate::transport::NetError;

/// The algorithms a caller's JWT may use. No HMAC (a public key must never be usable as a
/// shared secret), no `none`.
pub const ALLOWED_ALGS: &[Algorithm] =
    &[Algorithm::RS256, Algorithm::PS256, Algorithm::ES256, Algorithm::EdDSA];

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

pub struct Verifier {
    http: reqwest::Client,
    config: IdentityConfig,
    jwks: RwLock<JwkSet>,
    last_fetch: Mutex<Option<Instant>>,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(default, rename = "isOperator")]
    is_operator: Option<serde_json::Value>,
}

/// `isOperator` as the AS puts it: a boolean, or the string "true" from a user attribute.
fn operator_flag(v: Option<&serde_json::Value>) -> bool {
    match v {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer_token(header: Option<&str>) -> Result<&str, IdentityError> {
    let value = header.ok_or(IdentityError::Missing)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or(IdentityError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(IdentityError::Missing);
    }
    let token = token.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(IdentityError::Invalid("malformed bearer token".into()));
    }
    Ok(token)
}

fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

impl Verifier {
    pub fn new(http: reqwest::Client, config: IdentityConfig) -> Self {
        Self::with_jwks(http, config, JwkSet { keys: Vec::new() })
    }

    /// A verifier that starts with `jwks` (tests, and a JWKS already fetched).
    pub fn with_jwks(http: reqwest::Client, config: IdentityConfig, jwks: JwkSet) -> Self {
        Self { http, config, jwks: RwLock::new(jwks), last_fetch: Mutex::new(None) }
    }

    pub async fn verify(&self, authorization: Option<&str>) -> Result<Caller, IdentityError> {
        let token = bearer_token(authorization)?;
        if looks_like_jwt(token) {
            self.verify_jwt(token).await
        } else {
            self.userinfo(token).await
        }
    }

    async fn key_for(&self, kid: &str) -> Result<Jwk, IdentityError> {
        if let Some(k) = self.jwks.read().await.find(kid) {
            return Ok(k.clone());
        }
        self.refresh_jwks().await?;
        self.jwks
            .read()
            .await
            .find(kid)
            .cloned()
            .ok_or_else(|| IdentityError::Invalid("unknown signing key".into()))
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
        if !response.status().is_success() {
            return Err(IdentityError::Unavailable(format!("JWKS answered {}", response.status())));
        }
        let set: JwkSet = response
            .json()
            .await
            .map_err(|e| IdentityError::Unavailable(format!("JWKS unparseable: {e}")))?;
        tracing::debug!(keys = set.keys.len(), "refreshed the AS JWKS");
        *self.jwks.write().await = set;
        Ok(())
    }

    async fn verify_jwt(&self, token: &str) -> Result<Caller, IdentityError> {
        let header =
            decode_header(token).map_err(|e| IdentityError::Invalid(format!("bad JWT header: {e}")))?;
        if !ALLOWED_ALGS.contains(&header.alg) {
            return Err(IdentityError::Invalid(format!("algorithm {:?} not allowed", header.alg)));
        }
        let kid = header.kid.as_deref().ok_or_else(|| IdentityError::Invalid("JWT has no kid".into()))?;
        let jwk = self.key_for(kid).await?;
        if let Some(key_alg) = jwk.common.key_algorithm {
            // The key says which algorithm it is for; a header naming another is an attack
            // (or a mistake) either way.
            if format!("{key_alg:?}") != format!("{:?}", header.alg) {
                return Err(IdentityError::Invalid("JWT alg does not match its key".into()));
            }
        }
        let key =
            DecodingKey::from_jwk(&jwk).map_err(|e| IdentityError::Invalid(format!("unusable key: {e}")))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.config.leeway_s;
        validation.validate_nbf = true;
        validation.set_issuer(&[self.config.issuer.as_str()]);
        match &self.config.audience {
            Some(aud) => {
                validation.set_audience(&[aud.as_str()]);
                validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
            }
            None => {
                validation.validate_aud = false;
                validation.set_required_spec_claims(&["exp", "iss", "sub"]);
            }
        }
        let data = decode::<Claims>(token, &key, &validation)
            .map_err(|e| IdentityError::Invalid(format!("JWT: {e}")))?;
        let sub = data
            .claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or_else(|| IdentityError::Invalid("JWT has no sub".into()))?;
        Ok(Caller { sub, is_operator: operator_flag(data.claims.is_operator.as_ref()) })
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
        let claims: Claims = response
            .json()
            .await
            .map_err(|e| IdentityError::Unavailable(format!("userinfo unparseable: {e}")))?;
        let sub = claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or_else(|| IdentityError::Invalid("userinfo has no sub".into()))?;
        Ok(Caller { sub, is_operator: operator_flag(claims.is_operator.as_ref()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const RSA_PEM: &str = include_str!("../tests/keys/rsa.pem");
    const ED_PEM: &str = include_str!("../tests/keys/ed25519.pem");
    const P256_PEM: &str = include_str!("../tests/keys/p256.pem");
    const ISS: &str = "http://127.0.0.1:1/realms/r";

    fn jwk_set(pems: &[&str]) -> JwkSet {
        let keys: Vec<serde_json::Value> = pems
            .iter()
            .map(|p| serde_json::to_value(crate::jwks::public_key_from_pem(p.as_bytes()).unwrap()).unwrap())
            .collect();
        serde_json::from_value(serde_json::json!({ "keys": keys })).unwrap()
    }

    fn kid(pem: &str) -> String {
        crate::jwks::public_key_from_pem(pem.as_bytes()).unwrap().common.key_id.unwrap()
    }

    fn verifier(audience: Option<&str>) -> Verifier {
        Verifier::with_jwks(
            reqwest::Client::new(),
            IdentityConfig {
                issuer: ISS.into(),
                audience: audience.map(str::to_string),
                jwks_uri: None,
                userinfo: None,
                leeway_s: 0,
            },
            jwk_set(&[RSA_PEM, ED_PEM]),
        )
    }

    fn now() -> i64 {
        crate::repository::now_s()
    }

    fn sign(pem: &str, alg: Algorithm, claims: serde_json::Value) -> String {
        let key = match alg {
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
        };
        let mut header = Header::new(alg);
        header.kid = Some(kid(pem));
        encode(&header, &claims, &key).unwrap()
    }

    fn claims(extra: serde_json::Value) -> serde_json::Value {
        let mut c = serde_json::json!({"iss": ISS, "sub": "alice", "exp": now() + 300, "aud": "pepctl"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    fn bearer(t: &str) -> String {
        format!("Bearer {t}")
    }

    #[tokio::test]
    async fn valid_tokens_give_the_caller() {
        let v = verifier(Some("pepctl"));
        let t = sign(RSA_PEM, Algorithm::RS256, claims(serde_json::json!({})));
        assert_eq!(
            v.verify(Some(&bearer(&t))).await.unwrap(),
            Caller { sub: "alice".into(), is_operator: false }
        );
        let t = sign(ED_PEM, Algorithm::EdDSA, claims(serde_json::json!({"isOperator": true})));
        assert!(v.verify(Some(&bearer(&t))).await.unwrap().is_operator);
        let t = sign(
            RSA_PEM,
            Algorithm::RS256,
            claims(serde_json::json!({"isOperator": "true", "aud": ["x", "pepctl"]})),
        );
        assert!(v.verify(Some(&bearer(&t))).await.unwrap().is_operator);
    }

    #[tokio::test]
    async fn bad_tokens_are_refused() {
        let v = verifier(Some("pepctl"));
        let cases = [
            ("expired", sign(RSA_PEM, Algorithm::RS256, claims(serde_json::json!({"exp": now() - 10})))),
            (
                "foreign issuer",
                sign(RSA_PEM, Algorithm::RS256, claims(serde_json::json!({"iss": "http://evil"}))),
            ),
            ("wrong audience", sign(RSA_PEM, Algorithm::RS256, claims(serde_json::json!({"aud": "other"})))),
            (
                "not yet valid",
                sign(RSA_PEM, Algorithm::RS256, claims(serde_json::json!({"nbf": now() + 600}))),
            ),
            // A P-256 key the AS never published, with the kid of a published one.
            ("wrongly signed", {
                let key = EncodingKey::from_ec_pem(P256_PEM.as_bytes()).unwrap();
                let mut h = Header::new(Algorithm::ES256);
                h.kid = Some(kid(RSA_PEM));
                encode(&h, &claims(serde_json::json!({})), &key).unwrap()
            }),
            ("unknown kid", {
                let key = EncodingKey::from_ec_pem(P256_PEM.as_bytes()).unwrap();
                let mut h = Header::new(Algorithm::ES256);
                h.kid = Some(kid(P256_PEM));
                encode(&h, &claims(serde_json::json!({})), &key).unwrap()
            }),
            ("no kid", {
                let key = EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap();
                encode(&Header::new(Algorithm::RS256), &claims(serde_json::json!({})), &key).unwrap()
            }),
            ("HS256 with the public key as secret", {
                let jwk = serde_json::to_value(crate::jwks::public_key_from_pem(RSA_PEM.as_bytes()).unwrap())
                    .unwrap();
                let n = jwk["n"].as_str().unwrap().to_string();
                let mut h = Header::new(Algorithm::HS256);
                h.kid = Some(kid(RSA_PEM));
                encode(&h, &claims(serde_json::json!({})), &EncodingKey::from_secret(n.as_bytes())).unwrap()
            }),
            (
                "no sub",
                sign(
                    RSA_PEM,
                    Algorithm::RS256,
                    serde_json::json!({"iss": ISS, "exp": now() + 60, "aud": "pepctl"}),
                ),
            ),
        ];
        for (what, token) in cases {
            let r = v.verify(Some(&bearer(&token))).await;
            assert!(matches!(r, Err(IdentityError::Invalid(_))), "{what}: {r:?}");
        }
    }

    #[tokio::test]
    async fn forged_operator_claim_and_unsigned_tokens_are_refused() {
        let v = verifier(None);
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let genuine = sign(RSA_PEM, Algorithm::RS256, claims(serde_json::json!({})));
        let parts: Vec<&str> = genuine.split('.').collect();
        let forged_payload = b64(&claims(serde_json::json!({"isOperator": true})).to_string());
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert!(matches!(v.verify(Some(&bearer(&forged))).await, Err(IdentityError::Invalid(_))));
        let none =
            format!("{}.{}.", b64(&format!(r#"{{"alg":"none","kid":"{}"}}"#, kid(RSA_PEM))), forged_payload);
        assert!(v.verify(Some(&bearer(&none))).await.is_err());
        let garbage = "a.b.c";
        assert!(matches!(v.verify(Some(&bearer(garbage))).await, Err(IdentityError::Invalid(_))));
    }

    #[tokio::test]
    async fn only_the_authorization_bearer_counts() {
        let v = verifier(None);
        assert!(matches!(v.verify(None).await, Err(IdentityError::Missing)));
        assert!(matches!(v.verify(Some("Basic YTpi")).await, Err(IdentityError::Missing)));
        assert!(matches!(v.verify(Some("Bearer")).await, Err(IdentityError::Missing)));
        // Opaque token without a userinfo endpoint: refused, not trusted.
        assert!(matches!(v.verify(Some("Bearer opaque-123")).await, Err(IdentityError::Invalid(_))));
        let t = sign(RSA_PEM, Algorithm::RS256, claims(serde_json::json!({})));
        assert!(v.verify(Some(&format!("bearer {t}"))).await.is_ok());
    }
}
