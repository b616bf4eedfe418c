//! Local validation of RPTs that are signed JWTs (Keycloak RPTs, Gluu `rpt_as_jwt`), against
//! the AS's JWKS, so that no AS call is needed.
//!
//! Only asymmetric algorithms are verified here, and only the one the key is for: no `none`, no
//! HMAC keyed with a public key. A JWT this filter cannot verify (a symmetric or unsupported
//! algorithm, a key the JWKS lacks) is not refused but handed to introspection: only the AS can
//! tell. What is refused without an AS call is what is verifiably bad: a signature that fails
//! with a key the JWKS has, a high-S ECDSA signature (the malleated twin of a valid one), an
//! `iss` that is not exactly the issuer, an `aud` without the required audience, no `exp`, or a
//! token that does not have the dialect's RPT shape (a permission ticket, an ID or access token
//! the AS signed with the same key). Times are checked by the caller's clock
//! (`IntrospectionResult::check_times`), not the library's, because inside Envoy the host's
//! clock is the one to trust.
//!
//! Every JWKS key is validated when the JWKS is read (sizes, curve points, RSA parameters), so
//! that the library is never handed a key it could panic on; the keys dropped are reported.

use std::collections::HashMap;

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::config::AsProfile;
use crate::introspection::IntrospectionResult;
use crate::wire::{AsError, AsResponse};

/// The RSA algorithms an RSA key may verify; none in a build without `verify-rsa`, where an
/// RSA-signed RPT is introspected instead.
#[cfg(not(feature = "verify-rsa"))]
const RSA_ALGS: [Algorithm; 0] = [];
#[cfg(feature = "verify-rsa")]
const RSA_ALGS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Smallest RSA modulus accepted (bits).
const RSA_MIN_BITS: usize = 2048;
/// Largest RSA modulus the RSA library verifies with (bits): a larger key could verify nothing.
const RSA_MAX_BITS: usize = 4096;

/// ⌊n/2⌋ of P-256's group order, big-endian: an ES256 `s` above it is the high-S twin.
const P256_HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xde,
    0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8,
];
/// ⌊n/2⌋ of P-384's group order, big-endian.
const P384_HALF_ORDER: [u8; 48] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xe3, 0xb1, 0xa6, 0xc0, 0xfa, 0x1b, 0x96, 0xef, 0xac, 0x0d,
    0x06, 0xd9, 0x24, 0x58, 0x53, 0xbd, 0x76, 0x76, 0x0c, 0xb5, 0x66, 0x62, 0x94, 0xb9,
];

/// Algorithms an RPT may be signed with: asymmetric ones only.
fn allowed(alg: Algorithm) -> bool {
    RSA_ALGS.contains(&alg)
        || matches!(alg, Algorithm::ES256 | Algorithm::EdDSA)
        || (cfg!(feature = "verify-es384") && alg == Algorithm::ES384)
}

/// A JWKS key that was left out because it is malformed; both fields are printable ASCII,
/// shortened, fit for a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedKey {
    pub kid: String,
    pub reason: String,
}

/// The AS's verification keys by `kid`, each with the algorithms it may verify.
#[derive(Default)]
pub struct JwtKeys {
    keys: HashMap<String, (DecodingKey, Vec<Algorithm>)>,
    dropped: Vec<DroppedKey>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("dropped", &self.dropped)
            .finish()
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
    /// The AS's own JWT (signature and issuer check out) that is not an RPT for this PEP (its
    /// audience, `exp` or shape): refused as an RPT, but the party's access token to decide on
    /// with `access_tokens: decide`, while it lives (`exp`, for the caller to check).
    NotAnRpt { reason: String, exp: Option<i64> },
    /// Signature, issuer, audience and RPT shape check out; times are for the caller to check.
    Valid(IntrospectionResult),
}

fn algorithms_for(params: &AlgorithmParameters) -> Vec<Algorithm> {
    match params {
        AlgorithmParameters::RSA(_) => RSA_ALGS.to_vec(),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 if cfg!(feature = "verify-es384") => vec![Algorithm::ES384],
            _ => Vec::new(),
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        // Symmetric keys never verify an RPT.
        _ => Vec::new(),
    }
}

/// The cargo feature a key's type needs, when this build left it out.
fn left_out_of_build(params: &AlgorithmParameters) -> Option<&'static str> {
    match params {
        AlgorithmParameters::RSA(_) => crate::crypto::missing_feature(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => {
            crate::crypto::missing_feature(Algorithm::ES384)
        }
        _ => None,
    }
}

/// Printable ASCII, at most 80 characters: AS-supplied text made fit for a log line.
fn printable(value: &str) -> String {
    value.chars().take(80).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}

