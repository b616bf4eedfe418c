//! `Flow`: the life of one protected request, from its RPT (or none) to its answer, as a pure
//! state machine. The worker feeds it events (`Flow::on`) and carries out the one `Step` each
//! returns: a question it answers at once with the next event (a cache lookup, a local JWT
//! check, a use to count, a token to mint), a wait on the AS (the request stays paused until
//! the event the step names), or the answer (allow, or a local reply).
//!
//! Every rule of the flow lives here: the order of the checks, when a JWT is checked locally
//! and when it is introspected, what a refusal turns into (a ticket), the retry with a fresh
//! PAT, `rpt_max_uses`, how long a decision is remembered, and how long a request may wait.

use std::rc::Rc;

use crate::access_decision::{decidable, decision_key_extra, verified_access_token, Denial};
use crate::cache::{keyed_digest, token_digest, Digest16, LocalKeyer};
use crate::challenge::Challenge;
use crate::config::{AsProfile, PepConfig};
use crate::decision::{LocalReply, Mode, Target};
use crate::introspection::{Clock, Insufficiency, IntrospectionResult};
use crate::jwt_rpt::JwtCheck;
use crate::resource::{Enforcement, ScopesMode};
use crate::session::SessionStep;
use crate::wire::{permission_request_body, AsError};

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Deciding from what the worker already holds; not paused yet.
    Starting,
    /// Paused until the AS session (endpoints and PAT) is ready.
    AwaitingSession,
    /// Paused until the AS's JWKS has been fetched.
    AwaitingJwks,
    Introspecting,
    /// Paused until the AS has decided on the party's access token (`access_tokens: decide`).
    Deciding,
    RequestingTicket,
    Finished,
}

/// What the worker can tell of the JWKS when a paused request looks at the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwksView {
    /// JWT RPTs are not checked locally (switched off, or the AS publishes no JWKS).
    Off,
    /// The last fetch failed: JWTs are introspected until one succeeds.
    Failed,
    /// Checked locally; `refresh_allowed` tells whether an unknown `kid` may refetch it now.
    On { refresh_allowed: bool },
}

/// The session as a paused request sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionView {
    pub step: SessionStep,
    pub jwks: JwksView,
}

/// What happened: the answer to the flow's last question, or news from the AS or the clock.
#[derive(Debug)]
pub enum Event {
    Start,
    /// The session or the JWKS this request waited for may have changed: look again.
    Wake,
    UsesCounted {
        used_up: bool,
    },
    DecisionLookedUp(Option<Rc<IntrospectionResult>>),
    /// `None`: no keys are held here (or local validation is off).
    JwtChecked(Option<JwtCheck>),
    SessionSeen(SessionView),
    Remembered(Rc<IntrospectionResult>),
    UseTaken(bool),
    Minted(Result<Rc<str>, String>),
    Introspected(Result<Rc<IntrospectionResult>, AsError>),
    /// The AS's decision on the access token, as cached (a grant covering the request, or a
    /// `Denial`), with the ticket the AS gave on the way (uma2) and the RPT it issued (uma2).
    AccessDecided {
        answer: Result<Rc<IntrospectionResult>, AsError>,
        ticket: Option<String>,
        rpt: Option<Rc<str>>,
    },
    TicketAnswered(Result<String, AsError>),
    /// The session could not be made ready, or a call for this request could not be made;
    /// `count` when the failure is not in `as_failures` yet.
    AsFailed {
        reason: String,
        count: bool,
    },
    /// The worker has as many introspections in flight as it allows: this one is not started.
    Overloaded,
    /// Periodic check; `call_in_flight` tells whether the call this request waits on (its
    /// RPT's introspection, its token's decision) is still in flight.
    Tick {
        call_in_flight: bool,
    },
}

/// What the worker must do next.
#[derive(Debug)]
pub enum Step {
    // Questions, answered at once with the event named.
    /// `UsesCounted`.
    CountUses,
    /// `DecisionLookedUp`.
    LookUpDecision,
    /// `DecisionLookedUp`, for the AS's decision on the access token (`Flow::decision_keys`).
    LookUpAccessDecision,
    /// `JwtChecked`, against the keys held now.
    CheckJwtLocally,
    /// `SessionSeen`.
    LookAtSession,
    /// Store the decision until `until_s`; `Remembered` with the stored value.
    Remember {
        result: IntrospectionResult,
        until_s: i64,
    },
    /// Count one use of the RPT, kept until `expires_at`; `UseTaken`.
    TakeUse {
        max: u32,
        expires_at: i64,
    },
    /// The identity JWT for the upstream; `Minted`.
    MintIdentity {
        result: Rc<IntrospectionResult>,
    },
    /// The AS refused the PAT: drop it, then `Wake`.
    InvalidatePat,
    // Waits: the request stays paused until the event named.
    /// Get the session going; `Wake` when ready, `AsFailed` when it fails.
    WaitForSession,
    /// Fetch the JWKS (again, when `refresh`); `Wake` when done.
    FetchJwks {
        refresh: bool,
    },
    /// Introspect this RPT (one call serves every request with it); `Introspected`.
    Introspect,
    /// Ask the AS whether the access token may have the resource and scope (one call serves
    /// every request with the same token, resource and scope); `AccessDecided`.
    AskAccessDecision,
    /// Ask the permission endpoint for a ticket with `body`; `TicketAnswered`.
    RequestTicket {
        body: Vec<u8>,
    },
    /// Nothing to do now.
    KeepWaiting,
    // Answers.
    Allow(Allowed),
    /// `count_failure`: the reply is an AS failure not counted yet.
    Reply {
        reply: LocalReply,
        count_failure: bool,
    },
}

/// How an allowed request goes on.
#[derive(Debug)]
pub struct Allowed {
    pub result: Rc<IntrospectionResult>,
    /// The identity JWT for the upstream, when forwarding is configured.
    pub identity: Option<Rc<str>>,
    /// The request was paused: it must be resumed (FULL), not continued.
    pub resume: bool,
    /// The RPT the AS issued for the party's access token, for the client (`return_rpt`).
    pub rpt_for_client: Option<Rc<str>>,
    /// `permissive`: the request was denied (why) and goes on marked so.
    pub denied: Option<String>,
}

/// Where an answer to a question goes.
#[derive(Debug)]
enum Asked {
    Nothing,
    UsesAtStart,
    DecisionAtStart,
    JwtAtStart,
    Session,
    DecisionPaused(JwksView),
    JwtPaused {
        refresh_allowed: bool,
    },
    Remembered,
    /// The token was refused as an RPT; whether the AS may still decide on it.
    RememberedInvalid {
        reason: String,
        decidable: bool,
    },
    AccessDecision,
    TakeUse(Rc<IntrospectionResult>),
    Mint(Rc<IntrospectionResult>),
    InvalidatedPat,
}

/// The settings the flow decides with.
#[derive(Debug, Clone, Copy)]
pub struct FlowContext<'a> {
    pub config: &'a PepConfig,
    /// A forwarded identity JWT is configured.
    pub forwarding: bool,
    pub now_ms: i64,
}

impl FlowContext<'_> {
    pub fn clock(&self) -> Clock {
        clock(self.config, self.now_ms / 1000)
    }

    fn timeout_ms(&self) -> i64 {
        i64::try_from(self.config.timeout_ms).unwrap_or(i64::MAX)
    }
}

/// The timing rules decisions are made with, at `now_s`.
pub fn clock(config: &PepConfig, now_s: i64) -> Clock {
    Clock {
        now: now_s,
        margin_s: i64::try_from(config.rpt_margin_s).unwrap_or(i64::MAX / 2),
        skew_s: i64::try_from(config.clock_skew_s).unwrap_or(0),
    }
}

/// Until when (unix s) a decision is remembered: as long as the RPT may be accepted
/// (`exp` less `rpt_margin_s`), within `cache_max_ttl_s`; a refusal for
/// `negative_cache_ttl_s`.
pub fn remember_until(config: &PepConfig, result: &IntrospectionResult, clock: Clock) -> i64 {
    let max_ttl = i64::try_from(config.cache_max_ttl_s).unwrap_or(0);
    if result.active {
        let by_exp =
            result.exp.map_or(clock.now.saturating_add(max_ttl), |exp| exp.saturating_sub(clock.margin_s));
        by_exp.min(clock.now.saturating_add(max_ttl))
    } else {
        clock.now.saturating_add(i64::try_from(config.negative_cache_ttl_s).unwrap_or(0))
    }
}

