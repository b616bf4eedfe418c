//! `IntrospectionResult`: what the AS says of an RPT, in either dialect, and whether it covers
//! a resource and scope now (UMA 2.0 Federated Authorization §5).
//!
//! Both naming styles of permissions are read: the spec's `resource_id`/`resource_scopes`
//! (Gluu, Janssen, Keycloak with the RPT hint) and Keycloak's `rsid`/`scopes`, at the top
//! level or under a JWT RPT's `authorization`. `scope` is never read as a UMA grant.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::config::AsProfile;
use crate::wire::{form_body, AsError, AsResponse};

/// One permission of an RPT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub resource_id: String,
    pub scopes: Vec<String>,
    /// Whether the AS sent a scope list at all (Keycloak omits an empty one).
    pub scopes_listed: bool,
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
}

/// The parts of an introspection answer the PEP decides and forwards with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntrospectionResult {
    pub active: bool,
    pub exp: Option<i64>,
    pub iat: Option<i64>,
    pub nbf: Option<i64>,
    pub sub: Option<String>,
    pub client_id: Option<String>,
    pub permissions: Vec<Permission>,
    /// Every other claim, for the forwarded JWT.
    pub claims: Map<String, Value>,
}

/// Why an RPT does not allow a request. All of them lead to a fresh ticket and a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insufficiency {
    Inactive,
    Expired,
    NotYetValid,
    NoPermissionForResource,
    ScopeMissing,
}

impl Insufficiency {
    pub fn as_str(self) -> &'static str {
        match self {
            Insufficiency::Inactive => "inactive",
            Insufficiency::Expired => "expired or expiring within the margin",
            Insufficiency::NotYetValid => "not yet valid",
            Insufficiency::NoPermissionForResource => "no permission for the resource",
            Insufficiency::ScopeMissing => "scope not granted",
        }
    }
}

/// The timing rules a decision is made with.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: i64,
    /// An RPT must stay valid at least this long (`rpt_margin_s`).
    pub margin_s: i64,
    /// Tolerated skew for `iat`/`nbf`.
    pub skew_s: i64,
}

/// The latest time taken from the AS (9999-12-31T23:59:59Z); the earliest is 0. Any time read
/// is within these, so adding a margin, a skew or a TTL to it can never overflow.
pub const MAX_NUMERIC_DATE: i64 = 253_402_300_799;

/// How a time that is not a number fails closed: an `exp` is then in the past, an `nbf` or
/// `iat` in the future.
#[derive(Debug, Clone, Copy)]
enum Unreadable {
    Past,
    Future,
}

/// A NumericDate as the AS wrote it (usually an integer, sometimes a float, of any size or
/// sign), within `0..=MAX_NUMERIC_DATE`. `null` is no time at all.
fn numeric_date(v: &Value, unreadable: Unreadable) -> Option<i64> {
    let t = match v {
        Value::Null => return None,
        // `as` saturates, and a float of JSON is never NaN.
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        _ => None,
    };
    Some(t.map_or(
        match unreadable {
            Unreadable::Past => 0,
            Unreadable::Future => MAX_NUMERIC_DATE,
        },
        |t| t.clamp(0, MAX_NUMERIC_DATE),
    ))
}

fn de_exp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v: Option<Value> = Option::deserialize(d)?;
    Ok(v.and_then(|v| numeric_date(&v, Unreadable::Past)))
}

fn de_not_before<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v: Option<Value> = Option::deserialize(d)?;
    Ok(v.and_then(|v| numeric_date(&v, Unreadable::Future)))
}

#[derive(Deserialize)]
struct RawPermission {
    #[serde(default)]
    resource_id: Option<String>,
    #[serde(default)]
    rsid: Option<String>,
    #[serde(default)]
    resource_scopes: Option<Vec<String>>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_exp")]
    exp: Option<i64>,
    #[serde(default, deserialize_with = "de_not_before")]
    nbf: Option<i64>,
}

impl RawPermission {
    fn into_permission(self) -> Option<Permission> {
        let resource_id = self.resource_id.or(self.rsid)?;
        let listed = self.resource_scopes.is_some() || self.scopes.is_some();
        let mut scopes = self.resource_scopes.unwrap_or_default();
        for s in self.scopes.unwrap_or_default() {
            if !scopes.contains(&s) {
                scopes.push(s);
            }
        }
        Some(Permission { resource_id, scopes, scopes_listed: listed, exp: self.exp, nbf: self.nbf })
    }
}

