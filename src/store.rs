//! Reading and writing the Secrets that hold tokens: a grant's record (in the operator's
//! namespace, see [`crate::record`]) and its consumer Secret (in the grant's namespace). The
//! callback and the controller both write through here, and every write is conditional (create
//! fails if the Secret exists; replace carries the resourceVersion read), so neither ever
//! overwrites what the other wrote in between, and a Secret someone else created is never
//! touched.

use std::{future::Future, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt, api::PostParams};

use crate::{
    api::{FIELD_MANAGER, SlackOAuthGrant},
    authorization::manages,
    record::{self, TokenRecord},
    status,
};

/// Deadline of each call.
pub const CALL_TIMEOUT: Duration = status::CALL_TIMEOUT;

/// A Kubernetes call that failed.
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

/// Runs `request` with [`CALL_TIMEOUT`].
pub async fn call<T>(
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(CALL_TIMEOUT, request).await {
        Ok(result) => result.map_err(|e| CallError::Kube(Box::new(e))),
        Err(_) => Err(CallError::TimedOut),
    }
}

fn params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    }
}

/// A record as read, with the resourceVersion a replacement must carry.
#[derive(Clone, Debug)]
pub struct Held {
    pub record: TokenRecord,
    pub version: String,
}

impl Held {
    /// Grant `uid`'s record in `secret`, if it holds it (a Secret under the record's name that
    /// does not, someone else's, holds none).
    pub fn of(secret: &Secret, uid: &str) -> Option<Self> {
        Some(Self {
            record: TokenRecord::from_secret(secret, uid)?,
            version: secret.resource_version().unwrap_or_default(),
        })
    }
}

/// The grant's token records, in the operator's namespace.
#[derive(Clone)]
pub struct Records {
    secrets: Api<Secret>,
    namespace: String,
}

impl Records {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            secrets: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
        }
    }

    /// Grant `uid`'s record. A Secret under the record's name that does not hold it (someone
    /// else's) reads as none.
    pub async fn get(&self, uid: &str) -> Result<Option<Held>, CallError> {
        let secret = call(self.secrets.get_opt(&record::secret_name(uid))).await?;
        Ok(secret.and_then(|secret| Held::of(&secret, uid)))
    }

    /// Writes `record`: creates it when `version` is `None`, else replaces that version. A 409
    /// means it was written meanwhile: read it again and decide again.
    pub async fn put(
        &self,
        record: &TokenRecord,
        version: Option<&str>,
    ) -> Result<String, CallError> {
        let mut secret = record.to_secret(&self.namespace);
        let written = match version {
            None => call(self.secrets.create(&params(), &secret)).await?,
            Some(version) => {
                secret.metadata.resource_version = Some(version.to_owned());
                let name = secret.name_any();
                call(self.secrets.replace(&name, &params(), &secret)).await?
            }
        };
        Ok(written.resource_version().unwrap_or_default())
    }

    /// Deletes grant `uid`'s record; one already gone is fine.
    pub async fn delete(&self, uid: &str) -> Result<(), CallError> {
        let name = record::secret_name(uid);
        match call(self.secrets.delete(&name, &Default::default())).await {
            Ok(_) => Ok(()),
            Err(error) if error.code() == Some(404) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// How a write of the consumer Secret went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// A Secret with the name exists and is not this grant's.
    Foreign,
}

/// Creates the consumer Secret `desired`, or replaces it if it is the grant's own; never
/// touches anyone else's. It creates first, reading nothing: a token Secret is written mostly
/// where there is none (a first approval, a deleted Secret). Only a create that finds one reads
/// it, to replace it if it is the grant's.
pub async fn write_consumer(
    client: &Client,
    grant: &SlackOAuthGrant,
    desired: &Secret,
) -> Result<WriteOutcome, CallError> {
    let namespace = grant.namespace().unwrap_or_default();
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    let name = desired.name_any();
    let exists = match call(secrets.create(&params(), desired)).await {
        Ok(_) => return Ok(WriteOutcome::Written),
        Err(error) if error.code() == Some(409) => error,
        Err(error) => return Err(error),
    };
    match call(secrets.get_opt(&name)).await? {
        // Deleted since: the 409 is transient, and the caller tries again.
        None => Err(exists),
        Some(existing) if manages(&existing, grant) => {
            let mut replacement = desired.clone();
            replacement.metadata.resource_version = existing.resource_version();
            call(secrets.replace(&name, &params(), &replacement)).await?;
            Ok(WriteOutcome::Written)
        }
        Some(_) => Ok(WriteOutcome::Foreign),
    }
}

/// Takes over `existing`, someone else's Secret that opted in to adoption, by replacing it with
/// `desired` (ours: owned by the grant, labelled). The replacement carries `existing`'s
/// resourceVersion, so a Secret changed since it was checked is not taken.
pub async fn adopt_consumer(
    client: &Client,
    existing: &Secret,
    desired: &Secret,
) -> Result<(), CallError> {
    let namespace = existing.namespace().unwrap_or_default();
    let secrets = Api::<Secret>::namespaced(client.clone(), &namespace);
    let mut replacement = desired.clone();
    replacement.metadata.resource_version = existing.resource_version();
    call(secrets.replace(&existing.name_any(), &params(), &replacement)).await?;
    Ok(())
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
