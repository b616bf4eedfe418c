//! `Worker`: the state one Envoy worker (one VM) shares between its root context and its
//! requests — configuration, the AS session, the caches, the requests paused on the AS and the
//! calls in flight — and the flow that takes a request to its answer.
//!
//! A request whose RPT was seen before is decided synchronously from the caches (no AS call,
//! no signature, no pause). Otherwise it pauses, and every dispatched call is recorded here by
//! its token, so its response is handled whichever context the SDK delivers it to; a request
//! waiting on another context's call is answered by switching the effective context to it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use log::debug;
use proxy_wasm::types::{Action, Status};
use uma_pep_core::cache::{keyed_digest, token_digest, Digest16};
use uma_pep_core::challenge::Challenge;
use uma_pep_core::config::{AsProfile, PepConfig};
use uma_pep_core::decision::{LocalReply, LogCode, Mode, Target};
use uma_pep_core::facts::{self, Decision};
use uma_pep_core::forward::ForwardSigner;
use uma_pep_core::introspection::{introspection_body, Clock, IntrospectionResult};
use uma_pep_core::jwt_rpt::JwtCheck;
use uma_pep_core::matcher::ResourceMatcher;
use uma_pep_core::path::split_query;
use uma_pep_core::session::{AsSession, Endpoints, SessionStep};
use uma_pep_core::wire::{basic_authorization, parse_ticket, permission_request_body, AsError};

use crate::as_session::JwksState;
use crate::caches::{DecisionCache, MintedCache, UseCounter};
use crate::host::{self, AsCall, CallResponse};
use crate::metrics::{Counter, Metrics};
use crate::resource_sync::SyncState;
use crate::shared::SharedKeys;

/// A client-chosen value as it may appear in a log line: printable ASCII, at most 64 characters
/// (a `kid` with a newline must not forge a line).
fn loggable(value: &str) -> String {
    value.chars().take(64).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}

/// Where a paused request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    AwaitingSession,
    AwaitingJwks,
    Introspecting,
    RequestingTicket,
}

/// A request the PEP is deciding.
#[derive(Debug)]
pub struct Flow {
    pub target: Target,
    pub mode: Mode,
    pub method: String,
    /// The path without its query, for the log.
    pub log_path: String,
    /// The RPT still to be checked; `None` once a ticket is the answer.
    rpt: Option<String>,
    rpt_digest: Option<Digest16>,
    /// Why a ticket is asked for, for the log.
    ticket_reason: String,
    stage: Stage,
    retried_credentials: bool,
    jwks_refreshed: bool,
    /// A request waiting for the session or the JWKS is denied after this time (ms).
    deadline_ms: i64,
}

impl Flow {
    pub fn new(target: Target, mode: Mode, method: String, log_path: String, rpt: Option<String>) -> Self {
        let ticket_reason = if rpt.is_some() { String::new() } else { "no usable bearer token".into() };
        let rpt_digest = rpt.as_deref().map(token_digest);
        Self {
            target,
            mode,
            method,
            log_path,
            rpt,
            rpt_digest,
            ticket_reason,
            stage: Stage::AwaitingSession,
            retried_credentials: false,
            jwks_refreshed: false,
            deadline_ms: 0,
        }
    }

