//! The resource service behind the Resource API: who may do what (the seed's ownership rules),
//! and each change carried out at the AS, the PDP and the repository in an order that leaves
//! them agreeing: a registration the PDP or the repository then refuses is rolled back at the
//! AS. An open resource (scope `open`) is kept here only, never registered at the AS.
//!
//! The AS and the PDP are traits, so the rules and the rollback are tested against fakes.

use std::future::Future;

use thiserror::Error;
use tokio::sync::Mutex;
use uma_pep_core::config::AsProfile;
use uma_pep_core::resource::{has_open_marker, is_open};
use uma_pep_core::uri_pattern::UriPattern;

use crate::apply::as_owner;
use crate::expiry::description_of;
use crate::identity::Caller;
use crate::pdp::{PdpClient, PdpError};
use crate::repository::{local_resource_id, now_s, IntentOp, RepoError, Repository, Source, StoredResource};
use crate::resource_set::{Description, Registered, ResourceSetClient, ResourceSetError};
use crate::rules::{
    check_rules, find_at_path, may_claim, normalize_methods, registered_scopes, ClaimRefused, RuleError,
};

use super::error::ApiError;
use super::extract::parse_json;
use super::views::{NewResource, ResourceUpdate, ResourceView};

/// What the service needs from the AS's resource registration endpoint.
pub trait Registry: Send + Sync {
    fn profile(&self) -> AsProfile;
    fn create(&self, d: &Description) -> impl Future<Output = Result<Registered, ResourceSetError>> + Send;
    fn get(&self, id: &str) -> impl Future<Output = Result<Option<Registered>, ResourceSetError>> + Send;
    fn update(&self, id: &str, d: &Description) -> impl Future<Output = Result<(), ResourceSetError>> + Send;
    fn delete(&self, id: &str) -> impl Future<Output = Result<bool, ResourceSetError>> + Send;
    /// Every registration of exactly that name.
    fn list_named(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<Registered>, ResourceSetError>> + Send;
}

impl Registry for ResourceSetClient {
    fn profile(&self) -> AsProfile {
        ResourceSetClient::profile(self)
    }
    fn create(&self, d: &Description) -> impl Future<Output = Result<Registered, ResourceSetError>> + Send {
        ResourceSetClient::create(self, d)
    }
    fn get(&self, id: &str) -> impl Future<Output = Result<Option<Registered>, ResourceSetError>> + Send {
        ResourceSetClient::get(self, id)
    }
    fn update(&self, id: &str, d: &Description) -> impl Future<Output = Result<(), ResourceSetError>> + Send {
        ResourceSetClient::update(self, id, d)
    }
    fn delete(&self, id: &str) -> impl Future<Output = Result<bool, ResourceSetError>> + Send {
        ResourceSetClient::delete(self, id)
    }
    fn list_named(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<Registered>, ResourceSetError>> + Send {
        ResourceSetClient::list_named(self, name)
    }
}

/// Did the AS's answer say what it did? A transport failure (no answer, or one cut short) or
/// an unreadable success leaves it unknown whether the AS carried the change out: its journal
/// entry then stays for the next start to settle.
pub(crate) fn outcome_known(e: &ResourceSetError) -> bool {
    !matches!(e, ResourceSetError::Call(_) | ResourceSetError::Garbage(_))
}

/// What the service needs from the PDP: the default ownership policies of a new resource.
pub trait PolicyPoint: Send + Sync {
    fn register_defaults(
        &self,
        resource_id: &str,
        owner: &str,
        scopes: &[String],
        caller_authorization: &str,
    ) -> impl Future<Output = Result<(), PdpError>> + Send;
}

impl PolicyPoint for PdpClient {
    fn register_defaults(
        &self,
        resource_id: &str,
        owner: &str,
        scopes: &[String],
        caller_authorization: &str,
    ) -> impl Future<Output = Result<(), PdpError>> + Send {
        PdpClient::register_defaults(self, resource_id, owner, scopes, caller_authorization)
    }
}

#[derive(Debug, Error)]
pub enum ServiceError {
    /// The request is understood but refused (422).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("Resource not found")]
    NotFound,
    #[error(transparent)]
    As(#[from] ResourceSetError),
    /// The PDP refused the policies; the AS registration was rolled back.
    #[error("policy decision point: {0}")]
    Pdp(String),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

const NOT_PERMITTED: &str = "User lacking sufficient access privileges";

/// The owner and operators manage a resource.
pub fn may_manage(c: &Caller, r: &StoredResource) -> bool {
    c.is_operator || c.sub == r.owner
}

/// The seed's rule for a non-operator, for paths and patterns alike (`rules::may_claim`): the
/// resource that protects the new one's path now (`/` resources aside) must be the caller's,
/// and the new one may take no path from another owner. `Err` holds why not, for the caller.
pub fn may_create_under(
    caller: &Caller,
    uri: &str,
    pattern: &UriPattern,
    repo: &Repository,
) -> Result<Result<(), String>, RepoError> {
    Ok(may_claim(&caller.sub, pattern, &repo.list()?).map_err(|refused| match refused {
        ClaimRefused::NotYours => format!("you own no path above {uri}"),
        ClaimRefused::Reaches => format!("{uri} reaches paths that no resource of yours covers"),
        ClaimRefused::TakesFrom(other) => {
            format!("{uri} would take paths that {other} covers, which is another owner's")
        }
    }))
}

/// A rule refused: `icon_uri: ...` or `methods.GET: ...`, as the body names it.
fn invalid_rule(e: RuleError) -> ServiceError {
    let field = if e.field == "uri" { "icon_uri".to_string() } else { e.field };
    ServiceError::Invalid(format!("{field}: {}", e.problem))
}

/// The shape of `uri` is taken by `other` (not the resource being changed).
fn shape_taken(uri: &str, other: &StoredResource) -> ServiceError {
    if other.uri == uri {
        ServiceError::Invalid(format!("Resource already exists for URI {uri}"))
    } else {
        ServiceError::Invalid(format!(
            "{uri} matches the same paths with the same precedence as {} of resource {:?} ({}): keep one",
            other.uri, other.name, other.id
        ))
    }
}

/// The resource `create` makes of a `POST /resources` body, and its pattern: every check that
/// needs neither the repository nor the AS, in that order (name, uri and rules, owner; the
/// scopes registered). No id yet, no times.
fn new_resource(caller: &Caller, body: NewResource) -> Result<(StoredResource, UriPattern), ServiceError> {
    let name = body
        .name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ServiceError::Invalid("name is required".into()))?;
    let raw_uri =
        body.icon_uri.or(body.uri).ok_or_else(|| ServiceError::Invalid("icon_uri is required".into()))?;
    let exact = body.exact.unwrap_or(false);
    let methods = normalize_methods(body.methods).map_err(invalid_rule)?;
    let (uri, pattern) = check_rules(&raw_uri, exact, methods.as_ref()).map_err(invalid_rule)?;
    // Trimmed as `ownership_id` is: `" bob"` is bob.
    let owner = match body.uuid.map(|u| u.trim().to_string()).filter(|u| !u.is_empty()) {
        Some(u) if u != caller.sub && !caller.is_operator => {
            return Err(ServiceError::Forbidden(
                "only an operator may create a resource on behalf of another user".into(),
            ))
        }
        Some(u) => u,
        None => caller.sub.clone(),
    };
    let scopes =
        registered_scopes(&body.resource_scopes.or(body.scopes).unwrap_or_default(), methods.as_ref());
    let stored = StoredResource {
        id: String::new(),
        name,
        uri,
        exact,
        methods,
        scopes_mode: body.scopes_mode.unwrap_or_default(),
        enforcement: body.enforcement.unwrap_or_default(),
        owner,
        scopes,
        description: body.description,
        source: Source::Api,
        as_expires_at: None,
        created_at: 0,
        updated_at: 0,
    };
    Ok((stored, pattern))
}

/// A PUT (`full`) names the resource and its scopes: checked before the resource is loaded.
fn check_full(body: &ResourceUpdate, full: bool) -> Result<(), ServiceError> {
    if full && (body.name.is_none() || (body.resource_scopes.is_none() && body.scopes.is_none())) {
        return Err(ServiceError::Invalid("PUT needs name and resource_scopes".into()));
    }
    Ok(())
}

/// What `update` makes of `current` with `body` (`full`: a PUT): every step that needs neither
/// the repository nor the AS, in that order. `updated_at` is left as it was.
fn updated(
    caller: &Caller,
    current: &StoredResource,
    body: ResourceUpdate,
    full: bool,
) -> Result<StoredResource, ServiceError> {
    let resource_scopes = body.resource_scopes.or(body.scopes);
    let mut next = current.clone();
    if let Some(n) = body.name {
        let n = n.trim().to_string();
        if n.is_empty() {
            return Err(ServiceError::Invalid("name must not be empty".into()));
        }
        next.name = n;
    }
    if full || body.description.is_some() {
        next.description = body.description;
    }
    match body.methods {
        Some(methods) => next.methods = normalize_methods(methods).map_err(invalid_rule)?,
        None if full => next.methods = None,
        None => {}
    }
    match body.scopes_mode {
        Some(mode) => next.scopes_mode = mode,
        None if full => next.scopes_mode = Default::default(),
        None => {}
    }
    match body.enforcement {
        Some(mode) => next.enforcement = mode,
        None if full => next.enforcement = Default::default(),
        None => {}
    }
    // The scopes given, or the ones held, with what the methods need (without methods, the
    // seed's six method scopes).
    match resource_scopes {
        Some(s) => next.scopes = registered_scopes(&s, next.methods.as_ref()),
        None if next.methods != current.methods => {
            next.scopes = registered_scopes(&current.scopes, next.methods.as_ref())
        }
        None => {}
    }
    let moves = body.icon_uri.is_some() || body.exact.is_some();
    if moves || next.methods != current.methods {
        let raw = body.icon_uri.as_deref().unwrap_or(&current.uri);
        let exact = body.exact.unwrap_or(current.exact);
        let (u, _) = check_rules(raw, exact, next.methods.as_ref()).map_err(invalid_rule)?;
        if (u != current.uri || exact != current.exact) && !caller.is_operator {
            return Err(ServiceError::Forbidden(
                "only an operator may move a resource to another path (icon_uri, exact)".into(),
            ));
        }
        next.uri = u;
        next.exact = exact;
    }
    if let Some(o) = body.ownership_id {
        let o = o.trim().to_string();
        if o.is_empty() {
            return Err(ServiceError::Invalid("ownership_id must not be empty".into()));
        }
        next.owner = o;
    }
    Ok(next)
}

/// An open resource stays open and a registered one registered (checked after the
/// repository's uniqueness checks).
fn keeps_openness(current: &StoredResource, next: &StoredResource) -> Result<(), ServiceError> {
    if is_open(&current.scopes) != is_open(&next.scopes) {
        // Its id would change (an open resource has no AS id): that is another resource.
        return Err(ServiceError::Invalid(
            "resource_scopes: `open` cannot be added to or removed from a resource (an open resource \
             is not registered at the AS); delete the resource and create it again"
                .into(),
        ));
    }
    Ok(())
}

/// The resources a caller sees: all for an operator, else their own.
pub async fn list(repo: &Repository, caller: &Caller) -> Result<Vec<StoredResource>, ServiceError> {
    let sub = caller.sub.clone();
    Ok(if caller.is_operator {
        repo.run(|r| r.list()).await?
    } else {
        repo.run(move |r| r.list_by_owner(&sub)).await?
    })
}

/// The resource registered at a path or pattern, any spelling of it (`rules::find_at_path`).
pub async fn at_path(repo: &Repository, caller: &Caller, path: &str) -> Result<StoredResource, ServiceError> {
    let path = path.to_string();
    let found = repo
        .run(move |r| find_at_path(r, &path))
        .await?
        .map_err(|e| ServiceError::Invalid(format!("path: {e}")))?
        .ok_or(ServiceError::NotFound)?;
    managed(caller, found)
}

/// One resource the caller manages.
pub async fn show(repo: &Repository, caller: &Caller, id: String) -> Result<StoredResource, ServiceError> {
    managed(caller, load(repo, id).await?)
}

fn managed(caller: &Caller, r: StoredResource) -> Result<StoredResource, ServiceError> {
    if may_manage(caller, &r) {
        Ok(r)
    } else {
        Err(ServiceError::Forbidden(NOT_PERMITTED.into()))
    }
}

async fn load(repo: &Repository, id: String) -> Result<StoredResource, ServiceError> {
    repo.run(move |r| r.get(&id)).await?.ok_or(ServiceError::NotFound)
}

/// The changes: each is serialised by `write_lock`, since it spans an AS call and a
/// repository write, and uniqueness checks must see the writes before them.
pub struct ResourceService<'a, R, P> {
    pub repo: &'a Repository,
    pub registry: &'a R,
    pub pdp: Option<&'a P>,
    pub write_lock: &'a Mutex<()>,
}

/// The steps of `create` and `update` that need neither the repository nor the AS, from a
/// request body as sent (read as the handlers' `ApiJson` reads it) to the resource the request
/// would store or the API error it would get. For the `api_bodies` fuzz target (fuzz/): these
/// are associated functions because the `views` and `service` modules are not public.
impl<R, P> ResourceService<'_, R, P> {
    /// `POST /resources`: the resource `create` would go on to register (no id, no times yet),
    /// before the repository's checks (ownership of the path, shape and name taken).
    pub fn check_create_body(caller: &Caller, body: &[u8]) -> Result<StoredResource, ApiError> {
        let body: NewResource = parse_json(body)?;
        Ok(new_resource(caller, body)?.0)
    }

