//! An AS's refusal as an operator reads it: the status, the OAuth `error` and its
//! `error_description` (both servers put the reason there), and, for the refusals a
//! misconfigured Keycloak or Gluu/Janssen is known to give, what to change at the AS.

use std::fmt;

use serde::Deserialize;
use uma_pep_core::config::AsProfile;

/// A non-success answer of the AS. Display never holds a token: only the status and the
/// `error`/`error_description` strings, cut to printable ASCII.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub error: Option<String>,
    pub description: Option<String>,
}

/// Printable ASCII only, at most 300 characters: a hostile or broken AS cannot garble the
/// terminal or the log.
fn clean(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii() && !c.is_ascii_control()).take(300).collect()
}

impl Refusal {
    pub fn parse(status: u16, body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Body {
            #[serde(default)]
            error: Option<serde_json::Value>,
            #[serde(default)]
            error_description: Option<serde_json::Value>,
        }
        let text = |v: Option<serde_json::Value>| match v {
            Some(serde_json::Value::String(s)) => Some(clean(&s)).filter(|s| !s.is_empty()),
            _ => None,
        };
        match serde_json::from_slice::<Body>(body) {
            Ok(b) => Self { status, error: text(b.error), description: text(b.error_description) },
            Err(_) => Self { status, error: None, description: None },
        }
    }

    fn is(&self, status: u16, error: &str) -> bool {
        self.status == status && self.error.as_deref() == Some(error)
    }

    fn says(&self, words: &str) -> bool {
        self.description.as_deref().is_some_and(|d| d.contains(words))
    }

    /// What to change at the AS, for the refusals whose cause is known from the servers'
    /// sources (cited per behaviour in devas/README.md).
    pub fn hint(&self, profile: AsProfile) -> Option<&'static str> {
        match profile {
            AsProfile::Uma2 if self.is(406, "invalid_client_scope") => Some(
                "the PAT has no uma_protection scope: allow the scope uma_protection on the client \
                 (Gluu/Janssen admin UI: the client's Scopes); a dynamically registered client only gets it \
                 when the uma_protection scope has \"Allow for dynamic registration\" on",
            ),
            AsProfile::Uma2 if self.is(403, "access_denied") => Some(
                "Janssen ships with UMA switched off: enable the UMA feature flag of jans-auth",
            ),
            AsProfile::Uma2 if self.is(400, "invalid_grant") => {
                Some("the client must allow the client_credentials grant type")
            }
            AsProfile::Keycloak if self.says("not registered as a resource server") => Some(
                "turn Authorization on for the client (Keycloak admin console: Clients → the client → \
                 Settings → Capability config → Authorization), or register it with `pepctl register-client`",
            ),
            AsProfile::Keycloak if self.says("Requires uma_protection scope") => Some(
                "the client's service account lacks the client role uma_protection: turning Authorization on \
                 for the client grants it (or assign it under Clients → the client → Service accounts roles)",
            ),
            AsProfile::Keycloak if self.says("Remote management is disabled") => Some(
                "turn on Remote resource management (Clients → the client → Authorization → Settings)",
            ),
            AsProfile::Keycloak if self.is(401, "unauthorized_client") => Some(
                "the client needs Service accounts and Client authentication on (Clients → the client → Settings)",
            ),
            _ if self.is(401, "invalid_client") => {
                Some("client_id/client_secret of the client file are not known to this AS")
            }
            _ => None,
        }
    }

    /// The refusal followed by its hint, if any.
    pub fn explained(&self, profile: AsProfile) -> String {
        match self.hint(profile) {
            Some(h) => format!("{self}; {h}"),
            None => self.to_string(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if let Some(e) = &self.error {
            write!(f, " {e}")?;
        }
        if let Some(d) = &self.description {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_error_and_description_cleaned() {
        let r = Refusal::parse(
            400,
            br#"{"error":"invalid_scope","error_description":"Invalid scopes: x\u001b[31m"}"#,
        );
        assert_eq!(r.to_string(), "HTTP 400 invalid_scope: Invalid scopes: x[31m");
        assert_eq!(Refusal::parse(500, b"<html>").to_string(), "HTTP 500");
        assert_eq!(Refusal::parse(404, b"").to_string(), "HTTP 404");
    }

    #[test]
    fn known_misconfigurations_get_their_fix() {
        let gluu = Refusal::parse(406, br#"{"error":"invalid_client_scope"}"#);
        assert!(gluu.explained(AsProfile::Uma2).contains("Allow for dynamic registration"));
        assert!(gluu.hint(AsProfile::Keycloak).is_none());
        let kc = Refusal::parse(
            403,
            br#"{"error":"invalid_clientId","error_description":"Client application [pep] is not registered as a resource server."}"#,
        );
        assert!(kc.explained(AsProfile::Keycloak).contains("Authorization"));
        assert!(Refusal::parse(409, b"{}").hint(AsProfile::Keycloak).is_none());
    }
}
