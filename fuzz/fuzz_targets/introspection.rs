//! Introspection answers of both dialects (`core/src/introspection.rs`): `from_json`, `parse`,
//! `covers` with a fixed clock, `complete_identity_from_jwt`, and the cache's serde round trip.
//!
//! Input: the answer body. Properties:
//! - `parse` (status 200) accepts only what `from_json` accepts, with the same result, and
//!   only when `active` is a boolean; another status or no answer is never `Ok`;
//! - what is decided on never stays among the forwarded claims (`active`, `exp`, `iat`, `nbf`,
//!   `permissions`, `authorization`), and no claim is `null`;
//! - `covers` is `Ok` only for an active answer, in time, with a permission for exactly that
//!   resource; never for a resource the answer does not name, nor for an inactive one;
//! - completing the identity from a JWT never changes `active`, times, permissions, nor a
//!   `sub`/`client_id` the AS gave;
//! - the result survives the JSON round trip the shared cache makes, decision fields equal.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use uma_pep_core::config::AsProfile;
use uma_pep_core::introspection::{Clock, Insufficiency, IntrospectionResult};
use uma_pep_core::wire::AsResponse;

const NOW: i64 = 1_750_000_000;
const CLOCK: Clock = Clock { now: NOW, margin_s: 5, skew_s: 60 };
const DECIDED: [&str; 6] = ["active", "exp", "iat", "nbf", "permissions", "authorization"];

fn same_decision(a: &IntrospectionResult, b: &IntrospectionResult) {
    assert_eq!(a.active, b.active);
    assert_eq!((a.exp, a.iat, a.nbf), (b.exp, b.iat, b.nbf));
    assert_eq!(a.sub, b.sub);
    assert_eq!(a.client_id, b.client_id);
    assert_eq!(a.permissions, b.permissions);
}

fn check_covers(r: &IntrospectionResult) {
    let mut ids: Vec<&str> = r.permissions.iter().map(|p| p.resource_id.as_str()).collect();
    ids.push("not-a-resource-of-the-answer\u{1}");
    for profile in [AsProfile::Uma2, AsProfile::Keycloak] {
        for id in &ids {
            for scope in ["protected_get", "protected_post", "public_access", ""] {
                let got = r.covers(id, scope, CLOCK, profile);
                if got.is_ok() {
                    assert!(r.active, "inactive answer covers {id:?}");
                    assert!(r.check_times(CLOCK).is_ok(), "out of time, yet covers {id:?}");
                    assert!(
                        r.permissions.iter().any(|p| p.resource_id == *id),
                        "covers {id:?} without a permission for it"
                    );
                    if profile == AsProfile::Uma2 {
                        assert!(
                            r.permissions.iter().any(|p| p.resource_id == *id && p.scopes.iter().any(|s| s == scope)),
                            "uma2: covers {id:?}/{scope:?} without the scope listed"
                        );
                    }
                }
                if !r.active {
                    assert_eq!(got, Err(Insufficiency::Inactive));
                }
            }
        }
        let last = ids.last().expect("pushed above");
        assert!(r.covers(last, "protected_get", CLOCK, profile).is_err());
    }
}

fuzz_target!(|data: &[u8]| {
    let parsed = IntrospectionResult::from_json(data);
    let answered = IntrospectionResult::parse(&AsResponse { status: Some(200), body: data });
    for status in [None, Some(401), Some(500)] {
        assert!(IntrospectionResult::parse(&AsResponse { status, body: data }).is_err());
    }
    if let Ok(a) = &answered {
        let p = parsed.as_ref().expect("parse accepted what from_json refused");
        assert_eq!(a, p);
        let v: Value = serde_json::from_slice(data).expect("parse accepted non-JSON");
        assert!(v.get("active").is_some_and(Value::is_boolean), "parse accepted an answer without `active`");
    }
    let Ok(mut r) = parsed else { return };
    for key in DECIDED {
        assert!(!r.claims.contains_key(key), "{key:?} left among the forwarded claims");
    }
    assert!(r.claims.values().all(|v| !v.is_null()), "null claim kept");
    check_covers(&r);

    // The shared cache keeps results as JSON.
    let bytes = serde_json::to_vec(&r).expect("a result serialises");
    // A cached result that does not read back is a miss (`src/caches.rs`, `.ok()`): only a
    // result that does read back must decide the same.
    if let Ok(back) = serde_json::from_slice::<IntrospectionResult>(&bytes) {
        same_decision(&r, &back);
    }

    // The same body as the payload of a JWT whose introspection was this answer.
    let before = r.clone();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let token = format!("eyJhbGciOiJSUzI1NiJ9.{}.c2ln", b64.encode(data));
    r.complete_identity_from_jwt(&token);
    assert_eq!(r.active, before.active);
    assert_eq!((r.exp, r.iat, r.nbf), (before.exp, before.iat, before.nbf));
    assert_eq!(r.permissions, before.permissions);
    if before.sub.is_some() {
        assert_eq!(r.sub, before.sub);
    }
    if before.client_id.is_some() {
        assert_eq!(r.client_id, before.client_id);
    }
    if !before.active {
        assert_eq!(r, before, "an inactive answer was completed");
    }
    for key in DECIDED {
        assert!(!r.claims.contains_key(key), "{key:?} taken from the token");
    }
    assert!(r.claims.values().all(|v| !v.is_null()), "null claim taken from the token");
    check_covers(&r);
});