fn take_permissions(value: Option<Value>) -> Result<Vec<Permission>, AsError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let raw: Vec<RawPermission> =
        serde_json::from_value(value).map_err(|e| AsError::Garbage(format!("permissions: {e}")))?;
    Ok(raw.into_iter().filter_map(RawPermission::into_permission).collect())
}

fn take_time(claims: &mut Map<String, Value>, key: &str, unreadable: Unreadable) -> Option<i64> {
    claims.remove(key).and_then(|v| numeric_date(&v, unreadable))
}

fn take_string(claims: &mut Map<String, Value>, key: &str) -> Option<String> {
    match claims.remove(key) {
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            claims.insert(key.to_string(), other);
            None
        }
        None => None,
    }
}

impl IntrospectionResult {
    /// An inactive answer with nothing in it.
    pub fn inactive() -> Self {
        Self {
            active: false,
            exp: None,
            iat: None,
            nbf: None,
            sub: None,
            client_id: None,
            permissions: Vec::new(),
            claims: Map::new(),
        }
    }

    /// Reads an introspection answer (or the claims of a JWT RPT) from JSON.
    pub fn from_json(body: &[u8]) -> Result<Self, AsError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| AsError::Garbage(format!("introspection: {e}")))?;
        let Value::Object(mut claims) = value else {
            return Err(AsError::Garbage("introspection: not a JSON object".into()));
        };
        let active = match claims.remove("active") {
            Some(Value::Bool(b)) => b,
            // A JWT RPT's claims carry no `active`; the caller has checked the signature.
            None => true,
            Some(_) => return Err(AsError::Garbage("introspection: `active` is not a boolean".into())),
        };
        // oxAuth serialises every unset field as `null` (`sub`, `nbf`, `iss`, `jti`, and all of
        // them, `permissions` too, in an inactive answer): a null is no claim at all, and must
        // never reach the forwarded JWT as one.
        claims.retain(|_, v| !v.is_null());
        let mut permissions = take_permissions(claims.remove("permissions"))?;
        if let Some(Value::Object(mut authz)) = claims.remove("authorization") {
            permissions.extend(take_permissions(authz.remove("permissions"))?);
        }
        let exp = take_time(&mut claims, "exp", Unreadable::Past);
        let iat = take_time(&mut claims, "iat", Unreadable::Future);
        let nbf = take_time(&mut claims, "nbf", Unreadable::Future);
        // The requesting party: the RPT's own `sub`, else the one of the claims the party
        // pushed (`pct_claims.sub`): Gluu/Janssen RPTs are stored without a user, so their
        // introspection has `sub: null` (oxAuth `UmaRptService.createRPTAndPersist`).
        let sub = take_string(&mut claims, "sub")
            .or_else(|| pushed_claim(&claims, "sub").and_then(Value::as_str).map(str::to_string));
        let client_id = take_string(&mut claims, "client_id")
            .or_else(|| claims.get("azp").and_then(Value::as_str).map(str::to_string));
        Ok(Self { active, exp, iat, nbf, sub, client_id, permissions, claims })
    }

    /// Completes the party of an active answer from the token, when the token is a JWT.
    ///
    /// Keycloak's RPT introspection names no party (no `sub`, `azp`, `preferred_username`:
    /// `RPTIntrospectionProvider`), while the RPT, a JWT, does. The AS has just vouched for
    /// this exact token, so its payload is authentic; only identity claims are taken from it,
    /// never validity or permissions, which stay the AS's answer.
    pub fn complete_identity_from_jwt(&mut self, token: &str) {
        use base64::Engine as _;
        if !self.active {
            return;
        }
        let mut parts = token.split('.');
        let (Some(_), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else { return };
        let Ok(Value::Object(mut payload)) = serde_json::from_slice::<Value>(&bytes) else { return };
        payload.retain(|_, v| !v.is_null());
        for decided_by_the_as in ["active", "exp", "iat", "nbf", "permissions", "authorization"] {
            payload.remove(decided_by_the_as);
        }
        if self.sub.is_none() {
            self.sub = take_string(&mut payload, "sub");
        }
        if self.client_id.is_none() {
            self.client_id = take_string(&mut payload, "client_id")
                .or_else(|| payload.get("azp").and_then(Value::as_str).map(str::to_string));
        }
        payload.remove("sub");
        payload.remove("client_id");
        for (name, value) in payload {
            self.claims.entry(name).or_insert(value);
        }
    }

    /// Parses an introspection endpoint answer: `200` and a JSON object, else an AS error.
    pub fn parse(response: &AsResponse<'_>) -> Result<Self, AsError> {
        match response.status {
            None => Err(AsError::Unreachable),
            Some(200) => {
                let result = Self::from_json(response.body)?;
                if !response_has_active(response.body) {
                    // An introspection answer without `active` is not an answer.
                    return Err(AsError::Garbage("introspection: no `active`".into()));
                }
                Ok(result)
            }
            Some(s) => Err(AsError::from_status(s, response.body)),
        }
    }

    /// Whether this RPT allows `scope` on `resource_id` at `clock.now`.
    pub fn covers(
        &self,
        resource_id: &str,
        scope: &str,
        clock: Clock,
        profile: AsProfile,
    ) -> Result<(), Insufficiency> {
        if !self.active {
            return Err(Insufficiency::Inactive);
        }
        self.check_times(clock)?;
        let mut for_resource = self.permissions.iter().filter(|p| p.resource_id == resource_id).peekable();
        if for_resource.peek().is_none() {
            return Err(Insufficiency::NoPermissionForResource);
        }
        let granted =
            for_resource.any(|p| permission_is_current(p, clock) && permission_grants(p, scope, profile));
        if granted {
            Ok(())
        } else {
            Err(Insufficiency::ScopeMissing)
        }
    }

    /// Token-level validity: `exp` at least the margin away, `nbf`/`iat` not in the future.
    pub fn check_times(&self, clock: Clock) -> Result<(), Insufficiency> {
        if let Some(exp) = self.exp {
            if exp <= clock.now.saturating_add(clock.margin_s) {
                return Err(Insufficiency::Expired);
            }
        }
        for t in [self.nbf, self.iat].into_iter().flatten() {
            if t > clock.now.saturating_add(clock.skew_s) {
                return Err(Insufficiency::NotYetValid);
            }
        }
        Ok(())
    }
}

