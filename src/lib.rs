//! uma-pep: the Envoy proxy-wasm filter. This crate is the host glue only: it turns proxy-wasm
//! callbacks into calls of `uma-pep-core` and the core's answers into host actions (continue,
//! pause and dispatch, local reply). Decisions are made in the core.
//!
//! - `root`: the root context (configuration, ticks, call responses routed to the worker).
//! - `request`: the HTTP context of one request.
//! - `worker`: the state one Envoy worker shares between its contexts and the request flows
//!   waiting on the AS.
//! - `as_session`: discovery, the PAT and the JWKS, fetched once per Envoy.
//! - `caches`: decisions, minted tokens and use counts, per worker and in shared data.
//! - `resource_sync`: the resource table polled from pepctl.
//! - `shared`: slots in Envoy's shared data, visible to every worker.
//! - `host`: thin wrappers over hostcalls that never panic on odd input.
//! - `metrics`: counters visible in Envoy's stats.

mod as_session;
mod caches;
mod host;
mod metrics;
mod request;
mod resource_sync;
mod root;
mod shared;
mod worker;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| Box::new(root::PepRoot::new(context_id)));
}}