/// Whether `result` grants the target's scopes: every one (`all`) or one of them (`any`); the
/// first shortfall otherwise.
pub fn covers_target(
    result: &IntrospectionResult,
    target: &Target,
    clock: Clock,
    profile: AsProfile,
) -> Result<(), Insufficiency> {
    let mut verdicts = target.scopes.iter().map(|s| result.covers(&target.resource_id, s, clock, profile));
    match target.scopes_mode {
        ScopesMode::All => verdicts.find(Result::is_err).unwrap_or(Ok(())),
        ScopesMode::Any => {
            let mut first = None;
            for v in verdicts {
                match v {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        first.get_or_insert(e);
                    }
                }
            }
            Err(first.unwrap_or(Insufficiency::ScopeMissing))
        }
    }
}

/// Whether a refused introspection is retried with a fresh PAT: Gluu/Janssen introspect with
/// the PAT (a refusal may mean it was revoked); Keycloak with the client's own credentials,
/// which a new PAT cannot fix.
pub fn retries_refused_introspection(profile: AsProfile) -> bool {
    profile == AsProfile::Uma2
}

/// A JWT this filter refused: remembered as the AS's refusal would be.
pub fn refused() -> IntrospectionResult {
    IntrospectionResult::inactive()
}

/// A request the PEP is deciding.
#[derive(Debug)]
pub struct Flow {
    pub target: Target,
    pub mode: Mode,
    pub method: String,
    /// The path without its query, for the log.
    pub log_path: String,
    /// The RPT is still to be checked; false once a ticket is the answer.
    rpt_live: bool,
    /// The SHA-256 digest of the RPT, computed when first needed (never on a local cache hit).
    digest: std::cell::OnceCell<Digest16>,
    /// The key of this worker's cache entries for the RPT (`LocalKeyer`), computed once.
    local_key: std::cell::OnceCell<Digest16>,
    /// The request came with an RPT (kept after it is given up, for use counts).
    token: Option<String>,
    /// Why a ticket is asked for, for the log.
    ticket_reason: String,
    /// The token is taken as the party's access token and the AS decides (`decide` mode).
    deciding: bool,
    /// The AS refused the party (not its token): the challenge goes with 403, not 401.
    party_refused: bool,
    /// The RPT the AS issued on the way (uma2, `return_rpt`).
    rpt_for_client: Option<Rc<str>>,
    stage: Stage,
    asked: Asked,
    retried_credentials: bool,
    jwks_refreshed: bool,
    /// The request has been paused (its answer resumes it).
    paused: bool,
    /// A request waiting for the session or the JWKS is denied after this time (ms).
    deadline_ms: i64,
}

impl Flow {
    pub fn new(target: Target, mode: Mode, method: String, log_path: String, rpt: Option<String>) -> Self {
        let ticket_reason = if rpt.is_some() { String::new() } else { "no usable bearer token".into() };

        Self {
            target,
            mode,
            method,
            log_path,
            rpt_live: rpt.is_some(),
            token: rpt,
            digest: std::cell::OnceCell::new(),
            local_key: std::cell::OnceCell::new(),
            ticket_reason,
            deciding: false,
            party_refused: false,
            rpt_for_client: None,
            stage: Stage::Starting,
            asked: Asked::Nothing,
            retried_credentials: false,
            jwks_refreshed: false,
            paused: false,
            deadline_ms: 0,
        }
    }

