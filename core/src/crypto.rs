//! The signature algorithms behind `jsonwebtoken`, installed as its process-wide provider.
//!
//! jsonwebtoken's own RustCrypto provider links every algorithm it knows (RSA and P-384
//! included) into whatever uses it, and RSA is the largest part of the filter's module. This
//! provider links only the algorithms of this build's features: `forward-rs256` (RSA keys to
//! sign with), `verify-rsa` (RS256..PS512 signatures to check) and `verify-es384`. ES256,
//! EdDSA and HMAC are always in. With every feature on (the default) it does all that the
//! RustCrypto provider does, so pepctl, whose own jsonwebtoken has that provider compiled in and
//! which may find this one installed first, sees no difference.
//!
//! `install` must run before the first signature or verification: without it jsonwebtoken
//! has no provider in the filter's build and panics. `forward::public_jwk` and `JwtKeys::parse`
//! call it, and every signer and key is made by one of those.

use std::sync::Once;

use hmac::{Hmac, Mac};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey};
use sha2::{Digest, Sha256, Sha384, Sha512};

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: rsa_components_of_private_key,
        rsa_pub_components_from_public_key: rsa_components_of_public_key,
        ec_pub_components_from_private_key: ec_components_of_private_key,
        ed_pub_components_from_private_key: ed_component_of_private_key,
        compute_digest,
    },
};

/// Makes this provider jsonwebtoken's, once per process (per VM inside Envoy). A provider
/// installed before it (RustCrypto's, in pepctl's build) stays: it does all this one does.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _already_installed = PROVIDER.install_default();
    });
}

/// The cargo feature an algorithm needs, when this build left it out.
pub fn missing_feature(alg: Algorithm) -> Option<&'static str> {
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => (!cfg!(feature = "verify-rsa")).then_some("verify-rsa"),
        Algorithm::ES384 => (!cfg!(feature = "verify-es384")).then_some("verify-es384"),
        _ => None,
    }
}

#[cfg(not(all(feature = "forward-rs256", feature = "verify-rsa", feature = "verify-es384")))]
fn left_out(what: &str, feature: &str) -> Error {
    ErrorKind::Provider(format!("{what} is not in this build (cargo feature `{feature}`)")).into()
}

fn family_of(alg: Algorithm) -> Option<AlgorithmFamily> {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Some(AlgorithmFamily::Hmac),
        Algorithm::ES256 | Algorithm::ES384 => Some(AlgorithmFamily::Ec),
        Algorithm::EdDSA => Some(AlgorithmFamily::Ed),
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Some(AlgorithmFamily::Rsa),
        _ => None,
    }
}

