//! Settling the intent journal at start: every change `serve` began at the AS and did not
//! write to the repository (it was killed in between) is finished or rolled back, so that the
//! AS and the repository agree again before the Resource API takes writes.
//!
//! None of these changes was answered to its caller, so each may go either way; the choice is
//! the one that needs no guess:
//! - a create is rolled back: its registration (if the AS made one) is found by name and path
//!   and deleted. Adopting it instead would store a resource the caller never heard of, under
//!   an id it was never given, and leave the PDP without its default policies.
//! - an update is rolled back: the repository's state is written to the AS again.
//! - a delete is finished: the AS may already have forgotten the id, which cannot be given
//!   back, so the resource goes from the AS (a 404 counts as done) and from the repository.
//!
//! Only registrations a journal entry names are touched; an AS resource no entry names (an
//! administrator's, another client's) is never deleted.

use thiserror::Error;
use uma_pep_core::resource::is_open;

use crate::expiry::description_of;
use crate::repository::{Intent, IntentOp, RepoError, Repository};
use crate::resource_set::{dialect_uris, ResourceSetError};

use super::service::Registry;

#[derive(Debug, Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(
        "cannot settle the {op} of {name:?} ({uri}) that a stop interrupted: {source}; retrying until the AS \
         answers"
    )]
    As { op: &'static str, name: String, uri: String, source: ResourceSetError },
}

fn op_name(op: IntentOp) -> &'static str {
    match op {
        IntentOp::Create => "create",
        IntentOp::Update => "update",
        IntentOp::Delete => "delete",
    }
}

/// Settles every pending journal entry, oldest first; how many there were. Stops at the
/// first the AS fails (the rest wait for the next attempt: each is settled independently,
/// and one already settled is gone from the journal).
pub async fn settle_journal<R: Registry>(repo: &Repository, registry: &R) -> Result<usize, ReconcileError> {
    let pending = repo.run(|r| r.pending_intents()).await?;
    for intent in &pending {
        settle(repo, registry, intent).await.map_err(|e| match e {
            Settle::Repo(e) => ReconcileError::Repo(e),
            Settle::As(source) => ReconcileError::As {
                op: op_name(intent.op),
                name: intent.name.clone(),
                uri: intent.uri.clone(),
                source,
            },
        })?;
        let seq = intent.seq;
        repo.run(move |r| r.clear_intent(seq)).await?;
    }
    Ok(pending.len())
}

enum Settle {
    Repo(RepoError),
    As(ResourceSetError),
}

impl From<RepoError> for Settle {
    fn from(e: RepoError) -> Self {
        Settle::Repo(e)
    }
}

impl From<ResourceSetError> for Settle {
    fn from(e: ResourceSetError) -> Self {
        Settle::As(e)
    }
}

