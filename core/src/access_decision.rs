//! Decisions for ordinary access tokens (`access_tokens.mode: decide`): the wire of asking the
//! AS whether the requesting party's own token may have a resource and scope, in each dialect,
//! and how an answer is kept in the decision cache.
//!
//! - keycloak: the token endpoint with the user's token as `Authorization: Bearer`,
//!   `grant_type=…uma-ticket`, `audience=<client_id>`, one `permission=<resource>#<scope>` and
//!   `response_mode=decision` (`PermissionGrantType`, `AuthorizationTokenService`). One scope a
//!   call: Keycloak answers `{"result": true}` as soon as ANY listed permission is granted.
//! - uma2 (Gluu/Janssen): a ticket from the permission endpoint, then the UMA grant with the
//!   PEP's own client credentials and `claim_token=<the user's token>` in the one format oxAuth
//!   takes (`ClaimTokenFormatType`: the OpenID ID token), and the RPT that comes back is
//!   introspected as any RPT (`UmaTokenService.requestRpt`).
//!
//! An answer is cached as an `IntrospectionResult` under a key of (token, resource, scope): a
//! grant is an active result that covers the pair, a denial an inactive one that says whether
//! the AS refused the party (403) or the token itself (401).

use serde::Deserialize;
use serde_json::Value;

use crate::challenge::is_safe_ticket;
use crate::config::AsProfile;
use crate::introspection::{IntrospectionResult, Permission};
use crate::resource::ScopesMode;
use crate::wire::{form_body, AsError, AsResponse};

pub const UMA_TICKET_GRANT: &str = "urn:ietf:params:oauth:grant-type:uma-ticket";
/// The only `claim_token_format` oxAuth and Janssen accept.
pub const ID_TOKEN_FORMAT: &str = "http://openid.net/specs/openid-connect-core-1_0.html#IDToken";

/// A claim of a cached refusal that says what was refused; never forwarded (only active results
/// are).
const DENIAL_CLAIM: &str = "uma_pep_denial";
/// Its value for a token verified as the AS's own JWT that is not an RPT: an access token.
const NOT_AN_RPT: &str = "not_an_rpt";

/// Why the AS did not grant a token the resource and scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The AS knows the party and its policies refuse it: 403 with a ticket.
    Party,
    /// The AS does not take the token (invalid, expired, not an ID token): 401 with a ticket,
    /// as for any unusable token.
    Token,
}

impl Denial {
    fn as_str(self) -> &'static str {
        match self {
            Denial::Party => "party",
            Denial::Token => "token",
        }
    }

    /// A denial as the decision cache keeps it.
    pub fn cached(self) -> IntrospectionResult {
        let mut result = IntrospectionResult::inactive();
        result.claims.insert(DENIAL_CLAIM.into(), Value::from(self.as_str()));
        result
    }

    /// The denial a cached inactive result stands for (a plain refusal is the token's).
    pub fn of(result: &IntrospectionResult) -> Denial {
        match result.claims.get(DENIAL_CLAIM).and_then(Value::as_str) {
            Some("party") => Denial::Party,
            _ => Denial::Token,
        }
    }
}

/// What a token is cached as when its signature and issuer are the AS's but it is no RPT for
/// this PEP (`JwtCheck::NotAnRpt`): refused as an RPT, and an access token the AS may decide on.
pub fn verified_access_token() -> IntrospectionResult {
    let mut result = IntrospectionResult::inactive();
    result.claims.insert(DENIAL_CLAIM.into(), Value::from(NOT_AN_RPT));
    result
}

/// Whether the AS may be asked to decide on a token whose own answer (as an RPT) is `result`.
/// Never on a token refused outright here (a forged signature, another issuer: `Denial::Token`).
/// Keycloak checks the Bearer token it is given, so any other token may go to it. Gluu and
/// Janssen take the claim token as an ID token, without checking its signature unless
/// `umaValidateClaimToken` is on, and the party forwarded upstream is read from it: only a
/// token this filter has verified against the AS's JWKS goes there.
pub fn decidable(result: &IntrospectionResult, profile: AsProfile) -> bool {
    match result.claims.get(DENIAL_CLAIM).and_then(Value::as_str) {
        Some(NOT_AN_RPT) => true,
        Some(_) => false,
        None => profile == AsProfile::Keycloak,
    }
}

