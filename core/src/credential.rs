//! `Credential`: what the client's `Authorization` header(s) amount to.
//!
//! Only a single, well-formed `Bearer` token counts as an RPT. Anything else that is merely
//! unusable (Basic, empty Bearer, bad characters, oversized) is treated as no token at all, so
//! the client gets a ticket (UMA 2.0 Grant §3.2.1). Two headers are ambiguous about
//! who is asking and are refused outright.

/// Longest token accepted; Envoy's default header limit is 60 KiB, RPTs are a few KiB at most.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    /// No `Authorization` header.
    Absent,
    /// A syntactically valid Bearer token (RFC 6750 `b64token`).
    Bearer(&'a str),
    /// A header that is not a usable Bearer token; why, for the log (never the value).
    Unusable(&'static str),
    /// More than one `Authorization` header.
    Duplicated,
}

fn is_b64token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
}

fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty() && body.bytes().all(is_b64token_char)
}

/// `scheme SP something`, as a credential (not an auth-param such as `realm="x"`) starts.
fn looks_like_credential(part: &str) -> bool {
    let part = part.trim_start();
    match part.split_once(' ') {
        Some((scheme, rest)) => {
            !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric()) && !rest.trim().is_empty()
        }
        None => false,
    }
}

impl<'a> Credential<'a> {
    /// Classifies the values of every `Authorization` header of a request.
    pub fn from_headers(values: &[&'a str]) -> Self {
        match values {
            [] => Credential::Absent,
            [one] => Self::from_value(one),
            _ => Credential::Duplicated,
        }
    }

    fn from_value(value: &'a str) -> Self {
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        // Envoy joins repeated `Authorization` headers with ','; no single credential of the
        // Bearer or Basic schemes contains one, so two `scheme value` parts mean two headers.
        if value.split(',').filter(|part| looks_like_credential(part)).count() > 1 {
            return Credential::Duplicated;
        }
        let Some((scheme, rest)) = value.split_once(' ') else {
            return if value.eq_ignore_ascii_case("bearer") {
                Credential::Unusable("empty bearer token")
            } else {
                Credential::Unusable("not a bearer token")
            };
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Credential::Unusable("not a bearer token");
        }
        let token = rest.trim_start_matches(' ');
        if token.is_empty() {
            return Credential::Unusable("empty bearer token");
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Credential::Unusable("oversized bearer token");
        }
        if !is_b64token(token) {
            return Credential::Unusable("malformed bearer token");
        }
        Credential::Bearer(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        assert_eq!(
            Credential::from_headers(&["Bearer abc.def-ghi_~+/=="]),
            Credential::Bearer("abc.def-ghi_~+/==")
        );
        assert_eq!(Credential::from_headers(&["bearer  tok"]), Credential::Bearer("tok"));
        assert_eq!(Credential::from_headers(&["BEARER tok "]), Credential::Bearer("tok"));
    }

    #[test]
    fn absent_and_duplicated() {
        assert_eq!(Credential::from_headers(&[]), Credential::Absent);
        assert_eq!(Credential::from_headers(&["Bearer a", "Bearer b"]), Credential::Duplicated);
        // What Envoy makes of two headers.
        assert_eq!(Credential::from_headers(&["Bearer a,Bearer b"]), Credential::Duplicated);
        assert_eq!(Credential::from_headers(&["Basic eA==, Bearer b"]), Credential::Duplicated);
        // One Digest credential with auth-params is not two.
        assert!(matches!(
            Credential::from_headers(&["Digest username=\"a\", realm=\"r\""]),
            Credential::Unusable(_)
        ));
    }

    #[test]
    fn unusable_values_are_not_tokens() {
        for v in [
            "Basic dXNlcjpwdw==",
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "Bearer tök",
            "Bearer a\"b",
            "Bearer ===",
            "tok",
            "",
            "Digest x",
        ] {
            assert!(matches!(Credential::from_headers(&[v]), Credential::Unusable(_)), "{v:?}");
        }
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(Credential::from_headers(&[&huge]), Credential::Unusable("oversized bearer token"));
        let big_ok = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES));
        assert!(matches!(Credential::from_headers(&[&big_ok]), Credential::Bearer(_)));
    }
}