/// A claim the requesting party pushed (`pct_claims.<name>`), as one value. oxAuth's
/// introspection serialises each PCT claim as a list of strings (`RptIntrospectionResponse`,
/// filled by `JwtClaimSet.toMap`: `{"sub": ["alice"]}`), its JWT RPTs as the raw value: a list
/// of exactly one value is that value.
pub fn pushed_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    let value = claims.get("pct_claims")?.get(name)?;
    match value {
        Value::Array(items) if items.len() == 1 => items.first(),
        Value::Null => None,
        other => Some(other),
    }
}

fn response_has_active(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Active {
        active: Option<bool>,
    }
    serde_json::from_slice::<Active>(body).ok().and_then(|a| a.active).is_some()
}

/// A permission's own `exp`/`nbf` count too (the stricter wins, federated authz §5.1.1).
fn permission_is_current(p: &Permission, clock: Clock) -> bool {
    p.exp.is_none_or(|exp| exp > clock.now.saturating_add(clock.margin_s))
        && p.nbf.is_none_or(|nbf| nbf <= clock.now.saturating_add(clock.skew_s))
}

/// An empty scope list follows the profile: spec = no scopes, Keycloak = every scope.
fn permission_grants(p: &Permission, scope: &str, profile: AsProfile) -> bool {
    if p.scopes.iter().any(|s| s == scope) {
        return true;
    }
    profile == AsProfile::Keycloak && p.scopes.is_empty()
}