    /// From now on the answer is a ticket.
    fn needs_ticket(&mut self, reason: impl Into<String>) {
        self.rpt = None;
        self.ticket_reason = reason.into();
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Call {
    Discovery,
    Pat,
    Jwks,
    /// One introspection serves every request waiting on the same RPT (single flight).
    Introspection(Digest16),
    Permission(u32),
    ResourceTable,
}

/// A call to the AS, ready to dispatch.
pub(crate) struct PreparedCall {
    kind: Call,
    method: &'static str,
    path: String,
    authorization: String,
    content_type: &'static str,
    body: Vec<u8>,
}

impl PreparedCall {
    pub(crate) fn get(kind: Call, path: String) -> Self {
        Self { kind, method: "GET", path, authorization: String::new(), content_type: "", body: Vec::new() }
    }

    pub(crate) fn form(kind: Call, path: String, authorization: String, body: Vec<u8>) -> Self {
        Self {
            kind,
            method: "POST",
            path,
            authorization,
            content_type: "application/x-www-form-urlencoded",
            body,
        }
    }
}

/// How a grant is carried out: in the request's own callback (continue) or later (resume).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Now,
    Resume,
}

pub struct Worker {
    pub config: PepConfig,
    /// The context whose callback is running. The SDK delivers a call's response to the
    /// context whose callback dispatched it, and drops it if that context has ended; so a call
    /// is dispatched only from the root's callbacks or from the callback of the request it is
    /// for, never on behalf of another request (see `deferred`).
    callback_context: Cell<u32>,
    root_context: u32,
    /// Requests whose next call must be dispatched from the root's next tick.
    deferred: RefCell<Vec<u32>>,
    pub(crate) session: RefCell<AsSession>,
    pub(crate) jwks: RefCell<JwksState>,
    flows: RefCell<HashMap<u32, Flow>>,
    /// Calls in flight by token, with when they were sent (a call cancelled with its context
    /// never answers; its entry is dropped by the tick).
    calls: RefCell<HashMap<u32, (Call, i64)>>,
    /// Requests waiting on the introspection of each RPT in flight, and when it was sent.
    introspecting: RefCell<HashMap<Digest16, (i64, Vec<u32>)>>,
    decisions: DecisionCache,
    minted: MintedCache,
    uses: UseCounter,
    pub metrics: Metrics,
    pub(crate) client_basic: String,
    signer: Option<ForwardSigner>,
    /// The forwarded header's spellings, stripped from every request.
    pub forward_spellings: [String; 2],
    /// Names in shared data, private to this configuration.
    pub(crate) keys: SharedKeys,
    /// The resource table in force: the configured one until pepctl's is polled.
    pub(crate) resources: RefCell<Rc<ResourceMatcher>>,
    pub(crate) sync: RefCell<SyncState>,
}

impl Worker {
    /// `fingerprint` identifies the configuration (see `SharedKeys`).
    pub fn new(
        config: PepConfig,
        signer: Option<ForwardSigner>,
        root_context: u32,
        fingerprint: &str,
    ) -> Rc<Self> {
        let keys = SharedKeys::new(fingerprint);
        let client_basic = basic_authorization(&config.client_id, &config.client_secret);
        let session = AsSession { endpoints: Endpoints::from_overrides(&config), ..Default::default() };
        let slots = config.cache_slots;
        let resources = Rc::new(config.resources.clone());
        let forward_spellings = config.forward_header_spellings();
        Rc::new(Self {
            config,
            callback_context: Cell::new(root_context),
            root_context,
            deferred: RefCell::new(Vec::new()),
            session: RefCell::new(session),
            jwks: RefCell::new(JwksState::default()),
            flows: RefCell::new(HashMap::new()),
            calls: RefCell::new(HashMap::new()),
            introspecting: RefCell::new(HashMap::new()),
            decisions: DecisionCache::new(&keys, "decision", slots),
            minted: MintedCache::new(&keys, "minted", slots),
            uses: UseCounter::new(&keys, slots),
            keys,
            forward_spellings,
            metrics: Metrics::define(),
            client_basic,
            signer,
            resources: RefCell::new(resources),
            sync: RefCell::new(SyncState::default()),
        })
    }

    pub fn create_use_slots(&self) {
        self.uses.create_slots();
    }

    /// The JWKS of the forwarding key, when `path` is `forward.jwks_path`.
    pub fn jwks_reply(&self, raw_path: &str) -> Option<LocalReply> {
        let signer = self.signer.as_ref()?;
        let jwks_path = signer.jwks_path.as_deref()?;
        if split_query(raw_path).0 != jwks_path {
            return None;
        }
        let mut reply = LocalReply::authorized(LogCode::Allowed, "jwks");
        reply.headers.push(("content-type".into(), "application/json".into()));
        reply.body = signer.jwks().to_string();
        Some(reply)
    }

