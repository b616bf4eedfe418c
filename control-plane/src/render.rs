//! `pepctl render`: the filter's configuration (every configuration key, `resources` from the repository
//! with their AS ids, the client from `client.json`), a complete standalone `envoy.yaml`
//! around it, and an Istio `WasmPlugin`. The filter configuration is checked with the
//! filter's own parser (`PepConfig::from_json`) before anything is printed, so a rendered
//! file never fails at Envoy start for a reason pepctl could have seen.
//!
//! `render keycloak-client` prints the Keycloak client (a `ClientRepresentation`) for operators
//! who create the PEP's client themselves instead of `register-client`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, ValueEnum};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use thiserror::Error;
use uma_pep_core::config::{
    AccessTokenMode, AccessTokens, AsProfile, ChallengeStyle, FilterDocument, ForwardConfig, PepConfig,
    Resource, ResourceSync, SigningAlg, UnmatchedPolicy,
};
use url::Url;

use crate::context::{Common, ContextError};
use crate::registration::{keycloak_client_fragment, random_token, ClientFile, RegistrationError};
use crate::repository::{RepoError, Repository, StoredResource};
use crate::xds::extension::{WASM_HTTP_FILTER, WASM_PLUGIN_NAME, WASM_RUNTIME, WASM_VM_ID};

#[derive(Debug, Error)]
pub enum RenderError {
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("the rendered filter configuration is refused by the filter's parser: {0}")]
    Invalid(String),
    /// The filter's parser refused a key that a flag sets: the flag is named.
    #[error("--{flag}: the filter refuses it ({error})")]
    FlagRefused { flag: &'static str, error: String },
    #[error("--{flag}: {problem}")]
    Flag { flag: &'static str, problem: String },
    #[error("cannot serialise: {0}")]
    Serialize(String),
    #[error(transparent)]
    Client(#[from] RegistrationError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// The filter's JSON configuration
    FilterConfig,
    /// A complete standalone envoy.yaml
    Envoy,
    /// An Istio WasmPlugin
    Istio,
    /// The PEP's Keycloak client (ClientRepresentation) for an admin to import
    KeycloakClient,
}

/// `--forward-alg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ForwardAlg {
    #[value(name = "RS256", alias = "rs256")]
    Rs256,
    #[value(name = "ES256", alias = "es256")]
    Es256,
    #[value(name = "EdDSA", alias = "eddsa")]
    EdDsa,
}

impl From<ForwardAlg> for SigningAlg {
    fn from(a: ForwardAlg) -> Self {
        match a {
            ForwardAlg::Rs256 => SigningAlg::RS256,
            ForwardAlg::Es256 => SigningAlg::ES256,
            ForwardAlg::EdDsa => SigningAlg::EdDSA,
        }
    }
}

/// A flag whose values are one of core's configuration enums, spelt as in the configuration
/// (core has no clap): clap lists `values` in help and errors, serde reads the chosen one.
pub fn core_enum<T>(values: &'static [&'static str]) -> impl TypedValueParser<Value = T>
where
    T: DeserializeOwned + Clone + Send + Sync + 'static,
{
    PossibleValuesParser::new(values).try_map(|s: String| serde_json::from_value::<T>(Value::String(s)))
}

pub const UNMATCHED_VALUES: &[&str] = &["allow", "deny"];
pub const CHALLENGE_STYLE_VALUES: &[&str] = &["uma2", "compact"];
pub const PROFILE_VALUES: &[&str] = &["uma2", "keycloak"];
pub const ACCESS_TOKEN_MODE_VALUES: &[&str] = &["uma", "decide"];

/// The RPT use limit of `--eoepca-compat`: `configMap.limitUses` of the EOEPCA PEP's Helm chart
/// (EOEPCA/helm-charts `charts/pep-engine/values.yaml`), what its deployments run with.
pub const EOEPCA_RPT_LIMIT_USES: u32 = 100;

impl RenderArgs {
    /// The challenge style in force: the flag, else the compact one under `--eoepca-compat`.
    fn challenge_style_in_force(&self) -> Option<ChallengeStyle> {
        self.challenge_style.or(self.eoepca_compat.then_some(ChallengeStyle::Compact))
    }

    /// The RPT use limit in force: the flag, else the EOEPCA chart's under `--eoepca-compat`.
    fn rpt_max_uses_in_force(&self) -> Option<u32> {
        self.rpt_max_uses.or(self.eoepca_compat.then_some(EOEPCA_RPT_LIMIT_USES))
    }

    /// `access_tokens`, when a flag sets it: `--access-tokens` (the mode; `uma` when only
    /// `--return-rpt` is given, which the filter's parser then refuses, naming that flag).
    fn access_tokens(&self) -> Option<AccessTokens> {
        (self.access_tokens.is_some() || self.return_rpt).then(|| AccessTokens {
            mode: self.access_tokens.unwrap_or_default(),
            return_rpt: self.return_rpt,
        })
    }

    /// Whether the prefix is stripped before the upstream: asked for, or implied by
    /// `--eoepca-compat` when there is a prefix.
    fn strips_path_prefix(&self) -> bool {
        self.strip_path_prefix || (self.eoepca_compat && self.path_prefix.is_some())
    }
}