/// What a decision's cache key holds besides the token: the resource and the scopes decided on,
/// each length-prefixed, and how they combine. Unambiguous: a scope named `a|b` (scopes are free
/// text) and the scopes `a`, `b` with `any` are two keys, so a grant of one is never taken for the
/// other (found in review: the log form `a|b` was the key).
pub fn decision_key_extra(resource_id: &str, mode: ScopesMode, scopes: &[String]) -> String {
    use std::fmt::Write;
    let mode = match mode {
        ScopesMode::All => "all",
        ScopesMode::Any => "any",
    };
    let mut key =
        String::with_capacity(16 + resource_id.len() + scopes.iter().map(|s| s.len() + 4).sum::<usize>());
    let _ = write!(key, "decide\0{}:{resource_id}\0{mode}", resource_id.len());
    for s in scopes {
        let _ = write!(key, "\0{}:{s}", s.len());
    }
    key
}

/// keycloak: the body of one decision call (the user's token goes in `Authorization`).
pub fn keycloak_decision_body(client_id: &str, resource_id: &str, scope: &str) -> Vec<u8> {
    let permission = format!("{resource_id}#{scope}");
    form_body(&[
        ("grant_type", UMA_TICKET_GRANT),
        ("audience", client_id),
        ("permission", &permission),
        ("response_mode", "decision"),
    ])
}

/// keycloak: a decision call's answer. `200 {"result": true}` grants; `403` is the policies'
/// refusal (`access_denied`); `401` is the token's (`invalid_grant` "Invalid bearer token").
/// Anything else (a `400` for an unknown resource or audience: the PEP's configuration) is an AS
/// failure.
pub fn parse_keycloak_decision(response: &AsResponse<'_>) -> Result<Option<Denial>, AsError> {
    match response.status {
        None => Err(AsError::Unreachable),
        Some(200) => {
            // An object with a boolean `result` (serde would read a struct from a list too).
            let parsed: Value = serde_json::from_slice(response.body)
                .map_err(|e| AsError::Garbage(format!("decision response: {e}")))?;
            match parsed.get("result") {
                Some(Value::Bool(true)) => Ok(None),
                // Keycloak never answers `false` with 200, but a false is no grant.
                Some(Value::Bool(false)) => Ok(Some(Denial::Party)),
                _ => Err(AsError::Garbage("decision response: no boolean `result`".into())),
            }
        }
        Some(403) => Ok(Some(Denial::Party)),
        Some(401) => Ok(Some(Denial::Token)),
        Some(status) => Err(AsError::Status { status, error: error_code(response.body) }),
    }
}

/// uma2: the UMA grant for a ticket, with the user's token as the claim token (the client
/// authenticates with `Authorization: Basic`).
pub fn uma_grant_body(ticket: &str, claim_token: &str) -> Vec<u8> {
    form_body(&[
        ("grant_type", UMA_TICKET_GRANT),
        ("ticket", ticket),
        ("claim_token", claim_token),
        ("claim_token_format", ID_TOKEN_FORMAT),
    ])
}

/// What the UMA grant answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantAnswer {
    /// An RPT, still to be introspected.
    Rpt(String),
    /// Refused; `ticket` is the one a `need_info` answer carries (oxAuth changes it).
    Denied { denial: Denial, ticket: Option<String> },
}

