//! `Worker`: what one Envoy worker (one VM) holds — the configuration, the AS session, the
//! JWKS, the resource table, the caches, the requests paused on the AS and the calls in flight —
//! and the execution of each request's `Flow` against a `Host`.
//!
//! A request whose RPT was seen before is decided within its own callback from the caches (no
//! AS call, no signature, no pause). Otherwise it pauses, and every dispatched call is recorded
//! here by its token, so its answer is handled whichever context the host delivers it to; a
//! request waiting on another context's call is answered by switching the effective context to
//! it. The host delivers a call's answer to the context whose callback dispatched it and drops
//! it if that context has ended: so a call is dispatched only from the root's callbacks or from
//! the callback of the request it is for, never on behalf of another request (see `deferred`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use log::{debug, info, warn};

use crate::cache::{keyed_digest, Digest16, LocalKeyer};
use crate::config::{AsProfile, PepConfig, RETURNED_RPT_HEADER};
use crate::decision::{plan_detailed, LocalReply, LogCode, Mode, Plan, Planned, RequestFacts};
use crate::facts::{self, Decision};
use crate::flow::{
    clock, remember_until, retries_refused_introspection, Allowed, Event, Flow, FlowContext, SessionView,
    Stage, Step,
};
use crate::forward::ForwardSigner;
use crate::headers::{scan_stripping, SerializedPairs, ORIGINAL_METHOD, ORIGINAL_URI};
use crate::host::{CallResponse, Counter, Host, HttpCall};
use crate::introspection::{introspection_body, IntrospectionResult};
use crate::jwks_keeper::JwksKeeper;
use crate::jwt_rpt::JwtCheck;
use crate::matcher::ResourceMatcher;
use crate::partial::subject;
use crate::path::split_query;
use crate::resource_lookup::LookedUp;
use crate::session::SessionStep;
use crate::session_keeper::{SessionCall, SessionKeeper};
use crate::shared_data::{DecisionCache, MintedCache, SharedKeys, TieredCache, UseCounter};
use crate::table_sync::TableSync;
use crate::wire::{basic_authorization, parse_ticket, AsError};

#[path = "access_decider.rs"]
mod access_decider;
use access_decider::{DecisionCall, PendingDecision};
#[path = "resource_looker.rs"]
mod resource_looker;
use resource_looker::PendingLookup;

/// What a request's plan is carried out with.
#[derive(Debug, Clone)]
struct PlannedRequest {
    mode: Mode,
    method: String,
    log_path: String,
    cors_preflight: bool,
    /// The request is paused already (it waited for a lookup): resumed, not continued.
    paused: bool,
}

/// What the host does with the request whose callback is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    Pause,
}

/// What a dispatched call is for.
#[derive(Debug, Clone, Copy)]
enum CallKind {
    Session(SessionCall),
    Jwks,
    /// One introspection serves every request waiting on the same RPT (single flight).
    Introspection(Digest16),
    Permission(u32),
    ResourceTable,
    /// One call of the AS's decision on an access token (`access_decider`).
    AccessDecision(Digest16, DecisionCall),
    /// `resource_lookup` of a path (`resource_looker`).
    ResourceLookup(Digest16),
}

/// A call for a request that could not be dispatched from the callback running (another
/// request's): made from the root's next tick.
#[derive(Debug)]
enum Deferred {
    Introspect(u32),
    Ticket(u32, Vec<u8>),
    Decide(u32),
}

pub struct Worker<H: Host> {
    pub host: H,
    pub config: PepConfig,
    signer: Option<ForwardSigner>,
    /// The forwarded header's spellings, stripped from every request.
    forward_spellings: [String; 2],
    client_basic: String,
    /// The context whose callback is running.
    callback_context: Cell<u32>,
    root_context: u32,
    deferred: RefCell<Vec<Deferred>>,
    session: RefCell<SessionKeeper>,
    jwks: RefCell<JwksKeeper>,
    table: RefCell<TableSync>,
    flows: RefCell<HashMap<u32, Flow>>,
    /// Calls in flight by token, with when they were sent (a call cancelled with its context
    /// never answers; its entry is dropped by the tick).
    calls: RefCell<HashMap<u32, (CallKind, i64)>>,
    /// Requests waiting on the introspection of each RPT in flight, and when it was sent.
    introspecting: RefCell<HashMap<Digest16, (i64, Vec<u32>)>>,
    decisions: DecisionCache,
    /// Decisions on access tokens in flight, or awaited from another worker.
    access_deciding: RefCell<HashMap<Digest16, PendingDecision>>,
    /// `resource_lookup`: what the AS said protects a path, and the lookups in flight.
    looked_up: TieredCache<Rc<LookedUp>>,
    lookups: RefCell<HashMap<Digest16, PendingLookup>>,
    /// RPTs to hand back on a request's response (`access_tokens.return_rpt`, FULL).
    returned_rpts: RefCell<HashMap<u32, Rc<str>>>,
    keys: SharedKeys,
    minted: MintedCache,
    /// Keys of this worker's own cache entries (see `LocalKeyer`).
    keyer: LocalKeyer,
    uses: UseCounter,
}

