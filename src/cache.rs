//! Label-selected watches of Secrets kept in memory, so that reads need no request to the API
//! server: the controller's (token Secrets, records, shared Secrets; see
//! `controller::cache` for when it trusts them) and the callback's (shared Secrets).

use std::{fmt::Debug, hash::Hash, sync::Arc};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{client::Watchers, retry::Backoff};

/// A reflector's store of Secrets and whether it has listed once.
#[derive(Clone)]
pub struct Cache {
    store: Store<Secret>,
    /// True once the store has listed. (Waiters use this, not the store itself:
    /// `Store::wait_until_ready` wakes only the last of several concurrent waiters.)
    ready: tokio::sync::watch::Receiver<bool>,
}

/// A cache that never listed: its watch ended with the process.
#[derive(Debug, thiserror::Error)]
#[error("failed to list Secrets: the watch ended")]
pub struct Unavailable;

impl Cache {
    fn new(store: Store<Secret>) -> Self {
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        let waited = store.clone();
        tokio::spawn(async move {
            if waited.wait_until_ready().await.is_ok() {
                let _ = ready_tx.send(true);
            }
        });
        Self { store, ready }
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

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.store.get(&ObjectRef::new(name).within(namespace))
    }
}

/// A watch of `K`, kept in a store without the objects' managed fields (most of an object, and
/// never read): the store, and the watch's events, which the caller must poll (that is what
/// fills the store).
pub fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Store<K>,
    impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + use<K>,
)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (store, writer) = reflector::store();
    let events = reflector::reflector(
        writer,
        watcher(api, config)
            .backoff(Backoff::watch())
            .modify(|object| object.managed_fields_mut().clear()),
    );
    (store, events)
}

/// A label-selected watch of Secrets (only data, labels, annotations and owners are read): the
/// store, and the stream of every Secret created, changed or deleted, which the caller must poll.
pub fn reflect_secrets(
    api: Api<Secret>,
    selector: &str,
) -> (
    Cache,
    impl Stream<Item = Result<Secret, watcher::Error>> + use<>,
) {
    let (store, events) = reflect(api, watcher::Config::default().labels(selector));
    (Cache::new(store), events.touched_objects())
}

/// A label-selected watch of Secrets in memory, kept until `shutdown` by a task of its own
/// (for a cache nothing else polls). `what` names the Secrets in its log line.
pub fn kept(
    api: Api<Secret>,
    selector: &str,
    what: &'static str,
    shutdown: CancellationToken,
) -> Cache {
    let (cache, stream) = reflect_secrets(api, selector);
    drive(stream, what, shutdown);
    cache
}

/// Polls a reflector's `stream` (which is what fills its store) in a task of its own until
/// `shutdown`. `what` names what it watches in its log line; the watch retries by itself.
pub fn drive<K: Send + 'static>(
    stream: impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    what: &'static str,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                next = stream.next() => match next {
                    Some(Ok(_)) => {}
                    Some(Err(error)) => warn!(
                        error = &error as &dyn std::error::Error,
                        what,
                        "failed to watch; retrying"
                    ),
                    None => return,
                },
            }
        }
    });
}

/// One kept watch per namespace (or one of every namespace), looked up as one.
#[derive(Clone)]
pub struct Caches(Vec<Cache>);

impl Caches {
    /// Keeps a watch of the Secrets matching `selector` in each watched namespace (or in every
    /// namespace).
    pub fn keep(
        watchers: &Watchers,
        selector: &str,
        what: &'static str,
        shutdown: &CancellationToken,
    ) -> Self {
        Self(
            watchers
                .apis::<Secret>()
                .into_iter()
                .map(|api| kept(api, selector, what, shutdown.clone()))
                .collect(),
        )
    }

    /// Waits until every watch has listed once.
    pub async fn ready(&self) -> Result<(), Unavailable> {
        for cache in &self.0 {
            cache.ready().await?;
        }
        Ok(())
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.0.iter().find_map(|cache| cache.get(namespace, name))
    }
}
