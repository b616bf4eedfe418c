//! `PepRoot`: the root context of a worker. It validates the configuration, owns the
//! `Worker`, drives its periodic work, and hands it the answers of calls made from here.

use std::rc::Rc;
use std::time::Duration;

use log::{error, info};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};
use uma_pep_core::cache::config_fingerprint;
use uma_pep_core::config::PepConfig;
use uma_pep_core::decision::LocalReply;
use uma_pep_core::facts::Decision;
use uma_pep_core::forward::ForwardSigner;

use uma_pep_core::host::Host;
use uma_pep_core::shared_data::SharedKeys;
use uma_pep_core::table_sync::admit_configured;
use uma_pep_core::worker::Worker;

use crate::proxy_host::{call_response, ProxyWasmHost};
use crate::request::RequestContext;

pub struct PepRoot {
    id: u32,
    worker: Option<Rc<Worker<ProxyWasmHost>>>,
    /// When Envoy's log level was last looked at (ms).
    level_checked_ms: i64,
}

impl PepRoot {
    pub fn new(id: u32) -> Self {
        Self { id, worker: None, level_checked_ms: 0 }
    }
}

/// How often the root follows a change of Envoy's level for the `wasm` component (an operator's
/// `POST /logging?wasm=debug` on the admin interface).
const LEVEL_CHECK_MS: i64 = 1000;

/// Follows Envoy's log level for this component, so that a decision line that Envoy would drop
/// is not even formatted.
fn follow_host_log_level() {
    if let Ok(level) = hostcalls::get_log_level() {
        proxy_wasm::set_log_level(level);
    }
}

impl Context for PepRoot {
    fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize, _trailers: usize) {
        if let Some(worker) = &self.worker {
            worker.on_call_response(self.id, token, &call_response(num_headers, body_size));
        }
    }
}

/// How often the worker looks at its session and its waiting requests: also the most a
/// deferred call waits before it is dispatched.
fn tick_period(timeout_ms: u64) -> Duration {
    Duration::from_millis((timeout_ms / 10).clamp(20, 50))
}

impl RootContext for PepRoot {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, plugin_configuration_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let configured = PepConfig::from_json(&bytes).and_then(|config| {
            let signer = config.forward.as_ref().map(ForwardSigner::new).transpose()?;
            Ok((config, signer))
        });
        follow_host_log_level();
        let host = ProxyWasmHost::new();
        self.level_checked_ms = host.now_ms();
        match configured {
            Ok((config, signer)) => {
                let fingerprint = config_fingerprint(&bytes);
                // Refused, Envoy keeps the configuration in force (an xDS update is rejected).
                if let Err(e) = admit_configured(&host, &SharedKeys::new(&fingerprint), &config) {
                    error!("uma-pep: configuration refused: {e}");
                    return false;
                }
                let _ = hostcalls::set_tick_period(tick_period(config.timeout_ms));
                info!(
                    "uma-pep configured: issuer={} profile={:?} resources={} generation={} unmatched={:?}",
                    config.issuer,
                    config.as_profile,
                    config.resources.resources().len(),
                    config.resource_generation.as_deref().unwrap_or("-"),
                    config.unmatched
                );
                self.worker = Some(Rc::new(Worker::new(host, config, signer, self.id, &fingerprint)));
                true
            }
            Err(e) => {
                error!("uma-pep: invalid configuration: {e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let Some(worker) = &self.worker else { return };
        let now = worker.host.now_ms();
        if now - self.level_checked_ms >= LEVEL_CHECK_MS {
            self.level_checked_ms = now;
            follow_host_log_level();
        }
        worker.enter_callback(self.id);
        worker.tick();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(match &self.worker {
            Some(worker) => Box::new(RequestContext { id: context_id, worker: Rc::clone(worker) }),
            None => Box::new(Unconfigured),
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// A request arriving without a valid configuration is denied: fail closed.
struct Unconfigured;

impl Context for Unconfigured {}

impl HttpContext for Unconfigured {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> proxy_wasm::types::Action {
        let host = ProxyWasmHost::new();
        host.record_facts(Decision::AsError, None, None);
        host.send_reply(&LocalReply::as_unreachable("filter not configured"));
        proxy_wasm::types::Action::Pause
    }
}