#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    pub target: Target,
    /// Envoy cluster for AS calls (default: `uma_as`; Istio: outbound|PORT||HOST of the issuer)
    #[arg(long)]
    pub as_cluster: Option<String>,
    /// `:authority` of AS calls (default: host[:port] of the issuer)
    #[arg(long)]
    pub as_authority: Option<String>,
    /// Where Envoy reaches the AS, host:port (default: the issuer's)
    #[arg(long)]
    pub as_address: Option<String>,
    #[arg(long)]
    pub realm: Option<String>,
    #[arg(long, value_parser = core_enum::<UnmatchedPolicy>(UNMATCHED_VALUES))]
    pub unmatched: Option<UnmatchedPolicy>,
    #[arg(long)]
    pub path_prefix: Option<String>,
    /// `compact` keeps the EOEPCA clients' unquoted challenge working
    #[arg(long, value_parser = core_enum::<ChallengeStyle>(CHALLENGE_STYLE_VALUES))]
    pub challenge_style: Option<ChallengeStyle>,
    /// How many requests one RPT is accepted for (`rpt_max_uses`; 0: no limit)
    #[arg(long)]
    pub rpt_max_uses: Option<u32>,
    /// PARTIAL mode: the path that answers authorization checks (`authorize_path`), e.g. /authorize
    #[arg(long)]
    pub authorize_path: Option<String>,
    /// envoy: also strip --path-prefix from what goes upstream (a route `prefix_rewrite`; the
    /// filter matches without it and keeps it)
    #[arg(long, requires = "path_prefix")]
    pub strip_path_prefix: bool,
    /// The EOEPCA PEP's wire behaviour for its existing clients: the compact challenge, an RPT
    /// accepted for 100 requests (--rpt-max-uses overrides) and, for envoy, --path-prefix
    /// stripped before the upstream (docs/migrating-from-eoepca.md). Explicit flags win
    #[arg(long)]
    pub eoepca_compat: bool,
    /// Limit of each AS call made by the filter
    #[arg(long)]
    pub filter_timeout_ms: Option<u64>,
    /// What a Bearer token that is no RPT granting the request becomes (`access_tokens.mode`):
    /// `uma` (401 with a ticket) or `decide` (the AS decides for the user's access token; docs/access-tokens.md)
    #[arg(long, value_parser = core_enum::<AccessTokenMode>(ACCESS_TOKEN_MODE_VALUES))]
    pub access_tokens: Option<AccessTokenMode>,
    /// `--access-tokens decide` with `--profile uma2`: return the RPT the AS gave for the user's
    /// token to the client in `x-uma-rpt` (`access_tokens.return_rpt`)
    #[arg(long)]
    pub return_rpt: bool,
    /// pepctl's base URL for the filter's resource polling (`resource_sync`), e.g. http://127.0.0.1:5576
    #[arg(long)]
    pub sync_url: Option<String>,
    /// Envoy cluster that reaches pepctl (default: `pepctl`; Istio: outbound|PORT||HOST)
    #[arg(long)]
    pub sync_cluster: Option<String>,
    #[arg(long, default_value_t = 10)]
    pub sync_interval_s: u64,
    /// Mint a JWT naming the requesting party for the upstream (`forward`), signed with this
    /// PKCS#8 PEM key. The key goes into the configuration: keep it as private as the client secret
    #[arg(long)]
    pub forward_key: Option<PathBuf>,
    /// Algorithm of --forward-key; default from the key (RSA → RS256, P-256 → ES256, Ed25519 → EdDSA)
    #[arg(long, value_enum, requires = "forward_key")]
    pub forward_alg: Option<ForwardAlg>,
    /// Header that carries the minted JWT to the upstream (`forward.header`, default x-user-id);
    /// always stripped from clients' requests
    #[arg(long, requires = "forward_key")]
    pub forward_header: Option<String>,
    /// Path the filter answers itself with the public JWKS of --forward-key (`forward.jwks_path`),
    /// e.g. /.well-known/uma-pep/jwks.json, for upstreams to verify the minted JWT
    #[arg(long, requires = "forward_key")]
    pub jwks_path: Option<String>,
    /// `aud` of the minted JWT (`forward.aud`): the upstream, or pepctl (`serve --forward-audience`)
    /// when services behind the PEP call the Resource API with it
    #[arg(long, requires = "forward_key")]
    pub forward_aud: Option<String>,
    /// keycloak-client: the clientId (default: the client file's, else `uma-pep`)
    #[arg(long)]
    pub client_id: Option<String>,
    /// keycloak-client: make up a secret, put it in the output and write it with the client id
    /// to --client (mode 0600; refused if that file exists), so Keycloak and pepctl agree
    #[arg(long)]
    pub write_client: bool,
    /// envoy: the upstream service, host:port
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub upstream: String,
    /// envoy: listener address
    #[arg(long, default_value = "0.0.0.0")]
    pub listen_address: String,
    /// envoy: listener port
    #[arg(long, default_value_t = 10000)]
    pub listen_port: u16,
    /// envoy: admin port on 127.0.0.1 (no admin interface when absent)
    #[arg(long)]
    pub admin_port: Option<u16>,
    /// envoy: CA bundle Envoy trusts for an https AS (and pepctl)
    #[arg(long, default_value = "/etc/ssl/certs/ca-certificates.crt")]
    pub envoy_ca_file: PathBuf,
    /// envoy: path of the filter's .wasm, as Envoy opens it. A relative path (the default too) is
    /// resolved against the current directory at render time, so the file names an absolute path
    #[arg(long, default_value = "target/wasm32-wasip1/release/uma_pep.wasm")]
    pub wasm: PathBuf,
    /// istio (required): module URL, oci://REGISTRY/REPO@sha256:DIGEST or :TAG (docs/oci-image.md
    /// builds and pushes the image), https:// or file://
    #[arg(long, required_if_eq("target", "istio"))]
    pub wasm_url: Option<String>,
    /// istio: 64 hex digits pinning the module (for oci://, the image's manifest digest; for
    /// https://, the module's own sha256); also stops repeated downloads
    #[arg(long)]
    pub wasm_sha256: Option<String>,
    /// istio: namespace of the WasmPlugin
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// istio: workload selector label, key=value
    #[arg(long, default_value = "app=my-api")]
    pub selector: String,
    /// istio: also print the ServiceEntry and DestinationRule that make `as_cluster`
    /// (outbound|PORT||HOST of the issuer) a verified TLS connection to the AS (TLS origination:
    /// the filter's calls are plain HTTP to the cluster)
    #[arg(long)]
    pub with_as_service_entry: bool,
    /// istio: CA bundle, inside the proxy container, that verifies the AS (DestinationRule
    /// caCertificates; default /etc/ssl/certs/ca-certificates.crt, the public CAs of Istio's proxy image)
    #[arg(long, requires = "with_as_service_entry")]
    pub as_ca_certificates: Option<String>,
    /// istio: instead of --as-ca-certificates, a Secret in --namespace with the AS's CA under
    /// `ca.crt` (DestinationRule credentialName)
    #[arg(long, requires = "with_as_service_entry", conflicts_with = "as_ca_certificates")]
    pub as_credential_name: Option<String>,
    /// envoy, istio: print JSON instead of YAML (both accepted by Envoy and kubectl)
    #[arg(long)]
    pub json: bool,
    /// envoy: take the filter's configuration from pepctl over xDS (ECDS) at this host:port
    /// (`pepctl serve --xds-listen`) instead of embedding it; changes apply in place (docs/xds.md)
    #[arg(long, conflicts_with = "sync_url")]
    pub xds_address: Option<String>,
    /// envoy with --xds-address: the name of the extension config (`serve --xds-resource-name`)
    #[arg(long, default_value = "uma-pep", requires = "xds_address")]
    pub xds_resource_name: String,
    /// envoy with --xds-address: this Envoy's node id, as pepctl's /xds-status shows it
    /// (default: the host name and the listener port)
    #[arg(long, requires = "xds_address")]
    pub node_id: Option<String>,
}

/// The repository's resources as the filter's `resources` table, each with its rules (`exact`,
/// `methods`, `scopes_mode`, `enforcement`; absent when default, as the filter writes them).
pub fn filter_resources(list: &[StoredResource]) -> Vec<Resource> {
    list.iter().map(crate::rules::filter_resource).collect()
}

/// The cluster that reaches `pepctl serve --xds-listen`.
pub const XDS_CLUSTER: &str = "pepctl_xds";

/// host and port of a URL, with the scheme's default port.
fn host_port(url: &Url) -> Option<(String, u16)> {
    Some((url.host_str()?.trim_matches(['[', ']']).to_string(), url.port_or_known_default()?))
}

fn split_host_port(flag: &'static str, s: &str) -> Result<(String, u16), RenderError> {
    let (h, p) = s
        .rsplit_once(':')
        .ok_or_else(|| RenderError::Flag { flag, problem: format!("{s:?} is not host:port") })?;
    let port = p.parse::<u16>().map_err(|e| RenderError::Flag { flag, problem: format!("{s:?}: {e}") })?;
    Ok((h.trim_matches(['[', ']']).to_string(), port))
}

fn parse_url(flag: &'static str, s: &str) -> Result<Url, RenderError> {
    Url::parse(s).map_err(|e| RenderError::Flag { flag, problem: e.to_string() })
}

/// The filter configuration as JSON (what `envoy` and `istio` embed).
pub fn filter_config(
    common: &Common,
    resources: &[StoredResource],
    args: &RenderArgs,
) -> Result<Value, RenderError> {
    let doc = filter_document(common, resources, args)?;
    serde_json::to_value(&doc).map_err(|e| RenderError::Serialize(e.to_string()))
}

/// Builds the filter configuration and validates it with the filter's own parser.
pub fn filter_document(
    common: &Common,
    resources: &[StoredResource],
    args: &RenderArgs,
) -> Result<FilterDocument, RenderError> {
    let issuer = common.issuer()?.to_string();
    let issuer_url = parse_url("issuer", &issuer)?;
    let client = common.client_file()?;
    let istio = args.target == Target::Istio;
    let as_cluster = match &args.as_cluster {
        Some(c) => c.clone(),
        None if istio => {
            let (h, p) = host_port(&issuer_url)
                .ok_or_else(|| RenderError::Flag { flag: "issuer", problem: "has no host".into() })?;
            format!("outbound|{p}||{h}")
        }
        None => "uma_as".to_string(),
    };
    let forward = match &args.forward_key {
        Some(path) => Some(forward(path, args)?),
        None => None,
    };
    let resource_sync = match &args.sync_url {
        None => None,
        Some(sync) => {
            let url = parse_url("sync-url", sync)?;
            let cluster = match &args.sync_cluster {
                Some(c) => c.clone(),
                None if istio => {
                    let (h, p) = host_port(&url).ok_or_else(|| RenderError::Flag {
                        flag: "sync-url",
                        problem: "has no host".into(),
                    })?;
                    format!("outbound|{p}||{h}")
                }
                None => "pepctl".to_string(),
            };
            let base = url.path().trim_end_matches('/');
            Some(ResourceSync {
                cluster,
                path: format!("{base}/filter-config"),
                interval_s: args.sync_interval_s,
                authority: None,
            })
        }
    };
    let doc = FilterDocument {
        issuer: Some(issuer),
        as_cluster: Some(as_cluster),
        as_authority: args.as_authority.clone(),
        as_profile: common.profile,
        client_id: Some(client.client_id),
        client_secret: Some(client.client_secret),
        realm: args.realm.clone(),
        unmatched: args.unmatched,
        path_prefix: args.path_prefix.clone(),
        challenge_style: args.challenge_style_in_force(),
        rpt_max_uses: args.rpt_max_uses_in_force(),
        authorize_path: args.authorize_path.clone(),
        timeout_ms: args.filter_timeout_ms,
        resources: filter_resources(resources),
        forward,
        resource_sync,
        access_tokens: args.access_tokens(),
        ..FilterDocument::default()
    };
    PepConfig::from_document(doc.clone()).map_err(|e| match flag_of_key(&e.key) {
        Some(flag) => RenderError::FlagRefused { flag, error: e.to_string() },
        None => RenderError::Invalid(e.to_string()),
    })?;
    Ok(doc)
}