    /// The request is paused already (it waited for a lookup before its flow began): its
    /// answer resumes it.
    pub fn mark_paused(&mut self) {
        self.paused = true;
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// The RPT still being checked.
    pub fn rpt(&self) -> Option<&str> {
        self.token.as_deref().filter(|_| self.rpt_live)
    }

    /// The key of the request's RPT in this worker's caches: hashed once per request, however
    /// many caches are asked.
    pub fn local_key(&self, keyer: &LocalKeyer) -> Option<Digest16> {
        let token = self.token.as_deref()?;
        Some(*self.local_key.get_or_init(|| keyer.key(token)))
    }

    /// The token the AS is asked to decide on (`decide` mode), once the flow has taken it as an
    /// access token.
    pub fn access_token(&self) -> Option<&str> {
        self.token.as_deref().filter(|_| self.deciding)
    }

    /// The keys of the AS's decision on (token, resource, scope): this worker's, and (computed
    /// only when called) the one all workers share.
    pub fn decision_keys(
        &self,
        keyer: &LocalKeyer,
    ) -> Option<(Digest16, impl Fn() -> Option<Digest16> + '_)> {
        let local = self.local_key(keyer)?;
        let extra =
            decision_key_extra(&self.target.resource_id, self.target.scopes_mode, &self.target.scopes);
        let local = keyer.keyed(&local, &extra);
        let shared = move || self.digest().map(|d| keyed_digest(&d, &extra));
        Some((local, shared))
    }

    /// The digest of the request's RPT (kept after the RPT is given up, for use counts).
    pub fn digest(&self) -> Option<Digest16> {
        let token = self.token.as_deref()?;
        Some(*self.digest.get_or_init(|| token_digest(token)))
    }

    /// Takes the flow one step further.
    pub fn on(&mut self, event: Event, cx: &FlowContext<'_>) -> Step {
        if let Event::Tick { call_in_flight } = event {
            return self.on_tick(call_in_flight, cx);
        }
        let asked = std::mem::replace(&mut self.asked, Asked::Nothing);
        match (asked, event) {
            (Asked::Nothing, Event::Start) if self.stage == Stage::Starting => {
                self.deadline_ms = cx.now_ms.saturating_add(cx.timeout_ms());
                self.start(cx)
            }
            (Asked::UsesAtStart, Event::UsesCounted { used_up }) => {
                if used_up {
                    return self.denied("RPT used up");
                }
                self.ask(Asked::DecisionAtStart, Step::LookUpDecision)
            }
            (Asked::DecisionAtStart, Event::DecisionLookedUp(Some(result))) => self.decide(result, cx),
            (Asked::DecisionAtStart, Event::DecisionLookedUp(None)) => {
                self.ask(Asked::JwtAtStart, Step::CheckJwtLocally)
            }
            (Asked::JwtAtStart, Event::JwtChecked(check)) => match check {
                Some(JwtCheck::Valid(result)) => self.remember(result, cx),
                Some(JwtCheck::Invalid(reason)) => self.remember_refusal(reason, Denial::Token.cached(), cx),
                Some(JwtCheck::NotAnRpt { reason, exp }) => self.remember_not_an_rpt(reason, exp, cx),
                // Anything else waits for the session: the JWKS or the AS decides.
                _ => self.look_at_session(),
            },
            (Asked::Session, Event::SessionSeen(view)) => self.on_session(view),
            (Asked::DecisionPaused(_), Event::DecisionLookedUp(Some(result))) => self.decide(result, cx),
            (Asked::DecisionPaused(jwks), Event::DecisionLookedUp(None)) => {
                let looks_like_jwt = self.rpt().is_some_and(|r| r.split('.').count() == 3);
                match jwks {
                    JwksView::On { refresh_allowed } if looks_like_jwt => {
                        self.ask(Asked::JwtPaused { refresh_allowed }, Step::CheckJwtLocally)
                    }
                    _ => self.introspect(),
                }
            }
            (Asked::JwtPaused { refresh_allowed }, Event::JwtChecked(check)) => match check {
                None => self.wait(Stage::AwaitingJwks, Step::FetchJwks { refresh: false }),
                Some(JwtCheck::Valid(result)) => self.remember(result, cx),
                Some(JwtCheck::Invalid(reason)) => self.remember_refusal(reason, Denial::Token.cached(), cx),
                Some(JwtCheck::NotAnRpt { reason, exp }) => self.remember_not_an_rpt(reason, exp, cx),
                Some(JwtCheck::UnknownKey(_)) if !self.jwks_refreshed && refresh_allowed => {
                    self.jwks_refreshed = true;
                    self.wait(Stage::AwaitingJwks, Step::FetchJwks { refresh: true })
                }
                // Not in the JWKS even after a refresh, unverifiable here, or not a JWT: the AS
                // may still know it; it decides, not this filter.
                Some(JwtCheck::UnknownKey(_) | JwtCheck::Uncheckable(_) | JwtCheck::NotAJwt) => {
                    self.introspect()
                }
            },
            (Asked::Remembered, Event::Remembered(result)) => self.decide(result, cx),
            (Asked::RememberedInvalid { reason, decidable }, Event::Remembered(_)) => {
                self.refuse_token(reason, decidable, cx)
            }
            (Asked::AccessDecision, Event::DecisionLookedUp(None)) => self.look_at_session(),
            (Asked::AccessDecision, Event::DecisionLookedUp(Some(result))) => {
                self.on_access_answer(result, None, cx)
            }
            (Asked::TakeUse(result), Event::UseTaken(taken)) => {
                if !taken {
                    return self.denied("RPT used up");
                }
                self.forward(result, cx)
            }
            (Asked::Mint(result), Event::Minted(minted)) => match minted {
                Ok(token) => self.allow(result, Some(token)),
                Err(reason) => self.finish(LocalReply::signing_failed(reason), false),
            },
            (Asked::InvalidatedPat, Event::Wake) => self.look_at_session(),
            (Asked::Nothing, Event::Wake)
                if matches!(self.stage, Stage::AwaitingSession | Stage::AwaitingJwks) =>
            {
                self.look_at_session()
            }
            (Asked::Nothing, Event::AsFailed { reason, count }) if self.stage != Stage::Finished => {
                self.finish(LocalReply::as_unreachable(reason), count)
            }
            (Asked::Nothing, Event::Introspected(answer)) if self.stage == Stage::Introspecting => {
                match answer {
                    Ok(result) => self.decide(result, cx),
                    Err(AsError::CredentialsRefused { .. })
                        if retries_refused_introspection(cx.config.as_profile) =>
                    {
                        self.retry_with_new_pat()
                    }
                    // The worker counts a failed introspection once, whatever waits on it.
                    Err(e) => {
                        self.finish(LocalReply::as_unreachable(format!("introspection failed: {e}")), false)
                    }
                }
            }
            (Asked::Nothing, Event::AccessDecided { answer, ticket, rpt })
                if self.stage == Stage::Deciding =>
            {
                match answer {
                    Ok(result) => {
                        self.rpt_for_client = rpt;
                        self.on_access_answer(result, ticket, cx)
                    }
                    // The worker counts a failed decision once, whatever waits on it.
                    Err(e) => {
                        self.finish(LocalReply::as_unreachable(format!("access decision failed: {e}")), false)
                    }
                }
            }
            (Asked::Nothing, Event::Overloaded)
                if matches!(self.stage, Stage::Introspecting | Stage::Deciding) =>
            {
                self.finish(LocalReply::overloaded(), false)
            }
            (Asked::Nothing, Event::TicketAnswered(answer)) if self.stage == Stage::RequestingTicket => {
                match answer {
                    Ok(ticket) => self.challenge(&ticket, cx),
                    Err(AsError::CredentialsRefused { .. }) if !self.retried_credentials => {
                        self.retry_with_new_pat()
                    }
                    Err(e) => self
                        .finish(LocalReply::as_unreachable(format!("permission request failed: {e}")), true),
                }
            }
            // An answer out of turn (a wake for a request no longer waiting on that, say): the
            // flow stays where it was.
            (asked, _) => {
                self.asked = asked;
                Step::KeepWaiting
            }
        }
    }

    fn ask(&mut self, asked: Asked, step: Step) -> Step {
        self.asked = asked;
        step
    }

    fn wait(&mut self, stage: Stage, step: Step) -> Step {
        self.stage = stage;
        self.paused = true;
        step
    }

    /// From now on the answer is a ticket.
    fn needs_ticket(&mut self, reason: impl Into<String>) {
        self.rpt_live = false;
        self.ticket_reason = reason.into();
    }

    /// The answer with `ticket`: 401, or 403 when the AS refused the party.
    fn challenge(&mut self, ticket: &str, cx: &FlowContext<'_>) -> Step {
        let challenge = Challenge { realm: &cx.config.realm, as_uri: &cx.config.issuer, ticket };
        let reason = std::mem::take(&mut self.ticket_reason);
        let mut reply = LocalReply::challenge(challenge.header_value(cx.config.challenge_style), reason);
        if self.party_refused {
            reply.status = 403;
        }
        self.finish(reply, false)
    }

    /// The token is not an RPT that grants the request. In `decide` mode it is then taken as
    /// the party's access token, and the AS decides; otherwise (or once the AS has decided)
    /// the answer is a ticket.
    fn refuse_token(&mut self, reason: impl Into<String>, decidable: bool, cx: &FlowContext<'_>) -> Step {
        if decidable && cx.config.access_tokens.decide() && !self.deciding && self.rpt().is_some() {
            self.deciding = true;
            return self.ask(Asked::AccessDecision, Step::LookUpAccessDecision);
        }
        self.denied(reason)
    }

    /// The request is denied: a ticket is the answer, or (`permissive`) it goes on as denied.
    fn denied(&mut self, reason: impl Into<String>) -> Step {
        self.needs_ticket(reason);
        if self.target.enforcement == Enforcement::Permissive {
            return self.forward_denied();
        }
        self.look_at_session()
    }

    /// `permissive`: forwarded, marked denied (no identity, no ticket asked for).
    fn forward_denied(&mut self) -> Step {
        self.stage = Stage::Finished;
        let reason = std::mem::take(&mut self.ticket_reason);
        Step::Allow(Allowed {
            result: Rc::new(refused()),
            identity: None,
            resume: self.paused,
            rpt_for_client: None,
            denied: Some(reason),
        })
    }

    /// The AS's decision on the access token (fresh, or as cached).
    fn on_access_answer(
        &mut self,
        result: Rc<IntrospectionResult>,
        ticket: Option<String>,
        cx: &FlowContext<'_>,
    ) -> Step {
        if result.active {
            return self.decide(result, cx);
        }
        let denial = Denial::of(&result);
        self.party_refused = denial == Denial::Party;
        let reason = match denial {
            Denial::Party => "the AS denied the access token's party",
            Denial::Token => "the AS does not accept the access token",
        };
        match ticket {
            Some(ticket) if self.target.enforcement != Enforcement::Permissive => {
                self.needs_ticket(reason);
                self.challenge(&ticket, cx)
            }
            _ => self.denied(reason),
        }
    }

    /// The hot path: a request decided from the caches and the keys held, with no AS call.
    fn start(&mut self, cx: &FlowContext<'_>) -> Step {
        if self.rpt().is_none() {
            let reason = std::mem::take(&mut self.ticket_reason);
            return self.denied(reason);
        }
        if cx.config.rpt_max_uses > 0 {
            return self.ask(Asked::UsesAtStart, Step::CountUses);
        }
        self.ask(Asked::DecisionAtStart, Step::LookUpDecision)
    }

    fn look_at_session(&mut self) -> Step {
        self.ask(Asked::Session, Step::LookAtSession)
    }

    fn on_session(&mut self, view: SessionView) -> Step {
        match view.step {
            SessionStep::Ready => {}
            SessionStep::BackingOff => {
                return self.finish(LocalReply::as_unreachable("authorization server unavailable"), false);
            }
            SessionStep::Waiting | SessionStep::FetchDiscovery | SessionStep::FetchPat => {
                return self.wait(Stage::AwaitingSession, Step::WaitForSession);
            }
        }
        if self.rpt().is_none() {
            let scopes: Vec<&str> = self.target.scopes.iter().map(String::as_str).collect();
            let body = permission_request_body(&self.target.resource_id, &scopes);
            return self.wait(Stage::RequestingTicket, Step::RequestTicket { body });
        }
        if self.deciding {
            return self.wait(Stage::Deciding, Step::AskAccessDecision);
        }
        // Another request may have brought the answer meanwhile.
        let jwks = match view.jwks {
            JwksView::On { .. } => view.jwks,
            JwksView::Off | JwksView::Failed => JwksView::Off,
        };
        self.ask(Asked::DecisionPaused(jwks), Step::LookUpDecision)
    }

    fn introspect(&mut self) -> Step {
        self.wait(Stage::Introspecting, Step::Introspect)
    }

    fn remember(&mut self, result: IntrospectionResult, cx: &FlowContext<'_>) -> Step {
        let until_s = remember_until(cx.config, &result, cx.clock());
        self.ask(Asked::Remembered, Step::Remember { result, until_s })
    }

    /// The AS's own JWT that is no RPT: an access token to decide on while it lives (the AS
    /// may not check its `exp`: Gluu takes a claim token as it is); an expired one is refused.
    fn remember_not_an_rpt(&mut self, reason: String, exp: Option<i64>, cx: &FlowContext<'_>) -> Step {
        let clock = cx.clock();
        match exp {
            Some(exp) if exp > clock.now.saturating_add(clock.margin_s) => {
                self.remember_refusal(reason, verified_access_token(), cx)
            }
            _ => self.remember_refusal(format!("{reason}; expired"), Denial::Token.cached(), cx),
        }
    }

    /// A JWT refused as an RPT, remembered as `result` (which says whether the AS may still
    /// decide on it as an access token).
    fn remember_refusal(
        &mut self,
        reason: String,
        result: IntrospectionResult,
        cx: &FlowContext<'_>,
    ) -> Step {
        let until_s = remember_until(cx.config, &result, cx.clock());
        let decidable = decidable(&result, cx.config.as_profile);
        self.ask(Asked::RememberedInvalid { reason, decidable }, Step::Remember { result, until_s })
    }

    /// Allows when the RPT covers the resource and scope; otherwise the answer is a ticket.
    fn decide(&mut self, result: Rc<IntrospectionResult>, cx: &FlowContext<'_>) -> Step {
        let verdict = covers_target(&result, &self.target, cx.clock(), cx.config.as_profile);
        if let Err(insufficiency) = verdict {
            let decidable = decidable(&result, cx.config.as_profile);
            return self.refuse_token(insufficiency.as_str(), decidable, cx);
        }
        let max = cx.config.rpt_max_uses;
        // Uses are counted for RPTs; an access token's grant is the AS's, for as long as it lives.
        if max > 0 && self.token.is_some() && !self.deciding {
            // An RPT without `exp` keeps its count for as long as the Envoy runs.
            let expires_at = result.exp.unwrap_or(i64::MAX);
            return self.ask(Asked::TakeUse(result), Step::TakeUse { max, expires_at });
        }
        self.forward(result, cx)
    }

    fn forward(&mut self, result: Rc<IntrospectionResult>, cx: &FlowContext<'_>) -> Step {
        if cx.forwarding && self.token.is_some() {
            return self.ask(Asked::Mint(Rc::clone(&result)), Step::MintIdentity { result });
        }
        self.allow(result, None)
    }

    fn allow(&mut self, result: Rc<IntrospectionResult>, identity: Option<Rc<str>>) -> Step {
        self.stage = Stage::Finished;
        Step::Allow(Allowed {
            result,
            identity,
            resume: self.paused,
            rpt_for_client: self.rpt_for_client.take(),
            denied: None,
        })
    }

    fn finish(&mut self, reply: LocalReply, count_failure: bool) -> Step {
        self.stage = Stage::Finished;
        Step::Reply { reply, count_failure }
    }

    /// A protection call was refused: the PAT may have been revoked; fetch one and retry once.
    fn retry_with_new_pat(&mut self) -> Step {
        if std::mem::replace(&mut self.retried_credentials, true) {
            return self.finish(LocalReply::as_unreachable("the AS refused a fresh PAT"), true);
        }
        self.stage = Stage::AwaitingSession;
        self.ask(Asked::InvalidatedPat, Step::InvalidatePat)
    }

    /// How long a paused request may wait: the session and the JWKS within `timeout_ms`; an
    /// introspection as long as its call is in flight; a ticket request for as long as its call
    /// may take after the session, and a little more.
    fn on_tick(&mut self, call_in_flight: bool, cx: &FlowContext<'_>) -> Step {
        let now = cx.now_ms;
        let timeout = cx.timeout_ms();
        let expired = match self.stage {
            Stage::AwaitingSession | Stage::AwaitingJwks => now > self.deadline_ms,
            Stage::Introspecting | Stage::Deciding => !call_in_flight,
            Stage::RequestingTicket => {
                now > self.deadline_ms.saturating_add(timeout.saturating_mul(2)).saturating_add(1000)
            }
            Stage::Starting | Stage::Finished => false,
        };
        if !expired {
            return Step::KeepWaiting;
        }
        self.finish(LocalReply::as_unreachable("timed out waiting for the AS"), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PepConfig;
    use crate::decision::LogCode;
    use crate::introspection::Permission;

    fn config(extra: serde_json::Value) -> PepConfig {
        let mut base = serde_json::json!({
            "issuer": "https://as.example",
            "client_id": "pep",
            "client_secret": "s",
            "as_cluster": "as",
            "resources": [{"id": "r1", "uri": "/alice", "scopes": []}],
        });
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        match PepConfig::from_json(base.to_string().as_bytes()) {
            Ok(c) => c,
            Err(e) => unreachable!("test config: {e}"),
        }
    }

    fn cx(config: &PepConfig) -> FlowContext<'_> {
        FlowContext { config, forwarding: false, now_ms: 1_000_000 }
    }

    fn target() -> Target {
        Target::one_scope("r1", "get", None)
    }

    fn flow(rpt: Option<&str>) -> Flow {
        Flow::new(target(), Mode::Full, "GET".into(), "/alice".into(), rpt.map(str::to_string))
    }

    /// A flow with `rpt` past the hot path (no decision cached, no keys held), having seen the
    /// session as `view`, and the step it took then.
    fn paused(c: &PepConfig, rpt: &str, view: SessionView) -> (Flow, Step) {
        let mut f = flow(Some(rpt));
        f.on(Event::Start, &cx(c));
        f.on(Event::DecisionLookedUp(None), &cx(c));
        f.on(Event::JwtChecked(None), &cx(c));
        let step = f.on(Event::SessionSeen(view), &cx(c));
        (f, step)
    }

    fn granting(scope: &str) -> Rc<IntrospectionResult> {
        let mut r = refused();
        r.active = true;
        r.exp = Some(1_000 + 3_600);
        r.permissions = vec![Permission {
            resource_id: "r1".into(),
            scopes: vec![scope.into()],
            scopes_listed: true,
            exp: None,
            nbf: None,
        }];
        Rc::new(r)
    }

    const READY: SessionView = SessionView { step: SessionStep::Ready, jwks: JwksView::Off };
    const READY_JWKS: SessionView =
        SessionView { step: SessionStep::Ready, jwks: JwksView::On { refresh_allowed: true } };

    fn is_reply(step: &Step, status: u32) -> bool {
        matches!(step, Step::Reply { reply, .. } if reply.status == status)
    }

    fn decide_config() -> PepConfig {
        config(serde_json::json!({"access_tokens": {"mode": "decide"}}))
    }

    /// A flow in decide mode whose token the caches know as not granting: where it goes next.
    fn refused_at_start(c: &PepConfig) -> (Flow, Step) {
        let mut f = flow(Some("user-token"));
        f.on(Event::Start, &cx(c));
        let step = f.on(Event::DecisionLookedUp(Some(Rc::new(verified_access_token()))), &cx(c));
        (f, step)
    }

    #[test]
    fn uma_mode_answers_an_access_token_with_a_ticket() {
        let c = config(serde_json::json!({}));
        let (f, step) = refused_at_start(&c);
        assert!(matches!(step, Step::LookAtSession), "{step:?}");
        assert_eq!(f.rpt(), None);
        assert_eq!(f.access_token(), None);
    }

    #[test]
    fn decide_mode_looks_up_then_asks_the_as_about_the_access_token() {
        let c = decide_config();
        let (mut f, step) = refused_at_start(&c);
        assert!(matches!(step, Step::LookUpAccessDecision), "{step:?}");
        assert_eq!(f.access_token(), Some("user-token"));
        assert!(matches!(f.on(Event::DecisionLookedUp(None), &cx(&c)), Step::LookAtSession));
        assert!(matches!(f.on(Event::SessionSeen(READY), &cx(&c)), Step::AskAccessDecision));
        assert_eq!(f.stage(), Stage::Deciding);
        let answer =
            Event::AccessDecided { answer: Ok(granting("get")), ticket: None, rpt: Some("rpt-1".into()) };
        match f.on(answer, &cx(&c)) {
            Step::Allow(a) => {
                assert!(a.resume);
                assert_eq!(a.rpt_for_client.as_deref(), Some("rpt-1"));
            }
            other => unreachable!("{other:?}"),
        }
    }

    #[test]
    fn a_cached_grant_allows_without_pausing() {
        let c = decide_config();
        let (mut f, _) = refused_at_start(&c);
        match f.on(Event::DecisionLookedUp(Some(granting("get"))), &cx(&c)) {
            Step::Allow(a) => assert!(!a.resume),
            other => unreachable!("{other:?}"),
        }
    }

    #[test]
    fn a_grant_for_another_scope_is_no_grant_and_asks_nothing_more_of_the_as() {
        let c = decide_config();
        let (mut f, _) = refused_at_start(&c);
        // Once decided on, the token is never decided on again in this request: a ticket.
        let step = f.on(Event::DecisionLookedUp(Some(granting("put"))), &cx(&c));
        assert!(matches!(step, Step::LookAtSession), "{step:?}");
        assert!(matches!(f.on(Event::SessionSeen(READY), &cx(&c)), Step::RequestTicket { .. }));
        let step = f.on(Event::TicketAnswered(Ok("t".into())), &cx(&c));
        assert!(is_reply(&step, 401), "{step:?}");
    }

    #[test]
    fn the_party_refused_is_403_with_a_ticket_and_the_token_refused_401() {
        let c = decide_config();
        for (denial, status) in [(Denial::Party, 403), (Denial::Token, 401)] {
            // A ticket from the AS's answer (uma2) is used as it is.
            let (mut f, _) = refused_at_start(&c);
            f.on(Event::DecisionLookedUp(None), &cx(&c));
            f.on(Event::SessionSeen(READY), &cx(&c));
            let answer = Event::AccessDecided {
                answer: Ok(Rc::new(denial.cached())),
                ticket: Some("from-grant".into()),
                rpt: None,
            };
            let step = f.on(answer, &cx(&c));
            assert!(is_reply(&step, status), "{denial:?}: {step:?}");
            let Step::Reply { reply, .. } = step else { unreachable!() };
            assert_eq!(reply.code, LogCode::TicketIssued);
            assert!(reply.headers.iter().any(|(k, v)| k == "www-authenticate" && v.contains("from-grant")));
            // Without one (keycloak, or a cached denial), a ticket is asked for.
            let (mut f, _) = refused_at_start(&c);
            let step = f.on(Event::DecisionLookedUp(Some(Rc::new(denial.cached()))), &cx(&c));
            assert!(matches!(step, Step::LookAtSession));
            assert!(matches!(f.on(Event::SessionSeen(READY), &cx(&c)), Step::RequestTicket { .. }));
            let step = f.on(Event::TicketAnswered(Ok("t".into())), &cx(&c));
            assert!(is_reply(&step, status), "{denial:?}: {step:?}");
        }
    }

    #[test]
    fn a_failed_or_overloaded_decision_denies_with_the_warning() {
        let c = decide_config();
        let (mut f, _) = refused_at_start(&c);
        f.on(Event::DecisionLookedUp(None), &cx(&c));
        f.on(Event::SessionSeen(READY), &cx(&c));
        let failed = Event::AccessDecided { answer: Err(AsError::Unreachable), ticket: None, rpt: None };
        let step = f.on(failed, &cx(&c));
        let Step::Reply { reply, count_failure } = step else { unreachable!("{step:?}") };
        assert_eq!((reply.status, reply.code), (403, LogCode::AsError));
        assert!(!count_failure, "the worker counts it once per call");
        let (mut f, _) = refused_at_start(&c);
        f.on(Event::DecisionLookedUp(None), &cx(&c));
        f.on(Event::SessionSeen(READY), &cx(&c));
        assert!(is_reply(&f.on(Event::Overloaded, &cx(&c)), 503));
        // A decision whose call is gone times out on the tick.
        let (mut f, _) = refused_at_start(&c);
        f.on(Event::DecisionLookedUp(None), &cx(&c));
        f.on(Event::SessionSeen(READY), &cx(&c));
        assert!(matches!(f.on(Event::Tick { call_in_flight: true }, &cx(&c)), Step::KeepWaiting));
        assert!(is_reply(&f.on(Event::Tick { call_in_flight: false }, &cx(&c)), 403));
    }

    #[test]
    fn an_rpt_that_grants_is_never_decided_on_and_uses_are_counted_for_rpts_only() {
        let c = config(serde_json::json!({"access_tokens": {"mode": "decide"}, "rpt_max_uses": 3}));
        let mut f = flow(Some("rpt"));
        assert!(matches!(f.on(Event::Start, &cx(&c)), Step::CountUses));
        f.on(Event::UsesCounted { used_up: false }, &cx(&c));
        let step = f.on(Event::DecisionLookedUp(Some(granting("get"))), &cx(&c));
        assert!(matches!(step, Step::TakeUse { .. }), "{step:?}");
        let (mut f, _) = {
            let mut f = flow(Some("user-token"));
            f.on(Event::Start, &cx(&c));
            f.on(Event::UsesCounted { used_up: false }, &cx(&c));
            let step = f.on(Event::DecisionLookedUp(Some(Rc::new(verified_access_token()))), &cx(&c));
            (f, step)
        };
        assert!(matches!(f.on(Event::DecisionLookedUp(Some(granting("get"))), &cx(&c)), Step::Allow(_)));
    }

    #[test]
    fn a_forged_token_is_never_decided_on_and_gluu_gets_only_verified_tokens() {
        for profile in ["keycloak", "uma2"] {
            let c = config(serde_json::json!({"as_profile": profile, "access_tokens": {"mode": "decide"}}));
            let mut f = flow(Some("a.b.c"));
            f.on(Event::Start, &cx(&c));
            f.on(Event::DecisionLookedUp(None), &cx(&c));
            let step = f.on(Event::JwtChecked(Some(JwtCheck::Invalid("bad signature".into()))), &cx(&c));
            assert!(matches!(step, Step::Remember { .. }));
            let step = f.on(Event::Remembered(Rc::new(Denial::Token.cached())), &cx(&c));
            assert!(matches!(step, Step::LookAtSession), "{profile}: {step:?}");
            assert_eq!(f.access_token(), None, "{profile}");
            // The AS's own JWT that is no RPT: decided on in either dialect.
            let mut f = flow(Some("a.b.c"));
            f.on(Event::Start, &cx(&c));
            f.on(Event::DecisionLookedUp(None), &cx(&c));
            let step = f.on(
                Event::JwtChecked(Some(JwtCheck::NotAnRpt {
                    reason: "no permissions".into(),
                    exp: Some(2_000_000),
                })),
                &cx(&c),
            );
            let Step::Remember { result, .. } = step else { unreachable!("{step:?}") };
            let step = f.on(Event::Remembered(Rc::new(result)), &cx(&c));
            assert!(matches!(step, Step::LookUpAccessDecision), "{profile}: {step:?}");
        }
        // Expired: refused here, whatever the AS would say.
        let c = config(serde_json::json!({"as_profile": "uma2", "access_tokens": {"mode": "decide"}}));
        let mut f = flow(Some("a.b.c"));
        f.on(Event::Start, &cx(&c));
        f.on(Event::DecisionLookedUp(None), &cx(&c));
        let expired = JwtCheck::NotAnRpt { reason: "no permissions".into(), exp: Some(1_000) };
        let Step::Remember { result, .. } = f.on(Event::JwtChecked(Some(expired)), &cx(&c)) else {
            unreachable!()
        };
        assert!(!decidable(&result, AsProfile::Uma2));
        let step = f.on(Event::Remembered(Rc::new(result)), &cx(&c));
        assert!(matches!(step, Step::LookAtSession), "{step:?}");
        // Inactive at introspection (not verified here): Keycloak checks it, Gluu would not.
        for (profile, decided) in [("keycloak", true), ("uma2", false)] {
            let c = config(serde_json::json!({"as_profile": profile, "access_tokens": {"mode": "decide"}}));
            let (mut f, _) = paused(&c, "opaque", READY);
            assert!(matches!(f.on(Event::DecisionLookedUp(None), &cx(&c)), Step::Introspect));
            let step = f.on(Event::Introspected(Ok(Rc::new(refused()))), &cx(&c));
            assert_eq!(matches!(step, Step::LookUpAccessDecision), decided, "{profile}: {step:?}");
        }
    }

    #[test]
    fn all_needs_every_scope_and_any_one() {
        let clock = Clock { now: 1_000, margin_s: 5, skew_s: 60 };
        let mut t = target();
        t.scopes = vec!["get".into(), "put".into()];
        let get_only = granting("get");
        assert_eq!(covers_target(&get_only, &t, clock, AsProfile::Uma2), Err(Insufficiency::ScopeMissing));
        t.scopes_mode = ScopesMode::Any;
        assert_eq!(covers_target(&get_only, &t, clock, AsProfile::Uma2), Ok(()));
        t.scopes = vec!["delete".into(), "put".into()];
        assert_eq!(covers_target(&get_only, &t, clock, AsProfile::Uma2), Err(Insufficiency::ScopeMissing));
        assert_eq!(covers_target(&refused(), &t, clock, AsProfile::Uma2), Err(Insufficiency::Inactive));
    }

    #[test]
    fn permissive_forwards_what_it_denies_without_asking_for_a_ticket() {
        let c = config(serde_json::json!({}));
        let permissive = |rpt: Option<&str>| {
            let mut f = flow(rpt);
            f.target.enforcement = Enforcement::Permissive;
            f
        };
        // No token: denied at once, no session, no ticket.
        let mut f = permissive(None);
        match f.on(Event::Start, &cx(&c)) {
            Step::Allow(a) => {
                assert_eq!(a.denied.as_deref(), Some("no usable bearer token"));
                assert!(a.identity.is_none() && !a.resume);
            }
            other => unreachable!("{other:?}"),
        }
        // An RPT without the scope: denied, forwarded.
        let mut f = permissive(Some("rpt"));
        f.on(Event::Start, &cx(&c));
        match f.on(Event::DecisionLookedUp(Some(granting("put"))), &cx(&c)) {
            Step::Allow(a) => assert_eq!(a.denied.as_deref(), Some("scope not granted")),
            other => unreachable!("{other:?}"),
        }
        // A grant is an ordinary allow.
        let mut f = permissive(Some("rpt"));
        f.on(Event::Start, &cx(&c));
        match f.on(Event::DecisionLookedUp(Some(granting("get"))), &cx(&c)) {
            Step::Allow(a) => assert!(a.denied.is_none()),
            other => unreachable!("{other:?}"),
        }
        // The AS failing still denies: nothing is forwarded on an error.
        let (mut f, _) = paused(&c, "rpt", READY);
        f.target.enforcement = Enforcement::Permissive;
        f.on(Event::DecisionLookedUp(None), &cx(&c));
        assert!(is_reply(&f.on(Event::Introspected(Err(AsError::Unreachable)), &cx(&c)), 403));
    }

    #[test]
    fn decision_keys_differ_by_resource_and_scope_and_from_the_tokens_own() {
        let keyer = LocalKeyer::default();
        let f = flow(Some("user-token"));
        let (local, shared) = f.decision_keys(&keyer).unwrap_or_else(|| unreachable!());
        assert_ne!(Some(local), f.local_key(&keyer));
        assert_ne!(shared(), f.digest());
        let mut other = flow(Some("user-token"));
        other.target.scopes = vec!["put".into()];
        let (other_local, other_shared) = other.decision_keys(&keyer).unwrap_or_else(|| unreachable!());
        assert_ne!(local, other_local);
        assert_ne!(shared(), other_shared());
        // A scope whose name is the log form of two (`get|put`) is not those two with `any`.
        let mut named = flow(Some("user-token"));
        named.target.scopes = vec!["get|put".into()];
        let mut two = flow(Some("user-token"));
        two.target.scopes = vec!["get".into(), "put".into()];
        two.target.scopes_mode = crate::resource::ScopesMode::Any;
        assert_eq!(named.target.scopes_text(), two.target.scopes_text(), "the same log form");
        let (named_local, named_shared) = named.decision_keys(&keyer).unwrap_or_else(|| unreachable!());
        let (two_local, two_shared) = two.decision_keys(&keyer).unwrap_or_else(|| unreachable!());
        assert_ne!(named_local, two_local);
        assert_ne!(named_shared(), two_shared());
        let mut all = flow(Some("user-token"));
        all.target.scopes = vec!["get".into(), "put".into()];
        let (all_local, _) = all.decision_keys(&keyer).unwrap_or_else(|| unreachable!());
        assert_ne!(all_local, two_local, "all and any of the same scopes");
    }

    #[test]
    fn the_tokens_keys_are_computed_once_and_kept() {
        let keyer = LocalKeyer::default();
        let f = flow(Some("opaque"));
        assert_eq!(f.local_key(&keyer), Some(keyer.key("opaque")));
        // Another keyer would give another key: the first one is kept for the request.
        assert_eq!(f.local_key(&LocalKeyer::default()), Some(keyer.key("opaque")));
        assert_eq!(f.digest(), Some(token_digest("opaque")));
        assert_eq!(flow(None).local_key(&keyer), None);
    }

    #[test]
    fn a_cached_decision_allows_at_once_without_pausing() {
        let c = config(serde_json::json!({}));
        let mut f = flow(Some("opaque"));
        assert!(matches!(f.on(Event::Start, &cx(&c)), Step::LookUpDecision));
        match f.on(Event::DecisionLookedUp(Some(granting("get"))), &cx(&c)) {
            Step::Allow(a) => {
                assert!(!a.resume, "decided in the request's own callback");
                assert!(a.identity.is_none());
            }
            other => unreachable!("{other:?}"),
        }
        assert_eq!(f.stage(), Stage::Finished);
    }

    #[test]
    fn no_token_asks_for_a_ticket_once_the_session_is_ready() {
        let c = config(serde_json::json!({}));
        let mut f = flow(None);
        assert!(matches!(f.on(Event::Start, &cx(&c)), Step::LookAtSession));
        let step = f.on(Event::SessionSeen(READY), &cx(&c));
        let Step::RequestTicket { body } = step else { unreachable!("{step:?}") };
        assert!(String::from_utf8_lossy(&body).contains("r1"));
        assert_eq!(f.stage(), Stage::RequestingTicket);
        let step = f.on(Event::TicketAnswered(Ok("tkt".into())), &cx(&c));
        let Step::Reply { reply, count_failure } = step else { unreachable!() };
        assert_eq!(reply.status, 401);
        assert_eq!(reply.code, LogCode::TicketIssued);
        assert!(!count_failure);
        assert!(reply.headers.iter().any(|(k, v)| k == "www-authenticate" && v.contains("tkt")));
        assert_eq!(reply.reason, "no usable bearer token");
    }

    #[test]
    fn a_session_not_ready_pauses_and_a_wake_looks_again() {
        let c = config(serde_json::json!({}));
        let mut f = flow(None);
        f.on(Event::Start, &cx(&c));
        let waiting = SessionView { step: SessionStep::FetchDiscovery, jwks: JwksView::Off };
        assert!(matches!(f.on(Event::SessionSeen(waiting), &cx(&c)), Step::WaitForSession));
        assert_eq!(f.stage(), Stage::AwaitingSession);
        assert!(matches!(f.on(Event::Wake, &cx(&c)), Step::LookAtSession));
        assert!(matches!(f.on(Event::SessionSeen(READY), &cx(&c)), Step::RequestTicket { .. }));
    }

    #[test]
    fn a_session_backing_off_denies_with_the_warning() {
        let c = config(serde_json::json!({}));
        let mut f = flow(None);
        f.on(Event::Start, &cx(&c));
        let off = SessionView { step: SessionStep::BackingOff, jwks: JwksView::Off };
        let step = f.on(Event::SessionSeen(off), &cx(&c));
        let Step::Reply { reply, count_failure } = step else { unreachable!() };
        assert_eq!(reply.status, 403);
        assert_eq!(reply.code, LogCode::AsError);
        assert!(!count_failure, "the failed session call was counted");
    }

    #[test]
    fn a_failed_session_denies_a_waiting_request() {
        let c = config(serde_json::json!({}));
        let mut f = flow(None);
        f.on(Event::Start, &cx(&c));
        f.on(Event::SessionSeen(SessionView { step: SessionStep::Waiting, jwks: JwksView::Off }), &cx(&c));
        let step = f.on(Event::AsFailed { reason: "discovery failed".into(), count: false }, &cx(&c));
        assert!(
            matches!(&step, Step::Reply { reply, count_failure: false } if reply.reason == "discovery failed")
        );
    }

    #[test]
    fn an_rpt_that_does_not_cover_the_scope_gets_a_ticket_with_the_reason() {
        let c = config(serde_json::json!({}));
        let mut f = flow(Some("opaque"));
        f.on(Event::Start, &cx(&c));
        assert!(matches!(
            f.on(Event::DecisionLookedUp(Some(granting("post"))), &cx(&c)),
            Step::LookAtSession
        ));
        assert!(f.rpt().is_none(), "the RPT is given up");
        assert!(matches!(f.on(Event::SessionSeen(READY), &cx(&c)), Step::RequestTicket { .. }));
        let Step::Reply { reply, .. } = f.on(Event::TicketAnswered(Ok("t".into())), &cx(&c)) else {
            unreachable!()
        };
        assert_eq!(reply.reason, "scope not granted");
    }

    #[test]
    fn an_unknown_opaque_rpt_is_introspected_and_decided() {
        let c = config(serde_json::json!({}));
        let mut f = flow(Some("opaque"));
        f.on(Event::Start, &cx(&c));
        assert!(matches!(f.on(Event::DecisionLookedUp(None), &cx(&c)), Step::CheckJwtLocally));
        assert!(matches!(f.on(Event::JwtChecked(None), &cx(&c)), Step::LookAtSession));
        assert!(matches!(f.on(Event::SessionSeen(READY_JWKS), &cx(&c)), Step::LookUpDecision));
        assert!(matches!(f.on(Event::DecisionLookedUp(None), &cx(&c)), Step::Introspect), "not a JWT");
        assert_eq!(f.stage(), Stage::Introspecting);
        match f.on(Event::Introspected(Ok(granting("get"))), &cx(&c)) {
            Step::Allow(a) => assert!(a.resume, "the request was paused"),
            other => unreachable!("{other:?}"),
        }
    }

    #[test]
    fn a_decision_brought_by_another_request_meanwhile_is_used() {
        let c = config(serde_json::json!({}));
        let (mut f, _) = paused(&c, "opaque", READY);
        assert!(matches!(f.on(Event::DecisionLookedUp(Some(granting("get"))), &cx(&c)), Step::Allow(_)));
    }

    #[test]
    fn a_jwt_with_no_keys_held_waits_for_the_jwks_then_is_checked() {
        let c = config(serde_json::json!({}));
        let (mut f, _) = paused(&c, "a.b.c", READY_JWKS);
        assert!(matches!(f.on(Event::DecisionLookedUp(None), &cx(&c)), Step::CheckJwtLocally));
        assert!(matches!(f.on(Event::JwtChecked(None), &cx(&c)), Step::FetchJwks { refresh: false }));
        assert_eq!(f.stage(), Stage::AwaitingJwks);
        assert!(matches!(f.on(Event::Wake, &cx(&c)), Step::LookAtSession));
    }

    #[test]
    fn a_jwt_with_a_failed_jwks_is_introspected() {
        let c = config(serde_json::json!({}));
        let mut f = flow(Some("a.b.c"));
        f.on(Event::Start, &cx(&c));
        f.on(Event::DecisionLookedUp(None), &cx(&c));
        f.on(Event::JwtChecked(None), &cx(&c));
        let failed = SessionView { step: SessionStep::Ready, jwks: JwksView::Failed };
        f.on(Event::SessionSeen(failed), &cx(&c));
        assert!(matches!(f.on(Event::DecisionLookedUp(None), &cx(&c)), Step::Introspect));
    }

    #[test]
    fn an_unknown_key_refreshes_the_jwks_once_then_introspects() {
        let c = config(serde_json::json!({}));
        let mut f = flow(Some("a.b.c"));
        f.on(Event::Start, &cx(&c));
        f.on(Event::DecisionLookedUp(None), &cx(&c));
        f.on(Event::JwtChecked(Some(JwtCheck::UnknownKey("k2".into()))), &cx(&c));
        f.on(Event::SessionSeen(READY_JWKS), &cx(&c));
        f.on(Event::DecisionLookedUp(None), &cx(&c));
        let step = f.on(Event::JwtChecked(Some(JwtCheck::UnknownKey("k2".into()))), &cx(&c));
        assert!(matches!(step, Step::FetchJwks { refresh: true }));
        f.on(Event::Wake, &cx(&c));
        f.on(Event::SessionSeen(READY_JWKS), &cx(&c));
        f.on(Event::DecisionLookedUp(None), &cx(&c));
        let step = f.on(Event::JwtChecked(Some(JwtCheck::UnknownKey("k2".into()))), &cx(&c));
        assert!(matches!(step, Step::Introspect), "refreshed once already");
    }

    #[test]
    fn an_unknown_key_is_introspected_when_a_refresh_is_not_allowed_now() {
        let c = config(serde_json::json!({}));
        let mut f = flow(Some("a.b.c"));
        f.on(Event::Start, &cx(&c));
        f.on(Event::DecisionLookedUp(None), &cx(&c));
        f.on(Event::JwtChecked(None), &cx(&c));
        let limited = SessionView { step: SessionStep::Ready, jwks: JwksView::On { refresh_allowed: false } };
        f.on(Event::SessionSeen(limited), &cx(&c));
        f.on(Event::DecisionLookedUp(None), &cx(&c));
        let step = f.on(Event::JwtChecked(Some(JwtCheck::UnknownKey("k".into()))), &cx(&c));
        assert!(matches!(step, Step::Introspect));
    }

    #[test]
    fn an_uncheckable_jwt_is_introspected() {
        let c = config(serde_json::json!({}));
        let (mut f, _) = paused(&c, "a.b.c", READY_JWKS);
        f.on(Event::DecisionLookedUp(None), &cx(&c));
        let step = f.on(Event::JwtChecked(Some(JwtCheck::Uncheckable("HS256".into()))), &cx(&c));
        assert!(matches!(step, Step::Introspect));
    }

    #[test]
    fn a_valid_jwt_is_remembered_until_its_expiry_less_the_margin_then_decided() {
        let c = config(serde_json::json!({"rpt_margin_s": 10, "cache_max_ttl_s": 100000}));
        let mut f = flow(Some("a.b.c"));
        f.on(Event::Start, &cx(&c));
        f.on(Event::DecisionLookedUp(None), &cx(&c));
        let valid = (*granting("get")).clone();
        let step = f.on(Event::JwtChecked(Some(JwtCheck::Valid(valid))), &cx(&c));
        let Step::Remember { result, until_s } = step else { unreachable!("{step:?}") };
        assert_eq!(until_s, 1_000 + 3_600 - 10);
        assert!(matches!(f.on(Event::Remembered(Rc::new(result)), &cx(&c)), Step::Allow(_)));
    }

    #[test]
    fn a_refused_jwt_is_remembered_as_inactive_and_gets_a_ticket() {
        let c = config(serde_json::json!({"negative_cache_ttl_s": 7}));
        let mut f = flow(Some("a.b.c"));
        f.on(Event::Start, &cx(&c));
        f.on(Event::DecisionLookedUp(None), &cx(&c));
        let step = f.on(Event::JwtChecked(Some(JwtCheck::Invalid("bad signature".into()))), &cx(&c));
        let Step::Remember { result, until_s } = step else { unreachable!("{step:?}") };
        assert!(!result.active);
        assert_eq!(until_s, 1_000 + 7);
        assert!(matches!(f.on(Event::Remembered(Rc::new(result)), &cx(&c)), Step::LookAtSession));
        f.on(Event::SessionSeen(READY), &cx(&c));
        let Step::Reply { reply, .. } = f.on(Event::TicketAnswered(Ok("t".into())), &cx(&c)) else {
            unreachable!()
        };
        assert_eq!(reply.reason, "bad signature");
    }

    #[test]
    fn decisions_are_kept_within_the_maximum_ttl() {
        let c = config(serde_json::json!({"cache_max_ttl_s": 30, "rpt_margin_s": 0}));
        let clock = clock(&c, 1_000);
        let mut r = (*granting("get")).clone();
        assert_eq!(remember_until(&c, &r, clock), 1_030);
        r.exp = Some(1_010);
        assert_eq!(remember_until(&c, &r, clock), 1_010);
        r.exp = None;
        assert_eq!(remember_until(&c, &r, clock), 1_030);
    }

    #[test]
    fn a_used_up_rpt_gets_a_ticket_before_any_lookup() {
        let c = config(serde_json::json!({"rpt_max_uses": 2}));
        let mut f = flow(Some("opaque"));
        assert!(matches!(f.on(Event::Start, &cx(&c)), Step::CountUses));
        assert!(matches!(f.on(Event::UsesCounted { used_up: true }, &cx(&c)), Step::LookAtSession));
        assert!(matches!(f.on(Event::SessionSeen(READY), &cx(&c)), Step::RequestTicket { .. }));
    }

    #[test]
    fn an_allowed_request_takes_a_use_and_a_refused_take_means_a_ticket() {
        let c = config(serde_json::json!({"rpt_max_uses": 2}));
        let mut f = flow(Some("opaque"));
        f.on(Event::Start, &cx(&c));
        f.on(Event::UsesCounted { used_up: false }, &cx(&c));
        let step = f.on(Event::DecisionLookedUp(Some(granting("get"))), &cx(&c));
        assert!(matches!(step, Step::TakeUse { max: 2, expires_at: 4_600 }));
        assert!(matches!(f.on(Event::UseTaken(true), &cx(&c)), Step::Allow(_)));

        let mut g = flow(Some("opaque"));
        g.on(Event::Start, &cx(&c));
        g.on(Event::UsesCounted { used_up: false }, &cx(&c));
        g.on(Event::DecisionLookedUp(Some(granting("get"))), &cx(&c));
        assert!(matches!(g.on(Event::UseTaken(false), &cx(&c)), Step::LookAtSession));
        g.on(Event::SessionSeen(READY), &cx(&c));
        let Step::Reply { reply, .. } = g.on(Event::TicketAnswered(Ok("t".into())), &cx(&c)) else {
            unreachable!()
        };
        assert_eq!(reply.reason, "RPT used up");
    }

    #[test]
    fn forwarding_mints_the_identity_and_a_signing_failure_denies() {
        let c = config(serde_json::json!({}));
        let fwd = FlowContext { config: &c, forwarding: true, now_ms: 1_000_000 };
        let mut f = flow(Some("opaque"));
        f.on(Event::Start, &fwd);
        assert!(matches!(
            f.on(Event::DecisionLookedUp(Some(granting("get"))), &fwd),
            Step::MintIdentity { .. }
        ));
        match f.on(Event::Minted(Ok(Rc::from("jwt"))), &fwd) {
            Step::Allow(a) => assert_eq!(a.identity.as_deref(), Some("jwt")),
            other => unreachable!("{other:?}"),
        }
        let mut g = flow(Some("opaque"));
        g.on(Event::Start, &fwd);
        g.on(Event::DecisionLookedUp(Some(granting("get"))), &fwd);
        assert!(is_reply(&g.on(Event::Minted(Err("key".into())), &fwd), 500));
    }

    #[test]
    fn a_refused_ticket_request_retries_once_with_a_new_pat() {
        let c = config(serde_json::json!({}));
        let mut f = flow(None);
        f.on(Event::Start, &cx(&c));
        f.on(Event::SessionSeen(READY), &cx(&c));
        let refused = || AsError::CredentialsRefused { status: 401, error: String::new() };
        assert!(matches!(f.on(Event::TicketAnswered(Err(refused())), &cx(&c)), Step::InvalidatePat));
        assert!(matches!(f.on(Event::Wake, &cx(&c)), Step::LookAtSession));
        f.on(Event::SessionSeen(READY), &cx(&c));
        let step = f.on(Event::TicketAnswered(Err(refused())), &cx(&c));
        assert!(matches!(&step, Step::Reply { reply, count_failure: true } if reply.status == 403));
    }

    #[test]
    fn a_refused_introspection_retries_in_the_uma2_dialect_only() {
        let refused = || AsError::CredentialsRefused { status: 403, error: String::new() };
        for (profile, retries) in [("uma2", true), ("keycloak", false)] {
            let c = config(serde_json::json!({"as_profile": profile}));
            let (mut f, _) = paused(&c, "opaque", READY);
            f.on(Event::DecisionLookedUp(None), &cx(&c));
            let step = f.on(Event::Introspected(Err(refused())), &cx(&c));
            assert_eq!(matches!(step, Step::InvalidatePat), retries, "{profile}");
            if retries {
                // A second refusal after the fresh PAT denies.
                f.on(Event::Wake, &cx(&c));
                f.on(Event::SessionSeen(READY), &cx(&c));
                f.on(Event::DecisionLookedUp(None), &cx(&c));
                assert!(is_reply(&f.on(Event::Introspected(Err(refused())), &cx(&c)), 403));
            } else {
                assert!(is_reply(&step, 403));
            }
        }
    }

    #[test]
    fn a_garbage_introspection_denies_without_counting_twice() {
        let c = config(serde_json::json!({}));
        let (mut f, _) = paused(&c, "opaque", READY);
        f.on(Event::DecisionLookedUp(None), &cx(&c));
        let step = f.on(Event::Introspected(Err(AsError::Garbage("x".into()))), &cx(&c));
        assert!(
            matches!(&step, Step::Reply { reply, count_failure: false } if reply.reason.starts_with("introspection failed"))
        );
    }

    #[test]
    fn an_introspection_over_the_limit_is_shed_with_retry_after() {
        let c = config(serde_json::json!({}));
        let (mut f, _) = paused(&c, "opaque", READY);
        assert!(matches!(f.on(Event::DecisionLookedUp(None), &cx(&c)), Step::Introspect));
        let Step::Reply { reply, count_failure } = f.on(Event::Overloaded, &cx(&c)) else { unreachable!() };
        assert_eq!(reply.status, 503);
        assert!(reply.headers.iter().any(|(k, v)| k == "retry-after" && v == "1"));
        assert!(!count_failure, "the AS did not fail");
    }

    #[test]
    fn waits_are_bounded_per_stage() {
        let c = config(serde_json::json!({"timeout_ms": 500}));
        let at = |ms| FlowContext { config: &c, forwarding: false, now_ms: ms };
        let tick = |f: &mut Flow, ms, in_flight| f.on(Event::Tick { call_in_flight: in_flight }, &at(ms));

        let mut session = flow(None);
        session.on(Event::Start, &at(0));
        session
            .on(Event::SessionSeen(SessionView { step: SessionStep::Waiting, jwks: JwksView::Off }), &at(0));
        assert!(matches!(tick(&mut session, 500, false), Step::KeepWaiting));
        assert!(is_reply(&tick(&mut session, 501, false), 403));

        let mut ticket = flow(None);
        ticket.on(Event::Start, &at(0));
        ticket.on(Event::SessionSeen(READY), &at(0));
        assert!(matches!(tick(&mut ticket, 2_500, false), Step::KeepWaiting));
        assert!(is_reply(&tick(&mut ticket, 2_501, false), 403));

        let mut introspecting = flow(Some("opaque"));
        introspecting.on(Event::Start, &at(0));
        introspecting.on(Event::DecisionLookedUp(None), &at(0));
        introspecting.on(Event::JwtChecked(None), &at(0));
        introspecting.on(Event::SessionSeen(READY), &at(0));
        introspecting.on(Event::DecisionLookedUp(None), &at(0));
        assert!(matches!(tick(&mut introspecting, 60_000, true), Step::KeepWaiting));
        let step = tick(&mut introspecting, 60_000, false);
        assert!(
            matches!(&step, Step::Reply { reply, count_failure: true } if reply.reason == "timed out waiting for the AS")
        );
    }

    #[test]
    fn events_out_of_turn_change_nothing() {
        let c = config(serde_json::json!({}));
        let mut f = flow(Some("opaque"));
        f.on(Event::Start, &cx(&c));
        // Waiting for its decision lookup: a wake or a stray ticket is not an answer.
        assert!(matches!(f.on(Event::Wake, &cx(&c)), Step::KeepWaiting));
        assert!(matches!(f.on(Event::TicketAnswered(Ok("t".into())), &cx(&c)), Step::KeepWaiting));
        assert!(matches!(f.on(Event::DecisionLookedUp(Some(granting("get"))), &cx(&c)), Step::Allow(_)));
        // Finished: nothing more happens to it.
        assert!(matches!(
            f.on(Event::AsFailed { reason: "x".into(), count: true }, &cx(&c)),
            Step::KeepWaiting
        ));
    }
}
