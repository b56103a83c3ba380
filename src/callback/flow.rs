//! One callback from Slack, from `state` to the token in its Secret.
//!
//! The order matters:
//! 1. Check the `state` against the grant it names (see `state.rs`).
//! 2. Claim the link: a JSON patch on the grant's status that `test`s the published URL and
//!    removes it. Of two callbacks with one `state`, exactly one claim succeeds, on any replica;
//!    the other is refused before it reaches Slack.
//! 3. Only then exchange the code, check Slack's answer against the grant, and write the Secret.
//!    From the moment Slack issues a token it either reaches the Secret or is revoked: Secret
//!    writes are retried through API server outages, and given up (with a revoke) only when the
//!    process is stopping, or when the Secret turns out to belong to someone else.
//!
//! The callback server writes the token Secret (it is its only writer) and, for the grant, only
//! the claim and a failed attempt's condition. The controller derives `Ready` from the Secret.

use std::time::Duration;

use axum::http::StatusCode;
use k8s_openapi::{
    api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use tracing::{Instrument, info, info_span, warn};

use super::{Callback, pages::Page, state::AuthorizationState};
use crate::{
    api::{FIELD_MANAGER, SlackOAuthGrant, conditions, reasons},
    authorization::{self, Approved, manages, state_of, team_label},
    controller::{PlannedEvent, publish},
    slack::{CodeExchange, SlackApi, SlackError, is_error_code},
};

/// A code lives for 10 minutes; stop retrying Slack a little before that.
const EXCHANGE_BUDGET: Duration = Duration::from_secs(9 * 60 + 30);
/// Revoking a token we cannot keep is retried this long.
const REVOKE_BUDGET: Duration = Duration::from_secs(60);
/// Longest pause between two attempts to write the Secret.
const MAX_WRITE_BACKOFF: Duration = Duration::from_secs(5);

/// The callback's query parameters. `code` is a secret: it has no `Debug`.
struct Params {
    state: Option<String>,
    code: Option<SecretString>,
    error: Option<String>,
}

fn parse(query: &str) -> Result<Params, ()> {
    let mut params = Params {
        state: None,
        code: None,
        error: None,
    };
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot_taken = match key.as_ref() {
            "state" => params.state.replace(value.into_owned()).is_some(),
            "code" => params
                .code
                .replace(SecretString::from(value.into_owned()))
                .is_some(),
            "error" => params.error.replace(value.into_owned()).is_some(),
            _ => false,
        };
        // A repeated parameter is never something Slack sends.
        if slot_taken {
            return Err(());
        }
    }
    Ok(params)
}

pub async fn handle<S: SlackApi>(callback: &Callback<S>, query: &str) -> Page {
    let page = handle_query(callback, query).await;
    let outcome = match (&page.reason, page.success) {
        (_, true) => "Authorized",
        (Some(reason), false) => reason,
        (None, false) => "Refused",
    };
    callback.metrics.count_callback(outcome);
    page
}

async fn handle_query<S: SlackApi>(callback: &Callback<S>, query: &str) -> Page {
    let Ok(params) = parse(query) else {
        return refused_link(
            StatusCode::BAD_REQUEST,
            "This is not a valid authorization response",
        );
    };
    let Some(raw_state) = params.state.clone() else {
        return refused_link(
            StatusCode::BAD_REQUEST,
            "This authorization response has no state",
        );
    };
    let Ok(state) = AuthorizationState::decode(&raw_state) else {
        return refused_link(
            StatusCode::BAD_REQUEST,
            "This authorization response was not issued by this operator",
        );
    };
    let span = info_span!("callback", namespace = %state.namespace, grant = %state.name);
    async move { handle_for_grant(callback, params, &raw_state, &state).await }
        .instrument(span)
        .await
}

