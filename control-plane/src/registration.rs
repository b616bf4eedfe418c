//! The PEP's own client at the AS: RFC 7591 dynamic registration, and the `client.json` file
//! that keeps it. Registration is idempotent (an existing file is reused, so a restart never
//! makes a new client) and the file, which holds the secret, is created with mode 0600.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uma_pep_core::config::AsProfile;
use uma_pep_core::wire::AsError;
use url::Url;

use crate::pat::ClientCredentials;

#[derive(Debug, Error)]
pub enum RegistrationError {
    #[error("cannot read client file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("client file {path} is not valid: {problem}")]
    Invalid { path: String, problem: String },
    #[error("cannot write client file {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("the AS offers no registration_endpoint; register the client by hand and write {0}")]
    NoEndpoint(String),
    #[error("registration request failed: {0}")]
    Request(reqwest::Error),
    #[error("registration refused: {0}")]
    As(AsError),
}

/// `client.json`. The registration access token and URI are kept so an operator can manage
/// the client later (RFC 7592).
#[derive(Clone, Serialize, Deserialize)]
pub struct ClientFile {
    pub client_id: String,
    pub client_secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_client_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<u64>,
}

impl std::fmt::Debug for ClientFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientFile")
            .field("client_id", &self.client_id)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl ClientFile {
    pub fn credentials(&self) -> ClientCredentials {
        ClientCredentials { client_id: self.client_id.clone(), client_secret: self.client_secret.clone() }
    }

    pub fn load(path: &Path) -> Result<Self, RegistrationError> {
        let shown = path.display().to_string();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %shown, "the client file (it holds the secret) is readable by others; chmod 600 it");
                }
            }
        }
        let bytes =
            std::fs::read(path).map_err(|source| RegistrationError::Read { path: shown.clone(), source })?;
        Self::parse(&bytes).map_err(|problem| RegistrationError::Invalid { path: shown, problem })
    }

    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let file: ClientFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if file.client_id.trim().is_empty() {
            return Err("client_id is empty".into());
        }
        if file.client_secret.is_empty() {
            return Err("client_secret is empty".into());
        }
        Ok(file)
    }

    /// Writes the file atomically (temp file + rename) with mode 0600 from its creation, so
    /// the secret is never readable by others, not even for an instant.
    pub fn save(&self, path: &Path) -> Result<(), RegistrationError> {
        let shown = path.display().to_string();
        let write_error = |source| RegistrationError::Write { path: shown.clone(), source };
        let json = serde_json::to_vec_pretty(self).map_err(|e| write_error(std::io::Error::other(e)))?;
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let file_name =
            path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "client.json".into());
        let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let result = (|| {
            let mut f = options.open(&tmp)?;
            f.write_all(&json)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(write_error)
    }
}

/// The RFC 7591 request: a confidential client that only needs `client_credentials` and the
/// `uma_protection` scope. Keycloak's resource servers also need their authorization services
/// (asked for with its client representation field), which other ASs ignore.
pub fn registration_body(profile: AsProfile, client_name: &str) -> serde_json::Value {
    let mut body = serde_json::json!({
        "client_name": client_name,
        "grant_types": ["client_credentials"],
        "response_types": [],
        "redirect_uris": [],
        "token_endpoint_auth_method": "client_secret_basic",
        "scope": "uma_protection",
    });
    if profile == AsProfile::Keycloak {
        if let Some(map) = body.as_object_mut() {
            map.insert("authorizationServicesEnabled".into(), serde_json::Value::Bool(true));
            map.insert("serviceAccountsEnabled".into(), serde_json::Value::Bool(true));
        }
    }
    body
}

