//! `ProxyWasmHost`: the core's `Host` over proxy-wasm's hostcalls. Header values are read as
//! bytes, and the hostcalls whose SDK wrappers panic on an unexpected status (set_property,
//! get_header_map_pairs) are called directly: odd input never kills the VM.

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, MetricType, Status};
use uma_pep_core::decision::LocalReply;
use uma_pep_core::facts::{self, Decision};
use uma_pep_core::host::{CallResponse, Counter, Host, HttpCall, SharedEntry, SharedWriteError};
use uma_pep_core::wire::MAX_AS_ANSWER_BYTES;

#[link(wasm_import_module = "env")]
extern "C" {
    /// The ABI's `proxy_set_property`, declared here with a plain status code: the SDK's
    /// wrapper panics (kills the VM) on any status but `Ok`.
    #[link_name = "proxy_set_property"]
    fn proxy_set_property_raw(path: *const u8, path_size: usize, value: *const u8, value_size: usize) -> u32;

    /// The ABI's `proxy_get_header_map_pairs`, with a plain status code (the SDK's wrapper
    /// panics on any status but `Ok`, and its parsers unwrap names and values as UTF-8).
    #[link_name = "proxy_get_header_map_pairs"]
    fn proxy_get_header_map_pairs_raw(map_type: u32, data: *mut *mut u8, size: *mut usize) -> u32;
}

/// Sets a one-segment property of the current request; Envoy keeps it in the request's filter
/// state as `wasm.<name>`. False when the host refused it (no request, another host).
fn set_property(name: &str, value: &[u8]) -> bool {
    // SAFETY: both pointers come from live slices with their exact lengths; the host only
    // reads them during the call.
    let status = unsafe { proxy_set_property_raw(name.as_ptr(), name.len(), value.as_ptr(), value.len()) };
    status == Status::Ok as u32
}

/// The metric ids the host gave each counter; a failed definition leaves the counter silent.
/// Every worker defines the same names, so Envoy sums them across workers.
pub struct ProxyWasmHost {
    metrics: [Option<u32>; Counter::ALL.len()],
}

impl ProxyWasmHost {
    pub fn new() -> Self {
        let mut metrics = [None; Counter::ALL.len()];
        for (slot, counter) in metrics.iter_mut().zip(Counter::ALL) {
            *slot = hostcalls::define_metric(MetricType::Counter, counter.name()).ok();
        }
        Self { metrics }
    }
}

/// Reads the answer of the call being delivered now; zero headers means a reset or a timeout.
pub fn call_response(num_headers: usize, body_size: usize) -> CallResponse {
    if num_headers == 0 {
        return CallResponse { status: None, body: Vec::new() };
    }
    let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|s| s.parse::<u16>().ok());
    if body_size > MAX_AS_ANSWER_BYTES {
        // Keep the status so the error names it, but an oversized body parses as nothing.
        return CallResponse { status, body: b"\0oversized".to_vec() };
    }
    let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
        .ok()
        .flatten()
        .unwrap_or_default();
    CallResponse { status, body }
}

fn since_epoch() -> Duration {
    hostcalls::get_current_time().unwrap_or(UNIX_EPOCH).duration_since(UNIX_EPOCH).unwrap_or_default()
}

impl Host for ProxyWasmHost {
    fn now_ms(&self) -> i64 {
        i64::try_from(since_epoch().as_millis()).unwrap_or(i64::MAX)
    }

    fn now_ns(&self) -> i64 {
        i64::try_from(since_epoch().as_nanos()).unwrap_or(i64::MAX)
    }

    fn shared_get(&self, key: &str) -> Option<SharedEntry> {
        hostcalls::get_shared_data(key).ok()
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedWriteError> {
        hostcalls::set_shared_data(key, Some(value), cas).map_err(|status| match status {
            Status::CasMismatch => SharedWriteError::CasMismatch,
            _ => SharedWriteError::Refused,
        })
    }

    fn dispatch(&self, call: &HttpCall) -> Result<u32, String> {
        let mut headers = vec![
            (":method", call.method),
            (":path", call.path.as_str()),
            (":authority", call.authority.as_str()),
            ("accept", "application/json"),
        ];
        headers.extend(call.headers.iter().map(|(k, v)| (*k, v.as_str())));
        let body = (!call.body.is_empty()).then_some(call.body.as_slice());
        hostcalls::dispatch_http_call(
            &call.cluster,
            headers,
            body,
            Vec::new(),
            Duration::from_millis(call.timeout_ms),
        )
        .map_err(|status| format!("{status:?}"))
    }

    fn enter_context(&self, context_id: u32) -> bool {
        hostcalls::set_effective_context(context_id).is_ok()
    }

    fn request_header_map(&self) -> Option<Vec<u8>> {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: the host writes a pointer and a length into the two locals; the buffer it
        // points to was allocated by this module's `proxy_on_memory_allocate` (the SDK's, a
        // `Vec<u8>` of capacity `size`), so it is owned here and freed as that `Vec`.
        unsafe {
            let status =
                proxy_get_header_map_pairs_raw(MapType::HttpRequestHeaders as u32, &mut data, &mut size);
            if status != Status::Ok as u32 {
                return None;
            }
            if data.is_null() {
                return Some(Vec::new());
            }
            Some(Vec::from_raw_parts(data, size, size))
        }
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
    }

    fn send_reply(&self, reply: &LocalReply) {
        let headers: Vec<(&str, &str)> =
            reply.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let body = (!reply.body.is_empty()).then_some(reply.body.as_bytes());
        let _ = hostcalls::send_http_response(reply.status, headers, body);
    }

    fn resume_request(&self) {
        let _ = hostcalls::resume_http_request();
    }

    fn record_facts(&self, decision: Decision, resource: Option<&str>, subject: Option<&str>) {
        set_property(facts::DECISION, decision.as_str().as_bytes());
        set_property(facts::CODE, decision.code_str().as_bytes());
        if let Some(resource) = resource {
            set_property(facts::RESOURCE, resource.as_bytes());
        }
        if let Some(subject) = subject {
            set_property(facts::SUBJECT, subject.as_bytes());
        }
    }

    fn count(&self, counter: Counter) {
        if let Some(id) = self.metrics.get(counter.index()).copied().flatten() {
            // A failed increment only loses a count; never worth failing a request for.
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
}