    pub(crate) fn timeout_ms(&self) -> i64 {
        i64::try_from(self.config.timeout_ms).unwrap_or(i64::MAX)
    }

    pub fn clock(&self) -> Clock {
        Clock {
            now: host::now_s(),
            margin_s: i64::try_from(self.config.rpt_margin_s).unwrap_or(i64::MAX / 2),
            skew_s: i64::try_from(self.config.clock_skew_s).unwrap_or(0),
        }
    }

    // ---- the flow of one request ------------------------------------------------------------

    /// Decides a protected request: at once when the caches know its RPT (the hot path), else
    /// by pausing it until the AS has answered.
    pub fn start(&self, context_id: u32, mut flow: Flow) -> Action {
        let now = host::now_s();
        flow.deadline_ms = host::now_ms() + self.timeout_ms();
        if let (Some(rpt), Some(digest)) = (flow.rpt.as_deref(), flow.rpt_digest) {
            let max = self.config.rpt_max_uses;
            if max > 0 && self.uses.used_up(&digest, max, now) {
                flow.needs_ticket("RPT used up");
            } else if let Some(result) = self.decisions.get(&digest, now) {
                self.metrics.increment(Counter::CacheHits);
                return self.decide(context_id, flow, &result, Delivery::Now);
            } else {
                match self.check_jwt_now(rpt) {
                    Some(JwtCheck::Valid(result)) => {
                        let result = self.remember(digest, result);
                        return self.decide(context_id, flow, &result, Delivery::Now);
                    }
                    Some(JwtCheck::Invalid(reason)) => {
                        self.remember_invalid(digest);
                        flow.needs_ticket(reason);
                    }
                    _ => {}
                }
            }
        }
        self.flows.borrow_mut().insert(context_id, flow);
        self.advance(context_id);
        Action::Pause
    }

    /// A JWT RPT checked against the JWKS this worker already holds; `None` when no keys are
    /// held (or local validation is off).
    fn check_jwt_now(&self, rpt: &str) -> Option<JwtCheck> {
        self.jwks_path()?;
        let keys = self.jwks.borrow().keys.clone()?;
        Some(keys.check(
            rpt,
            &self.config.issuer,
            self.config.rpt_audience.as_deref(),
            self.config.as_profile,
        ))
    }

    /// The request went away (client reset, stream end): nothing more to do for it.
    pub fn forget(&self, context_id: u32) {
        self.flows.borrow_mut().remove(&context_id);
    }

    fn set_stage(&self, context_id: u32, stage: Stage) {
        if let Some(flow) = self.flows.borrow_mut().get_mut(&context_id) {
            flow.stage = stage;
        }
    }

    /// Moves a paused request to its next step: wait for the session or the JWKS, check a JWT
    /// RPT locally, introspect, or ask for a ticket.
    fn advance(&self, context_id: u32) {
        match self.session_step() {
            SessionStep::Ready => {}
            SessionStep::BackingOff => {
                self.deny_as_error(context_id, "authorization server unavailable".into());
                return;
            }
            SessionStep::Waiting | SessionStep::FetchDiscovery | SessionStep::FetchPat => {
                self.set_stage(context_id, Stage::AwaitingSession);
                self.drive_session();
                return;
            }
        }
        let (rpt, digest) = match self.flows.borrow().get(&context_id) {
            Some(flow) => (flow.rpt.clone(), flow.rpt_digest),
            None => return,
        };
        match (rpt, digest) {
            (Some(rpt), Some(digest)) => self.check_rpt(context_id, &rpt, digest),
            _ => self.request_ticket(context_id),
        }
    }

