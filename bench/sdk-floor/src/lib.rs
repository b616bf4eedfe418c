//! The SDK floor: the per-request work every uma-pep request does at least (one header read),
//! and nothing else. Built with `--features probe` it also makes the hostcalls its plugin
//! configuration names (`property*8`), so the bench can price one hostcall of each kind.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

#[cfg(not(feature = "probe"))]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Warn);
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Floor) });
}}

struct Floor;

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        // black_box: the read (a hostcall and a copy into the VM) is the point, keep its result alive.
        std::hint::black_box(self.get_http_request_header(":path"));
        #[cfg(feature = "probe")]
        probe::run();
        Action::Continue
    }
}

#[cfg(feature = "probe")]
mod probe {
    use std::cell::RefCell;
    use std::hint::black_box;

    use proxy_wasm::hostcalls;
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::{ContextType, LogLevel, MapType, MetricType};

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Warn);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ProbeRoot) });
    }}

    #[derive(Clone, Copy)]
    enum Op {
        /// One request header by name (uma-pep reads `:method`, `:path`, `authorization`).
        Header,
        /// The whole request header map, serialized into the VM (uma-pep's hygiene scan).
        Map,
        /// A filter-state property (uma-pep's access-log facts).
        Property,
        /// A counter increment.
        Metric,
        /// The host clock.
        Time,
        /// A ~300-byte shared-data value copied into the VM (a shared-cache hit).
        Shared,
        /// A request header added (the forwarded JWT).
        SetHeader,
    }

    thread_local! {
        static OPS: RefCell<Vec<(Op, usize)>> = const { RefCell::new(Vec::new()) };
        static METRIC: RefCell<u32> = const { RefCell::new(0) };
    }

    const NAMES: [&str; 8] = ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"];

    pub fn run() {
        OPS.with(|ops| {
            for &(op, n) in ops.borrow().iter() {
                for name in NAMES.iter().cycle().take(n) {
                    match op {
                        Op::Header => {
                            black_box(hostcalls::get_map_value(MapType::HttpRequestHeaders, ":method").ok());
                        }
                        Op::Map => {
                            black_box(hostcalls::get_map_bytes(MapType::HttpRequestHeaders).ok());
                        }
                        Op::Property => {
                            let _ = hostcalls::set_property(vec![name], Some(b"allowed"));
                        }
                        Op::Metric => {
                            let _ = hostcalls::increment_metric(METRIC.with(|m| *m.borrow()), 1);
                        }
                        Op::Time => {
                            black_box(hostcalls::get_current_time().ok());
                        }
                        Op::Shared => {
                            black_box(hostcalls::get_shared_data("probe").ok());
                        }
                        Op::SetHeader => {
                            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some("v"));
                        }
                    }
                }
            }
        });
    }

    struct ProbeRoot;

    impl Context for ProbeRoot {}

    impl RootContext for ProbeRoot {
        fn on_configure(&mut self, _: usize) -> bool {
            let config = self.get_plugin_configuration().unwrap_or_default();
            let config = String::from_utf8(config).unwrap_or_default();
            let mut ops = Vec::new();
            for item in config.split(',').filter(|s| !s.is_empty()) {
                let (name, n) = item.split_once('*').unwrap_or((item, "1"));
                let op = match name {
                    "header" => Op::Header,
                    "map" => Op::Map,
                    "property" => Op::Property,
                    "metric" => Op::Metric,
                    "time" => Op::Time,
                    "shared" => Op::Shared,
                    "set_header" => Op::SetHeader,
                    _ => return false,
                };
                ops.push((op, n.parse().unwrap_or(1)));
            }
            OPS.with(|o| *o.borrow_mut() = ops);
            let id = hostcalls::define_metric(MetricType::Counter, "probe.count").unwrap_or(0);
            METRIC.with(|m| *m.borrow_mut() = id);
            let _ = hostcalls::set_shared_data("probe", Some(&[b'x'; 300]), None);
            true
        }

        fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(super::Floor))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }
}