fn b64url(value: &str, what: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| format!("{what} is not base64url"))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// A key the library can use without panicking, or why not: exact sizes for curve keys and a
/// point on the curve, RSA of 2048 to 4096 bits with an exponent the RSA library accepts.
fn decoding_key(jwk: &Jwk, alg: Algorithm) -> Result<DecodingKey, String> {
    let key = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = b64url(&p.n, "RSA n")?;
            let e = b64url(&p.e, "RSA e")?;
            let (n, e) = (strip_leading_zeros(&n), strip_leading_zeros(&e));
            let bits = n.first().map_or(0, |top| (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize));
            if bits < RSA_MIN_BITS {
                return Err(format!("RSA modulus of {bits} bits (at least {RSA_MIN_BITS} wanted)"));
            }
            if bits > RSA_MAX_BITS {
                return Err(format!("RSA modulus of {bits} bits (at most {RSA_MAX_BITS} supported)"));
            }
            if e.is_empty() || e.len() > 8 {
                return Err("RSA exponent out of range".into());
            }
            #[cfg(feature = "verify-rsa")]
            rsa::RsaPublicKey::new(rsa::BigUint::from_bytes_be(n), rsa::BigUint::from_bytes_be(e))
                .map_err(|err| format!("RSA key refused: {err}"))?;
            return Ok(DecodingKey::from_rsa_raw_components(n, e));
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let size = match p.curve {
                EllipticCurve::P256 => 32,
                EllipticCurve::P384 => 48,
                _ => return Err("unsupported curve".into()),
            };
            let (x, y) = (b64url(&p.x, "EC x")?, b64url(&p.y, "EC y")?);
            if x.len() != size || y.len() != size {
                return Err(format!("EC x and y must be {size} bytes, not {} and {}", x.len(), y.len()));
            }
            DecodingKey::from_ec_components(&p.x, &p.y).map_err(|e| format!("EC key refused: {e}"))?
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            if p.curve != EllipticCurve::Ed25519 {
                return Err("OKP key not on Ed25519".into());
            }
            let x = b64url(&p.x, "Ed25519 x")?;
            if x.len() != 32 {
                return Err(format!("Ed25519 x must be 32 bytes, not {}", x.len()));
            }
            DecodingKey::from_ed_components(&p.x).map_err(|e| format!("Ed25519 key refused: {e}"))?
        }
        _ => return Err("not a signature key".into()),
    };
    // Sizes are right: have the library read the point now (is it on the curve?), once, with
    // an empty signature, rather than at the first token.
    jsonwebtoken::crypto::verify("", b"", &key, alg).map_err(|e| format!("key refused: {e}"))?;
    Ok(key)
}

