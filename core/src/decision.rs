//! The request-level decision: from method, path and `Authorization` to a `Plan` (what must
//! happen next), and the local replies the PEP answers with. The glue executes plans; every
//! rule about which answer a client gets lives here.

use crate::config::{CorsPreflight, PepConfig, UnmatchedPolicy};
use crate::credential::Credential;
use crate::matcher::ResourceMatcher;
use crate::path::{normalize_path, split_query};
use crate::resource::{head_method_scope, required_scope, Enforcement, Resource, ScopesMode};

/// The seed's log codes, one per decision line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogCode {
    /// 2103: allowed, forwarded (or 200 in PARTIAL mode).
    Allowed = 2103,
    /// 2104: a ticket was issued and a 401 challenge answered.
    TicketIssued = 2104,
    /// 2105: passed through with no token check: no resource matched, or an open one did.
    Unmatched = 2105,
    /// 2106: the AS (or the upstream) failed; denied.
    AsError = 2106,
    /// 2107: the request itself was refused (bad path, duplicate credentials, no scope, deny-unmatched).
    Refused = 2107,
}

impl LogCode {
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// How the request reached the PEP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The PEP sits in front of the upstream and forwards allowed requests.
    Full,
    /// The PEP answers an authorization check (`authorize_path`) about another request.
    Partial,
}

/// An answer the PEP gives itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub code: LogCode,
    /// For the log line; never holds a token or a secret.
    pub reason: String,
}

/// The value of the `Warning` header when no decision could be obtained (UMA grant §3.2.2).
pub const AS_UNREACHABLE_WARNING: &str = "199 - \"UMA Authorization Server Unreachable\"";

impl LocalReply {
    fn json_error(status: u32, error: &str, code: LogCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: format!("{{\"error\":\"{error}\"}}"),
            code,
            reason: reason.into(),
        }
    }

    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::json_error(400, "invalid_request", LogCode::Refused, reason)
    }

    pub fn method_not_allowed(method: &str) -> Self {
        Self::json_error(405, "method_not_allowed", LogCode::Refused, format!("no scope for method {method}"))
    }

    pub fn unmatched_denied() -> Self {
        Self::json_error(403, "forbidden", LogCode::Refused, "no resource matches and unmatched=deny")
    }

    /// 403 + `Warning: 199`: the AS gave no usable answer; nothing is forwarded.
    pub fn as_unreachable(reason: impl Into<String>) -> Self {
        let mut r = Self::json_error(403, "uma_authorization_server_unreachable", LogCode::AsError, reason);
        r.headers.push(("warning".into(), AS_UNREACHABLE_WARNING.into()));
        r
    }

    /// 503 + `Retry-After`: this PEP has as many introspections in flight as it allows; nothing
    /// is forwarded, and the client may try again shortly.
    pub fn overloaded() -> Self {
        let mut r = Self::json_error(
            503,
            "temporarily_unavailable",
            LogCode::AsError,
            "too many introspections in flight (max_introspections_in_flight)",
        );
        r.headers.push(("retry-after".into(), "1".into()));
        r
    }

    /// The forwarded token could not be minted: deny rather than forward without it.
    pub fn signing_failed(reason: impl Into<String>) -> Self {
        Self::json_error(500, "internal_error", LogCode::AsError, reason)
    }

    /// 401 with the UMA challenge.
    pub fn challenge(www_authenticate: String, reason: impl Into<String>) -> Self {
        Self {
            status: 401,
            headers: vec![("www-authenticate".into(), www_authenticate)],
            body: String::new(),
            code: LogCode::TicketIssued,
            reason: reason.into(),
        }
    }

    /// PARTIAL mode's answer for an allowed (or unmatched and allowed) request.
    pub fn authorized(code: LogCode, reason: impl Into<String>) -> Self {
        Self { status: 200, headers: Vec::new(), body: String::new(), code, reason: reason.into() }
    }
}

