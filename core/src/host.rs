//! `Host`: what the filter needs from the proxy it runs in — the clock, shared data between
//! workers, calls to other clusters, the current request's headers and answer, facts for the
//! access log and counters. The filter crate implements it over proxy-wasm; `fake_host` (tests
//! only) implements it in memory, so the worker, its caches and the request flow are tested
//! natively, branch by branch.

use crate::decision::LocalReply;
use crate::facts::Decision;

/// A value in shared data and its compare-and-swap token.
pub type SharedEntry = (Option<Vec<u8>>, Option<u32>);

/// Why a shared-data write did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedWriteError {
    /// Someone wrote the key since it was read: read again.
    CasMismatch,
    /// The host refused the write.
    Refused,
}

/// A call to another cluster (the AS, or pepctl for the resource table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub cluster: String,
    pub authority: String,
    pub method: &'static str,
    pub path: String,
    /// Besides `:method`, `:path`, `:authority` and `accept: application/json`.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

/// The answer to a dispatched call: no status means a reset or a timeout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallResponse {
    pub status: Option<u16>,
    pub body: Vec<u8>,
}

impl CallResponse {
    pub fn as_response(&self) -> crate::wire::AsResponse<'_> {
        crate::wire::AsResponse { status: self.status, body: &self.body }
    }
}

/// Counters visible in Envoy's stats as `wasmcustom.uma_pep.*`.
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
    Overloaded,
    /// Calls asking the AS to decide on an access token (`access_tokens: decide`).
    Decisions,
}

impl Counter {
    pub const ALL: [Counter; 11] = [
        Counter::Allowed,
        Counter::Denied,
        Counter::Tickets,
        Counter::Introspections,
        Counter::CacheHits,
        Counter::AsFailures,
        Counter::Unmatched,
        Counter::PatRequests,
        Counter::JwtMinted,
        Counter::Overloaded,
        Counter::Decisions,
    ];

    pub fn name(self) -> &'static str {
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
            Counter::Overloaded => "uma_pep.overloaded",
            Counter::Decisions => "uma_pep.decisions",
        }
    }

    /// Position in `ALL`, for a host's table of metric ids.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The proxy, as the filter uses it. Every method is infallible or returns what failed: a
/// host that refuses something never panics the VM.
pub trait Host {
    fn now_ms(&self) -> i64;
    fn now_ns(&self) -> i64;

    fn shared_get(&self, key: &str) -> Option<SharedEntry>;
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedWriteError>;

    /// Dispatches a call on the effective context; the token its answer comes back with.
    fn dispatch(&self, call: &HttpCall) -> Result<u32, String>;
    /// Makes `context_id` the context later calls act on; false when it is gone.
    fn enter_context(&self, context_id: u32) -> bool;

    /// The current request's headers, serialized as the host does (`headers::SerializedPairs`):
    /// the one read of them per request.
    fn request_header_map(&self) -> Option<Vec<u8>>;
    fn set_request_header(&self, name: &str, value: Option<&str>);
    fn send_reply(&self, reply: &LocalReply);
    fn resume_request(&self);
    /// The decision's facts for the access log (`%FILTER_STATE(wasm.uma_pep.*)%`).
    fn record_facts(&self, decision: Decision, resource: Option<&str>, subject: Option<&str>);

    fn count(&self, counter: Counter);
}

#[cfg(test)]
pub mod fake {
    //! An in-memory host: shared data with CAS versions, a clock the test moves, and a record
    //! of every call, header change, reply and counter.

    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    use super::*;
    use crate::headers::serialize;

    /// Facts recorded for the access log: decision, resource, subject.
    pub type Facts = (Decision, Option<String>, Option<String>);

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Done {
        Reply(LocalReply),
        Resumed,
    }

    #[derive(Default)]
    pub struct FakeHost {
        pub now_ms: Cell<i64>,
        pub shared: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        /// Calls dispatched, with their token and the context that was effective.
        pub calls: RefCell<Vec<(u32, u32, HttpCall)>>,
        pub next_token: Cell<u32>,
        pub refuse_dispatch: Cell<bool>,
        pub context: Cell<u32>,
        /// Contexts that have ended (`enter_context` fails for them).
        pub gone: RefCell<Vec<u32>>,
        pub headers: RefCell<Vec<(String, String)>>,
        /// Per context: the reply sent or the resume.
        pub done: RefCell<Vec<(u32, Done)>>,
        pub header_changes: RefCell<Vec<(u32, String, Option<String>)>>,
        pub facts: RefCell<Vec<Facts>>,
        pub counters: RefCell<HashMap<&'static str, u64>>,
        /// Writes that fail with a CAS mismatch before succeeding (contention).
        pub cas_conflicts: Cell<u32>,
    }

