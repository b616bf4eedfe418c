//! `ForwardSigner`: the JWT minted for the upstream (`forward`), which says who the requesting
//! party is and what this request was allowed by. Claims are built from the introspection
//! result (either dialect, or a JWT RPT's claims); the key's public half is published as a
//! JWK whose `kid` defaults to its RFC 7638 thumbprint.
//!
//! Signing is the expensive part (RS256 ≈ 12 ms inside V8), so callers cache the minted token
//! per (RPT, resource) until shortly before its `exp` (see `ForwardedToken`).

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::config::{ConfigError, ForwardConfig, SigningAlg};
use crate::introspection::{pushed_claim, IntrospectionResult};

/// Claims copied from introspection when `forward.claims` is not set: who the user is in
/// Keycloak and OIDC terms, Gluu's claims gathered for the PCT, and EOEPCA's operator flag.
pub const DEFAULT_FORWARDED_CLAIMS: &[&str] =
    &["azp", "preferred_username", "email", "name", "isOperator", "pct_claims", "acr"];

/// Claims the PEP sets itself; a configured claim of the same name is ignored.
const RESERVED_CLAIMS: &[&str] =
    &["iss", "sub", "aud", "iat", "exp", "nbf", "jti", "client_id", "permissions"];

/// Longest life of a minted token when the RPT states no `exp`.
pub const MAX_LIFETIME_WITHOUT_EXP_S: i64 = 300;

#[derive(Debug, Error)]
pub enum SignError {
    #[error("signing failed: {0}")]
    Signing(String),
}

/// The signing key, its public JWK and the claims policy.
pub struct ForwardSigner {
    pub header_name: String,
    pub strip_authorization: bool,
    pub jwks_path: Option<String>,
    alg: Algorithm,
    key: EncodingKey,
    /// RS256 only: the key parsed once, its CRT values computed once. Through jsonwebtoken
    /// every signature would re-parse the DER and recompute them.
    #[cfg(feature = "forward-rs256")]
    rsa: Option<rsa::pkcs1v15::SigningKey<Sha256>>,
    jwt_header: Header,
    iss: String,
    aud: Option<String>,
    claims: Vec<String>,
    jwk: Jwk,
}

impl std::fmt::Debug for ForwardSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("ForwardSigner").field("alg", &self.alg).field("kid", &self.kid()).finish()
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// RFC 7638 thumbprint of a public JWK: SHA-256 over its required members in lexical order.
pub fn jwk_thumbprint(jwk: &Jwk) -> Option<String> {
    let canonical = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => json!({"e": p.e, "kty": "RSA", "n": p.n}),
        AlgorithmParameters::EllipticCurve(p) => {
            let crv = serde_json::to_value(&p.curve).ok()?;
            json!({"crv": crv, "kty": "EC", "x": p.x, "y": p.y})
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            let crv = serde_json::to_value(&p.curve).ok()?;
            json!({"crv": crv, "kty": "OKP", "x": p.x})
        }
        _ => return None,
    };
    // serde_json's Map is ordered by key, which is exactly RFC 7638's canonical member order.
    Some(b64url(&Sha256::digest(canonical.to_string().as_bytes())))
}

/// The DER inside a PEM block and its label. Lenient as jsonwebtoken's PEM reader was: any
/// line length, CR LF, blanks around; a key is never quoted back in the error.
fn pem_der(pem: &str) -> Result<(&str, Vec<u8>), &'static str> {
    let rest = pem.trim().strip_prefix("-----BEGIN ").ok_or("no PEM BEGIN line")?;
    let (label, rest) = rest.split_once("-----").ok_or("no PEM BEGIN line")?;
    let end = format!("-----END {label}-----");
    let body = rest.strip_suffix(end.as_str()).ok_or("no matching PEM END line")?;
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| "PEM body is not base64")?;
    Ok((label, der))
}

