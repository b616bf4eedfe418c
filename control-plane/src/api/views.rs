//! What the Resource API reads and writes: request bodies, the resource representation and the
//! other answers. Each is the type the handlers use, and the OpenAPI document's schemas are
//! generated from them (`utoipa::ToSchema`), so the document says what is sent.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use uma_pep_core::resource::{Enforcement, ScopesMode};
use utoipa::{IntoParams, ToSchema};

use crate::repository::StoredResource;
use crate::rules::Methods;

// core's `ScopesMode` and `Enforcement` have no schema (core has no OpenAPI dependency): these
// restate them for the document.

/// How many of a method's scopes an RPT must hold.
#[derive(ToSchema)]
#[schema(as = ScopesMode, rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ScopesModeSchema {
    /// The RPT must hold every scope of the method (the default).
    All,
    /// One of the method's scopes is enough.
    Any,
}

/// What a decision does to a request on the resource.
#[derive(ToSchema)]
#[schema(as = Enforcement, rename_all = "lowercase")]
#[allow(dead_code)]
pub enum EnforcementSchema {
    /// A denied request is answered 401/403 (the default).
    Enforcing,
    /// Decided and logged, a denied request is forwarded with the decision in a header.
    Permissive,
    /// No token needed: the request passes.
    Disabled,
}

/// A field that may be absent (`None`), `null` (`Some(None)`) or a value.
fn absent_null_or<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A resource: clean names plus the EOEPCA PEP's `_id`/`_name`/`_reverse_match_url` and
/// `scopes`, which its clients read (the ADES reads `scopes` from the create answer and the list).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Resource)]
pub struct ResourceView {
    /// The AS resource id (a local UUID for an open resource).
    pub id: String,
    /// The seed's name of `id`.
    #[serde(rename = "_id")]
    pub seed_id: String,
    pub name: String,
    /// The seed's name of `name`.
    #[serde(rename = "_name")]
    pub seed_name: String,
    /// The protected path (it and what is below it), or a pattern: `{name}` or `*` for one
    /// segment, a last `**` for any number (canonical spelling).
    pub icon_uri: String,
    /// The seed's name of `icon_uri`.
    #[serde(rename = "_reverse_match_url")]
    pub reverse_match_url: String,
    /// The path alone, not what is below it. Absent when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[schema(required = false)]
    pub exact: bool,
    /// HTTP method → the scopes it needs; a method not listed is refused (405). Absent: the
    /// filter's `method_scopes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false)]
    pub methods: Option<BTreeMap<String, Vec<String>>>,
    /// Absent when `all`.
    #[serde(skip_serializing_if = "ScopesMode::is_default")]
    #[schema(value_type = ScopesModeSchema, required = false)]
    pub scopes_mode: ScopesMode,
    /// Absent when `enforcing`.
    #[serde(skip_serializing_if = "Enforcement::is_default")]
    #[schema(value_type = EnforcementSchema, required = false)]
    pub enforcement: Enforcement,
    pub resource_scopes: Vec<String>,
    /// The EOEPCA PEP's name of `resource_scopes`: the same list.
    pub scopes: Vec<String>,
    pub description: Option<String>,
    /// The owner's `sub`.
    pub ownership_id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

impl From<&StoredResource> for ResourceView {
    fn from(r: &StoredResource) -> Self {
        Self {
            id: r.id.clone(),
            seed_id: r.id.clone(),
            name: r.name.clone(),
            seed_name: r.name.clone(),
            icon_uri: r.uri.clone(),
            reverse_match_url: r.uri.clone(),
            exact: r.exact,
            methods: r.methods.clone(),
            scopes_mode: r.scopes_mode,
            enforcement: r.enforcement,
            resource_scopes: r.scopes.clone(),
            scopes: r.scopes.clone(),
            description: r.description.clone(),
            ownership_id: r.owner.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// `POST /resources`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewResource {
    #[schema(required = true)]
    pub name: Option<String>,
    /// The path to protect (it and what is below it), or a pattern (`/orders/{id}`,
    /// `/users/{u}/**`, `/a/*`), written canonically.
    #[schema(required = true)]
    pub icon_uri: Option<String>,
    /// Another name of `icon_uri`.
    #[schema(deprecated)]
    pub uri: Option<String>,
    /// The path alone, not what is below it (default false).
    pub exact: Option<bool>,
    /// HTTP method → the scopes it needs (any RFC 9110 method name, WebDAV's too); a method
    /// not listed is refused (405). Their scopes are registered with the resource.
    #[schema(value_type = Option<BTreeMap<String, Vec<String>>>)]
    pub methods: Option<Methods>,
    /// `all` (default): the RPT holds every scope of the method; `any`: one is enough.
    #[schema(value_type = Option<ScopesModeSchema>)]
    pub scopes_mode: Option<ScopesMode>,
    /// `enforcing` (default), `permissive` or `disabled`.
    #[schema(value_type = Option<EnforcementSchema>)]
    pub enforcement: Option<Enforcement>,
    /// Without `public_access`, `Authenticated`, `authenticated` or `open` (and without
    /// `methods`), the six method scopes are added; with `methods`, their scopes.
    /// `open`: passed through with no token check, not registered at the AS.
    pub resource_scopes: Option<Vec<String>>,
    /// The EOEPCA PEP's name of `resource_scopes`, read when `resource_scopes` is absent.
    pub scopes: Option<Vec<String>>,
    pub description: Option<String>,
    /// Operator only: the owner to create for.
    pub uuid: Option<String>,
}

/// `PUT` (name and resource_scopes required) and `PATCH /resources/{id}`. The
/// representation's read-only fields are accepted and ignored, so that a resource read with
/// GET can be edited and sent back.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceUpdate {
    pub name: Option<String>,
    pub resource_scopes: Option<Vec<String>>,
    /// The EOEPCA PEP's name of `resource_scopes`, read when `resource_scopes` is absent (a
    /// resource read with GET and sent back carries both: `resource_scopes` wins).
    pub scopes: Option<Vec<String>>,
    pub description: Option<String>,
    /// Operator only: move the resource.
    pub icon_uri: Option<String>,
    /// Operator only, as a move: the path alone, or (false) what is below it too.
    pub exact: Option<bool>,
    /// HTTP method → scopes. PUT: absent clears it; PATCH: absent keeps it, `null` clears it.
    #[serde(default, deserialize_with = "absent_null_or")]
    #[schema(value_type = Option<BTreeMap<String, Vec<String>>>, nullable)]
    pub methods: Option<Option<Methods>>,
    /// PUT: absent is `all`; PATCH: absent keeps it.
    #[schema(value_type = Option<ScopesModeSchema>)]
    pub scopes_mode: Option<ScopesMode>,
    /// PUT: absent is `enforcing`; PATCH: absent keeps it.
    #[schema(value_type = Option<EnforcementSchema>)]
    pub enforcement: Option<Enforcement>,
    /// Transfer to this owner (owner or operator).
    pub ownership_id: Option<String>,
    /// Read-only, ignored.
    #[serde(default, rename = "id")]
    #[schema(value_type = Option<String>)]
    pub read_only_id: Option<serde::de::IgnoredAny>,
    /// Read-only, ignored.
    #[serde(default, rename = "_id")]
    #[schema(value_type = Option<String>)]
    pub read_only_seed_id: Option<serde::de::IgnoredAny>,
    /// Read-only, ignored.
    #[serde(default, rename = "_name")]
    #[schema(value_type = Option<String>)]
    pub read_only_seed_name: Option<serde::de::IgnoredAny>,
    /// Read-only, ignored.
    #[serde(default, rename = "_reverse_match_url")]
    #[schema(value_type = Option<String>)]
    pub read_only_reverse_match_url: Option<serde::de::IgnoredAny>,
    /// Read-only, ignored.
    #[serde(default, rename = "created_at")]
    #[schema(value_type = Option<i64>)]
    pub read_only_created_at: Option<serde::de::IgnoredAny>,
    /// Read-only, ignored.
    #[serde(default, rename = "updated_at")]
    #[schema(value_type = Option<i64>)]
    pub read_only_updated_at: Option<serde::de::IgnoredAny>,
}

/// `GET /resources?path=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// A path: the one resource registered there (any spelling of it).
    pub path: Option<String>,
}

/// `GET /resources`: a list, or the one resource at `?path=`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Listing {
    All(Vec<ResourceView>),
    One(Box<ResourceView>),
}