/// The one decision line of a request: `<code> <method> <path> resource=<id> scope=<scope>
/// <outcome>: <reason>` (`-` for what is not known). At `debug` (Envoy logs nothing per request
/// at `info`), except an AS failure: an operator's business at once, at `warn`. Formatted only
/// when the level is on.
fn log_decision(
    code: LogCode,
    status: u32,
    method: &str,
    path: &str,
    resource: Option<&str>,
    scope: Option<&str>,
    reason: &str,
) {
    let outcome = match code {
        LogCode::Allowed => "allowed",
        // A ticket with 403: the AS refused the party of an access token (`decide` mode).
        LogCode::TicketIssued if status == 403 => "403",
        // `permissive`: denied, and forwarded so.
        LogCode::TicketIssued if status == 200 => "forwarded",
        LogCode::TicketIssued => "401",
        LogCode::Unmatched => "passed",
        _ => "denied",
    };
    let level = if code == LogCode::AsError { log::Level::Warn } else { log::Level::Debug };
    log::log!(
        level,
        "{} {method} {path} resource={} scope={} {outcome}: {reason}",
        code.code(),
        resource.unwrap_or("-"),
        scope.unwrap_or("-"),
    );
}

/// A client-chosen value as it may appear in a log line: printable ASCII, at most 64 characters.
fn loggable(value: &str) -> String {
    value.chars().take(64).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}

impl<H: Host> Worker<H> {
    /// `fingerprint` identifies the configuration (see `SharedKeys`).
    pub fn new(
        host: H,
        config: PepConfig,
        signer: Option<ForwardSigner>,
        root_context: u32,
        fingerprint: &str,
    ) -> Self {
        let keys = SharedKeys::new(fingerprint);
        let slots = config.cache_slots;
        let worker = Self {
            host,
            signer,
            forward_spellings: config.forward_header_spellings(),
            client_basic: basic_authorization(&config.client_id, &config.client_secret),
            callback_context: Cell::new(root_context),
            root_context,
            deferred: RefCell::new(Vec::new()),
            session: RefCell::new(SessionKeeper::new(&config, &keys)),
            jwks: RefCell::new(JwksKeeper::default()),
            table: RefCell::new(TableSync::new(&config, &keys)),
            flows: RefCell::new(HashMap::new()),
            calls: RefCell::new(HashMap::new()),
            introspecting: RefCell::new(HashMap::new()),
            decisions: DecisionCache::new(&keys, "decision", slots),
            access_deciding: RefCell::new(HashMap::new()),
            looked_up: TieredCache::new(&keys, "looked_up", slots),
            lookups: RefCell::new(HashMap::new()),
            returned_rpts: RefCell::new(HashMap::new()),
            keyer: LocalKeyer::default(),
            minted: MintedCache::new(&keys, "minted", slots),
            uses: UseCounter::new(&keys, slots),
            keys,
            config,
        };
        if worker.config.rpt_max_uses > 0 {
            worker.uses.create_slots(&worker.host);
        }
        worker
    }

    /// Records whose callback is running; every entry point calls this first.
    pub fn enter_callback(&self, context_id: u32) {
        self.callback_context.set(context_id);
    }

    /// The resource table requests are matched against now.
    pub fn resources(&self) -> Rc<ResourceMatcher> {
        self.table.borrow().resources()
    }

    /// How many requests are paused (for tests and the curious).
    pub fn paused(&self) -> usize {
        self.flows.borrow().len()
    }

    // ---- a request arrives ---------------------------------------------------------------------

    /// A request's headers: header hygiene, then the plan, then its flow.
    pub fn on_request_headers(&self, context_id: u32) -> Verdict {
        self.enter_callback(context_id);
        let config = &self.config;
        // Header hygiene first, on every request: the client never chooses the identity header
        // (in any spelling a CGI-style upstream folds to it) nor, unless kept, overrides the
        // method. One read of the map; a header is removed only when present.
        let Some(map) = self.host.request_header_map() else {
            return self.reply_now(&LocalReply::bad_request("request headers unreadable"), "-", "-");
        };
        let mut pairs = SerializedPairs::new(&map);
        let filter_headers = [self.forward_spellings[0].as_str(), self.config.enforcement_header.as_str()];
        let Some(headers) = scan_stripping(&mut pairs, &filter_headers) else {
            return self.reply_now(&LocalReply::bad_request("request headers unreadable"), "-", "-");
        };
        for name in &headers.identity {
            self.host.set_request_header(name, None);
        }
        if !config.keep_method_override {
            for name in &headers.method_override {
                self.host.set_request_header(name, None);
            }
        }
        // Everything else the decision reads comes from the same scan: no header is read twice.
        let text =
            |v: Option<&[u8]>| v.and_then(|v| std::str::from_utf8(v).ok()).unwrap_or_default().to_string();
        let method = text(headers.method);
        let raw_path = text(headers.path);
        if let Some(jwks) = self.jwks_reply(&raw_path) {
            self.host.send_reply(&jwks);
            return Verdict::Pause;
        }
        let original = |name: &str| {
            let value = match name {
                ORIGINAL_URI => headers.original_uri_value,
                ORIGINAL_METHOD => headers.original_method_value,
                _ => None,
            };
            value.and_then(|v| std::str::from_utf8(v).ok()).map(str::to_string)
        };
        let subject = match subject(config, method, raw_path, &headers, original) {
            Ok(s) => s,
            Err(reply) => return self.reply_now(&reply, "-", "-"),
        };
        let log_path = split_query(&subject.raw_path).0.to_string();
        // A value that is not UTF-8 becomes one no parser accepts: present, and unusable. Envoy
        // keeps repeated `Authorization` headers apart in the map; the core tells them apart.
        let authorization: Vec<&str> =
            headers.authorization.iter().map(|v| std::str::from_utf8(v).unwrap_or("\u{fffd}")).collect();
        let facts = RequestFacts {
            method: &subject.method,
            raw_path: &subject.raw_path,
            authorization: &authorization,
            // A check cannot change what the proxy in front forwards: only canonical paths pass.
            canonical_only: subject.mode == Mode::Partial,
            cors_preflight: headers.origin && headers.cors_request_method,
        };
        let resources = self.resources();
        let planned = plan_detailed(config, &resources, facts);
        let request = PlannedRequest {
            mode: subject.mode,
            method: subject.method.clone(),
            log_path,
            cors_preflight: facts.cors_preflight,
            paused: false,
        };
        self.carry_out(context_id, planned, request)
    }

