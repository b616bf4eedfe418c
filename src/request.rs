//! `RequestContext`: the HTTP context of one request. Its callbacks go to the worker, which
//! answers at once or keeps the request paused until the AS has answered.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use uma_pep_core::config::RETURNED_RPT_HEADER;
use uma_pep_core::worker::{Verdict, Worker};

use crate::proxy_host::{call_response, ProxyWasmHost};

pub struct RequestContext {
    pub id: u32,
    pub worker: Rc<Worker<ProxyWasmHost>>,
}

impl Context for RequestContext {
    fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize, _trailers: usize) {
        self.worker.on_call_response(self.id, token, &call_response(num_headers, body_size));
    }

    fn on_done(&mut self) -> bool {
        self.worker.forget(self.id);
        true
    }
}

impl HttpContext for RequestContext {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match self.worker.on_request_headers(self.id) {
            Verdict::Continue => Action::Continue,
            Verdict::Pause => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // `access_tokens.return_rpt`: the RPT the AS issued for this request's access token.
        if let Some(rpt) = self.worker.take_returned_rpt(self.id) {
            self.set_http_response_header(RETURNED_RPT_HEADER, Some(&rpt));
        }
        Action::Continue
    }
}
