//! Counters exposed through proxy-wasm metrics; Envoy shows them as `wasmcustom.uma_pep.*`.
//! Every worker defines the same names, so Envoy sums them across workers.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Allowed,
    Denied,
    Tickets,
    Introspections,
    CacheHits,
    AsFailures,
    Unmatched,
    PatRequests,
    JwtMinted,
}

const ALL: [Counter; 9] = [
    Counter::Allowed,
    Counter::Denied,
    Counter::Tickets,
    Counter::Introspections,
    Counter::CacheHits,
    Counter::AsFailures,
    Counter::Unmatched,
    Counter::PatRequests,
    Counter::JwtMinted,
];

impl Counter {
    fn name(self) -> &'static str {
        match self {
            Counter::Allowed => "uma_pep.allowed",
            Counter::Denied => "uma_pep.denied",
            Counter::Tickets => "uma_pep.tickets",
            Counter::Introspections => "uma_pep.introspections",
            Counter::CacheHits => "uma_pep.cache_hits",
            Counter::AsFailures => "uma_pep.as_failures",
            Counter::Unmatched => "uma_pep.unmatched",
            Counter::PatRequests => "uma_pep.pat_requests",
            Counter::JwtMinted => "uma_pep.jwt_minted",
        }
    }
}

/// Metric ids as the host defined them; a failed definition leaves the counter silent.
#[derive(Debug, Default)]
pub struct Metrics {
    ids: [Option<u32>; ALL.len()],
}

impl Metrics {
    pub fn define() -> Self {
        let mut ids = [None; ALL.len()];
        for (slot, counter) in ids.iter_mut().zip(ALL) {
            *slot = hostcalls::define_metric(MetricType::Counter, counter.name()).ok();
        }
        Self { ids }
    }

    pub fn increment(&self, counter: Counter) {
        let index = ALL.iter().position(|c| *c == counter);
        if let Some(id) = index.and_then(|i| self.ids.get(i)).copied().flatten() {
            // A failed increment only loses a count; never worth failing a request for.
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
}
