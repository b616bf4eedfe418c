//! The worker's side of `resource_lookup`: a path no configured resource matches is looked up
//! at the AS once for every request waiting on it (per worker), and what was found (a resource,
//! or none) is cached for every worker of the Envoy (`ttl_s`, `negative_ttl_s`). The lookup
//! needs the AS session; until it is ready the requests wait, and if it fails, or the lookup
//! does, they are denied as on any AS failure (403 + `Warning`): never passed through.

use std::rc::Rc;

use log::warn;

use super::{CallKind, PlannedRequest, Verdict, Worker};
use crate::cache::{token_digest, Digest16};
use crate::decision::{plan_for_resource, LocalReply, LogCode, Matched};
use crate::host::{CallResponse, Counter, Host};
use crate::resource_lookup::{lookup_path, parse_lookup, LookedUp};
use crate::session::SessionStep;

/// A request waiting for a lookup, with what its plan needs.
#[derive(Debug)]
struct LookupWaiter {
    context_id: u32,
    request: PlannedRequest,
    rewrite: Option<String>,
    token: Option<String>,
}

/// A lookup of one path: its waiters, and when its call was sent (`None`: not yet, the session
/// is not ready).
#[derive(Debug)]
pub(super) struct PendingLookup {
    path: String,
    local: Digest16,
    since_ms: i64,
    sent: bool,
    waiting: Vec<LookupWaiter>,
}

impl<H: Host> Worker<H> {
    /// Plans a request on a path the table does not hold from what the AS says of it.
    pub(super) fn look_up_resource(
        &self,
        context_id: u32,
        path: String,
        request: PlannedRequest,
        rewrite: Option<String>,
        token: Option<String>,
    ) -> Verdict {
        let key = format!("lookup\0{path}");
        let local = self.keyer.key(&key);
        let now_ms = self.host.now_ms();
        if let Some(found) =
            self.looked_up.get(&self.host, &local, || Some(token_digest(&key)), now_ms / 1000)
        {
            self.host.count(Counter::CacheHits);
            return self.plan_looked_up(context_id, &found, request, rewrite, token.as_deref());
        }
        let digest = token_digest(&key);
        // A flood of paths the table lacks must not become a flood of lookups at the AS: a new
        // lookup counts toward `max_introspections_in_flight`, and the excess gets a fast 503.
        let max = usize::try_from(self.config.max_introspections_in_flight).unwrap_or(usize::MAX);
        if !self.lookups.borrow().contains_key(&digest) && self.calls_in_flight() >= max {
            self.host.count(Counter::Overloaded);
            return self.reply_now(&LocalReply::overloaded(), &request.method, &request.log_path);
        }
        let waiter =
            LookupWaiter { context_id, request: PlannedRequest { paused: true, ..request }, rewrite, token };
        let new = {
            let mut lookups = self.lookups.borrow_mut();
            let pending = lookups.entry(digest).or_insert_with(|| PendingLookup {
                path,
                local,
                since_ms: now_ms,
                sent: false,
                waiting: Vec::new(),
            });
            pending.waiting.push(waiter);
            pending.waiting.len() == 1
        };
        if new {
            self.send_lookup(digest);
        }
        Verdict::Pause
    }

    /// The plan once the resource is known (`found.resource`; none: the path is unmatched).
    fn plan_looked_up(
        &self,
        context_id: u32,
        found: &LookedUp,
        request: PlannedRequest,
        rewrite: Option<String>,
        token: Option<&str>,
    ) -> Verdict {
        let matched =
            Matched { method: &request.method, cors_preflight: request.cors_preflight, token, rewrite };
        let planned = plan_for_resource(&self.config, found.resource.as_ref(), matched);
        self.carry_out(context_id, planned, request.clone())
    }

