//! `ConfigHub`: the filter configuration pepctl publishes, the Envoys subscribed to it, and
//! which publication each has applied (ACK) or refused (NACK). A write of the Resource API
//! waits here, bounded, until every subscribed Envoy has applied a table that holds it.
//!
//! Transport-free: the ECDS streams (`ecds`) report what Envoy says; this module only keeps
//! the books, so it is tested without a socket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use envoy_types::pb::google::protobuf::Any;
use serde::Serialize;
use tokio::sync::{watch, Notify};

/// How many publications' version names `/xds-status` can show.
const VERSIONS_KEPT: u64 = 1024;

/// One publication of the filter's configuration.
#[derive(Debug)]
pub struct Published {
    /// Publication number in this process; acknowledgements are compared by it.
    pub seq: u64,
    /// What Envoy shows as the version in its config dump: `<generation>.<repository version>`.
    pub version_info: String,
    /// The `TypedExtensionConfig` sent, encoded once for every stream.
    pub resource: Any,
    /// The repository version and generation it was made from.
    pub stamp: (i64, String),
}

#[derive(Debug, Clone)]
struct Subscriber {
    node: String,
    /// The latest publication this Envoy acknowledged (0: none yet).
    applied: u64,
    /// The latest publication it refused, with Envoy's reason.
    refused: Option<(u64, String)>,
}

/// How a publication reached the subscribed Envoys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rollout {
    pub version: String,
    /// Envoys subscribed while it was waited for.
    pub envoys: usize,
    pub applied: usize,
    /// Envoys that refused it: node id and Envoy's reason. They keep the configuration they had.
    pub refused: Vec<(String, String)>,
    /// Envoys that neither applied nor refused it in time.
    pub pending: Vec<String>,
    pub waited_ms: u64,
}

impl Rollout {
    /// Every subscribed Envoy applied it.
    pub fn complete(&self) -> bool {
        self.refused.is_empty() && self.pending.is_empty()
    }
}

/// One subscribed Envoy's state, for `/xds-status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SubscriberStatus {
    pub node: String,
    /// The version it applied last; `None` before its first acknowledgement.
    pub applied: Option<String>,
    pub refused: Option<RefusedVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RefusedVersion {
    pub seq: u64,
    pub reason: String,
}

pub struct ConfigHub {
    current: watch::Sender<Option<Arc<Published>>>,
    subscribers: Mutex<HashMap<u64, Subscriber>>,
    /// Woken by every acknowledgement, refusal and departure.
    changed: Notify,
    next_id: AtomicU64,
    next_seq: AtomicU64,
    /// Version strings by publication, for the status of what Envoys applied.
    versions: Mutex<HashMap<u64, String>>,
}

impl Default for ConfigHub {
    fn default() -> Self {
        Self::new()
    }
}

/// The books stay usable after a panic elsewhere: they hold plain counters.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ConfigHub {
    pub fn new() -> Self {
        Self {
            current: watch::Sender::new(None),
            subscribers: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            next_id: AtomicU64::new(1),
            next_seq: AtomicU64::new(1),
            versions: Mutex::new(HashMap::new()),
        }
    }

    /// The publication in force, if any.
    pub fn current(&self) -> Option<Arc<Published>> {
        self.current.borrow().clone()
    }

    /// Wakes on every new publication.
    pub fn watch(&self) -> watch::Receiver<Option<Arc<Published>>> {
        self.current.subscribe()
    }

    /// Makes `resource` the publication in force and sends it to every stream.
    pub fn publish(&self, stamp: (i64, String), version_info: String, resource: Any) -> Arc<Published> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        {
            let mut versions = lock(&self.versions);
            // Bounded: an Envoy that applied none of the last ones shows no version name.
            versions.retain(|kept, _| kept.saturating_add(VERSIONS_KEPT) > seq);
            versions.insert(seq, version_info.clone());
        }
        let published = Arc::new(Published { seq, version_info, resource, stamp });
        self.current.send_replace(Some(published.clone()));
        published
    }

    /// An Envoy's stream subscribed to the configuration; it counts until the handle drops.
    pub fn subscribe(self: &Arc<Self>, node: String) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.subscribers).insert(id, Subscriber { node, applied: 0, refused: None });
        Subscription { hub: self.clone(), id }
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut Subscriber)) {
        if let Some(s) = lock(&self.subscribers).get_mut(&id) {
            f(s);
        }
        self.changed.notify_waiters();
    }

    /// How publication `seq` stands now.
    fn rollout_now(&self, published: &Published, started: Instant) -> Rollout {
        let subscribers = lock(&self.subscribers);
        let mut rollout = Rollout {
            version: published.version_info.clone(),
            envoys: subscribers.len(),
            applied: 0,
            refused: Vec::new(),
            pending: Vec::new(),
            waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        for s in subscribers.values() {
            if s.applied >= published.seq {
                rollout.applied += 1;
            } else if let Some((_, reason)) = s.refused.as_ref().filter(|(seq, _)| *seq >= published.seq) {
                rollout.refused.push((s.node.clone(), reason.clone()));
            } else {
                rollout.pending.push(s.node.clone());
            }
        }
        rollout.refused.sort();
        rollout.pending.sort();
        rollout
    }

    /// Subscribed Envoys that neither applied nor refused publication `seq` (or a later one).
    fn pending(&self, seq: u64) -> usize {
        lock(&self.subscribers)
            .values()
            .filter(|s| s.applied < seq && s.refused.as_ref().is_none_or(|(r, _)| *r < seq))
            .count()
    }

    /// Waits until every subscribed Envoy has applied `published` or a later publication, or
    /// refused it, or `timeout` passed; Envoys that leave meanwhile are not waited for.
    pub async fn wait_applied(&self, published: &Published, timeout: Duration) -> Rollout {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the books are read: an acknowledgement in between still wakes.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Counted without allocating: with a thousand Envoys this runs once per ACK.
            if self.pending(published.seq) == 0 {
                return self.rollout_now(published, started);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.rollout_now(published, started);
            }
        }
    }

    /// Every subscribed Envoy and what it applied or refused last.
    pub fn status(&self) -> Vec<SubscriberStatus> {
        let versions = lock(&self.versions);
        let mut list: Vec<SubscriberStatus> = lock(&self.subscribers)
            .values()
            .map(|s| SubscriberStatus {
                node: s.node.clone(),
                applied: versions.get(&s.applied).cloned(),
                refused: s
                    .refused
                    .as_ref()
                    .map(|(seq, reason)| RefusedVersion { seq: *seq, reason: reason.clone() }),
            })
            .collect();
        list.sort_by(|a, b| a.node.cmp(&b.node));
        list
    }

    /// Envoys subscribed now.
    pub fn subscribers(&self) -> usize {
        lock(&self.subscribers).len()
    }
}