/// What to do with a request, before any AS call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan<'a> {
    /// Answer now.
    Reply(LocalReply),
    /// Unmatched and allowed: forward (FULL) with `path` if it needs rewriting.
    PassThrough { rewrite: Option<String> },
    /// A protected resource; `token` is the RPT to check, `None` asks for a ticket at once.
    Protected { target: Target, token: Option<&'a str> },
    /// No resource of the table matches `path` (prefix stripped): ask the AS which does
    /// (`resource_lookup`), then `plan_for_resource`.
    LookUp { path: String, rewrite: Option<String>, token: Option<&'a str> },
}

/// The protected resource and scopes a request needs, and how it is forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub resource_id: String,
    /// The scopes the method needs on the resource (at least one).
    pub scopes: Vec<String>,
    /// Whether the RPT must hold all of them or one.
    pub scopes_mode: ScopesMode,
    pub enforcement: Enforcement,
    /// The normalised path (prefix kept, query appended) when it differs from what came in.
    pub rewrite: Option<String>,
}

impl Target {
    /// One protected scope, as `method_scopes` gives it.
    pub fn one_scope(resource_id: &str, scope: &str, rewrite: Option<String>) -> Self {
        Self {
            resource_id: resource_id.to_string(),
            scopes: vec![scope.to_string()],
            scopes_mode: ScopesMode::All,
            enforcement: Enforcement::Enforcing,
            rewrite,
        }
    }

    /// The scopes for a log line: `a`, `a+b` (all), `a|b` (any). One scope (the common case,
    /// on every decided request) is borrowed, not allocated.
    pub fn scopes_text(&self) -> std::borrow::Cow<'_, str> {
        match self.scopes.as_slice() {
            [one] => std::borrow::Cow::Borrowed(one.as_str()),
            many => std::borrow::Cow::Owned(many.join(match self.scopes_mode {
                ScopesMode::All => "+",
                ScopesMode::Any => "|",
            })),
        }
    }
}

/// The request as the plan needs it.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// `:path` (FULL) or `X-Original-URI` (PARTIAL), query included.
    pub raw_path: &'a str,
    pub authorization: &'a [&'a str],
    /// Refuse a path that normalises to another one (PARTIAL mode: the PEP cannot rewrite what
    /// the proxy in front forwards, so what it decides on must be exactly that).
    pub canonical_only: bool,
    /// `Origin` and `Access-Control-Request-Method` are there: with `OPTIONS`, a CORS preflight.
    pub cors_preflight: bool,
}

/// Strips `prefix` on a segment boundary; `None` when the path is not under it.
fn strip_prefix<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    if prefix.is_empty() {
        return Some(path);
    }
    match path.strip_prefix(prefix) {
        Some("") => Some("/"),
        Some(rest) if rest.starts_with('/') => Some(rest),
        _ => None,
    }
}

/// A plan and, for a pass-through, why: the access log tells an open resource from a path no
/// resource matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned<'a> {
    pub plan: Plan<'a>,
    /// The id of the resource a `Plan::PassThrough` is for (open, disabled, or a CORS
    /// preflight on it); `None` when no resource matched (or the plan is not a pass-through).
    pub open_resource: Option<String>,
    /// Why a matched resource passes through, for the log.
    pub pass_reason: &'static str,
}

/// Decides what a request needs, against the resource table in force (the configured one, or
/// the last one polled from pepctl).
pub fn plan<'a>(config: &PepConfig, resources: &ResourceMatcher, facts: RequestFacts<'a>) -> Plan<'a> {
    plan_detailed(config, resources, facts).plan
}

