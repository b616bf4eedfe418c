//! pepctl's Resource API request bodies (`control-plane/src/api/`): `POST /resources`
//! (`NewResource`), `PUT` and `PATCH /resources/{id}` (`ResourceUpdate`), read as the handlers'
//! `ApiJson` reads them and checked by the service's own steps (`ResourceService::check_*_body`:
//! what `create`/`update` run before the repository and the AS; no runtime, no database).
//!
//! Input: one request body. It is sent as a POST (by an operator and by user `alice`), and as a
//! PUT and a PATCH of three resources of alice's (a plain path, a pattern with every rule, an
//! open one; by alice and by an operator) and of one of bob's (by alice). Properties:
//! - a refused body gets an API error, never a panic: 400 exactly when it is not JSON (as
//!   `ApiJson` decides it), else 403 or 422;
//! - an accepted body gives a resource whose uri is canonical: `UriPattern::parse` spells it
//!   back unchanged, a plain one is its own `canonical_path` and `registrable_uri`, and pepctl's
//!   `check_rules` takes it back as it is; whose methods are upper-case RFC 9110 tokens, each
//!   with scopes that are registered with the resource; whose scopes are trimmed, non-empty and
//!   unique; whose name and owner are trimmed and non-empty;
//! - its filter entry (`rules::filter_resource`) passes the filter's `validate_resources`
//!   unchanged, and written as a `/filter-config` table it reads back (`resource_table`) as the
//!   same entry, which the table's matcher finds at the resource's own uri (normalised);
//! - what pepctl sends back is what it stores: the representation (`icon_uri`,
//!   `_reverse_match_url`, `scopes`, `resource_scopes`, the rules, the owner), sent back with
//!   PUT or PATCH by the owner, changes nothing, nor does `{}` as a PATCH; the stored resource
//!   written as a create body (as an operator, `uuid` its owner) creates the very same resource;
//! - the caller decides only what the rules say: what a user may create an operator may too,
//!   the same resource owned by whom `uuid` says; an operator's refusal is the user's refusal;
//!   a change a user may make the operator makes identically; a user never moves a resource
//!   (`icon_uri`, `exact`) and never changes one of another owner's; nothing becomes open or
//!   stops being open; a PUT names the resource and its scopes;
//! - a change changes only what the body names: without `icon_uri` and `exact` the resource
//!   stays where it is; a PATCH keeps the name, description, rules, owner (and, without
//!   `methods`, the scopes) it does not give; a PUT resets the description and rules it does not
//!   give.
#![no_main]

use std::collections::BTreeMap;

use axum::response::IntoResponse;
use libfuzzer_sys::fuzz_target;
use pepctl::api::{ApiError, ResourceService};
use pepctl::identity::Caller;
use pepctl::pdp::PdpClient;
use pepctl::repository::{Source, StoredResource};
use pepctl::resource_set::ResourceSetClient;
use pepctl::rules::{check_rules, filter_resource, is_plain};
use serde_json::{json, Value};
use uma_pep_core::config::{is_method_name, validate_resources};
use uma_pep_core::path::normalize_path;
use uma_pep_core::resource::{
    canonical_path, complete_scopes, is_open, registrable_uri, Enforcement, ScopesMode,
};
use uma_pep_core::resource_table::{FilterTable, ResourceTable};
use uma_pep_core::uri_pattern::UriPattern;

/// The service's checks; `R`/`P` are only named (no AS, no PDP is called).
type Api<'a> = ResourceService<'a, ResourceSetClient, PdpClient>;

const NOW: i64 = 1_750_000_000;

