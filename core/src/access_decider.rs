//! The worker's side of `access_tokens: decide`: the calls that get the AS's decision on a
//! party's access token, made once per (token, resource, scope) for every request waiting on
//! it, in this worker (a map of pending decisions) and across the workers of the Envoy (a lease
//! in shared data: the worker that takes it calls, the others find the answer in the shared
//! decision cache on their ticks).
//!
//! keycloak: one decision call. uma2: a ticket, the UMA grant with the token as claim token,
//! then the introspection of the RPT it gives.

use std::rc::Rc;

use log::warn;

use super::{CallKind, Deferred, Worker};
use crate::access_decision::{
    granted_by_keycloak, granted_by_uma2, keycloak_decision_body, parse_keycloak_decision, parse_uma_grant,
    uma_grant_body, Denial, GrantAnswer,
};
use crate::cache::{slot_of, Digest16};
use crate::config::AsProfile;
use crate::decision::LogCode;
use crate::flow::{clock, remember_until, Event};
use crate::host::{CallResponse, Counter, Host};
use crate::introspection::{introspection_body, IntrospectionResult};
use crate::resource::ScopesMode;
use crate::shared_data::Lease;
use crate::wire::{parse_ticket, permission_request_body, AsError};

/// A decision being made (or awaited from another worker), by its shared key.
#[derive(Debug)]
pub(super) struct PendingDecision {
    /// When its current call was sent (or the wait began).
    since_ms: i64,
    waiting: Vec<u32>,
    token: String,
    resource_id: String,
    scopes: Vec<String>,
    scopes_mode: ScopesMode,
    /// keycloak: the scopes granted so far, one decision call each.
    granted: Vec<String>,
    /// uma2 with `any`: the scope whose ticket is being tried.
    uma2_scope: usize,
    /// This worker's cache key of the decision.
    local: Digest16,
    /// Another worker holds the lease until then: its answer is looked for in shared data.
    elsewhere_until: Option<i64>,
    /// uma2: the ticket obtained, and the RPT the grant gave.
    ticket: Option<String>,
    rpt: Option<Rc<str>>,
}

/// The call of a decision an answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DecisionCall {
    /// keycloak: `response_mode=decision` for the scope at this index (one scope a call).
    Decision(usize),
    /// uma2: the permission ticket, the grant, the RPT's introspection.
    Ticket,
    Grant,
    Introspection,
}

/// uma2: the permission request of a decision: every scope (`all`: Gluu grants them together or
/// not at all), or (`any`) the one at `index`.
fn uma2_ticket_body(p: &PendingDecision, index: usize) -> Vec<u8> {
    let scopes: Vec<&str> = match p.scopes_mode {
        ScopesMode::All => p.scopes.iter().map(String::as_str).collect(),
        ScopesMode::Any => p.scopes.get(index).map(String::as_str).into_iter().collect(),
    };
    permission_request_body(&p.resource_id, &scopes)
}

impl<H: Host> Worker<H> {
    /// The request `context_id` waits for the AS's decision on its access token.
    pub(super) fn ask_access_decision(&self, context_id: u32) {
        let wanted = {
            let flows = self.flows.borrow();
            flows.get(&context_id).and_then(|flow| {
                let token = flow.access_token()?.to_string();
                let (local, shared) = flow.decision_keys(&self.keyer)?;
                let target = &flow.target;
                Some((
                    shared()?,
                    local,
                    token,
                    target.resource_id.clone(),
                    target.scopes.clone(),
                    target.scopes_mode,
                ))
            })
        };
        let Some((digest, local, token, resource_id, scopes, scopes_mode)) = wanted else { return };
        if let Some(pending) = self.access_deciding.borrow_mut().get_mut(&digest) {
            pending.waiting.push(context_id);
            return;
        }
        if self.deferred_to_tick(context_id, || Deferred::Decide(context_id)) {
            return;
        }
        if self.shed_when_overloaded(context_id) {
            return;
        }
        let pending = PendingDecision {
            since_ms: self.host.now_ms(),
            waiting: vec![context_id],
            token,
            resource_id,
            scopes,
            scopes_mode,
            granted: Vec::new(),
            uma2_scope: 0,
            local,
            elsewhere_until: None,
            ticket: None,
            rpt: None,
        };
        self.access_deciding.borrow_mut().insert(digest, pending);
        self.start_decision(digest);
    }

