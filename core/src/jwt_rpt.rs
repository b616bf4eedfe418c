//! Local validation of RPTs that are signed JWTs (Keycloak RPTs, Gluu `rpt_as_jwt`), against
//! the AS's JWKS, so that no AS call is needed.
//!
//! Only asymmetric algorithms are verified here, and only the one the key is for: no `none`, no
//! HMAC keyed with a public key. A JWT this filter cannot verify (a symmetric or unsupported
//! algorithm, a key the JWKS lacks) is not refused but handed to introspection: only the AS can
//! tell. What is refused without an AS call is what is verifiably bad: a signature that fails
//! with a key the JWKS has, a wrong `iss` or `aud`, no `exp`. Times are checked by the caller's
//! clock (`IntrospectionResult::check_times`), not the library's, because inside Envoy the
//! host's clock is the one to trust.

use std::collections::HashMap;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::introspection::IntrospectionResult;
use crate::wire::{AsError, AsResponse};

/// The RSA algorithms an RSA key may verify.
const RSA_ALGS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Algorithms an RPT may be signed with: asymmetric ones only.
fn allowed(alg: Algorithm) -> bool {
    RSA_ALGS.contains(&alg) || matches!(alg, Algorithm::ES256 | Algorithm::ES384 | Algorithm::EdDSA)
}

/// The AS's verification keys by `kid`, each with the algorithms it may verify.
#[derive(Default)]
pub struct JwtKeys {
    keys: HashMap<String, (DecodingKey, Vec<Algorithm>)>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys").field("kids", &self.keys.keys().collect::<Vec<_>>()).finish()
    }
}

/// The outcome of checking a token locally.
#[derive(Debug)]
pub enum JwtCheck {
    /// Not a JWT: introspect it.
    NotAJwt,
    /// Signed with a key we do not have (yet): refresh the JWKS once, then introspect.
    UnknownKey(String),
    /// A JWT this filter cannot verify with the AS's JWKS: a symmetric algorithm (Gluu signs
    /// `rpt_as_jwt` RPTs with the client secret when the client's algorithm is HS*), one the
    /// library lacks, or no `kid`. Only the AS can tell: introspect it.
    Uncheckable(String),
    /// A JWT that must be refused; why, for the log.
    Invalid(String),
    /// Signature, issuer and audience check out; times are for the caller to check.
    Valid(IntrospectionResult),
}

fn algorithms_for(params: &AlgorithmParameters) -> Vec<Algorithm> {
    match params {
        AlgorithmParameters::RSA(_) => RSA_ALGS.to_vec(),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => Vec::new(),
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        // Symmetric keys never verify an RPT.
        _ => Vec::new(),
    }
}

impl JwtKeys {
    /// Reads a JWKS answer; keys that are not for signatures or not usable are skipped.
    pub fn parse(response: &AsResponse<'_>) -> Result<Self, AsError> {
        let body = match response.status {
            None => return Err(AsError::Unreachable),
            Some(200) => response.body,
            Some(s) => return Err(AsError::from_status(s, response.body)),
        };
        let set: JwkSet = serde_json::from_slice(body).map_err(|e| AsError::Garbage(format!("jwks: {e}")))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            if matches!(jwk.common.public_key_use, Some(ref u) if *u != jsonwebtoken::jwk::PublicKeyUse::Signature)
            {
                continue;
            }
            let mut algs = algorithms_for(&jwk.algorithm);
            if let Some(declared) = jwk.common.key_algorithm.and_then(|a| Algorithm::try_from(a).ok()) {
                // A key that names its algorithm verifies that one only.
                algs.retain(|a| *a == declared);
            }
            if algs.is_empty() {
                continue;
            }
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, (key, algs));
            }
        }
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a token's signature, `iss` and `aud`, and reads its claims.
    pub fn check(&self, token: &str, issuer: &str, audience: Option<&str>) -> JwtCheck {
        if token.split('.').count() != 3 {
            return JwtCheck::NotAJwt;
        }
        let header = match decode_header(token) {
            Ok(h) => h,
            Err(e) => return unreadable_header(token, &e),
        };
        if !allowed(header.alg) {
            return JwtCheck::Uncheckable(format!(
                "algorithm {:?} is not verifiable with the JWKS",
                header.alg
            ));
        }
        let Some(kid) = header.kid else {
            return JwtCheck::Uncheckable("JWT without kid".into());
        };
        let Some((key, algs)) = self.keys.get(&kid) else {
            return JwtCheck::UnknownKey(kid);
        };
        if !algs.contains(&header.alg) {
            return JwtCheck::Invalid(format!("algorithm {:?} does not fit key {kid}", header.alg));
        }
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        validation.set_issuer(&[issuer]);
        match audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let claims = match decode::<Value>(token, key, &validation) {
            Ok(data) => data.claims,
            Err(e) => return JwtCheck::Invalid(format!("JWT refused: {e}")),
        };
        if claims.get("exp").and_then(Value::as_f64).is_none() {
            return JwtCheck::Invalid("JWT without exp".into());
        }
        match serde_json::to_vec(&claims)
            .map_err(|e| AsError::Garbage(e.to_string()))
            .and_then(|b| IntrospectionResult::from_json(&b))
        {
            Ok(result) => JwtCheck::Valid(result),
            Err(e) => JwtCheck::Invalid(format!("JWT claims unusable: {e}")),
        }
    }
}

