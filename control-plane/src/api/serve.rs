//! `pepctl serve`: its flags, reaching the AS in the background (retried until it answers),
//! renewing expiring registrations, and the server with its graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use thiserror::Error;

use crate::context::{AsContext, Common, ContextError};
use crate::identity::{ForwardedIdentity, IdentityConfig, Introspection, Verifier};
use crate::pdp::PdpClient;
use crate::registration::ClientFile;
use crate::repository::{RepoError, Repository};
use crate::resource_set::ResourceSetClient;
use crate::transport::checked_url;
use crate::xds::extension::FilterTemplate;
use crate::xds::{XdsError, XdsPublisher};
use uma_pep_core::jwt_rpt::JwtKeys;
use uma_pep_core::wire::AsResponse;

use super::reconcile::settle_journal;
use super::router;
use super::state::{AppState, AsLink, Connected, Shared};

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the Resource API
    #[arg(long, default_value = "127.0.0.1:5576", env = "PEPCTL_LISTEN")]
    pub listen: SocketAddr,
    /// PDP base URL; when given, default ownership policies are registered on creation
    #[arg(long, env = "PEPCTL_PDP_URL")]
    pub pdp_url: Option<String>,
    /// Policy path on the PDP
    #[arg(long, default_value = "/pdp/policy/")]
    pub pdp_policy_path: String,
    /// Required `aud` of callers' JWTs
    #[arg(long, env = "PEPCTL_AUDIENCE")]
    pub audience: Option<String>,
    /// Clock leeway for callers' JWTs, seconds
    #[arg(long, default_value_t = 30)]
    pub leeway_s: u64,
    /// How often to renew AS registrations that expire (Gluu), seconds
    #[arg(long, default_value_t = 3600)]
    pub refresh_interval_s: u64,
    /// Renew a registration whose AS expiry is closer than this, seconds
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    pub refresh_before_s: i64,
    /// Accept the identity JWT the filter mints (`forward`) from services behind the PEP: the
    /// JWKS of the forward key (what `pepctl jwks` prints), or the key's PEM file itself
    #[arg(long, env = "PEPCTL_FORWARD_JWKS", requires = "forward_audience")]
    pub forward_jwks: Option<PathBuf>,
    /// Required `aud` of the identity JWT (the filter's `forward.aud`)
    #[arg(long, env = "PEPCTL_FORWARD_AUDIENCE", requires = "forward_jwks")]
    pub forward_audience: Option<String>,
    /// Required `iss` of the identity JWT (the filter's `forward.iss`)
    #[arg(long, default_value = "uma-pep", requires = "forward_jwks")]
    pub forward_issuer: String,
    /// Header the identity JWT comes in (the filter's `forward.header`)
    #[arg(long, default_value = uma_pep_core::config::DEFAULT_FORWARD_HEADER, requires = "forward_jwks")]
    pub forward_header: String,
    /// Serve the filter's configuration to Envoys over xDS (ECDS, gRPC) on this address; a
    /// Resource API write then answers once every subscribed Envoy applied it (docs/xds.md)
    #[arg(long, env = "PEPCTL_XDS_LISTEN", requires = "xds_filter_config")]
    pub xds_listen: Option<SocketAddr>,
    /// The filter configuration to serve, as `pepctl render filter-config` prints it (without
    /// --sync-url); its table is replaced by the repository's
    #[arg(long, env = "PEPCTL_XDS_FILTER_CONFIG", requires = "xds_listen")]
    pub xds_filter_config: Option<PathBuf>,
    /// The filter's .wasm as the Envoys open it
    #[arg(long, default_value = "target/wasm32-wasip1/release/uma_pep.wasm")]
    pub xds_wasm: PathBuf,
    /// The extension config's name: the `name` of the HTTP filter with `config_discovery`
    #[arg(long, default_value = "uma-pep")]
    pub xds_resource_name: String,
    /// How long a Resource API write waits for every subscribed Envoy to apply it, ms
    #[arg(long, default_value_t = 2000)]
    pub xds_ack_timeout_ms: u64,
}

