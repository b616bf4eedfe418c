//! uma-pep: the Envoy proxy-wasm filter. This crate is the host glue only: it turns proxy-wasm
//! callbacks into calls of `uma-pep-core`'s `Worker` and implements the core's `Host` over
//! proxy-wasm's hostcalls. Decisions, the request flow and the caches are in the core.
//!
//! - `root`: the root context (configuration, ticks, call answers handed to the worker).
//! - `request`: the HTTP context of one request.
//! - `proxy_host`: `Host` over proxy-wasm, never panicking on odd input.

mod proxy_host;
mod request;
mod root;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| Box::new(root::PepRoot::new(context_id)));
}}
