//! The few Kubernetes reads and writes a callback makes, behind a trait: the real one talks to
//! the API server (with the callback's own client and a deadline on every call); tests use an
//! in-memory one, so that the whole callback runs in-process.

use std::future::Future;

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{Api, Client, ResourceExt, api::PostParams, runtime::events::Recorder};

use crate::{
    api::{FIELD_MANAGER, SlackOAuthGrant},
    authorization::manages,
    events::{self, PlannedEvent},
    status,
};

/// A Kubernetes call of the callback's that failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("failed to call the Kubernetes API")]
    Kube(#[source] Box<kube::Error>),
    #[error("failed to call the Kubernetes API within the deadline")]
    TimedOut,
}

impl CallError {
    /// Whether the same call may succeed later: timeouts, network errors, 409, 429 and 5xx. Any
    /// other answer of the API server (400, 403, 404, 422...) is final. Decided here only.
    pub fn is_transient(&self) -> bool {
        match self.code() {
            Some(code) => code == 409 || code == 429 || code >= 500,
            None => true,
        }
    }

    /// The API server's HTTP status, when it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Kube(error) => match error.as_ref() {
                kube::Error::Api(status) => Some(status.code),
                _ => None,
            },
            Self::TimedOut => None,
        }
    }
}

impl From<status::Error> for CallError {
    fn from(error: status::Error) -> Self {
        match error {
            status::Error::Kube(error) => Self::Kube(error),
            status::Error::TimedOut => Self::TimedOut,
        }
    }
}

/// How a write of the token Secret went.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// A Secret with the name exists and is not this grant's.
    Foreign,
}

/// What the callback needs from Kubernetes.
pub trait Cluster: Send + Sync + 'static {
    fn grant(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<SlackOAuthGrant>, CallError>> + Send;

    /// See [`status::claim`].
    fn claim(
        &self,
        grant: &SlackOAuthGrant,
        holder: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<SlackOAuthGrant>, CallError>> + Send;

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

    /// The Secret `name` in the grant's namespace.
    fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Secret>, CallError>> + Send;

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
    pub recorder: Recorder,
}

async fn call<T>(request: impl Future<Output = Result<T, kube::Error>>) -> Result<T, CallError> {
    match tokio::time::timeout(status::CALL_TIMEOUT, request).await {
        Ok(result) => result.map_err(|e| CallError::Kube(Box::new(e))),
        Err(_) => Err(CallError::TimedOut),
    }
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

    async fn claim(
        &self,
        grant: &SlackOAuthGrant,
        holder: &str,
        now: Timestamp,
    ) -> Result<Option<SlackOAuthGrant>, CallError> {
        Ok(status::claim(&self.grants_of(grant), grant, holder, now).await?)
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

    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, CallError> {
        call(Api::<Secret>::namespaced(self.client.clone(), namespace).get_opt(name)).await
    }

    /// Both writes are conditional (create fails if the Secret exists; replace carries the
    /// resourceVersion read), so a Secret created by someone else in between is never
    /// overwritten.
    async fn write_token_secret(
        &self,
        grant: &SlackOAuthGrant,
        desired: &Secret,
    ) -> Result<WriteOutcome, CallError> {
        let namespace = grant.namespace().unwrap_or_default();
        let secrets = Api::<Secret>::namespaced(self.client.clone(), &namespace);
        let name = desired.name_any();
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        match call(secrets.get_opt(&name)).await? {
            None => {
                call(secrets.create(&params, desired)).await?;
                Ok(WriteOutcome::Written)
            }
            Some(existing) if manages(&existing, grant) => {
                let mut replacement = desired.clone();
                replacement.metadata.resource_version = existing.resource_version();
                call(secrets.replace(&name, &params, &replacement)).await?;
                Ok(WriteOutcome::Written)
            }
            Some(_) => Ok(WriteOutcome::Foreign),
        }
    }

    async fn publish(&self, grant: &SlackOAuthGrant, event: &PlannedEvent) {
        events::publish(&self.recorder, grant, event).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_are_classified_transient_or_final_in_one_place() {
        let api_error = |code: u16| {
            CallError::Kube(Box::new(kube::Error::Api(
                kube::core::Status::failure("x", "y")
                    .with_code(code)
                    .boxed(),
            )))
        };
        for code in [409, 429, 500, 503] {
            assert!(api_error(code).is_transient(), "{code}");
        }
        for code in [400, 403, 404, 422] {
            assert!(!api_error(code).is_transient(), "{code}");
        }
        assert!(CallError::TimedOut.is_transient());
    }
}
