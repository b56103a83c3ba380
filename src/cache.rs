//! Watches kept in memory, so that reads need no request to the API server, each made once per
//! watched namespace and shared by whoever reads it:
//!
//! - the grants, for the approval links (every replica) and the controller (the leader);
//! - the Secrets shared with grants, for the callback (client Secrets) and the controller;
//! - the controller's own: the token Secrets and the token records (see `controller::cache`
//!   for when it trusts them).
//!
//! A [`Cache`] is filled by a task of its own. Followers ([`Cache::applied`],
//! [`Cache::changes`]) are told of every change without ever holding the watch up: one that
//! falls behind is given every object again, as after a relist.

use std::{fmt::Debug, sync::Arc};

use futures::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use kube::{
    Api, Resource,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{client::Watchers, retry::Backoff};

mod packed;
pub use packed::{Packed, trim};

/// What a watched kind needs to be kept.
pub trait Kept:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}
impl<K> Kept for K where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

/// Changes a follower may be behind by before it is given every object again instead. The
/// watch sends one per event (a relist is one), so only a follower that stopped reading falls
/// this far behind.
const FOLLOWER_LAG: usize = 1024;

/// A watch of `K` in memory, without what [`packed::trim`] drops (most of many objects, and
/// never read). A cache of many objects that are read seldom keeps them [`Packed`].
pub struct Cache<K: Kept> {
    store: Store<K>,
    /// True once the store has listed. (Waiters use this, not the store itself:
    /// `Store::wait_until_ready` wakes only the last of several concurrent waiters.)
    ready: tokio::sync::watch::Receiver<bool>,
    changes: broadcast::Sender<Change<K>>,
}

impl<K: Kept> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            ready: self.ready.clone(),
            changes: self.changes.clone(),
        }
    }
}

/// What the watch saw, as told to followers.
///
/// A change names the object rather than holding it: the channel keeps its last
/// [`FOLLOWER_LAG`] changes whoever has read them, and objects held there would be old versions
/// kept alive, up to 1,024 per watch (at most about 40 MB over 31 watches at 10,000 grants, by
/// the objects' sizes; not measured apart). A follower reads the object from the store when it
/// gets there, so it always sees the newest version.
#[derive(Clone)]
enum Change<K: Resource<DynamicType = ()>> {
    Applied(ObjectRef<K>),
    /// Gone from the store, so it comes with the object (which the watch sent last).
    Deleted(Arc<K>),
    /// The watch listed again (or for the first time): the store now holds every object.
    Listed,
}

/// The reference a change names `object` by: its name and namespace only (an `ObjectRef` made
/// from the object also holds its UID and resource version, which the store does not need).
fn named<K: Resource<DynamicType = ()>>(object: &K) -> ObjectRef<K> {
    let name = ObjectRef::new(object.meta().name.as_deref().unwrap_or_default());
    match object.meta().namespace.as_deref() {
        Some(namespace) => name.within(namespace),
        None => name,
    }
}

/// A cache that never listed: its watch ended with the process.
#[derive(Debug, thiserror::Error)]
#[error("failed to list from the API server: the watch ended")]
pub struct Unavailable;

