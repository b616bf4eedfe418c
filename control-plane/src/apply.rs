//! `pepctl resources apply`: makes the AS and the repository hold exactly the resources of a
//! seed-format file. Idempotent in both dialects: a second run changes nothing; Keycloak's
//! 409 on a known name is resolved by looking the resource up and updating it; a resource the
//! AS lost is re-created; a Gluu resource close to its `exp` is refreshed by a PUT; `--prune`
//! deletes file resources the file no longer lists (never ones users created by the API).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uma_pep_core::config::AsProfile;
use uma_pep_core::keypath::{self, KeyError};

use crate::repository::{local_resource_id, now_s, RepoError, Repository, Source, StoredResource};
use crate::resource_set::{Description, Registered, ResourceSetClient, ResourceSetError};
use crate::rules::{check_rules, normalize_methods, registered_scopes, Methods, RuleError};
use uma_pep_core::resource::{is_open, Enforcement, ScopesMode};

pub use crate::repository::NOBODY;

/// The owner to tell the AS: none for the seed's placeholder (the resource server owns those).
pub fn as_owner(owner: &str) -> Option<String> {
    Some(owner.trim()).filter(|o| !o.is_empty() && *o != NOBODY).map(str::to_string)
}

#[derive(Debug, Error)]
pub enum ApplyError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not a valid default-resources file: {problem}")]
    Invalid {
        path: String,
        #[source]
        problem: SeedError,
    },
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// What is wrong with a resource file, naming the key (`default_resources[2].scope`).
#[derive(Debug, Error)]
pub enum SeedError {
    /// Not JSON, an unknown key (with the closest valid one), a missing or mistyped value.
    #[error("{}", key_message(.0))]
    Key(KeyError),
    #[error("`{at}.name` is empty")]
    EmptyName { at: String },
    /// The resource's `resource_uri` or `methods`, as the filter checks them (`field`:
    /// `resource_uri`, `methods.<METHOD>`).
    #[error("`{at}.{field}`: {problem}")]
    Rule { at: String, field: String, problem: String },
    #[error("`{at}.name` {name:?} is listed twice")]
    DuplicateName { at: String, name: String },
    #[error("`{at}.resource_uri` {uri:?} is listed twice (`{other_at}`)")]
    DuplicateUri { at: String, uri: String, other_at: String },
    /// Two entries match the same paths with the same precedence (`/a/{id}` and `/a/*`; `/a`
    /// and `/a/**`): the filter would refuse the table.
    #[error(
        "`{at}.resource_uri` {uri:?} and `{other_at}.resource_uri` {other_uri:?} match the same paths with the \
         same precedence: keep one"
    )]
    SameShape { at: String, uri: String, other_at: String, other_uri: String },
}

/// A key error as shown to operators and API clients: "`default_resources[2].scope`: unknown
/// key; did you mean `default_resources[2].scopes`?".
pub fn key_message(e: &KeyError) -> String {
    if e.path.is_empty() {
        e.problem.clone()
    } else {
        format!("`{}`: {}", e.path, e.problem)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedFile {
    pub default_resources: Vec<SeedEntry>,
}

/// One entry: the seed's keys, and the filter's rules under the filter's names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedEntry {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// A path (it and what is below it) or a pattern (`{name}`, `*`, a last `**`).
    pub resource_uri: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub default_owner: Option<String>,
    #[serde(default)]
    pub exact: bool,
    #[serde(default)]
    pub methods: Option<Methods>,
    #[serde(default)]
    pub scopes_mode: ScopesMode,
    #[serde(default)]
    pub enforcement: Enforcement,
}

/// One validated entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// What the AS is told (`exact` included: Keycloak's `uris` depend on it).
    pub description: Description,
    pub owner: String,
    /// What only the repository and the filter hold.
    pub methods: Option<Methods>,
    pub scopes_mode: ScopesMode,
    pub enforcement: Enforcement,
}

