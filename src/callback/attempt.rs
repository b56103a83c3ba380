//! A claimed authorization, from Slack's code to a token in its Secret, or to a recorded
//! failure. From the moment Slack issues a token it either reaches the Secret or is revoked:
//! transient write errors are retried through API server outages, and a permanent error, a
//! Secret of someone else's, or the process stopping end in a revoke.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::{
    Callback,
    cluster::{CallError, Cluster, Held, WriteOutcome},
    outcome::{self, Failure, Refusal},
    pages::Page,
    query::Params,
};
use crate::{
    api::SlackOAuthGrant,
    authorization::{self, Approved, shared_with, team_label},
    events::PlannedEvent,
    record::TokenRecord,
    retry::Backoff,
    slack::{CodeExchange, SlackApi},
};

/// A code lives for 10 minutes; stop retrying Slack a little before that.
const EXCHANGE_BUDGET: Duration = Duration::from_secs(9 * 60 + 30);
/// Revoking a token we cannot keep is retried this long.
const REVOKE_BUDGET: Duration = Duration::from_secs(60);
/// Once the process is stopping: how long an exchange already sent to Slack may still take.
pub const SHUTDOWN_EXCHANGE_GRACE: Duration = Duration::from_secs(20);
/// Once the process is stopping: how long a token Slack issued may still take to be stored.
pub const SHUTDOWN_STORE_GRACE: Duration = Duration::from_secs(15);
/// Once the process is stopping: how long revoking a token that could not be stored may take.
pub const SHUTDOWN_REVOKE_BUDGET: Duration = Duration::from_secs(20);

/// Why a write was given up.
enum Unwritten {
    /// The API server refused it for good (for example 422).
    Refused(u16),
    /// The process is stopping and the write did not make it in time.
    Stopping,
}

/// The grant's record, as this approval wrote it, and the one it replaced.
struct Recorded {
    record: TokenRecord,
    version: String,
    previous: Option<Held>,
}

pub struct Attempt<'a, S, C> {
    callback: &'a Callback<S, C>,
    grant: &'a SlackOAuthGrant,
}

impl<'a, S: SlackApi, C: Cluster> Attempt<'a, S, C> {
    pub fn new(callback: &'a Callback<S, C>, grant: &'a SlackOAuthGrant) -> Self {
        Self { callback, grant }
    }

    fn namespace(&self) -> String {
        self.grant.namespace().unwrap_or_default()
    }

    fn secret_name(&self) -> String {
        format!("{}/{}", self.namespace(), self.grant.spec.secret.name)
    }

    pub async fn run(&self, params: Params) -> Result<Page, Refusal> {
        if let Some(error) = params.error {
            return Ok(self.fail(Failure::declined(&error)).await);
        }
        let Some(code) = params.code else {
            return Ok(self.fail(Failure::no_code()).await);
        };
        self.exchange(code).await
    }

    async fn exchange(&self, code: SecretString) -> Result<Page, Refusal> {
        let spec = &self.grant.spec;
        let reference = &spec.client_secret_ref;
        let client_secret = match self.client_secret().await {
            Ok(Some(secret)) => secret,
            Ok(None) => {
                let failure = Failure::client_secret_missing(
                    &self.namespace(),
                    &reference.name,
                    &reference.key,
                );
                return Ok(self.fail(failure).await);
            }
            Err(error) => {
                warn!(
                    error = &error as &dyn std::error::Error,
                    "failed to read the client secret"
                );
                return Ok(self.fail(Failure::client_secret_unreadable()).await);
            }
        };
        let redirect_uri = self.callback.config.redirect_uri.to_string();
        let request = CodeExchange {
            client_id: spec.client_id.clone(),
            client_secret,
            code,
            redirect_uri: redirect_uri.clone(),
        };
        let deadline = Instant::now() + EXCHANGE_BUDGET;
        let shutdown = &self.callback.shutdown;
        let exchanged = tokio::select! {
            result = self.callback.slack.exchange_code(&request, deadline) => result,
            () = async {
                shutdown.cancelled().await;
                tokio::time::sleep(SHUTDOWN_EXCHANGE_GRACE).await;
            } => {
                // Slack may have issued a token this process will never see. The exchange
                // record stays on the grant, so the next leader warns about it.
                error!("stopping while Slack had not answered the code exchange; a token may be orphaned");
                return Err(Refusal::Stopping);
            }
        };
        let access = match exchanged {
            Ok(access) => access,
            Err(error) => {
                warn!(
                    error = &error as &dyn std::error::Error,
                    "code exchange failed"
                );
                return Ok(self.fail(Failure::exchange(&error, &redirect_uri)).await);
            }
        };
        let now = Timestamp::now();
        match authorization::approve(spec, &access, now) {
            Ok(approved) => {
                // Tokens in the answer that the grant does not keep (the bot token of a user
                // grant, say) would otherwise stay live and unrecorded.
                for token in access.tokens() {
                    if token.expose_secret() != approved.token.expose_secret() {
                        self.revoke(token).await;
                    }
                }
                self.store(approved, now).await
            }
            Err(mismatch) => {
                for token in access.tokens() {
                    self.revoke(token).await;
                }
                info!(
                    reason = mismatch.reason(),
                    "approval does not match the grant; tokens revoked"
                );
                Ok(self.fail(Failure::mismatch(&mismatch)).await)
            }
        }
    }