    fn check_rpt(&self, context_id: u32, rpt: &str, digest: Digest16) {
        if let Some(result) = self.decisions.get(&digest, host::now_s()) {
            // Another request brought the answer meanwhile.
            self.metrics.increment(Counter::CacheHits);
            self.decide_paused(context_id, &result);
            return;
        }
        let looks_like_jwt = rpt.split('.').count() == 3;
        if looks_like_jwt && self.jwks_path().is_some() && !self.jwks.borrow().failed {
            let Some(check) = self.check_jwt_now(rpt) else {
                self.set_stage(context_id, Stage::AwaitingJwks);
                self.ensure_jwks();
                return;
            };
            match check {
                JwtCheck::Valid(result) => {
                    let result = self.remember(digest, result);
                    self.decide_paused(context_id, &result);
                    return;
                }
                JwtCheck::Invalid(reason) => {
                    self.remember_invalid(digest);
                    self.ticket_instead(context_id, reason);
                    return;
                }
                JwtCheck::UnknownKey(kid) => {
                    let refreshed = self.flows.borrow().get(&context_id).is_some_and(|f| f.jwks_refreshed);
                    if refreshed || !self.jwks_refresh_allowed() {
                        // Not in the JWKS even after a refresh: the AS may still know it (a
                        // key it does not publish); it decides, not this filter.
                        debug!("JWT signed with key {} not in the JWKS: introspecting", loggable(&kid));
                        self.introspect(context_id, rpt, digest);
                        return;
                    }
                    if let Some(flow) = self.flows.borrow_mut().get_mut(&context_id) {
                        flow.jwks_refreshed = true;
                        flow.stage = Stage::AwaitingJwks;
                    }
                    self.request_jwks_refresh();
                    return;
                }
                JwtCheck::Uncheckable(reason) => {
                    debug!("JWT not verifiable locally ({reason}): introspecting");
                }
                JwtCheck::NotAJwt => {}
            }
        }
        self.introspect(context_id, rpt, digest);
    }

    fn introspect(&self, context_id: u32, rpt: &str, digest: Digest16) {
        self.set_stage(context_id, Stage::Introspecting);
        if let Some((_, waiting)) = self.introspecting.borrow_mut().get_mut(&digest) {
            waiting.push(context_id);
            return;
        }
        if self.deferred_to_tick(context_id) {
            return;
        }
        let session = self.session.borrow();
        let (Some(endpoints), Some(pat)) = (&session.endpoints, &session.pat) else { return };
        let Some(path) = endpoints.introspection.clone() else {
            drop(session);
            self.deny_as_error(context_id, "the AS publishes no introspection endpoint".into());
            return;
        };
        let authorization = match self.config.as_profile {
            AsProfile::Uma2 => format!("Bearer {}", pat.value),
            AsProfile::Keycloak => self.client_basic.clone(),
        };
        drop(session);
        let call = PreparedCall::form(
            Call::Introspection(digest),
            path,
            authorization,
            introspection_body(self.config.as_profile, rpt),
        );
        self.metrics.increment(Counter::Introspections);
        match self.dispatch(call) {
            Ok(_) => {
                self.introspecting.borrow_mut().insert(digest, (host::now_ms(), vec![context_id]));
            }
            Err(status) => self.dispatch_failed(context_id, status),
        }
    }

    fn request_ticket(&self, context_id: u32) {
        let (path, pat) = {
            let session = self.session.borrow();
            match (&session.endpoints, &session.pat) {
                (Some(e), Some(p)) => (e.permission.clone(), p.value.clone()),
                _ => return,
            }
        };
        let body = {
            let mut flows = self.flows.borrow_mut();
            let Some(flow) = flows.get_mut(&context_id) else { return };
            flow.stage = Stage::RequestingTicket;
            permission_request_body(&flow.target.resource_id, &[flow.target.scope.as_str()])
        };
        if self.deferred_to_tick(context_id) {
            return;
        }
        let call = PreparedCall {
            kind: Call::Permission(context_id),
            method: "POST",
            path,
            authorization: format!("Bearer {pat}"),
            content_type: "application/json",
            body,
        };
        if let Err(status) = self.dispatch(call) {
            self.dispatch_failed(context_id, status);
        }
    }