/// The render flag that sets a key of the filter's configuration, to name it when the filter's
/// parser refuses the key.
fn flag_of_key(key: &str) -> Option<&'static str> {
    let top = key.split(['.', '[']).next().unwrap_or(key);
    Some(match (top, key) {
        (_, "forward.header") => "forward-header",
        (_, "forward.jwks_path") => "jwks-path",
        (_, "forward.alg") => "forward-alg",
        (_, "forward.aud") => "forward-aud",
        ("forward", _) => "forward-key",
        ("issuer", _) => "issuer",
        ("as_cluster", _) => "as-cluster",
        ("as_authority", _) => "as-authority",
        ("realm", _) => "realm",
        ("path_prefix", _) => "path-prefix",
        ("challenge_style", _) => "challenge-style",
        ("rpt_max_uses", _) => "rpt-max-uses",
        ("authorize_path", _) => "authorize-path",
        ("timeout_ms", _) => "filter-timeout-ms",
        ("resource_sync", _) => "sync-url",
        (_, "access_tokens.return_rpt") => "return-rpt",
        ("access_tokens", _) => "access-tokens",
        _ => return None,
    })
}

/// `forward: {key_pem, alg, header?, jwks_path?, aud?}` from `--forward-key` (and `--forward-alg`,
/// which must fit the key, `--forward-header`, `--jwks-path`, `--forward-aud`).
fn forward(path: &std::path::Path, args: &RenderArgs) -> Result<ForwardConfig, RenderError> {
    let alg = args.forward_alg;
    let flag = "forward-key";
    let pem = std::fs::read(path)
        .map_err(|e| RenderError::Flag { flag, problem: format!("cannot read {}: {e}", path.display()) })?;
    let (key_alg, _) = crate::jwks::key_from_pem(&pem)
        .map_err(|e| RenderError::Flag { flag, problem: format!("{}: {e}", path.display()) })?;
    if let Some(a) = alg.map(SigningAlg::from) {
        if a != key_alg {
            return Err(RenderError::Flag {
                flag: "forward-alg",
                problem: format!("{a:?} does not fit the key in {} (a {key_alg:?} key)", path.display()),
            });
        }
    }
    let pem =
        String::from_utf8(pem).map_err(|_| RenderError::Flag { flag, problem: "not UTF-8 PEM".into() })?;
    let mut f = ForwardConfig::with_key(pem, key_alg);
    if let Some(h) = &args.forward_header {
        f.header = h.clone();
    }
    if let Some(p) = &args.jwks_path {
        f.jwks_path = Some(jwks_path(p)?);
    }
    if let Some(aud) = &args.forward_aud {
        f.aud = Some(aud.clone());
    }
    Ok(f)
}

/// `--jwks-path` as the filter compares it with Envoy's normalised request path: a path that
/// normalises to another (`/a/../jwks`, `//jwks`, `/jwks/`) would never be answered, so it is
/// refused with the spelling to use rather than rewritten.
fn jwks_path(p: &str) -> Result<String, RenderError> {
    let flag = "jwks-path";
    let normal = uma_pep_core::path::normalize_path(p).map_err(|e| RenderError::Flag {
        flag,
        problem: format!("{p:?}: {e} (write an absolute path such as /.well-known/uma-pep/jwks.json)"),
    })?;
    if p.contains(['?', '#']) {
        return Err(RenderError::Flag {
            flag,
            problem: format!("{p:?} has a query or fragment: give the path only"),
        });
    }
    let normal = if normal.len() > 1 { normal.trim_end_matches('/').to_string() } else { normal };
    if normal == "/" {
        return Err(RenderError::Flag {
            flag,
            problem: "\"/\" would answer every request to the root with the JWKS: give a path of its own such as /.well-known/uma-pep/jwks.json".into(),
        });
    }
    if normal != p {
        return Err(RenderError::Flag {
            flag,
            problem: format!("{p:?} is not in normal form: write {normal:?}"),
        });
    }
    Ok(normal)
}

fn cluster(name: &str, host: &str, port: u16, tls_sni: Option<&str>, ca_file: &str) -> Value {
    let is_ip = host.parse::<IpAddr>().is_ok();
    let mut c = json!({
        "name": name,
        "type": if is_ip { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}]
        }
    });
    if !is_ip {
        c["dns_lookup_family"] = json!("V4_PREFERRED");
    }
    if let Some(sni) = tls_sni {
        c["transport_socket"] = json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": sni,
                // Verify the AS: system trust store (the same policy as pepctl's own client).
                "common_tls_context": {"validation_context": {
                    "trusted_ca": {"filename": ca_file},
                    "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": sni}}]
                }}
            }
        });
    }
    c
}