    /// `PUT` (`full`) or `PATCH /resources/{id}` of `current`: the resource `update` would go
    /// on to store (`updated_at` unchanged), but for the repository's checks (name and shape
    /// taken by another resource).
    pub fn check_update_body(
        caller: &Caller,
        current: &StoredResource,
        body: &[u8],
        full: bool,
    ) -> Result<StoredResource, ApiError> {
        let body: ResourceUpdate = parse_json(body)?;
        check_full(&body, full)?;
        let current = managed(caller, current.clone())?;
        let next = updated(caller, &current, body, full)?;
        keeps_openness(&current, &next)?;
        Ok(next)
    }

    /// A resource as the API sends it (`GET /resources/{id}`, and the answer to a change).
    pub fn representation(r: &StoredResource) -> serde_json::Value {
        serde_json::to_value(ResourceView::from(r)).unwrap_or_default()
    }
}

impl<R: Registry, P: PolicyPoint> ResourceService<'_, R, P> {
    /// Creates a resource under a path the caller owns (an operator anywhere, or for `uuid`).
    /// `authorization` is the caller's header, which the PDP is called with.
    pub async fn create(
        &self,
        caller: &Caller,
        authorization: &str,
        body: NewResource,
    ) -> Result<StoredResource, ServiceError> {
        let (mut stored, pattern) = new_resource(caller, body)?;

        let _write = self.write_lock.lock().await;
        {
            let (uri, name, owner) = (&stored.uri, &stored.name, &stored.owner);
            let (c, u, n, o, p) = (caller.clone(), uri.clone(), name.clone(), owner.clone(), pattern.clone());
            let (allowed, by_shape, by_name) = self
                .repo
                .run(move |r| {
                    let allowed = if c.is_operator { Ok(()) } else { may_create_under(&c, &u, &p, r)? };
                    Ok((allowed, r.get_by_shape(&p.shape_key())?, r.get_by_owner_and_name(&o, &n)?))
                })
                .await?;
            allowed.map_err(ServiceError::Forbidden)?;
            if let Some(other) = by_shape {
                return Err(shape_taken(uri, &other));
            }
            // Names are unique per owner (as Keycloak keeps them): another user may deploy an
            // application of the same name.
            if by_name.is_some() {
                return Err(ServiceError::Invalid(format!("{owner} already owns a resource named {name:?}")));
            }
        }
        let now = now_s();
        stored.created_at = now;
        stored.updated_at = now;
        if is_open(&stored.scopes) {
            stored.id = local_resource_id()?;
            let to_store = stored.clone();
            self.repo.run(move |r| r.upsert(&to_store)).await?;
        } else {
            // Journalled before the AS call: a crash after the AS registered it and before the
            // repository has it leaves this entry, from which the next start finds the
            // registration and removes it.
            let planned = stored.clone();
            let seq = self
                .repo
                .run(move |r| r.record_intent(IntentOp::Create, None, &planned.name, &planned.uri, &planned))
                .await?;
            let description = Description {
                name: stored.name.clone(),
                uri: stored.uri.clone(),
                exact: stored.exact,
                scopes: stored.scopes.clone(),
                description: stored.description.clone(),
                owner: as_owner(&stored.owner),
            };
            let (id, as_expires_at) = self.register(&description, &stored.owner, authorization, seq).await?;
            stored.id = id.clone();
            stored.as_expires_at = as_expires_at;
            let to_store = stored.clone();
            if let Err(e) = self.repo.run(move |r| r.upsert_settling(&to_store, seq)).await {
                self.rollback(&id, seq).await;
                return Err(e.into());
            }
        }
        tracing::info!(resource = %stored.id, owner = %stored.owner, caller = %caller.sub, "resource created");
        Ok(stored)
    }