/// Reads and validates the file: no unknown keys, names and paths present and unique (paths
/// and patterns: no two of one shape), written canonically, `methods` as the filter takes them.
pub fn load_seed(path: &Path) -> Result<Vec<Wanted>, ApplyError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ApplyError::Read { path: shown.clone(), source })?;
    parse_seed(&bytes).map_err(|problem| ApplyError::Invalid { path: shown, problem })
}

pub fn parse_seed(bytes: &[u8]) -> Result<Vec<Wanted>, SeedError> {
    let file: SeedFile = keypath::from_slice(bytes).map_err(SeedError::Key)?;
    let mut names = HashSet::new();
    // Shape → the entry that has it, and its uri.
    let mut shapes: HashMap<String, (String, String)> = HashMap::new();
    let mut out = Vec::new();
    for (i, e) in file.default_resources.into_iter().enumerate() {
        let at = format!("default_resources[{i}]");
        if e.name.trim().is_empty() {
            return Err(SeedError::EmptyName { at });
        }
        let rule = |r: RuleError| SeedError::Rule {
            at: at.clone(),
            field: if r.field == "uri" { "resource_uri".into() } else { r.field },
            problem: r.problem,
        };
        let methods = normalize_methods(e.methods).map_err(rule)?;
        let (uri, pattern) = check_rules(&e.resource_uri, e.exact, methods.as_ref()).map_err(rule)?;
        if !names.insert(e.name.clone()) {
            return Err(SeedError::DuplicateName { at, name: e.name });
        }
        match shapes.get(&pattern.shape_key()) {
            Some((other_at, other_uri)) if *other_uri == uri => {
                return Err(SeedError::DuplicateUri { at, uri, other_at: other_at.clone() })
            }
            Some((other_at, other_uri)) => {
                return Err(SeedError::SameShape {
                    at,
                    uri,
                    other_at: other_at.clone(),
                    other_uri: other_uri.clone(),
                })
            }
            None => {
                shapes.insert(pattern.shape_key(), (at.clone(), uri.clone()));
            }
        }
        let owner = e.default_owner.filter(|o| !o.trim().is_empty()).unwrap_or_else(|| NOBODY.to_string());
        out.push(Wanted {
            description: Description {
                name: e.name,
                uri,
                exact: e.exact,
                scopes: registered_scopes(&e.scopes, methods.as_ref()),
                description: e.description,
                owner: as_owner(&owner),
            },
            owner,
            methods,
            scopes_mode: e.scopes_mode,
            enforcement: e.enforcement,
        });
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Created,
    /// Keycloak said 409: the AS had it under this name; looked up and updated.
    Adopted,
    /// Known here, gone from the AS: registered again under a new id.
    Recreated,
    Updated,
    /// Unchanged but close to its AS expiry: PUT again to renew it.
    Refreshed,
    Unchanged,
    Pruned,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub name: String,
    pub uri: String,
    pub id: Option<String>,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub struct Applier<'a> {
    repo: &'a Repository,
    as_client: &'a ResourceSetClient,
    /// Refresh a resource whose AS `exp` is closer than this (seconds).
    refresh_before_s: i64,
    /// The AS's resources by name, read once per run when first needed (Gluu only: there a
    /// name lookup means listing and reading everything, so it is done once, not per entry).
    as_by_name: tokio::sync::Mutex<Option<HashMap<String, Registered>>>,
}

#[derive(Debug, Error)]
enum StepError {
    #[error(transparent)]
    As(#[from] ResourceSetError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("{0}")]
    Conflict(String),
}

impl<'a> Applier<'a> {
    pub fn new(repo: &'a Repository, as_client: &'a ResourceSetClient, refresh_before_s: i64) -> Self {
        Self { repo, as_client, refresh_before_s, as_by_name: tokio::sync::Mutex::new(None) }
    }

    async fn find_at_as(&self, name: &str) -> Result<Option<Registered>, ResourceSetError> {
        let mut index = self.as_by_name.lock().await;
        if index.is_none() {
            let all = self.as_client.list_registered().await?;
            *index = Some(all.into_iter().filter_map(|r| r.name.clone().map(|n| (n, r))).collect());
        }
        Ok(index.as_ref().and_then(|m| m.get(name).cloned()))
    }

    pub async fn apply(&self, wanted: &[Wanted], prune: bool) -> Result<Vec<Report>, ApplyError> {
        let mut reports = Vec::new();
        for w in wanted {
            let d = &w.description;
            let report = match self.one(w).await {
                Ok((id, outcome)) => {
                    Report { name: d.name.clone(), uri: d.uri.clone(), id: Some(id), outcome, error: None }
                }
                Err(e) => {
                    tracing::warn!(name = %d.name, error = %e, "resource not applied");
                    Report {
                        name: d.name.clone(),
                        uri: d.uri.clone(),
                        id: None,
                        outcome: Outcome::Failed,
                        error: Some(e.to_string()),
                    }
                }
            };
            reports.push(report);
        }
        if prune {
            let keep: HashSet<&str> = wanted.iter().map(|w| w.description.name.as_str()).collect();
            for r in self.repo.list()? {
                if r.source != Source::File || keep.contains(r.name.as_str()) {
                    continue;
                }
                // An open resource was never registered at the AS.
                let at_as = if is_open(&r.scopes) { Ok(true) } else { self.as_client.delete(&r.id).await };
                let outcome = match at_as {
                    Ok(_) => match self.repo.delete(&r.id) {
                        Ok(_) => Ok(Outcome::Pruned),
                        Err(e) => Err(e.to_string()),
                    },
                    Err(e) => Err(e.to_string()),
                };
                reports.push(Report {
                    name: r.name,
                    uri: r.uri,
                    id: Some(r.id),
                    outcome: outcome.as_ref().map_or(Outcome::Failed, |o| *o),
                    error: outcome.err(),
                });
            }
        }
        Ok(reports)
    }

    fn record(
        &self,
        w: &Wanted,
        id: &str,
        exp: Option<i64>,
        previous: Option<&StoredResource>,
    ) -> StoredResource {
        let now = now_s();
        StoredResource {
            id: id.to_string(),
            name: w.description.name.clone(),
            uri: w.description.uri.clone(),
            exact: w.description.exact,
            methods: w.methods.clone(),
            scopes_mode: w.scopes_mode,
            enforcement: w.enforcement,
            // The repository is the record of owners: a resource whose ownership was moved
            // through the API keeps its new owner when the file is applied again.
            owner: previous.map_or_else(|| w.owner.clone(), |p| p.owner.clone()),
            scopes: w.description.scopes.clone(),
            description: w.description.description.clone(),
            source: Source::File,
            as_expires_at: exp,
            created_at: previous.map_or(now, |p| p.created_at),
            updated_at: now,
        }
    }

    /// Whether the repository's record says something else than the file's entry.
    fn differs(existing: &StoredResource, w: &Wanted) -> bool {
        let d = &w.description;
        existing.uri != d.uri
            || existing.exact != d.exact
            || existing.scopes != d.scopes
            || existing.description != d.description
            || existing.methods != w.methods
            || existing.scopes_mode != w.scopes_mode
            || existing.enforcement != w.enforcement
    }

    fn needs_refresh(&self, exp: Option<i64>) -> bool {
        exp.is_some_and(|e| e - now_s() < self.refresh_before_s)
    }

    async fn one(&self, w: &Wanted) -> Result<(String, Outcome), StepError> {
        // The file's own resource of that name; names are unique per owner, so an API resource
        // may share it (then the conflict below applies only when the owner is the same too).
        let by_name = self.repo.get_file_resource_by_name(&w.description.name)?;
        // The repository is the record of owners (a transfer through the API is kept), so a
        // known resource is described to the AS with its current owner.
        let current = Description {
            owner: by_name.as_ref().map_or_else(|| w.description.owner.clone(), |e| as_owner(&e.owner)),
            ..w.description.clone()
        };
        let d = &current;
        // Two resources of one shape would make the filter refuse the whole table.
        let shape = crate::repository::stored_shape(&d.uri, d.exact).unwrap_or_default();
        if let Some(other) = self.repo.get_by_shape(&shape)? {
            if other.name != d.name || other.source != Source::File {
                let what = if other.uri == d.uri {
                    format!("path {} already belongs to resource {:?} ({})", d.uri, other.name, other.id)
                } else {
                    format!(
                        "{} matches the same paths with the same precedence as {} of resource {:?} ({})",
                        d.uri, other.uri, other.name, other.id
                    )
                };
                return Err(StepError::Conflict(what));
            }
        }
        let owner = by_name.as_ref().map_or(w.owner.as_str(), |e| e.owner.as_str());
        if let Some(existing) =
            self.repo.get_by_owner_and_name(owner, &d.name)?.filter(|e| e.source == Source::Api)
        {
            // The AS keeps names unique per owner too (Keycloak answers 409): this one is taken.
            return Err(StepError::Conflict(format!(
                "name {:?} belongs to a resource of the same owner created through the API ({})",
                d.name, existing.id
            )));
        }
        if is_open(&d.scopes) {
            return self.open_one(w, by_name).await;
        }
        match by_name {
            // Open until now: never registered, so registered now under an AS id.
            Some(existing) if is_open(&existing.scopes) => {
                let (r, outcome) = self.create_or_adopt(d).await?;
                let outcome = if outcome == Outcome::Created { Outcome::Updated } else { outcome };
                self.repo.replace_id(&existing.id, &self.record(w, &r.id, r.exp, Some(&existing)))?;
                Ok((r.id, outcome))
            }
            Some(existing) => match self.as_client.get(&existing.id).await? {
                None => {
                    let (r, outcome) = self.create_or_adopt(d).await?;
                    let outcome = if outcome == Outcome::Created { Outcome::Recreated } else { outcome };
                    let rec = self.record(w, &r.id, r.exp, Some(&existing));
                    self.repo.replace_id(&existing.id, &rec)?;
                    Ok((r.id, outcome))
                }
                Some(at_as) => {
                    let changed_here = Self::differs(&existing, w);
                    let (outcome, exp) = if !at_as.matches(d, &self.as_client.uris(d)) {
                        (Outcome::Updated, self.as_client.update_and_renew(&existing.id, d, &at_as).await?)
                    } else if self.needs_refresh(at_as.exp) {
                        (Outcome::Refreshed, self.as_client.update_and_renew(&existing.id, d, &at_as).await?)
                    } else if changed_here {
                        (Outcome::Updated, at_as.exp)
                    } else {
                        return Ok((existing.id, Outcome::Unchanged));
                    };
                    self.repo.upsert(&self.record(w, &existing.id, exp, Some(&existing)))?;
                    Ok((existing.id, outcome))
                }
            },
            None => {
                let (r, outcome) = self.create_or_adopt(d).await?;
                self.repo.upsert(&self.record(w, &r.id, r.exp, None))?;
                Ok((r.id, outcome))
            }
        }
    }

    /// An open resource is kept here only: the AS never sees it (the filter passes it through
    /// unchecked). One that was registered until now is removed from the AS.
    async fn open_one(
        &self,
        w: &Wanted,
        existing: Option<StoredResource>,
    ) -> Result<(String, Outcome), StepError> {
        let Some(existing) = existing else {
            let id = local_resource_id()?;
            self.repo.upsert(&self.record(w, &id, None, None))?;
            return Ok((id, Outcome::Created));
        };
        if !is_open(&existing.scopes) {
            self.as_client.delete(&existing.id).await?;
            let id = local_resource_id()?;
            self.repo.replace_id(&existing.id, &self.record(w, &id, None, Some(&existing)))?;
            return Ok((id, Outcome::Updated));
        }
        if !Self::differs(&existing, w) {
            return Ok((existing.id, Outcome::Unchanged));
        }
        self.repo.upsert(&self.record(w, &existing.id, None, Some(&existing)))?;
        Ok((existing.id, Outcome::Updated))
    }

    async fn adopt(&self, found: Registered, d: &Description) -> Result<(Registered, Outcome), StepError> {
        if found.matches(d, &self.as_client.uris(d)) {
            return Ok((found, Outcome::Adopted));
        }
        let exp = self.as_client.update_and_renew(&found.id, d, &found).await?;
        Ok((Registered { exp, ..found }, Outcome::Adopted))
    }

    async fn create_or_adopt(&self, d: &Description) -> Result<(Registered, Outcome), StepError> {
        // Gluu allows duplicate names, so a lost repository would silently double every
        // resource: look for ours by name first. Keycloak refuses the duplicate (409) instead.
        let gluu = self.as_client.profile() == AsProfile::Uma2;
        if gluu {
            if let Some(found) = self.find_at_as(&d.name).await? {
                return self.adopt(found, d).await;
            }
        }
        match self.as_client.create(d).await {
            Ok(r) => {
                // Gluu's create answer has no exp; read it so expiry can be tracked.
                let exp = match r.exp {
                    Some(e) => Some(e),
                    None if gluu => self.as_client.get(&r.id).await?.and_then(|x| x.exp),
                    None => None,
                };
                Ok((Registered { exp, ..r }, Outcome::Created))
            }
            Err(ResourceSetError::Conflict(_)) => {
                let found = self.as_client.find_by_name(&d.name).await?.ok_or_else(|| {
                    StepError::Conflict(format!(
                        "the AS refused {:?} as a duplicate but has no resource of that name",
                        d.name
                    ))
                })?;
                self.adopt(found, d).await
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_file_shape() {
        let w = parse_seed(
            br#"{"default_resources":[
              {"name":"Base Path","description":"open","resource_uri":"/","scopes":["public_access"],"default_owner":"0000000000000"},
              {"name":"Eric","description":"eric's","resource_uri":"/eric/","scopes":[],"default_owner":"d3688daa"},
              {"name":"NoOwner","resource_uri":"/x"}]}"#,
        )
        .unwrap();
        assert_eq!(w[0].description.scopes, vec!["public_access"]);
        assert_eq!(w[1].description.uri, "/eric");
        assert_eq!(w[1].description.scopes.len(), 6);
        assert_eq!(w[1].owner, "d3688daa");
        assert_eq!(w[1].description.owner.as_deref(), Some("d3688daa"), "told to the AS");
        assert_eq!(w[0].description.owner, None, "the placeholder owner is not sent: the RS owns it");
        assert_eq!(w[2].owner, NOBODY);
        assert_eq!(w[2].description.owner, None);
        assert_eq!(w[2].description.description, None);
    }

    #[test]
    fn seed_file_errors_name_the_entry() {
        let dup = parse_seed(
            br#"{"default_resources":[{"name":"A","resource_uri":"/a"},{"name":"B","resource_uri":"/a/"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(dup.contains("default_resources[1].resource_uri"), "{dup}");
        let dup = parse_seed(
            br#"{"default_resources":[{"name":"A","resource_uri":"/a"},{"name":"A","resource_uri":"/b"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(dup.contains("default_resources[1].name"), "{dup}");
        assert!(parse_seed(br#"{"default_resources":[{"name":"A","resource_uri":"a"}]}"#).is_err());
        let missing = parse_seed(br#"{"default_resources":[{"name":"A"}]}"#).unwrap_err().to_string();
        assert_eq!(missing, "`default_resources[0].resource_uri`: is required");
        assert!(parse_seed(b"[]").is_err());
        assert!(parse_seed(b"{}").unwrap_err().to_string().contains("default_resources"));
    }

    #[test]
    fn unknown_keys_are_refused_with_the_closest_valid_one() {
        let e = parse_seed(
            br#"{"default_resources":[{"name":"A","resource_uri":"/a"},{"name":"B","resource_uri":"/b"},
                 {"name":"C","resource_uri":"/c","scope":["read"]}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`default_resources[2].scope`: unknown key; did you mean `default_resources[2].scopes`?"
        );
        let e = parse_seed(br#"{"default_resources":[{"name":"A","resource_url":"/a"}]}"#).unwrap_err();
        assert!(e.to_string().contains("did you mean `default_resources[0].resource_uri`?"), "{e}");
        let e = parse_seed(br#"{"resources":[]}"#).unwrap_err().to_string();
        assert!(e.starts_with("`resources`: unknown key") && e.contains("`default_resources`"), "{e}");
    }

    #[test]
    fn entries_carry_patterns_and_the_filters_rules() {
        let w = parse_seed(
            br#"{"default_resources":[
              {"name":"Orders","resource_uri":"/orders/{id}","scopes":["audit"],
               "methods":{"GET":["read"],"DELETE":["admin"],"PROPFIND":["read"]},"scopes_mode":"any","enforcement":"permissive"},
              {"name":"Users","resource_uri":"/users/{u}/**/"},
              {"name":"List","resource_uri":"/orders","exact":true},
              {"name":"All orders","resource_uri":"/orders"}]}"#,
        )
        .unwrap();
        assert_eq!(w[0].description.uri, "/orders/{id}");
        assert_eq!(
            w[0].description.scopes,
            ["audit", "admin", "read"],
            "the given scopes and the methods' ones"
        );
        assert_eq!(w[0].methods.as_ref().map(|m| m.len()), Some(3));
        assert_eq!((w[0].scopes_mode, w[0].enforcement), (ScopesMode::Any, Enforcement::Permissive));
        assert_eq!(w[1].description.uri, "/users/{u}/**", "a trailing / trimmed");
        assert_eq!(w[1].description.scopes.len(), 6, "no methods: the six method scopes");
        assert!(w[2].description.exact && !w[3].description.exact);
        assert_eq!((w[1].scopes_mode, w[1].enforcement), (ScopesMode::All, Enforcement::Enforcing));
    }

    #[test]
    fn two_entries_of_one_shape_are_refused_naming_both() {
        let e = parse_seed(
            br#"{"default_resources":[{"name":"A","resource_uri":"/a/{id}"},{"name":"B","resource_uri":"/a/*"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "`default_resources[1].resource_uri` \"/a/*\" and `default_resources[0].resource_uri` \"/a/{id}\" match \
             the same paths with the same precedence: keep one"
        );
        let e = parse_seed(
            br#"{"default_resources":[{"name":"A","resource_uri":"/a"},{"name":"B","resource_uri":"/a/**"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("default_resources[0].resource_uri"), "{e}");
        let e = parse_seed(br#"{"default_resources":[{"name":"A","resource_uri":"/a/{id}x"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("`default_resources[0].resource_uri`: \"/a/{id}x\": segment"), "{e}");
        let e =
            parse_seed(br#"{"default_resources":[{"name":"A","resource_uri":"/a","methods":{"GET":[]}}]}"#)
                .unwrap_err()
                .to_string();
        assert!(e.starts_with("`default_resources[0].methods.GET`: list at least one scope"), "{e}");
        let e =
            parse_seed(br#"{"default_resources":[{"name":"A","resource_uri":"/a","enforcement":"off"}]}"#)
                .unwrap_err()
                .to_string();
        assert!(e.starts_with("`default_resources[0].enforcement`"), "{e}");
        let e = parse_seed(br#"{"default_resources":[{"name":"A","resource_uri":"/a","scope_mode":"any"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `default_resources[0].scopes_mode`?"), "{e}");
    }

    #[test]
    fn paths_are_taken_as_written_or_refused() {
        let e = parse_seed(br#"{"default_resources":[{"name":"A","resource_uri":"/a/../b"}]}"#).unwrap_err();
        assert!(matches!(&e, SeedError::Rule { field, .. } if field == "resource_uri"), "{e:?}");
        let shown = e.to_string();
        assert!(shown.starts_with("`default_resources[0].resource_uri`"), "{shown}");
        assert!(shown.contains(r#"write "/b""#), "{shown}");
        assert!(parse_seed(br#"{"default_resources":[{"name":"A","resource_uri":"/a//b"}]}"#).is_err());
    }
}
