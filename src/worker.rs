//! `Worker`: the state one Envoy worker (one VM) shares between its root context and its
//! requests — configuration, the AS session, the requests paused on the AS, and the calls in
//! flight — and the flow that takes a paused request to its answer.
//!
//! Every dispatched call is recorded here by its token, so its response can be handled
//! whichever context the SDK delivers it to. A request waiting on another context's call
//! (discovery, PAT) is resumed by switching the effective context to it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use log::{info, warn};
use uma_pep_core::cache::{keyed_digest, token_digest, Digest16, LocalCache};
use uma_pep_core::challenge::Challenge;
use uma_pep_core::config::{AsProfile, PepConfig};
use uma_pep_core::decision::{LocalReply, LogCode, Mode, Target};
use uma_pep_core::forward::ForwardSigner;
use uma_pep_core::introspection::{introspection_body, Clock, IntrospectionResult};
use uma_pep_core::path::split_query;
use uma_pep_core::session::{AsSession, Endpoints, SessionStep};
use uma_pep_core::wire::{
    basic_authorization, parse_ticket, pat_request_body, permission_request_body, AccessToken,
    AsError, Discovery,
};

use crate::host::{self, AsCall, CallResponse};
use crate::metrics::{Counter, Metrics};
use crate::shared::SharedSlots;

/// Where a paused request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    AwaitingSession,
    Introspecting,
    RequestingTicket,
}

/// A request paused while the PEP asks the AS about it.
#[derive(Debug)]
pub struct Flow {
    pub target: Target,
    pub mode: Mode,
    pub method: String,
    /// The path without its query, for the log.
    pub log_path: String,
    /// The RPT still to be checked; `None` once a ticket is the answer.
    pub rpt: Option<String>,
    rpt_digest: Option<Digest16>,
    /// Why a ticket is asked for, for the log.
    pub ticket_reason: &'static str,
    stage: Stage,
    retried_credentials: bool,
    /// A request waiting for the session is denied after this time (ms).
    deadline_ms: i64,
}

