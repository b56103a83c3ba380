//! Waiting for Secrets the operator does not manage (a missing client secret, a conflicting token
//! Secret) without caching every Secret in the cluster: one watch per waited-for name, filtered
//! by `metadata.name`, that lives only until that Secret changes.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    runtime::{reflector::ObjectRef, watcher},
};
use tokio::sync::mpsc;
use tracing::debug;

use crate::api::SlackOAuthGrant;

type Key = (String, String);

/// The grants waiting on each Secret name, and the channel that wakes them.
#[derive(Clone)]
pub struct Waiters {
    client: Client,
    trigger: mpsc::Sender<ObjectRef<SlackOAuthGrant>>,
    waiting: Arc<Mutex<HashMap<Key, HashSet<ObjectRef<SlackOAuthGrant>>>>>,
}

impl Waiters {
    pub fn new(client: Client, trigger: mpsc::Sender<ObjectRef<SlackOAuthGrant>>) -> Self {
        Self {
            client,
            trigger,
            waiting: Arc::default(),
        }
    }

    /// Reconciles `grant` again when Secret `namespace/name` differs from what the reconcile saw:
    /// `observed` is its resourceVersion then, or `None` if it did not exist.
    pub fn wait_for_secret(
        &self,
        namespace: &str,
        name: &str,
        observed: Option<String>,
        grant: &SlackOAuthGrant,
    ) {
        let key = (namespace.to_owned(), name.to_owned());
        let start = {
            let Ok(mut waiting) = self.waiting.lock() else {
                return;
            };
            let grants = waiting.entry(key.clone()).or_default();
            let first = grants.is_empty();
            grants.insert(ObjectRef::from(grant));
            first
        };
        if start {
            tokio::spawn(self.clone().watch(key, observed));
        }
    }

    async fn watch(self, key: Key, observed: Option<String>) {
        let (namespace, name) = &key;
        let api = Api::<Secret>::namespaced(self.client.clone(), namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut events = std::pin::pin!(watcher(api, config));
        let mut listed_version: Option<String> = None;
        let mut listed = false;
        while let Some(event) = events.next().await {
            let changed = match event {
                // The first listing may already differ from what the reconcile saw, if the Secret
                // changed in between; after it, any change wakes the grants.
                Ok(watcher::Event::Init) => {
                    listed_version = None;
                    false
                }
                Ok(watcher::Event::InitApply(secret)) => {
                    listed_version = secret.resource_version();
                    false
                }
                Ok(watcher::Event::InitDone) => {
                    let differs = !listed && listed_version != observed;
                    listed = true;
                    differs
                }
                Ok(watcher::Event::Apply(secret)) => {
                    listed && secret.resource_version() != observed
                }
                Ok(watcher::Event::Delete(_)) => listed,
                Err(error) => {
                    debug!(
                        error = &error as &dyn std::error::Error,
                        namespace, name, "secret watch error; retrying"
                    );
                    false
                }
            };
            if changed {
                break;
            }
        }
        let grants = self
            .waiting
            .lock()
            .ok()
            .and_then(|mut w| w.remove(&key))
            .unwrap_or_default();
        for grant in grants {
            let _ = self.trigger.send(grant).await;
        }
    }
}