/// uma2: the grant's answer. `200 {"access_token"}`; `403 need_info` (a new ticket) or
/// `forbidden_by_policy`: the party's refusal; `400 invalid_claim_token(_format)`: the token's.
/// Any other status (the PEP's credentials, its ticket) is an AS failure.
pub fn parse_uma_grant(response: &AsResponse<'_>) -> Result<GrantAnswer, AsError> {
    #[derive(Deserialize)]
    struct Refusal {
        error: Option<String>,
        ticket: Option<String>,
    }
    match response.status {
        None => Err(AsError::Unreachable),
        Some(200) => {
            let parsed: Value = serde_json::from_slice(response.body)
                .map_err(|e| AsError::Garbage(format!("UMA grant response: {e}")))?;
            match parsed.get("access_token").and_then(Value::as_str) {
                Some(rpt) if !rpt.is_empty() && rpt.bytes().all(|b| b.is_ascii_graphic()) => {
                    Ok(GrantAnswer::Rpt(rpt.to_string()))
                }
                _ => Err(AsError::Garbage("UMA grant response: no usable access_token".into())),
            }
        }
        Some(status @ (400 | 403)) => {
            let refusal = serde_json::from_slice::<Refusal>(response.body).ok();
            let error = refusal.as_ref().and_then(|r| r.error.as_deref()).unwrap_or("-");
            let denial = match (status, error) {
                (403, "need_info" | "forbidden_by_policy" | "request_submitted" | "request_denied") => {
                    Denial::Party
                }
                (400, "invalid_claim_token" | "invalid_claim_token_format") => Denial::Token,
                _ => return Err(AsError::from_status(status, response.body)),
            };
            let ticket = refusal.and_then(|r| r.ticket).filter(|t| is_safe_ticket(t));
            Ok(GrantAnswer::Denied { denial, ticket })
        }
        Some(status) => Err(AsError::from_status(status, response.body)),
    }
}

fn error_code(body: &[u8]) -> String {
    match AsError::from_status(500, body) {
        AsError::Status { error, .. } => error,
        _ => "-".into(),
    }
}

/// keycloak: what a grant is cached as. The AS has just accepted this exact token, so its
/// payload is authentic: the party and `exp` come from it; the permission is the one granted.
pub fn granted_by_keycloak(token: &str, resource_id: &str, scopes: &[String]) -> IntrospectionResult {
    let mut result = IntrospectionResult::inactive();
    result.active = true;
    result.exp = token_exp(token);
    result.permissions.push(Permission {
        resource_id: resource_id.to_string(),
        scopes: scopes.to_vec(),
        scopes_listed: true,
        exp: None,
        nbf: None,
    });
    result.complete_identity_from_jwt(token);
    result
}

/// uma2: what a grant is cached as: the RPT's introspection, naming the party of the claim
/// token (Gluu's RPTs name nobody) and its client (the RPT's `client_id` is the PEP, which asked
/// for it), and kept no longer than the claim token lives.
pub fn granted_by_uma2(mut rpt_result: IntrospectionResult, claim_token: &str) -> IntrospectionResult {
    if let Some(exp) = token_exp(claim_token) {
        rpt_result.exp = Some(rpt_result.exp.map_or(exp, |e| e.min(exp)));
    }
    rpt_result.client_id = None;
    rpt_result.complete_identity_from_jwt(claim_token);
    if rpt_result.client_id.is_none() {
        // An ID token names its client in `aud` (OIDC Core §2) when it has no `azp`.
        rpt_result.client_id = jwt_claim(claim_token, "aud").and_then(|aud| match aud {
            Value::String(s) => Some(s),
            _ => None,
        });
    }
    rpt_result
}

/// The `exp` of a JWT's payload, read without a signature check (only after the AS vouched for
/// the token).
fn token_exp(token: &str) -> Option<i64> {
    jwt_claim(token, "exp")?.as_i64()
}