impl<K: Kept> Cache<K> {
    /// Keeps a watch of `api` (with `config`, to which the watch's backoff is added) in memory
    /// until `shutdown`. `what` names what it watches in its log lines.
    pub fn keep(
        api: Api<K>,
        config: watcher::Config,
        what: &'static str,
        shutdown: CancellationToken,
    ) -> Self {
        let (store, mut writer) = reflector::store();
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        let (changes, _) = broadcast::channel(FOLLOWER_LAG);
        let cache = Self {
            store: store.clone(),
            ready,
            changes: changes.clone(),
        };
        let events = watcher(api, config).backoff(Backoff::watch());
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            loop {
                let event = tokio::select! {
                    () = shutdown.cancelled() => return,
                    event = events.next() => event,
                };
                let mut event = match event {
                    Some(Ok(event)) => event,
                    Some(Err(error)) => {
                        warn!(
                            error = &error as &dyn std::error::Error,
                            what, "failed to watch; retrying"
                        );
                        continue;
                    }
                    None => return,
                };
                if let watcher::Event::Apply(object) | watcher::Event::InitApply(object) =
                    &mut event
                {
                    packed::trim(object);
                }
                writer.apply_watcher_event(&event);
                // Sending fails only while nobody follows, which is fine.
                let _ = match event {
                    watcher::Event::Apply(object) => {
                        Some(changes.send(Change::Applied(named(&object))))
                    }
                    watcher::Event::Delete(object) => {
                        Some(changes.send(Change::Deleted(Arc::new(object))))
                    }
                    watcher::Event::InitDone => {
                        let _ = ready_tx.send(true);
                        Some(changes.send(Change::Listed))
                    }
                    watcher::Event::Init | watcher::Event::InitApply(_) => None,
                };
            }
        });
        cache
    }

    /// Waits until the store has listed.
    pub async fn ready(&self) -> Result<(), Unavailable> {
        self.ready
            .clone()
            .wait_for(|ready| *ready)
            .await
            .map(drop)
            .map_err(|_| Unavailable)
    }

    /// Whether the store has listed.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.store.get(&ObjectRef::new(name).within(namespace))
    }

    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Every object now, then each one created or changed; every object again after the watch
    /// lists again.
    pub fn applied(&self) -> impl Stream<Item = Arc<K>> + Send + use<K> {
        self.follow(false, true)
    }

    /// Each object created, changed or deleted from now on, and every object after a relist,
    /// but not the objects there already (nor the first list's, if it is still to come): for
    /// a controller whose own objects' watch already reconciles each one once the caches have
    /// listed, to which those would add nothing but a second reconcile. (A deletion during a
    /// break in the watch, or while the follower was behind, is not seen: the object is simply
    /// no longer there.)
    pub fn changes(&self) -> impl Stream<Item = Arc<K>> + Send + use<K> {
        self.follow(true, false)
    }

    fn follow(
        &self,
        deletions: bool,
        everything: bool,
    ) -> impl Stream<Item = Arc<K>> + Send + use<K> {
        // Subscribed before the store is read: nothing changed in between is missed.
        let changes = self.changes.subscribe();
        let store = self.store.clone();
        let listed = if everything {
            store.state()
        } else {
            Vec::new()
        }
        .into_iter();
        // The first list is still to come (its end is sent after readiness is): skip it.
        let skip_list = !everything && !self.is_ready();
        futures::stream::unfold(
            (changes, listed, store, skip_list),
            move |(mut changes, mut listed, store, mut skip_list)| async move {
                loop {
                    if let Some(object) = listed.next() {
                        return Some((object, (changes, listed, store, skip_list)));
                    }
                    match changes.recv().await {
                        Ok(Change::Applied(named)) => {
                            // Gone since (its deletion is on its way): nothing to tell.
                            if let Some(object) = store.get(&named) {
                                return Some((object, (changes, listed, store, skip_list)));
                            }
                        }
                        Ok(Change::Deleted(object)) if deletions => {
                            return Some((object, (changes, listed, store, skip_list)));
                        }
                        Ok(Change::Deleted(_)) => {}
                        Ok(Change::Listed) if skip_list => skip_list = false,
                        Ok(Change::Listed) => listed = store.state().into_iter(),
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            warn!(missed, "fell behind a watch; going over every object again");
                            listed = store.state().into_iter();
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        )
    }
}

/// One [`Cache`] per watched namespace (or one of every namespace), in the order of
/// `--watch-namespaces`, looked up as one.
pub struct Caches<K: Kept>(Vec<Cache<K>>);

impl<K: Kept> Clone for Caches<K> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<K: Kept<Scope = NamespaceResourceScope>> Caches<K> {
    /// Keeps a watch of `K` with `config` in each watched namespace (or in every namespace).
    pub fn keep(
        watchers: &Watchers,
        config: &watcher::Config,
        what: &'static str,
        shutdown: &CancellationToken,
    ) -> Self {
        Self(
            watchers
                .apis::<K>()
                .into_iter()
                .map(|api| Cache::keep(api, config.clone(), what, shutdown.clone()))
                .collect(),
        )
    }
}

impl<K: Kept> Caches<K> {
    /// Waits until every watch has listed once.
    pub async fn ready(&self) -> Result<(), Unavailable> {
        for cache in &self.0 {
            cache.ready().await?;
        }
        Ok(())
    }

    /// Whether every watch has listed once.
    pub fn is_ready(&self) -> bool {
        self.0.iter().all(Cache::is_ready)
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.0.iter().find_map(|cache| cache.get(namespace, name))
    }

    /// The first object `matches`, in any watch.
    pub fn find(&self, matches: impl Fn(&K) -> bool) -> Option<Arc<K>> {
        self.0.iter().find_map(|cache| cache.store.find(&matches))
    }

    /// The watches, in the order of `--watch-namespaces`.
    pub fn each(&self) -> &[Cache<K>] {
        &self.0
    }
}

/// A label selector's watch config.
pub fn labelled(selector: &str) -> watcher::Config {
    watcher::Config::default().labels(selector)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use kube::{ResourceExt, api::ObjectMeta};

    fn secret(name: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("ns".to_owned()),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        }
    }

    fn names(objects: &[Arc<Secret>]) -> Vec<String> {
        let mut names: Vec<_> = objects.iter().map(|o| o.name_any()).collect();
        names.sort();
        names
    }

    /// A cache whose watch is driven by hand.
    fn by_hand() -> (
        Cache<Secret>,
        reflector::store::Writer<Secret>,
        tokio::sync::watch::Sender<bool>,
    ) {
        let (store, writer) = reflector::store();
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        let (changes, _) = broadcast::channel(4);
        (
            Cache {
                store,
                ready,
                changes,
            },
            writer,
            ready_tx,
        )
    }

    fn applied(name: &str) -> Change<Secret> {
        Change::Applied(ObjectRef::new(name).within("ns"))
    }

    /// Sends `change` to the followers, of which there must be one.
    fn tell(cache: &Cache<Secret>, change: Change<Secret>) {
        let followed = cache.changes.send(change).is_ok();
        assert!(followed, "nobody follows");
    }

    #[tokio::test]
    async fn an_applied_follower_sees_every_object_then_each_change() {
        let (cache, mut writer, _) = by_hand();
        writer.apply_watcher_event(&watcher::Event::Apply(secret("a")));
        let follower = cache.applied();
        writer.apply_watcher_event(&watcher::Event::Apply(secret("b")));
        tell(&cache, applied("b"));
        let seen: Vec<_> = follower.take(2).collect().await;
        assert_eq!(names(&seen), ["a", "b"]);
    }

    #[tokio::test]
    async fn a_follower_of_changes_sees_only_what_changes_after_the_first_list() {
        let (cache, mut writer, ready) = by_hand();
        writer.apply_watcher_event(&watcher::Event::Apply(secret("before")));
        let follower = cache.changes();
        // The first list: the controller's own watch reconciles everything after it anyway.
        let _ = ready.send(true);
        tell(&cache, Change::Listed);
        writer.apply_watcher_event(&watcher::Event::Apply(secret("changed")));
        tell(&cache, applied("changed"));
        tell(&cache, Change::Deleted(Arc::new(secret("deleted"))));
        // A later relist: anything may have changed during the break.
        tell(&cache, Change::Listed);
        let seen: Vec<_> = follower.take(4).collect().await;
        assert_eq!(
            names(&seen[..2]),
            ["changed", "deleted"],
            "the objects listed first are not followed"
        );
        assert_eq!(names(&seen[2..]), ["before", "changed"]);
    }

    #[tokio::test]
    async fn a_follower_of_changes_that_subscribes_after_the_first_list_sees_the_next() {
        let (cache, mut writer, ready) = by_hand();
        writer.apply_watcher_event(&watcher::Event::Apply(secret("a")));
        let _ = ready.send(true);
        let follower = cache.changes();
        tell(&cache, Change::Listed);
        let seen: Vec<_> = follower.take(1).collect().await;
        assert_eq!(names(&seen), ["a"]);
    }

    #[tokio::test]
    async fn an_applied_follower_is_not_told_of_deletions() {
        let (cache, mut writer, _) = by_hand();
        let follower = cache.applied();
        tell(&cache, Change::Deleted(Arc::new(secret("gone"))));
        writer.apply_watcher_event(&watcher::Event::Apply(secret("b")));
        tell(&cache, applied("b"));
        let seen: Vec<_> = follower.take(1).collect().await;
        assert_eq!(names(&seen), ["b"]);
    }

    #[tokio::test]
    async fn a_follower_that_fell_behind_is_given_every_object_again() {
        let (cache, mut writer, _) = by_hand();
        let follower = cache.applied();
        for name in ["a", "b", "c", "d", "e", "f"] {
            writer.apply_watcher_event(&watcher::Event::Apply(secret(name)));
            tell(&cache, applied(name));
        }
        // Four changes fit; the follower missed two, so it is given all six instead.
        let seen: Vec<_> = follower.take(6).collect().await;
        assert_eq!(names(&seen), ["a", "b", "c", "d", "e", "f"]);
    }

    #[tokio::test]
    async fn a_follower_reads_the_newest_version_and_skips_what_is_gone() {
        let (cache, mut writer, _) = by_hand();
        let follower = cache.applied();
        writer.apply_watcher_event(&watcher::Event::Apply(secret("a")));
        tell(&cache, applied("a"));
        let mut newer = secret("a");
        newer.metadata.resource_version = Some("2".to_owned());
        writer.apply_watcher_event(&watcher::Event::Apply(newer));
        tell(&cache, applied("gone"));
        writer.apply_watcher_event(&watcher::Event::Apply(secret("b")));
        tell(&cache, applied("b"));
        let seen: Vec<_> = follower.take(2).collect().await;
        assert_eq!(names(&seen), ["a", "b"]);
        assert_eq!(seen[0].resource_version().as_deref(), Some("2"));
    }

    #[tokio::test]
    async fn a_relist_gives_followers_every_object_again() {
        let (cache, mut writer, _) = by_hand();
        let follower = cache.applied();
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitApply(secret("a")));
        writer.apply_watcher_event(&watcher::Event::InitApply(secret("b")));
        writer.apply_watcher_event(&watcher::Event::InitDone);
        tell(&cache, Change::Listed);
        let seen: Vec<_> = follower.take(2).collect().await;
        assert_eq!(names(&seen), ["a", "b"]);
    }
}
