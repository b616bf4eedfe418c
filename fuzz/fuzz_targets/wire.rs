//! Discovery, token (PAT) and permission (ticket) answers (`core/src/wire.rs`), the error
//! bodies of any AS answer, what a worker makes of a discovery document
//! (`core/src/session.rs` `Endpoints::from_discovery`), and the answers to decisions on access
//! tokens (`core/src/access_decision.rs`), with the input also as the user's token.
//!
//! Input: the answer body. Each parser sees it with 200 (201 for tickets) and with error
//! statuses. Properties:
//! - no answer is `Unreachable`; 401/403 are `CredentialsRefused`, other statuses `Status`,
//!   and the error code logged is "-" or short printable ASCII (no log injection);
//! - a PAT is non-empty printable ASCII (it goes into an `Authorization` header);
//! - a ticket is safe to quote in `WWW-Authenticate`;
//! - discovery endpoints are used only when the issuer is the configured one byte for byte,
//!   and are then paths on `as_cluster` (they start with '/');
//! - a Keycloak decision grants only on 200 with `{"result": true}`; a UMA grant's RPT goes
//!   into an introspection body and a header (printable ASCII) and its ticket into a challenge;
//! - whatever the user's token holds, a grant cached for it covers its one resource and scope;
//! - a resource lookup's answer gives a resource that matches the path, with a safe id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uma_pep_core::access_decision::{
    granted_by_keycloak, parse_keycloak_decision, parse_uma_grant, GrantAnswer,
};
use uma_pep_core::challenge::{is_safe_ticket, Challenge};
use uma_pep_core::config::{AsProfile, ChallengeStyle, PepConfig};
use uma_pep_core::introspection::Clock;
use uma_pep_core::resource_lookup::parse_lookup;
use uma_pep_core::session::Endpoints;
use uma_pep_core::wire::{parse_ticket, AccessToken, AsError, AsResponse, Discovery};

const CONFIGS: [&str; 2] = [
    r#"{"issuer":"http://as.local:8080/realms/eoepca","as_cluster":"as","client_id":"pep","client_secret":"s","as_profile":"keycloak"}"#,
    r#"{"issuer":"https://gluu.local","as_cluster":"as","client_id":"pep","client_secret":"s",
        "endpoints":{"introspection":"/oxauth/restv1/rpt/status","jwks":"https://gluu.local/jwks"}}"#,
];

fn check_error(e: &AsError, status: Option<u16>) {
    match (status, e) {
        (None, AsError::Unreachable) => {}
        (Some(s @ (401 | 403)), AsError::CredentialsRefused { status, error }) => {
            assert_eq!(s, *status);
            check_code(error);
        }
        (Some(s), AsError::Status { status, error }) => {
            assert!(s != 401 && s != 403);
            assert_eq!(s, *status);
            check_code(error);
        }
        (s, e) => panic!("status {s:?} gave {e:?}"),
    }
}