/// The private key of a signer, parsed when the signer is made.
enum SigningKey {
    Hmac(Vec<u8>),
    Es256(p256::ecdsa::SigningKey),
    #[cfg(feature = "verify-es384")]
    Es384(p384::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
    #[cfg(feature = "forward-rs256")]
    Rsa(rsa::RsaPrivateKey),
}

struct Signer {
    alg: Algorithm,
    key: SigningKey,
}

fn new_signer(alg: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    let alg = *alg;
    if Some(key.family()) != family_of(alg) {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let der = key.as_bytes();
    let key = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => SigningKey::Hmac(der.to_vec()),
        Algorithm::ES256 => {
            use p256::pkcs8::DecodePrivateKey;
            SigningKey::Es256(
                p256::ecdsa::SigningKey::from_pkcs8_der(der).map_err(|_| ErrorKind::InvalidEcdsaKey)?,
            )
        }
        #[cfg(feature = "verify-es384")]
        Algorithm::ES384 => {
            use p384::pkcs8::DecodePrivateKey;
            SigningKey::Es384(
                p384::ecdsa::SigningKey::from_pkcs8_der(der).map_err(|_| ErrorKind::InvalidEcdsaKey)?,
            )
        }
        #[cfg(not(feature = "verify-es384"))]
        Algorithm::ES384 => return Err(left_out("ES384", "verify-es384")),
        Algorithm::EdDSA => {
            use ed25519_dalek::pkcs8::DecodePrivateKey;
            SigningKey::Ed25519(
                ed25519_dalek::SigningKey::from_pkcs8_der(der).map_err(|_| ErrorKind::InvalidEddsaKey)?,
            )
        }
        #[cfg(feature = "forward-rs256")]
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => SigningKey::Rsa(
            <rsa::RsaPrivateKey as rsa::pkcs1::DecodeRsaPrivateKey>::from_pkcs1_der(der)
                .map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?,
        ),
        #[cfg(not(feature = "forward-rs256"))]
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => return Err(left_out("RSA signing", "forward-rs256")),
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    Ok(Box::new(Signer { alg, key }))
}

fn hmac_tag(alg: Algorithm, secret: &[u8], msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
    fn tag<M: Mac + hmac::digest::KeyInit>(secret: &[u8], msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let mut mac = <M as Mac>::new_from_slice(secret).map_err(|_| signature::Error::new())?;
        mac.update(msg);
        Ok(mac.finalize().into_bytes().to_vec())
    }
    match alg {
        Algorithm::HS384 => tag::<Hmac<Sha384>>(secret, msg),
        Algorithm::HS512 => tag::<Hmac<Sha512>>(secret, msg),
        _ => tag::<Hmac<Sha256>>(secret, msg),
    }
}

#[cfg(feature = "forward-rs256")]
fn rsa_sign(alg: Algorithm, key: &rsa::RsaPrivateKey, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
    use rsa::{Pkcs1v15Sign, Pss};
    let mut rng = rand::thread_rng();
    // Blinded, as the RustCrypto provider signs: the `rsa` crate's defence against timing.
    let signed = match alg {
        Algorithm::RS384 => key.sign_with_rng(&mut rng, Pkcs1v15Sign::new::<Sha384>(), &Sha384::digest(msg)),
        Algorithm::RS512 => key.sign_with_rng(&mut rng, Pkcs1v15Sign::new::<Sha512>(), &Sha512::digest(msg)),
        Algorithm::PS256 => key.sign_with_rng(&mut rng, Pss::new_blinded::<Sha256>(), &Sha256::digest(msg)),
        Algorithm::PS384 => key.sign_with_rng(&mut rng, Pss::new_blinded::<Sha384>(), &Sha384::digest(msg)),
        Algorithm::PS512 => key.sign_with_rng(&mut rng, Pss::new_blinded::<Sha512>(), &Sha512::digest(msg)),
        _ => key.sign_with_rng(&mut rng, Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(msg)),
    };
    signed.map_err(signature::Error::from_source)
}

impl signature::Signer<Vec<u8>> for Signer {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        match &self.key {
            SigningKey::Hmac(secret) => hmac_tag(self.alg, secret, msg),
            // Deterministic (RFC 6979), and low-S: p256 and p384 do not normalise `s`, and a
            // verifier that refuses malleable signatures (this filter does, for RPTs) would
            // refuse about half of them.
            SigningKey::Es256(key) => {
                let sig: p256::ecdsa::Signature = signature::Signer::try_sign(key, msg)?;
                Ok(sig.normalize_s().unwrap_or(sig).to_vec())
            }
            #[cfg(feature = "verify-es384")]
            SigningKey::Es384(key) => {
                let sig: p384::ecdsa::Signature = signature::Signer::try_sign(key, msg)?;
                Ok(sig.normalize_s().unwrap_or(sig).to_vec())
            }
            SigningKey::Ed25519(key) => Ok(key.sign(msg).to_bytes().to_vec()),
            #[cfg(feature = "forward-rs256")]
            SigningKey::Rsa(key) => rsa_sign(self.alg, key, msg),
        }
    }
}

impl JwtSigner for Signer {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

/// The public key of a verifier, parsed (and checked: a point on the curve) when it is made.
enum VerifyingKey {
    Hmac(Vec<u8>),
    Es256(p256::ecdsa::VerifyingKey),
    #[cfg(feature = "verify-es384")]
    Es384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    #[cfg(feature = "verify-rsa")]
    Rsa(rsa::RsaPublicKey),
}

struct Verifier {
    alg: Algorithm,
    key: VerifyingKey,
}

#[cfg(feature = "verify-rsa")]
fn rsa_public_key(key: &DecodingKey) -> Result<rsa::RsaPublicKey, Error> {
    use jsonwebtoken::DecodingKeyKind;
    use rsa::pkcs1::DecodeRsaPublicKey;
    let parsed = match key.kind() {
        DecodingKeyKind::SecretOrDer(der) => {
            rsa::RsaPublicKey::from_pkcs1_der(der).map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?
        }
        DecodingKeyKind::RsaModulusExponent { n, e } => {
            rsa::RsaPublicKey::new(rsa::BigUint::from_bytes_be(n), rsa::BigUint::from_bytes_be(e))
                .map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?
        }
    };
    Ok(parsed)
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let alg = *alg;
    if Some(key.family()) != family_of(alg) {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    let key = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            VerifyingKey::Hmac(key.try_get_as_bytes()?.to_vec())
        }
        Algorithm::ES256 => VerifyingKey::Es256(
            p256::ecdsa::VerifyingKey::from_sec1_bytes(key.try_get_as_bytes()?)
                .map_err(|_| ErrorKind::InvalidEcdsaKey)?,
        ),
        #[cfg(feature = "verify-es384")]
        Algorithm::ES384 => VerifyingKey::Es384(
            p384::ecdsa::VerifyingKey::from_sec1_bytes(key.try_get_as_bytes()?)
                .map_err(|_| ErrorKind::InvalidEcdsaKey)?,
        ),
        #[cfg(not(feature = "verify-es384"))]
        Algorithm::ES384 => return Err(left_out("ES384", "verify-es384")),
        Algorithm::EdDSA => {
            let bytes: &[u8; 32] =
                key.try_get_as_bytes()?.try_into().map_err(|_| ErrorKind::InvalidEddsaKey)?;
            VerifyingKey::Ed25519(
                ed25519_dalek::VerifyingKey::from_bytes(bytes).map_err(|_| ErrorKind::InvalidEddsaKey)?,
            )
        }
        #[cfg(feature = "verify-rsa")]
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => VerifyingKey::Rsa(rsa_public_key(key)?),
        #[cfg(not(feature = "verify-rsa"))]
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => return Err(left_out("RSA verification", "verify-rsa")),
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    Ok(Box::new(Verifier { alg, key }))
}

#[cfg(feature = "verify-rsa")]
fn rsa_verify(alg: Algorithm, key: &rsa::RsaPublicKey, msg: &[u8], sig: &[u8]) -> rsa::Result<()> {
    use rsa::{Pkcs1v15Sign, Pss};
    match alg {
        Algorithm::RS384 => key.verify(Pkcs1v15Sign::new::<Sha384>(), &Sha384::digest(msg), sig),
        Algorithm::RS512 => key.verify(Pkcs1v15Sign::new::<Sha512>(), &Sha512::digest(msg), sig),
        Algorithm::PS256 => key.verify(Pss::new::<Sha256>(), &Sha256::digest(msg), sig),
        Algorithm::PS384 => key.verify(Pss::new::<Sha384>(), &Sha384::digest(msg), sig),
        Algorithm::PS512 => key.verify(Pss::new::<Sha512>(), &Sha512::digest(msg), sig),
        _ => key.verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(msg), sig),
    }
}

impl signature::Verifier<Vec<u8>> for Verifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        match &self.key {
            VerifyingKey::Hmac(secret) => {
                // Constant time, through the MAC's own comparison.
                fn check<M: Mac + hmac::digest::KeyInit>(
                    secret: &[u8],
                    msg: &[u8],
                    sig: &[u8],
                ) -> Result<(), signature::Error> {
                    let mut mac = <M as Mac>::new_from_slice(secret).map_err(|_| signature::Error::new())?;
                    mac.update(msg);
                    mac.verify_slice(sig).map_err(|_| signature::Error::new())
                }
                match self.alg {
                    Algorithm::HS384 => check::<Hmac<Sha384>>(secret, msg, sig),
                    Algorithm::HS512 => check::<Hmac<Sha512>>(secret, msg, sig),
                    _ => check::<Hmac<Sha256>>(secret, msg, sig),
                }
            }
            VerifyingKey::Es256(key) => key.verify(msg, &p256::ecdsa::Signature::from_slice(sig)?),
            #[cfg(feature = "verify-es384")]
            VerifyingKey::Es384(key) => key.verify(msg, &p384::ecdsa::Signature::from_slice(sig)?),
            VerifyingKey::Ed25519(key) => key.verify(msg, &ed25519_dalek::Signature::from_slice(sig)?),
            #[cfg(feature = "verify-rsa")]
            VerifyingKey::Rsa(key) => {
                rsa_verify(self.alg, key, msg, sig).map_err(signature::Error::from_source)
            }
        }
    }
}