    /// Keeps the token: first in the grant's record (from then on the operator holds it, so
    /// a crash or an API server outage loses nothing), then in the consumer Secret. A token
    /// that cannot be kept is revoked.
    async fn store(&self, approved: Approved, now: Timestamp) -> Result<Page, Refusal> {
        let recorded = match self.record(&approved, now).await {
            Ok(recorded) => recorded,
            Err(Unwritten::Stopping) => {
                warn!("stopping before the token could be recorded; revoking the token");
                self.revoke(&approved.token).await;
                return Err(Refusal::Stopping);
            }
            Err(Unwritten::Refused(code)) => {
                error!(
                    status = code,
                    "the API server refused the token record for good; revoking the token"
                );
                self.revoke(&approved.token).await;
                let failure = Failure::secret_refused(&self.secret_name(), code);
                return Ok(self.fail(failure).await);
            }
        };
        let desired = &authorization::token_secret(self.grant, &recorded.record);
        let (cluster, grant) = (&self.callback.cluster, self.grant);
        let written = self
            .until_final("write the token Secret", || async move {
                cluster.write_token_secret(grant, desired).await
            })
            .await;
        let failure = match written {
            Ok(WriteOutcome::Written) => {
                let team = team_label(&approved.installation);
                info!(team = %team, secret = %self.secret_name(), "token stored");
                return Ok(outcome::stored(&team, &self.secret_name()));
            }
            Err(Unwritten::Stopping) => {
                // The record holds the token; the next leader writes the Secret from it.
                warn!("stopping before the token Secret was written; the token is recorded");
                let team = team_label(&approved.installation);
                return Ok(outcome::stored(&team, &self.secret_name()));
            }
            Ok(WriteOutcome::Foreign) => Failure::secret_conflict(&self.secret_name()),
            Err(Unwritten::Refused(code)) => {
                error!(
                    status = code,
                    "the API server refused the token Secret for good; revoking the token"
                );
                Failure::secret_refused(&self.secret_name(), code)
            }
        };
        self.revoke(&approved.token).await;
        self.retract(recorded).await;
        Ok(self.fail(failure).await)
    }

    /// Writes the record of the approval, on top of the grant's current one (whose token it
    /// retires). A write that lost a race reads the record again. A grant whose status reports
    /// no token has no record as a rule, so its record is created without reading first; a
    /// record there after all (an approval stored just before) makes the create fail, and is
    /// read then.
    async fn record(&self, approved: &Approved, now: Timestamp) -> Result<Recorded, Unwritten> {
        let (cluster, grant) = (&self.callback.cluster, self.grant);
        let grace = self.callback.config.revoke_grace;
        let first = grant.status.as_ref().is_none_or(|s| s.token.is_none());
        self.until_final("record the token", || async move {
            if first {
                let record = TokenRecord::approved(grant, approved, None, now, grace);
                match cluster.write_record(&record, None).await {
                    Ok(version) => {
                        return Ok(Recorded {
                            record,
                            version,
                            previous: None,
                        });
                    }
                    Err(error) if error.code() == Some(409) => {}
                    Err(error) => return Err(error),
                }
            }
            let previous = cluster.record(grant).await?;
            let record = TokenRecord::approved(
                grant,
                approved,
                previous.as_ref().map(|held| &held.record),
                now,
                grace,
            );
            let version = previous.as_ref().map(|held| held.version.as_str());
            let version = cluster.write_record(&record, version).await?;
            Ok(Recorded {
                record,
                version,
                previous,
            })
        })
        .await
    }