/// A complete standalone Envoy configuration: listener, the wasm filter, AS and upstream
/// clusters (and pepctl's, when the filter polls it).
pub fn envoy_config(filter: &Value, common: &Common, args: &RenderArgs) -> Result<Value, RenderError> {
    let issuer_url = parse_url("issuer", common.issuer()?)?;
    let (as_host, as_port) = match &args.as_address {
        Some(a) => split_host_port("as-address", a)?,
        None => host_port(&issuer_url)
            .ok_or_else(|| RenderError::Flag { flag: "issuer", problem: "has no host".into() })?,
    };
    let as_tls = issuer_url.scheme() == "https";
    let as_cluster = filter["as_cluster"].as_str().unwrap_or("uma_as").to_string();
    let (up_host, up_port) = split_host_port("upstream", &args.upstream)?;
    let sni = issuer_url.host_str().map(str::to_string);
    let ca = args.envoy_ca_file.display().to_string();
    let mut clusters = vec![
        cluster(&as_cluster, &as_host, as_port, if as_tls { sni.as_deref() } else { None }, &ca),
        cluster("upstream", &up_host, up_port, None, &ca),
    ];
    if let (Some(sync), Some(cluster_name)) = (&args.sync_url, filter["resource_sync"]["cluster"].as_str()) {
        let url = parse_url("sync-url", sync)?;
        let (h, p) = host_port(&url)
            .ok_or_else(|| RenderError::Flag { flag: "sync-url", problem: "has no host".into() })?;
        let tls_host = url.host_str().map(str::to_string);
        clusters.push(cluster(
            cluster_name,
            &h,
            p,
            if url.scheme() == "https" { tls_host.as_deref() } else { None },
            &ca,
        ));
    }
    let wasm = wasm_path(&args.wasm)?;
    let wasm_filter = match &args.xds_address {
        None => json!({
            "name": "envoy.filters.http.wasm",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": WASM_PLUGIN_NAME,
                    "failure_policy": "FAIL_CLOSED",
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": filter.to_string()
                    },
                    "vm_config": {
                        "vm_id": WASM_VM_ID,
                        "runtime": WASM_RUNTIME,
                        "code": {"local": {"filename": wasm}}
                    }
                }
            }
        }),
        Some(address) => {
            let (h, p) = split_host_port("xds-address", address)?;
            let mut xds = cluster(XDS_CLUSTER, &h, p, None, &ca);
            // gRPC needs HTTP/2 to pepctl.
            xds["typed_extension_protocol_options"] = json!({
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}
                }
            });
            clusters.push(xds);
            json!({
                "name": args.xds_resource_name,
                // No default configuration: until pepctl has sent one the listener is not
                // ready (and afterwards a request without one would get 500), never unfiltered.
                "config_discovery": {
                    "config_source": {
                        "resource_api_version": "V3",
                        "api_config_source": {
                            "api_type": "GRPC",
                            "transport_api_version": "V3",
                            "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
                            "set_node_on_first_message_only": true
                        }
                    },
                    "type_urls": [WASM_HTTP_FILTER]
                }
            })
        }
    };
    let routes = upstream_routes(filter, args);
    let mut config = json!({
        "static_resources": {
            "listeners": [{
                "name": "uma_pep",
                "address": {"socket_address": {"address": args.listen_address, "port_value": args.listen_port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "uma_pep",
                        // Envoy and the filter agree on one path form; encoded slashes are
                        // refused by both (what is matched is what is forwarded).
                        "normalize_path": true,
                        "merge_slashes": true,
                        "path_with_escaped_slashes_action": "REJECT_REQUEST",
                        "route_config": {
                            "name": "upstream",
                            "virtual_hosts": [{"name": "upstream", "domains": ["*"],
                                "routes": routes}]
                        },
                        "http_filters": [
                            wasm_filter,
                            {
                                "name": "envoy.filters.http.router",
                                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                            }
                        ]
                    }
                }]}]
            }],
            "clusters": clusters
        }
    });
    if args.xds_address.is_some() {
        let id = match &args.node_id {
            Some(id) => id.clone(),
            None => {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                let host = host.trim();
                format!("{}-{}", if host.is_empty() { "envoy" } else { host }, args.listen_port)
            }
        };
        config["node"] = json!({"id": id, "cluster": "uma-pep"});
    }
    config["layered_runtime"] = as_answer_limit_runtime();
    if let Some(port) = args.admin_port {
        config["admin"] =
            json!({"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}});
    }
    Ok(config)
}

/// Envoy's runtime: its async client (what the filter's calls to the AS use) stops receiving an
/// answer larger than the filter reads, and the call fails (the filter denies). Envoy's default
/// is 32 MiB per call, held whole before the filter sees its size: a broken or hostile AS could
/// make Envoy hold that much per call in flight. The admin layer keeps `/runtime_modify` working.
pub fn as_answer_limit_runtime() -> Value {
    json!({"layers": [
        {"name": "uma_pep", "static_layer": {
            "http.async_response_buffer_limit": uma_pep_core::wire::MAX_AS_ANSWER_BYTES
        }},
        {"name": "admin", "admin_layer": {}}
    ]})
}

/// The listener's routes, all to the upstream. With the prefix stripped (`--strip-path-prefix`,
/// or `--eoepca-compat` with `--path-prefix`), the prefix itself and what is below it are
/// rewritten by Envoy's router (`prefix_rewrite`), after the filter has decided on the whole
/// path: the filter keeps the prefix in `:path`, so the matched prefix is still there when the
/// router rewrites it. `/pep` becomes `/`, `/pep/a` `/a`; `/pepx` is not under the prefix and,
/// like any other path, goes up unchanged.
fn upstream_routes(filter: &Value, args: &RenderArgs) -> Value {
    let catch_all = json!({"match": {"prefix": "/"}, "route": {"cluster": "upstream"}});
    let prefix = filter["path_prefix"].as_str().unwrap_or("").trim_end_matches('/');
    if !args.strips_path_prefix() || prefix.is_empty() {
        return json!([catch_all]);
    }
    json!([
        {"match": {"path": prefix}, "route": {"cluster": "upstream", "prefix_rewrite": "/"}},
        {"match": {"prefix": format!("{prefix}/")}, "route": {"cluster": "upstream", "prefix_rewrite": "/"}},
        catch_all,
    ])
}

/// The prefix is stripped by the router of the rendered Envoy: a filter configuration or a
/// WasmPlugin alone cannot do it (the filter keeps the prefix in what it forwards), so asking
/// for it there is refused with what to do instead.
fn check_strip_path_prefix(args: &RenderArgs) -> Result<(), RenderError> {
    if !args.strips_path_prefix() {
        return Ok(());
    }
    let problem = match args.target {
        Target::Envoy | Target::KeycloakClient => return Ok(()),
        Target::FilterConfig => "the filter keeps the prefix in what it forwards: strip it in the route that carries the filter (`prefix_rewrite`), or render `envoy`",
        Target::Istio => "the filter keeps the prefix in what it forwards: strip it in the VirtualService's route (`http[].rewrite.uri`), or drop --path-prefix from this render",
    };
    let flag = if args.strip_path_prefix { "strip-path-prefix" } else { "eoepca-compat" };
    Err(RenderError::Flag { flag, problem: problem.to_string() })
}

/// `--wasm` as Envoy opens it: Envoy resolves a relative filename against its own working
/// directory, not the one pepctl ran in, so a relative path is made absolute here (lexically:
/// the file need not exist on this machine, `..` and symlinks are kept).
fn wasm_path(wasm: &std::path::Path) -> Result<String, RenderError> {
    let abs = std::path::absolute(wasm).map_err(|e| RenderError::Flag {
        flag: "wasm",
        problem: format!(
            "{}: {e} (give the path of the filter's .wasm, e.g. /etc/envoy/uma_pep.wasm)",
            wasm.display()
        ),
    })?;
    let shown = abs.to_str().ok_or_else(|| RenderError::Flag {
        flag: "wasm",
        problem: format!("{} is not UTF-8: Envoy's configuration cannot name it", abs.display()),
    })?;
    if !abs.is_file() {
        tracing::warn!(wasm = shown, "the filter's module is not at this path here: Envoy refuses to start unless it is there on Envoy's machine (`make wasm` builds it; --wasm names another path)");
    }
    Ok(shown.to_string())
}

/// `--wasm-url` and `--wasm-sha256` checked as Istio will take them: a scheme its agent
/// fetches, a digest of 64 lower-case hex digits (the CRD's pattern), and for an `oci://` URL
/// pinned by digest the same digest in both (Istio compares `sha256` with the manifest digest).
fn wasm_url(args: &RenderArgs) -> Result<&str, RenderError> {
    let url = args.wasm_url.as_deref().ok_or_else(|| RenderError::Flag {
        flag: "wasm-url",
        problem: "is required for istio: the module's image, e.g. oci://registry.example.org/uma-pep@sha256:<digest> (docs/oci-image.md)".into(),
    })?;
    if !["oci://", "https://", "http://", "file://"].iter().any(|s| url.starts_with(s)) {
        return Err(RenderError::Flag {
            flag: "wasm-url",
            problem: format!("{url:?}: Istio fetches oci://, https://, http:// or file:// URLs"),
        });
    }
    if let Some(sha) = &args.wasm_sha256 {
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(RenderError::Flag {
                flag: "wasm-sha256",
                problem: format!("{sha:?} is not 64 lower-case hex digits (without a `sha256:` prefix)"),
            });
        }
        if let Some((_, pinned)) = url.strip_prefix("oci://").and_then(|r| r.rsplit_once("@sha256:")) {
            if pinned != sha {
                return Err(RenderError::Flag {
                    flag: "wasm-sha256",
                    problem: format!(
                        "{sha} differs from the digest the URL pins ({pinned}): Istio would refuse the image"
                    ),
                });
            }
        }
    }
    Ok(url)
}

/// An Istio WasmPlugin: AUTHZ phase (after Istio's authn, before RBAC), fail closed.
pub fn istio_wasm_plugin(filter: &Value, args: &RenderArgs) -> Result<Value, RenderError> {
    let url = wasm_url(args)?;
    let mut spec = json!({
        "selector": {"matchLabels": selector(args)?},
        "url": url,
        "phase": "AUTHZ",
        "failStrategy": "FAIL_CLOSE",
        "match": [{"mode": "SERVER"}],
        "pluginConfig": filter,
    });
    if let Some(sha) = &args.wasm_sha256 {
        spec["sha256"] = json!(sha);
    }
    Ok(json!({
        "apiVersion": "extensions.istio.io/v1alpha1",
        "kind": "WasmPlugin",
        "metadata": {"name": "uma-pep", "namespace": args.namespace},
        "spec": spec,
    }))
}

