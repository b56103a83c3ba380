//! Keeping a grant's tokens between approvals, before `plan` runs: moving a Secret written
//! before records existed under one, refreshing a rotating token, writing the consumer Secret
//! back from the record when it was deleted, edited or is behind, and revoking the tokens that
//! new approvals replaced once their grace has passed.
//!
//! The rules are pure ([`crate::record`], [`crate::authorization::holds`]); this is the I/O.

use std::time::Duration;

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::ResourceExt;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::{Adoption, Context, Error, TokenSecret};
use crate::{
    api::{SlackOAuthGrant, conditions, reasons},
    authorization::{
        self, AdoptRefusal, adoptable, holds, manages, read_legacy, shared_with, token_in,
    },
    events::{self, PlannedEvent},
    record::TokenRecord,
    retry::Backoff,
    slack::{SlackApi, TokenRefresh, is_dead_refresh, is_dead_token},
    store::{self, Held, WriteOutcome},
};

/// How long one refresh or revoke at Slack may take, retries included.
const SLACK_TIMEOUT: Duration = Duration::from_secs(15);
/// After Slack could not answer a refresh or a revoke, look again this soon.
const RETRY_SLACK: Duration = Duration::from_secs(30);
/// Once the process is stopping: how long a refreshed token may still take to be recorded.
const SHUTDOWN_RECORD_GRACE: Duration = Duration::from_secs(15);

/// The grant's tokens after keeping.
pub struct Kept {
    pub token_secret: TokenSecret,
    pub adoption: Adoption,
    pub held: Option<Held>,
    /// Why the consumer Secret was just written back, if it was.
    pub restored: Option<&'static str>,
    /// When keeping wants to run again (a refresh or a revoke due, a retry).
    pub next: Option<Duration>,
}

fn until(now: Timestamp, then: Timestamp) -> Duration {
    Duration::try_from(then.duration_since(now))
        .unwrap_or_default()
        .max(Duration::from_secs(1))
}

fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Keeps the grant's tokens; see the module documentation.
pub async fn keep(
    grant: &SlackOAuthGrant,
    context: &Context,
    consumer: Option<Secret>,
    mut held: Option<Held>,
    client_secret: Option<&SecretString>,
) -> Result<Kept, Error> {
    let now = Timestamp::now();
    let key = &grant.spec.secret.key;
    let managed = consumer.as_ref().filter(|s| manages(s, grant));
    if let Some(foreign) = consumer.as_ref().filter(|_| managed.is_none()) {
        let adoption = adopt(grant, context, foreign, &mut held, now).await?;
        let token_secret = if adoption == Adoption::Adopted {
            TokenSecret::Managed
        } else {
            TokenSecret::Foreign
        };
        return Ok(Kept {
            token_secret,
            adoption,
            held,
            restored: None,
            next: None,
        });
    }
    if held.is_none()
        && let Some(legacy) = managed.and_then(|s| read_legacy(s, key))
    {
        let record = TokenRecord::migrated(grant, &legacy, now);
        let version = context
            .records
            .put(&record, None)
            .await
            .map_err(Error::Record)?;
        info!("moved the token Secret's approval under a token record");
        held = Some(Held { record, version });
    }
    let Some(mut current) = held else {
        let token_secret = match managed {
            Some(_) => TokenSecret::Managed,
            None => TokenSecret::Absent,
        };
        return Ok(Kept {
            token_secret,
            adoption: Adoption::NotAsked,
            held: None,
            restored: None,
            next: None,
        });
    };

    let mut next = None;
    let mut refreshed = false;
    if current.record.refresh_at().is_some_and(|at| at <= now) {
        match refresh(grant, &current, client_secret, context).await {
            Ok(fresh) => {
                refreshed = fresh.record.revision != current.record.revision;
                current = fresh;
            }
            Err(error) => {
                warn!(
                    error = &error as &dyn std::error::Error,
                    "failed to refresh the token; the Secret keeps the current one"
                );
                next = Some(RETRY_SLACK);
            }
        }
    }
    if let Some(at) = current.record.refresh_at() {
        next = sooner(next, Some(until(now, at)));
    }

    let (token_secret, restored) = project(grant, context, managed, &current, refreshed).await?;
    if token_secret == TokenSecret::Managed {
        let switched = consumers_switched(grant, current.record.revision);
        let (fresh, retry) = retire(context, current, now, switched).await;
        current = fresh;
        next = sooner(next, retry);
    }
    if let Some(at) = current.record.next_retirement() {
        next = sooner(next, Some(until(now, at)));
    }
    Ok(Kept {
        token_secret,
        adoption: Adoption::NotAsked,
        held: Some(current),
        restored,
        next,
    })
}