    /// Registers at the AS (and the PDP's policies); the id and the AS's expiry. On failure,
    /// journal entry `seq` is settled when the AS is known to hold nothing of it.
    async fn register(
        &self,
        description: &Description,
        owner: &str,
        authorization: &str,
        seq: i64,
    ) -> Result<(String, Option<i64>), ServiceError> {
        // An API create never adopts an AS resource of the same name (that is apply's job for
        // its own file): a 409 is a conflict for the caller.
        let registered = match self.registry.create(description).await {
            Ok(r) => r,
            Err(e) => {
                if outcome_known(&e) {
                    self.settle(seq).await?;
                }
                return Err(e.into());
            }
        };
        let id = registered.id.clone();
        // Gluu's create answer has no exp: read it back so the registration is renewed in time.
        let as_expires_at = match (registered.exp, self.registry.profile()) {
            (Some(e), _) => Some(e),
            (None, AsProfile::Uma2) => self.registry.get(&id).await.ok().flatten().and_then(|r| r.exp),
            (None, _) => None,
        };
        if let (Some(pdp), false) = (self.pdp, has_open_marker(&description.scopes)) {
            if let Err(e) = pdp.register_defaults(&id, owner, &description.scopes, authorization).await {
                tracing::warn!(resource = %id, error = %e, "PDP policy failed; rolling back the AS registration");
                self.rollback(&id, seq).await;
                return Err(ServiceError::Pdp(e.to_string()));
            }
        }
        Ok((id, as_expires_at))
    }

