//! `pepctl jwks`: the public JWKS (RFC 7517) of the key the filter signs forwarded JWTs with,
//! so upstream services can verify them. The key and its `kid` (RFC 7638 thumbprint) come from
//! `uma_pep_core::forward::public_jwk`, the very function the filter uses, so the two agree.

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use serde::Serialize;
use thiserror::Error;
use uma_pep_core::config::SigningAlg;
use uma_pep_core::forward::public_jwk;

#[derive(Debug, Error)]
pub enum JwksError {
    #[error("cannot read key {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("not a PKCS#8 PEM RSA, P-256 or Ed25519 private key")]
    UnsupportedKey,
}

#[derive(Debug, Clone, Serialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// The signing algorithm of a PKCS#8 PEM private key and its public JWK: RSA → RS256,
/// P-256 → ES256, Ed25519 → EdDSA.
pub fn key_from_pem(pem: &[u8]) -> Result<(SigningAlg, Jwk), JwksError> {
    let pem = std::str::from_utf8(pem).map_err(|_| JwksError::UnsupportedKey)?;
    for alg in [SigningAlg::RS256, SigningAlg::ES256, SigningAlg::EdDSA] {
        let Ok((_, jwk)) = public_jwk(pem, alg, None) else { continue };
        // ES256 is P-256 only; another curve loads as EC but is no ES256 key.
        if let AlgorithmParameters::EllipticCurve(p) = &jwk.algorithm {
            if p.curve != EllipticCurve::P256 {
                continue;
            }
        }
        return Ok((alg, jwk));
    }
    Err(JwksError::UnsupportedKey)
}

/// The public JWK of a PKCS#8 PEM private key (see `key_from_pem`).
pub fn public_key_from_pem(pem: &[u8]) -> Result<Jwk, JwksError> {
    Ok(key_from_pem(pem)?.1)
}

pub fn jwks_from_pem_file(path: &Path) -> Result<JwkSet, JwksError> {
    let pem =
        std::fs::read(path).map_err(|source| JwksError::Read { path: path.display().to_string(), source })?;
    Ok(JwkSet { keys: vec![public_key_from_pem(&pem)?] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::ThumbprintHash;

    const ED_PEM: &str = include_str!("../tests/keys/ed25519.pem");
    const P256_PEM: &str = include_str!("../tests/keys/p256.pem");
    const RSA_PEM: &str = include_str!("../tests/keys/rsa.pem");
    const P384_PEM: &str = include_str!("../tests/keys/p384.pem");

    #[test]
    fn each_key_type_gives_its_alg_and_a_thumbprint_kid() {
        for (pem, kty, alg) in
            [(RSA_PEM, "RSA", "RS256"), (P256_PEM, "EC", "ES256"), (ED_PEM, "OKP", "EdDSA")]
        {
            let jwk = public_key_from_pem(pem.as_bytes()).unwrap();
            let json = serde_json::to_value(&jwk).unwrap();
            assert_eq!((json["kty"].as_str(), json["alg"].as_str()), (Some(kty), Some(alg)));
            assert_eq!(json["use"], "sig");
            assert!(json.get("d").is_none(), "never the private part");
            let kid = jwk.common.key_id.clone().unwrap();
            if kty != "OKP" {
                // jsonwebtoken's own thumbprint (it has none for OKP) agrees.
                assert_eq!(jwk.thumbprint(ThumbprintHash::SHA256).unwrap(), kid, "{kty}");
            }
            assert_eq!(kid.len(), 43);
        }
        assert!(public_key_from_pem(P384_PEM.as_bytes()).is_err(), "only P-256 is ES256");
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            public_key_from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            Err(JwksError::UnsupportedKey)
        ));
        assert!(matches!(public_key_from_pem(b"hello"), Err(JwksError::UnsupportedKey)));
    }
}