    /// Puts back the record an approval replaced, once its token was revoked because the
    /// Secret could not take it. Failing to is logged: the record then holds a revoked token,
    /// which the next check finds.
    async fn retract(&self, recorded: Recorded) {
        let cluster = &self.callback.cluster;
        let retracted = match &recorded.previous {
            Some(previous) => cluster
                .write_record(&previous.record, Some(&recorded.version))
                .await
                .map(drop),
            None => cluster.delete_record(&recorded.record.uid).await,
        };
        if let Err(error) = retracted {
            warn!(
                error = &error as &dyn std::error::Error,
                "failed to put back the token record after revoking the new token"
            );
        }
    }

    /// Runs `write` until it succeeds or fails for good. Transient errors are retried for as
    /// long as it takes, except that once the process is stopping it gives up after
    /// [`SHUTDOWN_STORE_GRACE`].
    async fn until_final<T, F>(
        &self,
        what: &'static str,
        mut write: impl FnMut() -> F,
    ) -> Result<T, Unwritten>
    where
        F: Future<Output = Result<T, CallError>>,
    {
        let mut backoff = Backoff::secret_write();
        let mut stop_by: Option<Instant> = None;
        let shutdown = &self.callback.shutdown;
        loop {
            let error = match write().await {
                Ok(written) => return Ok(written),
                Err(error) if !error.is_transient() => {
                    return Err(Unwritten::Refused(error.code().unwrap_or_default()));
                }
                Err(error) => error,
            };
            let delay = backoff.next_delay();
            warn!(
                error = &error as &dyn std::error::Error,
                retry_in_ms = delay.as_millis() as u64,
                "failed to {what}; retrying"
            );
            if shutdown.is_cancelled() {
                let until = *stop_by.get_or_insert_with(|| Instant::now() + SHUTDOWN_STORE_GRACE);
                if Instant::now() + delay >= until {
                    return Err(Unwritten::Stopping);
                }
                tokio::time::sleep(delay).await;
            } else {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => {}
                }
            }
        }
    }

    /// The Client Secret, if its Secret exists, is shared with this grant, and has the key. A
    /// Secret that is not shared is treated exactly like a missing one.
    async fn client_secret(&self) -> Result<Option<SecretString>, super::cluster::CallError> {
        let reference = &self.grant.spec.client_secret_ref;
        let secret = self
            .callback
            .cluster
            .shared_secret(&self.namespace(), &reference.name)
            .await?;
        let value = secret
            .filter(|s| shared_with(s, &self.grant.name_any()))
            .and_then(|s| s.data)
            .and_then(|mut data| data.remove(&reference.key))
            .and_then(|bytes| String::from_utf8(bytes.0).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        Ok(value.map(SecretString::from))
    }

    async fn revoke(&self, token: &SecretString) {
        let budget = if self.callback.shutdown.is_cancelled() {
            SHUTDOWN_REVOKE_BUDGET
        } else {
            REVOKE_BUDGET
        };
        let revoked = self
            .callback
            .slack
            .revoke(token, Instant::now() + budget)
            .await;
        if let Err(error) = revoked {
            error!(
                error = &error as &dyn std::error::Error,
                "failed to revoke a token Slack issued; it may be orphaned"
            );
        }
    }

    /// Records the failure on the grant (the controller then publishes a new link), publishes
    /// it as a Warning Event, and returns its page.
    async fn fail(&self, failure: Failure) -> Page {
        let cluster = &self.callback.cluster;
        let recorded = cluster
            .record_failure(
                self.grant,
                failure.reason,
                &failure.message,
                Timestamp::now(),
            )
            .await;
        if let Err(error) = recorded {
            warn!(
                error = &error as &dyn std::error::Error,
                reason = failure.reason,
                "failed to record the failed attempt"
            );
        }
        let event = PlannedEvent {
            warning: true,
            reason: failure.reason,
            note: failure.message.clone(),
        };
        cluster.publish(self.grant, &event).await;
        failure.page()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shutdown_budget_fits_the_pod_grace_period() {
        let custody = SHUTDOWN_EXCHANGE_GRACE + SHUTDOWN_STORE_GRACE + SHUTDOWN_REVOKE_BUDGET;
        assert!(custody + Duration::from_secs(5) <= crate::run::SHUTDOWN_BUDGET);
    }
}