impl Flow {
    pub fn new(
        target: Target,
        mode: Mode,
        method: String,
        log_path: String,
        rpt: Option<String>,
    ) -> Self {
        let ticket_reason = if rpt.is_some() {
            ""
        } else {
            "no usable bearer token"
        };
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
            deadline_ms: 0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Call {
    Discovery,
    Pat,
    Introspection(u32),
    Permission(u32),
}

/// Above this many distinct RPTs the per-worker use counts start over (bounded memory).
const MAX_TRACKED_RPTS: usize = 100_000;
/// Minted tokens kept per worker, and slots of the shared minted-token cache.
const MINTED_LOCAL_ENTRIES: usize = 10_000;
const MINTED_SHARED_SLOTS: u32 = 4096;

pub struct Worker {
    pub config: PepConfig,
    session: RefCell<AsSession>,
    flows: RefCell<HashMap<u32, Flow>>,
    calls: RefCell<HashMap<u32, Call>>,
    uses: RefCell<HashMap<Digest16, u32>>,
    pub metrics: Metrics,
    client_basic: String,
    pub signer: Option<ForwardSigner>,
    minted_local: RefCell<LocalCache<Rc<str>>>,
    minted_shared: SharedSlots,
}

impl Worker {
    pub fn new(config: PepConfig, signer: Option<ForwardSigner>) -> Rc<Self> {
        let client_basic = basic_authorization(&config.client_id, &config.client_secret);
        let session = AsSession {
            endpoints: Endpoints::from_overrides(&config),
            ..Default::default()
        };
        Rc::new(Self {
            config,
            session: RefCell::new(session),
            flows: RefCell::new(HashMap::new()),
            calls: RefCell::new(HashMap::new()),
            uses: RefCell::new(HashMap::new()),
            metrics: Metrics::define(),
            client_basic,
            signer,
            minted_local: RefCell::new(LocalCache::new(MINTED_LOCAL_ENTRIES)),
            minted_shared: SharedSlots::new("minted", MINTED_SHARED_SLOTS),
        })
    }

    /// The JWKS of the forwarding key, when `path` is `forward.jwks_path`.
    pub fn jwks_reply(&self, raw_path: &str) -> Option<LocalReply> {
        let signer = self.signer.as_ref()?;
        let jwks_path = signer.jwks_path.as_deref()?;
        if split_query(raw_path).0 != jwks_path {
            return None;
        }
        let mut reply = LocalReply::authorized(LogCode::Allowed, "jwks");
        reply
            .headers
            .push(("content-type".into(), "application/json".into()));
        reply.body = signer.jwks().to_string();
        Some(reply)
    }

    fn timeout_ms(&self) -> i64 {
        i64::try_from(self.config.timeout_ms).unwrap_or(i64::MAX)
    }

    // ---- the per-request flow -------------------------------------------------------------

    /// Takes over a paused request.
    pub fn start(&self, context_id: u32, mut flow: Flow) {
        flow.deadline_ms = host::now_ms() + self.timeout_ms();
        if let Some(digest) = &flow.rpt_digest {
            if self.uses_exhausted(digest) {
                flow.rpt = None;
                flow.ticket_reason = "RPT used up";
            }
        }
        self.flows.borrow_mut().insert(context_id, flow);
        self.advance(context_id);
    }

    /// The request went away (client reset, stream end): nothing more to do for it.
    pub fn forget(&self, context_id: u32) {
        self.flows.borrow_mut().remove(&context_id);
    }

    /// Moves a request to its next AS call, or parks it until the session is ready.
    fn advance(&self, context_id: u32) {
        match self.session_step() {
            SessionStep::Ready => {}
            SessionStep::BackingOff => {
                self.deny_as_error(context_id, "authorization server unavailable".into());
                return;
            }
            SessionStep::Waiting | SessionStep::FetchDiscovery | SessionStep::FetchPat => {
                if let Some(flow) = self.flows.borrow_mut().get_mut(&context_id) {
                    flow.stage = Stage::AwaitingSession;
                }
                self.drive_session();
                return;
            }
        }
        let (endpoints, pat) = {
            let session = self.session.borrow();
            match (&session.endpoints, &session.pat) {
                (Some(e), Some(p)) => (e.clone(), p.value.clone()),
                _ => return,
            }
        };
        let call = {
            let mut flows = self.flows.borrow_mut();
            let Some(flow) = flows.get_mut(&context_id) else {
                return;
            };
            match &flow.rpt {
                Some(rpt) => {
                    let Some(path) = endpoints.introspection.clone() else {
                        drop(flows);
                        self.deny_as_error(
                            context_id,
                            "the AS publishes no introspection endpoint".into(),
                        );
                        return;
                    };
                    flow.stage = Stage::Introspecting;
                    PreparedCall {
                        kind: Call::Introspection(context_id),
                        method: "POST",
                        path,
                        authorization: match self.config.as_profile {
                            AsProfile::Uma2 => format!("Bearer {pat}"),
                            AsProfile::Keycloak => self.client_basic.clone(),
                        },
                        content_type: "application/x-www-form-urlencoded",
                        body: introspection_body(self.config.as_profile, rpt),
                    }
                }
                None => {
                    flow.stage = Stage::RequestingTicket;
                    PreparedCall {
                        kind: Call::Permission(context_id),
                        method: "POST",
                        path: endpoints.permission.clone(),
                        authorization: format!("Bearer {pat}"),
                        content_type: "application/json",
                        body: permission_request_body(
                            &flow.target.resource_id,
                            &[flow.target.scope.as_str()],
                        ),
                    }
                }
            }
        };
        if matches!(call.kind, Call::Introspection(_)) {
            self.metrics.increment(Counter::Introspections);
        }
        if let Err(status) = self.dispatch(call) {
            self.metrics.increment(Counter::AsFailures);
            self.deny_as_error(
                context_id,
                format!("AS call could not be dispatched ({status:?})"),
            );
        }
    }

    fn on_introspection(&self, context_id: u32, response: &CallResponse) {
        let retry = {
            let flows = self.flows.borrow();
            let Some(flow) = flows.get(&context_id) else {
                return;
            };
            !flow.retried_credentials && self.config.as_profile == AsProfile::Uma2
        };
        match IntrospectionResult::parse(&response.as_response()) {
            Err(AsError::CredentialsRefused(_)) if retry => self.retry_with_new_pat(context_id),
            Err(e) => {
                self.metrics.increment(Counter::AsFailures);
                self.deny_as_error(context_id, format!("introspection failed: {e}"));
            }
            Ok(result) => {
                let verdict = {
                    let flows = self.flows.borrow();
                    let Some(flow) = flows.get(&context_id) else {
                        return;
                    };
                    result.covers(
                        &flow.target.resource_id,
                        &flow.target.scope,
                        self.clock(),
                        self.config.as_profile,
                    )
                };
                match verdict {
                    Ok(()) => self.allow(context_id, &result),
                    Err(insufficiency) => {
                        if let Some(flow) = self.flows.borrow_mut().get_mut(&context_id) {
                            flow.rpt = None;
                            flow.ticket_reason = insufficiency.as_str();
                        }
                        self.advance(context_id);
                    }
                }
            }
        }
    }

    fn on_ticket(&self, context_id: u32, response: &CallResponse) {
        let retry = match self.flows.borrow().get(&context_id) {
            Some(flow) => !flow.retried_credentials,
            None => return,
        };
        match parse_ticket(&response.as_response()) {
            Ok(ticket) => {
                self.metrics.increment(Counter::Tickets);
                let Some(flow) = self.flows.borrow_mut().remove(&context_id) else {
                    return;
                };
                let challenge = Challenge {
                    realm: &self.config.realm,
                    as_uri: &self.config.issuer,
                    ticket: &ticket,
                };
                let reply = LocalReply::challenge(
                    challenge.header_value(self.config.challenge_style),
                    flow.ticket_reason,
                );
                self.answer(context_id, &flow, &reply);
            }
            Err(AsError::CredentialsRefused(_)) if retry => self.retry_with_new_pat(context_id),
            Err(e) => {
                self.metrics.increment(Counter::AsFailures);
                self.deny_as_error(context_id, format!("permission request failed: {e}"));
            }
        }
    }

    /// A 401/403 from a protection call: the PAT may have been revoked; fetch one and retry once.
    fn retry_with_new_pat(&self, context_id: u32) {
        if let Some(flow) = self.flows.borrow_mut().get_mut(&context_id) {
            flow.retried_credentials = true;
            flow.stage = Stage::AwaitingSession;
        }
        self.session.borrow_mut().invalidate_pat();
        self.advance(context_id);
    }

    fn allow(&self, context_id: u32, result: &IntrospectionResult) {
        let Some(mut flow) = self.flows.borrow_mut().remove(&context_id) else {
            return;
        };
        if let Some(digest) = &flow.rpt_digest {
            if flow.rpt.is_some() && !self.count_use(digest) {
                // Another request used the last permitted use meanwhile.
                flow.rpt = None;
                flow.ticket_reason = "RPT used up";
                flow.stage = Stage::RequestingTicket;
                self.flows.borrow_mut().insert(context_id, flow);
                self.advance(context_id);
                return;
            }
        }
        let forwarded = match (&self.signer, &flow.rpt_digest) {
            (Some(signer), Some(digest)) => {
                match self.forwarded_token(signer, digest, &flow.target.resource_id, result) {
                    Ok(token) => Some((signer.header_name.as_str(), token)),
                    Err(reason) => {
                        self.answer(context_id, &flow, &LocalReply::signing_failed(reason));
                        return;
                    }
                }
            }
            _ => None,
        };
        if !host::enter_context(context_id) {
            return;
        }
        self.metrics.increment(Counter::Allowed);
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
                host::resume_request();
            }
            Mode::Partial => {
                let mut reply = LocalReply::authorized(LogCode::Allowed, "");
                if let Some((header, token)) = forwarded {
                    reply.headers.push((header.to_string(), token.to_string()));
                }
                host::send_reply(&reply);
            }
        }
    }