    /// True (and queued) when a call for `context_id` cannot be dispatched from this callback.
    fn deferred_to_tick(&self, context_id: u32) -> bool {
        let callback = self.callback_context.get();
        if callback == context_id || callback == self.root_context {
            return false;
        }
        self.deferred.borrow_mut().push(context_id);
        true
    }

    /// Whether a call not tied to one request (discovery, PAT, JWKS, the resource table) may be
    /// dispatched now: from the root only, which never ends (a request that made it could end
    /// first, and the call with it). Elsewhere it waits for the next tick.
    pub(crate) fn may_dispatch_shared_call(&self) -> bool {
        self.callback_context.get() == self.root_context
    }

    fn dispatch_failed(&self, context_id: u32, status: Status) {
        self.metrics.increment(Counter::AsFailures);
        self.deny_as_error(context_id, format!("AS call could not be dispatched ({status:?})"));
    }

    /// Caches a decision for as long as the RPT may be accepted, within `cache_max_ttl_s`.
    fn remember(&self, digest: Digest16, result: IntrospectionResult) -> Rc<IntrospectionResult> {
        let clock = self.clock();
        let max_ttl = i64::try_from(self.config.cache_max_ttl_s).unwrap_or(0);
        let negative_ttl = i64::try_from(self.config.negative_cache_ttl_s).unwrap_or(0);
        let until = if result.active {
            let by_exp = result.exp.map_or(clock.now + max_ttl, |exp| exp - clock.margin_s);
            by_exp.min(clock.now + max_ttl)
        } else {
            clock.now + negative_ttl
        };
        let result = Rc::new(result);
        self.decisions.put(&digest, until, Rc::clone(&result), clock.now);
        result
    }

    fn remember_invalid(&self, digest: Digest16) {
        let inactive = IntrospectionResult {
            active: false,
            exp: None,
            iat: None,
            nbf: None,
            sub: None,
            client_id: None,
            permissions: Vec::new(),
            claims: serde_json::Map::new(),
        };
        self.remember(digest, inactive);
    }

    fn on_introspection(&self, digest: Digest16, response: &CallResponse) {
        let waiting = self.introspecting.borrow_mut().remove(&digest).map(|(_, w)| w).unwrap_or_default();
        match IntrospectionResult::parse(&response.as_response()) {
            Err(AsError::CredentialsRefused { .. }) if self.config.as_profile == AsProfile::Uma2 => {
                for id in waiting {
                    self.retry_with_new_pat(id);
                }
            }
            Err(e) => {
                self.metrics.increment(Counter::AsFailures);
                for id in waiting {
                    self.deny_as_error(id, format!("introspection failed: {e}"));
                }
            }
            Ok(mut result) => {
                let rpt =
                    waiting.iter().find_map(|id| self.flows.borrow().get(id).and_then(|f| f.rpt.clone()));
                if let Some(rpt) = rpt {
                    result.complete_identity_from_jwt(&rpt);
                }
                let result = self.remember(digest, result);
                for id in waiting {
                    self.decide_paused(id, &result);
                }
            }
        }
    }

    fn decide_paused(&self, context_id: u32, result: &IntrospectionResult) {
        let Some(flow) = self.flows.borrow_mut().remove(&context_id) else { return };
        self.decide(context_id, flow, result, Delivery::Resume);
    }

