//! The worker under generated sequences of requests, AS answers (good, refused, failed, garbage,
//! none), ticks, clock jumps and clients going away, in every mode the configuration offers
//! (dialects, `decide`, `resource_lookup`, `permissive`, per-resource methods). Whatever
//! happens: no panic (a panic in the VM takes the filter down), every request that stayed gets
//! exactly one outcome (continued, resumed or answered), never two, and none waits forever.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::host::fake::{Done, FakeHost};

const ROOT: u32 = 1;
const NOW_MS: i64 = 1_700_000_000_000;
const AS: &str = "https://as.example";

#[derive(Debug, Clone)]
enum Op {
    Request {
        path: usize,
        token: usize,
        method: usize,
    },
    /// Answer the `call`-th pending call (modulo), in the `how` way.
    Answer {
        call: usize,
        how: usize,
    },
    Tick,
    Advance(i64),
    Forget(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..5usize, 0..4usize, 0..4usize).prop_map(|(path, token, method)| Op::Request { path, token, method }),
        5 => (0..8usize, 0..7usize).prop_map(|(call, how)| Op::Answer { call, how }),
        3 => Just(Op::Tick),
        1 => (0..4000i64).prop_map(Op::Advance),
        1 => (0..8usize).prop_map(Op::Forget),
    ]
}

fn config(profile: usize, decide: bool, lookup: bool, permissive: bool) -> PepConfig {
    let keycloak = profile == 0;
    let mut c = json!({
        "issuer": AS, "client_id": "pep", "client_secret": "s", "as_cluster": "as",
        "as_profile": if keycloak { "keycloak" } else { "uma2" },
        "local_jwt_validation": !keycloak,
        "resources": [
            {"id": "r1", "uri": "/alice", "enforcement": if permissive { "permissive" } else { "enforcing" }},
            {"id": "r2", "uri": "/orders/{id}", "methods": {"GET": ["read", "list"], "DELETE": ["admin"]},
             "scopes_mode": "any"},
        ],
        "timeout_ms": 1000,
    });
    if decide {
        c["access_tokens"] = json!({"mode": "decide"});
    }
    if lookup && keycloak {
        c["resource_lookup"] = json!({"mode": "lazy"});
    }
    PepConfig::from_json(c.to_string().as_bytes()).unwrap_or_else(|e| unreachable!("{e}"))
}

const PATHS: [&str; 5] = ["/alice/x", "/orders/7", "/elsewhere", "/alice/../alice", "/orders/7/x"];
const TOKENS: [Option<&str>; 4] = [None, Some("tok-a"), Some("tok-b"), Some("e30.e30.sig")];
const METHODS: [&str; 4] = ["GET", "DELETE", "POST", "OPTIONS"];

