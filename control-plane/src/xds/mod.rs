//! The filter's configuration served to Envoy over xDS: extension config discovery (ECDS),
//! the mechanism Envoy (and Istio, for its WasmPlugin) uses to change an HTTP filter's
//! configuration in place. `pepctl serve --xds-listen` publishes the rendered configuration
//! with the repository's table after every change and knows, from each Envoy's ACK or NACK,
//! which Envoy applied which version; a Resource API write answers once every subscribed Envoy
//! has applied it, or the wait (`--xds-ack-timeout-ms`) ran out.
//!
//! `hub` keeps the books (publications, subscribers, acknowledgements), `extension` builds the
//! resource, `ecds` is the gRPC service. This module ties them to the repository.

pub mod ecds;
pub mod extension;
pub mod hub;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_server::ExtensionConfigDiscoveryServiceServer;
use thiserror::Error;
use tokio::net::TcpListener;

use crate::repository::{RepoError, Repository};
use extension::FilterTemplate;
use hub::{ConfigHub, Published, Rollout};

#[derive(Debug, Error)]
pub enum XdsError {
    #[error("--xds-filter-config {path}: {problem}")]
    FilterConfig { path: String, problem: String },
    #[error("--xds-wasm {0}: cannot be made an absolute UTF-8 path, which Envoy needs to open the module")]
    Wasm(String),
    #[error("--xds-resource-name must not be empty: it is the name of the HTTP filter whose config_discovery asks for it")]
    ResourceName,
    #[error("the repository's table does not make a configuration the filter takes: {0}")]
    Table(String),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("cannot listen for xDS on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("the xDS server failed: {0}")]
    Server(String),
}

/// Publishes the repository's table and waits for Envoys to apply it.
pub struct XdsPublisher {
    pub hub: Arc<ConfigHub>,
    template: FilterTemplate,
    /// One publication at a time, so publication numbers follow the repository's versions.
    publishing: tokio::sync::Mutex<()>,
    pub ack_timeout: Duration,
}

impl XdsPublisher {
    pub fn new(template: FilterTemplate, ack_timeout: Duration) -> Self {
        Self {
            hub: Arc::new(ConfigHub::new()),
            template,
            publishing: tokio::sync::Mutex::new(()),
            ack_timeout,
        }
    }

    /// The ECDS resource name served.
    pub fn name(&self) -> &str {
        &self.template.name
    }

    /// Publishes the repository's table unless the publication in force already holds it.
    pub async fn publish(&self, repo: &Repository) -> Result<Arc<Published>, XdsError> {
        let _one = self.publishing.lock().await;
        let stamp = repo.run(|r| r.stamp()).await?;
        if let Some(current) = self.hub.current().filter(|c| c.stamp == stamp) {
            return Ok(current);
        }
        let snapshot = repo.run(|r| r.snapshot()).await?;
        let stamp = (snapshot.version, snapshot.generation.clone());
        let document = self.template.document(
            snapshot.resources.iter().map(crate::rules::filter_resource).collect(),
            Some(&snapshot.generation),
        )?;
        let short: String = snapshot.generation.chars().take(8).collect();
        let version_info = format!("{short}.{}", snapshot.version);
        let published = self.hub.publish(stamp, version_info, self.template.extension(document));
        tracing::info!(version = %published.version_info, resources = snapshot.resources.len(),
            envoys = self.hub.subscribers(), "filter configuration published");
        Ok(published)
    }

    /// Publishes, then waits until every subscribed Envoy applied it or `ack_timeout` passed.
    pub async fn roll_out(&self, repo: &Repository) -> Result<Rollout, XdsError> {
        let published = self.publish(repo).await?;
        let rollout = self.hub.wait_applied(&published, self.ack_timeout).await;
        if !rollout.complete() {
            tracing::warn!(version = %rollout.version, envoys = rollout.envoys, applied = rollout.applied,
                pending = ?rollout.pending, refused = ?rollout.refused, waited_ms = rollout.waited_ms,
                "not every Envoy applied the filter configuration in time");
        }
        Ok(rollout)
    }
}

/// How often the repository is looked at for changes made outside the Resource API
/// (`pepctl resources apply`, renewals, the journal settled at start).
const WATCH_PERIOD: Duration = Duration::from_secs(1);

/// Publishes whatever changed the repository outside the Resource API.
pub fn spawn_watcher(publisher: Arc<XdsPublisher>, repo: Repository) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(WATCH_PERIOD);
        let mut failing = false;
        loop {
            tick.tick().await;
            match publisher.publish(&repo).await {
                Ok(_) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "the repository's table could not be published; Envoys keep the last one");
                }
                Err(_) => {}
            }
        }
    });
}

/// Serves ECDS on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    publisher: Arc<XdsPublisher>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), XdsError> {
    let service = ecds::EcdsService { hub: publisher.hub.clone(), name: publisher.name().to_string() };
    tonic::transport::Server::builder()
        // A dead Envoy's stream is noticed and no longer waited for.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(ExtensionConfigDiscoveryServiceServer::new(service))
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| XdsError::Server(e.to_string()))
}