    /// Allows when the RPT covers the resource and scope; otherwise the answer is a ticket.
    fn decide(
        &self,
        context_id: u32,
        mut flow: Flow,
        result: &IntrospectionResult,
        delivery: Delivery,
    ) -> Action {
        let verdict =
            result.covers(&flow.target.resource_id, &flow.target.scope, self.clock(), self.config.as_profile);
        if let Err(insufficiency) = verdict {
            flow.needs_ticket(insufficiency.as_str());
            return self.continue_paused(context_id, flow);
        }
        if let Some(digest) = flow.rpt_digest {
            let max = self.config.rpt_max_uses;
            // An RPT without `exp` keeps its count for as long as the Envoy runs.
            let expires = result.exp.unwrap_or(i64::MAX);
            if max > 0 && !self.uses.take(&digest, max, expires, host::now_s()) {
                flow.needs_ticket("RPT used up");
                return self.continue_paused(context_id, flow);
            }
        }
        let forwarded = match (&self.signer, flow.rpt_digest) {
            (Some(signer), Some(digest)) => {
                match self.forwarded_token(signer, &digest, &flow.target.resource_id, result) {
                    Ok(token) => Some((signer.header_name.clone(), token)),
                    Err(reason) => {
                        return self.reply(context_id, &flow, &LocalReply::signing_failed(reason), delivery);
                    }
                }
            }
            _ => None,
        };
        if delivery == Delivery::Resume && !host::enter_context(context_id) {
            return Action::Pause;
        }
        self.metrics.increment(Counter::Allowed);
        let subject = facts::subject(result);
        host::record_facts(Decision::Allowed, Some(&flow.target.resource_id), subject.as_deref());
        self.log_decision(LogCode::Allowed, &flow, "RPT covers resource and scope");
        match flow.mode {
            Mode::Full => {
                if let Some(path) = &flow.target.rewrite {
                    host::set_request_header(":path", Some(path));
                }
                if let Some((header, token)) = &forwarded {
                    host::set_request_header(header, Some(token));
                }
                if self.signer.as_ref().is_some_and(|s| s.strip_authorization) {
                    host::set_request_header("authorization", None);
                }
                match delivery {
                    Delivery::Now => Action::Continue,
                    Delivery::Resume => {
                        host::resume_request();
                        Action::Pause
                    }
                }
            }
            Mode::Partial => {
                let mut reply = LocalReply::authorized(LogCode::Allowed, "");
                if let Some((header, token)) = forwarded {
                    reply.headers.push((header, token.to_string()));
                }
                host::send_reply(&reply);
                Action::Pause
            }
        }
    }

    /// Puts a request that needs a ticket back on the paused path.
    fn continue_paused(&self, context_id: u32, mut flow: Flow) -> Action {
        flow.stage = Stage::RequestingTicket;
        self.flows.borrow_mut().insert(context_id, flow);
        self.advance(context_id);
        Action::Pause
    }

    fn ticket_instead(&self, context_id: u32, reason: String) {
        if let Some(flow) = self.flows.borrow_mut().get_mut(&context_id) {
            flow.needs_ticket(reason);
        }
        self.advance(context_id);
    }

    /// The JWT for the upstream: minted once per (RPT, resource) and reused, from this worker's
    /// cache or the one all workers share, until `rpt_margin_s` before it expires.
    fn forwarded_token(
        &self,
        signer: &ForwardSigner,
        rpt_digest: &Digest16,
        resource_id: &str,
        result: &IntrospectionResult,
    ) -> Result<Rc<str>, String> {
        let key = keyed_digest(rpt_digest, resource_id);
        let clock = self.clock();
        if let Some(token) = self.minted.get(&key, clock.now) {
            return Ok(token);
        }
        let claims = signer.claims(result, resource_id, clock.now);
        let started = host::now_ns();
        let token = signer.sign(&claims).map_err(|e| e.to_string())?;
        let took_us = (host::now_ns() - started) / 1000;
        self.metrics.increment(Counter::JwtMinted);
        debug!("minted forwarded JWT alg={:?} in {took_us} us", signer.alg());
        let exp = claims.get("exp").and_then(serde_json::Value::as_i64).unwrap_or(clock.now);
        let token: Rc<str> = Rc::from(token);
        self.minted.put(&key, exp - clock.margin_s, Rc::clone(&token), clock.now);
        Ok(token)
    }

