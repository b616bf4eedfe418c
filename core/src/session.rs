//! `AsSession`: what a worker must know before it can ask the AS anything — the endpoints
//! (discovered or configured) and a PAT — and when each must be fetched again.

use serde::{Deserialize, Serialize};

use crate::config::{endpoint_path, PepConfig};
use crate::wire::{AccessToken, AsError, Discovery, MAX_TOKEN_LIFETIME_S, MIN_TOKEN_LIFETIME_S};

/// Paths on `as_cluster` of the endpoints the filter calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    pub token: String,
    pub permission: String,
    /// Absent when the AS does not publish one (then only local JWT validation could decide).
    pub introspection: Option<String>,
    /// The AS's JWKS, for validating JWT RPTs locally.
    #[serde(default)]
    pub jwks: Option<String>,
    /// The resource registration endpoint, for `resource_lookup` (discovered only).
    #[serde(default)]
    pub resource_set: Option<String>,
}

impl Endpoints {
    /// Endpoints fully given by `endpoints`, so discovery can be skipped.
    pub fn from_overrides(config: &PepConfig) -> Option<Self> {
        let o = &config.endpoints;
        Some(Self {
            token: endpoint_path(o.token.as_deref()?).ok()?,
            permission: endpoint_path(o.permission.as_deref()?).ok()?,
            introspection: Some(endpoint_path(o.introspection.as_deref()?).ok()?),
            jwks: o.jwks.as_deref().and_then(|j| endpoint_path(j).ok()),
            resource_set: None,
        })
    }

