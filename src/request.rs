//! `RequestContext`: the HTTP context of one request. It reads the request, asks the core for
//! a plan, and either answers at once or hands the request to the worker, paused.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType, Status};
use uma_pep_core::config::PepConfig;
use uma_pep_core::decision::{plan, LocalReply, LogCode, Mode, Plan, RequestFacts};
use uma_pep_core::facts::Decision;
use uma_pep_core::headers::{scan, HeaderScan, SerializedPairs};
use uma_pep_core::path::{normalize_path, split_query};

use log::debug;

use crate::host;
use crate::metrics::Counter;
use crate::worker::{Flow, Worker};

pub struct RequestContext {
    pub id: u32,
    pub worker: Rc<Worker>,
}

/// The request the PEP must decide on: this one (FULL) or the one an `authorize_path` check
/// describes (PARTIAL).
struct Subject {
    mode: Mode,
    method: String,
    raw_path: String,
}

/// PARTIAL mode: `authorize_path` itself takes `X-Original-URI` and `X-Original-Method` (nginx
/// `auth_request`, whose subrequest is always a GET: both headers are required); a path below it
/// is the original path, with the check's own method (Envoy `ext_authz` with `path_prefix`,
/// where `X-Original-*` could come from the client and is ignored).
///
/// A check's own path must be canonical, as the original path must: the edge checks
/// `path_prefix` + the raw path it routes, so `/authorize/alice/../zzz` is about
/// `/alice/../zzz`, not `/zzz`, and `/authorize/../alice` is a check, not a request for `/alice`.
///
/// A check cannot strip what the proxy in front forwards either: one whose original request
/// carries a method-override header is refused unless `keep_method_override` allows them, and
/// repeated `X-Original-*` headers are refused (Envoy keeps them apart and reads the first).
fn subject(
    config: &PepConfig,
    method: String,
    raw_path: String,
    headers: &HeaderScan<'_>,
) -> Result<Subject, LocalReply> {
    let Some(authorize) = &config.authorize_path else {
        return Ok(Subject { mode: Mode::Full, method, raw_path });
    };
    let own = normalize_path(&raw_path).unwrap_or_default();
    let raw_only = split_query(&raw_path).0;
    let is_check =
        |p: &str| p == authorize || p.strip_prefix(authorize.as_str()).is_some_and(|r| r.starts_with('/'));
    if !is_check(&own) && !is_check(raw_only) {
        return Ok(Subject { mode: Mode::Full, method, raw_path });
    }
    if own != raw_only {
        return Err(LocalReply::bad_request("path of an authorization check is not in canonical form"));
    }
    if !config.keep_method_override && !headers.method_override.is_empty() {
        return Err(LocalReply::bad_request(
            "authorization check of a request with a method-override header",
        ));
    }
    if own == *authorize {
        if headers.original_uri > 1 || headers.original_method > 1 {
            return Err(LocalReply::bad_request("repeated X-Original-URI or X-Original-Method"));
        }
        let uri = host::request_header("x-original-uri").filter(|u| !u.is_empty());
        let original_method = host::request_header("x-original-method").filter(|m| !m.is_empty());
        let (Some(uri), Some(method)) = (uri, original_method) else {
            return Err(LocalReply::bad_request(
                "authorization check without X-Original-URI and X-Original-Method",
            ));
        };
        return Ok(Subject { mode: Mode::Partial, method, raw_path: uri });
    }
    let rest = own.strip_prefix(authorize.as_str()).unwrap_or(&own);
    let (_, query) = split_query(&raw_path);
    Ok(Subject { mode: Mode::Partial, method, raw_path: format!("{rest}{query}") })
}

#[link(wasm_import_module = "env")]
extern "C" {
    /// The ABI's `proxy_get_header_map_pairs`, with a plain status code (the SDK's wrapper
    /// panics on any status but `Ok`, and its parsers unwrap names and values as UTF-8).
    #[link_name = "proxy_get_header_map_pairs"]
    fn proxy_get_header_map_pairs_raw(map_type: u32, data: *mut *mut u8, size: *mut usize) -> u32;
}

