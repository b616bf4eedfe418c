//! The worker's side of the AS session: discovery, the PAT and the JWKS, fetched once per
//! Envoy. The session state lives in shared data; the worker that wins a short lease (a
//! compare-and-swap on the lease key) makes the call, the others read the result on their
//! next tick. The pure state machine is `uma_pep_core::session`.

use log::{info, warn};
use proxy_wasm::hostcalls;
use uma_pep_core::decision::LogCode;
use uma_pep_core::jwt_rpt::JwtKeys;
use uma_pep_core::session::{Endpoints, SessionSnapshot, SessionStep};
use uma_pep_core::wire::{pat_request_body, AccessToken, Discovery};

use crate::host::{self, CallResponse};
use crate::metrics::Counter;
use crate::worker::{Call, PreparedCall, Worker};

/// At most one JWKS fetch per worker in this period (unknown `kid`s do not hammer the AS).
const JWKS_REFRESH_INTERVAL_MS: i64 = 10_000;

impl Worker {
    /// The session step, after taking whatever another worker has published meanwhile.
    pub(crate) fn session_step(&self) -> SessionStep {
        let now = host::now_ms();
        let step = self.session.borrow().next_step(now, self.timeout_ms());
        if step == SessionStep::Ready && !self.session.borrow().refresh_due(now, self.timeout_ms()) {
            return step;
        }
        // Only a worker that is not ready, or whose PAT is due, reads what the others published:
        // the refresh may have been made already.
        self.adopt_shared_session();
        self.session.borrow().next_step(now, self.timeout_ms())
    }

    fn adopt_shared_session(&self) {
        let Ok((Some(bytes), _)) = hostcalls::get_shared_data(&self.keys.key("session")) else { return };
        if let Ok(shared) = serde_json::from_slice::<SessionSnapshot>(&bytes) {
            self.session.borrow_mut().adopt(shared);
        }
    }

    fn publish_session(&self) {
        if let Ok(bytes) = serde_json::to_vec(&self.session.borrow().snapshot()) {
            let _ = hostcalls::set_shared_data(&self.keys.key("session"), Some(&bytes), None);
        }
    }

    /// Takes the lease for a session call; false while another worker holds it.
    fn acquire_lease(&self, now_ms: i64) -> bool {
        let (bytes, cas) = match hostcalls::get_shared_data(&self.keys.key("session.lease")) {
            Ok(v) => v,
            Err(_) => return true,
        };
        let held_until = bytes
            .and_then(|b| b.get(..8).and_then(|h| <[u8; 8]>::try_from(h).ok()))
            .map_or(0, i64::from_le_bytes);
        if held_until > now_ms {
            return false;
        }
        let until = now_ms + self.timeout_ms() + 1000;
        hostcalls::set_shared_data(&self.keys.key("session.lease"), Some(&until.to_le_bytes()), cas).is_ok()
    }

    fn release_lease(&self) {
        let _ = hostcalls::set_shared_data(&self.keys.key("session.lease"), Some(&0i64.to_le_bytes()), None);
    }

    /// Starts the discovery or PAT call the session needs (also a background PAT refresh), or
    /// settles the waiting requests.
    pub(crate) fn drive_session(&self) {
        let step = self.session_step();
        match step {
            SessionStep::Waiting => {}
            SessionStep::Ready => {
                if self.session.borrow().refresh_due(host::now_ms(), self.timeout_ms()) {
                    self.fetch_session(SessionStep::FetchPat);
                }
                if self.awaits_jwks() {
                    self.ensure_jwks();
                }
                self.wake_waiters();
            }
            SessionStep::BackingOff => self.fail_waiters("authorization server unavailable"),
            SessionStep::FetchDiscovery | SessionStep::FetchPat => self.fetch_session(step),
        }
    }

    /// Dispatches discovery or the PAT request, from the root only and by one worker at a time.
    fn fetch_session(&self, step: SessionStep) {
        if !self.may_dispatch_shared_call() || !self.acquire_lease(host::now_ms()) {
            // Another worker is fetching; its result arrives through shared data.
            return;
        }
        let call = if step == SessionStep::FetchDiscovery {
            PreparedCall::get(Call::Discovery, self.config.discovery_path())
        } else {
            let Some(path) = self.session.borrow().endpoints.as_ref().map(|e| e.token.clone()) else {
                self.release_lease();
                return;
            };
            self.metrics.increment(Counter::PatRequests);
            PreparedCall::form(
                Call::Pat,
                path,
                self.client_basic.clone(),
                pat_request_body(self.config.as_profile),
            )
        };
        let what = if step == SessionStep::FetchDiscovery { "discovery" } else { "PAT request" };
        match self.dispatch(call) {
            Ok(token) => self.session.borrow_mut().in_flight = Some((token, host::now_ms())),
            Err(status) => {
                self.release_lease();
                self.session_failed(&format!("{what} could not be dispatched ({status:?})"));
            }
        }
    }

    fn session_failed(&self, reason: &str) {
        self.metrics.increment(Counter::AsFailures);
        warn!("{} {reason}", LogCode::AsError.code());
        self.session.borrow_mut().failed(host::now_ms());
        // A failed background refresh leaves a valid PAT: the waiting requests go on with it.
        if self.session_step() == SessionStep::Ready {
            self.wake_waiters();
        } else {
            self.fail_waiters(reason);
        }
    }

