//! Delivering each new token into PingFederate (`spec.pingFederate`), after the Secret has it.
//! A push that fails never holds the Secret back. Transient failures are retried with backoff;
//! a failure only a change can fix (401/403, a missing connection or field, a validation error)
//! is not retried until the grant or its credentials Secret changes.

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::ResourceExt;
use secrecy::SecretString;
use tokio::time::Instant;
use tracing::warn;
use url::Url;

use super::Context;
use crate::{
    api::{PingFederateSpec, PingFederateStatus, SlackOAuthGrant, annotations, reasons},
    authorization::{shared_with, token_in},
    pingfederate::{
        AdminClient, ConnectionRef, Credentials, PUSH_TIMEOUT, PfError, PingFederateApi, Push,
    },
    record::TokenRecord,
};

/// After a transient failure, the next push comes this soon.
const RETRY: Duration = Duration::from_secs(10);

/// Where PingFederate stands after this reconcile, for `plan`.
#[derive(Clone, Debug, PartialEq)]
pub struct Synced {
    pub status: PingFederateStatus,
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Two base URLs name the same admin API if they differ at most by a trailing slash.
fn same_api(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// The admin credentials, if their Secret opted in for this grant and names this admin API.
fn credentials(
    grant: &SlackOAuthGrant,
    spec: &PingFederateSpec,
    secret: Option<&Secret>,
) -> Result<Credentials, String> {
    let reference = &spec.credentials_secret_ref;
    let namespace = grant.namespace().unwrap_or_default();
    let missing = || {
        format!(
            "Secret {namespace}/{} with PingFederate's admin credentials does not exist or is not shared with this grant: label it {}=true.",
            reference.name,
            crate::api::labels::SHARED_WITH_GRANTS
        )
    };
    let secret = secret
        .filter(|s| shared_with(s, &grant.name_any()))
        .ok_or_else(missing)?;
    let allowed = secret
        .annotations()
        .get(annotations::PINGFEDERATE_ADMIN_API_URL)
        .is_some_and(|url| same_api(url, &spec.admin_api_url));
    if !allowed {
        return Err(format!(
            "Secret {namespace}/{} does not name {} as the admin API it may be sent to, so the credentials are not sent: annotate it {}={}.",
            reference.name,
            spec.admin_api_url,
            annotations::PINGFEDERATE_ADMIN_API_URL,
            spec.admin_api_url
        ));
    }
    let read = |key: &str| token_in(secret, key);
    match (read(&reference.username_key), read(&reference.password_key)) {
        (Some(username), Some(password)) => Ok(Credentials {
            username: secrecy::ExposeSecret::expose_secret(&username)
                .trim()
                .to_owned(),
            password: SecretString::from(
                secrecy::ExposeSecret::expose_secret(&password)
                    .trim()
                    .to_owned(),
            ),
        }),
        _ => Err(format!(
            "Secret {namespace}/{} has no {} or no {}.",
            reference.name, reference.username_key, reference.password_key
        )),
    }
}

fn connection_ref(spec: &PingFederateSpec) -> ConnectionRef {
    let selector = &spec.connection;
    match (&selector.id, &selector.name, &selector.entity_id) {
        (Some(id), _, _) => ConnectionRef::Id(id.clone()),
        (None, Some(name), _) => ConnectionRef::Name(name.clone()),
        (None, None, Some(entity)) => ConnectionRef::EntityId(entity.clone()),
        (None, None, None) => ConnectionRef::Id(String::new()),
    }
}

/// Pushes `record`'s token into PingFederate if it is not there yet. `None` when the grant has
/// no `spec.pingFederate`; also returns when to look again.
pub async fn sync(
    grant: &SlackOAuthGrant,
    namespace: &str,
    record: Option<&TokenRecord>,
    context: &Context,
) -> (Option<Synced>, Option<Duration>) {
    let Some(spec) = &grant.spec.ping_federate else {
        return (None, None);
    };
    let previous = grant
        .status
        .as_ref()
        .and_then(|s| s.ping_federate.clone())
        .unwrap_or_default();
    let Some(record) = record else {
        let waiting = Synced {
            status: previous,
            ok: false,
            reason: reasons::PINGFEDERATE_WAITING,
            message: "No token to push into PingFederate yet.".to_owned(),
        };
        return (Some(waiting), None);
    };
    if previous.synced_revision == Some(record.revision) && previous.last_error.is_none() {
        let synced = Synced {
            message: synced_message(&previous, record),
            status: previous,
            ok: true,
            reason: reasons::PINGFEDERATE_SYNCED,
        };
        return (Some(synced), None);
    }
    let credentials_secret = context
        .shared_secrets
        .get(namespace, &spec.credentials_secret_ref.name)
        .map(|packed| packed.unpack());
    let credentials = match credentials(grant, spec, credentials_secret.as_ref()) {
        Ok(credentials) => credentials,
        Err(message) => {
            let refused = Synced {
                status: PingFederateStatus {
                    last_error: Some(reasons::PINGFEDERATE_CREDENTIALS_REFUSED.to_owned()),
                    ..previous
                },
                ok: false,
                reason: reasons::PINGFEDERATE_CREDENTIALS_REFUSED,
                message,
            };
            return (Some(refused), None);
        }
    };
    // A failure only a change can fix is not retried until the grant or the credentials change.
    let versions = format!(
        "token revision {}, generation {}, credentials {}",
        record.revision,
        grant.metadata.generation.unwrap_or_default(),
        credentials_secret
            .as_ref()
            .and_then(|s| s.resource_version())
            .unwrap_or_default()
    );
    if previous.blocked_on.as_deref() == Some(versions.as_str()) {
        let reason = previous
            .last_error
            .as_deref()
            .and_then(|r| reasons_of(r))
            .unwrap_or(reasons::PINGFEDERATE_REJECTED);
        // The failure's own message (which says what to fix) stands.
        let said = grant
            .status
            .as_ref()
            .and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == crate::api::conditions::PINGFEDERATE_SYNCED)
            })
            .filter(|c| c.reason == reason)
            .map(|c| c.message.clone());
        let blocked = Synced {
            message: said.unwrap_or_else(|| format!(
                "The last push into PingFederate failed ({reason}) in a way only a change can fix; it is tried again when the grant, its credentials Secret or the token changes."
            )),
            status: previous,
            ok: false,
            reason,
        };
        return (Some(blocked), None);
    }
    let deadline = Instant::now() + PUSH_TIMEOUT;
    let outcome = push(spec, &credentials, &previous, record, deadline).await;
    match outcome {
        Ok(connection_id) => {
            context.metrics.count_push("synced");
            let status = PingFederateStatus {
                connection_id: Some(connection_id),
                synced_revision: Some(record.revision),
                synced_at: Some(Time(Timestamp::now())),
                last_error: None,
                blocked_on: None,
            };
            let synced = Synced {
                message: synced_message(&status, record),
                status,
                ok: true,
                reason: reasons::PINGFEDERATE_SYNCED,
            };
            (Some(synced), None)
        }
        Err(error) => {
            let transient = error.is_transient();
            context
                .metrics
                .count_push(if transient { "unavailable" } else { "refused" });
            warn!(
                error = &error as &dyn std::error::Error,
                transient, "failed to push the token into PingFederate"
            );
            // With rotation, the token PingFederate holds was issued no later than its push
            // (`syncedAt`) and lives one lifetime: failing still with under a sixth of that
            // left, or two refreshes behind (Slack keeps at most two tokens live), is a warning.
            let behind = transient
                && record.expires_at.is_some_and(|at| {
                    let lifetime = at.duration_since(record.issued_at).as_secs_f64();
                    let old = previous.synced_at.as_ref().is_some_and(|synced| {
                        Timestamp::now().duration_since(synced.0).as_secs_f64()
                            > lifetime * 5.0 / 6.0
                    });
                    let outrun = previous
                        .synced_revision
                        .is_some_and(|r| r + 1 < record.revision);
                    old || outrun
                });
            if behind {
                context.metrics.count_push("behind");
            }
            let reason = if behind {
                reasons::PINGFEDERATE_BEHIND
            } else {
                error.reason()
            };
            let failed = Synced {
                status: PingFederateStatus {
                    last_error: Some(reason.to_owned()),
                    blocked_on: (!transient).then_some(versions),
                    ..previous
                },
                ok: false,
                reason,
                message: format!(
                    "{}. The Secret has the token; {}",
                    capitalized(&error.to_string()),
                    if transient {
                        "the push is retried."
                    } else {
                        "the push is tried again when the grant or its credentials Secret changes."
                    }
                ),
            };
            (Some(failed), transient.then_some(RETRY))
        }
    }
}