/// The ServiceEntry and DestinationRule that make `as_cluster` exist in the workloads' sidecars
/// and carry the filter's plain-HTTP AS calls over TLS that verifies the AS (its CA, SNI and
/// subject alt name): Istio's TLS origination. Both stay in the WasmPlugin's namespace
/// (`exportTo: .`) and the DestinationRule applies only to the selected workloads, so other
/// clients of the AS keep their own TLS.
pub fn istio_as_service_entry(
    filter: &Value,
    common: &Common,
    args: &RenderArgs,
) -> Result<Vec<Value>, RenderError> {
    let issuer = parse_url("issuer", common.issuer()?)?;
    if issuer.scheme() != "https" {
        return Err(RenderError::Flag {
            flag: "with-as-service-entry",
            problem: format!(
                "the issuer {} is not https: TLS origination needs an https AS (drop the flag for a development AS)",
                issuer.as_str()
            ),
        });
    }
    let (host, port) = host_port(&issuer)
        .ok_or_else(|| RenderError::Flag { flag: "issuer", problem: "has no host".into() })?;
    if host.parse::<IpAddr>().is_ok() {
        return Err(RenderError::Flag {
            flag: "with-as-service-entry",
            problem: format!("the issuer names the IP address {host}: the AS's certificate is verified for a DNS name, use the issuer's host name"),
        });
    }
    let cluster = format!("outbound|{port}||{host}");
    if filter["as_cluster"].as_str() != Some(cluster.as_str()) {
        return Err(RenderError::Flag {
            flag: "as-cluster",
            problem: format!(
                "{} is not the cluster the ServiceEntry makes ({cluster}): drop --as-cluster, or drop --with-as-service-entry and provide that cluster yourself",
                filter["as_cluster"]
            ),
        });
    }
    let labels = selector(args)?;
    let port_name = "http-uma-as";
    let mut se = json!({
        "hosts": [host],
        "exportTo": ["."],
        "location": "MESH_EXTERNAL",
        "resolution": "DNS",
        // HTTP: what the filter sends to the cluster; the DestinationRule adds the TLS.
        "ports": [{"number": port, "name": port_name, "protocol": "HTTP"}],
    });
    if let Some(a) = &args.as_address {
        let (h, p) = split_host_port("as-address", a)?;
        se["endpoints"] = json!([{"address": h, "ports": {port_name: p}}]);
    }
    let mut tls = json!({"mode": "SIMPLE", "sni": host, "subjectAltNames": [host]});
    match &args.as_credential_name {
        Some(secret) => tls["credentialName"] = json!(secret),
        None => {
            tls["caCertificates"] =
                json!(args.as_ca_certificates.as_deref().unwrap_or("/etc/ssl/certs/ca-certificates.crt"))
        }
    }
    let meta = json!({"name": "uma-pep-as", "namespace": args.namespace});
    Ok(vec![
        json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": meta, "spec": se}),
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": meta,
            "spec": {
                "host": host,
                "exportTo": ["."],
                "workloadSelector": {"matchLabels": labels},
                "trafficPolicy": {"portLevelSettings": [{"port": {"number": port}, "tls": tls}]},
            },
        }),
    ])
}

/// `--selector key=value` as matchLabels.
fn selector(args: &RenderArgs) -> Result<Value, RenderError> {
    let (key, value) = args.selector.split_once('=').ok_or_else(|| RenderError::Flag {
        flag: "selector",
        problem: format!("{:?} is not key=value", args.selector),
    })?;
    Ok(json!({key: value}))
}

/// `render istio`: the WasmPlugin, and with `--with-as-service-entry` the AS's ServiceEntry and
/// DestinationRule.
pub fn istio_manifests(
    filter: &Value,
    common: &Common,
    args: &RenderArgs,
) -> Result<Vec<Value>, RenderError> {
    let mut docs = vec![istio_wasm_plugin(filter, args)?];
    if args.with_as_service_entry {
        docs.extend(istio_as_service_entry(filter, common, args)?);
    }
    Ok(docs)
}

fn yaml(v: &Value) -> Result<String, RenderError> {
    serde_yaml_ng::to_string(v).map_err(|e| RenderError::Serialize(e.to_string()))
}

fn pretty(v: &Value) -> Result<String, RenderError> {
    serde_json::to_string_pretty(v).map(|s| s + "\n").map_err(|e| RenderError::Serialize(e.to_string()))
}

/// `render keycloak-client`: the Keycloak client of the PEP for an admin to create (see
/// `registration::keycloak_client_fragment`), with the client file's id and secret when there
/// is one, or a fresh secret written to the client file with `--write-client`.
pub fn keycloak_client(common: &Common, args: &RenderArgs) -> Result<String, RenderError> {
    let path = &common.client;
    let (client_id, secret) = if args.write_client {
        if path.exists() {
            return Err(RenderError::Flag {
                flag: "write-client",
                problem: format!(
                    "{} exists: drop --write-client to print its client, or pass another --client path",
                    path.display()
                ),
            });
        }
        let file = ClientFile {
            client_id: args.client_id.clone().unwrap_or_else(|| "uma-pep".to_string()),
            client_secret: random_token(32)?,
            issuer: Some(common.issuer()?.to_string()),
            profile: Some(AsProfile::Keycloak),
            registration_access_token: None,
            registration_client_uri: None,
            client_secret_expires_at: None,
        };
        file.save(path)?;
        tracing::info!(path = %path.display(), client_id = %file.client_id, "wrote the client file; create the printed client in Keycloak before using it");
        (file.client_id, Some(file.client_secret))
    } else if path.exists() {
        let file = ClientFile::load(path)?;
        if common.issuer.is_some() {
            file.check_for(path, common.issuer()?, AsProfile::Keycloak)?;
        }
        if args.client_id.as_ref().is_some_and(|id| *id != file.client_id) {
            return Err(RenderError::Flag {
                flag: "client-id",
                problem: format!(
                    "{} holds client {:?}: drop --client-id or pass another --client",
                    path.display(),
                    file.client_id
                ),
            });
        }
        (file.client_id, Some(file.client_secret))
    } else {
        tracing::info!(path = %path.display(), "no client file: after creating the client, write its id and secret (Credentials tab) there, or use --write-client");
        (args.client_id.clone().unwrap_or_else(|| "uma-pep".to_string()), None)
    };
    if secret.is_some() {
        tracing::warn!("the printed client holds its secret: keep it private");
    }
    pretty(&keycloak_client_fragment(&client_id, secret.as_deref()))
}

