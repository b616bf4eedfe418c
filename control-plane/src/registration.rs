//! The PEP's own client at the AS: RFC 7591 dynamic registration, and the `client.json` file
//! that keeps it. Registration is idempotent (an existing file is reused, so a restart never
//! makes a new client) and the file, which holds the secret, is created with mode 0600.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use thiserror::Error;
use uma_pep_core::config::AsProfile;
use url::Url;

use crate::discovery::Endpoints;
use crate::pat::ClientCredentials;
use crate::refusal::Refusal;
use crate::transport::{checked_url, NetError, TransportError};

#[derive(Debug, Error)]
pub enum RegistrationError {
    #[error("cannot read client file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("client file {path} is not valid: {problem}")]
    Invalid { path: String, problem: String },
    #[error("cannot write client file {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error(
        "client file {path} was registered at issuer {file_issuer:?}, not at --issuer (PEPCTL_ISSUER) \
         {issuer:?}: one AS's client is never used at another. Use a different --client (PEPCTL_CLIENT) path \
         for this AS, or delete {path} and run `pepctl register-client` again"
    )]
    ForeignIssuer { path: String, file_issuer: String, issuer: String },
    #[error(
        "client file {path} was registered for --profile {file_profile}, not {profile}: use a different \
         --client (PEPCTL_CLIENT) path, fix --profile (PEPCTL_PROFILE), or delete {path} and run \
         `pepctl register-client` again"
    )]
    ForeignProfile { path: String, file_profile: String, profile: String },
    #[error("the AS offers no registration_endpoint; register the client by hand and write {0}")]
    NoEndpoint(String),
    #[error(
        "Keycloak refuses anonymous client registration (its default \"Trusted Hosts\" policy answers 403): \
         pass --initial-access-token (or PEPCTL_INITIAL_ACCESS_TOKEN). A realm admin creates one in the admin \
         console (Clients → Initial access token → Create, count 1) or with `kcadm.sh create \
         clients-initial-access -r REALM -s count=1 -s expiration=3600`. Without one, create the client \
         yourself from `pepctl render keycloak-client`"
    )]
    NeedsInitialAccessToken,
    #[error("registration endpoint: {0}")]
    Url(#[from] TransportError),
    #[error("registration request failed: {0}")]
    Request(#[source] NetError),
    #[error("registration refused: {0}")]
    Refused(String),
    #[error("registration answer unusable: {0}")]
    Garbage(String),
    #[error(
        "the AS registered client {client_id} without the uma_protection scope (granted: {granted:?}): Gluu and \
         Janssen grant a dynamically registered client only the scopes marked \"Allow for dynamic \
         registration\" and silently drop the rest. Turn that switch on for the scope uma_protection (admin UI: \
         Scopes → uma_protection), delete client {client_id} at the AS, and run `pepctl register-client` again. \
         {path} was not written"
    )]
    NoProtectionScope { client_id: String, granted: String, path: String },
    #[error(
        "Keycloak created client {client_id} but not as a resource server (authorizationServicesEnabled is \
         false; is the authorization feature off?): delete it in the admin console, enable authorization \
         services, and run `pepctl register-client` again. {path} was not written"
    )]
    NotResourceServer { client_id: String, path: String },
    #[error("cannot get random bytes from the OS: {0}")]
    Random(String),
}

/// `client.json`. The registration access token and URI are kept so an operator can manage
/// the client later (RFC 7592).
#[derive(Clone, Serialize, Deserialize)]
pub struct ClientFile {
    pub client_id: String,
    pub client_secret: String,
    /// The issuer the client was registered at; a file for another issuer is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The dialect it was registered for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<AsProfile>,
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
            .field("profile", &self.profile)
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