async fn handle_for_grant<S: SlackApi>(
    callback: &Callback<S>,
    params: Params,
    raw_state: &str,
    state: &AuthorizationState,
) -> Page {
    let grants = Api::<SlackOAuthGrant>::namespaced(callback.client.clone(), &state.namespace);
    let grant = match grants.get_opt(&state.name).await {
        Ok(Some(grant)) => grant,
        Ok(None) => return gone("The SlackOAuthGrant this link was issued for no longer exists."),
        Err(error) => {
            warn!(
                error = &error as &dyn std::error::Error,
                "failed to read the grant"
            );
            return unavailable();
        }
    };
    let current = grant
        .status
        .as_ref()
        .and_then(|s| s.authorization_url.as_deref())
        .and_then(state_of);
    let now = Timestamp::now();
    if let Err(mismatch) = state.check(
        raw_state,
        grant.uid().as_deref().unwrap_or_default(),
        grant.metadata.generation.unwrap_or_default(),
        current.as_deref(),
        now.as_second(),
    ) {
        info!(?mismatch, "callback refused");
        return match mismatch {
            super::state::Mismatch::GrantGone => {
                gone("The SlackOAuthGrant this link was issued for was deleted.")
            }
            super::state::Mismatch::OlderGeneration => gone(
                "This link was issued for an earlier version of the SlackOAuthGrant, whose spec has changed since.",
            ),
            super::state::Mismatch::Expired => gone("This authorization link has expired."),
            super::state::Mismatch::NotCurrent => refused_link(
                StatusCode::CONFLICT,
                "This authorization link has already been used, or has been replaced by a newer one",
            ),
        };
    }

    // Claim the link before anything else, so a second callback with it is refused.
    let grant = match claim(&grants, &grant, now).await {
        Ok(Some(claimed)) => claimed,
        Ok(None) => {
            return refused_link(
                StatusCode::CONFLICT,
                "This authorization link has already been used",
            );
        }
        Err(error) => {
            warn!(
                error = &error as &dyn std::error::Error,
                "failed to claim the authorization link"
            );
            return unavailable();
        }
    };
    let attempt = Attempt {
        callback,
        grants: &grants,
        grant,
    };

    if let Some(error) = params.error {
        return attempt.declined(&error).await;
    }
    let Some(code) = params.code else {
        return attempt
            .fail(
                StatusCode::BAD_REQUEST,
                reasons::AUTHORIZATION_FAILED,
                "Slack sent the browser back without an authorization code.".to_owned(),
            )
            .await;
    };
    attempt.exchange(code).await
}

/// One claimed authorization, on its way to a token in a Secret or to a recorded failure.
struct Attempt<'a, S> {
    callback: &'a Callback<S>,
    grants: &'a Api<SlackOAuthGrant>,
    grant: SlackOAuthGrant,
}