async fn settle<R: Registry>(repo: &Repository, registry: &R, intent: &Intent) -> Result<(), Settle> {
    match intent.op {
        IntentOp::Create => {
            // Registrations of that name and path the repository does not hold: what this
            // create may have made. One the repository holds is a later create's, answered.
            // The paths as the dialect registers them (Keycloak: its pattern form, where `/a`
            // and `/a` exact differ), or as a pepctl of before patterns did (the path alone).
            let mut registered = dialect_uris(registry.profile(), &intent.uri, intent.state.exact);
            registered.sort_unstable();
            for found in registry.list_named(&intent.name).await? {
                let mut uris = found.uris.clone();
                uris.sort_unstable();
                uris.dedup();
                let legacy = !intent.state.exact && uris == [intent.uri.clone()];
                if uris != registered && !legacy {
                    continue;
                }
                let id = found.id.clone();
                if repo.run(move |r| r.get(&id)).await?.is_some() {
                    continue;
                }
                registry.delete(&found.id).await?;
                tracing::warn!(resource = %found.id, name = %intent.name, uri = %intent.uri,
                    "removed the registration of a create that a stop interrupted (never answered)");
            }
        }
        IntentOp::Update => {
            // The repository's state now (a later change may have followed the interrupted
            // one) goes back to the AS; a resource deleted since is nothing to restore.
            let Some(id) = intent.resource_id.clone() else { return Ok(()) };
            let Some(current) = repo.run(move |r| r.get(&id)).await? else { return Ok(()) };
            if !is_open(&current.scopes) {
                match registry.update(&current.id, &description_of(&current)).await {
                    Ok(()) => tracing::warn!(resource = %current.id,
                        "restored at the AS the state before an update that a stop interrupted"),
                    // Nothing to restore: the AS lost it (renewal re-creates what expired).
                    Err(ResourceSetError::NotFound(_)) => tracing::warn!(resource = %current.id,
                        "the AS no longer has a resource whose update a stop interrupted"),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        IntentOp::Delete => {
            let Some(id) = intent.resource_id.clone() else { return Ok(()) };
            registry.delete(&id).await?;
            let gone = repo.run(move |r| r.delete(&id)).await?;
            if gone {
                tracing::warn!(resource = ?intent.resource_id, "finished a delete that a stop interrupted");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex as StdMutex;

    use uma_pep_core::config::AsProfile;

    use crate::repository::{Source, StoredResource};
    use crate::resource_set::{Description, Registered};

    /// An AS holding registrations by id; `down` fails every call as a transport error would.
    #[derive(Default)]
    struct FakeAs {
        held: StdMutex<BTreeMap<String, Description>>,
        down: bool,
    }

    impl FakeAs {
        fn hold(&self, id: &str, d: Description) {
            self.held.lock().unwrap().insert(id.into(), d);
        }
        fn ids(&self) -> Vec<String> {
            self.held.lock().unwrap().keys().cloned().collect()
        }
        fn check(&self) -> Result<(), ResourceSetError> {
            if self.down {
                return Err(ResourceSetError::Garbage("down".into()));
            }
            Ok(())
        }
    }

    impl Registry for FakeAs {
        fn profile(&self) -> AsProfile {
            AsProfile::Keycloak
        }
        async fn create(&self, _: &Description) -> Result<Registered, ResourceSetError> {
            unreachable!("settling never registers")
        }
        async fn get(&self, _: &str) -> Result<Option<Registered>, ResourceSetError> {
            unreachable!("settling never reads one")
        }
        async fn update(&self, id: &str, d: &Description) -> Result<(), ResourceSetError> {
            self.check()?;
            match self.held.lock().unwrap().get_mut(id) {
                Some(held) => {
                    *held = d.clone();
                    Ok(())
                }
                None => Err(ResourceSetError::NotFound(id.into())),
            }
        }
        async fn delete(&self, id: &str) -> Result<bool, ResourceSetError> {
            self.check()?;
            Ok(self.held.lock().unwrap().remove(id).is_some())
        }
        async fn list_named(&self, name: &str) -> Result<Vec<Registered>, ResourceSetError> {
            self.check()?;
            Ok(self
                .held
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, d)| d.name == name)
                .map(|(id, d)| Registered {
                    id: id.clone(),
                    name: Some(d.name.clone()),
                    // As Keycloak lists them: its pattern form.
                    uris: crate::resource_set::keycloak_uris(&d.uri, d.exact),
                    ..Registered::default()
                })
                .collect())
        }
    }

    fn res(id: &str, name: &str, uri: &str) -> StoredResource {
        StoredResource {
            id: id.into(),
            name: name.into(),
            uri: uri.into(),
            owner: "alice".into(),
            scopes: vec!["protected_get".into()],
            description: None,
            source: Source::Api,
            as_expires_at: None,
            created_at: 1,
            updated_at: 1,
            ..StoredResource::default()
        }
    }

    #[tokio::test]
    async fn each_interrupted_change_is_settled_and_nothing_else_is_touched() {
        let repo = Repository::open_in_memory().unwrap();
        let fake = FakeAs::default();
        // A create the AS registered before the kill, and an administrator's resource of the
        // same name elsewhere, which no entry names.
        let planned = res("", "half", "/half");
        repo.record_intent(IntentOp::Create, None, "half", "/half", &planned).unwrap();
        fake.hold("orphan", description_of(&res("orphan", "half", "/half")));
        fake.hold("admins", description_of(&res("admins", "half", "/admin")));
        // An update the AS applied: the repository still holds the state before.
        let before = res("u1", "before", "/u");
        repo.upsert(&before).unwrap();
        fake.hold("u1", description_of(&res("u1", "after", "/u")));
        repo.record_intent(IntentOp::Update, Some("u1"), "after", "/u", &before).unwrap();
        // A delete the AS carried out.
        let doomed = res("d1", "doomed", "/d");
        repo.upsert(&doomed).unwrap();
        repo.record_intent(IntentOp::Delete, Some("d1"), "doomed", "/d", &doomed).unwrap();

        // The AS down: nothing settled, every entry kept for the next attempt.
        let down = FakeAs { down: true, ..FakeAs::default() };
        assert!(matches!(settle_journal(&repo, &down).await, Err(ReconcileError::As { op: "create", .. })));
        assert_eq!(repo.pending_intents().unwrap().len(), 3);

        assert_eq!(settle_journal(&repo, &fake).await.unwrap(), 3);
        assert_eq!(fake.ids(), ["admins", "u1"]);
        assert_eq!(fake.held.lock().unwrap()["u1"].name, "before", "rolled back to the repository's state");
        assert!(repo.get("d1").unwrap().is_none(), "the delete finished");
        assert!(repo.pending_intents().unwrap().is_empty());
        assert_eq!(settle_journal(&repo, &fake).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn an_interrupted_create_of_a_pattern_is_found_in_keycloaks_form() {
        let repo = Repository::open_in_memory().unwrap();
        let fake = FakeAs::default();
        let planned = res("", "users", "/users/{u}/**");
        repo.record_intent(IntentOp::Create, None, "users", "/users/{u}/**", &planned).unwrap();
        fake.hold("orphan", description_of(&res("orphan", "users", "/users/{u}/**")));
        // Same name, the same path exactly: another resource, which no entry names.
        let mut exact = res("other", "users", "/users/{u}");
        exact.exact = true;
        fake.hold("other", description_of(&exact));
        assert_eq!(settle_journal(&repo, &fake).await.unwrap(), 1);
        assert_eq!(fake.ids(), ["other"]);
    }

    #[tokio::test]
    async fn a_create_the_repository_holds_is_kept() {
        let repo = Repository::open_in_memory().unwrap();
        let fake = FakeAs::default();
        // The create was answered after all (a retry made it): the repository holds its id.
        repo.record_intent(IntentOp::Create, None, "made", "/made", &res("", "made", "/made")).unwrap();
        repo.upsert(&res("m1", "made", "/made")).unwrap();
        fake.hold("m1", description_of(&res("m1", "made", "/made")));
        assert_eq!(settle_journal(&repo, &fake).await.unwrap(), 1);
        assert_eq!(fake.ids(), ["m1"]);
    }
}