/// Adopts the token in `foreign` if the grant asks for it, the Secret opts in, and Slack accepts
/// the token as the one the grant asks for: the record first, then the Secret taken over. A
/// record already holding this very token (a takeover interrupted last time) is finished.
/// Anything else leaves the Secret exactly as it was. On success `held` is the new record.
async fn adopt(
    grant: &SlackOAuthGrant,
    context: &Context,
    foreign: &Secret,
    held: &mut Option<Held>,
    now: Timestamp,
) -> Result<Adoption, Error> {
    if !grant.spec.secret.adopt {
        return Ok(Adoption::NotAsked);
    }
    if !shared_with(foreign, &grant.name_any()) {
        return Ok(Adoption::NotShared);
    }
    let key = &grant.spec.secret.key;
    let Some(token) = token_in(foreign, key) else {
        return Ok(Adoption::Refused(
            AdoptRefusal::NoToken(key.clone()).to_string(),
        ));
    };
    let resumed = held
        .as_ref()
        .is_some_and(|h| h.record.access_token.expose_secret() == token.expose_secret());
    if held.is_some() && !resumed {
        return Ok(Adoption::NotAsked);
    }
    if !resumed {
        let installation = match context
            .slack
            .check(&token, Instant::now() + SLACK_TIMEOUT)
            .await
        {
            Ok(identity) => match adoptable(&grant.spec, &identity, now) {
                Ok(installation) => installation,
                Err(refusal) => return Ok(Adoption::Refused(refusal.to_string())),
            },
            Err(error) if is_dead_token(&error) => {
                let code = error.code().unwrap_or("refused").to_owned();
                return Ok(Adoption::Refused(AdoptRefusal::Refused(code).to_string()));
            }
            Err(error) => {
                warn!(
                    error = &error as &dyn std::error::Error,
                    "failed to check the token to adopt with Slack; retrying"
                );
                return Ok(Adoption::Unavailable);
            }
        };
        let record = TokenRecord::adopted(grant, token, installation, now);
        let version = context
            .records
            .put(&record, None)
            .await
            .map_err(Error::Record)?;
        *held = Some(Held { record, version });
    }
    let Some(current) = held.as_ref() else {
        return Ok(Adoption::NotAsked);
    };
    let desired = authorization::token_secret(grant, &current.record);
    store::adopt_consumer(&context.client, foreign, &desired)
        .await
        .map_err(Error::WriteSecret)?;
    info!("adopted the token in the existing Secret after Slack accepted it");
    let event = PlannedEvent {
        warning: false,
        reason: reasons::ADOPTED,
        note: format!(
            "Adopted the token in Secret {}/{} after Slack accepted it for {}; it is managed from now on.",
            grant.namespace().unwrap_or_default(),
            grant.spec.secret.name,
            authorization::team_label(&current.record.installation)
        ),
    };
    events::publish(&context.recorder, grant, &event).await;
    Ok(Adoption::Adopted)
}