    /// Refuses a file written for another issuer or dialect: its client does not exist there,
    /// and every call would fail with a puzzling `invalid_client`. A file that does not say
    /// (written by hand, or by an older pepctl) is used, with a warning.
    pub fn check_for(&self, path: &Path, issuer: &str, profile: AsProfile) -> Result<(), RegistrationError> {
        let shown = path.display().to_string();
        match &self.issuer {
            Some(i) if i != issuer => {
                return Err(RegistrationError::ForeignIssuer {
                    path: shown,
                    file_issuer: i.clone(),
                    issuer: issuer.to_string(),
                })
            }
            Some(_) => {}
            None => tracing::warn!(
                path = %shown,
                issuer,
                "the client file does not say which issuer it was registered at (an older or hand-written file): using it for this issuer; add \"issuer\" to it to have this checked"
            ),
        }
        match self.profile {
            Some(p) if p != profile => Err(RegistrationError::ForeignProfile {
                path: shown,
                file_profile: profile_name(p).to_string(),
                profile: profile_name(profile).to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// The file at `path` when there is one, checked for `issuer` and `profile`: reusing it is
    /// what makes `register-client` idempotent.
    pub fn reuse(path: &Path, issuer: &str, profile: AsProfile) -> Result<Option<Self>, RegistrationError> {
        if !path.exists() {
            return Ok(None);
        }
        let file = Self::load(path)?;
        file.check_for(path, issuer, profile)?;
        Ok(Some(file))
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

pub fn profile_name(p: AsProfile) -> &'static str {
    match p {
        AsProfile::Uma2 => "uma2",
        AsProfile::Keycloak => "keycloak",
    }
}

/// `n` random bytes from the OS, base64url: client ids and secrets pepctl makes up.
pub fn random_token(n: usize) -> Result<String, RegistrationError> {
    use base64::Engine as _;
    let mut bytes = vec![0u8; n];
    getrandom::getrandom(&mut bytes).map_err(|e| RegistrationError::Random(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// A fresh client id when the operator names none (Keycloak needs one; it must be new).
pub fn generated_client_id() -> Result<String, RegistrationError> {
    let token = random_token(6)?;
    Ok(format!("uma-pep-{}", token.to_ascii_lowercase().replace(['-', '_'], "x")))
}

/// Keycloak's `ClientRepresentation` of the PEP: a confidential client with a service account
/// and authorization services (that is what makes it a resource server and grants its
/// service account the `uma_protection` role, `RepresentationToModel.createResourceServer`),
/// and no browser or password flow. The `default` registration provider and the admin API
/// both take it.
pub fn keycloak_client_representation(client_id: &str) -> Value {
    json!({
        "clientId": client_id,
        "name": client_id,
        "publicClient": false,
        "clientAuthenticatorType": "client-secret",
        "serviceAccountsEnabled": true,
        "authorizationServicesEnabled": true,
        "standardFlowEnabled": false,
        "directAccessGrantsEnabled": false,
    })
}

/// What `pepctl render keycloak-client` prints: the representation above for an admin to
/// import (admin console "Import client", `kcadm.sh create clients -f`, or an entry of a realm
/// file's `clients`), with remote resource management on, and the secret when one is given.
pub fn keycloak_client_fragment(client_id: &str, secret: Option<&str>) -> Value {
    let mut v = keycloak_client_representation(client_id);
    v["enabled"] = json!(true);
    v["protocol"] = json!("openid-connect");
    v["bearerOnly"] = json!(false);
    v["implicitFlowEnabled"] = json!(false);
    v["authorizationSettings"] =
        json!({"allowRemoteResourceManagement": true, "policyEnforcementMode": "ENFORCING"});
    if let Some(s) = secret {
        v["secret"] = json!(s);
    }
    v
}

/// Keycloak's `default` registration provider: `{issuer}/clients-registrations/default`. (The
/// `openid-connect` provider that discovery names cannot make a resource server, and refuses
/// `scope=uma_protection` under its "Allowed Client Scopes" policy.)
pub fn keycloak_registration_url(issuer: &str) -> Result<Url, TransportError> {
    checked_url("Keycloak registration endpoint", &format!("{issuer}/clients-registrations/default"))
}

/// The RFC 7591 request to Gluu/Janssen: a confidential client that only needs
/// `client_credentials` and the `uma_protection` scope.
pub fn uma2_registration_body(client_name: &str) -> Value {
    json!({
        "client_name": client_name,
        "grant_types": ["client_credentials"],
        "response_types": [],
        "redirect_uris": [],
        "token_endpoint_auth_method": "client_secret_basic",
        "scope": "uma_protection",
    })
}

fn garbage(e: serde_json::Error) -> RegistrationError {
    RegistrationError::Garbage(e.to_string())
}

/// What to do about a refused registration, for the refusals Keycloak is known to give.
fn keycloak_hint(r: &Refusal) -> &'static str {
    match (r.status, r.error.as_deref()) {
        (401, _) => {
            "; the initial access token is unknown, expired or used up (each may create only `count` clients): \
             ask a realm admin for a new one"
        }
        (403, _) => {
            "; a client registration policy refused it (admin console: Clients → Client registration → \
             Authenticated access policies), or create the client from `pepctl render keycloak-client`"
        }
        (400, Some("invalid_client_metadata")) => {
            "; if the client id is in use, pick another --client-name, or write that client's id and secret \
             into the client file"
        }
        _ => "",
    }
}

/// Parses Keycloak's `201` (a `ClientRepresentation`, camelCase). The registration client
/// URI is the answer's `Location` (`{endpoint}/{clientId}`).
pub fn parse_keycloak_registration(
    status: u16,
    body: &[u8],
    location: Option<&str>,
    endpoint: &Url,
    issuer: &str,
    out: &Path,
) -> Result<ClientFile, RegistrationError> {
    if status != 201 && status != 200 {
        let r = Refusal::parse(status, body);
        return Err(RegistrationError::Refused(format!("{r}{}", keycloak_hint(&r))));
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer {
        client_id: String,
        #[serde(default)]
        secret: Option<String>,
        #[serde(default)]
        registration_access_token: Option<String>,
        #[serde(default)]
        authorization_services_enabled: Option<bool>,
    }
    let a: Answer = serde_json::from_slice(body).map_err(garbage)?;
    if a.authorization_services_enabled == Some(false) {
        return Err(RegistrationError::NotResourceServer {
            client_id: a.client_id,
            path: out.display().to_string(),
        });
    }
    let secret = a
        .secret
        .filter(|s| !s.is_empty())
        .ok_or_else(|| RegistrationError::Garbage("Keycloak's answer has no secret".into()))?;
    let uri = location.map(str::to_string).unwrap_or_else(|| format!("{endpoint}/{}", a.client_id));
    Ok(ClientFile {
        client_id: a.client_id,
        client_secret: secret,
        issuer: Some(issuer.to_string()),
        profile: Some(AsProfile::Keycloak),
        registration_access_token: a.registration_access_token,
        registration_client_uri: Some(uri),
        client_secret_expires_at: None,
    })
}

/// Parses an RFC 7591 answer (`201`, or `200` from some servers) of Gluu/Janssen and checks
/// that `uma_protection` was granted: those servers drop, without an error, every scope not
/// allowed for dynamic registration, and a client without it can never get a usable PAT.
pub fn parse_uma2_registration(
    status: u16,
    body: &[u8],
    issuer: &str,
    out: &Path,
) -> Result<ClientFile, RegistrationError> {
    if status != 201 && status != 200 {
        return Err(RegistrationError::Refused(Refusal::parse(status, body).explained(AsProfile::Uma2)));
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scope {
        Text(String),
        List(Vec<String>),
    }
    #[derive(Deserialize)]
    struct Answer {
        client_id: String,
        #[serde(default)]
        client_secret: Option<String>,
        #[serde(default)]
        scope: Option<Scope>,
        #[serde(default)]
        registration_access_token: Option<String>,
        #[serde(default)]
        registration_client_uri: Option<String>,
        #[serde(default)]
        client_secret_expires_at: Option<u64>,
    }
    let a: Answer = serde_json::from_slice(body).map_err(garbage)?;
    let granted: Vec<String> = match a.scope {
        Some(Scope::Text(t)) => t.split_whitespace().map(str::to_string).collect(),
        Some(Scope::List(l)) => l,
        None => Vec::new(),
    };
    if !granted.iter().any(|s| s == "uma_protection") {
        return Err(RegistrationError::NoProtectionScope {
            client_id: a.client_id,
            granted: granted.join(" "),
            path: out.display().to_string(),
        });
    }
    let secret = a
        .client_secret
        .filter(|s| !s.is_empty())
        .ok_or_else(|| RegistrationError::Garbage("registration answer has no client_secret".into()))?;
    Ok(ClientFile {
        client_id: a.client_id,
        client_secret: secret,
        issuer: Some(issuer.to_string()),
        profile: Some(AsProfile::Uma2),
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

/// What `register-client` asks for.
#[derive(Debug, Clone, Copy)]
pub struct ClientRequest<'a> {
    pub issuer: &'a str,
    pub profile: AsProfile,
    /// Keycloak: the `clientId` (default: generated); Gluu/Janssen: `client_name`.
    pub client_name: Option<&'a str>,
    pub initial_access_token: Option<&'a str>,
}

/// Registers the PEP's client in the dialect's way and writes `out` (only when the client is
/// usable: a Gluu client without `uma_protection` is not written). Callers reuse an existing
/// file first (`ClientFile::reuse`).
pub async fn register_client(
    client: &reqwest::Client,
    endpoints: &Endpoints,
    request: ClientRequest<'_>,
    out: &Path,
) -> Result<ClientFile, RegistrationError> {
    let file = match request.profile {
        AsProfile::Keycloak => {
            let iat = request.initial_access_token.ok_or(RegistrationError::NeedsInitialAccessToken)?;
            let endpoint = keycloak_registration_url(request.issuer)?;
            let client_id = match request.client_name {
                Some(n) => n.to_string(),
                None => generated_client_id()?,
            };
            let response = client
                .post(endpoint.clone())
                .bearer_auth(iat)
                .json(&keycloak_client_representation(&client_id))
                .send()
                .await
                .map_err(|e| RegistrationError::Request(e.into()))?;
            let status = response.status().as_u16();
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = response.bytes().await.map_err(|e| RegistrationError::Request(e.into()))?;
            parse_keycloak_registration(status, &body, location.as_deref(), &endpoint, request.issuer, out)?
        }
        AsProfile::Uma2 => {
            let endpoint = endpoints
                .registration
                .as_ref()
                .ok_or_else(|| RegistrationError::NoEndpoint(out.display().to_string()))?;
            let mut call = client
                .post(endpoint.clone())
                .json(&uma2_registration_body(request.client_name.unwrap_or("uma-pep")));
            if let Some(iat) = request.initial_access_token {
                call = call.bearer_auth(iat);
            }
            let response = call.send().await.map_err(|e| RegistrationError::Request(e.into()))?;
            let status = response.status().as_u16();
            let body = response.bytes().await.map_err(|e| RegistrationError::Request(e.into()))?;
            parse_uma2_registration(status, &body, request.issuer, out)?
        }
    };
    file.save(out)?;
    tracing::info!(client_id = %file.client_id, path = %out.display(), "registered the PEP client");
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(issuer: Option<&str>, profile: Option<AsProfile>) -> ClientFile {
        ClientFile {
            client_id: "c".into(),
            client_secret: "s".into(),
            issuer: issuer.map(str::to_string),
            profile,
            registration_access_token: None,
            registration_client_uri: None,
            client_secret_expires_at: None,
        }
    }

    #[test]
    fn keycloak_representation_makes_a_confidential_resource_server() {
        let k = keycloak_client_representation("pep");
        assert_eq!(k["clientId"], "pep");
        assert_eq!(k["publicClient"], false);
        assert_eq!(k["serviceAccountsEnabled"], true);
        assert_eq!(k["authorizationServicesEnabled"], true);
        assert_eq!(k["standardFlowEnabled"], false);
        assert_eq!(k["directAccessGrantsEnabled"], false);
        assert_eq!(k["clientAuthenticatorType"], "client-secret");
        // Keycloak's ClientRepresentation is camelCase: no RFC 7591 field, no scope.
        for key in ["scope", "client_name", "grant_types"] {
            assert!(k.get(key).is_none(), "{key}");
        }
        let f = keycloak_client_fragment("pep", Some("sec"));
        assert_eq!(f["secret"], "sec");
        assert_eq!(f["authorizationSettings"]["allowRemoteResourceManagement"], true);
        assert!(keycloak_client_fragment("pep", None).get("secret").is_none());
        assert_eq!(
            keycloak_registration_url("http://127.0.0.1:8080/realms/eo").unwrap().as_str(),
            "http://127.0.0.1:8080/realms/eo/clients-registrations/default"
        );
        let id = generated_client_id().unwrap();
        assert!(id.starts_with("uma-pep-") && id.len() == 16, "{id}");
        assert_ne!(id, generated_client_id().unwrap());
    }

    #[test]
    fn uma2_body_asks_for_client_credentials_and_uma_protection() {
        let b = uma2_registration_body("pep");
        assert_eq!(b["grant_types"], json!(["client_credentials"]));
        assert_eq!(b["scope"], "uma_protection");
        assert!(b.get("authorizationServicesEnabled").is_none());
    }

    #[test]
    fn keycloak_answers_and_refusals() {
        let out = Path::new("client.json");
        let ep = keycloak_registration_url("http://127.0.0.1:1/realms/r").unwrap();
        let f = parse_keycloak_registration(
            201,
            br#"{"id":"u-1","clientId":"pep","secret":"s1","registrationAccessToken":"rat","authorizationServicesEnabled":true}"#,
            None,
            &ep,
            "http://127.0.0.1:1/realms/r",
            out,
        )
        .unwrap();
        assert_eq!((f.client_id.as_str(), f.client_secret.as_str()), ("pep", "s1"));
        assert_eq!(f.profile, Some(AsProfile::Keycloak));
        assert_eq!(
            f.registration_client_uri.as_deref(),
            Some("http://127.0.0.1:1/realms/r/clients-registrations/default/pep")
        );
        assert!(!format!("{f:?}").contains("s1") && !format!("{f:?}").contains("rat"));
        let refused = parse_keycloak_registration(
            401,
            br#"{"error":"invalid_token","error_description":"Initial Access Token not found"}"#,
            None,
            &ep,
            "i",
            out,
        )
        .unwrap_err()
        .to_string();
        assert!(
            refused.contains("Initial Access Token not found") && refused.contains("new one"),
            "{refused}"
        );
        assert!(matches!(
            parse_keycloak_registration(
                201,
                br#"{"clientId":"p","secret":"s","authorizationServicesEnabled":false}"#,
                None,
                &ep,
                "i",
                out
            ),
            Err(RegistrationError::NotResourceServer { .. })
        ));
    }

    #[test]
    fn gluu_answer_without_uma_protection_is_refused() {
        let out = Path::new("client.json");
        let ok = parse_uma2_registration(
            201,
            br#"{"client_id":"c1","client_secret":"s1","client_secret_expires_at":0,"scope":"openid uma_protection"}"#,
            "https://as",
            out,
        )
        .unwrap();
        assert_eq!(ok.client_id, "c1");
        assert_eq!(ok.client_secret_expires_at, None);
        assert_eq!(ok.profile, Some(AsProfile::Uma2));
        assert!(parse_uma2_registration(
            201,
            br#"{"client_id":"c","client_secret":"s","scope":["uma_protection"]}"#,
            "i",
            out
        )
        .is_ok());
        for body in [
            br#"{"client_id":"c1","client_secret":"s1","scope":"openid"}"#.as_slice(),
            br#"{"client_id":"c1","client_secret":"s1"}"#.as_slice(),
        ] {
            let err = parse_uma2_registration(201, body, "i", out).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, RegistrationError::NoProtectionScope { .. }), "{text}");
            assert!(
                text.contains("Allow for dynamic") && text.contains("c1") && text.contains("not written"),
                "{text}"
            );
        }
        assert!(matches!(
            parse_uma2_registration(400, br#"{"error":"invalid_client_metadata"}"#, "i", out),
            Err(RegistrationError::Refused(_))
        ));
    }

    #[test]
    fn a_file_for_another_issuer_or_profile_is_refused() {
        let p = Path::new("/x/client.json");
        let f = file(Some("https://a/realms/r"), Some(AsProfile::Keycloak));
        assert!(f.check_for(p, "https://a/realms/r", AsProfile::Keycloak).is_ok());
        let err = f.check_for(p, "https://b/realms/r", AsProfile::Keycloak).unwrap_err().to_string();
        assert!(
            err.contains("https://a/realms/r") && err.contains("--client") && err.contains("/x/client.json"),
            "{err}"
        );
        let err = f.check_for(p, "https://a/realms/r", AsProfile::Uma2).unwrap_err().to_string();
        assert!(err.contains("--profile keycloak"), "{err}");
        // Older files say neither: used.
        assert!(file(None, None).check_for(p, "https://b", AsProfile::Uma2).is_ok());
    }

    #[test]
    fn saved_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.json");
        file(Some("https://as"), Some(AsProfile::Uma2)).save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let back = ClientFile::reuse(&path, "https://as", AsProfile::Uma2).unwrap().unwrap();
        assert_eq!((back.client_id.as_str(), back.profile), ("c", Some(AsProfile::Uma2)));
        assert!(std::fs::read_to_string(&path).unwrap().contains(r#""profile": "uma2""#));
        assert!(ClientFile::reuse(&dir.path().join("none.json"), "https://as", AsProfile::Uma2)
            .unwrap()
            .is_none());
        std::fs::write(&path, r#"{"client_id":"","client_secret":"x"}"#).unwrap();
        assert!(matches!(ClientFile::load(&path), Err(RegistrationError::Invalid { .. })));
    }
}