/// The filter's identity JWTs as `--forward-jwks` and its companions say to accept them.
fn forwarded_identity(args: &ServeArgs) -> Result<Option<ForwardedIdentity>, ServeError> {
    let (Some(path), Some(audience)) = (&args.forward_jwks, &args.forward_audience) else {
        return Ok(None);
    };
    let shown = path.display().to_string();
    let bad = |problem: String| ServeError::ForwardJwks { path: shown.clone(), problem };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    // The key's PEM (the same file the filter is rendered with) or its JWKS.
    let jwks = match crate::jwks::public_key_from_pem(&bytes) {
        Ok(jwk) => {
            serde_json::to_vec(&serde_json::json!({ "keys": [jwk] })).map_err(|e| bad(e.to_string()))?
        }
        Err(_) => bytes,
    };
    let keys =
        JwtKeys::parse(&AsResponse { status: Some(200), body: &jwks }).map_err(|e| bad(e.to_string()))?;
    if let Some(d) = keys.dropped().first() {
        return Err(bad(format!("key {} is unusable: {}", d.kid, d.reason)));
    }
    if keys.is_empty() {
        return Err(bad("holds no signature key with a kid".into()));
    }
    let header = args.forward_header.trim().to_ascii_lowercase();
    if header.is_empty() || !header.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(ServeError::ForwardHeader(args.forward_header.clone()));
    }
    Ok(Some(ForwardedIdentity {
        header,
        keys,
        issuer: args.forward_issuer.clone(),
        audience: audience.clone(),
    }))
}

#[derive(Debug, Error)]
pub enum ServeError {
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("--pdp-url: {0}")]
    Pdp(String),
    #[error(
        "--forward-jwks {path}: {problem}; give the JWKS `pepctl jwks --key <forward key>` prints, or the \
         forward key's PEM file"
    )]
    ForwardJwks { path: String, problem: String },
    #[error("--forward-header {0:?} is not a header name (letters, digits, '-' and '_')")]
    ForwardHeader(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("server failed: {0}")]
    Server(std::io::Error),
    #[error(transparent)]
    Xds(#[from] crate::xds::XdsError),
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Renews expiring AS registrations in the background, under the write lock (a renewal may
/// move a resource to a new id).
fn spawn_refresher(state: Shared, resource_set: Arc<ResourceSetClient>, interval_s: u64, window_s: i64) {
    if interval_s == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(interval_s));
        loop {
            tick.tick().await;
            let _write = state.write_lock.lock().await;
            if let Err(e) = crate::expiry::refresh_expiring(&state.repo, &resource_set, window_s).await {
                tracing::warn!(error = %e, "renewal pass failed");
            }
        }
    });
}

/// The first pause between attempts to reach the AS, and the longest.
const AS_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(500);
const AS_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Reaches the AS (discovery) and settles the intent journal (changes a stop interrupted),
/// retrying both with a pause that doubles up to `AS_RETRY_MAX`; then the Resource API is
/// ready and renewals start. Until then `/filter-config` is served from the repository, and
/// calls with a token answer 503: no write can meet an unsettled journal.
async fn connect_until_ready(
    common: Common,
    client: ClientFile,
    args: ServeArgs,
    forwarded: Option<ForwardedIdentity>,
    state: Shared,
) {
    let mut pause = AS_RETRY_FIRST;
    let mut attempts = 0u32;
    let mut last_cause = String::new();
    let ctx = loop {
        attempts = attempts.saturating_add(1);
        let attempt = async {
            let ctx = AsContext::with_client(&common, client.clone()).await.map_err(|e| e.to_string())?;
            let _write = state.write_lock.lock().await;
            let settled =
                settle_journal(&state.repo, ctx.resource_set.as_ref()).await.map_err(|e| e.to_string())?;
            if settled > 0 {
                tracing::info!(settled, "settled the changes a stop interrupted");
            }
            Ok::<_, String>(ctx)
        };
        match attempt.await {
            Ok(ctx) => break ctx,
            Err(cause) => {
                if cause != last_cause {
                    tracing::warn!(error = %cause, attempts, "authorization server not reached, or interrupted changes not settled; retrying (GET /readyz)");
                } else {
                    tracing::debug!(error = %cause, attempts, "authorization server still not reached");
                }
                state.link.send_replace(AsLink::Waiting { cause: cause.clone(), attempts });
                last_cause = cause;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(AS_RETRY_MAX);
            }
        }
    };
    let mut verifier = Verifier::new(
        ctx.http.clone(),
        IdentityConfig {
            issuer: ctx.endpoints.issuer.clone(),
            audience: args.audience.clone(),
            jwks_uri: ctx.endpoints.jwks.clone(),
            userinfo: ctx.endpoints.userinfo.clone(),
            leeway_s: args.leeway_s,
        },
    );
    // Opaque RPTs that services behind the PEP pass on are resolved where the filter resolves
    // them.
    if let Some(endpoint) = ctx.endpoints.introspection.clone() {
        verifier = verifier.with_introspection(Introspection {
            endpoint,
            profile: ctx.profile,
            pat: ctx.pat.clone(),
        });
    }
    if let Some(forwarded) = forwarded {
        verifier = verifier.with_forwarded(forwarded);
    }
    let connected = Connected { resource_set: ctx.resource_set.clone(), verifier };
    state.link.send_replace(AsLink::Ready(Arc::new(connected)));
    tracing::info!(issuer = %ctx.endpoints.issuer, attempts, "authorization server reached; Resource API ready");
    spawn_refresher(state, ctx.resource_set, args.refresh_interval_s, args.refresh_before_s);
}

