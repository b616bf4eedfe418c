//! What the Resource API's handlers share: the repository, the link to the AS (not reached
//! yet, or its clients), the PDP and the lock that serialises changes.

use std::sync::Arc;

use tokio::sync::{watch, Mutex};

use crate::identity::Verifier;
use crate::pdp::PdpClient;
use crate::repository::Repository;
use crate::resource_set::ResourceSetClient;
use crate::xds::XdsPublisher;

use super::error::ApiError;
use super::service::ResourceService;

pub struct AppState {
    pub repo: Repository,
    /// The AS clients once the AS has been reached; until then, why not.
    pub link: watch::Sender<AsLink>,
    pub pdp: Option<PdpClient>,
    pub write_lock: Mutex<()>,
    /// The header the filter's identity JWT comes in, when pepctl accepts those
    /// (`--forward-jwks`); known before the AS is reached, so that such a call is a 503 then.
    pub forwarded_header: Option<String>,
    /// The filter's configuration served over xDS (`--xds-listen`): writes wait for Envoys
    /// to apply it.
    pub xds: Option<Arc<XdsPublisher>>,
}

pub type Shared = Arc<AppState>;

/// What needs the AS: resource registration, and the verification of callers' tokens (its
/// JWKS and userinfo endpoints come from discovery).
pub struct Connected {
    pub resource_set: Arc<ResourceSetClient>,
    pub verifier: Verifier,
}

#[derive(Clone)]
pub enum AsLink {
    /// Not reached yet: the last failure and the attempts so far.
    Waiting {
        cause: String,
        attempts: u32,
    },
    Ready(Arc<Connected>),
}

impl AppState {
    pub fn new(repo: Repository, link: AsLink, pdp: Option<PdpClient>) -> Self {
        Self {
            repo,
            link: watch::Sender::new(link),
            pdp,
            write_lock: Mutex::new(()),
            forwarded_header: None,
            xds: None,
        }
    }

    /// Publishes every change over xDS and makes writes wait for it.
    pub fn with_xds(mut self, publisher: Arc<XdsPublisher>) -> Self {
        self.xds = Some(publisher);
        self
    }

    /// Accepts the filter's identity JWTs in `header` (the verifier checks them).
    pub fn with_forwarded_header(mut self, header: Option<String>) -> Self {
        self.forwarded_header = header;
        self
    }

    pub(crate) fn connected(&self) -> Result<Arc<Connected>, ApiError> {
        match &*self.link.borrow() {
            AsLink::Ready(c) => Ok(c.clone()),
            AsLink::Waiting { cause, .. } => Err(ApiError::unavailable(format!(
                "the authorization server has not been reached yet ({cause}); retrying"
            ))),
        }
    }

    /// The resource service over this state and the AS clients of `link`.
    pub(crate) fn service<'a>(
        &'a self,
        link: &'a Connected,
    ) -> ResourceService<'a, ResourceSetClient, PdpClient> {
        ResourceService {
            repo: &self.repo,
            registry: &link.resource_set,
            pdp: self.pdp.as_ref(),
            write_lock: &self.write_lock,
        }
    }
}