    fn on_ticket(&self, context_id: u32, response: &CallResponse) {
        let retry = match self.flows.borrow().get(&context_id) {
            Some(flow) => !flow.retried_credentials,
            None => return,
        };
        match parse_ticket(&response.as_response()) {
            Ok(ticket) => {
                self.metrics.increment(Counter::Tickets);
                let Some(flow) = self.flows.borrow_mut().remove(&context_id) else { return };
                let challenge =
                    Challenge { realm: &self.config.realm, as_uri: &self.config.issuer, ticket: &ticket };
                let reply = LocalReply::challenge(
                    challenge.header_value(self.config.challenge_style),
                    flow.ticket_reason.clone(),
                );
                self.reply(context_id, &flow, &reply, Delivery::Resume);
            }
            Err(AsError::CredentialsRefused { .. }) if retry => self.retry_with_new_pat(context_id),
            Err(e) => {
                self.metrics.increment(Counter::AsFailures);
                self.deny_as_error(context_id, format!("permission request failed: {e}"));
            }
        }
    }

    /// A 401/403 from a protection call: the PAT may have been revoked; fetch one and retry once.
    fn retry_with_new_pat(&self, context_id: u32) {
        let retried = match self.flows.borrow_mut().get_mut(&context_id) {
            Some(flow) => std::mem::replace(&mut flow.retried_credentials, true),
            None => return,
        };
        if retried {
            self.metrics.increment(Counter::AsFailures);
            self.deny_as_error(context_id, "the AS refused a fresh PAT".into());
            return;
        }
        self.set_stage(context_id, Stage::AwaitingSession);
        self.invalidate_pat();
        self.advance(context_id);
    }

    fn deny_as_error(&self, context_id: u32, reason: String) {
        let Some(flow) = self.flows.borrow_mut().remove(&context_id) else { return };
        self.reply(context_id, &flow, &LocalReply::as_unreachable(reason), Delivery::Resume);
    }

    /// Sends a local reply and logs the decision.
    fn reply(&self, context_id: u32, flow: &Flow, reply: &LocalReply, delivery: Delivery) -> Action {
        if delivery == Delivery::Resume && !host::enter_context(context_id) {
            return Action::Pause;
        }
        self.metrics.increment(Counter::Denied);
        host::record_facts(Decision::of_reply(reply), Some(&flow.target.resource_id), None);
        self.log_decision(reply.code, flow, &reply.reason);
        host::send_reply(reply);
        Action::Pause
    }

    fn log_decision(&self, code: LogCode, flow: &Flow, reason: &str) {
        let outcome = match code {
            LogCode::Allowed => "allowed",
            LogCode::TicketIssued => "401",
            _ => "denied",
        };
        // One line per request at `debug` (Envoy logs nothing per request at `info`); a failing
        // AS is an operator's business at once.
        let level = if code == LogCode::AsError { log::Level::Warn } else { log::Level::Debug };
        // Formatted only when the level is on (the host's level is followed, see `root`).
        log::log!(
            level,
            "{} {} {} resource={} scope={} {outcome}: {reason}",
            code.code(),
            flow.method,
            flow.log_path,
            flow.target.resource_id,
            flow.target.scope,
        );
    }

    // ---- waiting requests ----------------------------------------------------------------------

    fn requests_in(&self, stage: Stage) -> Vec<u32> {
        self.flows.borrow().iter().filter(|(_, f)| f.stage == stage).map(|(id, _)| *id).collect()
    }

    pub(crate) fn wake_waiters(&self) {
        for id in self.requests_in(Stage::AwaitingSession) {
            self.advance(id);
        }
    }

    pub(crate) fn awaits_jwks(&self) -> bool {
        self.flows.borrow().values().any(|f| f.stage == Stage::AwaitingJwks)
    }