pub async fn serve(common: &Common, args: ServeArgs) -> Result<(), ServeError> {
    // What waiting cannot fix stops here: no issuer, a bad --ca-file, no client file or one
    // of another AS, a bad --pdp-url. An AS that does not answer yet is retried, below.
    let http = common.http().map_err(ContextError::from)?;
    let client = common.client_file()?;
    let repo = Repository::open(&common.db)?;
    let pdp = match &args.pdp_url {
        None => None,
        Some(base) => {
            let url =
                format!("{}/{}", base.trim_end_matches('/'), args.pdp_policy_path.trim_start_matches('/'));
            let url = checked_url("PDP policy endpoint", &url).map_err(|e| ServeError::Pdp(e.to_string()))?;
            Some(PdpClient::new(http, url))
        }
    };
    let forwarded = forwarded_identity(&args)?;
    let forwarded_header = forwarded.as_ref().map(|f| f.header.clone());
    let waiting = AsLink::Waiting { cause: "first attempt under way".into(), attempts: 0 };
    let xds = match (&args.xds_listen, &args.xds_filter_config) {
        (Some(addr), Some(config)) => {
            let template = FilterTemplate::load(config, &args.xds_wasm, &args.xds_resource_name)?;
            let publisher = Arc::new(XdsPublisher::new(
                template,
                std::time::Duration::from_millis(args.xds_ack_timeout_ms),
            ));
            // The table in force before any Envoy asks: served from the repository alone.
            publisher.publish(&repo).await?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| XdsError::Listen { addr: *addr, source })?;
            let local = listener.local_addr().map_err(ServeError::Server)?;
            tracing::info!(listen = %local, name = %publisher.name(), "serving the filter configuration over xDS (ECDS)");
            println!("serving xds on {local}");
            Some((publisher, listener))
        }
        _ => None,
    };
    let mut app = AppState::new(repo, waiting, pdp).with_forwarded_header(forwarded_header);
    if let Some((publisher, listener)) = xds {
        app = app.with_xds(publisher.clone());
        crate::xds::spawn_watcher(publisher.clone(), app.repo.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::xds::serve(listener, publisher, shutdown_signal()).await {
                tracing::error!(error = %e, "the xDS server stopped");
            }
        });
    }
    let state = Arc::new(app);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServeError::Listen { addr: args.listen, source })?;
    let local = listener.local_addr().map_err(ServeError::Server)?;
    tracing::info!(listen = %local, "serving /filter-config and /healthz; reaching the authorization server");
    // Tests and supervisors read the bound address (port 0 picks a free one) from stdout.
    println!("listening on {local}");
    tokio::spawn(connect_until_ready(common.clone(), client, args, forwarded, state.clone()));
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(ServeError::Server)
}