    /// The JWT for the upstream: minted once per (RPT, resource) and reused, from this
    /// worker's cache or the one all workers share, until `rpt_margin_s` before it expires.
    fn forwarded_token(
        &self,
        signer: &ForwardSigner,
        rpt_digest: &Digest16,
        resource_id: &str,
        result: &IntrospectionResult,
    ) -> Result<Rc<str>, String> {
        let key = keyed_digest(rpt_digest, resource_id);
        let now = host::now_s();
        if let Some(token) = self.minted_local.borrow().get(&key, now) {
            return Ok(Rc::clone(token));
        }
        let margin = self.clock().margin_s;
        if let Some(bytes) = self.minted_shared.get(&key, now) {
            if let Ok(text) = String::from_utf8(bytes) {
                let token: Rc<str> = Rc::from(text);
                let expires = result.exp.map_or(now + 60, |e| e - margin);
                self.minted_local
                    .borrow_mut()
                    .insert(key, expires, Rc::clone(&token), now);
                return Ok(token);
            }
        }
        let claims = signer.claims(result, resource_id, now);
        let started = host::now_ns();
        let token = signer.sign(&claims).map_err(|e| e.to_string())?;
        let took_us = (host::now_ns() - started) / 1000;
        self.metrics.increment(Counter::JwtMinted);
        info!(
            "minted forwarded JWT alg={:?} in {took_us} us",
            signer.alg()
        );
        let expires = claims
            .get("exp")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(now)
            - margin;
        self.minted_shared.put(&key, expires, token.as_bytes());
        let token: Rc<str> = Rc::from(token);
        self.minted_local
            .borrow_mut()
            .insert(key, expires, Rc::clone(&token), now);
        Ok(token)
    }