/// Writes the consumer Secret from the record if it does not hold the record's token. Says why
/// when that repairs something a person did (deleted the Secret, edited its token), and not
/// when the Secret was only behind (a refresh just now, a callback stopped before writing it, an
/// upgrade).
async fn project(
    grant: &SlackOAuthGrant,
    context: &Context,
    managed: Option<&Secret>,
    held: &Held,
    refreshed: bool,
) -> Result<(TokenSecret, Option<&'static str>), Error> {
    let record = &held.record;
    if managed.is_some_and(|s| holds(s, grant, record)) {
        return Ok((TokenSecret::Managed, None));
    }
    // The status showed this very token delivered, for this spec: so a person undid it.
    let status = grant.status.as_ref();
    let delivered = !refreshed
        && status.is_some_and(|s| {
            s.observed_generation == grant.metadata.generation
                && s.token
                    .as_ref()
                    .is_some_and(|t| t.revision == record.revision)
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == conditions::READY && c.status == "True")
        });
    let key = &grant.spec.secret.key;
    let restored = match managed {
        None if delivered => Some(reasons::SECRET_DELETED),
        Some(secret)
            if delivered
                && token_in(secret, key)
                    .is_none_or(|t| t.expose_secret() != record.access_token.expose_secret()) =>
        {
            Some(reasons::SECRET_EDITED)
        }
        _ => None,
    };
    let desired = authorization::token_secret(grant, record);
    match store::write_consumer(&context.client, grant, &desired)
        .await
        .map_err(Error::WriteSecret)?
    {
        WriteOutcome::Written => {
            if let Some(reason) = restored {
                warn!(reason, "wrote the token Secret back from the token record");
            }
            Ok((TokenSecret::Managed, restored))
        }
        WriteOutcome::Foreign => Ok((TokenSecret::Foreign, None)),
    }
}

/// Refreshes the record's token. From the moment Slack answers, the new refresh token exists
/// only in this process (the old one is spent), so recording it is retried through API server
/// outages like a new token after an exchange; only a process that is stopping gives up, and
/// then revokes the new access token so that it is not left live and unrecorded.
async fn refresh(
    grant: &SlackOAuthGrant,
    held: &Held,
    client_secret: Option<&SecretString>,
    context: &Context,
) -> Result<Held, Error> {
    let Some(client_secret) = client_secret else {
        return Err(Error::RefreshWithoutClientSecret);
    };
    let Some(refresh_token) = held.record.refresh_token.clone() else {
        return Ok(held.clone());
    };
    let request = TokenRefresh {
        client_id: grant.spec.client_id.clone(),
        client_secret: client_secret.clone(),
        refresh_token,
    };
    let answer = context
        .slack
        .refresh(&request, Instant::now() + SLACK_TIMEOUT)
        .await;
    let refreshed = match answer {
        Ok(refreshed) => refreshed,
        Err(error) if is_dead_refresh(&error) => {
            warn!(
                error = &error as &dyn std::error::Error,
                "Slack refused the refresh token for good; a new approval is needed"
            );
            context.metrics.count_refresh("refused");
            let mut record = held.record.clone();
            record.refresh_failed = true;
            record.refresh_token = None;
            let version = context
                .records
                .put(&record, Some(&held.version))
                .await
                .map_err(Error::Record)?;
            return Ok(Held { record, version });
        }
        Err(error) => {
            context.metrics.count_refresh("unavailable");
            return Err(Error::Refresh(error));
        }
    };
    let now = Timestamp::now();
    let mut current = held.clone();
    let mut backoff = Backoff::secret_write();
    let mut stop_by = None;
    loop {
        let next = current.record.refreshed(
            refreshed.access_token.clone(),
            refreshed.refresh_token.clone(),
            refreshed.expires_in,
            now,
        );
        let error = match context.records.put(&next, Some(&current.version)).await {
            Ok(version) => {
                context.metrics.count_refresh("refreshed");
                info!(revision = next.revision, "refreshed the token");
                return Ok(Held {
                    record: next,
                    version,
                });
            }
            Err(error) if error.code() == Some(409) => {
                let Some(fresh) = context
                    .records
                    .get(&current.record.uid)
                    .await
                    .map_err(Error::Record)?
                else {
                    revoke_unrecorded(context, &refreshed.access_token).await;
                    return Err(Error::RecordGone);
                };
                let same_token = fresh.record.access_token.expose_secret()
                    == current.record.access_token.expose_secret();
                if !same_token {
                    // A new approval replaced the token meanwhile: it wins.
                    revoke_unrecorded(context, &refreshed.access_token).await;
                    return Ok(fresh);
                }
                current = fresh;
                continue;
            }
            Err(error) if !error.is_transient() => {
                revoke_unrecorded(context, &refreshed.access_token).await;
                return Err(Error::Record(error));
            }
            Err(error) => error,
        };
        let delay = backoff.next_delay();
        warn!(
            error = &error as &dyn std::error::Error,
            retry_in_ms = delay.as_millis() as u64,
            "failed to record the refreshed token; retrying"
        );
        if context.shutdown.is_cancelled() {
            let until = *stop_by.get_or_insert_with(|| Instant::now() + SHUTDOWN_RECORD_GRACE);
            if Instant::now() + delay >= until {
                revoke_unrecorded(context, &refreshed.access_token).await;
                return Err(Error::Record(error));
            }
        }
        tokio::time::sleep(delay).await;
    }
}

