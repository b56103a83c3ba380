//! Which grant publishes which approval link: a watch of the grants (in every namespace, or in
//! each of `--watch-namespaces`) that every replica keeps, leader or not, so that any replica
//! answers a visit from memory, with no request to the API server.

use std::sync::Arc;

use futures::FutureExt;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio_util::sync::CancellationToken;

use super::link::published_token;
use crate::{api::SlackOAuthGrant, client::Watchers};

/// The grants as the watch last saw them.
#[derive(Clone)]
pub struct Links {
    stores: Vec<reflector::Store<SlackOAuthGrant>>,
}

/// The watch has not listed the grants yet (the process just started).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("failed to look up the approval link: the operator is still loading the grants")]
pub struct NotSynced;

impl Links {
    /// Starts the watches; they stop with `shutdown`.
    pub fn watch(watchers: &Watchers, shutdown: &CancellationToken) -> Self {
        let stores = watchers
            .apis::<SlackOAuthGrant>()
            .into_iter()
            .map(|api| {
                let (store, events) =
                    crate::cache::reflect(api, watcher::Config::default().any_semantic());
                crate::cache::drive(
                    events.applied_objects(),
                    "grants, for their approval links",
                    shutdown.clone(),
                );
                store
            })
            .collect();
        Self { stores }
    }

    /// Waits until every watch has listed the grants once.
    pub async fn synced(&self) {
        for store in &self.stores {
            // The writer lives as long as its watch task; if that ended, so is the process.
            let _ = store.wait_until_ready().await;
        }
    }

    /// Links over stores filled by someone else (tests).
    pub fn from_stores(stores: Vec<reflector::Store<SlackOAuthGrant>>) -> Self {
        Self { stores }
    }

    /// Grant `namespace/name` as the watch last saw it, if it has seen it.
    pub fn named(&self, namespace: &str, name: &str) -> Option<Arc<SlackOAuthGrant>> {
        let grant = reflector::ObjectRef::new(name).within(namespace);
        self.stores.iter().find_map(|store| store.get(&grant))
    }

    /// The grant whose `status.authorizationURL` is the approval link with `token`, if any.
    pub fn grant(&self, token: &str) -> Result<Option<Arc<SlackOAuthGrant>>, NotSynced> {
        let mut found = None;
        for store in &self.stores {
            if store.wait_until_ready().now_or_never().is_none() {
                return Err(NotSynced);
            }
            found = found.or_else(|| store.find(|grant| publishes(grant, token)));
        }
        Ok(found)
    }
}

fn publishes(grant: &SlackOAuthGrant, token: &str) -> bool {
    grant
        .status
        .as_ref()
        .and_then(|s| s.authorization_url.as_deref())
        .and_then(published_token)
        == Some(token)
}
