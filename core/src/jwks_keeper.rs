//! `JwksKeeper`: what a worker knows of the AS's JWKS — the keys held, a fetch in flight, a
//! wanted refresh (an unknown `kid`), a failed last fetch — and when it may fetch again.

use std::rc::Rc;

use crate::flow::JwksView;
use crate::host::CallResponse;
use crate::jwt_rpt::{DroppedKey, JwtKeys};

/// At most one JWKS fetch per worker in this period (unknown `kid`s do not hammer the AS).
pub const JWKS_REFRESH_INTERVAL_MS: i64 = 10_000;

#[derive(Default)]
pub struct JwksKeeper {
    keys: Option<Rc<JwtKeys>>,
    in_flight: bool,
    refresh_wanted: bool,
    /// The last fetch failed: JWTs are introspected instead until a fetch succeeds.
    failed: bool,
    last_fetch_ms: i64,
}

impl JwksKeeper {
    pub fn keys(&self) -> Option<Rc<JwtKeys>> {
        self.keys.clone()
    }

    /// How a paused request sees the JWKS; `enabled` when JWT RPTs are checked locally.
    pub fn view(&self, enabled: bool, now_ms: i64) -> JwksView {
        match (enabled, self.failed) {
            (false, _) => JwksView::Off,
            (true, true) => JwksView::Failed,
            (true, false) => JwksView::On { refresh_allowed: self.refresh_allowed(now_ms) },
        }
    }

    /// Whether a refresh for an unknown `kid` may start now (or one is already under way).
    pub fn refresh_allowed(&self, now_ms: i64) -> bool {
        self.in_flight || now_ms.saturating_sub(self.last_fetch_ms) >= JWKS_REFRESH_INTERVAL_MS
    }

    pub fn want_refresh(&mut self) {
        self.refresh_wanted = true;
    }

    /// Whether a fetch should start now: keys missing or a refresh wanted, none in flight (a
    /// fetch lost with the context that made it stops counting after the call timeout), and
    /// the rate limit allows.
    pub fn fetch_due(&self, now_ms: i64, timeout_ms: i64) -> bool {
        let in_flight =
            self.in_flight && now_ms.saturating_sub(self.last_fetch_ms) <= timeout_ms.saturating_add(1000);
        if in_flight || (self.keys.is_some() && !self.refresh_wanted) {
            return false;
        }
        self.last_fetch_ms == 0 || now_ms.saturating_sub(self.last_fetch_ms) >= JWKS_REFRESH_INTERVAL_MS
    }

    pub fn sent(&mut self, now_ms: i64) {
        self.in_flight = true;
        self.last_fetch_ms = now_ms;
    }

    pub fn not_sent(&mut self, now_ms: i64) {
        self.last_fetch_ms = now_ms;
    }

    /// Takes a fetched JWKS: the keys loaded and those dropped, or why it is unusable.
    pub fn on_answer(&mut self, response: &CallResponse) -> Result<(usize, Vec<DroppedKey>), String> {
        self.in_flight = false;
        self.refresh_wanted = false;
        match JwtKeys::parse(&response.as_response()) {
            Ok(keys) => {
                let loaded = (keys.len(), keys.dropped().to_vec());
                self.keys = Some(Rc::new(keys));
                self.failed = false;
                Ok(loaded)
            }
            Err(e) => {
                self.failed = true;
                Err(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_jwks_is_fetched_once_at_a_time_and_rate_limited() {
        let mut k = JwksKeeper::default();
        assert!(k.fetch_due(1, 500));
        k.sent(1);
        assert!(!k.fetch_due(100, 500), "in flight");
        assert!(k.fetch_due(20_000, 500), "lost with its context, and the interval passed");
        let _ = k.on_answer(&CallResponse { status: Some(500), body: Vec::new() });
        assert_eq!(k.view(true, 20_001), JwksView::Failed);
        assert!(!k.fetch_due(5_000, 500), "rate limited after the last fetch");
    }

    #[test]
    fn held_keys_are_refetched_only_when_a_refresh_is_wanted() {
        let mut k = JwksKeeper::default();
        k.sent(1);
        let body = br#"{"keys":[]}"#.to_vec();
        assert!(k.on_answer(&CallResponse { status: Some(200), body }).is_ok());
        assert!(!k.fetch_due(60_000, 500));
        k.want_refresh();
        assert!(k.fetch_due(60_000, 500));
        assert_eq!(k.view(true, 60_000), JwksView::On { refresh_allowed: true });
        assert_eq!(k.view(true, 5_000), JwksView::On { refresh_allowed: false });
        assert_eq!(k.view(false, 60_000), JwksView::Off);
    }
}
