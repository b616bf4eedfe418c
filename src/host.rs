//! Thin wrappers over the hostcalls the filter uses, so that odd input never panics the VM:
//! header values are read as bytes (the SDK's string readers unwrap on invalid UTF-8).

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};
use uma_pep_core::decision::LocalReply;
use uma_pep_core::facts::{self, Decision};
use uma_pep_core::wire::AsResponse;

/// Largest AS answer the filter reads; a bigger one is garbage.
const MAX_AS_BODY: usize = 1024 * 1024;

/// Seconds and milliseconds since the epoch, from the host clock.
pub fn now_ms() -> i64 {
    let now = hostcalls::get_current_time().unwrap_or(UNIX_EPOCH);
    now.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub fn now_ns() -> i64 {
    let now = hostcalls::get_current_time().unwrap_or(UNIX_EPOCH);
    now.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

pub fn now_s() -> i64 {
    now_ms() / 1000
}

/// A request header as text; `None` when absent or not UTF-8.
pub fn request_header(name: &str) -> Option<String> {
    let bytes = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name).ok()??;
    String::from_utf8(bytes).ok()
}

/// A request header that may hold bytes that are not UTF-8: those become `"\u{fffd}"`, which
/// no parser accepts, so the header still counts as present (and unusable).
pub fn request_header_lossy(name: &str) -> Option<String> {
    let bytes = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name).ok()??;
    Some(String::from_utf8(bytes).unwrap_or_else(|_| "\u{fffd}".to_string()))
}

pub fn set_request_header(name: &str, value: Option<&str>) {
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
}

pub fn send_reply(reply: &LocalReply) {
    let headers: Vec<(&str, &str)> = reply.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let body = (!reply.body.is_empty()).then_some(reply.body.as_bytes());
    let _ = hostcalls::send_http_response(reply.status, headers, body);
}

#[link(wasm_import_module = "env")]
extern "C" {
    /// The ABI's `proxy_set_property`, declared here with a plain status code: the SDK's
    /// wrapper panics (kills the VM) on any status but `Ok`.
    #[link_name = "proxy_set_property"]
    fn proxy_set_property_raw(path: *const u8, path_size: usize, value: *const u8, value_size: usize) -> u32;
}

/// Sets a one-segment property of the current request; Envoy keeps it in the request's filter
/// state as `wasm.<name>`. False when the host refused it (no request, another host).
pub fn set_property(name: &str, value: &[u8]) -> bool {
    // SAFETY: both pointers come from live slices with their exact lengths; the host only
    // reads them during the call.
    let status = unsafe { proxy_set_property_raw(name.as_ptr(), name.len(), value.as_ptr(), value.len()) };
    status == Status::Ok as u32
}

/// The facts of this request's decision, for Envoy's access log (`%FILTER_STATE(wasm.uma_pep.*)%`):
/// one property per fact, and only those the decision knows.
pub fn record_facts(decision: Decision, resource: Option<&str>, subject: Option<&str>) {
    set_property(facts::DECISION, decision.as_str().as_bytes());
    set_property(facts::CODE, decision.code_str().as_bytes());
    if let Some(resource) = resource {
        set_property(facts::RESOURCE, resource.as_bytes());
    }
    if let Some(subject) = subject {
        set_property(facts::SUBJECT, subject.as_bytes());
    }
}

/// The response of the dispatched call being delivered now.
pub struct CallResponse {
    pub status: Option<u16>,
    pub body: Vec<u8>,
}

impl CallResponse {
    /// Reads the call response; zero headers means a reset or a timeout.
    pub fn read(num_headers: usize, body_size: usize) -> Self {
        if num_headers == 0 {
            return Self { status: None, body: Vec::new() };
        }
        let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.parse::<u16>().ok());
        if body_size > MAX_AS_BODY {
            // Keep the status so the error names it, but an oversized body parses as nothing.
            return Self { status, body: b"\0oversized".to_vec() };
        }
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        Self { status, body }
    }

    pub fn as_response(&self) -> AsResponse<'_> {
        AsResponse { status: self.status, body: &self.body }
    }
}

/// A call to the AS through `cluster`.
pub struct AsCall<'a> {
    pub cluster: &'a str,
    pub authority: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: Option<&'a [u8]>,
    pub timeout_ms: u64,
}

impl AsCall<'_> {
    pub fn dispatch(self) -> Result<u32, Status> {
        let mut headers = vec![
            (":method", self.method),
            (":path", self.path),
            (":authority", self.authority),
            ("accept", "application/json"),
        ];
        headers.extend(self.headers);
        hostcalls::dispatch_http_call(
            self.cluster,
            headers,
            self.body,
            Vec::new(),
            Duration::from_millis(self.timeout_ms),
        )
    }
}

/// Makes `context_id` the context later hostcalls act on; false when it is gone.
pub fn enter_context(context_id: u32) -> bool {
    hostcalls::set_effective_context(context_id).is_ok()
}

pub fn resume_request() {
    let _ = hostcalls::resume_http_request();
}