/// jsonwebtoken's `EncodingKey` for `alg` from a PEM private key: PKCS#8 for every algorithm,
/// PKCS#1 (`RSA PRIVATE KEY`) for RS256 too. Read here rather than by jsonwebtoken's `use_pem`,
/// whose ASN.1 parser brings a date-time library and a second bignum implementation into the
/// module.
fn encoding_key(key_pem: &str, alg: SigningAlg) -> Result<EncodingKey, String> {
    const RSA: pkcs8::ObjectIdentifier = pkcs8::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
    const EC: pkcs8::ObjectIdentifier = pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    const ED25519: pkcs8::ObjectIdentifier = pkcs8::ObjectIdentifier::new_unwrap("1.3.101.112");
    let not_it = |why: &str| format!("not a {alg:?} private key in PEM: {why}");
    let (label, der) = pem_der(key_pem).map_err(not_it)?;
    match (label, alg) {
        ("RSA PRIVATE KEY", SigningAlg::RS256) => return Ok(EncodingKey::from_rsa_der(&der)),
        ("PRIVATE KEY", _) => {}
        _ => return Err(not_it("not a PKCS#8 private key block")),
    }
    let info = pkcs8::PrivateKeyInfo::try_from(der.as_slice()).map_err(|_| not_it("not PKCS#8"))?;
    match (info.algorithm.oid, alg) {
        (RSA, SigningAlg::RS256) => Ok(EncodingKey::from_rsa_der(info.private_key)),
        (EC, SigningAlg::ES256) => Ok(EncodingKey::from_ec_der(&der)),
        (ED25519, SigningAlg::EdDSA) => Ok(EncodingKey::from_ed_der(&der)),
        (RSA, _) => Err(not_it("it is an RSA key")),
        (EC, _) => Err(not_it("it is an EC key")),
        (ED25519, _) => Err(not_it("it is an Ed25519 key")),
        _ => Err(not_it("a key type the filter does not sign with")),
    }
}

/// The public JWK of a PKCS#8 PEM private key for `alg`, with `kid` (thumbprint unless given).
pub fn public_jwk(key_pem: &str, alg: SigningAlg, kid: Option<&str>) -> Result<(EncodingKey, Jwk), String> {
    crate::crypto::install();
    if let Some(feature) = alg.missing_feature() {
        return Err(format!("{alg:?} is not in this build of the filter (cargo feature `{feature}`)"));
    }
    let (jwt_alg, key_alg) = match alg {
        SigningAlg::RS256 => (Algorithm::RS256, KeyAlgorithm::RS256),
        SigningAlg::ES256 => (Algorithm::ES256, KeyAlgorithm::ES256),
        SigningAlg::EdDSA => (Algorithm::EdDSA, KeyAlgorithm::EdDSA),
    };
    let key = encoding_key(key_pem, alg)?;
    let mut jwk = Jwk::from_encoding_key(&key, jwt_alg).map_err(|e| format!("does not fit {alg:?}: {e}"))?;
    let kid = match kid {
        Some(k) => k.to_string(),
        None => jwk_thumbprint(&jwk).ok_or_else(|| "has no thumbprint".to_string())?,
    };
    jwk.common.key_id = Some(kid);
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(key_alg);
    Ok((key, jwk))
}

/// The RSA private key inside an RS256 `EncodingKey` (PKCS#1 DER). Parsing computes the CRT
/// values (dp, dq, qinv) once, for every signature to use.
#[cfg(feature = "forward-rs256")]
fn parse_rsa(key: &EncodingKey) -> Result<rsa::pkcs1v15::SigningKey<Sha256>, String> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    let key = rsa::RsaPrivateKey::from_pkcs1_der(key.as_bytes())
        .map_err(|e| format!("not an RSA private key in PEM: {e}"))?;
    Ok(rsa::pkcs1v15::SigningKey::<Sha256>::new(key))
}