impl JwtVerifier for Verifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

#[cfg(feature = "forward-rs256")]
fn rsa_components_of_private_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    use rsa::{pkcs1::DecodeRsaPrivateKey, traits::PublicKeyParts};
    let key = rsa::RsaPrivateKey::from_pkcs1_der(der).map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
    Ok((key.n().to_bytes_be(), key.e().to_bytes_be()))
}

#[cfg(not(feature = "forward-rs256"))]
fn rsa_components_of_private_key(_der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    Err(left_out("RSA signing", "forward-rs256"))
}

#[cfg(any(feature = "forward-rs256", feature = "verify-rsa"))]
fn rsa_components_of_public_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    use rsa::{pkcs1::DecodeRsaPublicKey, traits::PublicKeyParts};
    let key = rsa::RsaPublicKey::from_pkcs1_der(der).map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
    Ok((key.n().to_bytes_be(), key.e().to_bytes_be()))
}

#[cfg(not(any(feature = "forward-rs256", feature = "verify-rsa")))]
fn rsa_components_of_public_key(_der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    Err(left_out("RSA", "verify-rsa"))
}

fn ec_components_of_private_key(
    der: &[u8],
    alg: Algorithm,
) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>), Error> {
    match alg {
        Algorithm::ES256 => {
            use p256::pkcs8::DecodePrivateKey;
            let key = p256::ecdsa::SigningKey::from_pkcs8_der(der).map_err(|_| ErrorKind::InvalidEcdsaKey)?;
            let point = key.verifying_key().to_encoded_point(false);
            match (point.x(), point.y()) {
                (Some(x), Some(y)) => Ok((EllipticCurve::P256, x.to_vec(), y.to_vec())),
                _ => Err(ErrorKind::InvalidEcdsaKey.into()),
            }
        }
        #[cfg(feature = "verify-es384")]
        Algorithm::ES384 => {
            use p384::pkcs8::DecodePrivateKey;
            let key = p384::ecdsa::SigningKey::from_pkcs8_der(der).map_err(|_| ErrorKind::InvalidEcdsaKey)?;
            let point = key.verifying_key().to_encoded_point(false);
            match (point.x(), point.y()) {
                (Some(x), Some(y)) => Ok((EllipticCurve::P384, x.to_vec(), y.to_vec())),
                _ => Err(ErrorKind::InvalidEcdsaKey.into()),
            }
        }
        _ => Err(ErrorKind::InvalidEcdsaKey.into()),
    }
}

fn ed_component_of_private_key(der: &[u8], curve: &EllipticCurve) -> Result<Vec<u8>, Error> {
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    if *curve != EllipticCurve::Ed25519 {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    let key = ed25519_dalek::SigningKey::from_pkcs8_der(der).map_err(|_| ErrorKind::InvalidEddsaKey)?;
    Ok(key.verifying_key().as_bytes().to_vec())
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>, Error> {
    Ok(match hash {
        ThumbprintHash::SHA256 => Sha256::digest(data).to_vec(),
        ThumbprintHash::SHA384 => Sha384::digest(data).to_vec(),
        ThumbprintHash::SHA512 => Sha512::digest(data).to_vec(),
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    })
}