    /// Carries out a request's plan (in its own callback, or after a resource lookup paused it).
    fn carry_out(&self, context_id: u32, planned: Planned<'_>, request: PlannedRequest) -> Verdict {
        match planned.plan {
            Plan::Reply(reply) => self.reply_now(&reply, &request.method, &request.log_path),
            Plan::PassThrough { rewrite } => {
                self.host.count(Counter::Unmatched);
                let (decision, why) = match &planned.open_resource {
                    Some(_) => (Decision::Open, planned.pass_reason),
                    None => (Decision::Unmatched, planned.pass_reason),
                };
                let resource = planned.open_resource.as_deref();
                self.record_facts(decision, resource, None);
                log_decision(
                    LogCode::Unmatched,
                    200,
                    &request.method,
                    &request.log_path,
                    resource,
                    None,
                    why,
                );
                match request.mode {
                    Mode::Partial => {
                        self.host.send_reply(&LocalReply::authorized(LogCode::Unmatched, ""));
                        Verdict::Pause
                    }
                    Mode::Full => {
                        if let Some(path) = rewrite {
                            self.host.set_request_header(":path", Some(&path));
                        }
                        if request.paused {
                            self.host.resume_request();
                            return Verdict::Pause;
                        }
                        Verdict::Continue
                    }
                }
            }
            Plan::Protected { target, token } => {
                let mut flow = Flow::new(
                    target,
                    request.mode,
                    request.method,
                    request.log_path,
                    token.map(str::to_string),
                );
                if request.paused {
                    flow.mark_paused();
                }
                self.run(context_id, flow, Event::Start, self.host.now_ms())
            }
            Plan::LookUp { path, rewrite, token } => {
                self.look_up_resource(context_id, path, request, rewrite, token.map(str::to_string))
            }
        }
    }

    fn reply_now(&self, reply: &LocalReply, method: &str, path: &str) -> Verdict {
        self.host.count(if reply.status == 200 { Counter::Allowed } else { Counter::Denied });
        self.record_facts(Decision::of_reply(reply), None, None);
        log_decision(reply.code, reply.status, method, path, None, None, &reply.reason);
        self.host.send_reply(reply);
        Verdict::Pause
    }

    /// The decision's facts for the access log, unless `access_log_facts` is off.
    fn record_facts(&self, decision: Decision, resource: Option<&str>, subject: Option<&str>) {
        if self.config.access_log_facts {
            self.host.record_facts(decision, resource, subject);
        }
    }