    pub(crate) fn on_discovery(&self, response: &CallResponse) {
        self.session.borrow_mut().in_flight = None;
        self.release_lease();
        let endpoints = Discovery::parse(&response.as_response())
            .and_then(|d| Endpoints::from_discovery(&self.config, &d));
        match endpoints {
            Ok(e) => {
                info!("discovered the AS endpoints of {}", self.config.issuer);
                self.session.borrow_mut().endpoints = Some(e);
                self.publish_session();
                self.drive_session();
            }
            Err(e) => self.session_failed(&format!("discovery failed: {e}")),
        }
    }

    pub(crate) fn on_pat(&self, response: &CallResponse) {
        self.session.borrow_mut().in_flight = None;
        self.release_lease();
        match AccessToken::parse(&response.as_response()) {
            Ok(token) => {
                self.session.borrow_mut().set_pat(token, host::now_ms());
                self.publish_session();
                self.drive_session();
            }
            Err(e) => self.session_failed(&format!("PAT request failed: {e}")),
        }
    }

    /// A protection call was refused: drop the PAT here and, if it is still the shared one,
    /// for every worker, so that exactly one new PAT is fetched.
    pub(crate) fn invalidate_pat(&self) {
        let refused = self.session.borrow().pat.as_ref().map(|p| p.value.clone());
        self.session.borrow_mut().invalidate_pat();
        if let Ok((Some(bytes), cas)) = hostcalls::get_shared_data(&self.keys.key("session")) {
            if let Ok(mut shared) = serde_json::from_slice::<SessionSnapshot>(&bytes) {
                if shared.pat.as_ref().map(|p| &p.value) == refused.as_ref() {
                    shared.pat = None;
                    if let Ok(bytes) = serde_json::to_vec(&shared) {
                        let _ = hostcalls::set_shared_data(&self.keys.key("session"), Some(&bytes), cas);
                    }
                }
            }
        }
    }

    // ---- JWKS ------------------------------------------------------------------------------

    /// Whether JWT RPTs are checked locally here (configured, and the AS has a JWKS).
    pub(crate) fn jwks_path(&self) -> Option<String> {
        if !self.config.local_jwt_validation {
            return None;
        }
        self.session.borrow().endpoints.as_ref().and_then(|e| e.jwks.clone())
    }

    /// Fetches the JWKS if it is missing (or a refresh was asked for) and the rate limit allows.
    pub(crate) fn ensure_jwks(&self) {
        let Some(path) = self.jwks_path() else { return };
        if !self.may_dispatch_shared_call() {
            return;
        }
        let now = host::now_ms();
        {
            let jwks = self.jwks.borrow();
            // A fetch lost with the context that made it stops counting after the timeout.
            let in_flight = jwks.in_flight && now - jwks.last_fetch_ms <= self.timeout_ms() + 1000;
            if in_flight || (jwks.keys.is_some() && !jwks.refresh_wanted) {
                return;
            }
            if now - jwks.last_fetch_ms < JWKS_REFRESH_INTERVAL_MS && jwks.last_fetch_ms > 0 {
                return;
            }
        }
        match self.dispatch(PreparedCall::get(Call::Jwks, path)) {
            Ok(_) => {
                let mut jwks = self.jwks.borrow_mut();
                jwks.in_flight = true;
                jwks.last_fetch_ms = now;
            }
            Err(status) => {
                warn!("{} JWKS request could not be dispatched ({status:?})", LogCode::AsError.code());
                self.jwks.borrow_mut().last_fetch_ms = now;
                self.wake_jwks_waiters();
            }
        }
    }

    /// Whether a JWKS refresh may start now (for an unknown `kid`).
    pub(crate) fn jwks_refresh_allowed(&self) -> bool {
        let jwks = self.jwks.borrow();
        jwks.in_flight || host::now_ms() - jwks.last_fetch_ms >= JWKS_REFRESH_INTERVAL_MS
    }

    pub(crate) fn request_jwks_refresh(&self) {
        self.jwks.borrow_mut().refresh_wanted = true;
        self.ensure_jwks();
    }

    pub(crate) fn on_jwks(&self, response: &CallResponse) {
        {
            let mut jwks = self.jwks.borrow_mut();
            jwks.in_flight = false;
            jwks.refresh_wanted = false;
            match JwtKeys::parse(&response.as_response()) {
                Ok(keys) => {
                    for dropped in keys.dropped() {
                        warn!(
                            "{} JWKS key {} dropped: {}",
                            LogCode::AsError.code(),
                            dropped.kid,
                            dropped.reason
                        );
                    }
                    info!("loaded {} verification keys from the AS JWKS", keys.len());
                    jwks.keys = Some(std::rc::Rc::new(keys));
                    jwks.failed = false;
                }
                Err(e) => {
                    self.metrics.increment(Counter::AsFailures);
                    warn!("{} JWKS request failed: {e}", LogCode::AsError.code());
                    jwks.failed = true;
                }
            }
        }
        self.wake_jwks_waiters();
    }
}

/// What a worker knows of the AS's JWKS.
#[derive(Default)]
pub struct JwksState {
    pub keys: Option<std::rc::Rc<JwtKeys>>,
    pub in_flight: bool,
    pub refresh_wanted: bool,
    /// The last fetch failed: JWTs are introspected instead until a fetch succeeds.
    pub failed: bool,
    pub last_fetch_ms: i64,
}