    /// Introspections, decisions and resource lookups this worker has in flight or waiting to
    /// be sent (`max_introspections_in_flight`).
    pub(super) fn calls_in_flight(&self) -> usize {
        let deciding = self.access_deciding.borrow().values().filter(|p| p.elsewhere_until.is_none()).count();
        self.introspecting.borrow().len() + deciding + self.lookups.borrow().len()
    }

    fn decision_lease(&self, digest: &Digest16) -> Lease {
        // One lease per slot: two decisions in one slot take turns, they never run together.
        Lease::new(self.keys.key(&format!("decide_lease.{}", slot_of(digest, self.config.cache_slots))), true)
    }

    /// Makes the first call of a decision, unless another worker is making it.
    fn start_decision(&self, digest: Digest16) {
        let now = self.host.now_ms();
        // uma2 makes three calls in a row.
        let lease_until = now + 3 * self.timeout_ms() + 1000;
        if !self.decision_lease(&digest).try_take(&self.host, now, lease_until) {
            if let Some(p) = self.access_deciding.borrow_mut().get_mut(&digest) {
                p.elsewhere_until = Some(lease_until);
                p.since_ms = now;
            }
            return;
        }
        let call = {
            let mut deciding = self.access_deciding.borrow_mut();
            let Some(p) = deciding.get_mut(&digest) else { return };
            p.elsewhere_until = None;
            match self.config.as_profile {
                AsProfile::Keycloak => {
                    let first = p.scopes.first().map(String::as_str).unwrap_or_default();
                    (
                        DecisionCall::Decision(0),
                        keycloak_decision_body(&self.config.client_id, &p.resource_id, first),
                        format!("Bearer {}", p.token),
                    )
                }
                AsProfile::Uma2 => (DecisionCall::Ticket, uma2_ticket_body(p, 0), String::new()),
            }
        };
        self.decision_call(digest, call.0, call.1, call.2);
    }

    /// Dispatches one call of a decision; a call that cannot be made settles it as an AS failure.
    fn decision_call(&self, digest: Digest16, step: DecisionCall, body: Vec<u8>, user_authorization: String) {
        let (token_path, permission_path, introspection_path, pat) = {
            let session = self.session.borrow();
            let endpoints = session.endpoints();
            (
                endpoints.map(|e| e.token.clone()),
                endpoints.map(|e| e.permission.clone()),
                endpoints.and_then(|e| e.introspection.clone()),
                session.pat().map(|p| p.value.clone()),
            )
        };
        let form = ("content-type", "application/x-www-form-urlencoded".to_string());
        let call = match (step, token_path, permission_path, introspection_path, pat) {
            (DecisionCall::Decision(_), Some(path), ..) => {
                self.host.count(Counter::Decisions);
                Some((path, vec![("authorization", user_authorization), form]))
            }
            (DecisionCall::Grant, Some(path), ..) => {
                self.host.count(Counter::Decisions);
                Some((path, vec![("authorization", self.client_basic.clone()), form]))
            }
            (DecisionCall::Ticket, _, Some(path), _, Some(pat)) => Some((
                path,
                vec![("authorization", format!("Bearer {pat}")), ("content-type", "application/json".into())],
            )),
            (DecisionCall::Introspection, _, _, Some(path), Some(pat)) => {
                self.host.count(Counter::Introspections);
                Some((path, vec![("authorization", format!("Bearer {pat}")), form]))
            }
            _ => None,
        };
        let Some((path, headers)) = call else {
            self.settle_decision(
                digest,
                Err(AsError::Mismatch("the AS session has no endpoint for the decision".into())),
            );
            return;
        };
        let call = self.as_call("POST", path, headers, body);
        match self.dispatch(&call, CallKind::AccessDecision(digest, step)) {
            Ok(_) => {
                if let Some(p) = self.access_deciding.borrow_mut().get_mut(&digest) {
                    p.since_ms = self.host.now_ms();
                }
            }
            Err(status) => {
                warn!("{} access decision call could not be dispatched ({status})", LogCode::AsError.code());
                self.settle_decision(digest, Err(AsError::Unreachable));
            }
        }
    }

