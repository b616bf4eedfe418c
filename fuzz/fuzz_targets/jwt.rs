//! JWT RPTs and JWKS (`core/src/jwt_rpt.rs`): `JwtKeys::parse` and `JwtKeys::check`.
//!
//! Input: `<token>\n<JWKS body>`. The token is checked against a fixed JWKS (the Ed25519 key of
//! core's tests, kid `k1`) and, when the rest of the input parses, against that JWKS too.
//! Properties:
//! - `parse` never accepts a non-200 or absent answer;
//! - `NotAJwt` exactly when the token has not 3 dot-separated parts;
//! - `Valid` only for a token with 3 parts, a header whose `alg` is asymmetric and not `none`,
//!   a `kid` the JWKS has, `iss` equal to the issuer, the audience when one is asked, an
//!   `exp`; its result is active, and `covers` only holds with a permission it names;
//! - a `Valid` token whose signature is altered is never `Valid`;
//! - the check is the same with a JWKS parsed twice (no hidden state);
//! - keys dropped from a JWKS are reported in printable ASCII (they reach the log).
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use uma_pep_core::config::AsProfile;
use uma_pep_core::jwt_rpt::{JwtCheck, JwtKeys};
use uma_pep_core::wire::AsResponse;

const ISSUER: &str = "http://as.local:8080/realms/eoepca";
const FIXED_JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","use":"sig","alg":"EdDSA","x":"huq9JXg0QPWVpX_qU6STjXHh9Q9N6TE-YHsVPjhw6ww"}]}"#;

fn header_of(token: &str) -> Option<Value> {
    let h = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn audience_ok(claims: &serde_json::Map<String, Value>, aud: &str) -> bool {
    match claims.get("aud") {
        Some(Value::String(s)) => s == aud,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(aud)),
        _ => false,
    }
}

fn check_one(keys: &JwtKeys, jwks: &[u8], token: &str) {
    for (audience, profile) in [
        (None, AsProfile::Uma2),
        (Some("pep-client"), AsProfile::Uma2),
        (None, AsProfile::Keycloak),
        (Some("pep-client"), AsProfile::Keycloak),
    ] {
        let got = keys.check(token, ISSUER, audience, profile);
        if std::env::var_os("FUZZ_DEBUG").is_some() {
            // `FUZZ_DEBUG=1 target/.../jwt corpus/jwt/*`: what each seed reaches.
            eprintln!("{audience:?} {profile:?}: {}", outcome(&got));
        }
        let parts = token.split('.').count();
        match &got {
            JwtCheck::NotAJwt => assert_ne!(parts, 3, "a 3-part token called not a JWT"),
            _ => assert_eq!(parts, 3, "a {parts}-part token taken for a JWT: {got:?}"),
        }
        let JwtCheck::Valid(r) = got else { continue };
        let header = header_of(token).expect("a valid token has a readable header");
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
        assert!(
            matches!(alg, "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES256" | "ES384" | "EdDSA"),
            "valid with alg {alg:?}"
        );
        let kid = header.get("kid").and_then(Value::as_str).expect("valid without kid");
        let set: Value = serde_json::from_slice(jwks).expect("keys came from JSON");
        assert!(
            set["keys"].as_array().is_some_and(|ks| ks.iter().any(|k| k.get("kid").and_then(Value::as_str) == Some(kid))),
            "valid with kid {kid:?} the JWKS lacks"
        );
        assert!(r.active, "a valid JWT is an inactive answer");
        assert!(r.exp.is_some(), "valid without exp");
        assert_eq!(r.claims.get("iss").and_then(Value::as_str), Some(ISSUER), "valid with another issuer");
        if let Some(aud) = audience {
            assert!(audience_ok(&r.claims, aud), "valid for audience {aud:?} not in aud: {:?}", r.claims.get("aud"));
        }
        // Any change to the signature is a forgery.
        let (signed, sig) = token.rsplit_once('.').expect("3 parts");
        for tampered_sig in [String::new(), format!("{sig}A"), flip_first(sig)] {
            if tampered_sig == sig {
                continue;
            }
            let tampered = format!("{signed}.{tampered_sig}");
            assert!(
                !matches!(keys.check(&tampered, ISSUER, audience, profile), JwtCheck::Valid(_)),
                "altered signature accepted: {tampered:?}"
            );
        }
    }
}

fn outcome(c: &JwtCheck) -> String {
    match c {
        JwtCheck::Valid(r) => format!("Valid(sub={:?}, {} permissions)", r.sub, r.permissions.len()),
        other => format!("{other:?}").chars().take(160).collect(),
    }
}

fn flip_first(sig: &str) -> String {
    let mut chars: Vec<char> = sig.chars().collect();
    if let Some(c) = chars.first_mut() {
        *c = if *c == 'A' { 'B' } else { 'A' };
    }
    chars.into_iter().collect()
}

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static FIXED: JwtKeys = JwtKeys::parse(&AsResponse { status: Some(200), body: FIXED_JWKS.as_bytes() })
            .expect("fixed JWKS parses");
    }
    let (token, jwks) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(token) = std::str::from_utf8(token) else { return };
    for status in [None, Some(401), Some(404), Some(500)] {
        assert!(JwtKeys::parse(&AsResponse { status, body: jwks }).is_err());
    }
    FIXED.with(|keys| check_one(keys, FIXED_JWKS.as_bytes(), token));
    if let Ok(keys) = JwtKeys::parse(&AsResponse { status: Some(200), body: jwks }) {
        assert!(keys.len() <= serde_json::from_slice::<Value>(jwks).ok().and_then(|v| v["keys"].as_array().map(Vec::len)).unwrap_or(usize::MAX));
        // Dropped keys are logged: printable ASCII only (no log injection from the AS).
        for d in keys.dropped() {
            for field in [&d.kid, &d.reason] {
                assert!(field.bytes().all(|b| b == b' ' || b.is_ascii_graphic()), "dropped key logged as {field:?}");
                assert!(field.len() <= 512, "dropped key field of {} bytes", field.len());
            }
        }
        check_one(&keys, jwks, token);
        let again = JwtKeys::parse(&AsResponse { status: Some(200), body: jwks }).expect("parsed once");
        assert_eq!(keys.len(), again.len());
    }
});