    /// Discovered endpoints, each replaced by its override when one is configured.
    pub fn from_discovery(config: &PepConfig, d: &Discovery) -> Result<Self, AsError> {
        if d.issuer != config.issuer {
            // `as_uri` must be the discovery issuer; a mismatch is a misconfiguration.
            return Err(AsError::Mismatch(format!(
                "discovery issuer {:?} differs from the configured issuer {:?}: set `issuer` to the AS's \
                 own spelling, byte for byte",
                d.issuer.chars().take(200).collect::<String>(),
                config.issuer
            )));
        }
        let pick = |over: &Option<String>, found: Option<&str>| -> Result<Option<String>, AsError> {
            match over.as_deref().or(found) {
                None => Ok(None),
                Some(v) => endpoint_path(v).map(Some).map_err(AsError::Garbage),
            }
        };
        let o = &config.endpoints;
        let token = pick(&o.token, Some(&d.token_endpoint))?;
        let permission = pick(&o.permission, Some(&d.permission_endpoint))?;
        let introspection = pick(&o.introspection, d.introspection_endpoint.as_deref())?;
        let jwks = pick(&o.jwks, d.jwks_uri.as_deref())?;
        let resource_set = pick(&None, Some(&d.resource_registration_endpoint))?;
        match (token, permission) {
            (Some(token), Some(permission)) => {
                Ok(Self { token, permission, introspection, jwks, resource_set })
            }
            _ => Err(AsError::Garbage("discovery: missing endpoints".into())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pat {
    pub value: String,
    /// Fetch a new one from this time on (ms), well before the AS expires it.
    pub refresh_at_ms: i64,
    /// Not used from this time on (ms).
    pub expires_at_ms: i64,
}

/// A PAT's life in ms, its lifetime bounded as `AccessToken::parse` bounds it (an
/// `AccessToken` may be made elsewhere).
fn life_ms(expires_in_s: u64) -> i64 {
    let s = expires_in_s.clamp(MIN_TOKEN_LIFETIME_S, MAX_TOKEN_LIFETIME_S);
    i64::try_from(s).unwrap_or(0).saturating_mul(1000)
}

/// Fraction of a PAT's life after which it is refreshed.
fn refresh_after_ms(expires_in_s: u64) -> i64 {
    let life_ms = life_ms(expires_in_s);
    // Refresh at 80% of its life, and at least 5 s before it expires when it lives long enough.
    (life_ms.saturating_mul(4) / 5).min(life_ms.saturating_sub(5000).max(life_ms / 2))
}

/// How long after it was obtained a PAT of `expires_in_s` is replaced by a new one (ms): the one
/// lifetime policy of the filter and pepctl, so both stop using a PAT at the same point of its
/// life, well before the AS expires it.
pub fn pat_refresh_after_ms(expires_in_s: u64) -> i64 {
    refresh_after_ms(expires_in_s)
}

/// Backoff after a failed discovery or PAT call, so a dead AS is not hammered per request.
const RETRY_BACKOFF_MS: i64 = 1000;

#[derive(Debug, Default)]
pub struct AsSession {
    pub endpoints: Option<Endpoints>,
    pub pat: Option<Pat>,
    /// Call token of the discovery or PAT request in flight, and when it was sent.
    pub in_flight: Option<(u32, i64)>,
    /// No new attempt before this time after a failure.
    pub retry_at_ms: i64,
}

/// What the session needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStep {
    Ready,
    /// A call is under way; wait for it.
    Waiting,
    /// Failed recently; requests must be denied until the backoff has passed.
    BackingOff,
    FetchDiscovery,
    FetchPat,
}

impl AsSession {
    /// Whether a call is under way (one the host never answered stops counting after the
    /// timeout: its context went away).
    fn call_pending(&self, now_ms: i64, call_timeout_ms: i64) -> bool {
        self.in_flight
            .is_some_and(|(_, sent)| now_ms.saturating_sub(sent) <= call_timeout_ms.saturating_add(1000))
    }

    /// Ready as long as the PAT is valid: a refresh that is due runs in the background
    /// (`refresh_due`) and never holds requests back.
    pub fn next_step(&self, now_ms: i64, call_timeout_ms: i64) -> SessionStep {
        let usable = self.endpoints.is_some() && self.pat.as_ref().is_some_and(|p| now_ms < p.expires_at_ms);
        if usable {
            return SessionStep::Ready;
        }
        if self.call_pending(now_ms, call_timeout_ms) {
            return SessionStep::Waiting;
        }
        if now_ms < self.retry_at_ms {
            return SessionStep::BackingOff;
        }
        if self.endpoints.is_none() {
            SessionStep::FetchDiscovery
        } else {
            SessionStep::FetchPat
        }
    }

    /// A valid PAT has reached its refresh point and no fetch is under way or backing off.
    pub fn refresh_due(&self, now_ms: i64, call_timeout_ms: i64) -> bool {
        self.pat.as_ref().is_some_and(|p| now_ms >= p.refresh_at_ms)
            && !self.call_pending(now_ms, call_timeout_ms)
            && now_ms >= self.retry_at_ms
    }

    pub fn set_pat(&mut self, token: AccessToken, now_ms: i64) {
        let life_ms = life_ms(token.expires_in);
        self.pat = Some(Pat {
            refresh_at_ms: now_ms.saturating_add(refresh_after_ms(token.expires_in)),
            // A little before the AS's own expiry, for the clock and the call in flight.
            expires_at_ms: now_ms.saturating_add(life_ms - (life_ms / 10).min(5000)),
            value: token.value,
        });
    }

    /// The AS refused the PAT: drop it so that the next step fetches a new one.
    pub fn invalidate_pat(&mut self) {
        self.pat = None;
        self.retry_at_ms = 0;
    }

    pub fn failed(&mut self, now_ms: i64) {
        self.in_flight = None;
        self.retry_at_ms = now_ms.saturating_add(RETRY_BACKOFF_MS);
    }

    /// What this worker knows, for the other workers (shared data).
    pub fn snapshot(&self) -> SessionSnapshot {
        SessionSnapshot { endpoints: self.endpoints.clone(), pat: self.pat.clone() }
    }

    /// Takes what another worker learnt when it is newer; true when anything changed.
    pub fn adopt(&mut self, shared: SessionSnapshot) -> bool {
        let mut changed = false;
        if self.endpoints.is_none() && shared.endpoints.is_some() {
            self.endpoints = shared.endpoints;
            changed = true;
        }
        if let Some(pat) = shared.pat {
            let newer = self.pat.as_ref().is_none_or(|mine| pat.refresh_at_ms > mine.refresh_at_ms);
            if newer {
                self.pat = Some(pat);
                changed = true;
            }
        }
        changed
    }
}

/// The session as shared between the workers of one Envoy, so that discovery and the PAT are
/// fetched once per Envoy, not once per worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSnapshot {
    pub endpoints: Option<Endpoints>,
    pub pat: Option<Pat>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> PepConfig {
        PepConfig::from_json(
            format!(r#"{{"issuer":"http://as/realms/r","as_cluster":"as","client_id":"p","client_secret":"s"{extra}}}"#)
                .as_bytes(),
        )
        .unwrap()
    }

    fn discovery(issuer: &str) -> Discovery {
        Discovery {
            issuer: issuer.into(),
            token_endpoint: "http://public.example/realms/r/token".into(),
            permission_endpoint: "http://public.example/realms/r/perm".into(),
            resource_registration_endpoint: "http://public.example/realms/r/rs".into(),
            introspection_endpoint: Some("http://public.example/realms/r/introspect".into()),
            jwks_uri: None,
        }
    }

    #[test]
    fn discovered_endpoints_become_paths_and_overrides_win() {
        let e = Endpoints::from_discovery(&config(""), &discovery("http://as/realms/r")).unwrap();
        assert_eq!(e.token, "/realms/r/token");
        assert_eq!(e.permission, "/realms/r/perm");
        assert_eq!(e.introspection.as_deref(), Some("/realms/r/introspect"));
        let c = config(r#","endpoints":{"introspection":"/custom/i"}"#);
        let e = Endpoints::from_discovery(&c, &discovery("http://as/realms/r")).unwrap();
        assert_eq!(e.introspection.as_deref(), Some("/custom/i"));
        assert!(Endpoints::from_overrides(&c).is_none());
    }

    #[test]
    fn a_foreign_issuer_is_refused() {
        assert!(Endpoints::from_discovery(&config(""), &discovery("http://evil/realms/r")).is_err());
    }

    #[test]
    fn full_overrides_skip_discovery() {
        let c = config(r#","endpoints":{"token":"/t","permission":"http://x/p","introspection":"/i"}"#);
        let e = Endpoints::from_overrides(&c).unwrap();
        assert_eq!((e.token.as_str(), e.permission.as_str()), ("/t", "/p"));
    }

    #[test]
    fn steps_follow_the_state() {
        let mut s = AsSession::default();
        assert_eq!(s.next_step(0, 2000), SessionStep::FetchDiscovery);
        s.in_flight = Some((7, 0));
        assert_eq!(s.next_step(1000, 2000), SessionStep::Waiting);
        // A call never answered stops blocking after its timeout.
        assert_eq!(s.next_step(3001, 2000), SessionStep::FetchDiscovery);
        s.failed(3001);
        assert_eq!(s.next_step(3500, 2000), SessionStep::BackingOff);
        assert_eq!(s.next_step(4001, 2000), SessionStep::FetchDiscovery);
        s.endpoints = Some(Endpoints {
            token: "/t".into(),
            permission: "/p".into(),
            introspection: None,
            jwks: None,
            resource_set: None,
        });
        assert_eq!(s.next_step(4001, 2000), SessionStep::FetchPat);
        s.set_pat(AccessToken { value: "pat".into(), expires_in: 100 }, 10_000);
        assert_eq!(s.next_step(10_001, 2000), SessionStep::Ready);
        assert!(!s.refresh_due(10_001, 2000));
        // At 80% of 100 s a refresh is due, in the background: still Ready.
        assert_eq!(s.next_step(90_001, 2000), SessionStep::Ready);
        assert!(s.refresh_due(90_001, 2000));
        s.in_flight = Some((9, 90_001));
        assert!(!s.refresh_due(90_500, 2000));
        // A failed refresh backs off; the valid PAT keeps serving.
        s.failed(90_500);
        assert!(!s.refresh_due(91_000, 2000));
        assert_eq!(s.next_step(91_000, 2000), SessionStep::Ready);
        // Past its expiry (100 s less 5 s) the PAT is not used.
        assert_eq!(s.next_step(105_001, 2000), SessionStep::FetchPat);
        s.set_pat(AccessToken { value: "pat2".into(), expires_in: 100 }, 105_001);
        s.invalidate_pat();
        assert_eq!(s.next_step(105_002, 2000), SessionStep::FetchPat);
    }

    #[test]
    fn workers_adopt_newer_shared_state_only() {
        let mut mine = AsSession::default();
        let e = Endpoints {
            token: "/t".into(),
            permission: "/p".into(),
            introspection: None,
            jwks: None,
            resource_set: None,
        };
        let old = Pat { value: "old".into(), refresh_at_ms: 10, expires_at_ms: 15 };
        let new = Pat { value: "new".into(), refresh_at_ms: 20, expires_at_ms: 25 };
        assert!(mine.adopt(SessionSnapshot { endpoints: Some(e.clone()), pat: Some(new.clone()) }));
        assert!(!mine.adopt(SessionSnapshot { endpoints: Some(e.clone()), pat: Some(old) }));
        assert_eq!(mine.pat.as_ref().unwrap().value, "new");
        let json = serde_json::to_vec(&mine.snapshot()).unwrap();
        let back: SessionSnapshot = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, mine.snapshot());
    }

    #[test]
    fn refresh_points() {
        assert_eq!(refresh_after_ms(300), 240_000);
        assert_eq!(refresh_after_ms(10), 5_000);
        assert_eq!(refresh_after_ms(1), 500);
        assert_eq!(refresh_after_ms(0), 500);
        assert_eq!(refresh_after_ms(u64::MAX), refresh_after_ms(MAX_TOKEN_LIFETIME_S));
    }

    #[test]
    fn any_pat_lifetime_gives_a_pat_that_is_used_then_refreshed() {
        const NOW: i64 = 1_800_000_000_000;
        let endpoints = Endpoints {
            token: "/t".into(),
            permission: "/p".into(),
            introspection: None,
            jwks: None,
            resource_set: None,
        };
        for expires_in in
            [u64::MAX, 2_300_000_000_000_000, 3_000_000_000_000_000, 10_000_000_000_000_000, 86_401, 0]
        {
            let mut s = AsSession { endpoints: Some(endpoints.clone()), ..AsSession::default() };
            s.set_pat(AccessToken { value: "pat".into(), expires_in }, NOW);
            let pat = s.pat.clone().unwrap();
            assert_eq!(s.next_step(NOW, 2000), SessionStep::Ready, "{expires_in}");
            assert!(!s.refresh_due(NOW, 2000), "{expires_in}");
            assert!(pat.refresh_at_ms > NOW && pat.refresh_at_ms < pat.expires_at_ms, "{expires_in}");
            // Never trusted longer than a day.
            let bound = i64::try_from(MAX_TOKEN_LIFETIME_S).unwrap() * 1000;
            assert!(pat.expires_at_ms <= NOW + bound, "{expires_in}");
            assert!(s.refresh_due(pat.refresh_at_ms, 2000), "{expires_in}");
        }
        // Times near the end of i64 saturate instead of wrapping into the past.
        let mut s = AsSession { endpoints: Some(endpoints), ..AsSession::default() };
        s.set_pat(AccessToken { value: "pat".into(), expires_in: u64::MAX }, i64::MAX - 10);
        assert_eq!(s.pat.as_ref().unwrap().expires_at_ms, i64::MAX);
        s.failed(i64::MAX);
        assert_eq!(s.retry_at_ms, i64::MAX);
    }
}
