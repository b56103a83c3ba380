//! The few Kubernetes reads and writes a callback makes, behind a trait: the real one talks to
//! the API server (with the callback's own client and a deadline on every call); tests use an
//! in-memory one, so that the whole callback runs in-process.

use std::{future::Future, sync::Arc};

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{Api, Client, ResourceExt};

pub use super::links::{Links, NotSynced};
pub use crate::status::Claim;
use crate::{
    api::{SlackOAuthGrant, UsedState},
    events::{self, PlannedEvent, Recorder},
    record::TokenRecord,
    status,
    store::{self, Records, call},
};

pub use crate::store::{CallError, Held, WriteOutcome};

/// What the callback needs from Kubernetes.
pub trait Cluster: Send + Sync + 'static {
    fn grant(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<SlackOAuthGrant>, CallError>> + Send;

    /// The grant as the watch of grants last saw it (see [`Links`]), if it has seen it. It may
    /// lag: it only ever stands in for [`Cluster::grant`] where a stale copy costs nothing
    /// (see `flow.rs`).
    fn cached_grant(&self, namespace: &str, name: &str) -> Option<Arc<SlackOAuthGrant>>;

    /// The grant that publishes the approval link `token`, from memory (see [`Links`]).
    fn linked(&self, token: &str) -> Result<Option<Arc<SlackOAuthGrant>>, NotSynced>;

    /// See [`status::claim`].
    fn claim(
        &self,
        grant: &SlackOAuthGrant,
        holder: &str,
        used: &UsedState,
        still_valid: impl Fn(&SlackOAuthGrant) -> bool + Send + Sync,
        now: Timestamp,
    ) -> impl Future<Output = Result<Claim, CallError>> + Send;

    /// See [`status::renew`].
    fn renew(
        &self,
        grant: &SlackOAuthGrant,
        holder: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), CallError>> + Send;

    /// See [`status::record_failure`].
    fn record_failure(
        &self,
        grant: &SlackOAuthGrant,
        reason: &'static str,
        message: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), CallError>> + Send;

    /// The Secret `name` in the grant's namespace, if it is shared with grants: from the watch
    /// of shared Secrets, or from the API server if the watch has not seen it.
    fn shared_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Secret>, CallError>> + Send;

    /// The grant's token record, if it has one.
    fn record(
        &self,
        grant: &SlackOAuthGrant,
    ) -> impl Future<Output = Result<Option<Held>, CallError>> + Send;

    /// See [`Records::put`].
    fn write_record(
        &self,
        record: &TokenRecord,
        version: Option<&str>,
    ) -> impl Future<Output = Result<String, CallError>> + Send;

    /// See [`Records::delete`].
    fn delete_record(&self, uid: &str) -> impl Future<Output = Result<(), CallError>> + Send;

    /// Creates the token Secret, or replaces it if it is the grant's own; never touches anyone
    /// else's.
    fn write_token_secret(
        &self,
        grant: &SlackOAuthGrant,
        desired: &Secret,
    ) -> impl Future<Output = Result<WriteOutcome, CallError>> + Send;

    /// Publishes an Event about the grant; failing to is logged, never fatal.
    fn publish(
        &self,
        grant: &SlackOAuthGrant,
        event: &PlannedEvent,
    ) -> impl Future<Output = ()> + Send;
}

/// The API server, through the callback's own client (connect, read and write timeouts).
pub struct KubeCluster {
    pub client: Client,
    /// Which grant publishes which approval link.
    pub links: Links,
    /// The Secrets shared with grants (client Secrets), in the watched namespaces.
    pub shared: crate::cache::Caches<crate::cache::Packed<k8s_openapi::api::core::v1::Secret>>,
    pub recorder: Recorder,
    /// The token records, in the operator's namespace.
    pub records: Records,
}

impl KubeCluster {
    fn grants(&self, namespace: &str) -> Api<SlackOAuthGrant> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn grants_of(&self, grant: &SlackOAuthGrant) -> Api<SlackOAuthGrant> {
        self.grants(&grant.namespace().unwrap_or_default())
    }
}

impl Cluster for KubeCluster {
    async fn grant(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<SlackOAuthGrant>, CallError> {
        call(self.grants(namespace).get_opt(name)).await
    }

    fn cached_grant(&self, namespace: &str, name: &str) -> Option<Arc<SlackOAuthGrant>> {
        self.links.named(namespace, name)
    }

    fn linked(&self, token: &str) -> Result<Option<Arc<SlackOAuthGrant>>, NotSynced> {
        self.links.grant(token)
    }

    async fn claim(
        &self,
        grant: &SlackOAuthGrant,
        holder: &str,
        used: &UsedState,
        still_valid: impl Fn(&SlackOAuthGrant) -> bool + Send + Sync,
        now: Timestamp,
    ) -> Result<Claim, CallError> {
        let grants = self.grants_of(grant);
        Ok(status::claim(&grants, grant, holder, used, still_valid, now).await?)
    }

    async fn renew(
        &self,
        grant: &SlackOAuthGrant,
        holder: &str,
        now: Timestamp,
    ) -> Result<(), CallError> {
        Ok(status::renew(&self.grants_of(grant), &grant.name_any(), holder, now).await?)
    }

    async fn record_failure(
        &self,
        grant: &SlackOAuthGrant,
        reason: &'static str,
        message: &str,
        now: Timestamp,
    ) -> Result<(), CallError> {
        let grants = self.grants_of(grant);
        Ok(status::record_failure(&grants, grant, reason, message, now).await?)
    }

    async fn shared_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Secret>, CallError> {
        if let Some(cached) = self.shared.get(namespace, name) {
            return Ok(Some(cached.unpack()));
        }
        call(Api::<Secret>::namespaced(self.client.clone(), namespace).get_opt(name)).await
    }

    async fn record(&self, grant: &SlackOAuthGrant) -> Result<Option<Held>, CallError> {
        self.records.get(&grant.uid().unwrap_or_default()).await
    }

    async fn write_record(
        &self,
        record: &TokenRecord,
        version: Option<&str>,
    ) -> Result<String, CallError> {
        self.records.put(record, version).await
    }

    async fn delete_record(&self, uid: &str) -> Result<(), CallError> {
        self.records.delete(uid).await
    }

    async fn write_token_secret(
        &self,
        grant: &SlackOAuthGrant,
        desired: &Secret,
    ) -> Result<WriteOutcome, CallError> {
        store::write_consumer(&self.client, grant, desired).await
    }

    async fn publish(&self, grant: &SlackOAuthGrant, event: &PlannedEvent) {
        events::publish(&self.recorder, grant, event).await;
    }
}