fn caller(sub: &str, is_operator: bool) -> Caller {
    Caller { sub: sub.into(), is_operator }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The resources a PUT or PATCH changes, all alice's: a plain path, a pattern with every rule
/// set, an open one.
fn current_resources() -> Vec<StoredResource> {
    let plain = StoredResource {
        id: "0b7e6c2a-4f0c-4d5e-9c1e-2f3a4b5c6d7e".into(),
        name: "Eric's workspace".into(),
        uri: "/alice/docs".into(),
        owner: "alice".into(),
        scopes: complete_scopes(&strings(&["Authenticated"])),
        description: Some("ADES".into()),
        source: Source::Api,
        created_at: NOW,
        updated_at: NOW,
        ..StoredResource::default()
    };
    let methods: BTreeMap<String, Vec<String>> =
        [("GET", vec!["read"]), ("DELETE", vec!["admin"]), ("PROPFIND", vec!["read", "dav"])]
            .into_iter()
            .map(|(m, s)| (m.to_string(), strings(&s)))
            .collect();
    let pattern = StoredResource {
        id: "as-orders".into(),
        name: "Order".into(),
        uri: "/alice/orders/{id}".into(),
        exact: true,
        scopes: strings(&["admin", "read", "dav"]),
        methods: Some(methods),
        scopes_mode: ScopesMode::Any,
        enforcement: Enforcement::Permissive,
        ..plain.clone()
    };
    let open = StoredResource {
        id: "5f1d3c9e-8a7b-4c6d-8e5f-1a2b3c4d5e6f".into(),
        name: "Public".into(),
        uri: "/alice/public/**".into(),
        scopes: strings(&["open"]),
        description: None,
        ..plain.clone()
    };
    vec![plain, pattern, open]
}

/// The HTTP status the API answers `e` with.
fn status(e: ApiError) -> (u16, String) {
    let response = e.into_response();
    let message = response.headers().get("error").map(|v| v.to_str().unwrap_or("").to_string());
    (response.status().as_u16(), message.unwrap_or_default())
}

/// A refusal is a client error: 400 when the body is not JSON, else 403 or 422.
fn refused(e: ApiError, json: bool, what: &str) -> (u16, String) {
    let (s, message) = status(e);
    if json {
        assert!(s == 403 || s == 422, "{what}: status {s} ({message}) for a JSON body");
    } else {
        assert_eq!(s, 400, "{what}: status {s} ({message}) for a body that is not JSON");
    }
    (s, message)
}

// Bugs this target found, fixed in pepctl, each kept as `regressions/api_bodies/<name>`:
// `methods-not-upper-cased` (method names were stored as sent, `get`), `method-scopes-not-trimmed`
// (`" read"` was enforced while `"read"` was registered), `uuid-not-trimmed` (a create's owner
// kept its blanks). The properties below hold them fixed.

fn trimmed_non_empty(s: &str) -> bool {
    !s.is_empty() && s.trim() == s
}

/// What every resource pepctl would store satisfies (its id given).
fn check_resource(r: &StoredResource, what: &str) {
    assert!(trimmed_non_empty(&r.name), "{what}: name {:?}", r.name);
    assert!(trimmed_non_empty(&r.owner), "{what}: owner {:?} (regression uuid-not-trimmed)", r.owner);

    // The uri: canonical, as the filter reads it.
    let (spelled, pattern) =
        UriPattern::parse(&r.uri, r.exact).unwrap_or_else(|e| panic!("{what}: uri {:?} taken: {e}", r.uri));
    assert_eq!(spelled, r.uri, "{what}: uri not spelled canonically");
    assert!(!(r.exact && pattern.rest), "{what}: exact with a rest");
    if is_plain(&r.uri) {
        assert_eq!(canonical_path(&r.uri).as_deref(), Ok(r.uri.as_str()), "{what}: plain uri not canonical");
        assert_eq!(
            registrable_uri(&r.uri).as_deref(),
            Ok(r.uri.as_str()),
            "{what}: plain uri not registrable"
        );
        let n = normalize_path(&r.uri).unwrap_or_else(|e| panic!("{what}: uri {:?}: {e}", r.uri));
        let trimmed = n.trim_end_matches('/');
        assert_eq!(r.uri, if trimmed.is_empty() { "/" } else { trimmed }, "{what}: uri not normalised");
    }
    let (again, _) = check_rules(&r.uri, r.exact, r.methods.as_ref())
        .unwrap_or_else(|e| panic!("{what}: stored rules refused by check_rules: {e:?}"));
    assert_eq!(again, r.uri, "{what}: check_rules respells a stored uri");

    // The scopes registered at the AS.
    for (i, s) in r.scopes.iter().enumerate() {
        assert!(trimmed_non_empty(s), "{what}: scope {s:?}");
        assert!(!r.scopes[..i].contains(s), "{what}: scope {s:?} twice");
    }
    if let Some(methods) = &r.methods {
        for (m, scopes) in methods {
            assert!(is_method_name(m), "{what}: method {m:?} is no RFC 9110 token");
            assert!(
                *m == m.to_ascii_uppercase(),
                "{what}: method {m:?} not upper-case (regression methods-not-upper-cased)"
            );
            assert!(!scopes.is_empty(), "{what}: method {m} without scopes");
            for s in scopes {
                // A ticket asks the AS for exactly these: each must be registered.
                assert!(
                    trimmed_non_empty(s),
                    "{what}: method {m} scope {s:?} (regression method-scopes-not-trimmed)"
                );
                assert!(
                    r.scopes.iter().any(|x| x == s),
                    "{what}: method {m} scope {s:?} not registered in {:?}",
                    r.scopes
                );
            }
        }
    }

    // The filter's entry: valid as it is, and read back from a `/filter-config` table unchanged.
    let entry = filter_resource(r);
    let matcher = validate_resources(vec![entry.clone()])
        .unwrap_or_else(|e| panic!("{what}: the filter refuses the entry {entry:?}: {e}"));
    assert_eq!(matcher.resources(), [entry.clone()], "{what}: the filter rewrites the entry");
    let table = FilterTable {
        resources: vec![entry.clone()],
        version: 7,
        generation: Some("5d41402abc4b2a76b9719d911017c592".into()),
    };
    let body = serde_json::to_vec(&table).expect("a table serialises");
    let read = ResourceTable::from_json(&body).unwrap_or_else(|e| panic!("{what}: table refused: {e:?}"));
    assert_eq!(read.version, 7);
    assert_eq!(read.matcher.resources(), [entry], "{what}: the table reads back another entry");
    // The filter matches normalised paths: a literal `*` segment is spelled `%2A` in a uri and
    // arrives as `*`.
    let path = normalize_path(&r.uri).unwrap_or_else(|e| panic!("{what}: uri {:?}: {e}", r.uri));
    let found =
        read.matcher.find(&path).unwrap_or_else(|| panic!("{what}: {:?} does not match itself", r.uri));
    assert_eq!(found.id, r.id);
}

/// The representation of `r` as the API sends it, checked against `r`.
fn check_representation(r: &StoredResource, what: &str) -> Value {
    let v = Api::representation(r);
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_else(|| panic!("{what}: {k} in {v}"));
    assert_eq!((s("id"), s("_id")), (r.id.as_str(), r.id.as_str()), "{what}");
    assert_eq!((s("name"), s("_name")), (r.name.as_str(), r.name.as_str()), "{what}");
    assert_eq!((s("icon_uri"), s("_reverse_match_url")), (r.uri.as_str(), r.uri.as_str()), "{what}");
    assert_eq!(s("ownership_id"), r.owner, "{what}");
    assert_eq!(v["resource_scopes"], json!(r.scopes), "{what}");
    assert_eq!(v["scopes"], json!(r.scopes), "{what}");
    assert_eq!(v.get("exact").is_some(), r.exact, "{what}: exact sent {v}");
    assert_eq!(v.get("methods").cloned(), r.methods.as_ref().map(|m| json!(m)), "{what}");
    v
}

/// `r` stored (its id given): the representation sent back, and the create body made of it.
fn check_round_trips(r: &StoredResource, what: &str) {
    check_resource(r, what);
    let view = check_representation(r, what);
    let view_body = view.to_string();
    let owner = caller(&r.owner, false);
    let operator = caller("operator", true);
    for full in [true, false] {
        let verb = if full { "PUT" } else { "PATCH" };
        for c in [&owner, &operator] {
            let back =
                Api::check_update_body(c, r, view_body.as_bytes(), full).map_err(status).unwrap_or_else(
                    |e| panic!("{what}: {verb} of the representation {view_body} refused: {e:?}"),
                );
            assert_eq!(back, *r, "{what}: {verb} of the representation {view_body} changes the resource");
        }
    }
    let unchanged = Api::check_update_body(&owner, r, b"{}", false).map_err(status);
    assert_eq!(unchanged.as_ref(), Ok(r), "{what}: PATCH {{}}");

    let mut create = json!({
        "name": r.name,
        "icon_uri": r.uri,
        "exact": r.exact,
        "scopes_mode": r.scopes_mode,
        "enforcement": r.enforcement,
        "resource_scopes": r.scopes,
        "description": r.description,
        "uuid": r.owner,
    });
    if let Some(m) = &r.methods {
        create["methods"] = json!(m);
    }
    let created = Api::check_create_body(&operator, create.to_string().as_bytes())
        .map_err(status)
        .unwrap_or_else(|e| panic!("{what}: the stored resource as a create body {create} refused: {e:?}"));
    let expected = StoredResource { id: String::new(), created_at: 0, updated_at: 0, ..r.clone() };
    assert_eq!(
        created, expected,
        "{what}: the stored resource as a create body {create} is another resource"
    );
}

fn check_post(data: &[u8], json: bool) {
    let operator = caller("operator", true);
    let alice = caller("alice", false);
    let by_operator = Api::check_create_body(&operator, data);
    let by_alice = Api::check_create_body(&alice, data);
    let op = match (by_operator, by_alice) {
        (Ok(op), Ok(al)) => {
            assert_eq!(al.owner, "alice", "POST by alice owned by {:?}", al.owner);
            assert!(
                op.owner == "alice" || op.owner == "operator",
                "POST by the operator: owner {:?}",
                op.owner
            );
            assert_eq!(
                StoredResource { owner: "alice".into(), ..op.clone() },
                al,
                "the caller changed the resource"
            );
            op
        }
        (Ok(op), Err(e)) => {
            let (s, message) = refused(e, json, "POST by alice");
            assert_eq!(s, 403, "POST: the operator's resource, alice's {s} ({message})");
            assert_ne!(op.owner, "alice", "alice refused her own resource: {message}");
            op
        }
        (Err(e), Ok(_)) => panic!("POST: alice's resource, the operator's refusal {:?}", status(e)),
        (Err(a), Err(b)) => {
            let (a, b) = (refused(a, json, "POST by the operator"), refused(b, json, "POST by alice"));
            assert_eq!(a, b, "POST: the operator and alice refused differently");
            return;
        }
    };
    assert_eq!(op.source, Source::Api);
    assert_eq!((op.id.as_str(), op.created_at, op.updated_at, op.as_expires_at), ("", 0, 0, None));
    // The id it gets: a local UUID when open, else the AS's.
    let id = if is_open(&op.scopes) { "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d" } else { "as-7f3e" };
    let stored = StoredResource { id: id.into(), created_at: NOW, updated_at: NOW, ..op };
    check_round_trips(&stored, "POST");
}

/// The keys of a body that is a JSON object.
type Keys = Option<BTreeMap<String, serde::de::IgnoredAny>>;

fn check_change(data: &[u8], json: bool, keys: &Keys, current: &StoredResource, full: bool) {
    let verb = if full { "PUT" } else { "PATCH" };
    let what = format!("{verb} {}", current.uri);
    let operator = caller("operator", true);
    let alice = caller("alice", false);
    let by_operator = Api::check_update_body(&operator, current, data, full);
    let by_alice = Api::check_update_body(&alice, current, data, full);
    if let Ok(r) = &by_alice {
        assert_eq!(by_operator.as_ref().ok(), Some(r), "{what}: alice's change, not the operator's");
        assert_eq!((&r.uri, r.exact), (&current.uri, current.exact), "{what}: alice moved her resource");
    }
    for (who, result) in [("the operator", by_operator), ("alice", by_alice)] {
        let next = match result {
            Ok(next) => next,
            Err(e) => {
                refused(e, json, &format!("{what} by {who}"));
                continue;
            }
        };
        let what = format!("{what} by {who}");
        assert_eq!(next.id, current.id, "{what}");
        assert_eq!((next.created_at, next.updated_at), (current.created_at, current.updated_at), "{what}");
        assert_eq!(next.source, current.source, "{what}");
        assert_eq!(is_open(&next.scopes), is_open(&current.scopes), "{what}: open changed");
        let body = keys.as_ref().unwrap_or_else(|| panic!("{what}: taken, but not a JSON object"));
        let absent = |k: &str| !body.contains_key(k);
        if full {
            // A PUT names the resource and its scopes, and resets what it does not give.
            assert!(!absent("name"), "{what}: without a name");
            assert!(!(absent("resource_scopes") && absent("scopes")), "{what}: no scopes");
            assert!(!absent("description") || next.description.is_none(), "{what}: description kept");
            assert!(!absent("methods") || next.methods.is_none(), "{what}: methods kept");
            assert!(
                !absent("scopes_mode") || next.scopes_mode == ScopesMode::All,
                "{what}: scopes_mode kept"
            );
            assert!(
                !absent("enforcement") || next.enforcement == Enforcement::Enforcing,
                "{what}: enforcement kept"
            );
        } else {
            // A PATCH keeps what it does not give.
            assert!(!absent("name") || next.name == current.name, "{what}: name changed");
            assert!(!absent("description") || next.description == current.description, "{what}: description");
            assert!(!absent("methods") || next.methods == current.methods, "{what}: methods changed");
            assert!(!absent("scopes_mode") || next.scopes_mode == current.scopes_mode, "{what}: scopes_mode");
            assert!(!absent("enforcement") || next.enforcement == current.enforcement, "{what}: enforcement");
            let scoped = !(absent("resource_scopes") && absent("scopes") && absent("methods"));
            assert!(scoped || next.scopes == current.scopes, "{what}: scopes changed");
        }
        assert!(!absent("ownership_id") || next.owner == current.owner, "{what}: owner changed");
        if absent("icon_uri") && absent("exact") {
            assert_eq!((&next.uri, next.exact), (&current.uri, current.exact), "{what}: moved");
        }
        check_round_trips(&next, &what);
    }
}

fuzz_target!(|data: &[u8]| {
    // What `ApiJson` answers 400 to (the body is not JSON), as it decides it.
    let json = serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok();
    // (Keys are read as UTF-8; a read-only value that is ignored need not be, as serde_json
    // skips it without looking.)
    let keys: Keys = serde_json::from_slice(data).ok();
    check_post(data, json);
    let currents = current_resources();
    for current in &currents {
        for full in [true, false] {
            check_change(data, json, &keys, current, full);
        }
    }
    // Another owner's resource: alice changes nothing of it.
    let bobs = StoredResource { owner: "bob".into(), uri: "/bob".into(), ..currents[0].clone() };
    for full in [true, false] {
        match Api::check_update_body(&caller("alice", false), &bobs, data, full) {
            Ok(r) => panic!("alice changed bob's resource into {r:?}"),
            Err(e) => {
                refused(e, json, "a change of bob's resource by alice");
            }
        }
    }
});
