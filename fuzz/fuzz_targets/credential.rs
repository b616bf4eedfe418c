//! The `Authorization` header (`core/src/credential.rs`).
//!
//! Input: header values, one per line ('\n' cannot occur inside a header value); an input
//! without '\n' is one value. Properties:
//! - no value is `Absent`, one value is never `Duplicated` by count, two or more always are;
//! - a `Bearer` token is a non-empty b64token (RFC 6750 §2.1) of at most `MAX_TOKEN_BYTES`,
//!   taken from inside the value, and the value is `Bearer <token>` up to case and blanks;
//! - round trip: `Bearer <token>` gives the same token back;
//! - the decision does not depend on surrounding blanks of the value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uma_pep_core::credential::{Credential, MAX_TOKEN_BYTES};

fn b64token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

fuzz_target!(|data: &[u8]| {
    // Envoy may hand over bytes that are not UTF-8; the filter makes them U+FFFD (lossy).
    let text = String::from_utf8_lossy(data);
    let values: Vec<&str> = if text.is_empty() { Vec::new() } else { text.split('\n').collect() };

    let c = Credential::from_headers(&values);
    match values.len() {
        0 => assert_eq!(c, Credential::Absent),
        1 => assert_ne!(c, Credential::Absent),
        _ => assert_eq!(c, Credential::Duplicated, "{values:?}"),
    }
    let [value] = values.as_slice() else { return };

    if let Credential::Bearer(token) = c {
        assert!(!token.is_empty() && token.len() <= MAX_TOKEN_BYTES, "{value:?}");
        assert!(token.bytes().all(b64token_char), "{value:?} -> {token:?}");
        assert!(!token.trim_end_matches('=').is_empty(), "{value:?} -> {token:?}: only padding");
        assert!(
            token.trim_end_matches('=').bytes().all(|b| b != b'='),
            "{value:?} -> {token:?}: '=' inside the token"
        );
        assert!(value.contains(token));
        let trimmed = value.trim_matches(|c| c == ' ' || c == '\t');
        let (scheme, rest) = trimmed.split_once(' ').expect("a bearer value has a scheme and a token");
        assert!(scheme.eq_ignore_ascii_case("bearer"), "{value:?}: scheme {scheme:?}");
        assert_eq!(rest.trim_start_matches(' '), token, "{value:?}");
        let again = format!("Bearer {token}");
        assert_eq!(Credential::from_headers(&[&again]), Credential::Bearer(token));
    }
    // Blanks around the value are not part of it.
    let padded = format!(" \t{value}\t ");
    assert_eq!(Credential::from_headers(&[&padded]), c, "{value:?}");
});