    impl FakeHost {
        pub fn new(now_ms: i64) -> Self {
            let host = Self::default();
            host.now_ms.set(now_ms);
            host.next_token.set(1);
            host
        }

        pub fn advance(&self, ms: i64) {
            self.now_ms.set(self.now_ms.get() + ms);
        }

        pub fn set_headers(&self, headers: &[(&str, &str)]) {
            *self.headers.borrow_mut() =
                headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        }

        pub fn counter(&self, counter: Counter) -> u64 {
            self.counters.borrow().get(counter.name()).copied().unwrap_or(0)
        }

        pub fn calls_to(&self, path_part: &str) -> Vec<HttpCall> {
            self.calls
                .borrow()
                .iter()
                .filter(|(_, _, c)| c.path.contains(path_part))
                .map(|c| c.2.clone())
                .collect()
        }

        pub fn last_call(&self) -> Option<(u32, u32, HttpCall)> {
            self.calls.borrow().last().cloned()
        }

        pub fn done_for(&self, context_id: u32) -> Vec<Done> {
            self.done.borrow().iter().filter(|(id, _)| *id == context_id).map(|(_, d)| d.clone()).collect()
        }
    }

    impl Host for FakeHost {
        fn now_ms(&self) -> i64 {
            self.now_ms.get()
        }

        fn now_ns(&self) -> i64 {
            self.now_ms.get() * 1_000_000
        }

        fn shared_get(&self, key: &str) -> Option<SharedEntry> {
            Some(match self.shared.borrow().get(key) {
                Some((v, cas)) => (Some(v.clone()), Some(*cas)),
                None => (None, None),
            })
        }

        fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedWriteError> {
            let mut shared = self.shared.borrow_mut();
            let current = shared.get(key).map(|(_, c)| *c);
            if let Some(cas) = cas {
                if self.cas_conflicts.get() > 0 {
                    self.cas_conflicts.set(self.cas_conflicts.get() - 1);
                    // Someone else wrote meanwhile.
                    if let Some(entry) = shared.get_mut(key) {
                        entry.1 += 1;
                    }
                    return Err(SharedWriteError::CasMismatch);
                }
                if current.is_some_and(|c| c != cas) {
                    return Err(SharedWriteError::CasMismatch);
                }
            }
            let version = current.unwrap_or(0) + 1;
            shared.insert(key.to_string(), (value.to_vec(), version));
            Ok(())
        }

        fn dispatch(&self, call: &HttpCall) -> Result<u32, String> {
            if self.refuse_dispatch.get() {
                return Err("BadArgument".into());
            }
            let token = self.next_token.get();
            self.next_token.set(token + 1);
            self.calls.borrow_mut().push((token, self.context.get(), call.clone()));
            Ok(token)
        }

        fn enter_context(&self, context_id: u32) -> bool {
            if self.gone.borrow().contains(&context_id) {
                return false;
            }
            self.context.set(context_id);
            true
        }

        fn request_header_map(&self) -> Option<Vec<u8>> {
            let headers = self.headers.borrow();
            let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            Some(serialize(&pairs))
        }

        fn set_request_header(&self, name: &str, value: Option<&str>) {
            self.header_changes.borrow_mut().push((
                self.context.get(),
                name.to_string(),
                value.map(str::to_string),
            ));
            let mut headers = self.headers.borrow_mut();
            headers.retain(|(k, _)| k != name);
            if let Some(v) = value {
                headers.push((name.to_string(), v.to_string()));
            }
        }

        fn send_reply(&self, reply: &LocalReply) {
            self.done.borrow_mut().push((self.context.get(), Done::Reply(reply.clone())));
        }

        fn resume_request(&self) {
            self.done.borrow_mut().push((self.context.get(), Done::Resumed));
        }

        fn record_facts(&self, decision: Decision, resource: Option<&str>, subject: Option<&str>) {
            self.facts.borrow_mut().push((
                decision,
                resource.map(str::to_string),
                subject.map(str::to_string),
            ));
        }

        fn count(&self, counter: Counter) {
            *self.counters.borrow_mut().entry(counter.name()).or_default() += 1;
        }
    }
}