/// The introspection request body for a dialect.
pub fn introspection_body(profile: AsProfile, token: &str) -> Vec<u8> {
    match profile {
        AsProfile::Uma2 => form_body(&[("token", token)]),
        AsProfile::Keycloak => form_body(&[("token", token), ("token_type_hint", "requesting_party_token")]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn clock(margin: i64) -> Clock {
        Clock { now: NOW, margin_s: margin, skew_s: 0 }
    }

    fn parse(json: &str) -> IntrospectionResult {
        IntrospectionResult::parse(&AsResponse { status: Some(200), body: json.as_bytes() }).unwrap()
    }

    fn gluu(perms: &str, times: &str) -> IntrospectionResult {
        parse(&format!(
            r#"{{"active":true,{times}"permissions":{perms},"client_id":"app","sub":"alice","aud":"app","pct_claims":{{"x":1}}}}"#
        ))
    }

    #[test]
    fn gluu_shape() {
        let r = gluu(
            r#"[{"resource_id":"r1","resource_scopes":["protected_get"],"exp":1900000000}]"#,
            &format!(r#""exp":{},"iat":{},"#, NOW + 100, NOW - 10),
        );
        assert_eq!(r.sub.as_deref(), Some("alice"));
        assert_eq!(r.client_id.as_deref(), Some("app"));
        assert_eq!(r.permissions.len(), 1);
        assert_eq!(r.claims.get("pct_claims").unwrap()["x"], 1);
        assert!(r.covers("r1", "protected_get", clock(5), AsProfile::Uma2).is_ok());
        assert_eq!(
            r.covers("r1", "protected_post", clock(5), AsProfile::Uma2),
            Err(Insufficiency::ScopeMissing)
        );
        assert_eq!(
            r.covers("r2", "protected_get", clock(5), AsProfile::Uma2),
            Err(Insufficiency::NoPermissionForResource)
        );
    }

    #[test]
    fn gluu_inactive_answer_with_every_field_null() {
        // oxAuth's inactive answer (GluuFederation/oxAuth#82).
        let r = parse(
            r#"{"active":false,"exp":null,"iat":null,"nbf":null,"permissions":null,"client_id":null,
            "sub":null,"aud":null,"iss":null,"jti":null,"pct_claims":null}"#,
        );
        assert!(!r.active);
        assert!(r.permissions.is_empty() && r.claims.is_empty() && r.sub.is_none());
        assert_eq!(r.covers("r1", "s", clock(5), AsProfile::Uma2), Err(Insufficiency::Inactive));
        // `active` itself must be a boolean, never taken as absent.
        let null_active =
            IntrospectionResult::parse(&AsResponse { status: Some(200), body: br#"{"active":null}"# });
        assert!(null_active.is_err());
    }

    #[test]
    fn gluu_party_is_in_pct_claims_and_nulls_are_no_claims() {
        // oxAuth's answer as it is serialised: `sub` and the unset fields are null.
        let r = parse(
            r#"{"active":true,"exp":1900000000,"iat":1800000000,"nbf":null,"iss":null,"jti":null,
            "sub":null,"client_id":"demo-app","aud":"demo-app",
            "permissions":[{"resource_id":"r1","resource_scopes":["s"],"exp":1900000000,"params":null}],
            "pct_claims":{"sub":["alice-0001"],"preferred_username":["alice"]}}"#,
        );
        assert_eq!(r.sub.as_deref(), Some("alice-0001"));
        assert_eq!(pushed_claim(&r.claims, "preferred_username"), Some(&Value::from("alice")));
        // A Gluu JWT RPT's pct_claims hold the raw values.
        let raw = parse(r#"{"active":true,"pct_claims":{"sub":"carol","groups":["a","b"]}}"#);
        assert_eq!(raw.sub.as_deref(), Some("carol"));
        assert_eq!(pushed_claim(&raw.claims, "groups"), Some(&serde_json::json!(["a", "b"])));
        assert_eq!(r.client_id.as_deref(), Some("demo-app"));
        assert!(
            !r.claims.contains_key("iss") && !r.claims.contains_key("sub") && !r.claims.contains_key("jti")
        );
        assert_eq!(r.nbf, None);
        // The RPT's own `sub` wins over the pushed claims.
        let own = parse(r#"{"active":true,"sub":"bob","pct_claims":{"sub":"alice"}}"#);
        assert_eq!(own.sub.as_deref(), Some("bob"));
        // No party at all: a client-only RPT.
        let none = parse(r#"{"active":true,"sub":null,"client_id":"robot","pct_claims":{}}"#);
        assert_eq!(none.sub, None);
    }

    #[test]
    fn keycloak_rpt_introspection_is_completed_from_the_token_it_vouched_for() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = serde_json::json!({"sub": "alice-0001", "azp": "demo-app", "preferred_username": "alice",
            "exp": 1, "authorization": {"permissions": [{"rsid": "evil", "scopes": ["x"]}]}, "typ": "Bearer"});
        let token = format!("{}.{}.sig", b64.encode(r#"{"alg":"RS256"}"#), b64.encode(payload.to_string()));
        // RPTIntrospectionProvider's answer: no sub, azp, username.
        let mut r = parse(
            r#"{"active":true,"exp":1900000000,"iat":1800000000,"jti":"j","typ":"Bearer","aud":["pep"],
            "permissions":[{"rsid":"r1","rsname":"R","scopes":["s"],"resource_id":"r1","resource_scopes":["s"]}]}"#,
        );
        assert_eq!(r.sub, None);
        r.complete_identity_from_jwt(&token);
        assert_eq!(r.sub.as_deref(), Some("alice-0001"));
        assert_eq!(r.client_id.as_deref(), Some("demo-app"));
        assert_eq!(r.claims["preferred_username"], "alice");
        // Validity and permissions stay the AS's.
        assert_eq!(r.exp, Some(1_900_000_000));
        assert_eq!(r.permissions.len(), 1);
        assert_eq!(r.permissions[0].resource_id, "r1");
        // The AS's own answer is never overwritten, and an inactive answer is left alone.
        let mut own = parse(r#"{"active":true,"sub":"bob"}"#);
        own.complete_identity_from_jwt(&token);
        assert_eq!(own.sub.as_deref(), Some("bob"));
        let mut inactive = parse(r#"{"active":false}"#);
        inactive.complete_identity_from_jwt(&token);
        assert_eq!(inactive.sub, None);
        // Not a JWT, or a payload that is not JSON: nothing changes.
        let mut opaque = parse(r#"{"active":true}"#);
        opaque.complete_identity_from_jwt("c0ffee-12345678");
        opaque.complete_identity_from_jwt("a.%%%.c");
        assert_eq!(opaque.sub, None);
    }

    #[test]
    fn keycloak_shape_with_both_naming_styles() {
        let r = parse(&format!(
            r#"{{"active":true,"exp":{},"iat":{},"azp":"app","sub":"bob","permissions":[
                {{"rsid":"r1","rsname":"R1","scopes":["protected_get"],"resource_id":"r1","resource_scopes":["protected_get"]}},
                {{"rsid":"r2","rsname":"R2"}}]}}"#,
            NOW + 100,
            NOW
        ));
        assert_eq!(r.client_id.as_deref(), Some("app"));
        assert_eq!(r.permissions[0].scopes, vec!["protected_get".to_string()]);
        assert!(r.covers("r1", "protected_get", clock(5), AsProfile::Keycloak).is_ok());
        // Keycloak: an omitted scope list grants every scope; the spec: none.
        assert!(r.covers("r2", "protected_delete", clock(5), AsProfile::Keycloak).is_ok());
        assert_eq!(
            r.covers("r2", "protected_delete", clock(5), AsProfile::Uma2),
            Err(Insufficiency::ScopeMissing)
        );
    }

    #[test]
    fn jwt_rpt_claims_under_authorization() {
        let r = IntrospectionResult::from_json(
            br#"{"exp":1900000000,"sub":"u","authorization":{"permissions":[{"rsid":"r9","scopes":["s"]}]}}"#,
        )
        .unwrap();
        assert!(r.active);
        assert!(r.covers("r9", "s", clock(0), AsProfile::Keycloak).is_ok());
    }

    #[test]
    fn inactive_and_garbage() {
        let r = parse(r#"{"active":false}"#);
        assert_eq!(r.covers("r1", "s", clock(0), AsProfile::Uma2), Err(Insufficiency::Inactive));
        for bad in [
            "",
            "[]",
            "null",
            r#"{"active":"yes"}"#,
            r#"{"exp":1}"#,
            "<html>",
            r#"{"active":true,"permissions":{}}"#,
        ] {
            let got = IntrospectionResult::parse(&AsResponse { status: Some(200), body: bad.as_bytes() });
            assert!(matches!(got, Err(AsError::Garbage(_))), "{bad:?} gave {got:?}");
        }
        let got = IntrospectionResult::parse(&AsResponse { status: Some(503), body: b"" });
        assert!(matches!(got, Err(AsError::Status { status: 503, .. })));
    }

    #[test]
    fn scope_is_never_a_uma_grant() {
        let r = parse(r#"{"active":true,"scope":"protected_get","exp":1900000000}"#);
        assert_eq!(
            r.covers("r1", "protected_get", clock(0), AsProfile::Uma2),
            Err(Insufficiency::NoPermissionForResource)
        );
    }

    /// The seed's rpt_test.py time cases, margin 0.
    #[test]
    fn seed_time_cases() {
        let perm = r#"[{"resource_id":"r","resource_scopes":["Auth"]}]"#;
        let ok = |times: String| gluu(perm, &times).covers("r", "Auth", clock(0), AsProfile::Uma2);
        for exp in [NOW + 1_000_000, NOW + 100, NOW + 5] {
            assert!(ok(format!(r#""exp":{exp},"#)).is_ok(), "exp {exp}");
        }
        for exp in [NOW - 1_000_000, NOW - 100, NOW - 5, NOW] {
            assert_eq!(ok(format!(r#""exp":{exp},"#)), Err(Insufficiency::Expired), "exp {exp}");
        }
        for nbf in [NOW - 5, NOW - 1000] {
            assert!(ok(format!(r#""exp":{},"nbf":{nbf},"#, NOW + 100)).is_ok());
        }
        for nbf in [NOW + 5, NOW + 1000] {
            assert_eq!(ok(format!(r#""exp":{},"nbf":{nbf},"#, NOW + 100)), Err(Insufficiency::NotYetValid));
        }
        for iat in [NOW - 5, NOW - 1000] {
            assert!(ok(format!(r#""exp":{},"iat":{iat},"#, NOW + 100)).is_ok());
        }
        for iat in [NOW + 5, NOW + 1000] {
            assert_eq!(ok(format!(r#""exp":{},"iat":{iat},"#, NOW + 100)), Err(Insufficiency::NotYetValid));
        }
    }

    #[test]
    fn margin_refuses_nearly_expired() {
        let r = gluu(r#"[{"resource_id":"r","resource_scopes":["s"]}]"#, &format!(r#""exp":{},"#, NOW + 4));
        assert_eq!(r.covers("r", "s", clock(5), AsProfile::Uma2), Err(Insufficiency::Expired));
        assert!(r.covers("r", "s", clock(3), AsProfile::Uma2).is_ok());
    }

    #[test]
    fn times_of_any_size_sign_or_type_are_bounded_and_fail_closed() {
        let perm = r#"[{"resource_id":"r","resource_scopes":["s"]}]"#;
        // Far future, as an integer beyond i64, a float, or 1e308: valid, exp at the bound.
        for exp in ["18446744073709551615", "9223372036854775807", "2300000000000000", "1e308", "1.9e9"] {
            let r = gluu(perm, &format!(r#""exp":{exp},"#));
            assert!(r.exp.is_some_and(|e| (1_900_000_000..=MAX_NUMERIC_DATE).contains(&e)), "exp {exp}");
            assert!(r.covers("r", "s", clock(i64::MAX), AsProfile::Uma2).is_err(), "exp {exp}, huge margin");
            assert!(r.covers("r", "s", clock(5), AsProfile::Uma2).is_ok(), "exp {exp}");
        }
        // In the past, negative, or not a number: expired.
        for exp in ["-1", "-9223372036854775808", "-1e308", "0", "\"2000000000\"", "true", "{}", "[1]"] {
            let r = gluu(perm, &format!(r#""exp":{exp},"#));
            assert_eq!(r.exp, Some(0), "exp {exp}");
            assert_eq!(
                r.covers("r", "s", clock(0), AsProfile::Uma2),
                Err(Insufficiency::Expired),
                "exp {exp}"
            );
        }
        // nbf/iat far in the future, or not numbers: not yet valid; far in the past: fine.
        for key in ["nbf", "iat"] {
            for t in ["18446744073709551615", "1e308", "\"0\"", "false"] {
                let r = gluu(perm, &format!(r#""exp":{},"{key}":{t},"#, NOW + 100));
                assert_eq!(
                    r.covers("r", "s", clock(0), AsProfile::Uma2),
                    Err(Insufficiency::NotYetValid),
                    "{key} {t}"
                );
            }
            for t in ["-9223372036854775808", "-1e308", "0.5"] {
                let r = gluu(perm, &format!(r#""exp":{},"{key}":{t},"#, NOW + 100));
                assert!(r.covers("r", "s", clock(0), AsProfile::Uma2).is_ok(), "{key} {t}");
            }
        }
        // A permission's own times: the same rules.
        for (perm_time, ok) in [
            (r#""exp":1e308"#, true),
            (r#""exp":18446744073709551615"#, true),
            (r#""exp":-1e308"#, false),
            (r#""exp":"soon""#, false),
            (r#""nbf":-1e308"#, true),
            (r#""nbf":18446744073709551615"#, false),
            (r#""nbf":[]"#, false),
        ] {
            let perms = format!(r#"[{{"resource_id":"r","resource_scopes":["s"],{perm_time}}}]"#);
            let r = gluu(&perms, &format!(r#""exp":{},"#, NOW + 100));
            assert_eq!(r.covers("r", "s", clock(0), AsProfile::Uma2).is_ok(), ok, "{perm_time}");
            assert!(r.permissions.iter().all(|p| p
                .exp
                .into_iter()
                .chain(p.nbf)
                .all(|t| (0..=MAX_NUMERIC_DATE).contains(&t))));
        }
        // A huge clock margin or skew saturates rather than wrapping.
        let r = gluu(perm, &format!(r#""exp":{},"nbf":{},"#, NOW + 100, NOW + 10));
        let skewed = Clock { now: NOW, margin_s: 0, skew_s: i64::MAX };
        assert!(r.covers("r", "s", skewed, AsProfile::Uma2).is_ok());
    }

    #[test]
    fn permission_level_times_count() {
        let past = gluu(
            &format!(r#"[{{"resource_id":"r","resource_scopes":["s"],"exp":{}}}]"#, NOW - 1),
            &format!(r#""exp":{},"#, NOW + 100),
        );
        assert_eq!(past.covers("r", "s", clock(0), AsProfile::Uma2), Err(Insufficiency::ScopeMissing));
        let future = gluu(
            &format!(r#"[{{"resource_id":"r","resource_scopes":["s"],"nbf":{}}}]"#, NOW + 60),
            &format!(r#""exp":{},"#, NOW + 100),
        );
        assert_eq!(future.covers("r", "s", clock(0), AsProfile::Uma2), Err(Insufficiency::ScopeMissing));
    }

    /// The seed's rpt_test.py valid/invalid permission sets.
    #[test]
    fn seed_permission_cases() {
        let exp = format!(r#""exp":{},"#, NOW + 100);
        let covers_all = |perms: &str, reqs: &[(&str, &[&str])]| {
            let r = gluu(perms, &exp);
            reqs.iter().all(|(res, scopes)| {
                scopes.iter().all(|s| r.covers(res, s, clock(0), AsProfile::Uma2).is_ok())
            })
        };
        assert!(covers_all(
            r#"[{"resource_id":"/simple/test","resource_scopes":["Auth"]}]"#,
            &[("/simple/test", &["Auth"])]
        ));
        assert!(covers_all(
            r#"[{"resource_id":"/simple/test/b","resource_scopes":["Auth","Multiple","Scopes"]}]"#,
            &[("/simple/test/b", &["Auth", "Multiple", "Scopes"])]
        ));
        for perms in [
            r#"[]"#,
            r#"[{"resource_id":"/simple/test","resource_scopes":["AAAAA"]}]"#,
            r#"[{"resource_id":"/simple/invalid","resource_scopes":["Auth"]}]"#,
            r#"[{"resource_id":"/simple/test/b","resource_scopes":[]}]"#,
            r#"[{"resource_id":"/simple/test/b","resource_scopes":["Auth"]}]"#,
        ] {
            assert!(
                !covers_all(perms, &[("/simple/test/b", &["Auth", "Multiple", "Scopes", "Invalid"])]),
                "{perms}"
            );
        }
    }

    #[test]
    fn request_bodies_per_dialect() {
        assert_eq!(introspection_body(AsProfile::Uma2, "a.b+c"), b"token=a.b%2Bc".to_vec());
        assert_eq!(
            introspection_body(AsProfile::Keycloak, "t"),
            b"token=t&token_type_hint=requesting_party_token".to_vec()
        );
    }
}
