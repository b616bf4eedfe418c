//! The worker against an in-memory host: the hot path, single-flight introspection, calls
//! deferred to the root, the shared session, the JWKS wait, header hygiene and table sync.

use serde_json::json;

use super::*;
use crate::host::fake::{Done, FakeHost};

const ROOT: u32 = 1;
const NOW_MS: i64 = 1_700_000_000_000;
const AS: &str = "https://as.example";

fn config(extra: serde_json::Value) -> PepConfig {
    let mut c = json!({
        "issuer": AS, "client_id": "pep", "client_secret": "s", "as_cluster": "as",
        "resources": [{"id": "r1", "uri": "/alice", "scopes": []}],
        "local_jwt_validation": false,
    });
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    match PepConfig::from_json(c.to_string().as_bytes()) {
        Ok(c) => c,
        Err(e) => unreachable!("test config: {e}"),
    }
}

fn worker(extra: serde_json::Value) -> Worker<FakeHost> {
    Worker::new(FakeHost::new(NOW_MS), config(extra), None, ROOT, "f00d")
}

fn ok(body: serde_json::Value) -> CallResponse {
    CallResponse { status: Some(200), body: body.to_string().into_bytes() }
}

fn discovery() -> CallResponse {
    ok(json!({
        "issuer": AS,
        "token_endpoint": format!("{AS}/token"),
        "permission_endpoint": format!("{AS}/perm"),
        "resource_registration_endpoint": format!("{AS}/rs"),
        "introspection_endpoint": format!("{AS}/introspect"),
        "jwks_uri": format!("{AS}/jwks"),
    }))
}

/// The token of the last call whose path contains `path`.
fn token_of(w: &Worker<FakeHost>, path: &str) -> u32 {
    let calls = w.host.calls.borrow();
    match calls.iter().rev().find(|(_, _, c)| c.path.contains(path)) {
        Some((token, _, _)) => *token,
        None => unreachable!("no call to {path}: {:?}", calls.iter().map(|c| &c.2.path).collect::<Vec<_>>()),
    }
}

/// Discovery and PAT from the root's tick, as a fresh worker does.
fn ready(w: &Worker<FakeHost>) {
    w.enter_callback(ROOT);
    w.tick();
    w.on_call_response(ROOT, token_of(w, "/.well-known/"), &discovery());
    w.on_call_response(
        ROOT,
        token_of(w, "/token"),
        &ok(json!({"access_token": "pat-1", "expires_in": 3600})),
    );
}

fn request(w: &Worker<FakeHost>, id: u32, path: &str, bearer: Option<&str>) -> Verdict {
    let auth = bearer.map(|b| format!("Bearer {b}"));
    let mut headers = vec![(":method", "GET"), (":path", path)];
    if let Some(a) = auth.as_deref() {
        headers.push(("authorization", a));
    }
    w.host.set_headers(&headers);
    w.host.context.set(id);
    w.on_request_headers(id)
}

fn granting_introspection() -> CallResponse {
    ok(json!({"active": true, "exp": NOW_MS / 1000 + 600, "sub": "alice",
              "permissions": [{"resource_id": "r1", "resource_scopes": ["protected_get"]}]}))
}

fn reply_status(w: &Worker<FakeHost>, id: u32) -> Option<u32> {
    w.host.done_for(id).into_iter().find_map(|d| match d {
        Done::Reply(r) => Some(r.status),
        Done::Resumed => None,
    })
}

#[test]
fn discovery_and_the_pat_are_fetched_from_the_root_once() {
    let w = worker(json!({}));
    ready(&w);
    assert_eq!(w.host.calls_to("/.well-known/").len(), 1);
    let pat = w.host.calls_to("/token");
    assert_eq!(pat.len(), 1);
    assert_eq!(pat[0].body, b"grant_type=client_credentials&scope=uma_protection".to_vec());
    // Another worker of the same Envoy takes the session from shared data: no call of its own.
    let other = Worker::new(FakeHost::new(NOW_MS), config(json!({})), None, ROOT, "f00d");
    *other.host.shared.borrow_mut() = w.host.shared.borrow().clone();
    other.enter_callback(ROOT);
    other.tick();
    assert!(other.host.calls.borrow().is_empty());
    assert_eq!(request(&other, 7, "/alice", None), Verdict::Pause);
    assert_eq!(other.host.calls_to("/perm").len(), 1, "a ticket request, with the shared PAT");
}

#[test]
fn a_request_from_its_own_callback_never_dispatches_the_session_calls() {
    let w = worker(json!({}));
    assert_eq!(request(&w, 7, "/alice", None), Verdict::Pause);
    assert!(w.host.calls.borrow().is_empty(), "discovery is the root's: it waits for the tick");
    w.enter_callback(ROOT);
    w.tick();
    assert_eq!(w.host.calls_to("/.well-known/").len(), 1);
}