    /// An answer to one of a decision's calls.
    pub(super) fn on_decision_answer(&self, digest: Digest16, step: DecisionCall, response: &CallResponse) {
        let response = response.as_response();
        let token = {
            let deciding = self.access_deciding.borrow();
            let Some(p) = deciding.get(&digest) else { return };
            p.token.clone()
        };
        match step {
            DecisionCall::Decision(index) => match parse_keycloak_decision(&response) {
                Ok(denial) => self.on_keycloak_scope(digest, index, denial),
                Err(e) => self.settle_decision(digest, Err(e)),
            },
            DecisionCall::Ticket => match parse_ticket(&response) {
                Ok(ticket) => {
                    let body = uma_grant_body(&ticket, &token);
                    if let Some(p) = self.access_deciding.borrow_mut().get_mut(&digest) {
                        p.ticket = Some(ticket);
                    }
                    self.decision_call(digest, DecisionCall::Grant, body, String::new());
                }
                Err(e) => self.settle_decision(digest, Err(e)),
            },
            DecisionCall::Grant => match parse_uma_grant(&response) {
                Ok(GrantAnswer::Rpt(rpt)) => {
                    let body = introspection_body(AsProfile::Uma2, &rpt);
                    if let Some(p) = self.access_deciding.borrow_mut().get_mut(&digest) {
                        p.rpt = Some(Rc::from(rpt));
                    }
                    self.decision_call(digest, DecisionCall::Introspection, body, String::new());
                }
                Ok(GrantAnswer::Denied { denial, ticket: fresh }) => {
                    // `any`: Gluu grants a ticket's scopes all or none, so each scope has its own
                    // ticket, and a refusal of one moves on to the next.
                    let next = {
                        let mut deciding = self.access_deciding.borrow_mut();
                        let Some(p) = deciding.get_mut(&digest) else { return };
                        // oxAuth's need_info changes the ticket: the client must use the new one.
                        if let Some(fresh) = fresh {
                            p.ticket = Some(fresh);
                        }
                        let more = p.scopes_mode == ScopesMode::Any && p.uma2_scope + 1 < p.scopes.len();
                        (denial == Denial::Party && more).then(|| {
                            p.uma2_scope += 1;
                            uma2_ticket_body(p, p.uma2_scope)
                        })
                    };
                    match next {
                        Some(body) => self.decision_call(digest, DecisionCall::Ticket, body, String::new()),
                        None => self.settle_decision(digest, Ok(denial.cached())),
                    }
                }
                Err(e) => self.settle_decision(digest, Err(e)),
            },
            DecisionCall::Introspection => {
                let answer =
                    IntrospectionResult::parse(&response).map(|result| granted_by_uma2(result, &token));
                self.settle_decision(digest, answer);
            }
        }
    }