    fn deny_as_error(&self, context_id: u32, reason: String) {
        let Some(flow) = self.flows.borrow_mut().remove(&context_id) else {
            return;
        };
        self.answer(context_id, &flow, &LocalReply::as_unreachable(reason));
    }

    /// Sends a local reply for a paused request and logs the decision.
    fn answer(&self, context_id: u32, flow: &Flow, reply: &LocalReply) {
        if !host::enter_context(context_id) {
            return;
        }
        self.metrics.increment(Counter::Denied);
        self.log_decision(reply.code, flow, &reply.reason);
        host::send_reply(reply);
    }

    fn log_decision(&self, code: LogCode, flow: &Flow, reason: &str) {
        let line = format!(
            "{} {} {} resource={} scope={} status={}: {}",
            code.code(),
            flow.method,
            flow.log_path,
            flow.target.resource_id,
            flow.target.scope,
            match code {
                LogCode::Allowed => "allowed",
                LogCode::TicketIssued => "401",
                _ => "403",
            },
            reason
        );
        if code == LogCode::AsError {
            warn!("{line}");
        } else {
            info!("{line}");
        }
    }

    pub fn clock(&self) -> Clock {
        Clock {
            now: host::now_s(),
            margin_s: i64::try_from(self.config.rpt_margin_s).unwrap_or(i64::MAX / 2),
            skew_s: i64::try_from(self.config.clock_skew_s).unwrap_or(0),
        }
    }

    // ---- rpt_max_uses (per worker) ------------------------------------------------------

    fn uses_exhausted(&self, digest: &Digest16) -> bool {
        let max = self.config.rpt_max_uses;
        max > 0 && self.uses.borrow().get(digest).is_some_and(|n| *n >= max)
    }