#[test]
fn no_token_gets_a_ticket_and_the_uma_challenge() {
    let w = worker(json!({}));
    ready(&w);
    assert_eq!(request(&w, 7, "/alice", None), Verdict::Pause);
    let call = w.host.calls_to("/perm");
    assert_eq!(call[0].headers[0], ("authorization", "Bearer pat-1".to_string()));
    w.on_call_response(
        7,
        token_of(&w, "/perm"),
        &CallResponse { status: Some(201), body: br#"{"ticket":"t-1"}"#.to_vec() },
    );
    let done = w.host.done_for(7);
    let Some(Done::Reply(reply)) = done.first() else { unreachable!("{done:?}") };
    assert_eq!(reply.status, 401);
    assert!(reply.headers.iter().any(|(k, v)| k == "www-authenticate" && v.contains("ticket=\"t-1\"")));
    assert_eq!(w.host.counter(Counter::Tickets), 1);
    assert_eq!(w.paused(), 0);
}

#[test]
fn one_introspection_serves_every_request_with_the_same_rpt() {
    let w = worker(json!({}));
    ready(&w);
    for id in [7, 8, 9] {
        assert_eq!(request(&w, id, "/alice", Some("opaque-rpt")), Verdict::Pause);
    }
    assert_eq!(w.host.calls_to("/introspect").len(), 1);
    w.on_call_response(7, token_of(&w, "/introspect"), &granting_introspection());
    for id in [7, 8, 9] {
        assert_eq!(w.host.done_for(id), vec![Done::Resumed], "request {id}");
    }
    assert_eq!(w.host.counter(Counter::Allowed), 3);
    // The hot path: decided in its own callback, with no call and no shared-data read.
    let calls = w.host.calls.borrow().len();
    assert_eq!(request(&w, 10, "/alice", Some("opaque-rpt")), Verdict::Continue);
    assert_eq!(w.host.calls.borrow().len(), calls);
    assert_eq!(w.host.counter(Counter::CacheHits), 1);
}

fn inactive() -> CallResponse {
    ok(json!({"active": false}))
}

fn header_of(call: &HttpCall, name: &str) -> Option<String> {
    call.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
}

/// Three requests with one user token, known as no RPT: keycloak past its (inactive)
/// introspection; uma2 as the ID token the filter verified (`verified_access_token`, cached as
/// the JWT check leaves it), since Gluu gets no unverified claim token.
fn deciding(w: &Worker<FakeHost>, token: &str) {
    ready(w);
    if w.config.as_profile == AsProfile::Uma2 {
        let verified = Rc::new(crate::access_decision::verified_access_token());
        let local = w.keyer.key(token);
        let far = NOW_MS / 1000 + 600;
        w.decisions.put(&w.host, &local, &crate::cache::token_digest(token), far, verified, NOW_MS / 1000);
    }
    for id in [7, 8, 9] {
        assert_eq!(request(w, id, "/alice", Some(token)), Verdict::Pause);
    }
    if w.config.as_profile == AsProfile::Keycloak {
        w.on_call_response(7, token_of(w, "/introspect"), &inactive());
    }
}

#[test]
fn keycloak_decides_once_for_every_request_with_the_token_and_the_grant_is_cached() {
    let w = worker(json!({"as_profile": "keycloak", "access_tokens": {"mode": "decide"}}));
    deciding(&w, "user-token");
    let asked: Vec<HttpCall> = w
        .host
        .calls_to("/token")
        .into_iter()
        .filter(|c| header_of(c, "authorization").is_some_and(|a| a.starts_with("Bearer")))
        .collect();
    assert_eq!(asked.len(), 1, "one decision call for three requests");
    assert_eq!(header_of(&asked[0], "authorization").as_deref(), Some("Bearer user-token"));
    let body = String::from_utf8_lossy(&asked[0].body).to_string();
    assert!(
        body.contains("permission=r1%23protected_get") && body.contains("response_mode=decision"),
        "{body}"
    );
    assert_eq!(w.host.counter(Counter::Decisions), 1);
    w.on_call_response(7, token_of(&w, "/token"), &ok(json!({"result": true})));
    for id in [7, 8, 9] {
        assert_eq!(w.host.done_for(id), vec![Done::Resumed], "request {id}");
    }
    // The next request with the token is decided from the caches, in its own callback.
    let calls = w.host.calls.borrow().len();
    assert_eq!(request(&w, 10, "/alice", Some("user-token")), Verdict::Continue);
    assert_eq!(w.host.calls.borrow().len(), calls);
    // Another scope of the same resource is another decision.
    w.host.set_headers(&[(":method", "DELETE"), (":path", "/alice"), ("authorization", "Bearer user-token")]);
    w.host.context.set(11);
    assert_eq!(w.on_request_headers(11), Verdict::Pause);
    assert_eq!(w.host.counter(Counter::Decisions), 2);
}

#[test]
fn keycloak_refusing_the_party_is_a_403_challenge_and_is_cached() {
    let w = worker(json!({"as_profile": "keycloak", "access_tokens": {"mode": "decide"}}));
    deciding(&w, "user-token");
    let denied = CallResponse {
        status: Some(403),
        body: br#"{"error":"access_denied","error_description":"not_authorized"}"#.to_vec(),
    };
    w.on_call_response(7, token_of(&w, "/token"), &denied);
    w.enter_callback(ROOT);
    w.tick();
    assert_eq!(w.host.calls_to("/perm").len(), 3, "each waiting request asks for its ticket");
    for (id, call) in
        [7, 8, 9].into_iter().zip(w.host.calls.borrow().iter().filter(|c| c.2.path.contains("/perm")))
    {
        w.on_call_response(id, call.0, &ok(json!({"ticket": format!("t-{id}")})));
        assert_eq!(reply_status(&w, id), Some(403), "request {id}");
    }
    // Remembered: the next request asks for a ticket only.
    let decisions = w.host.counter(Counter::Decisions);
    request(&w, 10, "/alice", Some("user-token"));
    assert_eq!(w.host.counter(Counter::Decisions), decisions);
    assert_eq!(w.host.calls_to("/perm").len(), 4);
}

#[test]
fn uma2_gets_a_ticket_then_an_rpt_for_the_claim_token_and_can_return_it() {
    let w = worker(json!({"as_profile": "uma2", "local_jwt_validation": true,
                       "access_tokens": {"mode": "decide", "return_rpt": true}}));
    deciding(&w, "id-token");
    assert_eq!(w.host.calls_to("/perm").len(), 1, "one ticket for three requests");
    w.on_call_response(7, token_of(&w, "/perm"), &ok(json!({"ticket": "tk-1"})));
    let grant = w.host.calls_to("/token").pop().unwrap_or_else(|| unreachable!());
    assert!(header_of(&grant, "authorization").is_some_and(|a| a.starts_with("Basic ")), "the PEP's client");
    let body = String::from_utf8_lossy(&grant.body).to_string();
    assert!(body.contains("ticket=tk-1") && body.contains("claim_token=id-token"), "{body}");
    w.on_call_response(
        7,
        token_of(&w, "/token"),
        &ok(json!({"access_token": "rpt-9", "token_type": "Bearer"})),
    );
    let introspected = w.host.calls_to("/introspect").pop().unwrap_or_else(|| unreachable!());
    assert_eq!(introspected.body, b"token=rpt-9".to_vec());
    w.on_call_response(7, token_of(&w, "/introspect"), &granting_introspection());
    for id in [7, 8, 9] {
        assert_eq!(w.host.done_for(id), vec![Done::Resumed], "request {id}");
        assert_eq!(w.take_returned_rpt(id).as_deref(), Some("rpt-9"), "request {id}");
    }
    assert_eq!(w.take_returned_rpt(7), None, "once");
    assert_eq!(w.host.counter(Counter::Decisions), 1);
}

#[test]
fn uma2_need_info_answers_403_with_the_new_ticket() {
    let w = worker(
        json!({"as_profile": "uma2", "local_jwt_validation": true, "access_tokens": {"mode": "decide"}}),
    );
    deciding(&w, "id-token");
    w.on_call_response(7, token_of(&w, "/perm"), &ok(json!({"ticket": "tk-1"})));
    let need_info =
        CallResponse { status: Some(403), body: br#"{"error":"need_info","ticket":"tk-2"}"#.to_vec() };
    w.on_call_response(7, token_of(&w, "/token"), &need_info);
    for id in [7, 8, 9] {
        let reply = w.host.done_for(id).into_iter().find_map(|d| match d {
            Done::Reply(r) => Some(r),
            Done::Resumed => None,
        });
        let reply = reply.unwrap_or_else(|| unreachable!("request {id}"));
        assert_eq!(reply.status, 403);
        assert!(reply.headers.iter().any(|(k, v)| k == "www-authenticate" && v.contains("tk-2")));
    }
    assert_eq!(w.host.calls_to("/perm").len(), 1, "the grant's ticket is used");
}

#[test]
fn keycloak_decides_one_scope_a_call_all_or_any() {
    let denied = || CallResponse { status: Some(403), body: br#"{"error":"access_denied"}"#.to_vec() };
    for (mode, answers, allowed) in [
        ("all", vec![true, true], true),
        ("all", vec![true, false], false),
        ("all", vec![false], false),
        ("any", vec![false, true], true),
        ("any", vec![true], true),
        ("any", vec![false, false], false),
    ] {
        let w = worker(json!({"as_profile": "keycloak", "access_tokens": {"mode": "decide"},
            "resources": [{"id": "r1", "uri": "/alice", "methods": {"GET": ["a", "b"]}, "scopes_mode": mode}]}));
        deciding(&w, "user-token");
        for (i, grant) in answers.iter().enumerate() {
            let call = w.host.calls_to("/token").pop().unwrap_or_else(|| unreachable!());
            let body = String::from_utf8_lossy(&call.body).to_string();
            let scope = ["a", "b"][i];
            assert!(body.contains(&format!("permission=r1%23{scope}&")), "{mode} {answers:?}: {body}");
            let answer = if *grant { ok(json!({"result": true})) } else { denied() };
            w.on_call_response(7, token_of(&w, "/token"), &answer);
        }
        assert_eq!(w.host.counter(Counter::Decisions), answers.len() as u64, "{mode} {answers:?}");
        let resumed = w.host.done_for(7) == vec![Done::Resumed];
        assert_eq!(resumed, allowed, "{mode} {answers:?}");
    }
}

fn lookup_worker() -> Worker<FakeHost> {
    worker(
        json!({"as_profile": "keycloak", "resource_lookup": {"mode": "lazy", "ttl_s": 30, "negative_ttl_s": 10}}),
    )
}

#[test]
fn a_path_the_table_lacks_is_looked_up_once_and_what_is_found_is_enforced_and_cached() {
    let w = lookup_worker();
    ready(&w);
    for id in [7, 8] {
        assert_eq!(request(&w, id, "/api/orders/7", None), Verdict::Pause);
    }
    let lookups = w.host.calls_to("/rs?");
    assert_eq!(lookups.len(), 1, "one lookup for both requests");
    assert_eq!(lookups[0].method, "GET");
    assert!(
        lookups[0].path.ends_with("?uri=%2Fapi%2Forders%2F7&matchingUri=true&deep=true"),
        "{}",
        lookups[0].path
    );
    assert_eq!(header_of(&lookups[0], "authorization").as_deref(), Some("Bearer pat-1"));
    let found = ok(json!([{"_id": "res-orders", "name": "Orders", "uris": ["/api/orders/{id}"],
                           "scopes": [{"name": "protected_get"}]}]));
    w.on_call_response(7, token_of(&w, "/rs?"), &found);
    // Both now ask for a ticket for the resource found (request 8's from the root's tick).
    w.enter_callback(ROOT);
    w.tick();
    let tickets = w.host.calls_to("/perm");
    assert_eq!(tickets.len(), 2);
    assert!(String::from_utf8_lossy(&tickets[0].body).contains("res-orders"));
    // Cached: a third request asks the AS nothing about the path.
    assert_eq!(request(&w, 9, "/api/orders/7", None), Verdict::Pause);
    assert_eq!(w.host.calls_to("/rs?").len(), 1);
    assert_eq!(w.host.calls_to("/perm").len(), 3);
}

#[test]
fn a_flood_of_unknown_paths_is_not_a_flood_of_lookups() {
    let w = worker(json!({"as_profile": "keycloak", "max_introspections_in_flight": 2,
                          "resource_lookup": {"mode": "lazy"}}));
    ready(&w);
    for (id, path) in [(7, "/p1"), (8, "/p2"), (9, "/p1")] {
        assert_eq!(request(&w, id, path, None), Verdict::Pause);
    }
    assert_eq!(w.host.calls_to("/rs?").len(), 2, "one per path");
    assert_eq!(request(&w, 10, "/p3", None), Verdict::Pause);
    assert_eq!(reply_status(&w, 10), Some(503), "a third lookup would pass the cap");
    assert_eq!(w.host.calls_to("/rs?").len(), 2);
    assert_eq!(w.host.counter(Counter::Overloaded), 1);
}

#[test]
fn a_lookup_waits_for_the_session_and_is_sent_from_the_tick() {
    let w = lookup_worker();
    assert_eq!(request(&w, 7, "/nowhere", None), Verdict::Pause);
    assert!(w.host.calls_to("/rs?").is_empty(), "no session yet");
    ready(&w);
    w.enter_callback(ROOT);
    w.tick();
    assert_eq!(w.host.calls_to("/rs?").len(), 1);
    w.on_call_response(ROOT, token_of(&w, "/rs?"), &ok(json!([])));
    assert_eq!(w.host.done_for(7), vec![Done::Resumed]);
}

#[test]
fn a_path_the_as_does_not_know_is_unmatched_and_an_as_failure_denies() {
    let w = lookup_worker();
    ready(&w);
    assert_eq!(request(&w, 7, "/nowhere", None), Verdict::Pause);
    w.on_call_response(7, token_of(&w, "/rs?"), &ok(json!([])));
    assert_eq!(w.host.done_for(7), vec![Done::Resumed], "unmatched: passed through (unmatched: allow)");
    assert_eq!(request(&w, 8, "/nowhere", None), Verdict::Continue, "the \"none\" is cached");
    // The AS failing on a lookup is never a pass-through.
    assert_eq!(request(&w, 9, "/elsewhere", None), Verdict::Pause);
    w.on_call_response(9, token_of(&w, "/rs?"), &CallResponse { status: Some(500), body: Vec::new() });
    assert_eq!(reply_status(&w, 9), Some(403));
    assert_eq!(w.host.counter(Counter::AsFailures), 1);
    // Nor is a lookup that never answers.
    assert_eq!(request(&w, 10, "/late", None), Verdict::Pause);
    w.host.advance(2000 + 1500);
    w.enter_callback(ROOT);
    w.tick();
    assert_eq!(reply_status(&w, 10), Some(403));
}

#[test]
fn uma2_any_tries_each_scope_with_its_own_ticket() {
    let w = worker(
        json!({"as_profile": "uma2", "local_jwt_validation": true, "access_tokens": {"mode": "decide"},
        "resources": [{"id": "r1", "uri": "/alice", "methods": {"GET": ["a", "b"]}, "scopes_mode": "any"}]}),
    );
    deciding(&w, "id-token");
    let first = w.host.calls_to("/perm").pop().unwrap_or_else(|| unreachable!());
    assert_eq!(String::from_utf8_lossy(&first.body), r#"[{"resource_id":"r1","resource_scopes":["a"]}]"#);
    w.on_call_response(7, token_of(&w, "/perm"), &ok(json!({"ticket": "tk-a"})));
    let refused = CallResponse { status: Some(403), body: br#"{"error":"forbidden_by_policy"}"#.to_vec() };
    w.on_call_response(7, token_of(&w, "/token"), &refused);
    let second = w.host.calls_to("/perm").pop().unwrap_or_else(|| unreachable!());
    assert_eq!(String::from_utf8_lossy(&second.body), r#"[{"resource_id":"r1","resource_scopes":["b"]}]"#);
    w.on_call_response(7, token_of(&w, "/perm"), &ok(json!({"ticket": "tk-b"})));
    w.on_call_response(7, token_of(&w, "/token"), &ok(json!({"access_token": "rpt-b"})));
    let granting_b = ok(json!({"active": true, "exp": NOW_MS / 1000 + 600,
                               "permissions": [{"resource_id": "r1", "resource_scopes": ["b"]}]}));
    w.on_call_response(7, token_of(&w, "/introspect"), &granting_b);
    assert_eq!(w.host.done_for(7), vec![Done::Resumed]);
    assert_eq!(w.host.counter(Counter::Decisions), 2, "two grants, one per scope");
}

/// Another worker of the same Envoy, seeing what `a` put in shared data (lease and session).
fn second_worker(a: &Worker<FakeHost>) -> Worker<FakeHost> {
    let extra = json!({"as_profile": "keycloak", "access_tokens": {"mode": "decide"}});
    let b = Worker::new(FakeHost::new(NOW_MS), config(extra), None, ROOT, "f00d");
    *b.host.shared.borrow_mut() = a.host.shared.borrow().clone();
    b.enter_callback(ROOT);
    b.tick();
    b
}

#[test]
fn a_decision_another_worker_makes_is_awaited_not_repeated() {
    let a = worker(json!({"as_profile": "keycloak", "access_tokens": {"mode": "decide"}}));
    deciding(&a, "user-token");
    assert_eq!(a.host.counter(Counter::Decisions), 1);
    // Worker B of the same Envoy sees A's lease (and session) in shared data.
    let b = second_worker(&a);
    assert_eq!(request(&b, 20, "/alice", Some("user-token")), Verdict::Pause);
    assert!(b.host.calls_to("/introspect").is_empty(), "A's introspection is shared");
    assert_eq!(b.host.counter(Counter::Decisions), 0, "A holds the lease");
    b.enter_callback(ROOT);
    b.tick();
    assert_eq!(b.host.done_for(20), vec![], "still waiting");
    a.on_call_response(7, token_of(&a, "/token"), &ok(json!({"result": true})));
    *b.host.shared.borrow_mut() = a.host.shared.borrow().clone();
    b.enter_callback(ROOT);
    b.tick();
    assert_eq!(b.host.done_for(20), vec![Done::Resumed]);
    assert_eq!(b.host.counter(Counter::Decisions), 0);
}

#[test]
fn a_lapsed_lease_lets_the_waiting_worker_decide_itself() {
    let a = worker(json!({"as_profile": "keycloak", "access_tokens": {"mode": "decide"}}));
    deciding(&a, "user-token");
    let b = second_worker(&a);
    request(&b, 20, "/alice", Some("user-token"));
    assert!(b.host.calls_to("/introspect").is_empty(), "A's introspection is shared");
    assert_eq!(b.host.counter(Counter::Decisions), 0);
    // A never answers (its Envoy worker is stuck): past the lease, B asks itself.
    b.host.advance(3 * 2000 + 1500);
    b.enter_callback(ROOT);
    b.tick();
    assert_eq!(b.host.counter(Counter::Decisions), 1);
}

#[test]
fn a_call_for_a_request_woken_from_another_context_waits_for_the_root() {
    let w = worker(json!({}));
    // Request 7 waits for the session; the PAT's answer is then delivered on request 9's
    // context, which wakes request 7 there.
    assert_eq!(request(&w, 7, "/alice", None), Verdict::Pause);
    w.enter_callback(ROOT);
    w.tick();
    w.on_call_response(ROOT, token_of(&w, "/.well-known/"), &discovery());
    // The PAT answer is delivered to a request's context (its callback is running): the
    // ticket call for request 7 must not be made on 9's context.
    w.host.context.set(9);
    w.on_call_response(9, token_of(&w, "/token"), &ok(json!({"access_token": "pat-1", "expires_in": 3600})));
    assert!(w.host.calls_to("/perm").is_empty(), "deferred");
    w.enter_callback(ROOT);
    w.tick();
    let calls = w.host.calls.borrow();
    let (_, context, call) = &calls[calls.len() - 1];
    assert!(call.path.contains("/perm"));
    assert_eq!(*context, ROOT);
}

#[test]
fn a_refused_pat_is_replaced_once_and_the_ticket_asked_again() {
    let w = worker(json!({}));
    ready(&w);
    request(&w, 7, "/alice", None);
    let refused = CallResponse { status: Some(401), body: br#"{"error":"invalid_token"}"#.to_vec() };
    w.on_call_response(7, token_of(&w, "/perm"), &refused);
    assert_eq!(reply_status(&w, 7), None, "retrying, not answered");
    w.enter_callback(ROOT);
    w.tick();
    assert_eq!(w.host.calls_to("/token").len(), 2, "one new PAT");
    w.on_call_response(
        ROOT,
        token_of(&w, "/token"),
        &ok(json!({"access_token": "pat-2", "expires_in": 3600})),
    );
    let perm = w.host.calls_to("/perm");
    assert_eq!(perm.len(), 2);
    assert_eq!(perm[1].headers[0].1, "Bearer pat-2");
    w.on_call_response(ROOT, token_of(&w, "/perm"), &refused);
    assert_eq!(reply_status(&w, 7), Some(403), "a second refusal denies");
    assert_eq!(w.host.counter(Counter::AsFailures), 1);
}

#[test]
fn a_dead_as_denies_the_waiting_requests_with_the_warning() {
    let w = worker(json!({}));
    request(&w, 7, "/alice", None);
    w.enter_callback(ROOT);
    w.tick();
    w.on_call_response(ROOT, token_of(&w, "/.well-known/"), &CallResponse { status: None, body: Vec::new() });
    let done = w.host.done_for(7);
    let Some(Done::Reply(reply)) = done.first() else { unreachable!("{done:?}") };
    assert_eq!(reply.status, 403);
    assert!(reply.headers.iter().any(|(k, _)| k == "warning"));
    // Within the backoff, a new request is denied at once, with no call.
    let calls = w.host.calls.borrow().len();
    request(&w, 8, "/alice", None);
    assert_eq!(reply_status(&w, 8), Some(403));
    assert_eq!(w.host.calls.borrow().len(), calls);
}

#[test]
fn a_request_that_waits_too_long_is_denied_by_the_tick() {
    let w = worker(json!({"timeout_ms": 500}));
    request(&w, 7, "/alice", None);
    w.enter_callback(ROOT);
    w.tick();
    w.host.advance(400);
    w.tick();
    assert_eq!(reply_status(&w, 7), None);
    w.host.advance(200);
    w.tick();
    assert_eq!(reply_status(&w, 7), Some(403));
}

#[test]
fn a_request_gone_before_its_answer_is_forgotten() {
    let w = worker(json!({}));
    ready(&w);
    request(&w, 7, "/alice", Some("opaque"));
    w.forget(7);
    w.host.gone.borrow_mut().push(7);
    w.on_call_response(ROOT, token_of(&w, "/introspect"), &granting_introspection());
    assert!(w.host.done_for(7).is_empty());
    assert_eq!(w.paused(), 0);
}

#[test]
fn permissive_forwards_a_denied_request_marked_and_the_clients_mark_is_stripped() {
    let w = worker(json!({"resources": [{"id": "r1", "uri": "/alice", "enforcement": "permissive"}],
                          "enforcement_header": "X-Decision"}));
    ready(&w);
    w.host.set_headers(&[(":method", "GET"), (":path", "/alice"), ("x_decision", "allowed")]);
    w.host.context.set(7);
    assert_eq!(w.on_request_headers(7), Verdict::Continue, "no token: forwarded at once");
    let changes = w.host.header_changes.borrow().clone();
    let set: Vec<(String, Option<String>)> = changes.into_iter().map(|(_, n, v)| (n, v)).collect();
    assert_eq!(set, vec![("x_decision".into(), None), ("x-decision".into(), Some("denied".into()))]);
    assert!(w.host.calls_to("/perm").is_empty(), "no ticket is asked for");
    assert_eq!(w.host.counter(Counter::Denied), 1);
}

#[test]
fn the_identity_header_in_every_spelling_and_method_overrides_are_stripped() {
    let w = worker(json!({}));
    ready(&w);
    w.host.set_headers(&[
        (":method", "GET"),
        (":path", "/elsewhere"),
        ("x-user_id", "mallory"),
        ("X_USER-ID", "mallory"),
        ("x-http-method-override", "DELETE"),
    ]);
    w.host.context.set(7);
    assert_eq!(w.on_request_headers(7), Verdict::Continue, "unmatched passes through");
    let removed: Vec<String> = w
        .host
        .header_changes
        .borrow()
        .iter()
        .filter(|(_, _, v)| v.is_none())
        .map(|(_, n, _)| n.clone())
        .collect();
    assert_eq!(removed, vec!["x-user_id", "X_USER-ID", "x-http-method-override"]);
    assert_eq!(w.host.counter(Counter::Unmatched), 1);
}

#[test]
fn a_local_jwt_rpt_waits_for_the_jwks_and_a_jwks_failure_falls_back_to_introspection() {
    let w = worker(json!({"local_jwt_validation": true}));
    ready(&w);
    assert_eq!(request(&w, 7, "/alice", Some("aaa.bbb.ccc")), Verdict::Pause);
    // The JWKS is the root's to fetch: the request waits for the tick.
    assert!(w.host.calls_to("/jwks").is_empty());
    w.enter_callback(ROOT);
    w.tick();
    assert_eq!(w.host.calls_to("/jwks").len(), 1);
    w.on_call_response(ROOT, token_of(&w, "/jwks"), &CallResponse { status: Some(500), body: Vec::new() });
    assert_eq!(w.host.calls_to("/introspect").len(), 1, "failed JWKS: the AS decides");
}

#[test]
fn the_resource_table_is_polled_and_a_new_one_protects_at_once() {
    let w = worker(json!({"resource_sync": {"cluster": "pepctl", "interval_s": 5}}));
    ready(&w);
    assert_eq!(request(&w, 7, "/bob", None), Verdict::Continue, "not in the configured table");
    let table = ok(json!({"version": 2, "resources": [{"id": "r2", "uri": "/bob", "scopes": []}]}));
    w.on_call_response(ROOT, token_of(&w, "/filter-config"), &table);
    assert_eq!(request(&w, 8, "/bob", None), Verdict::Pause, "protected now");
    // Garbage keeps the last good table.
    w.host.advance(6_000);
    w.enter_callback(ROOT);
    w.tick();
    w.on_call_response(ROOT, token_of(&w, "/filter-config"), &ok(json!({"resources": []})));
    assert_eq!(request(&w, 9, "/bob", None), Verdict::Pause);
}

#[test]
fn rpt_uses_are_counted_and_a_used_up_rpt_gets_a_ticket() {
    let w = worker(json!({"rpt_max_uses": 2}));
    ready(&w);
    request(&w, 7, "/alice", Some("opaque"));
    w.on_call_response(7, token_of(&w, "/introspect"), &granting_introspection());
    assert_eq!(w.host.done_for(7), vec![Done::Resumed]);
    assert_eq!(request(&w, 8, "/alice", Some("opaque")), Verdict::Continue);
    assert_eq!(request(&w, 9, "/alice", Some("opaque")), Verdict::Pause, "two uses taken");
    assert_eq!(w.host.calls_to("/perm").len(), 1);
}

#[test]
fn an_open_resource_passes_through_unchecked_and_says_so_in_the_facts() {
    let w = worker(json!({"resources": [
        {"id": "r1", "uri": "/alice", "scopes": []},
        {"id": "pub", "uri": "/public", "scopes": ["open"]},
    ]}));
    assert_eq!(request(&w, 7, "/public/x", Some("whatever")), Verdict::Continue);
    assert!(w.host.calls.borrow().is_empty(), "no AS call");
    let facts = w.host.facts.borrow();
    assert_eq!(facts.last(), Some(&(Decision::Open, Some("pub".to_string()), None)));
}

#[test]
fn introspections_in_flight_are_capped_and_the_excess_shed_with_retry_after() {
    let w = worker(json!({"max_introspections_in_flight": 2}));
    ready(&w);
    for id in [7, 8, 9] {
        request(&w, id, "/alice", Some(&format!("token-{id}")));
    }
    // A request joining an RPT already in flight is no new introspection: it is not shed.
    request(&w, 10, "/alice", Some("token-7"));
    assert_eq!(w.host.calls_to("/introspect").len(), 2);
    let shed = w.host.done_for(9);
    let Some(Done::Reply(reply)) = shed.first() else { unreachable!("{shed:?}") };
    assert_eq!(reply.status, 503);
    assert!(reply.headers.iter().any(|(k, v)| k == "retry-after" && v == "1"));
    assert_eq!(w.host.counter(Counter::Overloaded), 1);
    assert!(w.host.done_for(10).is_empty(), "waiting on token-7's introspection");
    // Once one answers, a new token may be introspected again.
    w.on_call_response(7, token_of(&w, "/introspect"), &granting_introspection());
    request(&w, 11, "/alice", Some("token-11"));
    assert_eq!(w.host.calls_to("/introspect").len(), 3);
}

#[test]
fn access_log_facts_can_be_switched_off() {
    for (on, facts) in [(true, 1), (false, 0)] {
        let w = worker(json!({"access_log_facts": on}));
        assert_eq!(request(&w, 7, "/elsewhere", None), Verdict::Continue);
        assert_eq!(w.host.facts.borrow().len(), facts, "access_log_facts={on}");
        assert_eq!(w.host.counter(Counter::Unmatched), 1, "counted either way");
    }
}

/// Native cost of the hot path's own work (a cached RPT of 1 kB), with the in-memory host:
/// `cargo test --release -p uma-pep-core hot_path_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a test"]
fn hot_path_cost() {
    let w = worker(json!({}));
    ready(&w);
    let token = format!("bench-rpt-{}", "AbCdEfGhIj0123456789_-".repeat(45));
    request(&w, 7, "/alice/x", Some(&token));
    w.on_call_response(7, token_of(&w, "/introspect"), &granting_introspection());
    let auth = format!("Bearer {token}");
    w.host.set_headers(&[
        (":method", "GET"),
        (":path", "/alice/x"),
        ("authorization", &auth),
        ("user-agent", "wrk"),
    ]);
    let rounds = 200_000u32;
    let start = std::time::Instant::now();
    for i in 0..rounds {
        assert_eq!(w.on_request_headers(100 + i), Verdict::Continue);
        if i % 1000 == 0 {
            w.host.facts.borrow_mut().clear();
            w.host.done.borrow_mut().clear();
        }
    }
    let per = start.elapsed() / rounds;
    let keyer = LocalKeyer::default();
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(keyer.key(std::hint::black_box(&token)));
    }
    let key = start.elapsed() / rounds;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(crate::cache::token_digest(std::hint::black_box(&token)));
    }
    let sha = start.elapsed() / rounds;
    println!("cached request: {per:?}; local key of 1 kB: {key:?}; SHA-256 of 1 kB: {sha:?}");
}

/// Native cost of a cached request by the length of its path (8 to 16,000 segments), to tell
/// linear from worse: `cargo test --release -p uma-pep-core long_path_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a test"]
fn long_path_cost() {
    let w = worker(json!({}));
    ready(&w);
    let token = "long-path-rpt";
    request(&w, 7, "/alice/x", Some(token));
    w.on_call_response(7, token_of(&w, "/introspect"), &granting_introspection());
    let auth = format!("Bearer {token}");
    for segments in [8usize, 1_000, 4_000, 16_000] {
        let path = format!("/alice{}", "/a".repeat(segments));
        w.host.set_headers(&[(":method", "GET"), (":path", &path), ("authorization", &auth)]);
        let rounds = 2_000u32;
        let start = std::time::Instant::now();
        for i in 0..rounds {
            assert_eq!(w.on_request_headers(100 + i), Verdict::Continue);
            w.host.facts.borrow_mut().clear();
            w.host.done.borrow_mut().clear();
        }
        let per = start.elapsed() / rounds;
        println!("{segments:>6} segments ({:>6} bytes): {per:?} per request", path.len());
    }
}