    /// The JWKS of the forwarding key, when `path` is `forward.jwks_path`.
    fn jwks_reply(&self, raw_path: &str) -> Option<LocalReply> {
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

    /// The request went away (client reset, stream end): nothing more to do for it.
    pub fn forget(&self, context_id: u32) {
        self.flows.borrow_mut().remove(&context_id);
        self.returned_rpts.borrow_mut().remove(&context_id);
    }

    /// The RPT to hand back on this request's response (`x-uma-rpt`), once.
    pub fn take_returned_rpt(&self, context_id: u32) -> Option<Rc<str>> {
        self.returned_rpts.borrow_mut().remove(&context_id)
    }

    // ---- running a flow ------------------------------------------------------------------------

    /// Feeds `event` to the paused request `context_id`, if it is still there.
    fn resume(&self, context_id: u32, event: Event) {
        let Some(flow) = self.flows.borrow_mut().remove(&context_id) else { return };
        self.run(context_id, flow, event, self.host.now_ms());
    }

    /// Carries out the flow's steps until it waits or ends, all at `now_ms` (the clock is read
    /// once per callback). A waiting flow is put back before its wait starts, since starting it
    /// may wake (or end) it at once.
    fn run(&self, context_id: u32, mut flow: Flow, event: Event, now_ms: i64) -> Verdict {
        let mut event = event;
        let cx = FlowContext { config: &self.config, forwarding: self.signer.is_some(), now_ms };
        let now_s = now_ms / 1000;
        loop {
            let step = flow.on(event, &cx);
            event = match step {
                Step::CountUses => Event::UsesCounted {
                    used_up: flow
                        .digest()
                        .is_some_and(|d| self.uses.used_up(&self.host, &d, self.config.rpt_max_uses, now_s)),
                },
                Step::LookUpDecision => {
                    let hit = flow
                        .local_key(&self.keyer)
                        .and_then(|local| self.decisions.get(&self.host, &local, || flow.digest(), now_s));
                    if hit.is_some() {
                        self.host.count(Counter::CacheHits);
                    }
                    Event::DecisionLookedUp(hit)
                }
                Step::LookUpAccessDecision => {
                    let hit = flow
                        .decision_keys(&self.keyer)
                        .and_then(|(local, shared)| self.decisions.get(&self.host, &local, shared, now_s));
                    if hit.is_some() {
                        self.host.count(Counter::CacheHits);
                    }
                    Event::DecisionLookedUp(hit)
                }
                Step::AskAccessDecision => {
                    self.park(context_id, flow);
                    self.ask_access_decision(context_id);
                    return Verdict::Pause;
                }
                Step::CheckJwtLocally => {
                    Event::JwtChecked(flow.rpt().and_then(|rpt| self.check_jwt_now(rpt)))
                }
                Step::LookAtSession => Event::SessionSeen(self.session_view()),
                Step::Remember { result, until_s } => {
                    let result = Rc::new(result);
                    if let (Some(local), Some(d)) = (flow.local_key(&self.keyer), flow.digest()) {
                        self.decisions.put(&self.host, &local, &d, until_s, Rc::clone(&result), now_s);
                    }
                    Event::Remembered(result)
                }
                Step::TakeUse { max, expires_at } => Event::UseTaken(
                    flow.digest().is_some_and(|d| self.uses.take(&self.host, &d, max, expires_at, now_s)),
                ),
                Step::MintIdentity { result } => Event::Minted(match flow.rpt() {
                    Some(_) => self.forwarded_token(&flow, &result, now_s),
                    None => Err("no token to mint an identity for".into()),
                }),
                Step::InvalidatePat => {
                    self.session.borrow_mut().invalidate_pat(&self.host);
                    Event::Wake
                }
                Step::KeepWaiting => {
                    self.park(context_id, flow);
                    return Verdict::Pause;
                }
                Step::WaitForSession => {
                    self.park(context_id, flow);
                    self.drive_session();
                    return Verdict::Pause;
                }
                Step::FetchJwks { refresh } => {
                    self.park(context_id, flow);
                    if refresh {
                        self.jwks.borrow_mut().want_refresh();
                    }
                    self.ensure_jwks();
                    return Verdict::Pause;
                }
                Step::Introspect => {
                    let call = flow.digest().zip(flow.rpt().map(str::to_string));
                    self.park(context_id, flow);
                    if let Some((digest, rpt)) = call {
                        self.introspect(context_id, digest, &rpt);
                    }
                    return Verdict::Pause;
                }
                Step::RequestTicket { body } => {
                    self.park(context_id, flow);
                    self.request_ticket(context_id, body);
                    return Verdict::Pause;
                }
                Step::Allow(allowed) => return self.allow(context_id, &flow, allowed),
                Step::Reply { reply, count_failure } => {
                    if count_failure {
                        self.host.count(Counter::AsFailures);
                    }
                    return self.reply(context_id, &flow, &reply);
                }
            };
        }
    }

    fn park(&self, context_id: u32, flow: Flow) {
        self.flows.borrow_mut().insert(context_id, flow);
    }

    /// A JWT RPT checked against the JWKS this worker already holds; `None` when no keys are
    /// held (or local validation is off).
    fn check_jwt_now(&self, rpt: &str) -> Option<JwtCheck> {
        if !self.jwks_enabled() {
            return None;
        }
        let keys = self.jwks.borrow().keys()?;
        let check =
            keys.check(rpt, &self.config.issuer, self.config.rpt_audience.as_deref(), self.config.as_profile);
        match &check {
            JwtCheck::UnknownKey(kid) => debug!("JWT signed with key {} not in the JWKS", loggable(kid)),
            JwtCheck::Uncheckable(reason) => debug!("JWT not verifiable locally ({reason}): introspecting"),
            _ => {}
        }
        Some(check)
    }

    fn session_view(&self) -> SessionView {
        let step = self.session.borrow_mut().step(&self.host);
        SessionView { step, jwks: self.jwks.borrow().view(self.jwks_enabled(), self.host.now_ms()) }
    }

    /// Carries out an allowed request: forwarded (FULL, with its rewrite and identity) or
    /// answered 200 (PARTIAL).
    fn allow(&self, context_id: u32, flow: &Flow, allowed: Allowed) -> Verdict {
        if allowed.resume && !self.host.enter_context(context_id) {
            return Verdict::Pause;
        }
        let target = &flow.target;
        let scopes = target.scopes_text();
        let (resource, scope) = (Some(target.resource_id.as_str()), Some(&*scopes));
        if let Some(why) = &allowed.denied {
            return self.forward_denied(flow, allowed.resume, why);
        }
        self.host.count(Counter::Allowed);
        let subject = facts::subject(&allowed.result);
        self.record_facts(Decision::Allowed, Some(&flow.target.resource_id), subject.as_deref());
        log_decision(
            LogCode::Allowed,
            200,
            &flow.method,
            &flow.log_path,
            resource,
            scope,
            if flow.access_token().is_some() {
                "the AS granted the access token"
            } else {
                "RPT covers resource and scope"
            },
        );
        let header = self.signer.as_ref().map(|s| s.header_name.as_str());
        let rpt_for_client = allowed.rpt_for_client.filter(|_| self.config.access_tokens.return_rpt);
        match flow.mode {
            Mode::Full => {
                if let Some(rpt) = rpt_for_client {
                    self.returned_rpts.borrow_mut().insert(context_id, rpt);
                }
                if let Some(path) = &flow.target.rewrite {
                    self.host.set_request_header(":path", Some(path));
                }
                if let (Some(header), Some(token)) = (header, &allowed.identity) {
                    self.host.set_request_header(header, Some(token));
                }
                if self.signer.as_ref().is_some_and(|s| s.strip_authorization) {
                    self.host.set_request_header("authorization", None);
                }
                if allowed.resume {
                    self.host.resume_request();
                    Verdict::Pause
                } else {
                    Verdict::Continue
                }
            }
            Mode::Partial => {
                let mut reply = LocalReply::authorized(LogCode::Allowed, "");
                if let (Some(header), Some(token)) = (header, allowed.identity) {
                    reply.headers.push((header.to_string(), token.to_string()));
                }
                if let Some(rpt) = rpt_for_client {
                    reply.headers.push((RETURNED_RPT_HEADER.to_string(), rpt.to_string()));
                }
                self.host.send_reply(&reply);
                Verdict::Pause
            }
        }
    }

    /// `permissive`: a denied request goes on (FULL: upstream; PARTIAL: 200) with the decision
    /// in `enforcement_header`, and no identity.
    fn forward_denied(&self, flow: &Flow, resume: bool, why: &str) -> Verdict {
        self.host.count(Counter::Denied);
        let target = &flow.target;
        self.record_facts(Decision::Denied, Some(&target.resource_id), None);
        let scopes = target.scopes_text();
        let reason = format!("{why} (permissive: forwarded as denied)");
        let code = LogCode::TicketIssued;
        log_decision(
            code,
            200,
            &flow.method,
            &flow.log_path,
            Some(&target.resource_id),
            Some(&scopes),
            &reason,
        );
        let header = self.config.enforcement_header.as_str();
        match flow.mode {
            Mode::Full => {
                if let Some(path) = &target.rewrite {
                    self.host.set_request_header(":path", Some(path));
                }
                self.host.set_request_header(header, Some("denied"));
                if resume {
                    self.host.resume_request();
                    Verdict::Pause
                } else {
                    Verdict::Continue
                }
            }
            Mode::Partial => {
                let mut reply = LocalReply::authorized(code, reason);
                reply.headers.push((header.to_string(), "denied".to_string()));
                self.host.send_reply(&reply);
                Verdict::Pause
            }
        }
    }

    /// Sends a local reply for a flow and logs the decision.
    fn reply(&self, context_id: u32, flow: &Flow, reply: &LocalReply) -> Verdict {
        if !self.host.enter_context(context_id) {
            return Verdict::Pause;
        }
        self.host.count(Counter::Denied);
        self.record_facts(Decision::of_reply(reply), Some(&flow.target.resource_id), None);
        let target = &flow.target;
        let scopes = target.scopes_text();
        let (resource, scope) = (Some(target.resource_id.as_str()), Some(&*scopes));
        log_decision(reply.code, reply.status, &flow.method, &flow.log_path, resource, scope, &reply.reason);
        self.host.send_reply(reply);
        Verdict::Pause
    }

    /// The JWT for the upstream: minted once per (RPT, resource) and reused, from this worker's
    /// cache or the one all workers share, until `rpt_margin_s` before it expires.
    fn forwarded_token(
        &self,
        flow: &Flow,
        result: &IntrospectionResult,
        now_s: i64,
    ) -> Result<Rc<str>, String> {
        let signer = self.signer.as_ref().ok_or("no forwarding key configured")?;
        let resource_id = flow.target.resource_id.as_str();
        let rpt_key = flow.local_key(&self.keyer).ok_or("no token to mint an identity for")?;
        let local = self.keyer.keyed(&rpt_key, resource_id);
        let shared = || flow.digest().map(|d| keyed_digest(&d, resource_id));
        let clock = clock(&self.config, now_s);
        if let Some(token) = self.minted.get(&self.host, &local, shared, clock.now) {
            return Ok(token);
        }
        let claims = signer.claims(result, resource_id, clock.now);
        // Timed only when the line is logged: two clock reads are not free.
        let timing = log::log_enabled!(log::Level::Debug);
        let started = if timing { self.host.now_ns() } else { 0 };
        let token = signer.sign(&claims).map_err(|e| e.to_string())?;
        self.host.count(Counter::JwtMinted);
        if timing {
            let took_us = (self.host.now_ns() - started) / 1000;
            debug!("minted forwarded JWT alg={:?} in {took_us} us", signer.alg());
        }
        let exp = claims.get("exp").and_then(serde_json::Value::as_i64).unwrap_or(clock.now);
        let token: Rc<str> = Rc::from(token);
        if let Some(shared) = shared() {
            self.minted.put(&self.host, &local, &shared, exp - clock.margin_s, Rc::clone(&token), clock.now);
        }
        Ok(token)
    }

    // ---- calls for one request -----------------------------------------------------------------

    fn introspect(&self, context_id: u32, digest: Digest16, rpt: &str) {
        if let Some((_, waiting)) = self.introspecting.borrow_mut().get_mut(&digest) {
            waiting.push(context_id);
            return;
        }
        if self.deferred_to_tick(context_id, || Deferred::Introspect(context_id)) {
            return;
        }
        if self.shed_when_overloaded(context_id) {
            return;
        }
        let (path, pat) = {
            let session = self.session.borrow();
            (session.endpoints().map(|e| e.introspection.clone()), session.pat().map(|p| p.value.clone()))
        };
        let (Some(path), Some(pat)) = (path, pat) else { return };
        let Some(path) = path else {
            self.resume(
                context_id,
                Event::AsFailed { reason: "the AS publishes no introspection endpoint".into(), count: false },
            );
            return;
        };
        let authorization = match self.config.as_profile {
            AsProfile::Uma2 => format!("Bearer {pat}"),
            AsProfile::Keycloak => self.client_basic.clone(),
        };
        let call = self.as_call(
            "POST",
            path,
            vec![
                ("authorization", authorization),
                ("content-type", "application/x-www-form-urlencoded".into()),
            ],
            introspection_body(self.config.as_profile, rpt),
        );
        self.host.count(Counter::Introspections);
        match self.dispatch(&call, CallKind::Introspection(digest)) {
            Ok(_) => {
                self.introspecting.borrow_mut().insert(digest, (self.host.now_ms(), vec![context_id]));
            }
            Err(status) => self.dispatch_failed(context_id, &status),
        }
    }

    /// True (and the request answered 503) when this worker has as many calls in flight as
    /// `max_introspections_in_flight` allows.
    fn shed_when_overloaded(&self, context_id: u32) -> bool {
        let max = usize::try_from(self.config.max_introspections_in_flight).unwrap_or(usize::MAX);
        if self.calls_in_flight() < max {
            return false;
        }
        self.host.count(Counter::Overloaded);
        self.resume(context_id, Event::Overloaded);
        true
    }

    fn request_ticket(&self, context_id: u32, body: Vec<u8>) {
        let (path, pat) = {
            let session = self.session.borrow();
            match (session.endpoints(), session.pat()) {
                (Some(e), Some(p)) => (e.permission.clone(), p.value.clone()),
                _ => return,
            }
        };
        if self.deferred_to_tick(context_id, || Deferred::Ticket(context_id, body.clone())) {
            return;
        }
        let call = self.as_call(
            "POST",
            path,
            vec![("authorization", format!("Bearer {pat}")), ("content-type", "application/json".into())],
            body,
        );
        if let Err(status) = self.dispatch(&call, CallKind::Permission(context_id)) {
            self.dispatch_failed(context_id, &status);
        }
    }

    fn dispatch_failed(&self, context_id: u32, status: &str) {
        let reason = format!("AS call could not be dispatched ({status})");
        self.resume(context_id, Event::AsFailed { reason, count: true });
    }

    /// True (and queued) when a call for `context_id` cannot be dispatched from this callback.
    fn deferred_to_tick(&self, context_id: u32, deferred: impl FnOnce() -> Deferred) -> bool {
        let callback = self.callback_context.get();
        if callback == context_id || callback == self.root_context {
            return false;
        }
        self.deferred.borrow_mut().push(deferred());
        true
    }

    fn on_introspection(&self, digest: Digest16, response: &CallResponse) {
        let waiting = self.introspecting.borrow_mut().remove(&digest).map(|(_, w)| w).unwrap_or_default();
        let answer = match IntrospectionResult::parse(&response.as_response()) {
            Ok(mut result) => {
                // A request still waiting has the token (for the identity) and its local key.
                let waiter = waiting.iter().find_map(|id| {
                    let flows = self.flows.borrow();
                    let flow = flows.get(id)?;
                    Some((flow.rpt()?.to_string(), flow.local_key(&self.keyer)?))
                });
                let now_s = self.host.now_ms() / 1000;
                let until = remember_until(&self.config, &result, clock(&self.config, now_s));
                if let Some((rpt, _)) = &waiter {
                    result.complete_identity_from_jwt(rpt);
                }
                let result = Rc::new(result);
                // Every request that waited on it is gone: nobody to key this worker's entry by.
                if let Some((_, local)) = &waiter {
                    self.decisions.put(&self.host, local, &digest, until, Rc::clone(&result), now_s);
                }
                Ok(result)
            }
            Err(e) => {
                let retried = matches!(e, AsError::CredentialsRefused { .. })
                    && retries_refused_introspection(self.config.as_profile);
                if !retried {
                    // Once per call, whatever waits on it.
                    self.host.count(Counter::AsFailures);
                }
                Err(e)
            }
        };
        for id in waiting {
            self.resume(id, Event::Introspected(answer.clone()));
        }
    }

    fn on_ticket(&self, context_id: u32, response: &CallResponse) {
        let answer = parse_ticket(&response.as_response());
        if answer.is_ok() {
            self.host.count(Counter::Tickets);
        }
        self.resume(context_id, Event::TicketAnswered(answer));
    }

    // ---- the AS session and the JWKS -----------------------------------------------------------

    /// Starts the discovery or PAT call the session needs (also a background PAT refresh), or
    /// settles the waiting requests.
    fn drive_session(&self) {
        let step = self.session.borrow_mut().step(&self.host);
        match step {
            SessionStep::Waiting => {}
            SessionStep::Ready => {
                if self.session.borrow().refresh_due(self.host.now_ms()) {
                    self.fetch_session(SessionStep::FetchPat);
                }
                if self.flows.borrow().values().any(|f| f.stage() == Stage::AwaitingJwks) {
                    self.ensure_jwks();
                }
                self.wake(Stage::AwaitingSession);
            }
            SessionStep::BackingOff => self.fail_waiters("authorization server unavailable"),
            SessionStep::FetchDiscovery | SessionStep::FetchPat => self.fetch_session(step),
        }
    }

    /// Dispatches discovery or the PAT request, from the root only and by one worker at a time.
    fn fetch_session(&self, step: SessionStep) {
        if !self.in_root_callback() {
            return;
        }
        // `None`: another worker is fetching; its result arrives through shared data.
        let Some((kind, call)) = self.session.borrow_mut().begin_fetch(&self.host, &self.config, step) else {
            return;
        };
        if kind == SessionCall::Pat {
            self.host.count(Counter::PatRequests);
        }
        match self.dispatch(&call, CallKind::Session(kind)) {
            Ok(token) => self.session.borrow_mut().sent(token, self.host.now_ms()),
            Err(status) => {
                self.session.borrow_mut().not_sent(&self.host);
                self.session_failed(&format!("{} could not be dispatched ({status})", kind.name()));
            }
        }
    }

    fn on_session_answer(&self, kind: SessionCall, response: &CallResponse) {
        let taken = self.session.borrow_mut().on_answer(&self.host, &self.config, kind, response);
        match taken {
            Ok(()) => {
                if kind == SessionCall::Discovery {
                    info!("discovered the AS endpoints of {}", self.config.issuer);
                }
                self.drive_session();
            }
            Err(reason) => self.session_failed(&reason),
        }
    }

    fn session_failed(&self, reason: &str) {
        self.host.count(Counter::AsFailures);
        warn!("{} {reason}", LogCode::AsError.code());
        // A failed background refresh leaves a valid PAT: the waiting requests go on with it.
        if self.session.borrow_mut().step(&self.host) == SessionStep::Ready {
            self.wake(Stage::AwaitingSession);
        } else {
            self.fail_waiters(reason);
        }
    }

    fn requests_in(&self, stage: Stage) -> Vec<u32> {
        self.flows.borrow().iter().filter(|(_, f)| f.stage() == stage).map(|(id, _)| *id).collect()
    }

    fn wake(&self, stage: Stage) {
        for id in self.requests_in(stage) {
            self.resume(id, Event::Wake);
        }
    }

    fn fail_waiters(&self, reason: &str) {
        for id in self.requests_in(Stage::AwaitingSession) {
            self.resume(id, Event::AsFailed { reason: reason.to_string(), count: false });
        }
    }

    /// Whether JWT RPTs are checked locally here (configured, and the AS has a JWKS).
    fn jwks_enabled(&self) -> bool {
        self.config.local_jwt_validation
            && self.session.borrow().endpoints().is_some_and(|e| e.jwks.is_some())
    }

    /// Fetches the JWKS if it is missing (or a refresh was asked for) and the rate limit allows.
    fn ensure_jwks(&self) {
        let path = match self.session.borrow().endpoints().and_then(|e| e.jwks.clone()) {
            Some(path) if self.config.local_jwt_validation => path,
            _ => return,
        };
        let now = self.host.now_ms();
        if !self.in_root_callback() || !self.jwks.borrow().fetch_due(now, self.timeout_ms()) {
            return;
        }
        match self.dispatch(&self.as_call("GET", path, Vec::new(), Vec::new()), CallKind::Jwks) {
            Ok(_) => self.jwks.borrow_mut().sent(now),
            Err(status) => {
                warn!("{} JWKS request could not be dispatched ({status})", LogCode::AsError.code());
                self.jwks.borrow_mut().not_sent(now);
                self.wake(Stage::AwaitingJwks);
            }
        }
    }

    fn on_jwks(&self, response: &CallResponse) {
        let loaded = self.jwks.borrow_mut().on_answer(response);
        match loaded {
            Ok((count, dropped)) => {
                for key in dropped {
                    warn!("{} JWKS key {} dropped: {}", LogCode::AsError.code(), key.kid, key.reason);
                }
                info!("loaded {count} verification keys from the AS JWKS");
            }
            Err(e) => {
                self.host.count(Counter::AsFailures);
                warn!("{} JWKS request failed: {e}", LogCode::AsError.code());
            }
        }
        self.wake(Stage::AwaitingJwks);
    }

    // ---- the resource table --------------------------------------------------------------------

    fn sync_resources(&self) {
        let Some(sync) = &self.config.resource_sync else { return };
        let adopted = self.table.borrow_mut().adopt_published(&self.host);
        if let Some(swapped) = adopted {
            info!("resource table version {} in force: {} resources", swapped.version, swapped.resources);
        }
        let poll = self.table.borrow_mut().poll_due(&self.host, sync, self.config.timeout_ms);
        if let Some(call) = poll {
            if let Err(status) = self.dispatch(&call, CallKind::ResourceTable) {
                // pepctl's business, not the AS's: no AS log code.
                warn!("uma-pep: resource table poll could not be dispatched ({status})");
            }
        }
    }

    fn on_resource_table(&self, response: &CallResponse) {
        let taken = self.table.borrow_mut().on_answer(&self.host, response);
        match taken {
            Ok(Some(swapped)) => {
                info!("resource table version {} in force: {} resources", swapped.version, swapped.resources)
            }
            Ok(None) => {}
            // pepctl's business, not the AS's: no AS log code; `e` says what to do.
            Err(e) => warn!("uma-pep: resource table poll failed, keeping the last good table: {e}"),
        }
    }

    // ---- ticks and call plumbing ---------------------------------------------------------------

    fn timeout_ms(&self) -> i64 {
        i64::try_from(self.config.timeout_ms).unwrap_or(i64::MAX)
    }

    /// Periodic work: the calls deferred to the root, requests that waited too long, the session
    /// (discovery and the PAT early, its refresh before it expires, what other workers fetched)
    /// and the resource table.
    pub fn tick(&self) {
        let deferred = std::mem::take(&mut *self.deferred.borrow_mut());
        for call in deferred {
            match call {
                Deferred::Introspect(id) => {
                    let rpt = self
                        .flows
                        .borrow()
                        .get(&id)
                        .and_then(|f| f.digest().zip(f.rpt().map(str::to_string)));
                    if let Some((digest, rpt)) = rpt {
                        self.introspect(id, digest, &rpt);
                    }
                }
                Deferred::Ticket(id, body) => {
                    if self.flows.borrow().contains_key(&id) {
                        self.request_ticket(id, body);
                    }
                }
                Deferred::Decide(id) => self.ask_access_decision(id),
            }
        }
        let now = self.host.now_ms();
        // A call lost with the context that made it (a client that went away) must not leave
        // the requests that joined it waiting: they are denied once it is overdue.
        let overdue = now - self.timeout_ms() - 1000;
        self.introspecting.borrow_mut().retain(|_, (sent, _)| *sent > overdue);
        self.calls.borrow_mut().retain(|_, (_, sent)| *sent > overdue);
        self.tick_decisions(now);
        self.tick_lookups(now);
        let mut in_flight: Vec<u32> =
            self.introspecting.borrow().values().flat_map(|(_, w)| w.clone()).collect();
        in_flight.extend(self.waiting_on_decisions());
        let ids: Vec<u32> = self.flows.borrow().keys().copied().collect();
        for id in ids {
            self.resume(id, Event::Tick { call_in_flight: in_flight.contains(&id) });
        }
        self.drive_session();
        self.sync_resources();
    }

    fn in_root_callback(&self) -> bool {
        self.callback_context.get() == self.root_context
    }

    fn as_call(
        &self,
        method: &'static str,
        path: String,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) -> HttpCall {
        HttpCall {
            cluster: self.config.as_cluster.clone(),
            authority: self.config.as_authority.clone(),
            method,
            path,
            headers,
            body,
            timeout_ms: self.config.timeout_ms,
        }
    }

    /// Dispatches a call on the callback's own context (the host attaches the call to the
    /// effective context) and records what its answer is for.
    fn dispatch(&self, call: &HttpCall, kind: CallKind) -> Result<u32, String> {
        self.host.enter_context(self.callback_context.get());
        let token = self.host.dispatch(call)?;
        self.calls.borrow_mut().insert(token, (kind, self.host.now_ms()));
        Ok(token)
    }

    /// Handles the answer to any call this worker dispatched.
    pub fn on_call_response(&self, context_id: u32, token: u32, response: &CallResponse) {
        self.enter_callback(context_id);
        let Some((kind, _)) = self.calls.borrow_mut().remove(&token) else { return };
        match kind {
            CallKind::Session(kind) => self.on_session_answer(kind, response),
            CallKind::Jwks => self.on_jwks(response),
            CallKind::Introspection(digest) => self.on_introspection(digest, response),
            CallKind::Permission(id) => self.on_ticket(id, response),
            CallKind::ResourceTable => self.on_resource_table(response),
            CallKind::AccessDecision(digest, step) => self.on_decision_answer(digest, step, response),
            CallKind::ResourceLookup(digest) => self.on_lookup_answer(digest, response),
        }
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "worker_sequences.rs"]
mod sequences;