/// `plan`, telling why a request passes through: an open resource (scope `open`: proxied with
/// no token check, whatever the method and `unmatched`) or no resource at all.
pub fn plan_detailed<'a>(
    config: &PepConfig,
    resources: &ResourceMatcher,
    facts: RequestFacts<'a>,
) -> Planned<'a> {
    let just = |plan| Planned { plan, open_resource: None, pass_reason: "no resource matches" };
    let normalized = match normalize_path(facts.raw_path) {
        Ok(p) => p,
        Err(e) => return just(Plan::Reply(LocalReply::bad_request(format!("path refused: {e}")))),
    };
    let (raw_path_only, query) = split_query(facts.raw_path);
    let rewrite = (normalized != raw_path_only).then(|| format!("{normalized}{query}"));
    if facts.canonical_only && rewrite.is_some() {
        return just(Plan::Reply(LocalReply::bad_request(
            "path of an authorization check is not in canonical form",
        )));
    }

    let credential = Credential::from_headers(facts.authorization);
    if credential == Credential::Duplicated {
        return just(Plan::Reply(LocalReply::bad_request("more than one Authorization header")));
    }

    let token = match credential {
        Credential::Bearer(t) => Some(t),
        _ => None,
    };
    let stripped = strip_prefix(&normalized, &config.path_prefix);
    let matched = Matched { method: facts.method, cors_preflight: facts.cors_preflight, token, rewrite };
    match stripped.and_then(|p| resources.find(p)) {
        Some(resource) => plan_for_resource(config, Some(resource), matched),
        // Not in the table: the AS may know it (`resource_lookup`).
        None if config.resource_lookup.is_some() && stripped.is_some() => {
            let path = stripped.unwrap_or_default().to_string();
            just(Plan::LookUp { path, rewrite: matched.rewrite, token: matched.token })
        }
        None => plan_for_resource(config, None, matched),
    }
}

/// What the plan of a request on a resource (or on none) needs of it.
#[derive(Debug, Clone)]
pub struct Matched<'a> {
    pub method: &'a str,
    pub cors_preflight: bool,
    pub token: Option<&'a str>,
    pub rewrite: Option<String>,
}

/// The plan for a request once its resource is known: `None`, no resource (`unmatched`).
pub fn plan_for_resource<'a>(
    config: &PepConfig,
    resource: Option<&Resource>,
    matched: Matched<'a>,
) -> Planned<'a> {
    let just = |plan| Planned { plan, open_resource: None, pass_reason: "no resource matches" };
    let Matched { method, cors_preflight, token, rewrite } = matched;
    let Some(resource) = resource else {
        return just(match config.unmatched {
            UnmatchedPolicy::Allow => Plan::PassThrough { rewrite },
            UnmatchedPolicy::Deny => Plan::Reply(LocalReply::unmatched_denied()),
        });
    };
    let passes = |pass_reason| Planned {
        plan: Plan::PassThrough { rewrite: rewrite.clone() },
        open_resource: Some(resource.id.clone()),
        pass_reason,
    };
    if resource.is_open() {
        return passes("open resource");
    }
    if resource.enforcement == Enforcement::Disabled {
        return passes("enforcement disabled");
    }
    // Browsers send no credentials on a preflight (Fetch standard, CORS-preflight request).
    if cors_preflight && method == "OPTIONS" && config.cors_preflight == CorsPreflight::Pass {
        return passes("CORS preflight");
    }

    let Some(scopes) = method_scopes(config, resource, method) else {
        return just(Plan::Reply(LocalReply::method_not_allowed(method)));
    };
    let target = Target {
        resource_id: resource.id.clone(),
        scopes,
        scopes_mode: resource.scopes_mode,
        enforcement: resource.enforcement,
        rewrite,
    };
    just(Plan::Protected { target, token })
}