/// A claim of a JWT's payload, read without a signature check (only of a token the AS vouched
/// for, or this filter verified).
fn jwt_claim(token: &str, name: &str) -> Option<Value> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let mut claims: serde_json::Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    claims.remove(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::introspection::Clock;

    fn response(status: u16, body: &str) -> AsResponse<'_> {
        AsResponse { status: Some(status), body: body.as_bytes() }
    }

    fn jwt(claims: serde_json::Value) -> String {
        use base64::Engine as _;
        let enc = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!("{}.{}.sig", enc(br#"{"alg":"RS256"}"#), enc(claims.to_string().as_bytes()))
    }

    fn form(body: &[u8]) -> Vec<(String, String)> {
        url::form_urlencoded::parse(body).into_owned().collect()
    }

    #[test]
    fn keycloak_asks_for_one_permission_as_a_decision() {
        let body = form(&keycloak_decision_body("pep", "r 1", "read"));
        assert_eq!(
            body,
            [
                ("grant_type".to_string(), UMA_TICKET_GRANT.to_string()),
                ("audience".into(), "pep".into()),
                ("permission".into(), "r 1#read".into()),
                ("response_mode".into(), "decision".into()),
            ]
        );
    }

    #[test]
    fn keycloak_answers() {
        assert_eq!(parse_keycloak_decision(&response(200, r#"{"result":true}"#)), Ok(None));
        assert_eq!(parse_keycloak_decision(&response(200, r#"{"result":false}"#)), Ok(Some(Denial::Party)));
        let denied = r#"{"error":"access_denied","error_description":"not_authorized"}"#;
        assert_eq!(parse_keycloak_decision(&response(403, denied)), Ok(Some(Denial::Party)));
        let invalid = r#"{"error":"invalid_grant","error_description":"Invalid bearer token"}"#;
        assert_eq!(parse_keycloak_decision(&response(401, invalid)), Ok(Some(Denial::Token)));
        let unknown =
            r#"{"error":"invalid_resource","error_description":"Resource with id [x] does not exist."}"#;
        assert_eq!(
            parse_keycloak_decision(&response(400, unknown)),
            Err(AsError::Status { status: 400, error: "invalid_resource".into() })
        );
        assert!(matches!(parse_keycloak_decision(&response(200, "{}")), Err(AsError::Garbage(_))));
        assert!(matches!(parse_keycloak_decision(&response(200, "[true]")), Err(AsError::Garbage(_))));
        let none = AsResponse { status: None, body: b"" };
        assert_eq!(parse_keycloak_decision(&none), Err(AsError::Unreachable));
    }

    #[test]
    fn uma2_grant_sends_the_token_as_an_id_token_claim() {
        let body = form(&uma_grant_body("t-1", "a.b.c"));
        assert!(body.contains(&("claim_token".into(), "a.b.c".into())));
        assert!(body.contains(&("claim_token_format".into(), ID_TOKEN_FORMAT.into())));
        assert!(body.contains(&("ticket".into(), "t-1".into())));
        assert!(body.contains(&("grant_type".into(), UMA_TICKET_GRANT.into())));
    }

    #[test]
    fn uma2_answers() {
        let ok = r#"{"access_token":"1234-5678_90","token_type":"Bearer","pct":"p","upgraded":false}"#;
        assert_eq!(parse_uma_grant(&response(200, ok)), Ok(GrantAnswer::Rpt("1234-5678_90".into())));
        let need = r#"{"error":"need_info","ticket":"new-ticket","required_claims":[]}"#;
        assert_eq!(
            parse_uma_grant(&response(403, need)),
            Ok(GrantAnswer::Denied { denial: Denial::Party, ticket: Some("new-ticket".into()) })
        );
        let policy = r#"{"error":"forbidden_by_policy","error_description":"x"}"#;
        assert_eq!(
            parse_uma_grant(&response(403, policy)),
            Ok(GrantAnswer::Denied { denial: Denial::Party, ticket: None })
        );
        let bad_token = r#"{"error":"invalid_claim_token"}"#;
        assert_eq!(
            parse_uma_grant(&response(400, bad_token)),
            Ok(GrantAnswer::Denied { denial: Denial::Token, ticket: None })
        );
        // A ticket that could break out of the challenge header is not used.
        let unsafe_ticket = r#"{"error":"need_info","ticket":"a\"b"}"#;
        assert_eq!(
            parse_uma_grant(&response(403, unsafe_ticket)),
            Ok(GrantAnswer::Denied { denial: Denial::Party, ticket: None })
        );
        // The PEP's own credentials or ticket: the AS's business, not a denial.
        assert!(matches!(
            parse_uma_grant(&response(401, r#"{"error":"invalid_client"}"#)),
            Err(AsError::CredentialsRefused { status: 401, .. })
        ));
        assert!(matches!(
            parse_uma_grant(&response(400, r#"{"error":"expired_ticket"}"#)),
            Err(AsError::Status { status: 400, .. })
        ));
        assert!(matches!(
            parse_uma_grant(&response(403, r#"{"error":"disabled_client"}"#)),
            Err(AsError::CredentialsRefused { status: 403, .. })
        ));
        assert!(matches!(
            parse_uma_grant(&response(200, r#"{"access_token":""}"#)),
            Err(AsError::Garbage(_))
        ));
        assert!(matches!(parse_uma_grant(&response(200, r#"["rpt"]"#)), Err(AsError::Garbage(_))));
        assert!(matches!(parse_uma_grant(&response(500, "")), Err(AsError::Status { status: 500, .. })));
    }

    #[test]
    fn a_keycloak_grant_covers_its_pair_only_and_names_the_party() {
        let token = jwt(serde_json::json!({"sub": "alice-id", "exp": 2000, "azp": "app", "email": "a@x"}));
        let result = granted_by_keycloak(&token, "r1", &["read".to_string()]);
        let clock = Clock { now: 1000, margin_s: 5, skew_s: 60 };
        assert_eq!(result.covers("r1", "read", clock, AsProfile::Keycloak), Ok(()));
        assert!(result.covers("r1", "write", clock, AsProfile::Keycloak).is_err());
        assert!(result.covers("r2", "read", clock, AsProfile::Keycloak).is_err());
        assert_eq!(result.sub.as_deref(), Some("alice-id"));
        assert_eq!(result.client_id.as_deref(), Some("app"));
        assert_eq!(result.exp, Some(2000));
        let late = Clock { now: 1999, ..clock };
        assert!(result.covers("r1", "read", late, AsProfile::Keycloak).is_err(), "lapses with the token");
    }

    #[test]
    fn a_uma2_grant_lives_no_longer_than_the_claim_token() {
        let rpt = IntrospectionResult::from_json(
            br#"{"active":true,"exp":5000,"client_id":"pep","permissions":[{"resource_id":"r1","resource_scopes":["read"]}],"sub":null}"#,
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let id_token = jwt(serde_json::json!({"sub": "bob", "exp": 3000, "aud": "demo-app"}));
        let result = granted_by_uma2(rpt.clone(), &id_token);
        assert_eq!(result.exp, Some(3000));
        assert_eq!(result.sub.as_deref(), Some("bob"));
        // The party's client, not the PEP that asked for the RPT.
        assert_eq!(result.client_id.as_deref(), Some("demo-app"));
        let with_azp = jwt(serde_json::json!({"sub": "bob", "exp": 3000, "aud": ["x", "y"], "azp": "app-2"}));
        assert_eq!(granted_by_uma2(rpt, &with_azp).client_id.as_deref(), Some("app-2"));
    }

    #[test]
    fn denials_round_trip_through_the_cache_value() {
        for denial in [Denial::Party, Denial::Token] {
            let cached = denial.cached();
            assert!(!cached.active);
            let bytes = serde_json::to_vec(&cached).unwrap_or_default();
            let back: IntrospectionResult =
                serde_json::from_slice(&bytes).unwrap_or_else(|e| unreachable!("{e}"));
            assert_eq!(Denial::of(&back), denial);
        }
        assert_eq!(Denial::of(&IntrospectionResult::inactive()), Denial::Token);
    }

    #[test]
    fn what_may_be_decided_on() {
        for profile in [AsProfile::Keycloak, AsProfile::Uma2] {
            assert!(decidable(&verified_access_token(), profile));
            assert!(!decidable(&Denial::Token.cached(), profile), "a forged token");
            assert!(!decidable(&Denial::Party.cached(), profile));
        }
        // Inactive at introspection, or an RPT without the permission: Keycloak checks the
        // token itself; Gluu would take an unverified claim token.
        assert!(decidable(&IntrospectionResult::inactive(), AsProfile::Keycloak));
        assert!(!decidable(&IntrospectionResult::inactive(), AsProfile::Uma2));
    }
}