    /// keycloak: the answer for the scope at `index`. `all` needs every scope granted (a
    /// refusal ends it), `any` one (a grant ends it); the token refused ends it either way.
    fn on_keycloak_scope(&self, digest: Digest16, index: usize, denial: Option<Denial>) {
        let next = {
            let mut deciding = self.access_deciding.borrow_mut();
            let Some(p) = deciding.get_mut(&digest) else { return };
            let scope = p.scopes.get(index).cloned().unwrap_or_default();
            let last = index + 1 >= p.scopes.len();
            match (denial, p.scopes_mode) {
                (None, mode) => {
                    p.granted.push(scope);
                    if last || mode == ScopesMode::Any {
                        Err(Ok(granted_by_keycloak(&p.token, &p.resource_id, &p.granted)))
                    } else {
                        Ok(index + 1)
                    }
                }
                (Some(Denial::Party), ScopesMode::Any) if !last => Ok(index + 1),
                (Some(denial), _) => Err(Ok(denial.cached())),
            }
        };
        match next {
            Ok(index) => {
                let call = {
                    let deciding = self.access_deciding.borrow();
                    let Some(p) = deciding.get(&digest) else { return };
                    let scope = p.scopes.get(index).map(String::as_str).unwrap_or_default();
                    (
                        keycloak_decision_body(&self.config.client_id, &p.resource_id, scope),
                        format!("Bearer {}", p.token),
                    )
                };
                self.decision_call(digest, DecisionCall::Decision(index), call.0, call.1);
            }
            Err(answer) => self.settle_decision(digest, answer),
        }
    }

    /// The decision is made (or failed): cached for every worker, and every request waiting on
    /// it here goes on.
    fn settle_decision(&self, digest: Digest16, answer: Result<IntrospectionResult, AsError>) {
        let Some(pending) = self.access_deciding.borrow_mut().remove(&digest) else { return };
        self.decision_lease(&digest).release(&self.host);
        let now_s = self.host.now_ms() / 1000;
        let answer = match answer {
            Ok(result) => {
                let until = remember_until(&self.config, &result, clock(&self.config, now_s));
                let result = Rc::new(result);
                self.decisions.put(&self.host, &pending.local, &digest, until, Rc::clone(&result), now_s);
                Ok(result)
            }
            Err(e) => {
                // Once per decision, whatever waits on it.
                self.host.count(Counter::AsFailures);
                warn!("{} access decision failed: {e}", LogCode::AsError.code());
                Err(e)
            }
        };
        let rpt = if self.config.access_tokens.return_rpt { pending.rpt.clone() } else { None };
        for id in pending.waiting {
            self.resume(
                id,
                Event::AccessDecided {
                    answer: answer.clone(),
                    ticket: pending.ticket.clone(),
                    rpt: rpt.clone(),
                },
            );
        }
    }

    /// On the root's tick: decisions another worker makes are looked for in shared data (and
    /// made here once its lease has lapsed); decisions whose call was lost are dropped.
    pub(super) fn tick_decisions(&self, now_ms: i64) {
        let now_s = now_ms / 1000;
        let overdue = now_ms - self.timeout_ms() - 1000;
        let keys: Vec<(Digest16, Digest16, Option<i64>, i64)> = self
            .access_deciding
            .borrow()
            .iter()
            .map(|(d, p)| (*d, p.local, p.elsewhere_until, p.since_ms))
            .collect();
        for (digest, local, elsewhere_until, since_ms) in keys {
            match elsewhere_until {
                Some(until) => {
                    if let Some(found) = self.decisions.get(&self.host, &local, || Some(digest), now_s) {
                        let waiting = self
                            .access_deciding
                            .borrow_mut()
                            .remove(&digest)
                            .map(|p| p.waiting)
                            .unwrap_or_default();
                        for id in waiting {
                            let answer = Ok(Rc::clone(&found));
                            self.resume(id, Event::AccessDecided { answer, ticket: None, rpt: None });
                        }
                    } else if now_ms > until {
                        self.start_decision(digest);
                    }
                }
                None if since_ms < overdue => {
                    // Its answer went with the context that made the call: the waiters time out.
                    self.access_deciding.borrow_mut().remove(&digest);
                    self.decision_lease(&digest).release(&self.host);
                }
                None => {}
            }
        }
    }

    /// The requests waiting on a decision (for the tick's "still in flight").
    pub(super) fn waiting_on_decisions(&self) -> Vec<u32> {
        self.access_deciding.borrow().values().flat_map(|p| p.waiting.clone()).collect()
    }
}
