//! `Challenge`: the `WWW-Authenticate` value of a UMA 401 (UMA grant §3.2.1).

use crate::config::ChallengeStyle;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge<'a> {
    pub realm: &'a str,
    /// Must be the discovery `issuer`, byte for byte.
    pub as_uri: &'a str,
    pub ticket: &'a str,
}

impl Challenge<'_> {
    /// One line; `Uma2` quotes every value, `Compact` is EOEPCA's unquoted form.
    pub fn header_value(&self, style: ChallengeStyle) -> String {
        match style {
            ChallengeStyle::Uma2 => format!(
                "UMA realm=\"{}\", as_uri=\"{}\", ticket=\"{}\"",
                self.realm, self.as_uri, self.ticket
            ),
            ChallengeStyle::Compact => {
                format!("UMA realm={},as_uri={},ticket={}", self.realm, self.as_uri, self.ticket)
            }
        }
    }
}

/// A ticket is copied verbatim into the header, so it must not be able to break out of it
/// (quotes, commas for the compact form, control characters). UUIDs and JWSs always pass.
pub fn is_safe_ticket(ticket: &str) -> bool {
    !ticket.is_empty()
        && ticket.len() <= 8192
        && ticket.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b','))
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Challenge<'static> = Challenge {
        realm: "eoepca",
        as_uri: "https://as.example.com",
        ticket: "016f84e8-f9b9-11e0-bd6f-0021cc6004de",
    };

    #[test]
    fn uma2_style_quotes_every_value() {
        assert_eq!(
            C.header_value(ChallengeStyle::Uma2),
            "UMA realm=\"eoepca\", as_uri=\"https://as.example.com\", ticket=\"016f84e8-f9b9-11e0-bd6f-0021cc6004de\""
        );
    }

    #[test]
    fn compact_style_is_eoepcas() {
        assert_eq!(
            C.header_value(ChallengeStyle::Compact),
            "UMA realm=eoepca,as_uri=https://as.example.com,ticket=016f84e8-f9b9-11e0-bd6f-0021cc6004de"
        );
    }

    #[test]
    fn ticket_safety() {
        assert!(is_safe_ticket("016f84e8-f9b9-11e0-bd6f-0021cc6004de"));
        assert!(is_safe_ticket("eyJhbGciOiJSUzI1NiJ9.eyJ4IjoxfQ.c2ln"));
        assert!(!is_safe_ticket(""));
        assert!(!is_safe_ticket("a\"b"));
        assert!(!is_safe_ticket("a,b"));
        assert!(!is_safe_ticket("a b"));
        assert!(!is_safe_ticket("a\r\nX: y"));
    }
}