impl<S: SlackApi> Attempt<'_, S> {
    fn secret_name(&self) -> String {
        format!(
            "{}/{}",
            self.grant.namespace().unwrap_or_default(),
            self.grant.spec.secret.name
        )
    }

    async fn declined(&self, error: &str) -> Page {
        if error == "access_denied" {
            return self
                .fail(
                    StatusCode::FORBIDDEN,
                    reasons::ACCESS_DENIED,
                    "The Slack owner declined the authorization (Slack's access_denied). A new authorization link has been published in status.authorizationURL.".to_owned(),
                )
                .await;
        }
        let code = sanitize(error);
        self.fail(
            StatusCode::FORBIDDEN,
            reasons::AUTHORIZATION_FAILED,
            format!("Slack did not authorize the app: {code}. A new authorization link has been published in status.authorizationURL."),
        )
        .await
    }

    async fn exchange(&self, code: SecretString) -> Page {
        let spec = &self.grant.spec;
        let namespace = self.grant.namespace().unwrap_or_default();
        let client_secret = match self.client_secret().await {
            Ok(Some(secret)) => secret,
            Ok(None) => {
                let message = format!(
                    "Secret {namespace}/{} with key {} (the Slack app's Client Secret) was not found when the callback arrived.",
                    spec.client_secret_ref.name, spec.client_secret_ref.key
                );
                return self
                    .fail(
                        StatusCode::SERVICE_UNAVAILABLE,
                        reasons::CLIENT_SECRET_MISSING,
                        message,
                    )
                    .await;
            }
            Err(error) => {
                warn!(
                    error = &error as &dyn std::error::Error,
                    "failed to read the client secret"
                );
                return self
                    .fail(
                        StatusCode::SERVICE_UNAVAILABLE,
                        reasons::EXCHANGE_FAILED,
                        "The operator could not read the Slack app's Client Secret from Kubernetes.".to_owned(),
                    )
                    .await;
            }
        };
        let request = CodeExchange {
            client_id: spec.client_id.clone(),
            client_secret,
            code,
            redirect_uri: self.callback.config.redirect_uri.to_string(),
        };
        let deadline = Instant::now() + EXCHANGE_BUDGET;
        let access = match self.callback.slack.exchange_code(&request, deadline).await {
            Ok(access) => access,
            Err(error) => return self.exchange_failed(&error).await,
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
                let message = format!(
                    "{mismatch}. The tokens Slack issued were revoked; a new authorization link has been published in status.authorizationURL."
                );
                self.fail(StatusCode::FORBIDDEN, mismatch.reason(), message)
                    .await
            }
        }
    }

    async fn exchange_failed(&self, error: &SlackError) -> Page {
        warn!(
            error = error as &dyn std::error::Error,
            "code exchange failed"
        );
        let (status, reason, what) = match error.code() {
            Some("invalid_code") => (
                StatusCode::BAD_REQUEST,
                reasons::INVALID_CODE,
                "Slack refused the authorization code (invalid_code): it expired, was already used, or belongs to another app.".to_owned(),
            ),
            Some("bad_client_secret") => (
                StatusCode::BAD_GATEWAY,
                reasons::BAD_CLIENT_SECRET,
                "Slack refused the app's Client Secret (bad_client_secret): check the Secret named by spec.clientSecretRef.".to_owned(),
            ),
            Some("invalid_client_id") => (
                StatusCode::BAD_GATEWAY,
                reasons::INVALID_CLIENT_ID,
                "Slack does not know spec.clientID (invalid_client_id).".to_owned(),
            ),
            Some("bad_redirect_uri") => (
                StatusCode::BAD_GATEWAY,
                reasons::BAD_REDIRECT_URI,
                format!(
                    "Slack refused the redirect URI (bad_redirect_uri): add {} to the Slack app's Redirect URLs.",
                    self.callback.config.redirect_uri
                ),
            ),
            Some(code) => (
                StatusCode::BAD_GATEWAY,
                reasons::EXCHANGE_FAILED,
                format!("Slack refused the code exchange: {code}."),
            ),
            None if error.is_transient() => (
                StatusCode::SERVICE_UNAVAILABLE,
                reasons::SLACK_UNAVAILABLE,
                "Slack could not be reached, or kept failing, within the code's 10-minute lifetime.".to_owned(),
            ),
            None => (
                StatusCode::BAD_GATEWAY,
                reasons::EXCHANGE_FAILED,
                "Slack's answer to the code exchange could not be understood.".to_owned(),
            ),
        };
        let message = format!(
            "{what} A new authorization link has been published in status.authorizationURL."
        );
        self.fail(status, reason, message).await
    }

    /// Writes the token, retrying through API server outages until it lands. Gives up, revoking
    /// the token, only if the Secret belongs to someone else or the process is stopping.
    async fn store(&self, approved: Approved, now: Timestamp) -> Page {
        let namespace = self.grant.namespace().unwrap_or_default();
        let secrets = Api::<Secret>::namespaced(self.callback.client.clone(), &namespace);
        let desired = authorization::token_secret(&self.grant, &approved, now);
        let name = self.grant.spec.secret.name.clone();
        let mut backoff = Duration::from_millis(250);
        loop {
            match write_secret(&secrets, &name, &desired, &self.grant).await {
                Ok(WriteOutcome::Written) => break,
                Ok(WriteOutcome::Foreign) => {
                    self.revoke(&approved.token).await;
                    let message = format!(
                        "Secret {} exists and is not managed by slack-oauth-operator, so it was not overwritten; the new token was revoked. Delete that Secret or change spec.secret.name, then approve the new link in status.authorizationURL.",
                        self.secret_name()
                    );
                    return self
                        .fail(StatusCode::CONFLICT, reasons::SECRET_CONFLICT, message)
                        .await;
                }
                Err(error) => {
                    warn!(
                        error = &error as &dyn std::error::Error,
                        retry_in_ms = backoff.as_millis() as u64,
                        "failed to write the token Secret; retrying"
                    );
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.callback.shutdown.cancelled() => {
                    warn!("stopping before the token Secret could be written; revoking the token");
                    self.revoke(&approved.token).await;
                    return Page::failure(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Authorization not saved",
                        "The operator was stopping and could not save the token, so it revoked it.",
                        "Open the authorization link again from the grant's status.authorizationURL once the operator is back.",
                    );
                }
            }
            backoff = (backoff * 2).min(MAX_WRITE_BACKOFF);
        }
        let team = team_label(&approved.installation);
        info!(team = %team, secret = %self.secret_name(), "token stored");
        Page::success(
            "Slack authorization complete",
            format!(
                "The token approved by {team} is stored in Secret {}.",
                self.secret_name()
            ),
            "Nothing: you can close this page. The workload reading the Secret picks up the token.",
        )
    }

    async fn client_secret(&self) -> Result<Option<SecretString>, kube::Error> {
        let reference = &self.grant.spec.client_secret_ref;
        let namespace = self.grant.namespace().unwrap_or_default();
        let secret = Api::<Secret>::namespaced(self.callback.client.clone(), &namespace)
            .get_opt(&reference.name)
            .await?;
        let value = secret
            .and_then(|s| s.data)
            .and_then(|mut data| data.remove(&reference.key))
            .and_then(|bytes| String::from_utf8(bytes.0).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        Ok(value.map(SecretString::from))
    }

    async fn revoke(&self, token: &SecretString) {
        if let Err(error) = self
            .callback
            .slack
            .revoke(token, Instant::now() + REVOKE_BUDGET)
            .await
        {
            warn!(
                error = &error as &dyn std::error::Error,
                "failed to revoke a token Slack issued"
            );
        }
    }

    /// Records a failed attempt on the grant (the controller then publishes a new link) and
    /// returns its page.
    async fn fail(&self, status: StatusCode, reason: &'static str, message: String) -> Page {
        if let Err(error) = record_failure(self.grants, &self.grant, reason, &message).await {
            warn!(
                error = &error as &dyn std::error::Error,
                reason, "failed to record the failed attempt"
            );
        }
        publish(
            &self.callback.recorder,
            &self.grant,
            &PlannedEvent {
                warning: true,
                reason,
                note: message.clone(),
            },
        )
        .await;
        let title = match reason {
            reasons::ACCESS_DENIED => "Authorization declined",
            reasons::SLACK_UNAVAILABLE => "Slack is unavailable",
            reasons::SECRET_CONFLICT => "Secret not overwritten",
            _ => "Authorization failed",
        };
        Page::failure_for(
            reason,
            status,
            title,
            message,
            "Ask the person who manages this SlackOAuthGrant for the new link (kubectl get slackoauthgrant -o jsonpath='{.status.authorizationURL}'), fix what the message above names if anything, and approve again.",
        )
    }
}

/// Removes the published link from the grant's status, provided it is still the one checked.
/// `Ok(None)` means another callback (or the controller) got there first.
///
/// The patch `test`s the resourceVersion it was computed from, so exactly one of two concurrent
/// claims wins. (Testing the URL itself would be more direct, but the API server compares `test`
/// values as raw JSON, in which Go escapes the URL's `&`.) A lost race re-reads the grant: if the
/// link is still published, the claim is tried again.
async fn claim(
    grants: &Api<SlackOAuthGrant>,
    grant: &SlackOAuthGrant,
    now: Timestamp,
) -> Result<Option<SlackOAuthGrant>, kube::Error> {
    let Some(url) = grant
        .status
        .as_ref()
        .and_then(|s| s.authorization_url.clone())
    else {
        return Ok(None);
    };
    let mut current = grant.clone();
    for attempt in 1..=5u64 {
        let status = current.status.clone().unwrap_or_default();
        let conditions = with_ready(
            &status.conditions,
            reasons::EXCHANGING,
            "A Slack owner approved; the operator is exchanging the code and writing the Secret.",
            current.metadata.generation.unwrap_or_default(),
            now,
        );
        let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
            { "op": "test", "path": "/metadata/resourceVersion", "value": current.resource_version() },
            { "op": "remove", "path": "/status/authorizationURL" },
            { "op": "remove", "path": "/status/authorizationExpiresAt" },
            { "op": "add", "path": "/status/conditions", "value": conditions },
        ]))
        .unwrap_or_else(|_| json_patch::Patch(Vec::new()));
        let result = grants
            .patch_status(
                &grant.name_any(),
                &PatchParams::default(),
                &Patch::<()>::Json(patch),
            )
            .await;
        match result {
            Ok(claimed) => return Ok(Some(claimed)),
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(None),
            Err(kube::Error::Api(status)) if status.code == 422 || status.code == 409 => {
                let Some(fresh) = grants.get_opt(&grant.name_any()).await? else {
                    return Ok(None);
                };
                let still_published = fresh
                    .status
                    .as_ref()
                    .and_then(|s| s.authorization_url.as_deref())
                    == Some(url.as_str())
                    && fresh.metadata.generation == grant.metadata.generation;
                if !still_published {
                    return Ok(None);
                }
                current = fresh;
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(None)
}

/// Sets the `Ready` condition to `False` with `reason`, retrying on conflicts with fresh reads.
async fn record_failure(
    grants: &Api<SlackOAuthGrant>,
    grant: &SlackOAuthGrant,
    reason: &str,
    message: &str,
) -> Result<(), kube::Error> {
    let mut current = grant.clone();
    for _ in 0..5 {
        let mut status = current.status.clone().unwrap_or_default();
        status.conditions = with_ready(
            &status.conditions,
            reason,
            message,
            grant.metadata.generation.unwrap_or_default(),
            Timestamp::now(),
        );
        let mut updated = current.clone();
        updated.status = Some(status);
        updated.metadata.managed_fields = None;
        match grants
            .replace_status(&grant.name_any(), &PostParams::default(), &updated)
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                current = grants.get(&grant.name_any()).await?;
                // A failure is recorded against the generation it happened in, never a newer one.
                if current.metadata.generation != grant.metadata.generation {
                    return Ok(());
                }
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// `conditions` with `Ready` set to `False` for `reason`.
fn with_ready(
    conditions: &[Condition],
    reason: &str,
    message: &str,
    generation: i64,
    now: Timestamp,
) -> Vec<Condition> {
    let previous = conditions.iter().find(|c| c.type_ == conditions::READY);
    let ready = conditions::ready(previous, false, reason, message.to_owned(), generation, now);
    let mut updated: Vec<Condition> = conditions
        .iter()
        .filter(|c| c.type_ != conditions::READY)
        .cloned()
        .collect();
    updated.push(ready);
    updated
}

enum WriteOutcome {
    Written,
    Foreign,
}

/// Creates the token Secret, or replaces it if it is ours; never touches anyone else's. Both
/// writes are conditional (create fails if it exists; replace carries the resourceVersion read),
/// so a Secret created by someone else in between is never overwritten.
async fn write_secret(
    secrets: &Api<Secret>,
    name: &str,
    desired: &Secret,
    grant: &SlackOAuthGrant,
) -> Result<WriteOutcome, kube::Error> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    match secrets.get_opt(name).await? {
        None => match secrets.create(&params, desired).await {
            Ok(_) => Ok(WriteOutcome::Written),
            Err(kube::Error::Api(status)) if status.code == 409 => Err(kube::Error::Api(status)),
            Err(error) => Err(error),
        },
        Some(existing) if manages(&existing, grant) => {
            let mut replacement = desired.clone();
            replacement.metadata.resource_version = existing.resource_version();
            secrets.replace(name, &params, &replacement).await?;
            Ok(WriteOutcome::Written)
        }
        Some(_) => Ok(WriteOutcome::Foreign),
    }
}

/// The `error` a browser brought back, when it looks like one of Slack's codes; anything else
/// is not repeated to anyone.
fn sanitize(code: &str) -> String {
    if is_error_code(code) {
        code.to_owned()
    } else {
        "an unrecognised error".to_owned()
    }
}

fn refused_link(status: StatusCode, what: &str) -> Page {
    Page::failure(
        status,
        "Authorization link not accepted",
        format!("{what}. Nothing was changed."),
        "Open the current link from the grant's status.authorizationURL (kubectl get slackoauthgrant <name> -o jsonpath='{.status.authorizationURL}'), or ask the person who manages the grant for it.",
    )
}

fn gone(what: &str) -> Page {
    Page::failure(
        StatusCode::GONE,
        "Authorization link no longer valid",
        format!("{what} Nothing was changed."),
        "Open the current link from the grant's status.authorizationURL (kubectl get slackoauthgrant <name> -o jsonpath='{.status.authorizationURL}'), or ask the person who manages the grant for it.",
    )
}

fn unavailable() -> Page {
    Page::failure(
        StatusCode::SERVICE_UNAVAILABLE,
        "Operator temporarily unavailable",
        "The operator could not reach the Kubernetes API. Nothing was changed.",
        "Reload this page in a minute; the link stays valid until it expires.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_malformed() {
        assert!(parse("state=a&state=b").is_err());
        assert!(parse("code=a&code=b&state=s").is_err());
        let params = parse("state=s1.x&code=c&other=1").expect("parse");
        assert_eq!(params.state.as_deref(), Some("s1.x"));
        assert!(params.code.is_some());
    }

    #[test]
    fn error_codes_from_the_browser_are_not_echoed_unless_they_look_like_codes() {
        assert_eq!(sanitize("access_denied"), "access_denied");
        assert_eq!(sanitize("<b>hi</b>"), "an unrecognised error");
    }

    #[test]
    fn failure_keeps_the_transition_time_while_ready_stays_false() {
        let then = Timestamp::from_second(1_000).expect("time");
        let now = Timestamp::from_second(2_000).expect("time");
        let first = with_ready(&[], reasons::EXCHANGING, "x", 1, then);
        let second = with_ready(&first, reasons::ACCESS_DENIED, "y", 1, now);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].reason, reasons::ACCESS_DENIED);
        assert_eq!(
            second[0].last_transition_time,
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(then)
        );
    }
}