    pub(crate) fn wake_jwks_waiters(&self) {
        for id in self.requests_in(Stage::AwaitingJwks) {
            self.advance(id);
        }
    }

    pub(crate) fn fail_waiters(&self, reason: &str) {
        for id in self.requests_in(Stage::AwaitingSession) {
            self.deny_as_error(id, reason.to_string());
        }
    }

    /// Periodic work: start discovery and the PAT early, refresh the PAT before it expires,
    /// pick up what other workers fetched, and deny requests that waited longer than
    /// `timeout_ms`.
    pub fn tick(&self) {
        let deferred = std::mem::take(&mut *self.deferred.borrow_mut());
        for id in deferred {
            self.advance(id);
        }
        let now = host::now_ms();
        // A call lost with the context that made it (a client that went away) must not leave
        // the requests that joined it waiting: they are denied once it is overdue.
        let overdue = now - self.timeout_ms() - 1000;
        self.introspecting.borrow_mut().retain(|_, (sent, _)| *sent > overdue);
        self.calls.borrow_mut().retain(|_, (_, sent)| *sent > overdue);
        let in_flight: Vec<u32> = self.introspecting.borrow().values().flat_map(|(_, w)| w.clone()).collect();
        let expired: Vec<u32> = self
            .flows
            .borrow()
            .iter()
            .filter(|(id, f)| match f.stage {
                Stage::AwaitingSession | Stage::AwaitingJwks => now > f.deadline_ms,
                Stage::Introspecting => !in_flight.contains(id),
                Stage::RequestingTicket => now > f.deadline_ms + self.timeout_ms() * 2 + 1000,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.metrics.increment(Counter::AsFailures);
            self.deny_as_error(id, "timed out waiting for the AS".into());
        }
        self.drive_session();
        self.sync_resources();
    }

    // ---- call plumbing ---------------------------------------------------------------------

    /// Records whose callback is running; every entry point into the worker calls this first.
    pub fn enter_callback(&self, context_id: u32) {
        self.callback_context.set(context_id);
    }

    pub(crate) fn dispatch(&self, call: PreparedCall) -> Result<u32, Status> {
        let mut headers = Vec::new();
        if !call.authorization.is_empty() {
            headers.push(("authorization", call.authorization.as_str()));
        }
        if !call.content_type.is_empty() {
            headers.push(("content-type", call.content_type));
        }
        let as_call = AsCall {
            cluster: &self.config.as_cluster,
            authority: &self.config.as_authority,
            method: call.method,
            path: &call.path,
            headers,
            body: (!call.body.is_empty()).then_some(call.body.as_slice()),
            timeout_ms: self.config.timeout_ms,
        };
        self.dispatch_raw(as_call, call.kind)
    }

    /// Dispatches a call on the callback's own context (Envoy attaches the call to the
    /// effective context) and records what its response is for.
    pub(crate) fn dispatch_raw(&self, call: AsCall<'_>, kind: Call) -> Result<u32, Status> {
        host::enter_context(self.callback_context.get());
        let token = call.dispatch()?;
        self.calls.borrow_mut().insert(token, (kind, host::now_ms()));
        Ok(token)
    }

    /// Handles the response of any call this worker dispatched.
    pub fn on_call_response(&self, token: u32, num_headers: usize, body_size: usize) {
        let Some((kind, _)) = self.calls.borrow_mut().remove(&token) else { return };
        let response = CallResponse::read(num_headers, body_size);
        match kind {
            Call::Discovery => self.on_discovery(&response),
            Call::Pat => self.on_pat(&response),
            Call::Jwks => self.on_jwks(&response),
            Call::Introspection(digest) => self.on_introspection(digest, &response),
            Call::Permission(id) => self.on_ticket(id, &response),
            Call::ResourceTable => self.on_resource_table(&response),
        }
    }
}