/// The scopes `method` needs on `resource`: from its `methods` (HEAD, when not listed, as GET:
/// `head_method_scope`), else from `method_scopes` and the resource's registered scopes. `None`:
/// the method is not offered (405).
fn method_scopes(config: &PepConfig, resource: &Resource, method: &str) -> Option<Vec<String>> {
    if let Some(methods) = &resource.methods {
        let listed = methods.get(method).or_else(|| (method == "HEAD").then(|| methods.get("GET")).flatten());
        return listed.filter(|s| !s.is_empty()).cloned();
    }
    let method_scope = config.scope_for(method)?;
    // HEAD is decided on GET's scope where the resource allows GET (see `head_method_scope`).
    let method_scope = if method == "HEAD" {
        head_method_scope(&resource.scopes, config.scope_for("GET"), method_scope)
    } else {
        method_scope
    };
    required_scope(&resource.scopes, method_scope).map(|s| vec![s.to_string()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> PepConfig {
        let json = format!(
            r#"{{"issuer":"http://as","as_cluster":"as","client_id":"p","client_secret":"s",
            "resources":[{{"id":"r-a","uri":"/a"}},{{"id":"r-ab","uri":"/a/b"}},{{"id":"r-ro","uri":"/ro","scopes":["protected_get"]}},
                {{"id":"r-pub","uri":"/pub","scopes":["public_access"]}},
                {{"id":"r-open","uri":"/open","scopes":["open"]}}]{extra}}}"#
        );
        PepConfig::from_json(json.as_bytes()).unwrap()
    }

    fn facts<'a>(method: &'a str, path: &'a str, authz: &'a [&'a str]) -> RequestFacts<'a> {
        RequestFacts {
            method,
            raw_path: path,
            authorization: authz,
            canonical_only: false,
            cors_preflight: false,
        }
    }

    fn rules_config() -> PepConfig {
        let json = r#"{"issuer":"http://as","as_cluster":"as","client_id":"p","client_secret":"s",
            "method_scopes":{"GET":"protected_get","PROPFIND":"dav_read"},
            "resources":[
              {"id":"orders","uri":"/orders/{id}","methods":{"GET":["read"],"PUT":["write","audit"],"DELETE":["admin"],"MKCOL":["dav"]},"scopes_mode":"any"},
              {"id":"off","uri":"/off","enforcement":"disabled"},
              {"id":"soft","uri":"/soft","enforcement":"permissive"},
              {"id":"dav","uri":"/dav"}]}"#;
        PepConfig::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn per_resource_methods_and_scopes_mode() {
        let c = rules_config();
        let (t, _) = protected(plan(&c, &c.resources, facts("PUT", "/orders/7", &[])));
        assert_eq!(
            (t.resource_id.as_str(), t.scopes.clone()),
            ("orders", vec!["write".into(), "audit".into()])
        );
        assert_eq!(t.scopes_mode, ScopesMode::Any);
        assert_eq!(t.scopes_text(), "write|audit");
        let (t, _) = protected(plan(&c, &c.resources, facts("HEAD", "/orders/7", &[])));
        assert_eq!(t.scopes, vec!["read".to_string()], "HEAD as GET when not listed");
        let (t, _) = protected(plan(&c, &c.resources, facts("MKCOL", "/orders/7", &[])));
        assert_eq!(t.scopes, vec!["dav".to_string()]);
        // Not listed: 405, even where `method_scopes` has the method.
        for m in ["POST", "PROPFIND", "PATCH"] {
            let Plan::Reply(r) = plan(&c, &c.resources, facts(m, "/orders/7", &[])) else { panic!("{m}") };
            assert_eq!(r.status, 405, "{m}");
        }
        // Without `methods`, `method_scopes` as before, WebDAV's names too.
        let (t, _) = protected(plan(&c, &c.resources, facts("PROPFIND", "/dav/x", &[])));
        assert_eq!((t.scopes.clone(), t.enforcement), (vec!["dav_read".to_string()], Enforcement::Enforcing));
        let (t, _) = protected(plan(&c, &c.resources, facts("GET", "/soft", &[])));
        assert_eq!(t.enforcement, Enforcement::Permissive);
    }

    #[test]
    fn disabled_resources_and_cors_preflights_pass() {
        let c = rules_config();
        let planned = plan_detailed(&c, &c.resources, facts("DELETE", "/off/x", &[]));
        assert_eq!(planned.plan, Plan::PassThrough { rewrite: None });
        assert_eq!(
            (planned.open_resource.as_deref(), planned.pass_reason),
            (Some("off"), "enforcement disabled")
        );
        let preflight = RequestFacts { cors_preflight: true, ..facts("OPTIONS", "/orders/7", &[]) };
        let planned = plan_detailed(&c, &c.resources, preflight);
        assert_eq!(
            (planned.plan, planned.pass_reason),
            (Plan::PassThrough { rewrite: None }, "CORS preflight")
        );
        // An OPTIONS without the preflight's headers is an ordinary request (not listed: 405).
        let Plan::Reply(r) = plan(&c, &c.resources, facts("OPTIONS", "/orders/7", &[])) else { panic!() };
        assert_eq!(r.status, 405);
        // `cors_preflight: enforce`: decided like any request.
        let mut strict = rules_config();
        strict.cors_preflight = CorsPreflight::Enforce;
        let Plan::Reply(r) = plan(&strict, &strict.resources, preflight) else { panic!() };
        assert_eq!(r.status, 405);
    }

    fn protected(p: Plan<'_>) -> (Target, Option<&str>) {
        match p {
            Plan::Protected { target, token } => (target, token),
            other => panic!("expected protected, got {other:?}"),
        }
    }

    fn status(p: Plan<'_>) -> u32 {
        match p {
            Plan::Reply(r) => r.status,
            other => panic!("expected reply, got {other:?}"),
        }
    }

    #[test]
    fn no_token_asks_for_a_ticket_for_the_longest_resource() {
        let c = config("");
        let (t, tok) = protected(plan(&c, &c.resources, facts("GET", "/a/b/c?x=1", &[])));
        assert_eq!(t.resource_id, "r-ab");
        assert_eq!(t.scopes[0], "protected_get");
        assert_eq!(t.rewrite, None);
        assert_eq!(tok, None);
        let (t, _) = protected(plan(&c, &c.resources, facts("DELETE", "/a/bc", &[])));
        assert_eq!((t.resource_id.as_str(), t.scopes[0].as_str()), ("r-a", "protected_delete"));
    }

    #[test]
    fn bearer_token_is_checked_and_unusable_ones_get_tickets() {
        let c = config("");
        let (_, tok) = protected(plan(&c, &c.resources, facts("GET", "/a", &["Bearer abc"])));
        assert_eq!(tok, Some("abc"));
        for bad in ["Basic eA==", "Bearer", "Bearer a b"] {
            let authz = [bad];
            let (_, tok) = protected(plan(&c, &c.resources, facts("GET", "/a", &authz)));
            assert_eq!(tok, None, "{bad}");
        }
    }

    #[test]
    fn duplicate_authorization_is_400() {
        let c = config("");
        assert_eq!(status(plan(&c, &c.resources, facts("GET", "/a", &["Bearer x", "Bearer y"]))), 400);
    }

    #[test]
    fn unsafe_paths_are_400_and_normalised_ones_rewritten() {
        let c = config("");
        assert_eq!(status(plan(&c, &c.resources, facts("GET", "/a/%2fb", &[]))), 400);
        assert_eq!(status(plan(&c, &c.resources, facts("GET", "/../a", &[]))), 400);
        let (t, _) = protected(plan(&c, &c.resources, facts("GET", "/x/../a//b/%63?q=1", &[])));
        assert_eq!(t.resource_id, "r-ab");
        assert_eq!(t.rewrite.as_deref(), Some("/a/b/c?q=1"));
    }

    #[test]
    fn unmatched_allow_and_deny() {
        let c = config("");
        assert_eq!(plan(&c, &c.resources, facts("GET", "/zzz", &[])), Plan::PassThrough { rewrite: None });
        assert_eq!(
            plan(&c, &c.resources, facts("GET", "/zzz//y", &[])),
            Plan::PassThrough { rewrite: Some("/zzz/y".into()) }
        );
        let deny = config(r#","unmatched":"deny""#);
        assert_eq!(status(plan(&deny, &deny.resources, facts("GET", "/zzz", &[]))), 403);
    }

    #[test]
    fn checks_refuse_non_canonical_paths() {
        let c = config("");
        let check = |p| RequestFacts {
            method: "GET",
            raw_path: p,
            authorization: &[],
            canonical_only: true,
            cors_preflight: false,
        };
        assert_eq!(status(plan(&c, &c.resources, check("/a/%2e%2e/zzz"))), 400);
        assert_eq!(status(plan(&c, &c.resources, check("//a"))), 400);
        assert!(matches!(plan(&c, &c.resources, check("/a/b?x=1")), Plan::Protected { .. }));
    }

    #[test]
    fn methods_without_scope_are_405() {
        let c = config("");
        assert_eq!(status(plan(&c, &c.resources, facts("OPTIONS", "/a", &[]))), 405);
        assert_eq!(status(plan(&c, &c.resources, facts("POST", "/ro", &[]))), 405);
        assert!(matches!(plan(&c, &c.resources, facts("GET", "/ro", &[])), Plan::Protected { .. }));
        // Unmatched paths are not about scopes.
        assert!(matches!(plan(&c, &c.resources, facts("OPTIONS", "/zzz", &[])), Plan::PassThrough { .. }));
    }

    #[test]
    fn head_is_decided_on_the_get_scope_where_get_is_allowed() {
        let json = r#"{"issuer":"http://as","as_cluster":"as","client_id":"p","client_secret":"s",
            "resources":[{"id":"r-all","uri":"/all","scopes":["protected_get","protected_head","protected_post"]},
            {"id":"r-any","uri":"/any"},{"id":"r-head","uri":"/head","scopes":["protected_head"]},
            {"id":"r-post","uri":"/post","scopes":["protected_post"]},{"id":"r-auth","uri":"/auth","scopes":["Authenticated"]}]}"#;
        let c = PepConfig::from_json(json.as_bytes()).unwrap();
        let scope_of = |method: &str, path: &str| {
            let (t, _) = protected(plan(&c, &c.resources, facts(method, path, &["Bearer rpt"])));
            t.scopes[0].clone()
        };
        // A resource listing both, and one listing none: GET's scope, ticket included.
        assert_eq!(scope_of("HEAD", "/all/x"), "protected_get");
        assert_eq!(scope_of("HEAD", "/any"), "protected_get");
        assert_eq!(scope_of("GET", "/all"), "protected_get");
        // HEAD allowed, GET not: HEAD's own scope; neither: 405 as before.
        assert_eq!(scope_of("HEAD", "/head"), "protected_head");
        assert_eq!(status(plan(&c, &c.resources, facts("GET", "/head", &[]))), 405);
        assert_eq!(status(plan(&c, &c.resources, facts("HEAD", "/post", &[]))), 405);
        // Stand-ins are unchanged.
        assert_eq!(scope_of("HEAD", "/auth"), "Authenticated");
        // A method table without HEAD still refuses it; one mapping GET elsewhere is followed.
        let table = |extra: &str| {
            let json = format!(
                r#"{{"issuer":"http://as","as_cluster":"as","client_id":"p","client_secret":"s",
                "resources":[{{"id":"r","uri":"/r"}}],"method_scopes":{extra}}}"#
            );
            PepConfig::from_json(json.as_bytes()).unwrap()
        };
        let no_head = table(r#"{"GET":"read"}"#);
        assert_eq!(status(plan(&no_head, &no_head.resources, facts("HEAD", "/r", &[]))), 405);
        let renamed = table(r#"{"GET":"read","HEAD":"peek"}"#);
        let (t, _) = protected(plan(&renamed, &renamed.resources, facts("HEAD", "/r", &[])));
        assert_eq!(t.scopes[0], "read");
    }

    #[test]
    fn seed_open_scopes_stand_in_for_method_scopes() {
        let c = config("");
        for method in ["GET", "POST", "DELETE"] {
            let (t, _) = protected(plan(&c, &c.resources, facts(method, "/pub/x", &[])));
            assert_eq!((t.resource_id.as_str(), t.scopes[0].as_str()), ("r-pub", "public_access"));
        }
        assert_eq!(status(plan(&c, &c.resources, facts("OPTIONS", "/pub/x", &[]))), 405);
        let scopes = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            required_scope(&scopes(&["public_access", "Authenticated"]), "protected_get"),
            Some("Authenticated")
        );
        assert_eq!(required_scope(&scopes(&["x"]), "protected_get"), None);
    }

    #[test]
    fn open_resources_pass_through_unchecked_with_the_rewrite() {
        let c = config(r#","unmatched":"deny""#);
        for method in ["GET", "POST", "OPTIONS", "PROPFIND"] {
            for authz in [&[][..], &["Bearer abc"][..], &["Basic eA=="][..]] {
                let p = plan_detailed(&c, &c.resources, facts(method, "/open/x", authz));
                assert_eq!(p.plan, Plan::PassThrough { rewrite: None }, "{method} {authz:?}");
                assert_eq!(p.open_resource.as_deref(), Some("r-open"));
            }
        }
        let p = plan_detailed(&c, &c.resources, facts("GET", "/x/../open//y?q=1", &[]));
        assert_eq!(p.plan, Plan::PassThrough { rewrite: Some("/open/y?q=1".into()) });
        // Still refused: what is refused before any resource is looked at.
        assert_eq!(status(plan(&c, &c.resources, facts("GET", "/open/%2f", &[]))), 400);
        assert_eq!(status(plan(&c, &c.resources, facts("GET", "/open", &["Bearer x", "Bearer y"]))), 400);
        // Unmatched and protected plans say no open resource.
        let c = config("");
        assert_eq!(plan_detailed(&c, &c.resources, facts("GET", "/zzz", &[])).open_resource, None);
        assert_eq!(plan_detailed(&c, &c.resources, facts("GET", "/a", &[])).open_resource, None);
        // A table polled from pepctl is read the same way.
        let polled = crate::config::validate_resources(vec![crate::config::Resource {
            id: "r-o".into(),
            uri: "/o".into(),
            scopes: vec!["open".into()],
            ..Default::default()
        }])
        .unwrap();
        assert_eq!(plan(&c, &polled, facts("DELETE", "/o", &[])), Plan::PassThrough { rewrite: None });
    }

    #[test]
    fn path_prefix_is_stripped_before_matching() {
        let c = config(r#","path_prefix":"/pep""#);
        let (t, _) = protected(plan(&c, &c.resources, facts("GET", "/pep/a/b", &[])));
        assert_eq!(t.resource_id, "r-ab");
        assert!(matches!(plan(&c, &c.resources, facts("GET", "/a/b", &[])), Plan::PassThrough { .. }));
        assert!(matches!(plan(&c, &c.resources, facts("GET", "/pepa/b", &[])), Plan::PassThrough { .. }));
    }

    #[test]
    fn a_swapped_table_is_the_one_matched() {
        let c = config("");
        let polled = crate::config::validate_resources(vec![crate::config::Resource {
            id: "r-new".into(),
            uri: "/fresh".into(),
            scopes: vec![],
            ..Default::default()
        }])
        .unwrap();
        let (t, _) = protected(plan(&c, &polled, facts("GET", "/fresh/x", &[])));
        assert_eq!(t.resource_id, "r-new");
        assert!(matches!(plan(&c, &polled, facts("GET", "/a", &[])), Plan::PassThrough { .. }));
    }

    #[test]
    fn replies_carry_their_codes() {
        let r = LocalReply::as_unreachable("x");
        assert_eq!(r.status, 403);
        assert!(r
            .headers
            .contains(&("warning".into(), "199 - \"UMA Authorization Server Unreachable\"".into())));
        assert_eq!(r.code.code(), 2106);
        assert_eq!(LocalReply::challenge("UMA x".into(), "y").code.code(), 2104);
    }
}