impl ForwardSigner {
    pub fn new(config: &ForwardConfig) -> Result<Self, ConfigError> {
        config.alg.check_built_in()?;
        let (key, jwk) = public_jwk(&config.key_pem, config.alg, config.kid.as_deref())
            .map_err(|p| ConfigError::new("forward.key_pem", p))?;
        let alg = match config.alg {
            SigningAlg::RS256 => Algorithm::RS256,
            SigningAlg::ES256 => Algorithm::ES256,
            SigningAlg::EdDSA => Algorithm::EdDSA,
        };
        #[cfg(feature = "forward-rs256")]
        let rsa = match config.alg {
            SigningAlg::RS256 => Some(parse_rsa(&key).map_err(|p| ConfigError::new("forward.key_pem", p))?),
            _ => None,
        };
        let mut jwt_header = Header::new(alg);
        jwt_header.kid = jwk.common.key_id.clone();
        let claims = match &config.claims {
            Some(c) => c.clone(),
            None => DEFAULT_FORWARDED_CLAIMS.iter().map(|s| s.to_string()).collect(),
        };
        let signer = Self {
            header_name: config.header.to_ascii_lowercase(),
            strip_authorization: config.strip_authorization,
            jwks_path: config.jwks_path.as_ref().map(|p| p.trim_end_matches('/').to_string()),
            alg,
            key,
            #[cfg(feature = "forward-rs256")]
            rsa,
            jwt_header,
            iss: config.iss.clone(),
            aud: config.aud.clone(),
            claims,
            jwk,
        };
        // A key that parses but cannot sign (an alg that does not fit it) fails now, not per request.
        signer
            .sign(&Map::new())
            .map_err(|e| ConfigError::new("forward.alg", format!("{e} (does the key fit the alg?)")))?;
        Ok(signer)
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    pub fn kid(&self) -> Option<&str> {
        self.jwk.common.key_id.as_deref()
    }

    /// The JWKS document an upstream verifies the minted tokens with.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk] })
    }