    /// Removes a registration the repository will not hold; its journal entry `seq` goes once
    /// the AS has let it go, and stays (for the next start to finish) if it has not.
    async fn rollback(&self, id: &str, seq: i64) {
        match self.registry.delete(id).await {
            Ok(_) => {
                if let Err(e) = self.settle(seq).await {
                    tracing::warn!(resource = %id, error = %e, "rolled back; the journal entry stays until the next start");
                }
            }
            Err(e) => tracing::error!(
                resource = %id, error = %e,
                "rollback failed: the AS keeps a resource pepctl does not know until the next start removes it"
            ),
        }
    }

    /// Forgets journal entry `seq`: the AS refused its change, or it was undone there.
    async fn settle(&self, seq: i64) -> Result<(), RepoError> {
        self.repo.run(move |r| r.clear_intent(seq)).await
    }

    /// Changes a resource: every field given (`full`: a PUT, which needs name and scopes and
    /// clears an absent description, `methods`, `scopes_mode` and `enforcement`). Moving it
    /// (`icon_uri`, `exact`: the paths it covers) is for operators; an owner may transfer it.
    pub async fn update(
        &self,
        caller: &Caller,
        id: String,
        body: ResourceUpdate,
        full: bool,
    ) -> Result<StoredResource, ServiceError> {
        check_full(&body, full)?;
        let _write = self.write_lock.lock().await;
        let current = managed(caller, load(self.repo, id).await?)?;
        let mut next = updated(caller, &current, body, full)?;
        {
            let (n, o) = (next.name.clone(), next.owner.clone());
            let shape = crate::repository::stored_shape(&next.uri, next.exact).unwrap_or_default();
            let (by_name, by_shape) = self
                .repo
                .run(move |r| Ok((r.get_by_owner_and_name(&o, &n)?, r.get_by_shape(&shape)?)))
                .await?;
            if by_name.is_some_and(|r| r.id != current.id) {
                return Err(ServiceError::Invalid(format!(
                    "{} already owns a resource named {:?}",
                    next.owner, next.name
                )));
            }
            if let Some(other) = by_shape.filter(|r| r.id != current.id) {
                return Err(shape_taken(&next.uri, &other));
            }
        }
        keeps_openness(&current, &next)?;
        let open = is_open(&current.scopes);
        let at_as_changed = next.name != current.name
            || next.uri != current.uri
            || next.exact != current.exact
            || next.scopes != current.scopes
            || next.description != current.description;
        next.updated_at = now_s();
        let to_store = next.clone();
        if at_as_changed && !open {
            // Journalled with the state before: a crash after the AS applied it and before the
            // repository has it is rolled back at the next start (the caller had no answer).
            let (before, n, u) = (current.clone(), next.name.clone(), next.uri.clone());
            let seq = self
                .repo
                .run(move |r| r.record_intent(IntentOp::Update, Some(&before.id), &n, &u, &before))
                .await?;
            if let Err(e) = self.registry.update(&current.id, &description_of(&next)).await {
                if outcome_known(&e) {
                    self.settle(seq).await?;
                }
                return Err(e.into());
            }
            self.repo.run(move |r| r.upsert_settling(&to_store, seq)).await?;
        } else {
            self.repo.run(move |r| r.upsert(&to_store)).await?;
        }
        if next.owner != current.owner {
            tracing::info!(resource = %next.id, from = %current.owner, to = %next.owner, caller = %caller.sub, "ownership transferred");
        }
        Ok(next)
    }

