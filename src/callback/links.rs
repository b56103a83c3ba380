//! Which grant publishes which approval link: a watch of the grants (in every namespace, or in
//! each of `--watch-namespaces`) that every replica keeps, leader or not, so that any replica
//! answers a visit from memory, with no request to the API server.

use std::sync::Arc;

use super::link::published_token;
use crate::{api::SlackOAuthGrant, cache::Caches};

/// The grants as the watch last saw them.
#[derive(Clone)]
pub struct Links {
    grants: Caches<SlackOAuthGrant>,
}

/// The watch has not listed the grants yet (the process just started).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("failed to look up the approval link: the operator is still loading the grants")]
pub struct NotSynced;

impl Links {
    /// Links over the watch of the grants (which the controller shares).
    pub fn new(grants: Caches<SlackOAuthGrant>) -> Self {
        Self { grants }
    }

    /// Waits until every watch has listed the grants once.
    pub async fn synced(&self) {
        // A watch ends only with the process.
        let _ = self.grants.ready().await;
    }

    /// Grant `namespace/name` as the watch last saw it, if it has seen it.
    pub fn named(&self, namespace: &str, name: &str) -> Option<Arc<SlackOAuthGrant>> {
        self.grants.get(namespace, name)
    }

    /// The grant whose `status.authorizationURL` is the approval link with `token`, if any.
    pub fn grant(&self, token: &str) -> Result<Option<Arc<SlackOAuthGrant>>, NotSynced> {
        if !self.grants.is_ready() {
            return Err(NotSynced);
        }
        Ok(self.grants.find(|grant| publishes(grant, token)))
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