fn check_code(error: &str) {
    assert!(
        // A code is "-" or 1..100 printable ASCII characters (`{"error":""}` reads as "-").
        !error.is_empty() && error.len() < 100 && error.bytes().all(|b| b.is_ascii_graphic()),
        "error code {error:?} reaches the log"
    );
}

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static PEPS: Vec<PepConfig> =
            CONFIGS.iter().map(|c| PepConfig::from_json(c.as_bytes()).expect("fixed config is valid")).collect();
    }
    for status in [None, Some(400), Some(401), Some(403), Some(404), Some(500), Some(502)] {
        let r = AsResponse { status, body: data };
        check_error(&Discovery::parse(&r).expect_err("discovery on an error"), status);
        check_error(&AccessToken::parse(&r).expect_err("token on an error"), status);
        check_error(&parse_ticket(&r).expect_err("ticket on an error"), status);
        if let Some(s) = status {
            check_error(&AsError::from_status(s, data), status);
        }
    }

    for status in [None, Some(200), Some(400), Some(401), Some(403), Some(500)] {
        let r = AsResponse { status, body: data };
        match parse_keycloak_decision(&r) {
            Ok(None) => assert_eq!(status, Some(200), "a grant without 200"),
            Ok(Some(_)) => assert!(matches!(status, Some(200 | 401 | 403))),
            Err(AsError::Garbage(_)) => assert_eq!(status, Some(200)),
            Err(e) => check_error(&e, status),
        }
        match parse_uma_grant(&r) {
            Ok(GrantAnswer::Rpt(rpt)) => {
                assert_eq!(status, Some(200));
                assert!(!rpt.is_empty() && rpt.bytes().all(|b| b.is_ascii_graphic()), "RPT {rpt:?}");
            }
            Ok(GrantAnswer::Denied { ticket, .. }) => {
                assert!(matches!(status, Some(400 | 403)));
                assert!(ticket.is_none_or(|t| is_safe_ticket(&t)));
            }
            Err(AsError::Garbage(_)) => assert_eq!(status, Some(200)),
            Err(e) => check_error(&e, status),
        }
    }
    // A resource lookup's answer (`resource_lookup`): whatever the AS says, the resource picked
    // matches the path, and its id is safe in a ticket request and a log line.
    for path in ["/api/orders/7", "/", "/a/b/c"] {
        if let Ok(found) = parse_lookup(&AsResponse { status: Some(200), body: data }, path) {
            if let Some(r) = found.resource {
                assert!(
                    !r.id.is_empty() && r.id.bytes().all(|b| b.is_ascii_graphic() && b != b'"'),
                    "id {:?}",
                    r.id
                );
                let again = uma_pep_core::matcher::ResourceMatcher::new(vec![r.clone()]);
                assert_eq!(again.find(path).map(|x| &x.id), Some(&r.id), "{path}: {r:?}");
            }
        }
    }
    if let Ok(token) = std::str::from_utf8(data) {
        let granted = granted_by_keycloak(token, "r1", &["read".to_string()]);
        let clock = Clock { now: 0, margin_s: 0, skew_s: 0 };
        assert!(granted.covers("r2", "read", clock, AsProfile::Keycloak).is_err());
        assert!(granted.covers("r1", "write", clock, AsProfile::Keycloak).is_err());
        assert!(granted.permissions.len() == 1, "the token's own permissions are never taken");
    }

    let ok = AsResponse { status: Some(200), body: data };
    if let Ok(t) = AccessToken::parse(&ok) {
        assert!(!t.value.is_empty() && t.value.bytes().all(|b| b.is_ascii_graphic()), "PAT {:?}", t.value);
    }
    for status in [200, 201] {
        if let Ok(ticket) = parse_ticket(&AsResponse { status: Some(status), body: data }) {
            assert!(is_safe_ticket(&ticket), "ticket {ticket:?}");
            // The ticket cannot add a parameter or end the header, in either challenge style.
            for style in [ChallengeStyle::Uma2, ChallengeStyle::Compact] {
                let c = Challenge {
                    realm: "eoepca",
                    as_uri: "http://as.local:8080/realms/eoepca",
                    ticket: &ticket,
                };
                let v = c.header_value(style);
                assert_eq!(v.matches(',').count(), 2, "{v:?}");
                assert_eq!(
                    v.matches('"').count(),
                    if style == ChallengeStyle::Uma2 { 6 } else { 0 },
                    "{v:?}"
                );
                assert!(v.ends_with(&ticket) || v.ends_with(&format!("{ticket}\"")));
            }
        }
    }
    let Ok(d) = Discovery::parse(&ok) else { return };
    PEPS.with(|peps| {
        for pep in peps {
            match Endpoints::from_discovery(pep, &d) {
                Ok(e) => {
                    assert_eq!(d.issuer, pep.issuer, "endpoints of another issuer used");
                    for p in [Some(&e.token), Some(&e.permission), e.introspection.as_ref(), e.jwks.as_ref()]
                        .into_iter()
                        .flatten()
                    {
                        assert!(p.starts_with('/'), "endpoint {p:?} is not a path on as_cluster");
                    }
                }
                Err(AsError::Mismatch(_)) => assert_ne!(d.issuer, pep.issuer),
                Err(AsError::Garbage(_)) => {}
                Err(e) => panic!("from_discovery: {e:?}"),
            }
        }
    });
});