/// An answer to `call` in the `how` way: 0–2 what a working AS says, then refusals and failures.
fn answer(call: &HttpCall, how: usize) -> CallResponse {
    let ok = |v: serde_json::Value| CallResponse { status: Some(200), body: v.to_string().into_bytes() };
    let good = || {
        let p = call.path.as_str();
        if p.contains("/.well-known/") {
            ok(
                json!({"issuer": AS, "token_endpoint": format!("{AS}/token"), "permission_endpoint": format!("{AS}/perm"),
                      "resource_registration_endpoint": format!("{AS}/rs"),
                      "introspection_endpoint": format!("{AS}/introspect"), "jwks_uri": format!("{AS}/jwks")}),
            )
        } else if p.contains("/perm") {
            CallResponse { status: Some(201), body: br#"{"ticket":"t-1"}"#.to_vec() }
        } else if p.contains("/introspect") {
            ok(json!({"active": true, "exp": NOW_MS / 1000 + 600,
                      "permissions": [{"resource_id": "r1", "resource_scopes": ["protected_get"]}]}))
        } else if p.contains("/rs?") {
            ok(json!([{"_id": "r9", "uris": ["/elsewhere"], "scopes": [{"name": "protected_get"}]}]))
        } else if p.contains("/jwks") {
            ok(json!({"keys": []}))
        } else {
            let body = String::from_utf8_lossy(&call.body);
            if body.contains("response_mode=decision") {
                ok(json!({"result": true}))
            } else if body.contains("ticket=") {
                ok(json!({"access_token": "rpt-9"}))
            } else {
                ok(json!({"access_token": "pat-1", "expires_in": 3600}))
            }
        }
    };
    match how {
        0..=2 => good(),
        3 => CallResponse { status: Some(403), body: br#"{"error":"access_denied"}"#.to_vec() },
        4 => CallResponse { status: Some(500), body: Vec::new() },
        5 => CallResponse { status: Some(200), body: b"<html>".to_vec() },
        _ => CallResponse { status: None, body: Vec::new() },
    }
}

proptest! {
    // 400 sequences in `make test`; PROPTEST_CASES=… for a longer search.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_request_gets_one_outcome_whatever_the_as_does(
        profile in 0..2usize, decide: bool, lookup: bool, permissive: bool,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let w = Worker::new(FakeHost::new(NOW_MS), config(profile, decide, lookup, permissive), None, ROOT, "f00d");
        let mut next_id = 10u32;
        let mut requests: Vec<u32> = Vec::new();
        let mut continued: Vec<u32> = Vec::new();
        let mut answered: Vec<u32> = Vec::new(); // call tokens answered
        for op in ops {
            match op {
                Op::Request { path, token, method } => {
                    let id = next_id;
                    next_id += 1;
                    let auth = TOKENS[token].map(|t| format!("Bearer {t}"));
                    let mut headers = vec![(":method", METHODS[method]), (":path", PATHS[path])];
                    if let Some(a) = auth.as_deref() {
                        headers.push(("authorization", a));
                    }
                    if method == 3 {
                        headers.push(("origin", "https://app"));
                        headers.push(("access-control-request-method", "GET"));
                    }
                    w.host.set_headers(&headers);
                    w.host.context.set(id);
                    if w.on_request_headers(id) == Verdict::Continue {
                        continued.push(id);
                    }
                    requests.push(id);
                }
                Op::Answer { call, how } => {
                    let pending: Vec<(u32, u32, HttpCall)> = w.host.calls.borrow().iter()
                        .filter(|(t, _, _)| !answered.contains(t)).cloned().collect();
                    if pending.is_empty() {
                        continue;
                    }
                    let (token, context, c) = pending[call % pending.len()].clone();
                    answered.push(token);
                    if w.host.gone.borrow().contains(&context) {
                        continue; // the host drops an answer for a context that ended
                    }
                    w.on_call_response(context, token, &answer(&c, how));
                }
                Op::Tick => {
                    w.enter_callback(ROOT);
                    w.host.context.set(ROOT);
                    w.tick();
                }
                Op::Advance(ms) => w.host.advance(ms),
                Op::Forget(i) => {
                    if let Some(&id) = requests.get(i % requests.len().max(1)) {
                        w.host.gone.borrow_mut().push(id);
                        w.forget(id);
                    }
                }
            }
        }
        // Then the AS answers everything, time passes, and the ticks run: nothing may wait on.
        for _ in 0..20 {
            let pending: Vec<(u32, u32, HttpCall)> = w.host.calls.borrow().iter()
                .filter(|(t, _, _)| !answered.contains(t)).cloned().collect();
            for (token, context, c) in pending {
                answered.push(token);
                if !w.host.gone.borrow().contains(&context) {
                    w.on_call_response(context, token, &answer(&c, 0));
                }
            }
            w.host.advance(1500);
            w.enter_callback(ROOT);
            w.host.context.set(ROOT);
            w.tick();
        }
        let gone = w.host.gone.borrow().clone();
        for id in requests {
            if gone.contains(&id) {
                continue;
            }
            let outcomes = w.host.done_for(id).len() + usize::from(continued.contains(&id));
            prop_assert_eq!(outcomes, 1, "request {} had {} outcomes: {:?}", id, outcomes, w.host.done_for(id));
        }
        prop_assert_eq!(w.paused(), 0, "requests still paused");
    }
}

#[test]
fn a_resumed_or_answered_request_is_told_so_once() {
    // The property above in one hand-picked case: two requests on one token, the AS slow.
    let w = Worker::new(FakeHost::new(NOW_MS), config(0, true, false, false), None, ROOT, "f00d");
    for id in [10, 11] {
        w.host.set_headers(&[(":method", "GET"), (":path", "/alice/x"), ("authorization", "Bearer tok-a")]);
        w.host.context.set(id);
        assert_eq!(w.on_request_headers(id), Verdict::Pause);
    }
    for _ in 0..10 {
        let calls: Vec<(u32, u32, HttpCall)> = w.host.calls.borrow().clone();
        for (token, context, c) in calls {
            w.on_call_response(context, token, &answer(&c, 0));
        }
        w.host.advance(1500);
        w.enter_callback(ROOT);
        w.tick();
    }
    for id in [10, 11] {
        assert_eq!(w.host.done_for(id).len(), 1, "{:?}", w.host.done_for(id));
        assert!(matches!(w.host.done_for(id)[0], Done::Resumed | Done::Reply(_)));
    }
}