    /// Sends the lookup of `digest` when the session is ready (from the callback of its first
    /// request or the root's tick); otherwise leaves it for the tick.
    fn send_lookup(&self, digest: Digest16) {
        let ready = self.session.borrow_mut().step(&self.host) == SessionStep::Ready;
        if !ready {
            self.drive_session();
            return;
        }
        let call = {
            let session = self.session.borrow();
            let lookups = self.lookups.borrow();
            let Some(pending) = lookups.get(&digest) else { return };
            let caller = pending.waiting.first().map(|w| w.context_id);
            let callback = self.callback_context.get();
            if caller != Some(callback) && callback != self.root_context {
                return; // the root's tick sends it
            }
            match (session.endpoints().and_then(|e| e.resource_set.clone()), session.pat()) {
                (Some(endpoint), Some(pat)) => Ok(self.as_call(
                    "GET",
                    lookup_path(&endpoint, &pending.path),
                    vec![("authorization", format!("Bearer {}", pat.value))],
                    Vec::new(),
                )),
                _ => Err("the AS publishes no resource registration endpoint"),
            }
        };
        match call {
            Ok(call) => match self.dispatch(&call, CallKind::ResourceLookup(digest)) {
                Ok(_) => {
                    if let Some(p) = self.lookups.borrow_mut().get_mut(&digest) {
                        p.sent = true;
                        p.since_ms = self.host.now_ms();
                    }
                }
                Err(status) => {
                    self.fail_lookup(digest, &format!("resource lookup could not be dispatched ({status})"))
                }
            },
            Err(reason) => self.fail_lookup(digest, reason),
        }
    }

    pub(super) fn on_lookup_answer(&self, digest: Digest16, response: &CallResponse) {
        let path = match self.lookups.borrow().get(&digest) {
            Some(p) => p.path.clone(),
            None => return,
        };
        match parse_lookup(&response.as_response(), &path) {
            Ok(found) => self.settle_lookup(digest, found),
            Err(e) => self.fail_lookup(digest, &format!("resource lookup failed: {e}")),
        }
    }

    /// Caches what was found and carries out every waiting request's plan with it.
    fn settle_lookup(&self, digest: Digest16, found: LookedUp) {
        let Some(pending) = self.lookups.borrow_mut().remove(&digest) else { return };
        let Some(lookup) = self.config.resource_lookup else { return };
        let now_s = self.host.now_ms() / 1000;
        let ttl = if found.resource.is_some() { lookup.ttl_s } else { lookup.negative_ttl_s };
        let until = now_s.saturating_add(i64::try_from(ttl).unwrap_or(0));
        let found = Rc::new(found);
        self.looked_up.put(&self.host, &pending.local, &digest, until, Rc::clone(&found), now_s);
        for w in pending.waiting {
            if self.host.enter_context(w.context_id) {
                self.plan_looked_up(w.context_id, &found, w.request, w.rewrite, w.token.as_deref());
            }
        }
    }

    /// Denies every request waiting on the lookup: the AS failed (counted once).
    fn fail_lookup(&self, digest: Digest16, reason: &str) {
        let Some(pending) = self.lookups.borrow_mut().remove(&digest) else { return };
        self.host.count(Counter::AsFailures);
        warn!("{} {reason}", LogCode::AsError.code());
        for w in pending.waiting {
            if self.host.enter_context(w.context_id) {
                self.reply_now(&LocalReply::as_unreachable(reason), &w.request.method, &w.request.log_path);
            }
        }
    }

    /// On the root's tick: lookups waiting for the session are sent (or denied when it failed),
    /// and lookups whose answer is overdue are denied.
    pub(super) fn tick_lookups(&self, now_ms: i64) {
        let pending: Vec<(Digest16, bool, i64)> =
            self.lookups.borrow().iter().map(|(d, p)| (*d, p.sent, p.since_ms)).collect();
        let overdue = now_ms - self.timeout_ms() - 1000;
        for (digest, sent, since_ms) in pending {
            if since_ms < overdue {
                self.fail_lookup(digest, "timed out waiting for the AS (resource lookup)");
                continue;
            }
            if sent {
                continue;
            }
            // The session's borrow ends before the lookup is sent (it borrows it again).
            let step = self.session.borrow_mut().step(&self.host);
            match step {
                SessionStep::BackingOff => self.fail_lookup(digest, "authorization server unavailable"),
                SessionStep::Ready => self.send_lookup(digest),
                _ => {}
            }
        }
    }
}
