//! `EcdsService`: Envoy's extension config discovery (ECDS), state of the world over gRPC
//! (`api_type: GRPC`). Each Envoy's stream gets the publication in force when it subscribes
//! and every later one; its requests that echo a response's nonce are its acknowledgement
//! (no `error_detail`) or refusal (with it), which the hub records.

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_server::ExtensionConfigDiscoveryService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::extension::TYPED_EXTENSION_CONFIG;
use super::hub::{ConfigHub, Subscription};

pub struct EcdsService {
    pub hub: Arc<ConfigHub>,
    /// The one extension config served (the filter's name under `config_discovery`).
    pub name: String,
}

type Answers<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl ExtensionConfigDiscoveryService for EcdsService {
    type StreamExtensionConfigsStream = Answers<DiscoveryResponse>;

    async fn stream_extension_configs(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamExtensionConfigsStream>, Status> {
        // Small: a stream that does not read its answers waits, it does not pile them up.
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(serve_stream(self.hub.clone(), self.name.clone(), request.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type DeltaExtensionConfigsStream = Answers<DeltaDiscoveryResponse>;

    async fn delta_extension_configs(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaExtensionConfigsStream>, Status> {
        Err(Status::unimplemented(
            "pepctl serves ECDS as state of the world: set api_type GRPC, not DELTA_GRPC (pepctl render envoy --xds-address writes it)",
        ))
    }

    async fn fetch_extension_configs(
        &self,
        _request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented("pepctl serves ECDS as a gRPC stream (api_type GRPC), not by fetch"))
    }
}

fn node_of(request: &DiscoveryRequest) -> String {
    match request.node.as_ref().map(|n| n.id.as_str()) {
        Some(id) if !id.is_empty() => client_text(id),
        _ => "(no node id)".to_string(),
    }
}

/// The most characters kept of a node id or a refusal's reason.
const MAX_CLIENT_TEXT: usize = 512;

/// Text an xDS client sent (its node id, its reason for a refusal), fit for a log line and
/// `/xds-status`: cut at `MAX_CLIENT_TEXT` characters, control characters shown as `?` so a
/// client cannot forge a log line or hold megabytes in the books.
fn client_text(text: &str) -> String {
    let mut kept: String =
        text.chars().take(MAX_CLIENT_TEXT).map(|c| if c.is_control() { '?' } else { c }).collect();
    if text.chars().nth(MAX_CLIENT_TEXT).is_some() {
        kept.push('…');
    }
    kept
}

/// One Envoy's stream, until it ends or pepctl stops.
async fn serve_stream(
    hub: Arc<ConfigHub>,
    name: String,
    mut inbound: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    let mut updates = hub.watch();
    let mut subscription: Option<Subscription> = None;
    let mut node = String::new();
    // The last response sent: its nonce and publication.
    let mut sent: Option<(String, u64)> = None;
    let mut nonces = 0u64;
    loop {
        tokio::select! {
            message = inbound.next() => {
                let request = match message {
                    Some(Ok(r)) => r,
                    Some(Err(e)) => {
                        tracing::debug!(%node, error = %e, "ECDS stream failed");
                        break;
                    }
                    None => break,
                };
                if node.is_empty() {
                    node = node_of(&request);
                }
                if request.type_url != TYPED_EXTENSION_CONFIG {
                    let _ = tx.send(Err(Status::invalid_argument(format!(
                        "this stream serves {TYPED_EXTENSION_CONFIG}, not {:?}", client_text(&request.type_url)
                    )))).await;
                    break;
                }
                if let Some((nonce, seq)) = &sent {
                    if request.response_nonce == *nonce {
                        if let Some(sub) = &subscription {
                            match &request.error_detail {
                                Some(status) => {
                                    let reason = client_text(&status.message);
                                    tracing::warn!(%node, version = %client_text(&request.version_info), %reason,
                                        "an Envoy refused the filter configuration; it keeps the one it had");
                                    sub.refused(*seq, reason);
                                }
                                None => sub.applied(*seq),
                            }
                        }
                        continue;
                    }
                    if !request.response_nonce.is_empty() {
                        // The answer to an older response: the newer one will be answered.
                        continue;
                    }
                }
                if !request.resource_names.contains(&name) {
                    let asked: Vec<String> = request.resource_names.iter().take(8).map(|n| client_text(n)).collect();
                    tracing::warn!(%node, ?asked, served = %name,
                        "an Envoy asked for an extension config pepctl does not serve: the HTTP filter's name under config_discovery must be --xds-resource-name");
                    subscription = None;
                    continue;
                }
                if subscription.is_none() {
                    tracing::info!(%node, "an Envoy subscribed to the filter configuration");
                    subscription = Some(hub.subscribe(node.clone()));
                }
            }
            changed = updates.changed() => {
                if changed.is_err() || subscription.is_none() {
                    if changed.is_err() { break; }
                    continue;
                }
            }
        }
        let Some(current) = hub.current() else { continue };
        if sent.as_ref().is_some_and(|(_, seq)| *seq == current.seq) {
            continue;
        }
        nonces += 1;
        let nonce = nonces.to_string();
        let response = DiscoveryResponse {
            version_info: current.version_info.clone(),
            resources: vec![current.resource.clone()],
            type_url: TYPED_EXTENSION_CONFIG.into(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        if tx.send(Ok(response)).await.is_err() {
            break;
        }
        sent = Some((nonce, current.seq));
    }
    if subscription.is_some() {
        tracing::info!(%node, "an Envoy left the filter configuration's stream");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::Node;

    fn request_from(node: &str) -> DiscoveryRequest {
        DiscoveryRequest { node: Some(Node { id: node.into(), ..Default::default() }), ..Default::default() }
    }

    #[test]
    fn a_node_id_cannot_forge_a_log_line_nor_grow_the_books() {
        assert_eq!(node_of(&request_from("sidecar~10.0.0.1~web.ns")), "sidecar~10.0.0.1~web.ns");
        assert_eq!(
            node_of(&request_from("a\nINFO pepctl: all good\r\u{1b}[2J")),
            "a?INFO pepctl: all good??[2J"
        );
        let long = node_of(&request_from(&"é".repeat(100_000)));
        assert_eq!(long.chars().count(), MAX_CLIENT_TEXT + 1);
        assert!(long.ends_with('…'));
        assert_eq!(node_of(&request_from(&"x".repeat(MAX_CLIENT_TEXT))).len(), MAX_CLIENT_TEXT);
        assert_eq!(node_of(&DiscoveryRequest::default()), "(no node id)");
    }
}