impl JwtKeys {
    /// Reads a JWKS answer. Keys that are not for signatures (symmetric, encryption, no `kid`)
    /// are skipped; keys that are malformed are dropped and listed in [`JwtKeys::dropped`].
    pub fn parse(response: &AsResponse<'_>) -> Result<Self, AsError> {
        crate::crypto::install();
        #[derive(serde::Deserialize)]
        struct RawSet {
            keys: Vec<Value>,
        }
        let body = match response.status {
            None => return Err(AsError::Unreachable),
            Some(200) => response.body,
            Some(s) => return Err(AsError::from_status(s, response.body)),
        };
        let set: RawSet = serde_json::from_slice(body).map_err(|e| AsError::Garbage(format!("jwks: {e}")))?;
        let mut keys = HashMap::new();
        let mut dropped = Vec::new();
        for raw in set.keys {
            let Some(kid) = raw.get("kid").and_then(Value::as_str).map(str::to_string) else {
                continue;
            };
            let mut drop = |reason: String| {
                dropped.push(DroppedKey { kid: printable(&kid), reason: printable(&reason) })
            };
            // One key at a time: a key of a kind the library does not know drops that key only.
            let jwk: Jwk = match serde_json::from_value(raw) {
                Ok(jwk) => jwk,
                Err(e) => {
                    drop(format!("unreadable: {e}"));
                    continue;
                }
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
            let Some(&first) = algs.first() else {
                // A key of an algorithm this build left out: its RPTs go to introspection.
                if let Some(feature) = left_out_of_build(&jwk.algorithm) {
                    drop(format!("not verifiable by this build (cargo feature `{feature}`)"));
                }
                continue;
            };
            match decoding_key(&jwk, first) {
                Ok(key) => {
                    keys.insert(kid, (key, algs));
                }
                Err(reason) => drop(reason),
            }
        }
        Ok(Self { keys, dropped })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The malformed keys the JWKS held, left out; the host logs them.
    pub fn dropped(&self) -> &[DroppedKey] {
        &self.dropped
    }

    /// Checks a token's signature, `iss`, `aud` and its shape as an RPT of `profile`, and
    /// reads its claims.
    pub fn check(&self, token: &str, issuer: &str, audience: Option<&str>, profile: AsProfile) -> JwtCheck {
        let (claims, alg) = match self.verify_signature(token) {
            Signed::Verified { claims, alg } => (claims, alg),
            Signed::NotAJwt => return JwtCheck::NotAJwt,
            Signed::UnknownKey(kid) => return JwtCheck::UnknownKey(kid),
            Signed::Uncheckable(why) => return JwtCheck::Uncheckable(why),
            Signed::Invalid(why) => return JwtCheck::Invalid(why),
        };
        // An RPT's string keys its cache entry and use count: one RPT, one string.
        if let Err(reason) = low_s(token, alg) {
            return JwtCheck::Invalid(reason);
        }
        if let Err(reason) = check_issuer(&claims, issuer) {
            return JwtCheck::Invalid(reason);
        }
        if let Err(reason) = check_claims(&claims, issuer, audience, profile) {
            let exp = claims.get("exp").and_then(Value::as_i64);
            return JwtCheck::NotAnRpt { reason, exp };
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

/// ECDSA signatures are malleable: `(r, n − s)` verifies wherever `(r, s)` does, which would
/// make a second token string (its own cache entry and use count) for the same RPT. Only the
/// low-S form is accepted. Other algorithms pass.
fn low_s(token: &str, alg: Algorithm) -> Result<(), String> {
    let half: &[u8] = match alg {
        Algorithm::ES256 => &P256_HALF_ORDER,
        Algorithm::ES384 => &P384_HALF_ORDER,
        _ => return Ok(()),
    };
    let signature = token.rsplit('.').next().unwrap_or_default();
    let bytes = b64url(signature, "signature")?;
    if bytes.len() != 2 * half.len() {
        return Err(format!("{alg:?} signature of {} bytes", bytes.len()));
    }
    // Both big-endian, same length: byte order is numeric order.
    if &bytes[half.len()..] > half {
        return Err(format!("{alg:?} signature with a high S (malleated)"));
    }
    Ok(())
}

/// What a JWT's signature says, whatever the token is for (an RPT, an access token, a token
/// the PEP minted): the claims of a token signed by one of the keys, with an algorithm the key
/// is for, or why not.
#[derive(Debug)]
pub enum Signed {
    /// Not a JWT.
    NotAJwt,
    /// Signed with a key these keys lack (yet).
    UnknownKey(String),
    /// Not verifiable with a JWKS (a symmetric or unsupported algorithm, no `kid`).
    Uncheckable(String),
    /// Verifiably bad; why, for the log.
    Invalid(String),
    /// The signature checks out, made with `alg`; the claims are not judged yet.
    Verified { claims: Value, alg: Algorithm },
}

impl JwtKeys {
    /// Checks only the signature of `token`: no `none`, no HMAC, the algorithm the key is for.
    /// The claims (`iss`, `aud`, times, shape) are the caller's to judge, e.g. with
    /// [`check_issuer_and_audience`]; so is ECDSA's malleability, which matters only to a caller
    /// that keys state by the token's string (`check` refuses high-S signatures).
    pub fn verify_signature(&self, token: &str) -> Signed {
        if token.split('.').count() != 3 {
            return Signed::NotAJwt;
        }
        let header = match decode_header(token) {
            Ok(h) => h,
            Err(e) => {
                return match unreadable_header(token, &e) {
                    JwtCheck::Uncheckable(why) => Signed::Uncheckable(why),
                    JwtCheck::Invalid(why) => Signed::Invalid(why),
                    _ => Signed::Invalid("unusable JWT header".into()),
                }
            }
        };
        if !allowed(header.alg) {
            return Signed::Uncheckable(format!(
                "algorithm {:?} is not verifiable with the JWKS",
                header.alg
            ));
        }
        let Some(kid) = header.kid else {
            return Signed::Uncheckable("JWT without kid".into());
        };
        let Some((key, algs)) = self.keys.get(&kid) else {
            return Signed::UnknownKey(kid);
        };
        if !algs.contains(&header.alg) {
            return Signed::Invalid(format!(
                "algorithm {:?} does not fit key {}",
                header.alg,
                printable(&kid)
            ));
        }
        // The library checks the signature only; `iss`, `aud` and `exp` are judged on the
        // claims as sent, so that their shapes are exact.
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        match decode::<Value>(token, key, &validation) {
            Ok(data) => Signed::Verified { claims: data.claims, alg: header.alg },
            Err(e) => Signed::Invalid(format!("JWT refused: {e}")),
        }
    }
}

/// `iss` exactly `issuer`, `aud` holding `audience` when one is required, and an `exp`: what
/// every JWT this project accepts must say, whoever signed it.
pub fn check_issuer_and_audience(claims: &Value, issuer: &str, audience: Option<&str>) -> Result<(), String> {
    check_issuer(claims, issuer)?;
    if let Some(wanted) = audience {
        let ok = match claims.get("aud") {
            Some(Value::String(aud)) => aud == wanted,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(wanted)),
            _ => false,
        };
        if !ok {
            return Err("JWT not for this audience".into());
        }
    }
    if claims.get("exp").and_then(Value::as_f64).is_none() {
        return Err("JWT without exp".into());
    }
    Ok(())
}

/// `iss` exactly `issuer`.
fn check_issuer(claims: &Value, issuer: &str) -> Result<(), String> {
    match claims.get("iss") {
        Some(Value::String(iss)) if iss == issuer => Ok(()),
        Some(Value::String(_)) => Err("JWT of another issuer".into()),
        Some(_) => Err("JWT with an `iss` that is not a string".into()),
        None => Err("JWT without iss".into()),
    }
}

/// [`check_issuer_and_audience`], and the dialect's RPT shape.
fn check_claims(
    claims: &Value,
    issuer: &str,
    audience: Option<&str>,
    profile: AsProfile,
) -> Result<(), String> {
    check_issuer_and_audience(claims, issuer, audience)?;
    rpt_shape(claims, profile)
}

/// Whether a token is an RPT of the dialect, not another token the AS signs with the same key.
/// Keycloak: an access token (`typ` `Bearer`) with `authorization.permissions`; its permission
/// tickets have top-level `permissions` and no `typ`, its ID tokens `typ` `ID`, its plain access
/// tokens no `authorization`. Gluu `rpt_as_jwt`: top-level `permissions` and `client_id`.
fn rpt_shape(claims: &Value, profile: AsProfile) -> Result<(), String> {
    match profile {
        AsProfile::Keycloak => {
            if claims.get("typ").and_then(Value::as_str) != Some("Bearer") {
                return Err("JWT is not a Keycloak RPT (typ is not Bearer)".into());
            }
            let permissions = claims.get("authorization").and_then(|a| a.get("permissions"));
            if !permissions.is_some_and(Value::is_array) {
                return Err("JWT is not a Keycloak RPT (no authorization.permissions)".into());
            }
        }
        AsProfile::Uma2 => {
            if !claims.get("permissions").is_some_and(Value::is_array) {
                return Err("JWT is not an RPT (no permissions)".into());
            }
            if !claims.get("client_id").is_some_and(Value::is_string) {
                return Err("JWT is not an RPT (no client_id)".into());
            }
        }
    }
    Ok(())
}

/// A header the library refuses: `alg: none` (or no `alg`) is verifiably unacceptable; any
/// other algorithm (ES512, say) is one only the AS can check.
fn unreadable_header(token: &str, error: &jsonwebtoken::errors::Error) -> JwtCheck {
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
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    // An Ed25519 key made for these tests only.
    const ED_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mteEJ/5GC\n-----END PRIVATE KEY-----\n";
    const ISSUER: &str = "http://as/realms/eoepca";
    const KC: AsProfile = AsProfile::Keycloak;

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
        json!({"iss": ISSUER, "sub": "alice", "aud": ["pep-client"], "azp": "app", "exp": 2_000_000_000_i64, "typ": "Bearer",
               "authorization": {"permissions": [{"rsid": "r1", "scopes": ["protected_get"]}]}})
    }

    #[test]
    fn a_good_token_is_valid_and_decides_like_introspection() {
        let (enc, keys) = keys();
        assert_eq!(keys.len(), 1);
        let token = sign(&enc, "k1", keycloak_claims());
        let JwtCheck::Valid(r) = keys.check(&token, ISSUER, Some("pep-client"), KC) else { panic!() };
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
        let JwtCheck::Valid(r) = keys.check(&token, ISSUER, None, AsProfile::Uma2) else { panic!() };
        assert_eq!(r.permissions[0].resource_id, "r2");
    }

    #[test]
    fn refusals() {
        let (enc, keys) = keys();
        let good = sign(&enc, "k1", keycloak_claims());
        // Wrong issuer, wrong audience, no exp.
        let mut c = keycloak_claims();
        c["iss"] = json!("http://evil");
        assert!(matches!(keys.check(&sign(&enc, "k1", c), ISSUER, None, KC), JwtCheck::Invalid(_)));
        // The AS's own tokens that are no RPT here: refused as RPTs, left to a decision.
        assert!(matches!(keys.check(&good, ISSUER, Some("other"), KC), JwtCheck::NotAnRpt { .. }));
        let mut c = keycloak_claims();
        c.as_object_mut().unwrap().remove("exp");
        assert!(matches!(keys.check(&sign(&enc, "k1", c), ISSUER, None, KC), JwtCheck::NotAnRpt { .. }));
        // Tampered payload.
        let parts: Vec<&str> = good.split('.').collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims = keycloak_claims();
        claims["sub"] = json!("admin");
        let tampered = format!("{}.{}.{}", parts[0], b64.encode(claims.to_string()), parts[2]);
        assert!(matches!(keys.check(&tampered, ISSUER, None, KC), JwtCheck::Invalid(_)));
        // alg none.
        let none = format!("{}.{}.", b64.encode(r#"{"alg":"none","kid":"k1"}"#), parts[1]);
        assert!(matches!(keys.check(&none, ISSUER, None, KC), JwtCheck::Invalid(_)));
        // alg none, whatever its spelling, and no alg at all.
        let none = format!("{}.{}.", b64.encode(r#"{"alg":"NoNe","kid":"k1"}"#), parts[1]);
        assert!(matches!(keys.check(&none, ISSUER, None, KC), JwtCheck::Invalid(_)));
        let no_alg = format!("{}.{}.x", b64.encode(r#"{"kid":"k1"}"#), parts[1]);
        assert!(matches!(keys.check(&no_alg, ISSUER, None, KC), JwtCheck::Invalid(_)));
        // An algorithm of a key we have, but not the key's: a forgery, refused.
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("k1".into());
        let wrong_alg = format!("{}.{}.{}", b64.encode(serde_json::to_vec(&h).unwrap()), parts[1], parts[2]);
        assert!(matches!(keys.check(&wrong_alg, ISSUER, None, KC), JwtCheck::Invalid(_)));
        // Unknown kid, and not a JWT at all.
        assert!(
            matches!(keys.check(&sign(&enc, "k2", keycloak_claims()), ISSUER, None, KC), JwtCheck::UnknownKey(k) if k == "k2")
        );
        assert!(matches!(keys.check("opaque-token", ISSUER, None, KC), JwtCheck::NotAJwt));
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
        assert!(matches!(keys.check(&hs, ISSUER, None, KC), JwtCheck::Uncheckable(_)));
        // No kid, and an algorithm the library lacks.
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = None;
        let no_kid = encode(&h, &keycloak_claims(), &enc).unwrap();
        assert!(matches!(keys.check(&no_kid, ISSUER, None, KC), JwtCheck::Uncheckable(_)));
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let es512 = format!("{}.{}.sig", b64.encode(r#"{"alg":"ES512","kid":"k9"}"#), b64.encode("{}"));
        assert!(matches!(keys.check(&es512, ISSUER, None, KC), JwtCheck::Uncheckable(_)));
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

    // An RSA 2048 and a P-256 key made for these tests only.
    const RSA_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDJnYdDnh2xDjI0
93Ek3FN1yktOFB3cGmJuPcHS7zhlBJGHh7zW/5R2V4udHvFnnjF5Ehb0U3BvCfGC
ogOy/UKlWf3sfVXI3zyH3FzS8wRxx5q81GSLDSwUod8IQf7zQLEyJA7Vnhic4lQf
0Fbduy39TVSaIFOhExnLRqhOGfmjC2OR4f21a6JQC7gS6j0ZcJsAHUNLbfOkm5FK
AB33b9GB6D2llZDO58KpCNIHjircgFx7zDvFWw8VJgZclw6q+xsotX50sPncUCKE
yoq3pK1r1XzMGVUR32DLF/fdpAGeH8r5/ZDxgHw4lIVUlswwZ5/phK1wztvQMj71
vVcQnYa7AgMBAAECggEAXbsCm4jyvNGgvccbrstPcb9uawonJ6CMijvj1DCqwyvw
jFWqkTmYx7vDiHROPqHo1iR2z3fLGZRB1z2DAr+DMGQ6DKvoKc6+0Vq9PMUGF+94
HLmRVKP3DlCC48/quyQkPO9OhjlNsAH4oiG1gLf4lX5SCqVku8mpgDuFG2owCH/7
EYMrWkODOLMp/om+kQyyKvSDcDYGPyu42QAcOcQts8GntMupX8Mitbxnygtr+ur4
x2LVbnbjOzJ6QQaeV7Bqfoifw3E9y0zcclkatNCNvQyRLpw3E3HbhzdPN7pNBZtM
weH9zD21lvE5KZntm9SqrA2RZWQkTbFE8eSgHSpPgQKBgQD1yKUny8+QzZ6pGluM
5P6qn7Z2AwHXQ+ijiYrytN2uxMvkPQV5nrz/gl1Sx7ym5JARMeNzLg6SdkVpz9mc
r5Uw/9TWNBBu14MTI72pcTbZsFSriUQj/XDoPRg+e6J/N956p4b7qZKNe4UHGtWL
bELBSzJb9L/4fhaTs26a4t88qwKBgQDR/uR4XdbWjrT1jFanG2EBsCq48X8/UjJo
WfnHqSRoG7m+r3u0jOx2yLTcdc0YgDLPFWGztXodFhMDS/fUVhXwwYDrXn9CfGSs
LACR+awVSknhq0+/68pVQZTthL6wNZYoHaPspUypOsStsQHjyfBzvFUYfg/QlciQ
twS+ppS+MQKBgF8CnwVRPf2l3q1T6QwAAYoHj0rzQqTqNWXyZ2oHDKLgpEioZhNr
j3fd9yFm4MBLHn3nIRuHNE7dtVt/44k0PqHgY3AiVC/k02B0sn5rq15fUXu15kdb
U2gTJeoRdPFksXYMiJuEI4jZtMTYVLA+u1dpMCBn7kWqyCN0e08YYF9dAoGBAIjd
klcJAi8RD8xCTW/Ynl8VTKMBcyf4ELaGfg+to/beqy8m/H9uoefBZG+Tr7raQ0NI
8kbIbvBqJLYvWzVfbileVQISsurIXG0CuNRrX8b4hjK5Dt9NdLAgcEpmDEqYgmde
+ioQimh5zxpNlae7RCaKhwPRlcki9nercUI5HBThAoGBAMspXqbc+5DLe4uP7jqw
LZTFtWwgcCaQUgIeKdZEIdBuuunEjZpEUEOPE1p3+SfOGchpjMaK0lMkss4NIqCp
49dRk/CO9VsgRyhfjsfWEosQFvOPjQOcMOKN4BQZWXI6EJWFtyekRkVp3Yjcqi0V
yNnt0pBJ2T1Ks9cEVH1FXRt0
-----END PRIVATE KEY-----
";
    const P256_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgbaZZK37JN8rKOsq2
JZ9GG2hCuBWbIopUjN0cdzaFQtKhRANCAAQdlZKaOWT5cgpo3xRbk8s7dUBav+q/
eLIe6QxkDy8uH4h1YP1xytqbHufwAYtjsvfxZy/t6Gok+IgaHJVareex
-----END PRIVATE KEY-----
";

    fn keys_of(pem: &str, alg: crate::config::SigningAlg) -> (EncodingKey, JwtKeys) {
        let (enc, jwk) = crate::forward::public_jwk(pem, alg, Some("k1")).unwrap();
        let body = json!({"keys": [jwk]}).to_string();
        let keys = JwtKeys::parse(&AsResponse { status: Some(200), body: body.as_bytes() }).unwrap();
        assert_eq!(keys.len(), 1, "{:?}", keys.dropped());
        (enc, keys)
    }

    fn sign_with(enc: &EncodingKey, alg: Algorithm, claims: &Value) -> String {
        let mut h = Header::new(alg);
        h.kid = Some("k1".into());
        encode(&h, claims, enc).unwrap()
    }

    /// Refused as an RPT: forged or foreign (`Invalid`), or the AS's own but no RPT (`NotAnRpt`).
    fn invalid(check: JwtCheck) -> bool {
        matches!(check, JwtCheck::Invalid(_) | JwtCheck::NotAnRpt { .. })
    }

    /// Keycloak's permission ticket (`PermissionTicketToken`): top-level `permissions`, no `typ`,
    /// `aud` the issuer (or the resource server), signed by the AS.
    fn keycloak_ticket(aud: Value) -> Value {
        json!({"iss": ISSUER, "aud": aud, "sub": "service-account-pep-client", "azp": "pep-client",
               "jti": "t1", "iat": 1_900_000_000_i64, "nbf": 1_900_000_000_i64, "exp": 2_000_000_000_i64,
               "permissions": [{"rsid": "r1", "scopes": ["protected_get", "protected_delete"]}]})
    }

    #[test]
    #[cfg_attr(not(all(feature = "forward-rs256", feature = "verify-rsa")), ignore = "needs RSA")]
    fn a_keycloak_ticket_or_other_as_token_signed_with_a_jwks_key_is_not_an_rpt() {
        let (enc, keys) = keys_of(RSA_PEM, crate::config::SigningAlg::RS256);
        let rs = |claims: &Value| sign_with(&enc, Algorithm::RS256, claims);
        // The RPT itself, RS256 like Keycloak's: valid.
        assert!(matches!(
            keys.check(&rs(&keycloak_claims()), ISSUER, Some("pep-client"), KC),
            JwtCheck::Valid(_)
        ));
        // A ticket: with the audience check off, or an `aud` that names the client, still refused.
        for (aud, audience) in [
            (json!(ISSUER), None),
            (json!(ISSUER), Some("pep-client")),
            (json!("pep-client"), Some("pep-client")),
            (json!(["pep-client"]), None),
        ] {
            let check = keys.check(&rs(&keycloak_ticket(aud.clone())), ISSUER, audience, KC);
            assert!(invalid(check), "ticket with aud {aud} accepted");
        }
        // A ticket that also claims to be an access token: still no `authorization.permissions`.
        let mut t = keycloak_ticket(json!("pep-client"));
        t["typ"] = json!("Bearer");
        assert!(invalid(keys.check(&rs(&t), ISSUER, Some("pep-client"), KC)));
        // A plain access token (no `authorization`), an ID token, a refresh token with permissions.
        let mut c = keycloak_claims();
        c.as_object_mut().unwrap().remove("authorization");
        assert!(invalid(keys.check(&rs(&c), ISSUER, Some("pep-client"), KC)));
        for typ in [json!("ID"), json!("Refresh"), json!("bearer"), json!(["Bearer"]), Value::Null] {
            let mut c = keycloak_claims();
            c["typ"] = typ.clone();
            assert!(invalid(keys.check(&rs(&c), ISSUER, Some("pep-client"), KC)), "typ {typ}");
        }
        let mut c = keycloak_claims();
        c["authorization"] = json!({"permissions": {"rsid": "r1"}});
        assert!(invalid(keys.check(&rs(&c), ISSUER, Some("pep-client"), KC)));
        // uma2 (Gluu `rpt_as_jwt`): top-level `permissions` and `client_id`, nothing else.
        let gluu = json!({"iss": ISSUER, "client_id": "c", "aud": "c", "exp": 2_000_000_000_i64,
                          "permissions": [{"resource_id": "r1", "resource_scopes": ["s"]}]});
        assert!(matches!(keys.check(&rs(&gluu), ISSUER, None, AsProfile::Uma2), JwtCheck::Valid(_)));
        assert!(invalid(keys.check(&rs(&keycloak_ticket(json!(ISSUER))), ISSUER, None, AsProfile::Uma2)));
        assert!(invalid(keys.check(&rs(&keycloak_claims()), ISSUER, None, AsProfile::Uma2)));
        let mut c = gluu.clone();
        c["permissions"] = json!({"resource_id": "r1"});
        assert!(invalid(keys.check(&rs(&c), ISSUER, None, AsProfile::Uma2)));
        // A Keycloak-dialect filter never takes the Gluu shape either.
        assert!(invalid(keys.check(&rs(&gluu), ISSUER, None, KC)));
    }

    /// A build without `verify-rsa`: the AS's RSA keys are listed as left out (the host logs
    /// why), and an RS256 RPT goes to introspection rather than being refused.
    #[test]
    #[cfg_attr(feature = "verify-rsa", ignore = "for builds without verify-rsa")]
    fn without_rsa_verification_rsa_rpts_are_introspected() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        // RFC 7638 §3.1's example public key.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let body =
            json!({"keys": [{"kty": "RSA", "kid": "rs", "alg": "RS256", "n": n, "e": "AQAB"}]}).to_string();
        let keys = JwtKeys::parse(&AsResponse { status: Some(200), body: body.as_bytes() }).unwrap();
        assert!(keys.is_empty());
        assert_eq!(keys.dropped()[0].kid, "rs");
        assert!(keys.dropped()[0].reason.contains("verify-rsa"), "{:?}", keys.dropped());
        let header = b64.encode(br#"{"alg":"RS256","kid":"rs"}"#);
        let token =
            format!("{header}.{}.{}", b64.encode(keycloak_claims().to_string()), b64.encode([1u8; 256]));
        assert!(matches!(keys.check(&token, ISSUER, None, KC), JwtCheck::Uncheckable(_)));
    }

    #[test]
    #[cfg_attr(not(all(feature = "forward-rs256", feature = "verify-rsa")), ignore = "needs RSA")]
    fn malformed_jwks_keys_are_dropped_and_never_reach_the_library() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (_, good) =
            crate::forward::public_jwk(ED_PEM, crate::config::SigningAlg::EdDSA, Some("good")).unwrap();
        let (_, ec) =
            crate::forward::public_jwk(P256_PEM, crate::config::SigningAlg::ES256, Some("ec")).unwrap();
        let ec = serde_json::to_value(ec).unwrap();
        let (_, rsa) =
            crate::forward::public_jwk(RSA_PEM, crate::config::SigningAlg::RS256, Some("rs")).unwrap();
        let rsa = serde_json::to_value(rsa).unwrap();
        let short_rsa = "sEku5MTynImOh7WI1rXgQ5tSM4OK3APue9-BK2xqrxSV3HpRzIRmz67a_lBJWYmTbP1BSHd60-6memKWVmdZ-j6CMzJALG_wl7BPoH2-ypafVvUXr6BxkthlchZGuBADR3Cm1d7Z1Bdd2b9VSGDsPLvPuEQowvKmpqldT2Xz-S8";
        let body = json!({"keys": [
            good,
            {"kty": "OKP", "crv": "Ed25519", "kid": "k1", "x": b64.encode([7u8; 16])},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed-long", "x": b64.encode([7u8; 33])},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed-b64", "x": "not base64!"},
            {"kty": "OKP", "crv": "X25519", "kid": "x25519", "x": b64.encode([7u8; 32])},
            {"kty": "EC", "crv": "P-256", "kid": "ec-short", "x": b64.encode([1u8; 31]), "y": ec["y"]},
            {"kty": "EC", "crv": "P-256", "kid": "ec-off-curve", "x": ec["x"], "y": b64.encode([1u8; 32])},
            {"kty": "EC", "crv": "P-384", "kid": "ec384-short", "x": ec["x"], "y": ec["y"]},
            {"kty": "RSA", "kid": "rsa-1024", "n": short_rsa, "e": "AQAB"},
            {"kty": "RSA", "kid": "rsa-e1", "n": rsa["n"], "e": "AQ"},
            {"kty": "RSA", "kid": "rsa-e-even", "n": rsa["n"], "e": "AQAA"},
            {"kty": "RSA", "kid": "rsa-e-huge", "n": rsa["n"], "e": b64.encode([1u8; 9])},
            {"kty": "RSA", "kid": "rsa-8192", "n": b64.encode([0xffu8; 1024]), "e": "AQAB"},
            {"kty": "RSA", "kid": "rsa-empty", "n": "", "e": ""},
            {"kty": "RSA", "kid": "rsa-no-n", "e": "AQAB"},
            {"kty": "RSA", "kid": "k\u{1b}[31m", "n": "AA", "e": "AQAB"}
        ]})
        .to_string();
        let keys = JwtKeys::parse(&AsResponse { status: Some(200), body: body.as_bytes() }).unwrap();
        // X25519 and an RSA key without `n` are of no kind the library reads as a signature key:
        // skipped like symmetric keys, not in the set either way.
        assert_eq!(keys.len(), 1, "{keys:?}");
        let dropped: Vec<&str> = keys.dropped().iter().map(|d| d.kid.as_str()).collect();
        assert_eq!(
            dropped,
            [
                "k1",
                "ed-long",
                "ed-b64",
                "ec-short",
                "ec-off-curve",
                "ec384-short",
                "rsa-1024",
                "rsa-e1",
                "rsa-e-even",
                "rsa-e-huge",
                "rsa-8192",
                "rsa-empty",
                "k?[31m"
            ]
        );
        assert!(keys.dropped()[0].reason.contains("32 bytes"), "{:?}", keys.dropped()[0]);
        assert!(keys.dropped()[6].reason.contains("1024 bits"), "{:?}", keys.dropped()[6]);
        // The token of the fuzz finding, and forms of it for each dropped key: never a panic, and
        // a key that was dropped is one the JWKS does not have.
        let token = "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.e30.AAAA";
        assert!(matches!(keys.check(token, ISSUER, None, KC), JwtCheck::UnknownKey(k) if k == "k1"));
        for (kid, alg) in
            [("ed-long", "EdDSA"), ("ec-short", "ES256"), ("ec-off-curve", "ES256"), ("rsa-1024", "RS256")]
        {
            let header = b64.encode(json!({"alg": alg, "kid": kid}).to_string());
            let token = format!("{header}.e30.AAAA");
            assert!(matches!(keys.check(&token, ISSUER, None, KC), JwtCheck::UnknownKey(_)), "{kid}");
        }
        // The good keys of each kind are kept.
        let body = json!({"keys": [ec, rsa]}).to_string();
        let keys = JwtKeys::parse(&AsResponse { status: Some(200), body: body.as_bytes() }).unwrap();
        assert_eq!((keys.len(), keys.dropped().len()), (2, 0));
    }

    #[test]
    fn issuer_must_be_exactly_the_issuer_string() {
        let (enc, keys) = keys();
        let with_iss = |iss: Option<Value>| {
            let mut c = keycloak_claims();
            match iss {
                Some(v) => c["iss"] = v,
                None => {
                    c.as_object_mut().unwrap().remove("iss");
                }
            }
            keys.check(&sign(&enc, "k1", c), ISSUER, None, KC)
        };
        assert!(matches!(with_iss(Some(json!(ISSUER))), JwtCheck::Valid(_)));
        for iss in [
            None,
            Some(Value::Null),
            Some(json!([ISSUER])),
            Some(json!([ISSUER, "http://evil"])),
            Some(json!(42)),
            Some(json!({"iss": ISSUER})),
            Some(json!(format!("{ISSUER}/"))),
            Some(json!("HTTP://AS/realms/eoepca")),
            Some(json!("")),
        ] {
            let shown = format!("{iss:?}");
            assert!(invalid(with_iss(iss)), "iss {shown} accepted");
        }
    }

    #[test]
    fn audience_must_be_the_string_or_an_array_holding_it() {
        let (enc, keys) = keys();
        let with_aud = |aud: Option<Value>, audience: Option<&str>| {
            let mut c = keycloak_claims();
            match aud {
                Some(v) => c["aud"] = v,
                None => {
                    c.as_object_mut().unwrap().remove("aud");
                }
            }
            keys.check(&sign(&enc, "k1", c), ISSUER, audience, KC)
        };
        let aud = Some("pep-client");
        for ok in [json!("pep-client"), json!(["pep-client"]), json!(["account", "pep-client"])] {
            assert!(matches!(with_aud(Some(ok.clone()), aud), JwtCheck::Valid(_)), "aud {ok}");
        }
        for bad in [
            None,
            Some(Value::Null),
            Some(json!(42)),
            Some(json!({"pep-client": true})),
            Some(json!([])),
            Some(json!([["pep-client"]])),
            Some(json!(["account"])),
            Some(json!("other")),
            Some(json!("pep-client ")),
        ] {
            let shown = format!("{bad:?}");
            assert!(invalid(with_aud(bad, aud)), "aud {shown} accepted");
        }
        // No audience required (`rpt_audience: null`): `aud` is not looked at.
        assert!(matches!(with_aud(None, None), JwtCheck::Valid(_)));
        assert!(matches!(with_aud(Some(json!(42)), None), JwtCheck::Valid(_)));
    }

    #[test]
    fn the_half_orders_are_half_the_curve_orders() {
        let n256 = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";
        let n384 = "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973";
        for (n, half) in [(n256, &P256_HALF_ORDER[..]), (n384, &P384_HALF_ORDER[..])] {
            let n = rsa::BigUint::parse_bytes(n.as_bytes(), 16).unwrap();
            assert_eq!(n >> 1usize, rsa::BigUint::from_bytes_be(half));
        }
    }

    #[test]
    fn a_high_s_es256_signature_is_refused() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (enc, keys) = keys_of(P256_PEM, crate::config::SigningAlg::ES256);
        let n = rsa::BigUint::parse_bytes(
            b"ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551",
            16,
        )
        .unwrap();
        let key = DecodingKey::from_jwk(
            &crate::forward::public_jwk(P256_PEM, crate::config::SigningAlg::ES256, Some("k1")).unwrap().1,
        )
        .unwrap();
        // Several tokens, so that both a signer's low-S and high-S outputs are seen.
        for i in 0..8 {
            let mut claims = keycloak_claims();
            claims["jti"] = json!(i);
            let token = sign_with(&enc, Algorithm::ES256, &claims);
            let (message, signature) = token.rsplit_once('.').unwrap();
            let sig = b64.decode(signature).unwrap();
            let s = rsa::BigUint::from_bytes_be(&sig[32..]);
            let twin = (&n - &s).to_bytes_be();
            let mut other = sig[..32].to_vec();
            other.extend(std::iter::repeat_n(0u8, 32 - twin.len()));
            other.extend(&twin);
            let other = format!("{message}.{}", b64.encode(&other));
            // Both verify: the malleability is real, with this library.
            for t in [&token, &other] {
                let (m, sg) = t.rsplit_once('.').unwrap();
                assert!(jsonwebtoken::crypto::verify(sg, m.as_bytes(), &key, Algorithm::ES256).unwrap());
            }
            let (low, high) = if s <= (&n >> 1usize) { (&token, &other) } else { (&other, &token) };
            assert!(matches!(keys.check(low, ISSUER, Some("pep-client"), KC), JwtCheck::Valid(_)));
            assert!(
                matches!(keys.check(high, ISSUER, Some("pep-client"), KC), JwtCheck::Invalid(ref r) if r.contains("high S"))
            );
        }
        // A signature of the wrong length never gets that far.
        let token = sign_with(&enc, Algorithm::ES256, &keycloak_claims());
        let short = format!("{}.{}", token.rsplit_once('.').unwrap().0, b64.encode([1u8; 63]));
        assert!(invalid(keys.check(&short, ISSUER, None, KC)));
    }
}

#[cfg(test)]
mod signature_tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    // An Ed25519 key made for these tests only.
    const ED_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mteEJ/5GC\n-----END PRIVATE KEY-----\n";

    fn keys() -> (EncodingKey, JwtKeys) {
        let (enc, jwk) =
            crate::forward::public_jwk(ED_PEM, crate::config::SigningAlg::EdDSA, Some("k1")).unwrap();
        let body = json!({"keys": [jwk]}).to_string();
        (enc, JwtKeys::parse(&AsResponse { status: Some(200), body: body.as_bytes() }).unwrap())
    }

    fn sign(enc: &EncodingKey, kid: Option<&str>, alg: Algorithm, claims: &Value) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_string);
        encode(&h, claims, enc).unwrap()
    }

    #[test]
    fn any_signed_jwt_is_verified_and_its_claims_are_judged_apart() {
        let (enc, keys) = keys();
        // A user's access token, no RPT: the signature checks out; `check` (RPTs only) refuses it.
        let claims = json!({"iss": "https://as", "sub": "alice", "aud": "api", "exp": 2_000_000_000_i64});
        let token = sign(&enc, Some("k1"), Algorithm::EdDSA, &claims);
        let Signed::Verified { claims: got, alg } = keys.verify_signature(&token) else { panic!() };
        assert_eq!((got, alg), (claims.clone(), Algorithm::EdDSA));
        assert!(matches!(keys.check(&token, "https://as", None, AsProfile::Uma2), JwtCheck::NotAnRpt { .. }));
        assert!(check_issuer_and_audience(&claims, "https://as", Some("api")).is_ok());
        assert!(check_issuer_and_audience(&claims, "https://as", None).is_ok());
        assert!(check_issuer_and_audience(&claims, "https://as", Some("other")).is_err());
        assert!(check_issuer_and_audience(&claims, "https://as/", None).is_err());
        assert!(
            check_issuer_and_audience(&json!({"iss": "https://as"}), "https://as", None).is_err(),
            "no exp"
        );
    }

    #[test]
    fn what_the_signature_cannot_vouch_for_is_said() {
        let (enc, keys) = keys();
        let claims = json!({"iss": "https://as", "exp": 1});
        assert!(matches!(keys.verify_signature("opaque"), Signed::NotAJwt));
        assert!(matches!(
            keys.verify_signature(&sign(&enc, Some("k2"), Algorithm::EdDSA, &claims)),
            Signed::UnknownKey(k) if k == "k2"
        ));
        assert!(matches!(
            keys.verify_signature(&sign(&enc, None, Algorithm::EdDSA, &claims)),
            Signed::Uncheckable(_)
        ));
        let hmac = sign(&EncodingKey::from_secret(b"s"), Some("k1"), Algorithm::HS256, &claims);
        assert!(matches!(keys.verify_signature(&hmac), Signed::Uncheckable(_)));
        // The payload of another token under this one's signature.
        let good = sign(&enc, Some("k1"), Algorithm::EdDSA, &claims);
        let other = sign(&enc, Some("k1"), Algorithm::EdDSA, &json!({"iss": "https://as", "exp": 2}));
        let parts: Vec<&str> = good.split('.').collect();
        let spliced = format!("{}.{}.{}", parts[0], other.split('.').nth(1).unwrap(), parts[2]);
        assert!(matches!(keys.verify_signature(&spliced), Signed::Invalid(_)));
        assert!(matches!(keys.verify_signature("e30.e30.x"), Signed::Invalid(_)), "no alg");
    }
}