/// `GET /readyz` once the AS has been reached.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    pub ready: bool,
}

/// `GET /readyz` before the AS has been reached.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotReady {
    pub ready: bool,
    pub error: &'static str,
    /// Why the AS has not been reached.
    pub error_description: String,
    pub attempts: u32,
}

/// The schema of `GET /filter-config`, which sends core's `FilterTable` (the filter parses the
/// same type). core has no OpenAPI dependency, so its shape is restated here; the tests check
/// that what is sent validates against it.
#[derive(ToSchema)]
#[schema(as = FilterTable)]
#[allow(dead_code)]
pub struct FilterTableSchema {
    resources: Vec<FilterResourceSchema>,
    /// Bumped by every change of the repository.
    version: i64,
    /// The repository's generation: a random id drawn when its database was created. The
    /// filter takes an empty table only of the generation it already follows, so that a pepctl
    /// that lost its database never unprotects every path.
    #[schema(required = false)]
    generation: Option<String>,
}

/// One entry of the filter's resource table (core's `Resource`: every rule is absent when it
/// holds its default).
#[derive(ToSchema)]
#[schema(as = FilterResource)]
#[allow(dead_code)]
pub struct FilterResourceSchema {
    id: String,
    /// The protected path or pattern, canonical.
    uri: String,
    /// Absent when empty.
    #[schema(required = false)]
    scopes: Vec<String>,
    name: Option<String>,
    /// Absent when false.
    #[schema(required = false)]
    exact: bool,
    #[schema(required = false)]
    methods: Option<BTreeMap<String, Vec<String>>>,
    /// Absent when `all`.
    #[schema(required = false)]
    scopes_mode: ScopesModeSchema,
    /// Absent when `enforcing`.
    #[schema(required = false)]
    enforcement: EnforcementSchema,
}