async fn revoke_unrecorded(context: &Context, token: &SecretString) {
    if let Err(error) = context
        .slack
        .revoke(token, Instant::now() + SLACK_TIMEOUT)
        .await
    {
        error!(
            error = &error as &dyn std::error::Error,
            "failed to revoke a refreshed token that could not be recorded; it expires on its own"
        );
    }
}

/// Whether every consumer the grant tells the operator about has switched to token `revision`:
/// the listed workloads rolled out with it, and PingFederate holds it. False when it lists none
/// (nothing reports back, so the grace applies).
fn consumers_switched(grant: &SlackOAuthGrant, revision: u64) -> bool {
    let status = grant.status.as_ref();
    let rollout = (!grant.spec.secret.rollout_restart.is_empty()).then(|| {
        status
            .and_then(|s| s.rollout.as_ref())
            .is_some_and(|r| r.revision == revision && r.finished_at.is_some())
    });
    let ping_federate = grant.spec.ping_federate.is_some().then(|| {
        status
            .and_then(|s| s.ping_federate.as_ref())
            .is_some_and(|p| p.synced_revision == Some(revision) && p.last_error.is_none())
    });
    match (rollout, ping_federate) {
        (None, None) => false,
        (rollout, ping_federate) => rollout.unwrap_or(true) && ping_federate.unwrap_or(true),
    }
}

/// Revokes the replaced tokens whose grace has passed, or all of them once the consumers have
/// switched (`switched`: the listed workloads rolled out with the current token), and forgets
/// them. The consumer Secret holds the new token by then. Returns the record as it is now, and when to try again if Slack failed.
async fn retire(
    context: &Context,
    held: Held,
    now: Timestamp,
    switched: bool,
) -> (Held, Option<Duration>) {
    let due = if switched {
        held.record.retired_tokens()
    } else {
        held.record.retired_due(now)
    };
    if due.is_empty() {
        return (held, None);
    }
    let mut revoked = Vec::new();
    let mut retry = None;
    for token in due {
        match context
            .slack
            .revoke(&token, Instant::now() + SLACK_TIMEOUT)
            .await
        {
            Ok(()) => revoked.push(token),
            Err(error) => {
                warn!(
                    error = &error as &dyn std::error::Error,
                    "failed to revoke a replaced token; retrying"
                );
                retry = Some(RETRY_SLACK);
            }
        }
    }
    if revoked.is_empty() {
        return (held, retry);
    }
    let record = held.record.without_retired(&revoked);
    match context.records.put(&record, Some(&held.version)).await {
        Ok(version) => {
            info!(
                count = revoked.len(),
                "revoked the tokens a new approval replaced"
            );
            (Held { record, version }, retry)
        }
        Err(error) => {
            // Revoked at Slack, still listed: revoking again later is harmless.
            warn!(
                error = &error as &dyn std::error::Error,
                "failed to forget revoked tokens; retrying"
            );
            (held, Some(RETRY_SLACK))
        }
    }
}

/// The tokens to revoke when the grant is deleted: every live one of its record under
/// `Revoke`, only the replaced ones under `Retain`; a Secret from before records, its token.
pub fn to_revoke_on_delete(
    grant: &SlackOAuthGrant,
    held: Option<&Held>,
    consumer: Option<&Secret>,
    revoke: bool,
) -> Vec<SecretString> {
    match held {
        Some(held) if revoke => held.record.live_tokens(),
        Some(held) => held.record.retired_tokens(),
        None if revoke => consumer
            .filter(|s| manages(s, grant))
            .and_then(|s| token_in(s, &grant.spec.secret.key))
            .into_iter()
            .collect(),
        None => Vec::new(),
    }
}