    /// Counts one accepted use; false when the RPT has none left.
    fn count_use(&self, digest: &Digest16) -> bool {
        let max = self.config.rpt_max_uses;
        if max == 0 {
            return true;
        }
        let mut uses = self.uses.borrow_mut();
        if uses.len() >= MAX_TRACKED_RPTS {
            uses.clear();
        }
        let n = uses.entry(*digest).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    // ---- the AS session ------------------------------------------------------------------

    fn session_step(&self) -> SessionStep {
        self.session
            .borrow()
            .next_step(host::now_ms(), self.timeout_ms())
    }

    /// Starts the discovery or PAT call the session needs, or settles the waiting requests.
    fn drive_session(&self) {
        match self.session_step() {
            SessionStep::Waiting => {}
            SessionStep::Ready => self.wake_waiters(),
            SessionStep::BackingOff => self.fail_waiters("authorization server unavailable"),
            SessionStep::FetchDiscovery => {
                let call = PreparedCall {
                    kind: Call::Discovery,
                    method: "GET",
                    path: self.config.discovery_path(),
                    authorization: String::new(),
                    content_type: "",
                    body: Vec::new(),
                };
                self.dispatch_session_call(call);
            }
            SessionStep::FetchPat => {
                let Some(path) = self
                    .session
                    .borrow()
                    .endpoints
                    .as_ref()
                    .map(|e| e.token.clone())
                else {
                    return;
                };
                self.metrics.increment(Counter::PatRequests);
                let call = PreparedCall {
                    kind: Call::Pat,
                    method: "POST",
                    path,
                    authorization: self.client_basic.clone(),
                    content_type: "application/x-www-form-urlencoded",
                    body: pat_request_body(),
                };
                self.dispatch_session_call(call);
            }
        }
    }

    fn dispatch_session_call(&self, call: PreparedCall) {
        let what = if matches!(call.kind, Call::Discovery) {
            "discovery"
        } else {
            "PAT request"
        };
        match self.dispatch(call) {
            Ok(token) => self.session.borrow_mut().in_flight = Some((token, host::now_ms())),
            Err(status) => {
                self.session_failed(&format!("{what} could not be dispatched ({status:?})"))
            }
        }
    }

    fn session_failed(&self, reason: &str) {
        self.metrics.increment(Counter::AsFailures);
        warn!("{} {reason}", LogCode::AsError.code());
        self.session.borrow_mut().failed(host::now_ms());
        self.fail_waiters(reason);
    }

    fn on_discovery(&self, response: &CallResponse) {
        self.session.borrow_mut().in_flight = None;
        let endpoints = Discovery::parse(&response.as_response())
            .and_then(|d| Endpoints::from_discovery(&self.config, &d));
        match endpoints {
            Ok(e) => {
                info!("discovered the AS endpoints of {}", self.config.issuer);
                self.session.borrow_mut().endpoints = Some(e);
                self.drive_session();
            }
            Err(e) => self.session_failed(&format!("discovery failed: {e}")),
        }
    }

    fn on_pat(&self, response: &CallResponse) {
        self.session.borrow_mut().in_flight = None;
        match AccessToken::parse(&response.as_response()) {
            Ok(token) => {
                self.session.borrow_mut().set_pat(token, host::now_ms());
                self.drive_session();
            }
            Err(e) => self.session_failed(&format!("PAT request failed: {e}")),
        }
    }

    fn waiting_requests(&self) -> Vec<u32> {
        self.flows
            .borrow()
            .iter()
            .filter(|(_, f)| f.stage == Stage::AwaitingSession)
            .map(|(id, _)| *id)
            .collect()
    }

    fn wake_waiters(&self) {
        for id in self.waiting_requests() {
            self.advance(id);
        }
    }

    fn fail_waiters(&self, reason: &str) {
        for id in self.waiting_requests() {
            self.deny_as_error(id, reason.to_string());
        }
    }

    /// Periodic work: start discovery and PAT early, refresh the PAT before it expires, and
    /// deny requests that waited for the session longer than `timeout_ms`.
    pub fn tick(&self) {
        let now = host::now_ms();
        let expired: Vec<u32> = self
            .flows
            .borrow()
            .iter()
            .filter(|(_, f)| f.stage == Stage::AwaitingSession && now > f.deadline_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.metrics.increment(Counter::AsFailures);
            self.deny_as_error(id, "timed out waiting for the AS session".into());
        }
        if matches!(
            self.session_step(),
            SessionStep::FetchDiscovery | SessionStep::FetchPat
        ) {
            self.drive_session();
        }
    }

    // ---- call plumbing -----------------------------------------------------------------

    fn dispatch(&self, call: PreparedCall) -> Result<u32, proxy_wasm::types::Status> {
        let mut headers = Vec::new();
        if !call.authorization.is_empty() {
            headers.push(("authorization", call.authorization.as_str()));
        }
        if !call.content_type.is_empty() {
            headers.push(("content-type", call.content_type));
        }
        let token = AsCall {
            cluster: &self.config.as_cluster,
            authority: &self.config.as_authority,
            method: call.method,
            path: &call.path,
            headers,
            body: (!call.body.is_empty()).then_some(call.body.as_slice()),
            timeout_ms: self.config.timeout_ms,
        }
        .dispatch()?;
        self.calls.borrow_mut().insert(token, call.kind);
        Ok(token)
    }

    /// Handles the response of any call this worker dispatched.
    pub fn on_call_response(&self, token: u32, num_headers: usize, body_size: usize) {
        let Some(kind) = self.calls.borrow_mut().remove(&token) else {
            return;
        };
        let response = CallResponse::read(num_headers, body_size);
        match kind {
            Call::Discovery => self.on_discovery(&response),
            Call::Pat => self.on_pat(&response),
            Call::Introspection(id) => self.on_introspection(id, &response),
            Call::Permission(id) => self.on_ticket(id, &response),
        }
    }
}

/// A call to the AS, ready to dispatch.
struct PreparedCall {
    kind: Call,
    method: &'static str,
    path: String,
    authorization: String,
    content_type: &'static str,
    body: Vec<u8>,
}
