//! `SessionKeeper`: a worker's side of the AS session — discovery and the PAT, fetched once per
//! Envoy. The session (`session::AsSession`, pure) is published in shared data; the worker that
//! wins a short lease makes the call, the others read the result on their next look.

use crate::config::PepConfig;
use crate::host::{Host, HttpCall};
use crate::session::{AsSession, Endpoints, Pat, SessionSnapshot, SessionStep};
use crate::shared_data::{Lease, SharedKeys};
use crate::wire::{basic_authorization, pat_request_body, AccessToken, Discovery};

/// Which session call is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCall {
    Discovery,
    Pat,
}

impl SessionCall {
    pub fn name(self) -> &'static str {
        match self {
            SessionCall::Discovery => "discovery",
            SessionCall::Pat => "PAT request",
        }
    }
}

pub struct SessionKeeper {
    session: AsSession,
    shared_key: String,
    lease: Lease,
    timeout_ms: i64,
}

impl SessionKeeper {
    pub fn new(config: &PepConfig, keys: &SharedKeys) -> Self {
        Self {
            session: AsSession { endpoints: Endpoints::from_overrides(config), ..Default::default() },
            shared_key: keys.key("session"),
            // A session call the requests wait on goes ahead even if shared data is unreadable.
            lease: Lease::new(keys.key("session.lease"), true),
            timeout_ms: i64::try_from(config.timeout_ms).unwrap_or(i64::MAX),
        }
    }

    pub fn endpoints(&self) -> Option<&Endpoints> {
        self.session.endpoints.as_ref()
    }

    pub fn pat(&self) -> Option<&Pat> {
        self.session.pat.as_ref()
    }

    pub fn refresh_due(&self, now_ms: i64) -> bool {
        self.session.refresh_due(now_ms, self.timeout_ms)
    }

    /// The session step, after taking whatever another worker has published meanwhile. Only a
    /// worker that is not ready, or whose PAT is due, reads shared data: the hot path does not.
    pub fn step(&mut self, host: &impl Host) -> SessionStep {
        let now = host.now_ms();
        let step = self.session.next_step(now, self.timeout_ms);
        if step == SessionStep::Ready && !self.session.refresh_due(now, self.timeout_ms) {
            return step;
        }
        if let Some((Some(bytes), _)) = host.shared_get(&self.shared_key) {
            if let Ok(shared) = serde_json::from_slice::<SessionSnapshot>(&bytes) {
                self.session.adopt(shared);
            }
        }
        self.session.next_step(now, self.timeout_ms)
    }

    /// The call `step` needs, with the lease taken; `None` while another worker holds it.
    pub fn begin_fetch(
        &mut self,
        host: &impl Host,
        config: &PepConfig,
        step: SessionStep,
    ) -> Option<(SessionCall, HttpCall)> {
        let (kind, path) = match step {
            SessionStep::FetchDiscovery => (SessionCall::Discovery, config.discovery_path()),
            SessionStep::FetchPat => (SessionCall::Pat, self.session.endpoints.as_ref()?.token.clone()),
            _ => return None,
        };
        let now = host.now_ms();
        if !self.lease.try_take(host, now, now.saturating_add(self.timeout_ms).saturating_add(1000)) {
            return None;
        }
        let mut call = HttpCall {
            cluster: config.as_cluster.clone(),
            authority: config.as_authority.clone(),
            method: "GET",
            path,
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: config.timeout_ms,
        };
        if kind == SessionCall::Pat {
            call.method = "POST";
            call.headers = vec![
                ("authorization", basic_authorization(&config.client_id, &config.client_secret)),
                ("content-type", "application/x-www-form-urlencoded".into()),
            ];
            call.body = pat_request_body(config.as_profile);
        }
        Some((kind, call))
    }

    pub fn sent(&mut self, token: u32, now_ms: i64) {
        self.session.in_flight = Some((token, now_ms));
    }

    /// The call could not be made: give the lease back and back off.
    pub fn not_sent(&mut self, host: &impl Host) {
        self.lease.release(host);
        self.session.failed(host.now_ms());
    }

    /// A failed call: back off before the next attempt.
    pub fn failed(&mut self, now_ms: i64) {
        self.session.failed(now_ms);
    }

    /// Takes the answer to a session call; the error says why it is unusable.
    pub fn on_answer(
        &mut self,
        host: &impl Host,
        config: &PepConfig,
        kind: SessionCall,
        response: &crate::host::CallResponse,
    ) -> Result<(), String> {
        self.session.in_flight = None;
        self.lease.release(host);
        let now = host.now_ms();
        let taken = match kind {
            SessionCall::Discovery => Discovery::parse(&response.as_response())
                .and_then(|d| Endpoints::from_discovery(config, &d))
                .map(|e| self.session.endpoints = Some(e)),
            SessionCall::Pat => {
                AccessToken::parse(&response.as_response()).map(|token| self.session.set_pat(token, now))
            }
        };
        match taken {
            Ok(()) => {
                if let Ok(bytes) = serde_json::to_vec(&self.session.snapshot()) {
                    let _ = host.shared_set(&self.shared_key, &bytes, None);
                }
                Ok(())
            }
            Err(e) => {
                self.session.failed(now);
                Err(format!("{} failed: {e}", kind.name()))
            }
        }
    }

    /// A protection call was refused: drop the PAT here and, if it is still the shared one,
    /// for every worker, so that exactly one new PAT is fetched.
    pub fn invalidate_pat(&mut self, host: &impl Host) {
        let refused = self.session.pat.as_ref().map(|p| p.value.clone());
        self.session.invalidate_pat();
        let Some((Some(bytes), cas)) = host.shared_get(&self.shared_key) else { return };
        let Ok(mut shared) = serde_json::from_slice::<SessionSnapshot>(&bytes) else { return };
        if shared.pat.as_ref().map(|p| &p.value) == refused.as_ref() {
            shared.pat = None;
            if let Ok(bytes) = serde_json::to_vec(&shared) {
                let _ = host.shared_set(&self.shared_key, &bytes, cas);
            }
        }
    }
}
