//! Keeping registrations alive at an AS whose resources expire (Gluu/Janssen: 30 days by
//! default). `pepctl serve` runs `refresh_expiring` periodically for every resource, since
//! resources created through the API are never re-applied from a file; `resources apply`
//! does the same for the file's own.

use thiserror::Error;

use crate::repository::{now_s, RepoError, Repository, StoredResource};
use crate::resource_set::{Description, ResourceSetClient, ResourceSetError};

#[derive(Debug, Error)]
pub enum ExpiryError {
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// What happened to one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// PUT again; the AS's new `exp`.
    Renewed {
        id: String,
        exp: Option<i64>,
    },
    /// The AS had lost it: registered again under a new id (owner kept).
    Recreated {
        old_id: String,
        new_id: String,
    },
    Failed {
        id: String,
        error: String,
    },
}

pub fn description_of(r: &StoredResource) -> Description {
    Description {
        name: r.name.clone(),
        uri: r.uri.clone(),
        exact: r.exact,
        scopes: r.scopes.clone(),
        description: r.description.clone(),
        owner: crate::apply::as_owner(&r.owner),
    }
}

/// Resources whose AS expiry is closer than `window_s` (pure: unit-tested).
pub fn expiring(list: &[StoredResource], now: i64, window_s: i64) -> Vec<StoredResource> {
    list.iter().filter(|r| r.as_expires_at.is_some_and(|e| e - now < window_s)).cloned().collect()
}

async fn renew(
    repo: &Repository,
    as_client: &ResourceSetClient,
    r: &StoredResource,
) -> Result<Refreshed, ResourceSetError> {
    let d = description_of(r);
    match as_client.renew(&r.id, &d).await {
        Ok(exp) => {
            let mut next = r.clone();
            next.as_expires_at = exp;
            next.updated_at = now_s();
            let stored = next.clone();
            repo.run(move |repo| repo.upsert(&stored))
                .await
                .map_err(|e| ResourceSetError::Garbage(e.to_string()))?;
            Ok(Refreshed::Renewed { id: r.id.clone(), exp })
        }
        Err(ResourceSetError::NotFound(_)) => {
            let created = as_client.create(&d).await?;
            let exp = match created.exp {
                Some(e) => Some(e),
                None => as_client.get(&created.id).await?.and_then(|x| x.exp),
            };
            let mut next = r.clone();
            next.id = created.id.clone();
            next.as_expires_at = exp;
            next.updated_at = now_s();
            let old = r.id.clone();
            let stored = next.clone();
            repo.run(move |repo| repo.replace_id(&old, &stored))
                .await
                .map_err(|e| ResourceSetError::Garbage(e.to_string()))?;
            Ok(Refreshed::Recreated { old_id: r.id.clone(), new_id: created.id })
        }
        Err(e) => Err(e),
    }
}

/// Renews every resource that expires within `window_s`.
pub async fn refresh_expiring(
    repo: &Repository,
    as_client: &ResourceSetClient,
    window_s: i64,
) -> Result<Vec<Refreshed>, ExpiryError> {
    let list = repo.run(|r| r.list()).await?;
    let mut out = Vec::new();
    for r in expiring(&list, now_s(), window_s) {
        let outcome = match renew(repo, as_client, &r).await {
            Ok(o) => o,
            Err(e) => Refreshed::Failed { id: r.id.clone(), error: e.to_string() },
        };
        match &outcome {
            Refreshed::Renewed { id, exp } => {
                tracing::info!(resource = %id, exp = ?exp, "renewed the AS registration")
            }
            Refreshed::Recreated { old_id, new_id } => {
                tracing::warn!(old = %old_id, new = %new_id, "the AS had lost a resource; registered it again")
            }
            Refreshed::Failed { id, error } => {
                tracing::warn!(resource = %id, error = %error, "could not renew")
            }
        }
        out.push(outcome);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::Source;

    fn res(id: &str, exp: Option<i64>) -> StoredResource {
        StoredResource {
            id: id.into(),
            name: id.into(),
            uri: format!("/{id}"),
            owner: "o".into(),
            scopes: vec![],
            description: None,
            source: Source::Api,
            as_expires_at: exp,
            created_at: 0,
            updated_at: 0,
            ..StoredResource::default()
        }
    }

    #[test]
    fn only_resources_inside_the_window_are_picked() {
        let list = vec![
            res("never", None),
            res("soon", Some(1_100)),
            res("later", Some(10_000)),
            res("past", Some(500)),
        ];
        let picked: Vec<String> = expiring(&list, 1_000, 600).into_iter().map(|r| r.id).collect();
        assert_eq!(picked, vec!["soon", "past"]);
    }
}