    /// Deletes a resource at the AS (unless open) and here.
    pub async fn delete(&self, caller: &Caller, id: String) -> Result<(), ServiceError> {
        let _write = self.write_lock.lock().await;
        let r = managed(caller, load(self.repo, id).await?)?;
        let mut seq = None;
        if !is_open(&r.scopes) {
            // Journalled: a crash after the AS deleted it and before the repository has is
            // finished at the next start (the id cannot come back at the AS).
            let before = r.clone();
            let s = self
                .repo
                .run(move |repo| {
                    repo.record_intent(IntentOp::Delete, Some(&before.id), &before.name, &before.uri, &before)
                })
                .await?;
            seq = Some(s);
            if let Err(e) = self.registry.delete(&r.id).await {
                if outcome_known(&e) {
                    self.settle(s).await?;
                }
                return Err(e.into());
            }
        }
        let rid = r.id.clone();
        self.repo.run(move |repo| repo.delete_settling(&rid, seq)).await?;
        tracing::info!(resource = %r.id, caller = %caller.sub, "resource deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    /// An AS that records every call and fails what it is told to.
    #[derive(Default)]
    struct FakeAs {
        calls: StdMutex<Vec<String>>,
        fail_create: bool,
    }

    impl FakeAs {
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
        fn record(&self, call: String) {
            self.calls.lock().unwrap().push(call);
        }
    }

    impl Registry for FakeAs {
        fn profile(&self) -> AsProfile {
            AsProfile::Keycloak
        }
        async fn create(&self, d: &Description) -> Result<Registered, ResourceSetError> {
            // Ids by name; a name registered again (for another owner) gets a suffix.
            let again = self
                .calls()
                .iter()
                .filter(|c| c.starts_with("create ") && c.ends_with(&format!(" {}", d.name)))
                .count();
            self.record(format!("create {} {}", d.uri, d.name));
            if self.fail_create {
                return Err(ResourceSetError::Refused("500".into()));
            }
            let id = if again == 0 { format!("as-{}", d.name) } else { format!("as-{}-{again}", d.name) };
            Ok(Registered { id, ..Registered::default() })
        }
        async fn get(&self, id: &str) -> Result<Option<Registered>, ResourceSetError> {
            self.record(format!("get {id}"));
            Ok(None)
        }
        async fn update(&self, id: &str, d: &Description) -> Result<(), ResourceSetError> {
            self.record(format!("update {id} {}", d.scopes.join(",")));
            Ok(())
        }
        async fn delete(&self, id: &str) -> Result<bool, ResourceSetError> {
            self.record(format!("delete {id}"));
            Ok(true)
        }
        async fn list_named(&self, name: &str) -> Result<Vec<Registered>, ResourceSetError> {
            self.record(format!("list {name}"));
            Ok(Vec::new())
        }
    }

    struct FakePdp {
        refuse: bool,
        calls: StdMutex<Vec<String>>,
    }

    impl PolicyPoint for FakePdp {
        async fn register_defaults(
            &self,
            resource_id: &str,
            _owner: &str,
            _scopes: &[String],
            caller_authorization: &str,
        ) -> Result<(), PdpError> {
            self.calls.lock().unwrap().push(format!("{resource_id} {caller_authorization}"));
            if self.refuse {
                return Err(PdpError::Refused { scope: "protected_get".into(), status: 403 });
            }
            Ok(())
        }
    }

    fn pdp(refuse: bool) -> FakePdp {
        FakePdp { refuse, calls: StdMutex::new(Vec::new()) }
    }

    fn user(sub: &str) -> Caller {
        Caller { sub: sub.into(), is_operator: false }
    }

    fn operator() -> Caller {
        Caller { sub: "op".into(), is_operator: true }
    }

    fn new(name: &str, uri: &str, scopes: Option<&[&str]>) -> NewResource {
        NewResource {
            name: Some(name.into()),
            icon_uri: Some(uri.into()),
            resource_scopes: scopes.map(|s| s.iter().map(|x| x.to_string()).collect()),
            ..NewResource::default()
        }
    }

    fn methods(m: &[(&str, &[&str])]) -> crate::rules::Methods {
        m.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect()
    }

    fn update(scopes: &[&str]) -> ResourceUpdate {
        ResourceUpdate {
            resource_scopes: Some(scopes.iter().map(|x| x.to_string()).collect()),
            ..ResourceUpdate::default()
        }
    }

    #[tokio::test]
    async fn a_created_resource_is_registered_with_its_policies_and_stored() {
        let repo = Repository::open_in_memory().unwrap();
        let (fake, pdp, lock) = (FakeAs::default(), pdp(false), Mutex::new(()));
        let svc = ResourceService { repo: &repo, registry: &fake, pdp: Some(&pdp), write_lock: &lock };
        let r = svc.create(&operator(), "Bearer t", new("A", "/a", None)).await.unwrap();
        assert_eq!(r.id, "as-A");
        assert!(repo.pending_intents().unwrap().is_empty(), "settled with the write");
        assert_eq!(r.scopes.len(), 6, "method scopes completed");
        assert_eq!(fake.calls(), vec!["create /a A"]);
        assert_eq!(*pdp.calls.lock().unwrap(), vec!["as-A Bearer t"]);
        assert_eq!(repo.get("as-A").unwrap().unwrap().uri, "/a");
        // A second one at the same path is refused before any AS call.
        let e = svc.create(&operator(), "Bearer t", new("B", "/a", None)).await.unwrap_err();
        assert_eq!(e.to_string(), "Resource already exists for URI /a");
        assert_eq!(fake.calls().len(), 1);
    }

    #[tokio::test]
    async fn a_refused_policy_rolls_the_registration_back() {
        let repo = Repository::open_in_memory().unwrap();
        let (fake, pdp, lock) = (FakeAs::default(), pdp(true), Mutex::new(()));
        let svc = ResourceService { repo: &repo, registry: &fake, pdp: Some(&pdp), write_lock: &lock };
        let e = svc.create(&operator(), "Bearer t", new("A", "/a", None)).await.unwrap_err();
        assert!(matches!(e, ServiceError::Pdp(_)), "{e:?}");
        assert_eq!(fake.calls(), vec!["create /a A", "delete as-A"]);
        assert!(repo.list().unwrap().is_empty());
        assert!(repo.pending_intents().unwrap().is_empty(), "rolled back: nothing left to settle");
        // A public resource needs no policy: the PDP is not asked.
        svc.create(&operator(), "Bearer t", new("P", "/p", Some(&["public_access"]))).await.unwrap();
        assert_eq!(pdp.calls.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_as_failure_creates_nothing() {
        let repo = Repository::open_in_memory().unwrap();
        let fake = FakeAs { fail_create: true, ..FakeAs::default() };
        let lock = Mutex::new(());
        let svc =
            ResourceService::<_, FakePdp> { repo: &repo, registry: &fake, pdp: None, write_lock: &lock };
        let e = svc.create(&operator(), "", new("A", "/a", None)).await.unwrap_err();
        assert!(matches!(e, ServiceError::As(_)), "{e:?}");
        assert!(repo.list().unwrap().is_empty());
        assert!(repo.pending_intents().unwrap().is_empty(), "the AS said no: nothing left to settle");
    }

    #[tokio::test]
    async fn an_open_resource_never_reaches_the_as_or_the_pdp() {
        let repo = Repository::open_in_memory().unwrap();
        let (fake, pdp, lock) = (FakeAs::default(), pdp(false), Mutex::new(()));
        let svc = ResourceService { repo: &repo, registry: &fake, pdp: Some(&pdp), write_lock: &lock };
        let r = svc.create(&operator(), "Bearer t", new("O", "/o", Some(&["open"]))).await.unwrap();
        assert_eq!(r.scopes, vec!["open"]);
        assert_eq!(r.id.len(), 36, "a local UUID: {}", r.id);
        assert_eq!(r.id.as_bytes()[14], b'4', "version 4: {}", r.id);
        let mut renamed = update(&["open"]);
        renamed.name = Some("O2".into());
        assert_eq!(svc.update(&operator(), r.id.clone(), renamed, false).await.unwrap().name, "O2");
        // Becoming protected (or open) would change its id: refused, nothing changed.
        let e = svc.update(&operator(), r.id.clone(), update(&["protected_get"]), false).await.unwrap_err();
        assert!(e.to_string().contains("delete the resource and create it again"), "{e}");
        svc.delete(&operator(), r.id.clone()).await.unwrap();
        assert!(repo.get(&r.id).unwrap().is_none());
        assert!(fake.calls().is_empty(), "{:?}", fake.calls());
        assert!(pdp.calls.lock().unwrap().is_empty());
        // A registered resource cannot become open either.
        let p = svc.create(&operator(), "Bearer t", new("P", "/p", None)).await.unwrap();
        assert!(svc.update(&operator(), p.id.clone(), update(&["open"]), false).await.is_err());
        svc.delete(&operator(), p.id).await.unwrap();
        assert_eq!(fake.calls(), vec!["create /p P", "delete as-P"]);
    }

    #[tokio::test]
    async fn ownership_rules_hold() {
        let repo = Repository::open_in_memory().unwrap();
        let (fake, lock) = (FakeAs::default(), Mutex::new(()));
        let svc =
            ResourceService::<_, FakePdp> { repo: &repo, registry: &fake, pdp: None, write_lock: &lock };
        let mut home = new("Home", "/home/alice", None);
        home.uuid = Some("alice".into());
        svc.create(&operator(), "", home).await.unwrap();
        svc.create(&user("alice"), "", new("Doc", "/home/alice/doc", None)).await.unwrap();
        let e = svc.create(&user("bob"), "", new("X", "/home/alice/x", None)).await.unwrap_err();
        assert_eq!(e.to_string(), "you own no path above /home/alice/x");
        let mut on_behalf = new("Y", "/home/alice/y", None);
        on_behalf.uuid = Some("carol".into());
        assert!(matches!(svc.create(&user("alice"), "", on_behalf).await, Err(ServiceError::Forbidden(_))));
        // Only the owner or an operator changes or deletes it; only an operator moves it.
        let id = "as-Doc".to_string();
        assert!(matches!(svc.delete(&user("bob"), id.clone()).await, Err(ServiceError::Forbidden(_))));
        let moved =
            ResourceUpdate { icon_uri: Some("/home/alice/other".into()), ..ResourceUpdate::default() };
        assert!(matches!(
            svc.update(&user("alice"), id.clone(), moved, false).await,
            Err(ServiceError::Forbidden(_))
        ));
        let to_bob = ResourceUpdate { ownership_id: Some("bob".into()), ..ResourceUpdate::default() };
        assert_eq!(svc.update(&user("alice"), id.clone(), to_bob, false).await.unwrap().owner, "bob");
        assert_eq!(show(&repo, &user("bob"), id.clone()).await.unwrap().owner, "bob");
        assert!(matches!(show(&repo, &user("alice"), id).await, Err(ServiceError::Forbidden(_))));
        assert!(matches!(svc.delete(&operator(), "nope".into()).await, Err(ServiceError::NotFound)));
        assert_eq!(at_path(&repo, &user("alice"), "/home//alice/").await.unwrap().name, "Home");
        assert_eq!(list(&repo, &user("alice")).await.unwrap().len(), 1);
        assert_eq!(list(&repo, &operator()).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn names_are_unique_per_owner_and_paths_everywhere() {
        let repo = Repository::open_in_memory().unwrap();
        let (fake, lock) = (FakeAs::default(), Mutex::new(()));
        let svc =
            ResourceService::<_, FakePdp> { repo: &repo, registry: &fake, pdp: None, write_lock: &lock };
        let for_owner = |owner: &str, uri: &str| {
            let mut n = new("ADES wps", uri, None);
            n.uuid = Some(owner.into());
            n
        };
        let a = svc.create(&operator(), "", for_owner("alice", "/alice/wps")).await.unwrap();
        // Another user deploys the same application: same name, own path.
        let b = svc.create(&operator(), "", for_owner("bob", "/bob/wps")).await.unwrap();
        assert_eq!((a.name.as_str(), b.name.as_str()), ("ADES wps", "ADES wps"));
        let e = svc.create(&operator(), "", for_owner("alice", "/alice/other")).await.unwrap_err();
        assert_eq!(e.to_string(), "alice already owns a resource named \"ADES wps\"");
        let e = svc.create(&operator(), "", for_owner("carol", "/bob/wps")).await.unwrap_err();
        assert_eq!(e.to_string(), "Resource already exists for URI /bob/wps");
        // A transfer that would give bob two resources of one name is refused.
        let mut other = new("Other", "/alice/x", None);
        other.uuid = Some("alice".into());
        let x = svc.create(&operator(), "", other).await.unwrap();
        let rename = ResourceUpdate { name: Some("ADES wps".into()), ..ResourceUpdate::default() };
        assert!(matches!(
            svc.update(&operator(), x.id.clone(), rename, false).await,
            Err(ServiceError::Invalid(_))
        ));
        let to_bob = ResourceUpdate { ownership_id: Some("bob".into()), ..ResourceUpdate::default() };
        let moved = svc.update(&operator(), a.id.clone(), to_bob, false).await.unwrap_err();
        assert_eq!(moved.to_string(), "bob already owns a resource named \"ADES wps\"");
        // The old name of resource_scopes is read when resource_scopes is absent.
        let scoped =
            ResourceUpdate { scopes: Some(vec!["public_access".into()]), ..ResourceUpdate::default() };
        assert_eq!(
            svc.update(&operator(), x.id.clone(), scoped, false).await.unwrap().scopes,
            ["public_access"]
        );
        let both = ResourceUpdate {
            resource_scopes: Some(vec!["protected_get".into()]),
            scopes: Some(vec!["public_access".into()]),
            ..ResourceUpdate::default()
        };
        let r = svc.update(&operator(), x.id, both, false).await.unwrap();
        assert!(r.scopes.contains(&"protected_get".to_string()), "{:?}", r.scopes);
    }

    #[tokio::test]
    async fn patterns_with_methods_are_registered_with_their_scopes_and_shapes_stay_unique() {
        let repo = Repository::open_in_memory().unwrap();
        let (fake, lock) = (FakeAs::default(), Mutex::new(()));
        let svc =
            ResourceService::<_, FakePdp> { repo: &repo, registry: &fake, pdp: None, write_lock: &lock };
        let mut orders = new("Order", "/orders/{id}", None);
        orders.methods =
            Some(methods(&[("GET", &["read"]), ("DELETE", &["admin"]), ("PROPFIND", &["read"])]));
        orders.scopes_mode = Some(uma_pep_core::resource::ScopesMode::Any);
        orders.enforcement = Some(uma_pep_core::resource::Enforcement::Permissive);
        let r = svc.create(&operator(), "", orders).await.unwrap();
        assert_eq!(r.uri, "/orders/{id}");
        assert_eq!(r.scopes, ["admin", "read"], "the methods' scopes, not the six method scopes");
        assert_eq!(r.scopes_mode, uma_pep_core::resource::ScopesMode::Any);
        assert_eq!(r.enforcement, uma_pep_core::resource::Enforcement::Permissive);
        assert_eq!(repo.get(&r.id).unwrap().unwrap(), r);
        assert_eq!(fake.calls(), ["create /orders/{id} Order"]);
        // The same shape, however spelt, is refused before any AS call, naming the other.
        let e = svc.create(&operator(), "", new("Star", "/orders/*", None)).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "/orders/* matches the same paths with the same precedence as /orders/{id} of resource \"Order\" (as-Order): keep one"
        );
        let mut exact = new("Exact", "/orders/{id}", None);
        exact.exact = Some(true);
        let e = svc.create(&operator(), "", exact).await.unwrap_err();
        assert_eq!(e.to_string(), "Resource already exists for URI /orders/{id}");
        // Other shapes are other resources: the plain path, and the same path exactly.
        svc.create(&operator(), "", new("Orders", "/orders", None)).await.unwrap();
        let e = svc.create(&operator(), "", new("Rest", "/orders/**", None)).await.unwrap_err();
        assert!(e.to_string().contains("as /orders of resource \"Orders\""), "{e}");
        let mut list = new("List", "/orders", None);
        list.exact = Some(true);
        assert!(svc.create(&operator(), "", list).await.unwrap().exact);
        assert_eq!(fake.calls().len(), 3);
        // What the filter refuses, pepctl refuses, naming the field.
        let e = svc.create(&operator(), "", new("Bad", "/a/{id}x", None)).await.unwrap_err();
        assert!(e.to_string().starts_with("icon_uri: \"/a/{id}x\": segment"), "{e}");
        let mut bad = new("Bad", "/b", None);
        bad.methods = Some(methods(&[("G T", &["x"])]));
        let e = svc.create(&operator(), "", bad).await.unwrap_err();
        assert!(e.to_string().starts_with("methods.G T: not an HTTP method name"), "{e}");
        let e = svc.create(&operator(), "", new("Slash", "/c//{id}", None)).await.unwrap_err();
        assert!(matches!(e, ServiceError::Invalid(_)), "{e:?}");
        assert_eq!(fake.calls().len(), 3, "nothing refused reached the AS");
    }

    #[tokio::test]
    async fn the_owner_of_a_pattern_owns_what_it_matches() {
        let repo = Repository::open_in_memory().unwrap();
        let (fake, lock) = (FakeAs::default(), Mutex::new(()));
        let svc =
            ResourceService::<_, FakePdp> { repo: &repo, registry: &fake, pdp: None, write_lock: &lock };
        let mut users = new("Users", "/users/{id}/**", None);
        users.uuid = Some("usersvc".into());
        svc.create(&operator(), "", users).await.unwrap();
        let e = svc.create(&user("bob"), "", new("Photos", "/users/bob/photos", None)).await.unwrap_err();
        assert_eq!(e.to_string(), "you own no path above /users/bob/photos");
        assert!(matches!(
            svc.create(&user("bob"), "", new("All", "/users/{u}/photos", None)).await,
            Err(ServiceError::Forbidden(_))
        ));
        let r = svc.create(&user("usersvc"), "", new("Photos", "/users/bob/photos", None)).await.unwrap();
        assert_eq!(r.owner, "usersvc");
        // The owner changes the rules; moving (uri or exact) stays an operator's.
        let mut rules = update(&[]);
        rules.resource_scopes = None;
        rules.methods = Some(Some(methods(&[("GET", &["view"])])));
        let changed = svc.update(&user("usersvc"), r.id.clone(), rules, false).await.unwrap();
        assert_eq!(changed.methods, Some(methods(&[("GET", &["view"])])));
        assert!(changed.scopes.contains(&"view".to_string()), "{:?}", changed.scopes);
        let exact = ResourceUpdate { exact: Some(true), ..ResourceUpdate::default() };
        assert!(matches!(
            svc.update(&user("usersvc"), r.id.clone(), exact, false).await,
            Err(ServiceError::Forbidden(_))
        ));
        let exact = ResourceUpdate { exact: Some(true), ..ResourceUpdate::default() };
        assert!(svc.update(&operator(), r.id.clone(), exact, false).await.unwrap().exact);
        // PATCH with `methods: null` clears them (and the six method scopes come back); a PUT
        // without them does too.
        let cleared = ResourceUpdate { methods: Some(None), ..ResourceUpdate::default() };
        let r2 = svc.update(&user("usersvc"), r.id.clone(), cleared, false).await.unwrap();
        assert_eq!(r2.methods, None);
        assert!(r2.scopes.contains(&"protected_get".to_string()), "{:?}", r2.scopes);
        let mut with = update(&["s"]);
        with.methods = Some(Some(methods(&[("PUT", &["w"])])));
        with.enforcement = Some(uma_pep_core::resource::Enforcement::Disabled);
        let r3 = svc.update(&user("usersvc"), r.id.clone(), with, false).await.unwrap();
        assert_eq!(
            (r3.scopes.clone(), r3.enforcement),
            (vec!["s".to_string(), "w".to_string()], uma_pep_core::resource::Enforcement::Disabled)
        );
        let mut put = update(&["s"]);
        put.name = Some("Photos".into());
        let r4 = svc.update(&user("usersvc"), r.id.clone(), put, true).await.unwrap();
        assert_eq!((r4.methods, r4.enforcement), (None, uma_pep_core::resource::Enforcement::Enforcing));
        assert!(r4.exact, "a PUT without `exact` keeps it, as it keeps icon_uri");
    }

    #[test]
    fn the_ownership_walk_finds_the_nearest_registered_path() {
        let repo = Repository::open_in_memory().unwrap();
        let stored = |id: &str, uri: &str, owner: &str| StoredResource {
            id: id.into(),
            name: id.into(),
            uri: uri.into(),
            owner: owner.into(),
            scopes: vec![],
            description: None,
            source: Source::File,
            as_expires_at: None,
            created_at: 0,
            updated_at: 0,
            ..StoredResource::default()
        };
        repo.upsert(&stored("h", "/home", "root")).unwrap();
        repo.upsert(&stored("a", "/home/alice", "alice")).unwrap();
        let (alice, bob) = (user("alice"), user("bob"));
        let may = |c: &Caller, uri: &str| {
            let (_, p) = UriPattern::parse(uri, false).unwrap();
            may_create_under(c, uri, &p, &repo).unwrap()
        };
        assert_eq!(may(&alice, "/home/alice/x/y"), Ok(()));
        assert_eq!(may(&bob, "/home/alice/x"), Err("you own no path above /home/alice/x".into()));
        assert!(may(&alice, "/home/other").is_err(), "nearest is /home, root's");
        assert!(may(&alice, "/elsewhere").is_err(), "nothing registered above");
        assert_eq!(may(&alice, "/home/alice/{doc}/**"), Ok(()), "a pattern under her own path");
        assert!(may(&alice, "/home/{u}/x").is_err(), "a pattern reaching under other homes");
        let r = stored("a", "/home/alice", "alice");
        assert!(may_manage(&alice, &r));
        assert!(!may_manage(&bob, &r));
        assert!(may_manage(&operator(), &r));
    }
}