/// Parses the registration answer (`201`, or `200` from some servers).
pub fn parse_registration(status: u16, body: &[u8], issuer: &str) -> Result<ClientFile, RegistrationError> {
    if status != 201 && status != 200 {
        return Err(RegistrationError::As(AsError::from_status(status, body)));
    }
    #[derive(Deserialize)]
    struct Answer {
        client_id: String,
        #[serde(default)]
        client_secret: Option<String>,
        #[serde(default)]
        registration_access_token: Option<String>,
        #[serde(default)]
        registration_client_uri: Option<String>,
        #[serde(default)]
        client_secret_expires_at: Option<u64>,
    }
    let a: Answer = serde_json::from_slice(body)
        .map_err(|e| RegistrationError::As(AsError::Garbage(format!("registration answer: {e}"))))?;
    let secret = a.client_secret.filter(|s| !s.is_empty()).ok_or_else(|| {
        RegistrationError::As(AsError::Garbage("registration answer has no client_secret".into()))
    })?;
    Ok(ClientFile {
        client_id: a.client_id,
        client_secret: secret,
        issuer: Some(issuer.to_string()),
        registration_access_token: a.registration_access_token,
        registration_client_uri: a.registration_client_uri,
        client_secret_expires_at: a.client_secret_expires_at.filter(|e| *e != 0),
    })
}

/// What `register-client` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientOutcome {
    Reused,
    Created,
}

/// Reuses `out` when it holds a client, else registers one and writes it.
pub async fn register_client(
    client: &reqwest::Client,
    endpoint: Option<&Url>,
    issuer: &str,
    profile: AsProfile,
    client_name: &str,
    initial_access_token: Option<&str>,
    out: &Path,
) -> Result<(ClientFile, ClientOutcome), RegistrationError> {
    if out.exists() {
        let file = ClientFile::load(out)?;
        return Ok((file, ClientOutcome::Reused));
    }
    let endpoint = endpoint.ok_or_else(|| RegistrationError::NoEndpoint(out.display().to_string()))?;
    let mut request = client.post(endpoint.clone()).json(&registration_body(profile, client_name));
    if let Some(iat) = initial_access_token {
        request = request.bearer_auth(iat);
    }
    let response = request.send().await.map_err(RegistrationError::Request)?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(RegistrationError::Request)?;
    let file = parse_registration(status, &body, issuer)?;
    file.save(out)?;
    tracing::info!(client_id = %file.client_id, path = %out.display(), "registered the PEP client");
    Ok((file, ClientOutcome::Created))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_asks_for_client_credentials_and_uma_protection() {
        let b = registration_body(AsProfile::Uma2, "pep");
        assert_eq!(b["grant_types"], serde_json::json!(["client_credentials"]));
        assert_eq!(b["scope"], "uma_protection");
        assert!(b.get("authorizationServicesEnabled").is_none());
        let k = registration_body(AsProfile::Keycloak, "pep");
        assert_eq!(k["authorizationServicesEnabled"], true);
    }

    #[test]
    fn parses_answers_and_refusals() {
        let f = parse_registration(
            201,
            br#"{"client_id":"c1","client_secret":"s1","client_secret_expires_at":0,"registration_access_token":"rat"}"#,
            "http://127.0.0.1/x",
        )
        .unwrap();
        assert_eq!(f.client_id, "c1");
        assert_eq!(f.client_secret_expires_at, None);
        assert!(!format!("{f:?}").contains("s1"));
        assert!(!format!("{f:?}").contains("rat"));
        assert!(parse_registration(201, br#"{"client_id":"c1"}"#, "i").is_err());
        assert!(matches!(
            parse_registration(400, br#"{"error":"invalid_client_metadata"}"#, "i"),
            Err(RegistrationError::As(AsError::Status { status: 400, .. }))
        ));
    }

    #[test]
    fn saved_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.json");
        let f = ClientFile {
            client_id: "c".into(),
            client_secret: "s".into(),
            issuer: None,
            registration_access_token: None,
            registration_client_uri: None,
            client_secret_expires_at: None,
        };
        f.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let back = ClientFile::load(&path).unwrap();
        assert_eq!(back.client_id, "c");
        std::fs::write(&path, r#"{"client_id":"","client_secret":"x"}"#).unwrap();
        assert!(matches!(ClientFile::load(&path), Err(RegistrationError::Invalid { .. })));
    }
}