/// An Envoy's subscription: acknowledgements and refusals go through it, and dropping it (the
/// stream ended) stops it being waited for.
pub struct Subscription {
    hub: Arc<ConfigHub>,
    id: u64,
}

impl Subscription {
    pub fn applied(&self, seq: u64) {
        self.hub.update(self.id, |s| s.applied = s.applied.max(seq));
    }

    pub fn refused(&self, seq: u64, reason: String) {
        self.hub.update(self.id, |s| s.refused = Some((seq, reason)));
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        lock(&self.hub.subscribers).remove(&self.id);
        self.hub.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(hub: &ConfigHub, version: i64) -> Arc<Published> {
        hub.publish((version, "g".into()), format!("g.{version}"), Any::default())
    }

    #[tokio::test]
    async fn a_rollout_waits_for_every_subscribed_envoy() {
        let hub = Arc::new(ConfigHub::new());
        let (a, b) = (hub.subscribe("a".into()), hub.subscribe("b".into()));
        let p = publish(&hub, 1);
        let waiter = {
            let (hub, p) = (hub.clone(), p.clone());
            tokio::spawn(async move { hub.wait_applied(&p, Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        a.applied(p.seq);
        assert!(!waiter.is_finished());
        b.applied(p.seq);
        let r = waiter.await.unwrap();
        assert!(r.complete(), "{r:?}");
        assert_eq!((r.envoys, r.applied), (2, 2));
        assert!(r.waited_ms < 5000);
    }

    #[tokio::test]
    async fn a_later_publication_applied_counts_and_a_refusal_ends_the_wait() {
        let hub = Arc::new(ConfigHub::new());
        let (a, b) = (hub.subscribe("a".into()), hub.subscribe("b".into()));
        let first = publish(&hub, 1);
        let second = publish(&hub, 2);
        a.applied(second.seq);
        b.refused(first.seq, "bad table".into());
        let r = hub.wait_applied(&first, Duration::from_secs(5)).await;
        assert_eq!(r.applied, 1);
        assert_eq!(r.refused, vec![("b".to_string(), "bad table".to_string())]);
        assert!(!r.complete());
        // The refusal was of the first: the second is still awaited from b.
        let r = hub.wait_applied(&second, Duration::from_millis(50)).await;
        assert_eq!(r.pending, vec!["b".to_string()]);
    }

    #[tokio::test]
    async fn a_silent_envoy_times_out_and_a_departed_one_is_not_waited_for() {
        let hub = Arc::new(ConfigHub::new());
        let silent = hub.subscribe("silent".into());
        let p = publish(&hub, 1);
        let r = hub.wait_applied(&p, Duration::from_millis(60)).await;
        assert_eq!(r.pending, vec!["silent".to_string()]);
        assert!(r.waited_ms >= 60, "{r:?}");
        let waiter = {
            let (hub, p) = (hub.clone(), p.clone());
            tokio::spawn(async move { hub.wait_applied(&p, Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        drop(silent);
        let r = waiter.await.unwrap();
        assert!(r.complete() && r.envoys == 0, "{r:?}");
        assert_eq!(hub.subscribers(), 0);
    }

    #[test]
    fn status_names_the_version_each_envoy_applied() {
        let hub = Arc::new(ConfigHub::new());
        let a = hub.subscribe("a".into());
        let _b = hub.subscribe("b".into());
        let p = publish(&hub, 7);
        a.applied(p.seq);
        let s = hub.status();
        assert_eq!(s[0].applied.as_deref(), Some("g.7"));
        assert_eq!(s[1].applied, None);
    }
}