/// A header the library refuses: `alg: none` (or no `alg`) is verifiably unacceptable; any
/// other algorithm (ES512, say) is one only the AS can check.
fn unreadable_header(token: &str, error: &jsonwebtoken::errors::Error) -> JwtCheck {
    use base64::Engine as _;
    let alg = token
        .split('.')
        .next()
        .and_then(|h| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|header| header.get("alg").and_then(Value::as_str).map(str::to_string));
    match alg {
        Some(alg) if !alg.eq_ignore_ascii_case("none") && !alg.is_empty() => {
            JwtCheck::Uncheckable("algorithm not supported locally".into())
        }
        _ => JwtCheck::Invalid(format!("unusable JWT header: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AsProfile;
    use crate::introspection::Clock;
    use base64::Engine as _;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    // An Ed25519 key made for these tests only.
    const ED_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mteEJ/5GC\n-----END PRIVATE KEY-----\n";
    const ISSUER: &str = "http://as/realms/eoepca";

    fn keys() -> (EncodingKey, JwtKeys) {
        let (enc, jwk) =
            crate::forward::public_jwk(ED_PEM, crate::config::SigningAlg::EdDSA, Some("k1")).unwrap();
        let body = json!({"keys": [jwk]}).to_string();
        let keys = JwtKeys::parse(&AsResponse { status: Some(200), body: body.as_bytes() }).unwrap();
        (enc, keys)
    }

    fn sign(enc: &EncodingKey, kid: &str, claims: Value) -> String {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(kid.into());
        encode(&h, &claims, enc).unwrap()
    }

    fn keycloak_claims() -> Value {
        json!({"iss": ISSUER, "sub": "alice", "aud": ["pep-client"], "azp": "app", "exp": 2_000_000_000_i64,
               "authorization": {"permissions": [{"rsid": "r1", "scopes": ["protected_get"]}]}})
    }

    #[test]
    fn a_good_token_is_valid_and_decides_like_introspection() {
        let (enc, keys) = keys();
        assert_eq!(keys.len(), 1);
        let token = sign(&enc, "k1", keycloak_claims());
        let JwtCheck::Valid(r) = keys.check(&token, ISSUER, Some("pep-client")) else { panic!() };
        let clock = Clock { now: 1_900_000_000, margin_s: 5, skew_s: 0 };
        assert!(r.covers("r1", "protected_get", clock, AsProfile::Keycloak).is_ok());
        assert!(r.covers("r1", "protected_post", clock, AsProfile::Keycloak).is_err());
        assert_eq!(r.sub.as_deref(), Some("alice"));
    }

    #[test]
    fn gluu_top_level_permissions() {
        let (enc, keys) = keys();
        let token = sign(
            &enc,
            "k1",
            json!({"iss": ISSUER, "client_id": "c", "exp": 2_000_000_000_i64,
            "permissions": [{"resource_id": "r2", "resource_scopes": ["s"]}]}),
        );
        let JwtCheck::Valid(r) = keys.check(&token, ISSUER, None) else { panic!() };
        assert_eq!(r.permissions[0].resource_id, "r2");
    }

    #[test]
    fn refusals() {
        let (enc, keys) = keys();
        let good = sign(&enc, "k1", keycloak_claims());
        // Wrong issuer, wrong audience, no exp.
        let mut c = keycloak_claims();
        c["iss"] = json!("http://evil");
        assert!(matches!(keys.check(&sign(&enc, "k1", c), ISSUER, None), JwtCheck::Invalid(_)));
        assert!(matches!(keys.check(&good, ISSUER, Some("other")), JwtCheck::Invalid(_)));
        let mut c = keycloak_claims();
        c.as_object_mut().unwrap().remove("exp");
        assert!(matches!(keys.check(&sign(&enc, "k1", c), ISSUER, None), JwtCheck::Invalid(_)));
        // Tampered payload.
        let parts: Vec<&str> = good.split('.').collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims = keycloak_claims();
        claims["sub"] = json!("admin");
        let tampered = format!("{}.{}.{}", parts[0], b64.encode(claims.to_string()), parts[2]);
        assert!(matches!(keys.check(&tampered, ISSUER, None), JwtCheck::Invalid(_)));
        // alg none.
        let none = format!("{}.{}.", b64.encode(r#"{"alg":"none","kid":"k1"}"#), parts[1]);
        assert!(matches!(keys.check(&none, ISSUER, None), JwtCheck::Invalid(_)));
        // alg none, whatever its spelling, and no alg at all.
        let none = format!("{}.{}.", b64.encode(r#"{"alg":"NoNe","kid":"k1"}"#), parts[1]);
        assert!(matches!(keys.check(&none, ISSUER, None), JwtCheck::Invalid(_)));
        let no_alg = format!("{}.{}.x", b64.encode(r#"{"kid":"k1"}"#), parts[1]);
        assert!(matches!(keys.check(&no_alg, ISSUER, None), JwtCheck::Invalid(_)));
        // An algorithm of a key we have, but not the key's: a forgery, refused.
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("k1".into());
        let wrong_alg = format!("{}.{}.{}", b64.encode(serde_json::to_vec(&h).unwrap()), parts[1], parts[2]);
        assert!(matches!(keys.check(&wrong_alg, ISSUER, None), JwtCheck::Invalid(_)));
        // Unknown kid, and not a JWT at all.
        assert!(
            matches!(keys.check(&sign(&enc, "k2", keycloak_claims()), ISSUER, None), JwtCheck::UnknownKey(k) if k == "k2")
        );
        assert!(matches!(keys.check("opaque-token", ISSUER, None), JwtCheck::NotAJwt));
    }

    #[test]
    fn jwts_only_the_as_can_check_go_to_it() {
        let (enc, keys) = keys();
        // Gluu `rpt_as_jwt` with an HS256 client: signed with the client secret, which the
        // PEP does not have; never verified with a public key as if it were a secret.
        let hs = encode(
            &Header { kid: Some("k1".into()), ..Header::new(Algorithm::HS256) },
            &keycloak_claims(),
            &EncodingKey::from_secret(b"public key bytes"),
        )
        .unwrap();
        assert!(matches!(keys.check(&hs, ISSUER, None), JwtCheck::Uncheckable(_)));
        // No kid, and an algorithm the library lacks.
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = None;
        let no_kid = encode(&h, &keycloak_claims(), &enc).unwrap();
        assert!(matches!(keys.check(&no_kid, ISSUER, None), JwtCheck::Uncheckable(_)));
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let es512 = format!("{}.{}.sig", b64.encode(r#"{"alg":"ES512","kid":"k9"}"#), b64.encode("{}"));
        assert!(matches!(keys.check(&es512, ISSUER, None), JwtCheck::Uncheckable(_)));
    }

    #[test]
    fn symmetric_and_encryption_keys_are_skipped() {
        let body = json!({"keys": [
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]})
        .to_string();
        let keys = JwtKeys::parse(&AsResponse { status: Some(200), body: body.as_bytes() }).unwrap();
        assert!(keys.is_empty());
        assert!(JwtKeys::parse(&AsResponse { status: Some(200), body: b"nope" }).is_err());
    }
}