    /// The claims of the token for a request allowed on `resource_id` by `result`.
    pub fn claims(&self, result: &IntrospectionResult, resource_id: &str, now: i64) -> Map<String, Value> {
        let mut claims = Map::new();
        claims.insert("iss".into(), Value::String(self.iss.clone()));
        let sub = result.sub.clone().or_else(|| result.client_id.clone()).unwrap_or_default();
        claims.insert("sub".into(), Value::String(sub));
        if let Some(aud) = &self.aud {
            claims.insert("aud".into(), Value::String(aud.clone()));
        }
        claims.insert("iat".into(), Value::from(now));
        // Never beyond the RPT, nor beyond the permissions that allow this resource.
        let permission_exp =
            result.permissions.iter().filter(|p| p.resource_id == resource_id).filter_map(|p| p.exp).max();
        let exp = [result.exp, permission_exp]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + MAX_LIFETIME_WITHOUT_EXP_S);
        claims.insert("exp".into(), Value::from(exp));
        if let Some(client_id) = &result.client_id {
            claims.insert("client_id".into(), Value::String(client_id.clone()));
        }
        let permissions: Vec<Value> = result
            .permissions
            .iter()
            .filter(|p| p.resource_id == resource_id)
            .map(|p| json!({"resource_id": p.resource_id, "resource_scopes": p.scopes}))
            .collect();
        claims.insert("permissions".into(), Value::Array(permissions));
        for name in &self.claims {
            if RESERVED_CLAIMS.contains(&name.as_str()) {
                continue;
            }
            // Gluu/Janssen keep the party's claims only in `pct_claims` (their RPTs have no
            // user): the upstream gets the same top-level claim whatever the AS.
            if let Some(v) = result.claims.get(name).or_else(|| pushed_claim(&result.claims, name)) {
                claims.insert(name.clone(), v.clone());
            }
        }
        claims
    }

    pub fn sign(&self, claims: &Map<String, Value>) -> Result<String, SignError> {
        #[cfg(feature = "forward-rs256")]
        if let Some(rsa_key) = &self.rsa {
            return self.sign_rsa(rsa_key, claims);
        }
        jsonwebtoken::encode(&self.jwt_header, claims, &self.key)
            .map_err(|e| SignError::Signing(e.to_string()))
    }

    #[cfg(feature = "forward-rs256")]
    fn sign_rsa(
        &self,
        rsa_key: &rsa::pkcs1v15::SigningKey<Sha256>,
        claims: &Map<String, Value>,
    ) -> Result<String, SignError> {
        use signature::{RandomizedSigner, SignatureEncoding};
        let header = serde_json::to_vec(&self.jwt_header).map_err(|e| SignError::Signing(e.to_string()))?;
        let payload = serde_json::to_vec(claims).map_err(|e| SignError::Signing(e.to_string()))?;
        let signing_input = format!("{}.{}", b64url(&header), b64url(&payload));
        // Blinded (randomised) PKCS#1 v1.5, as jsonwebtoken does: blinding is the mitigation
        // the `rsa` crate offers against timing attacks (RUSTSEC-2023-0071 still applies).
        let signature = rsa_key.sign_with_rng(&mut rand::thread_rng(), signing_input.as_bytes());
        Ok(format!("{signing_input}.{}", b64url(&signature.to_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, DecodingKey, Validation};

    // Test keys, generated for these tests only.
    pub const ED25519_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mteEJ/5GC\n-----END PRIVATE KEY-----\n";

    fn config(alg: SigningAlg, pem: &str) -> ForwardConfig {
        ForwardConfig {
            header: "X-User-Id".into(),
            alg,
            key_pem: pem.into(),
            kid: None,
            iss: "uma-pep".into(),
            aud: Some("ades".into()),
            claims: None,
            strip_authorization: false,
            jwks_path: None,
        }
    }

    fn result(json: &str) -> IntrospectionResult {
        IntrospectionResult::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn eddsa_mints_verifiable_tokens_with_thumbprint_kid() {
        let signer = ForwardSigner::new(&config(SigningAlg::EdDSA, ED25519_PEM)).unwrap();
        assert_eq!(signer.header_name, "x-user-id");
        let kid = signer.kid().unwrap().to_string();
        assert_eq!(kid.len(), 43, "base64url of a SHA-256");
        let r = result(
            r#"{"active":true,"sub":"alice","client_id":"app","exp":2000000000,"preferred_username":"alice",
                "pct_claims":{"role":["x"]},"secret_thing":"no",
                "permissions":[{"resource_id":"r1","resource_scopes":["protected_get"]},{"resource_id":"r2","resource_scopes":["s"]}]}"#,
        );
        let claims = signer.claims(&r, "r1", 1_900_000_000);
        let token = signer.sign(&claims).unwrap();
        let jwks = signer.jwks();
        let jwk: Jwk = serde_json::from_value(jwks["keys"][0].clone()).unwrap();
        let key = DecodingKey::from_jwk(&jwk).unwrap();
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_audience(&["ades"]);
        v.validate_exp = false;
        let decoded = decode::<Value>(&token, &key, &v).unwrap();
        assert_eq!(decoded.header.kid.as_deref(), Some(kid.as_str()));
        let c = decoded.claims;
        assert_eq!(c["sub"], "alice");
        assert_eq!(c["iss"], "uma-pep");
        assert_eq!(c["client_id"], "app");
        assert_eq!(c["exp"], 2_000_000_000);
        assert_eq!(c["iat"], 1_900_000_000);
        assert_eq!(c["preferred_username"], "alice");
        assert_eq!(c["pct_claims"]["role"][0], "x");
        assert!(c.get("secret_thing").is_none());
        assert_eq!(c["permissions"], json!([{"resource_id":"r1","resource_scopes":["protected_get"]}]));
    }

    #[test]
    fn exp_is_bounded_by_the_permission_too() {
        let signer = ForwardSigner::new(&config(SigningAlg::EdDSA, ED25519_PEM)).unwrap();
        let r = result(
            r#"{"active":true,"sub":"a","exp":5000,"permissions":[{"resource_id":"r","resource_scopes":["s"],"exp":3000},
                {"resource_id":"other","resource_scopes":["s"],"exp":2000}]}"#,
        );
        assert_eq!(signer.claims(&r, "r", 1000)["exp"], 3000);
    }

    #[test]
    fn gluu_party_claims_come_from_pct_claims() {
        let signer = ForwardSigner::new(&config(SigningAlg::EdDSA, ED25519_PEM)).unwrap();
        let claims = signer.claims(
            &result(
                r#"{"active":true,"sub":null,"client_id":"app","exp":5000,
                "pct_claims":{"sub":["alice-0001"],"preferred_username":["alice"],"email":"a@x"}}"#,
            ),
            "r",
            1000,
        );
        assert_eq!(claims["sub"], "alice-0001");
        assert_eq!(claims["preferred_username"], "alice");
        assert_eq!(claims["email"], "a@x");
        assert_eq!(claims["client_id"], "app");
    }

    #[test]
    fn client_only_rpt_uses_client_id_as_sub_and_exp_is_bounded() {
        let signer = ForwardSigner::new(&config(SigningAlg::EdDSA, ED25519_PEM)).unwrap();
        let claims = signer.claims(&result(r#"{"active":true,"client_id":"robot"}"#), "r", 1000);
        assert_eq!(claims["sub"], "robot");
        assert_eq!(claims["exp"], 1000 + MAX_LIFETIME_WITHOUT_EXP_S);
    }

    #[test]
    fn keycloak_jwt_rpt_claims_are_mapped() {
        let signer = ForwardSigner::new(&config(SigningAlg::EdDSA, ED25519_PEM)).unwrap();
        let r = result(
            r#"{"sub":"bob","azp":"demo-app","exp":1500,"preferred_username":"bob","typ":"Bearer",
                "authorization":{"permissions":[{"rsid":"r9","rsname":"R","scopes":["protected_get"]}]}}"#,
        );
        let claims = signer.claims(&r, "r9", 1000);
        assert_eq!(claims["sub"], "bob");
        assert_eq!(claims["client_id"], "demo-app");
        assert_eq!(claims["azp"], "demo-app");
        assert_eq!(claims["exp"], 1500);
        assert_eq!(claims["permissions"][0]["resource_id"], "r9");
        assert!(claims.get("typ").is_none());
    }

    #[test]
    fn configured_claims_cannot_override_reserved_ones() {
        let mut c = config(SigningAlg::EdDSA, ED25519_PEM);
        c.claims = Some(vec!["sub".into(), "exp".into(), "email".into()]);
        let signer = ForwardSigner::new(&c).unwrap();
        let claims = signer.claims(&result(r#"{"active":true,"sub":"a","exp":50,"email":"a@x"}"#), "r", 10);
        assert_eq!(claims["sub"], "a");
        assert_eq!(claims["exp"], 50);
        assert_eq!(claims["email"], "a@x");
    }

    #[test]
    fn bad_keys_and_mismatched_algs_are_config_errors() {
        let err = ForwardSigner::new(&config(SigningAlg::EdDSA, "not a pem")).unwrap_err();
        assert_eq!(err.key, "forward.key_pem");
        let err = ForwardSigner::new(&config(SigningAlg::RS256, ED25519_PEM)).unwrap_err();
        assert!(err.key.starts_with("forward."), "{err}");
        let err = ForwardSigner::new(&config(SigningAlg::ES256, ED25519_PEM)).unwrap_err();
        assert!(err.key.starts_with("forward."), "{err}");
    }

    #[test]
    fn configured_kid_is_kept() {
        let mut c = config(SigningAlg::EdDSA, ED25519_PEM);
        c.kid = Some("pep-2026".into());
        assert_eq!(ForwardSigner::new(&c).unwrap().kid(), Some("pep-2026"));
    }

    const RSA_PEM: &str = include_str!("../../control-plane/tests/keys/rsa.pem");
    const P256_PEM: &str = include_str!("../../control-plane/tests/keys/p256.pem");

    /// The same key as PKCS#1 (`RSA PRIVATE KEY`), CRLF line ends, 76 columns.
    fn as_pkcs1_crlf(pkcs8_pem: &str) -> String {
        let (_, der) = pem_der(pkcs8_pem).unwrap();
        let info = pkcs8::PrivateKeyInfo::try_from(der.as_slice()).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(info.private_key);
        let lines: Vec<&str> = b64.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!(
            "-----BEGIN RSA PRIVATE KEY-----\r\n{}\r\n-----END RSA PRIVATE KEY-----\r\n",
            lines.join("\r\n")
        )
    }

    #[test]
    #[cfg_attr(not(feature = "forward-rs256"), ignore = "needs forward-rs256")]
    fn rs256_mints_tokens_its_jwks_verifies_from_pkcs8_or_pkcs1() {
        let signer = ForwardSigner::new(&config(SigningAlg::RS256, RSA_PEM)).unwrap();
        let pkcs1 = ForwardSigner::new(&config(SigningAlg::RS256, &as_pkcs1_crlf(RSA_PEM))).unwrap();
        assert_eq!(signer.jwks(), pkcs1.jwks(), "one key, whichever the PEM form");
        let token =
            signer.sign(&signer.claims(&result(r#"{"active":true,"sub":"alice"}"#), "r", 1000)).unwrap();
        let jwk: Jwk = serde_json::from_value(signer.jwks()["keys"][0].clone()).unwrap();
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&["ades"]);
        v.validate_exp = false;
        let decoded = decode::<Value>(&token, &DecodingKey::from_jwk(&jwk).unwrap(), &v).unwrap();
        assert_eq!(decoded.claims["sub"], "alice");
        assert_eq!(decoded.header.kid.as_deref(), signer.kid());
    }

    #[test]
    fn a_pem_of_another_key_type_is_refused_without_quoting_it() {
        for (pem, alg, kind) in [
            (ED25519_PEM, SigningAlg::ES256, "Ed25519"),
            (P256_PEM, SigningAlg::EdDSA, "EC"),
            (RSA_PEM, SigningAlg::ES256, "RSA"),
        ] {
            let err = public_jwk(pem, alg, None).unwrap_err();
            assert!(err.contains(kind), "{err}");
            assert!(!err.contains("PRIVATE KEY") && !err.contains("MC4C"), "{err}");
        }
        let wrapped = ED25519_PEM.replace('\n', "\r\n  ");
        assert!(public_jwk(&wrapped, SigningAlg::EdDSA, None).is_ok());
        for broken in [
            "",
            "MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mteEJ/5GC",
            "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY-----\nMC4C\n-----END PUBLIC KEY-----",
            "-----BEGIN PUBLIC KEY-----\nMC4C\n-----END PUBLIC KEY-----",
        ] {
            assert!(public_jwk(broken, SigningAlg::EdDSA, None).is_err(), "{broken}");
        }
    }

    #[test]
    fn es256_identities_are_signed_low_s() {
        // A verifier that refuses high-S (this filter does, for RPTs) must take every identity.
        use base64::Engine;
        let signer = ForwardSigner::new(&config(SigningAlg::ES256, P256_PEM)).unwrap();
        let r = result(r#"{"active":true,"sub":"alice","exp":2000000000,"permissions":[]}"#);
        for i in 0..64 {
            let claims = signer.claims(&r, &format!("r{i}"), 1_900_000_000 + i);
            let token = signer.sign(&claims).unwrap();
            let sig = token.rsplit('.').next().unwrap();
            let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig).unwrap();
            let sig = p256::ecdsa::Signature::from_slice(&sig).unwrap();
            assert!(sig.normalize_s().is_none(), "signature {i} is high-S");
        }
    }

    /// Time per forwarded-JWT signature, natively; inside V8 run the wasm32-wasip1 build of
    /// this test (docs/benchmarks.md). `cargo test -p uma-pep-core --release -- --ignored
    /// bench_forward_signing --nocapture`
    #[test]
    #[ignore]
    fn bench_forward_signing() {
        let mut algs = vec![(SigningAlg::EdDSA, ED25519_PEM), (SigningAlg::ES256, P256_PEM)];
        if cfg!(feature = "forward-rs256") {
            algs.push((SigningAlg::RS256, RSA_PEM));
        }
        let r = result(
            r#"{"active":true,"sub":"alice","client_id":"app","exp":2000000000,
            "permissions":[{"resource_id":"r1","resource_scopes":["protected_get"]}]}"#,
        );
        for (alg, pem) in algs {
            let signer = ForwardSigner::new(&config(alg, pem)).unwrap();
            let claims = signer.claims(&r, "r1", 1_900_000_000);
            let rounds = if alg == SigningAlg::RS256 { 50 } else { 200 };
            let start = std::time::Instant::now();
            for _ in 0..rounds {
                std::hint::black_box(signer.sign(&claims).unwrap());
            }
            let us = start.elapsed().as_micros() / rounds;
            println!("forward signing {alg:?}: {us} us per signature ({rounds} rounds)");
        }
    }

    /// RFC 8037 §A.3's Ed25519 thumbprint.
    #[test]
    fn thumbprint_matches_rfc8037_example() {
        let jwk: Jwk = serde_json::from_value(json!({
            "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        }))
        .unwrap();
        assert_eq!(jwk_thumbprint(&jwk).unwrap(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    /// RFC 7638 §3.1's example key and thumbprint.
    #[test]
    fn thumbprint_matches_rfc7638_example() {
        let jwk: Jwk = serde_json::from_value(json!({
            "kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        }))
        .unwrap();
        assert_eq!(jwk_thumbprint(&jwk).unwrap(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }
}