pub fn render(common: &Common, repo: &Repository, args: &RenderArgs) -> Result<String, RenderError> {
    if args.target == Target::KeycloakClient {
        return keycloak_client(common, args);
    }
    check_strip_path_prefix(args)?;
    let resources = repo.list()?;
    if resources.is_empty() && args.sync_url.is_none() {
        tracing::warn!(db = %common.db.display(), "the repository has no resources and there is no --sync-url: the filter protects nothing until it gets some");
    }
    let mut filter = filter_config(common, &resources, args)?;
    // The table's generation: a later configuration with an empty table of another generation
    // (a pepctl that lost its database) is refused by the filter. An empty table needs none
    // (replacing it unprotects nothing), and so renders the same from any empty repository.
    if !resources.is_empty() {
        filter["resource_generation"] = Value::String(repo.stamp()?.1);
    }
    match args.target {
        Target::FilterConfig => pretty(&filter),
        Target::Envoy if args.json => pretty(&envoy_config(&filter, common, args)?),
        Target::Envoy => yaml(&envoy_config(&filter, common, args)?),
        Target::Istio => {
            let mut docs = istio_manifests(&filter, common, args)?;
            if args.json {
                return match docs.len() {
                    1 => pretty(&docs.remove(0)),
                    // One JSON document for several objects: a List, as `kubectl get -o json` prints.
                    _ => pretty(&json!({"apiVersion": "v1", "kind": "List", "items": docs})),
                };
            }
            let mut out = String::from(
                "# pluginConfig holds the PEP's client secret: keep this manifest out of public repositories.\n",
            );
            for (i, d) in docs.iter().enumerate() {
                if i > 0 {
                    out.push_str("---\n");
                }
                out.push_str(&yaml(d)?);
            }
            Ok(out)
        }
        Target::KeycloakClient => keycloak_client(common, args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: RenderArgs,
    }

    fn setup(target: &str, extra: &[&str]) -> (tempfile::TempDir, Common, RenderArgs) {
        let dir = tempfile::tempdir().unwrap();
        let client = dir.path().join("client.json");
        std::fs::write(&client, r#"{"client_id":"pep","client_secret":"s3"}"#).unwrap();
        let common = Common {
            issuer: Some("https://as.example.org/realms/eo".into()),
            profile: AsProfile::Keycloak,
            client,
            db: dir.path().join("db"),
            ca_file: None,
            timeout: std::time::Duration::from_secs(1),
        };
        let mut argv = vec!["x", target];
        argv.extend_from_slice(extra);
        if target == "istio" && !extra.contains(&"--wasm-url") {
            argv.extend_from_slice(&["--wasm-url", "oci://r.example/uma-pep:1"]);
        }
        let args = Wrap::try_parse_from(argv).unwrap().args;
        (dir, common, args)
    }

    fn stored() -> Vec<StoredResource> {
        vec![StoredResource {
            id: "as-1".into(),
            name: "Alice".into(),
            uri: "/alice".into(),
            owner: "u1".into(),
            scopes: vec!["protected_get".into()],
            description: None,
            source: crate::repository::Source::File,
            as_expires_at: None,
            created_at: 0,
            updated_at: 0,
            ..crate::repository::StoredResource::default()
        }]
    }

    #[test]
    fn core_enum_flags_take_the_configuration_spellings() {
        for v in UNMATCHED_VALUES {
            let (_d, _c, args) = setup("filter-config", &["--unmatched", v]);
            assert_eq!(serde_json::to_value(args.unmatched.unwrap()).unwrap(), json!(v));
        }
        for v in CHALLENGE_STYLE_VALUES {
            let (_d, _c, args) = setup("filter-config", &["--challenge-style", v]);
            assert_eq!(serde_json::to_value(args.challenge_style.unwrap()).unwrap(), json!(v));
        }
        for p in [AsProfile::Uma2, AsProfile::Keycloak] {
            assert!(PROFILE_VALUES.contains(&serde_json::to_value(p).unwrap().as_str().unwrap()));
        }
        let bad = Wrap::try_parse_from(["x", "filter-config", "--challenge-style", "quoted"]).err().unwrap();
        assert!(bad.to_string().contains("compact"), "{bad}");
    }

    #[test]
    fn filter_config_has_every_configuration_key_and_parses() {
        let (_d, common, args) =
            setup("filter-config", &["--sync-url", "http://127.0.0.1:5576", "--unmatched", "deny"]);
        let v = filter_config(&common, &stored(), &args).unwrap();
        assert_eq!(v["issuer"], "https://as.example.org/realms/eo");
        assert_eq!(v["as_cluster"], "uma_as");
        assert_eq!(v["as_profile"], "keycloak");
        assert_eq!(v["client_id"], "pep");
        assert_eq!(v["unmatched"], "deny");
        assert_eq!(v["resources"][0]["id"], "as-1");
        assert_eq!(v["resources"][0]["uri"], "/alice");
        assert_eq!(v["resource_sync"]["cluster"], "pepctl");
        assert_eq!(v["resource_sync"]["path"], "/filter-config");
        let parsed = PepConfig::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.resources.find("/alice/x").unwrap().id, "as-1");
    }

    #[test]
    fn eoepca_compat_sets_the_old_wire_behaviour_and_flags_win() {
        let (_d, common, args) = setup("filter-config", &["--eoepca-compat"]);
        let v = filter_config(&common, &stored(), &args).unwrap();
        assert_eq!(v["challenge_style"], "compact");
        assert_eq!(v["rpt_max_uses"], EOEPCA_RPT_LIMIT_USES);
        assert!(v.get("path_prefix").is_none() && v.get("authorize_path").is_none());
        let parsed = PepConfig::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.rpt_max_uses, EOEPCA_RPT_LIMIT_USES);

        let (_d, common, args) = setup(
            "filter-config",
            &[
                "--eoepca-compat",
                "--rpt-max-uses",
                "5",
                "--challenge-style",
                "uma2",
                "--authorize-path",
                "/authorize",
            ],
        );
        let v = filter_config(&common, &stored(), &args).unwrap();
        assert_eq!((v["rpt_max_uses"].as_u64(), v["challenge_style"].as_str()), (Some(5), Some("uma2")));
        assert_eq!(v["authorize_path"], "/authorize");

        // Without the preset nothing changes.
        let (_d, common, args) = setup("filter-config", &[]);
        let v = filter_config(&common, &stored(), &args).unwrap();
        assert!(v.get("challenge_style").is_none() && v.get("rpt_max_uses").is_none());
    }

    #[test]
    fn the_prefix_is_stripped_by_the_rendered_route_only_when_asked() {
        let routes = |extra: &[&str]| {
            let (_d, common, args) = setup("envoy", extra);
            let f = filter_config(&common, &stored(), &args).unwrap();
            let e = envoy_config(&f, &common, &args).unwrap();
            let hcm =
                &e["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
            hcm["route_config"]["virtual_hosts"][0]["routes"].clone()
        };
        let kept = routes(&["--path-prefix", "/pep"]);
        assert_eq!(kept, json!([{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]));
        for extra in [
            &["--path-prefix", "/pep/", "--eoepca-compat"][..],
            &["--path-prefix", "/pep", "--strip-path-prefix"],
        ] {
            let r = routes(extra);
            assert_eq!(
                r[0],
                json!({"match": {"path": "/pep"}, "route": {"cluster": "upstream", "prefix_rewrite": "/"}})
            );
            assert_eq!(
                r[1],
                json!({"match": {"prefix": "/pep/"}, "route": {"cluster": "upstream", "prefix_rewrite": "/"}})
            );
            assert_eq!(r[2], json!({"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}));
        }
        assert_eq!(
            routes(&["--eoepca-compat"]).as_array().map(Vec::len),
            Some(1),
            "no prefix, nothing to strip"
        );
        assert!(Wrap::try_parse_from(["x", "envoy", "--strip-path-prefix"]).is_err(), "needs --path-prefix");
    }

    #[test]
    fn stripping_the_prefix_is_refused_where_only_the_filter_is_rendered() {
        for target in ["filter-config", "istio"] {
            for extra in [
                &["--path-prefix", "/pep", "--strip-path-prefix"][..],
                &["--path-prefix", "/pep", "--eoepca-compat"],
            ] {
                let (_d, _common, args) = setup(target, extra);
                let e = check_strip_path_prefix(&args).unwrap_err().to_string();
                assert!(e.contains("keeps the prefix"), "{target} {extra:?}: {e}");
            }
            let (_d, _common, args) = setup(target, &["--eoepca-compat"]);
            assert!(check_strip_path_prefix(&args).is_ok(), "{target}: no prefix, nothing to strip");
        }
    }

    #[test]
    fn envoy_config_wires_filter_and_clusters() {
        let (_d, common, args) =
            setup("envoy", &["--upstream", "127.0.0.1:9000", "--sync-url", "http://127.0.0.1:5576"]);
        let f = filter_config(&common, &stored(), &args).unwrap();
        let e = envoy_config(&f, &common, &args).unwrap();
        let hcm = &e["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        let wasm = &hcm["http_filters"][0]["typed_config"]["config"];
        assert_eq!(wasm["failure_policy"], "FAIL_CLOSED");
        let inner: Value = serde_json::from_str(wasm["configuration"]["value"].as_str().unwrap()).unwrap();
        assert_eq!(inner, f);
        let clusters = e["static_resources"]["clusters"].as_array().unwrap();
        let names: Vec<&str> = clusters.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["uma_as", "upstream", "pepctl"]);
        assert_eq!(clusters[0]["transport_socket"]["typed_config"]["sni"], "as.example.org");
        assert_eq!(clusters[0]["type"], "STRICT_DNS");
        assert_eq!(clusters[1]["type"], "STATIC");
        assert!(clusters[1].get("transport_socket").is_none());
        assert!(yaml(&e).unwrap().contains("envoy.filters.http.wasm"));
        // Envoy stops receiving an AS answer at the size the filter reads.
        let layer = &e["layered_runtime"]["layers"][0]["static_layer"];
        assert_eq!(layer["http.async_response_buffer_limit"], 1_048_576);
        assert!(e["layered_runtime"]["layers"][1].get("admin_layer").is_some());
    }

    #[test]
    fn istio_plugin_is_authz_and_fails_closed() {
        let (_d, common, args) = setup(
            "istio",
            &["--selector", "app=api", "--namespace", "apps", "--wasm-url", "oci://r.example/pep:1"],
        );
        let f = filter_config(&common, &stored(), &args).unwrap();
        assert_eq!(f["as_cluster"], "outbound|443||as.example.org");
        let p = istio_wasm_plugin(&f, &args).unwrap();
        assert_eq!(p["kind"], "WasmPlugin");
        assert_eq!(p["spec"]["phase"], "AUTHZ");
        assert_eq!(p["spec"]["failStrategy"], "FAIL_CLOSE");
        assert_eq!(p["spec"]["selector"]["matchLabels"]["app"], "api");
        assert_eq!(p["spec"]["pluginConfig"]["resources"][0]["id"], "as-1");
    }

    #[test]
    fn forward_key_adds_forward_with_the_keys_algorithm() {
        let key = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rsa.pem");
        let (_d, common, args) = setup("filter-config", &["--forward-key", key]);
        let v = filter_config(&common, &stored(), &args).unwrap();
        assert_eq!(v["forward"]["alg"], "RS256");
        assert!(v["forward"]["key_pem"].as_str().unwrap().contains("PRIVATE KEY"));
        let parsed = PepConfig::from_json(v.to_string().as_bytes()).unwrap();
        assert!(parsed.forward.is_some());
        let ed = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/ed25519.pem");
        let (_d, common, args) = setup("filter-config", &["--forward-key", ed, "--forward-alg", "eddsa"]);
        assert_eq!(filter_config(&common, &stored(), &args).unwrap()["forward"]["alg"], "EdDSA");
        let (_d, common, args) = setup("filter-config", &["--forward-key", key, "--forward-alg", "ES256"]);
        assert!(matches!(
            filter_config(&common, &stored(), &args),
            Err(RenderError::Flag { flag: "forward-alg", .. })
        ));
    }

    #[test]
    fn keycloak_client_writes_then_reuses_the_client_file() {
        let (dir, mut common, args) = setup("keycloak-client", &["--client-id", "pep-kc", "--write-client"]);
        common.client = dir.path().join("new-client.json");
        let printed: Value = serde_json::from_str(&keycloak_client(&common, &args).unwrap()).unwrap();
        let file = ClientFile::load(&common.client).unwrap();
        assert_eq!(printed["clientId"], "pep-kc");
        assert_eq!(printed["secret"], json!(file.client_secret));
        assert!(file.client_secret.len() >= 40);
        assert_eq!(file.profile, Some(AsProfile::Keycloak));
        assert_eq!(file.issuer.as_deref(), Some("https://as.example.org/realms/eo"));
        assert!(matches!(
            keycloak_client(&common, &args),
            Err(RenderError::Flag { flag: "write-client", .. })
        ));
        let (_d2, _, plain) = setup("keycloak-client", &[]);
        let again: Value = serde_json::from_str(&keycloak_client(&common, &plain).unwrap()).unwrap();
        assert_eq!(again, printed);
        common.client = dir.path().join("absent.json");
        let bare: Value = serde_json::from_str(&keycloak_client(&common, &plain).unwrap()).unwrap();
        assert_eq!(bare["clientId"], "uma-pep");
        assert!(bare.get("secret").is_none());
    }

    #[test]
    fn an_issuer_with_a_trailing_slash_is_refused_with_the_fix() {
        let (_d, mut common, args) = setup("filter-config", &[]);
        common.issuer = Some("https://as.example.org/realms/eo/".into());
        let err = filter_config(&common, &stored(), &args).unwrap_err().to_string();
        assert!(err.contains("--issuer") && err.contains("\"https://as.example.org/realms/eo\""), "{err}");
    }

    #[test]
    fn bad_flags_are_named() {
        let (_d, common, args) = setup("envoy", &["--upstream", "nohost"]);
        let f = filter_config(&common, &stored(), &args).unwrap();
        assert!(matches!(envoy_config(&f, &common, &args), Err(RenderError::Flag { flag: "upstream", .. })));
        let (_d, common, args) = setup("filter-config", &["--realm", "a\"b"]);
        let err = filter_config(&common, &stored(), &args).unwrap_err();
        assert!(matches!(err, RenderError::FlagRefused { flag: "realm", .. }), "{err}");
        assert!(err.to_string().starts_with("--realm: "), "{err}");
        // An enum flag is refused by the command line itself, naming the flag and its values.
        let bad = Wrap::try_parse_from(["x", "filter-config", "--challenge-style", "fancy"]).err().unwrap();
        assert!(bad.to_string().contains("--challenge-style") && bad.to_string().contains("uma2"), "{bad}");
    }

    #[test]
    fn access_tokens_flags_set_the_key_and_a_refusal_names_the_flag() {
        // No flag: no key (the filter's default, `uma`).
        let (_d, common, args) = setup("filter-config", &[]);
        assert!(filter_config(&common, &stored(), &args).unwrap().get("access_tokens").is_none());
        let (_d, common, args) = setup("filter-config", &["--access-tokens", "decide"]);
        let v = filter_config(&common, &stored(), &args).unwrap();
        assert_eq!(v["access_tokens"], json!({"mode": "decide"}));
        assert!(PepConfig::from_json(v.to_string().as_bytes()).unwrap().access_tokens.decide());
        // return_rpt: uma2 only (a Keycloak decision carries no RPT), and only in decide mode.
        let (_d, mut common, args) = setup("filter-config", &["--access-tokens", "decide", "--return-rpt"]);
        common.profile = AsProfile::Uma2;
        common.issuer = Some("https://as.example.org".into());
        let v = filter_config(&common, &stored(), &args).unwrap();
        assert_eq!(v["access_tokens"], json!({"mode": "decide", "return_rpt": true}));
        common.profile = AsProfile::Keycloak;
        common.issuer = Some("https://as.example.org/realms/eo".into());
        let err = filter_config(&common, &stored(), &args).unwrap_err();
        assert!(matches!(err, RenderError::FlagRefused { flag: "return-rpt", .. }), "{err}");
        assert!(err.to_string().starts_with("--return-rpt: "), "{err}");
        let (_d, mut common, args) = setup("filter-config", &["--return-rpt"]);
        common.profile = AsProfile::Uma2;
        common.issuer = Some("https://as.example.org".into());
        let err = filter_config(&common, &stored(), &args).unwrap_err();
        assert!(matches!(err, RenderError::FlagRefused { flag: "return-rpt", .. }), "{err}");
        for v in ACCESS_TOKEN_MODE_VALUES {
            let (_d, _c, args) = setup("filter-config", &["--access-tokens", v]);
            assert_eq!(serde_json::to_value(args.access_tokens.unwrap()).unwrap(), json!(v));
        }
        let bad = Wrap::try_parse_from(["x", "filter-config", "--access-tokens", "rpt"]).err().unwrap();
        assert!(bad.to_string().contains("--access-tokens") && bad.to_string().contains("decide"), "{bad}");
    }

    const RSA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rsa.pem");

    #[test]
    fn forward_header_and_jwks_path_are_rendered_and_parsed() {
        let (_d, common, args) = setup(
            "filter-config",
            &[
                "--forward-key",
                RSA,
                "--forward-header",
                "x-rpt-subject",
                "--jwks-path",
                "/.well-known/pep/jwks.json",
                "--forward-aud",
                "pepctl",
            ],
        );
        let v = filter_config(&common, &stored(), &args).unwrap();
        assert_eq!(v["forward"]["aud"], "pepctl");
        assert_eq!(v["forward"]["header"], "x-rpt-subject");
        assert_eq!(v["forward"]["jwks_path"], "/.well-known/pep/jwks.json");
        let parsed = PepConfig::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.forward_header(), "x-rpt-subject");
        assert_eq!(parsed.forward.unwrap().jwks_path.as_deref(), Some("/.well-known/pep/jwks.json"));
        // Without them the filter's defaults apply (nothing is written).
        let (_d, common, args) = setup("filter-config", &["--forward-key", RSA]);
        let v = filter_config(&common, &stored(), &args).unwrap();
        assert!(v["forward"].get("header").is_none() && v["forward"].get("jwks_path").is_none());
        assert!(v["forward"].get("aud").is_none());
    }

    #[test]
    fn forward_header_and_jwks_path_need_forward_key() {
        for extra in [["--forward-header", "x-a"], ["--jwks-path", "/jwks"], ["--forward-aud", "pepctl"]] {
            let mut argv = vec!["x", "filter-config"];
            argv.extend_from_slice(&extra);
            let err = Wrap::try_parse_from(argv).err().unwrap().to_string();
            assert!(err.contains("--forward-key"), "{err}");
        }
    }

    #[test]
    fn a_bad_forward_header_is_refused_naming_the_flag() {
        let (_d, common, args) =
            setup("filter-config", &["--forward-key", RSA, "--forward-header", "x user"]);
        let err = filter_config(&common, &stored(), &args).unwrap_err();
        assert!(matches!(err, RenderError::FlagRefused { flag: "forward-header", .. }), "{err}");
        let shown = err.to_string();
        assert!(shown.starts_with("--forward-header: ") && shown.contains("forward.header"), "{shown}");
    }

    #[test]
    fn a_jwks_path_not_in_normal_form_is_refused_with_the_spelling() {
        for (given, fix) in [
            ("/a/../jwks", Some("\"/jwks\"")),
            ("//jwks", Some("\"/jwks\"")),
            ("/jwks/", Some("\"/jwks\"")),
            ("/j%77ks", Some("\"/jwks\"")),
            ("jwks", None),
            ("/jwks?x=1", None),
            ("/", None),
            ("/a/%2Fjwks", None),
        ] {
            let (_d, common, args) = setup("filter-config", &["--forward-key", RSA, "--jwks-path", given]);
            let err = filter_config(&common, &stored(), &args).unwrap_err();
            assert!(matches!(err, RenderError::Flag { flag: "jwks-path", .. }), "{given}: {err}");
            if let Some(fix) = fix {
                assert!(err.to_string().contains(fix), "{given}: {err}");
            }
        }
    }

    #[test]
    fn wasm_is_absolute_in_the_envoy_config() {
        let (_d, common, args) = setup("envoy", &["--wasm", "build/uma_pep.wasm"]);
        let f = filter_config(&common, &stored(), &args).unwrap();
        let e = envoy_config(&f, &common, &args).unwrap();
        let hcm = &e["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        let file = hcm["http_filters"][0]["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"]
            .as_str()
            .unwrap();
        let expected = std::env::current_dir().unwrap().join("build/uma_pep.wasm");
        assert_eq!(file, expected.to_str().unwrap());
        // The default too, and an absolute path is kept as given.
        let (_d, common, args) = setup("envoy", &[]);
        let e = envoy_config(&filter_config(&common, &stored(), &args).unwrap(), &common, &args).unwrap();
        assert!(e.to_string().contains(&format!(
            "\"filename\":\"{}\"",
            std::env::current_dir().unwrap().join("target/wasm32-wasip1/release/uma_pep.wasm").display()
        )));
        assert_eq!(
            wasm_path(std::path::Path::new("/etc/envoy/uma_pep.wasm")).unwrap(),
            "/etc/envoy/uma_pep.wasm"
        );
        assert!(matches!(wasm_path(std::path::Path::new("")), Err(RenderError::Flag { flag: "wasm", .. })));
    }

    #[test]
    fn istio_service_entry_and_destination_rule_originate_verified_tls() {
        let (_d, common, args) =
            setup("istio", &["--selector", "app=api", "--namespace", "apps", "--with-as-service-entry"]);
        let f = filter_config(&common, &stored(), &args).unwrap();
        let docs = istio_manifests(&f, &common, &args).unwrap();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["WasmPlugin", "ServiceEntry", "DestinationRule"]);
        let (se, dr) = (&docs[1], &docs[2]);
        // The cluster Istio makes from the ServiceEntry is the filter's as_cluster.
        let port = &se["spec"]["ports"][0];
        assert_eq!(
            format!("outbound|{}||{}", port["number"], se["spec"]["hosts"][0].as_str().unwrap()),
            f["as_cluster"].as_str().unwrap()
        );
        assert_eq!(port["protocol"], "HTTP");
        assert_eq!(
            (se["metadata"]["namespace"].as_str(), dr["metadata"]["namespace"].as_str()),
            (Some("apps"), Some("apps"))
        );
        assert_eq!(se["spec"]["exportTo"], json!(["."]));
        assert_eq!(dr["spec"]["host"], "as.example.org");
        assert_eq!(dr["spec"]["workloadSelector"]["matchLabels"], json!({"app": "api"}));
        let pl = &dr["spec"]["trafficPolicy"]["portLevelSettings"][0];
        assert_eq!(pl["port"]["number"], 443);
        assert_eq!(
            pl["tls"],
            json!({"mode": "SIMPLE", "sni": "as.example.org", "subjectAltNames": ["as.example.org"],
                   "caCertificates": "/etc/ssl/certs/ca-certificates.crt"})
        );
        // A private CA from a Secret instead; --as-address becomes the endpoint.
        let (_d, common, args) = setup(
            "istio",
            &["--with-as-service-entry", "--as-credential-name", "as-ca", "--as-address", "kc.internal:8443"],
        );
        let f = filter_config(&common, &stored(), &args).unwrap();
        let docs = istio_manifests(&f, &common, &args).unwrap();
        let tls = &docs[2]["spec"]["trafficPolicy"]["portLevelSettings"][0]["tls"];
        assert_eq!(tls["credentialName"], "as-ca");
        assert!(tls.get("caCertificates").is_none());
        assert_eq!(
            docs[1]["spec"]["endpoints"],
            json!([{"address": "kc.internal", "ports": {"http-uma-as": 8443}}])
        );
        // Without the flag: the WasmPlugin only.
        let (_d, common, args) = setup("istio", &[]);
        let f = filter_config(&common, &stored(), &args).unwrap();
        assert_eq!(istio_manifests(&f, &common, &args).unwrap().len(), 1);
    }

    #[test]
    fn istio_service_entry_refuses_what_it_cannot_make_verified() {
        let (_d, common, args) =
            setup("istio", &["--with-as-service-entry", "--as-cluster", "outbound|443||other"]);
        let f = filter_config(&common, &stored(), &args).unwrap();
        assert!(matches!(
            istio_manifests(&f, &common, &args),
            Err(RenderError::Flag { flag: "as-cluster", .. })
        ));
        let (_d, mut common, args) = setup("istio", &["--with-as-service-entry"]);
        common.issuer = Some("http://127.0.0.1:9090".into());
        let f = filter_config(&common, &stored(), &args).unwrap();
        assert!(matches!(
            istio_manifests(&f, &common, &args),
            Err(RenderError::Flag { flag: "with-as-service-entry", .. })
        ));
        for extra in [&["--as-credential-name", "s"][..], &["--as-ca-certificates", "/ca.pem"][..]] {
            let mut argv = vec!["x", "istio", "--wasm-url", "oci://r/p:1"];
            argv.extend_from_slice(extra);
            assert!(Wrap::try_parse_from(argv).is_err(), "{extra:?} without --with-as-service-entry");
        }
        let argv = [
            "x",
            "istio",
            "--with-as-service-entry",
            "--as-credential-name",
            "s",
            "--as-ca-certificates",
            "/c",
        ];
        assert!(Wrap::try_parse_from(argv).is_err());
    }

    #[test]
    fn render_istio_prints_every_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open(&dir.path().join("db")).unwrap();
        let (_d, common, args) = setup("istio", &["--with-as-service-entry"]);
        let out = render(&common, &repo, &args).unwrap();
        assert!(out.starts_with("# pluginConfig holds the PEP's client secret"));
        assert_eq!(out.matches("\n---\n").count(), 2, "{out}");
        let (_d, common, args) = setup("istio", &["--with-as-service-entry", "--json"]);
        let list: Value = serde_json::from_str(&render(&common, &repo, &args).unwrap()).unwrap();
        assert_eq!(list["kind"], "List");
        assert_eq!(list["items"].as_array().unwrap().len(), 3);
        let (_d, common, args) = setup("istio", &["--json"]);
        let one: Value = serde_json::from_str(&render(&common, &repo, &args).unwrap()).unwrap();
        assert_eq!(one["kind"], "WasmPlugin");
    }

    #[test]
    fn istio_needs_a_real_wasm_url_and_a_digest_that_fits_it() {
        let err = Wrap::try_parse_from(["x", "istio"]).err().unwrap().to_string();
        assert!(err.contains("--wasm-url"), "{err}");
        assert!(Wrap::try_parse_from(["x", "envoy"]).is_ok());
        let digest = "0123456789abcdef".repeat(4);
        let pinned = format!("oci://r.example/uma-pep@sha256:{digest}");
        let (_d, common, args) = setup("istio", &["--wasm-url", &pinned, "--wasm-sha256", &digest]);
        let f = filter_config(&common, &stored(), &args).unwrap();
        let p = istio_wasm_plugin(&f, &args).unwrap();
        assert_eq!(
            (p["spec"]["url"].as_str(), p["spec"]["sha256"].as_str()),
            (Some(pinned.as_str()), Some(digest.as_str()))
        );
        let other = "f".repeat(64);
        let upper = digest.to_uppercase();
        let prefixed = format!("sha256:{digest}");
        for (url, sha, flag) in [
            ("ghcr.io/x/y:1", None, "wasm-url"),
            ("s3://b/k.wasm", None, "wasm-url"),
            (pinned.as_str(), Some(other.as_str()), "wasm-sha256"),
            ("oci://r/p:1", Some(upper.as_str()), "wasm-sha256"),
            ("oci://r/p:1", Some(prefixed.as_str()), "wasm-sha256"),
            ("https://a.example/pep.wasm", Some("abc"), "wasm-sha256"),
        ] {
            let mut extra = vec!["--wasm-url", url];
            if let Some(sha) = sha {
                extra.extend_from_slice(&["--wasm-sha256", sha]);
            }
            let (_d, common, args) = setup("istio", &extra);
            let f = filter_config(&common, &stored(), &args).unwrap();
            match istio_wasm_plugin(&f, &args) {
                Err(RenderError::Flag { flag: got, .. }) => assert_eq!(got, flag, "{url} {sha:?}"),
                other => panic!("{url} {sha:?}: {other:?}"),
            }
        }
    }
}
