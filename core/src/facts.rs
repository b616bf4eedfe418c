//! The facts of one request that Envoy's access log can print: the decision, its log code, the
//! resource and the subject. The filter puts each in the request's filter state (proxy-wasm
//! `set_property`), where Envoy stores it under `wasm.<name>`:
//! `%FILTER_STATE(wasm.uma_pep.decision:PLAIN)%`. Only what the decision already knows is
//! recorded; never a token.

use std::borrow::Cow;

use crate::decision::{LocalReply, LogCode};
use crate::introspection::IntrospectionResult;

/// Filter-state names (Envoy prefixes them with `wasm.`).
pub const DECISION: &str = "uma_pep.decision";
pub const CODE: &str = "uma_pep.code";
pub const RESOURCE: &str = "uma_pep.resource";
pub const SUBJECT: &str = "uma_pep.subject";

/// Longest subject recorded; a longer one is cut.
const MAX_SUBJECT: usize = 256;

/// What the PEP did with a request, as the access log prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forwarded (FULL) or answered 200 (PARTIAL): the RPT covers the resource and scope.
    Allowed,
    /// A permission ticket was issued: 401 with the UMA challenge.
    Ticket,
    /// No resource matches and `unmatched` is `deny`: 403 without an AS call.
    Denied,
    /// No resource matches: passed through.
    Unmatched,
    /// An open resource (scope `open`) matches: passed through with no token check. Logged
    /// with the pass-through code, 2105, like an unmatched path.
    Open,
    /// The request itself was refused: 400 (path, headers) or 405 (method).
    Refused,
    /// The AS failed (or the forwarded token could not be signed): 403 with `Warning: 199`, or 500.
    AsError,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Ticket => "ticket",
            Decision::Denied => "denied",
            Decision::Unmatched => "unmatched",
            Decision::Open => "open",
            Decision::Refused => "refused",
            Decision::AsError => "as_error",
        }
    }

    pub fn code(self) -> LogCode {
        match self {
            Decision::Allowed => LogCode::Allowed,
            Decision::Ticket => LogCode::TicketIssued,
            Decision::Unmatched | Decision::Open => LogCode::Unmatched,
            Decision::AsError => LogCode::AsError,
            Decision::Denied | Decision::Refused => LogCode::Refused,
        }
    }

    /// The log code as text, without formatting it on the request path.
    pub fn code_str(self) -> &'static str {
        match self.code() {
            LogCode::Allowed => "2103",
            LogCode::TicketIssued => "2104",
            LogCode::Unmatched => "2105",
            LogCode::AsError => "2106",
            LogCode::Refused => "2107",
        }
    }

    /// The decision a local reply carries out.
    pub fn of_reply(reply: &LocalReply) -> Self {
        match reply.code {
            LogCode::Allowed => Decision::Allowed,
            LogCode::TicketIssued => Decision::Ticket,
            LogCode::Unmatched => Decision::Unmatched,
            LogCode::AsError => Decision::AsError,
            LogCode::Refused if reply.status == 403 => Decision::Denied,
            LogCode::Refused => Decision::Refused,
        }
    }
}

/// The requesting party of an allowed request: the `sub` the forwarded identity carries (the
/// RPT's, else the pushed claims', else the client's), printable and bounded.
pub fn subject(result: &IntrospectionResult) -> Option<Cow<'_, str>> {
    let sub = result.sub.as_deref().or(result.client_id.as_deref()).filter(|s| !s.is_empty())?;
    Some(printable(sub, MAX_SUBJECT))
}

/// A value as a log may hold it: no control characters (a text access log line cannot be
/// split or forged), at most `max` characters. Borrowed when nothing needs changing.
pub fn printable(value: &str, max: usize) -> Cow<'_, str> {
    if value.len() <= max && !value.chars().any(char::is_control) {
        return Cow::Borrowed(value);
    }
    Cow::Owned(value.chars().take(max).map(|c| if c.is_control() { '?' } else { c }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(json: &str) -> IntrospectionResult {
        IntrospectionResult::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn replies_map_to_decisions_and_codes() {
        let cases = [
            (LocalReply::authorized(LogCode::Allowed, ""), Decision::Allowed, "2103"),
            (LocalReply::challenge("UMA".into(), "no token"), Decision::Ticket, "2104"),
            (LocalReply::authorized(LogCode::Unmatched, ""), Decision::Unmatched, "2105"),
            (LocalReply::as_unreachable("down"), Decision::AsError, "2106"),
            (LocalReply::signing_failed("bad key"), Decision::AsError, "2106"),
            (LocalReply::bad_request("bad path"), Decision::Refused, "2107"),
            (LocalReply::method_not_allowed("TRACE"), Decision::Refused, "2107"),
            (LocalReply::unmatched_denied(), Decision::Denied, "2107"),
        ];
        for (reply, decision, code) in cases {
            assert_eq!(Decision::of_reply(&reply), decision);
            assert_eq!(decision.code_str(), code);
            assert_eq!(decision.code_str(), decision.code().code().to_string());
        }
        assert_eq!(Decision::AsError.as_str(), "as_error");
        assert_eq!((Decision::Open.as_str(), Decision::Open.code_str()), ("open", "2105"));
    }

    #[test]
    fn the_subject_is_the_forwarded_sub_and_printable() {
        let r = result(r#"{"active":true,"sub":"alice-0001","client_id":"app"}"#);
        assert_eq!(subject(&r).as_deref(), Some("alice-0001"));
        assert!(matches!(subject(&r), Some(Cow::Borrowed(_))));
        let gluu = result(r#"{"active":true,"sub":null,"client_id":"app","pct_claims":{"sub":["bob"]}}"#);
        assert_eq!(subject(&gluu).as_deref(), Some("bob"));
        let robot = result(r#"{"active":true,"client_id":"robot"}"#);
        assert_eq!(subject(&robot).as_deref(), Some("robot"));
        assert_eq!(subject(&result(r#"{"active":true}"#)), None);
        let forged = result(r#"{"active":true,"sub":"eve\n[info] 2103 admin"}"#);
        assert_eq!(subject(&forged).as_deref(), Some("eve?[info] 2103 admin"));
        let long = "x".repeat(1000);
        let r = result(&format!(r#"{{"active":true,"sub":"{long}"}}"#));
        assert_eq!(subject(&r).map(|s| s.len()), Some(256));
    }
}