/// The request's headers as the host serializes them (see `SerializedPairs`): one hostcall and
/// the one buffer the host fills, read in place. `None` when the host refuses.
fn request_header_map() -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer and a length into the two locals; the buffer it
    // points to was allocated by this module's `proxy_on_memory_allocate` (the SDK's, a
    // `Vec<u8>` of capacity `size`), so it is owned here and freed as that `Vec`.
    unsafe {
        let status = proxy_get_header_map_pairs_raw(MapType::HttpRequestHeaders as u32, &mut data, &mut size);
        if status != Status::Ok as u32 {
            return None;
        }
        if data.is_null() {
            return Some(Vec::new());
        }
        Some(Vec::from_raw_parts(data, size, size))
    }
}

impl RequestContext {
    fn reply_now(&self, reply: &LocalReply, method: &str, path: &str) -> Action {
        let counter = if reply.status == 200 { Counter::Allowed } else { Counter::Denied };
        self.worker.metrics.increment(counter);
        host::record_facts(Decision::of_reply(reply), None, None);
        debug!("{} {method} {path} status={}: {}", reply.code.code(), reply.status, reply.reason);
        host::send_reply(reply);
        Action::Pause
    }
}

impl Context for RequestContext {
    fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize, _trailers: usize) {
        self.worker.enter_callback(self.id);
        self.worker.on_call_response(token, num_headers, body_size);
    }

    fn on_done(&mut self) -> bool {
        self.worker.forget(self.id);
        true
    }
}

impl HttpContext for RequestContext {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.worker.enter_callback(self.id);
        let config = &self.worker.config;
        // Header hygiene first, on every request: the client never chooses the identity header
        // (in any spelling a CGI-style upstream folds to it) nor, unless kept, overrides the
        // method. One read of the map; a header is removed only when present.
        let Some(map) = request_header_map() else {
            return self.reply_now(&LocalReply::bad_request("request headers unreadable"), "-", "-");
        };
        let mut pairs = SerializedPairs::new(&map);
        let Some(headers) = scan(&mut pairs, &self.worker.forward_spellings[0]) else {
            return self.reply_now(&LocalReply::bad_request("request headers unreadable"), "-", "-");
        };
        for name in &headers.identity {
            host::set_request_header(name, None);
        }
        if !config.keep_method_override {
            for name in &headers.method_override {
                host::set_request_header(name, None);
            }
        }

        let method = host::request_header(":method").unwrap_or_default();
        let raw_path = host::request_header(":path").unwrap_or_default();
        if let Some(jwks) = self.worker.jwks_reply(&raw_path) {
            host::send_reply(&jwks);
            return Action::Pause;
        }
        let subject = match subject(config, method, raw_path, &headers) {
            Ok(s) => s,
            Err(reply) => return self.reply_now(&reply, "-", "-"),
        };
        let log_path = split_query(&subject.raw_path).0.to_string();
        // Envoy joins repeated `Authorization` headers into one value; the core tells them apart.
        let authorization = host::request_header_lossy("authorization");
        let authorization: Vec<&str> = authorization.as_deref().into_iter().collect();
        let facts = RequestFacts {
            method: &subject.method,
            raw_path: &subject.raw_path,
            authorization: &authorization,
            // A check cannot change what the proxy in front forwards: only canonical paths pass.
            canonical_only: subject.mode == Mode::Partial,
        };

        let resources = self.worker.resources();
        match plan(config, &resources, facts) {
            Plan::Reply(reply) => self.reply_now(&reply, &subject.method, &log_path),
            Plan::PassThrough { rewrite } => {
                self.worker.metrics.increment(Counter::Unmatched);
                host::record_facts(Decision::Unmatched, None, None);
                debug!(
                    "{} {} {log_path}: no resource matches, passed through",
                    LogCode::Unmatched.code(),
                    subject.method
                );
                match subject.mode {
                    Mode::Partial => {
                        host::send_reply(&LocalReply::authorized(LogCode::Unmatched, ""));
                        Action::Pause
                    }
                    Mode::Full => {
                        if let Some(path) = rewrite {
                            host::set_request_header(":path", Some(&path));
                        }
                        Action::Continue
                    }
                }
            }
            Plan::Protected { target, token } => {
                let flow = Flow::new(
                    target,
                    subject.mode,
                    subject.method.clone(),
                    log_path,
                    token.map(str::to_string),
                );
                self.worker.start(self.id, flow)
            }
        }
    }
}
