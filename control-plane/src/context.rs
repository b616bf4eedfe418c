//! The connection to the AS assembled from the common flags: HTTP client (TLS policy),
//! discovery, the PAT source and the resource registration client.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use uma_pep_core::config::AsProfile;

use crate::discovery::{discover, DiscoveryError, Endpoints};
use crate::pat::PatSource;
use crate::registration::{ClientFile, RegistrationError};
use crate::resource_set::ResourceSetClient;
use crate::transport::{build_client, TransportError};

#[derive(Debug, Error)]
pub enum ContextError {
    #[error("--issuer (or PEPCTL_ISSUER) is required for this command")]
    NoIssuer,
    #[error(
        "--issuer (PEPCTL_ISSUER) {given:?} ends with '/': write {fixed:?}. The issuer is compared byte for \
         byte with the `issuer` of the AS's discovery document, which has no trailing slash (Keycloak: \
         {{base}}/realms/{{realm}}, Gluu/Janssen: https://host); the filter refuses it too"
    )]
    IssuerSlash { given: String, fixed: String },
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error(transparent)]
    Client(#[from] RegistrationError),
}

/// The common flags, as parsed.
#[derive(Debug, Clone)]
pub struct Common {
    pub issuer: Option<String>,
    pub profile: AsProfile,
    pub client: PathBuf,
    pub db: PathBuf,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

impl Common {
    pub fn http(&self) -> Result<reqwest::Client, TransportError> {
        build_client(self.ca_file.as_deref(), self.timeout)
    }

    /// The issuer as configured. One with a trailing slash is refused here, before any call:
    /// discovery would name another issuer and every request of the filter would fail.
    pub fn issuer(&self) -> Result<&str, ContextError> {
        let issuer = self.issuer.as_deref().filter(|s| !s.is_empty()).ok_or(ContextError::NoIssuer)?;
        if issuer.ends_with('/') {
            return Err(ContextError::IssuerSlash {
                given: issuer.to_string(),
                fixed: issuer.trim_end_matches('/').to_string(),
            });
        }
        Ok(issuer)
    }

    /// The client file (`--client`), refused when it was written for another issuer or
    /// dialect (see `ClientFile::check_for`).
    pub fn client_file(&self) -> Result<ClientFile, ContextError> {
        let file = ClientFile::load(&self.client)?;
        file.check_for(&self.client, self.issuer()?, self.profile)?;
        Ok(file)
    }

    pub async fn endpoints(&self, http: &reqwest::Client) -> Result<Endpoints, ContextError> {
        Ok(discover(http, self.issuer()?).await?)
    }
}

/// Everything a protection-API command needs.
pub struct AsContext {
    pub http: reqwest::Client,
    pub endpoints: Endpoints,
    pub client: ClientFile,
    pub pat: Arc<PatSource>,
    pub resource_set: Arc<ResourceSetClient>,
    pub profile: AsProfile,
}

impl AsContext {
    pub async fn connect(common: &Common) -> Result<Self, ContextError> {
        Self::with_client(common, common.client_file()?).await
    }

    /// With a client file already loaded and checked (`serve` retries discovery with it).
    pub async fn with_client(common: &Common, client: ClientFile) -> Result<Self, ContextError> {
        let http = common.http()?;
        let endpoints = common.endpoints(&http).await?;
        let pat = Arc::new(PatSource::new(
            http.clone(),
            endpoints.token.clone(),
            client.credentials(),
            common.profile,
        ));
        let resource_set = Arc::new(ResourceSetClient::new(
            http.clone(),
            endpoints.resource_registration.clone(),
            common.profile,
            pat.clone(),
        ));
        Ok(Self { http, endpoints, client, pat, resource_set, profile: common.profile })
    }
}