fn reasons_of(reason: &str) -> Option<&'static str> {
    [
        reasons::PINGFEDERATE_UNAUTHORIZED,
        reasons::PINGFEDERATE_FIELD_NOT_FOUND,
        reasons::PINGFEDERATE_CONNECTION_NOT_FOUND,
        reasons::PINGFEDERATE_REJECTED,
        reasons::PINGFEDERATE_UNAVAILABLE,
    ]
    .into_iter()
    .find(|r| *r == reason)
}

fn capitalized(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn synced_message(status: &PingFederateStatus, record: &TokenRecord) -> String {
    format!(
        "PingFederate's SP connection {} holds token revision {}.",
        status.connection_id.as_deref().unwrap_or("?"),
        record.revision
    )
}

/// Looks the connection up (once) and pushes the token; returns the connection's ID.
async fn push(
    spec: &PingFederateSpec,
    credentials: &Credentials,
    previous: &PingFederateStatus,
    record: &TokenRecord,
    deadline: Instant,
) -> Result<String, PfError> {
    let base = Url::parse(&spec.admin_api_url).map_err(|_| {
        PfError::ConnectionNotFound(crate::pingfederate::printable(&spec.admin_api_url))
    })?;
    let client = AdminClient::new(&base, credentials.clone(), spec.ca_bundle.as_deref()).map_err(
        |source| PfError::Transport {
            what: "set up the admin API client",
            source,
        },
    )?;
    let reference = connection_ref(spec);
    let id = match (&reference, &previous.connection_id) {
        (ConnectionRef::Id(id), _) => id.clone(),
        (_, Some(id)) => id.clone(),
        _ => client.connection_id(&reference, deadline).await?,
    };
    client
        .push(
            &Push {
                connection_id: &id,
                token_field: &spec.token_field,
                token: &record.access_token,
                bypass_external_validation: spec.bypass_external_validation,
                replicate: spec.replicate,
            },
            deadline,
        )
        .await?;
    Ok(id)
}
