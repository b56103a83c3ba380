//! One callback from Slack, from `state` to the token in its Secret.
//!
//! The order matters:
//! 1. Verify the `state`'s signature (`state.rs`). A forged state is refused here, before any
//!    API call, log field or page text comes from it.
//! 2. Take a custody slot, or shed the request (503, at once) when all are taken.
//! 3. Hand the rest to a task of its own (a "custody"), which no client can cancel: a browser or
//!    proxy that disconnects only stops waiting for the page.
//! 4. The custody checks the state against the grant, and claims the link: a JSON patch on the
//!    grant's status, guarded by its resourceVersion, that removes the URL and records the
//!    exchange (`status.exchange`). Of two callbacks with one `state`, exactly one claim succeeds,
//!    on any replica. The record is renewed while the custody works, so if this process dies
//!    the next leader sees it stop and warns that a token may be orphaned.
//! 5. Only then it exchanges the code, checks Slack's answer against the grant, and writes the
//!    Secret. From the moment Slack issues a token it either reaches the Secret or is revoked:
//!    transient write errors are retried through API server outages, and a permanent error, a
//!    Secret of someone else's, or the process stopping end in a revoke.
//!
//! The callback server writes the token Secret (it is its only writer) and, for the grant, only
//! the claim, its renewal and a failed attempt's condition. The controller derives `Ready` from
//! the Secret.

use std::{future::Future, sync::Arc, time::Duration};

use axum::http::StatusCode;
use k8s_openapi::{
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use secrecy::{ExposeSecret, SecretString};
use tokio::{sync::oneshot, time::Instant};
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::{
    Callback,
    pages::Page,
    state::{AuthorizationState, Mismatch},
};
use crate::{
    api::{ExchangeStatus, FIELD_MANAGER, SlackOAuthGrant, conditions, reasons},
    authorization::{self, Approved, manages, shared_with, state_of, team_label},
    controller::{EXCHANGE_RENEW_EVERY, PlannedEvent, publish},
    slack::{CodeExchange, SlackApi, SlackError, is_error_code},
};

/// A code lives for 10 minutes; stop retrying Slack a little before that.
const EXCHANGE_BUDGET: Duration = Duration::from_secs(9 * 60 + 30);
/// Revoking a token we cannot keep is retried this long.
const REVOKE_BUDGET: Duration = Duration::from_secs(60);
/// Longest pause between two attempts to write the Secret.
const MAX_WRITE_BACKOFF: Duration = Duration::from_secs(5);
/// Deadline of each Kubernetes API call the callback makes.
pub const API_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a browser waits for its page. The custody goes on after that; the page then says
/// the approval was received and where to see the outcome.
pub const PAGE_DEADLINE: Duration = Duration::from_secs(30);

/// Once the process is stopping: how long an exchange already sent to Slack may still take.
pub const SHUTDOWN_EXCHANGE_GRACE: Duration = Duration::from_secs(20);
/// Once the process is stopping: how long a token Slack issued may still take to be stored.
pub const SHUTDOWN_STORE_GRACE: Duration = Duration::from_secs(15);
/// Once the process is stopping: how long revoking a token that could not be stored may take.
pub const SHUTDOWN_REVOKE_BUDGET: Duration = Duration::from_secs(20);

/// The callback's query parameters. `code` is a secret: it has no `Debug`.
pub struct Params {
    pub state: Option<String>,
    code: Option<SecretString>,
    error: Option<String>,
}

impl Params {
    pub fn has_code(&self) -> bool {
        self.code.is_some()
    }

    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

/// The longest query accepted.
const MAX_QUERY_LEN: usize = 4096;

/// A query Slack would never send.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("failed to parse the callback's query: it is not one Slack sends")]
pub struct MalformedQuery;

/// Parses the callback's query. A repeated `state`, `code` or `error`, or an overlong query, is
/// never something Slack sends.
pub fn parse(query: &str) -> Result<Params, MalformedQuery> {
    if query.len() > MAX_QUERY_LEN {
        return Err(MalformedQuery);
    }
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
        if slot_taken {
            return Err(MalformedQuery);
        }
    }
    Ok(params)
}

pub async fn handle<S: SlackApi>(callback: &Arc<Callback<S>>, query: &str) -> Page {
    let page = handle_query(callback, query).await;
    let outcome = match (&page.reason, page.success) {
        (_, true) => "Authorized",
        (Some(reason), false) => reason,
        (None, false) => "Refused",
    };
    callback.metrics.count_callback(outcome);
    page
}

async fn handle_query<S: SlackApi>(callback: &Arc<Callback<S>>, query: &str) -> Page {
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
    // Nothing in a state is used, not even for a log line, before its signature is checked.
    let Ok(state) = callback.state_key.verify(&raw_state) else {
        return refused_link(
            StatusCode::BAD_REQUEST,
            "This authorization response was not issued by this operator",
        );
    };
    if Timestamp::now().as_second() >= state.expires_at {
        return gone("This authorization link has expired.");
    }
    let Ok(slot) = callback.slots.clone().try_acquire_owned() else {
        warn!("every custody slot is taken; shedding a callback");
        return busy();
    };

    let span = info_span!("callback", namespace = %state.namespace, grant = %state.name);
    let (answer, page) = oneshot::channel();
    let custody = Custody {
        callback: callback.clone(),
        params,
        raw_state,
        state,
        answer: Some(answer),
    };
    callback.custody.spawn(
        async move {
            custody.run().await;
            drop(slot);
        }
        .instrument(span),
    );
    match tokio::time::timeout(PAGE_DEADLINE, page).await {
        Ok(Ok(page)) => page,
        Ok(Err(_)) => unavailable(),
        Err(_) => still_working(),
    }
}

/// Runs `call` with the callback's per-call deadline.
async fn api<T>(call: impl Future<Output = Result<T, kube::Error>>) -> Result<T, CallError> {
    match tokio::time::timeout(API_CALL_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(CallError::Kube(error)),
        Err(_) => Err(CallError::TimedOut),
    }
}

/// A Kubernetes call of the callback's that failed.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("failed to call the Kubernetes API")]
    Kube(#[source] kube::Error),
    #[error("failed to call the Kubernetes API within {API_CALL_TIMEOUT:?}")]
    TimedOut,
    #[error("failed to build the claim patch")]
    BuildPatch(#[source] serde_json::Error),
}

impl CallError {
    /// Whether the same call may succeed later: timeouts, network errors, 409, 429 and 5xx. Any
    /// other answer of the API server (400, 403, 404, 422...) is final. Decided here only.
    fn is_transient(&self) -> bool {
        match self {
            Self::TimedOut => true,
            Self::Kube(kube::Error::Api(status)) => {
                status.code == 409 || status.code == 429 || status.code >= 500
            }
            Self::Kube(_) => true,
            Self::BuildPatch(_) => false,
        }
    }

    fn status_code(&self) -> Option<u16> {
        match self {
            Self::Kube(kube::Error::Api(status)) => Some(status.code),
            _ => None,
        }
    }
}

/// One callback, from a verified state to a token stored or revoked. It runs as a task of its
/// own, so that nothing the client does can stop it halfway.
struct Custody<S> {
    callback: Arc<Callback<S>>,
    params: Params,
    raw_state: String,
    state: AuthorizationState,
    answer: Option<oneshot::Sender<Page>>,
}

impl<S: SlackApi> Custody<S> {
    async fn run(mut self) {
        let page = self.decide().await;
        if let Some(answer) = self.answer.take() {
            // The client may have gone; the outcome is on the grant either way.
            let _ = answer.send(page);
        }
    }

    fn grants(&self) -> Api<SlackOAuthGrant> {
        Api::namespaced(self.callback.client.clone(), &self.state.namespace)
    }

    async fn decide(&self) -> Page {
        let grants = self.grants();
        let grant = match api(grants.get_opt(&self.state.name)).await {
            Ok(Some(grant)) => grant,
            Ok(None) => return no_longer_valid(),
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
        if let Err(mismatch) = self.state.check(
            &self.raw_state,
            grant.uid().as_deref().unwrap_or_default(),
            grant.metadata.generation.unwrap_or_default(),
            current.as_deref(),
            now.as_second(),
        ) {
            info!(?mismatch, "callback refused");
            return match mismatch {
                Mismatch::Expired => gone("This authorization link has expired."),
                Mismatch::GrantGone | Mismatch::OlderGeneration => no_longer_valid(),
                Mismatch::NotCurrent => refused_link(
                    StatusCode::CONFLICT,
                    "This authorization link has already been used, or has been replaced by a newer one",
                ),
            };
        }

        // Claim the link before anything else, so a second callback with it is refused, and
        // record the exchange so that a crash from here on is noticed.
        let holder = self.callback.instance.clone();
        let grant = match claim(&grants, &grant, &holder, now).await {
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
            callback: &self.callback,
            grants: &grants,
            grant,
        };
        let work = async {
            if let Some(error) = self.params.error() {
                return attempt.declined(error).await;
            }
            let Some(code) = self.params.code.clone() else {
                return attempt
                    .fail(
                        StatusCode::BAD_REQUEST,
                        reasons::AUTHORIZATION_FAILED,
                        "Slack sent the browser back without an authorization code.".to_owned(),
                    )
                    .await;
            };
            attempt.exchange(code).await
        };
        let name = attempt.grant.name_any();
        tokio::select! {
            page = work => page,
            () = renew(&grants, &name, &holder) => unreachable_page(),
        }
    }
}

/// Renews `status.exchange` every [`EXCHANGE_RENEW_EVERY`] while the custody works; never ends.
/// Each renewal `test`s that the record is still ours, so a finished or superseded exchange is
/// never brought back.
async fn renew(grants: &Api<SlackOAuthGrant>, name: &str, holder: &str) {
    loop {
        tokio::time::sleep(EXCHANGE_RENEW_EVERY).await;
        let now = Time(Timestamp::now());
        let patch = serde_json::from_value::<json_patch::Patch>(serde_json::json!([
            { "op": "test", "path": "/status/exchange/holder", "value": holder },
            { "op": "replace", "path": "/status/exchange/renewedAt", "value": now },
        ]));
        let Ok(patch) = patch else { continue };
        if let Err(error) =
            api(grants.patch_status(name, &PatchParams::default(), &Patch::<()>::Json(patch))).await
        {
            debug!(
                error = &error as &dyn std::error::Error,
                "failed to renew the exchange record"
            );
        }
    }
}

/// `renew` never returns; this only satisfies the type checker.
fn unreachable_page() -> Page {
    unavailable()
}

/// One claimed authorization, on its way to a token in a Secret or to a recorded failure.
struct Attempt<'a, S> {
    callback: &'a Callback<S>,
    grants: &'a Api<SlackOAuthGrant>,
    grant: SlackOAuthGrant,
}

/// How writing the token Secret ended.
enum Stored {
    Written,
    /// Someone else's Secret (or another grant's) has the name.
    Foreign,
    /// The API server refused the Secret for good (for example 422).
    Refused(u16),
    /// The process is stopping and the write did not make it in time.
    Stopping,
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
                    "Secret {namespace}/{} with key {} (the Slack app's Client Secret) was not found, or is not shared with this grant, when the callback arrived.",
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
        let shutdown = &self.callback.shutdown;
        let exchanged = tokio::select! {
            result = self.callback.slack.exchange_code(&request, deadline) => result,
            () = async {
                shutdown.cancelled().await;
                tokio::time::sleep(SHUTDOWN_EXCHANGE_GRACE).await;
            } => {
                // Slack may have issued a token this process will never see. The exchange record
                // stays on the grant, so the next leader warns about it.
                error!("stopping while Slack had not answered the code exchange; a token may be orphaned");
                return stopping_page();
            }
        };
        let access = match exchanged {
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

    /// Writes the token, retrying transient errors until it lands. Gives up, revoking the token,
    /// on a permanent error, on a Secret that is not the grant's own, or when the process stops
    /// and the write does not land within [`SHUTDOWN_STORE_GRACE`].
    async fn store(&self, approved: Approved, now: Timestamp) -> Page {
        let stored = self.write_until_final(&approved, now).await;
        match stored {
            Stored::Written => {}
            Stored::Foreign => {
                self.revoke(&approved.token).await;
                let message = format!(
                    "Secret {} exists and is not this grant's (it is not managed by slack-oauth-operator for it), so it was not overwritten; the new token was revoked. Delete that Secret or change spec.secret.name, then approve the new link in status.authorizationURL.",
                    self.secret_name()
                );
                return self
                    .fail(StatusCode::CONFLICT, reasons::SECRET_CONFLICT, message)
                    .await;
            }
            Stored::Refused(code) => {
                error!(
                    status = code,
                    "the API server refused the token Secret for good; revoking the token"
                );
                self.revoke(&approved.token).await;
                let message = format!(
                    "The Kubernetes API refused to write Secret {} (HTTP {code}), so the new token was revoked. Check spec.secret and the operator's permissions, then approve the new link in status.authorizationURL.",
                    self.secret_name()
                );
                return self
                    .fail(StatusCode::BAD_GATEWAY, reasons::EXCHANGE_FAILED, message)
                    .await;
            }
            Stored::Stopping => {
                warn!("stopping before the token Secret could be written; revoking the token");
                self.revoke(&approved.token).await;
                return stopping_page();
            }
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

    async fn write_until_final(&self, approved: &Approved, now: Timestamp) -> Stored {
        let namespace = self.grant.namespace().unwrap_or_default();
        let secrets = Api::<Secret>::namespaced(self.callback.client.clone(), &namespace);
        let desired = authorization::token_secret(&self.grant, approved, now);
        let name = self.grant.spec.secret.name.clone();
        let mut backoff = Duration::from_millis(250);
        let mut stop_by: Option<Instant> = None;
        loop {
            match write_secret(&secrets, &name, &desired, &self.grant).await {
                Ok(WriteOutcome::Written) => return Stored::Written,
                Ok(WriteOutcome::Foreign) => return Stored::Foreign,
                Err(error) if !error.is_transient() => {
                    return Stored::Refused(error.status_code().unwrap_or_default());
                }
                Err(error) => {
                    warn!(
                        error = &error as &dyn std::error::Error,
                        retry_in_ms = backoff.as_millis() as u64,
                        "failed to write the token Secret; retrying"
                    );
                }
            }
            let shutdown = &self.callback.shutdown;
            if shutdown.is_cancelled() {
                let until = *stop_by.get_or_insert_with(|| Instant::now() + SHUTDOWN_STORE_GRACE);
                if Instant::now() + backoff >= until {
                    return Stored::Stopping;
                }
                tokio::time::sleep(backoff).await;
            } else {
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => {}
                }
            }
            backoff = (backoff * 2).min(MAX_WRITE_BACKOFF);
        }
    }

    /// The Client Secret, if its Secret exists, is shared with this grant, and has the key. A
    /// Secret that is not shared is treated exactly like a missing one.
    async fn client_secret(&self) -> Result<Option<SecretString>, CallError> {
        let reference = &self.grant.spec.client_secret_ref;
        let namespace = self.grant.namespace().unwrap_or_default();
        let secret = api(
            Api::<Secret>::namespaced(self.callback.client.clone(), &namespace)
                .get_opt(&reference.name),
        )
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
        if let Err(error) = self
            .callback
            .slack
            .revoke(token, Instant::now() + budget)
            .await
        {
            error!(
                error = &error as &dyn std::error::Error,
                "failed to revoke a token Slack issued; it may be orphaned"
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

/// Removes the published link from the grant's status and records the exchange, provided the
/// grant is still as it was checked. `Ok(None)` means another callback (or the controller) got
/// there first.
///
/// The patch `test`s the resourceVersion it was computed from, so exactly one of two concurrent
/// claims wins. (Testing the URL itself would be more direct, but the API server compares `test`
/// values as raw JSON, in which Go escapes the URL's `&`.) A lost race re-reads the grant: if the
/// link is still published, the claim is tried again.
async fn claim(
    grants: &Api<SlackOAuthGrant>,
    grant: &SlackOAuthGrant,
    holder: &str,
    now: Timestamp,
) -> Result<Option<SlackOAuthGrant>, CallError> {
    let Some(url) = grant
        .status
        .as_ref()
        .and_then(|s| s.authorization_url.clone())
    else {
        return Ok(None);
    };
    let exchange = ExchangeStatus {
        holder: holder.to_owned(),
        started_at: Time(now),
        renewed_at: Time(now),
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
            { "op": "add", "path": "/status/exchange", "value": exchange },
        ]))
        .map_err(CallError::BuildPatch)?;
        let result = api(grants.patch_status(
            &grant.name_any(),
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        ))
        .await;
        match result {
            Ok(claimed) => return Ok(Some(claimed)),
            Err(CallError::Kube(kube::Error::Api(status))) if status.code == 404 => {
                return Ok(None);
            }
            Err(CallError::Kube(kube::Error::Api(status)))
                if status.code == 422 || status.code == 409 =>
            {
                let Some(fresh) = api(grants.get_opt(&grant.name_any())).await? else {
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

/// Sets the `Ready` condition to `False` with `reason`, and ends the exchange record, retrying
/// on conflicts with fresh reads.
async fn record_failure(
    grants: &Api<SlackOAuthGrant>,
    grant: &SlackOAuthGrant,
    reason: &str,
    message: &str,
) -> Result<(), CallError> {
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
        status.exchange = None;
        let mut updated = current.clone();
        updated.status = Some(status);
        updated.metadata.managed_fields = None;
        match api(grants.replace_status(&grant.name_any(), &PostParams::default(), &updated)).await
        {
            Ok(_) => return Ok(()),
            Err(CallError::Kube(kube::Error::Api(status))) if status.code == 409 => {
                current = api(grants.get(&grant.name_any())).await?;
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
    updated.insert(0, ready);
    updated
}

enum WriteOutcome {
    Written,
    Foreign,
}

/// Creates the token Secret, or replaces it if it is the grant's own; never touches anyone
/// else's. Both writes are conditional (create fails if it exists; replace carries the
/// resourceVersion read), so a Secret created by someone else in between is never overwritten.
async fn write_secret(
    secrets: &Api<Secret>,
    name: &str,
    desired: &Secret,
    grant: &SlackOAuthGrant,
) -> Result<WriteOutcome, CallError> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    match api(secrets.get_opt(name)).await? {
        None => {
            api(secrets.create(&params, desired)).await?;
            Ok(WriteOutcome::Written)
        }
        Some(existing) if manages(&existing, grant) => {
            let mut replacement = desired.clone();
            replacement.metadata.resource_version = existing.resource_version();
            api(secrets.replace(name, &params, &replacement)).await?;
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

const OPEN_CURRENT_LINK: &str = "Open the current link from the grant's status.authorizationURL (kubectl get slackoauthgrant <name> -o jsonpath='{.status.authorizationURL}'), or ask the person who manages the grant for it.";

fn refused_link(status: StatusCode, what: &str) -> Page {
    Page::failure(
        status,
        "Authorization link not accepted",
        format!("{what}. Nothing was changed."),
        OPEN_CURRENT_LINK,
    )
}

fn gone(what: &str) -> Page {
    Page::failure(
        StatusCode::GONE,
        "Authorization link no longer valid",
        format!("{what} Nothing was changed."),
        OPEN_CURRENT_LINK,
    )
}

/// One answer for a grant that was deleted, recreated or changed since the link was issued.
fn no_longer_valid() -> Page {
    gone(
        "This authorization link was issued for a SlackOAuthGrant that has since been changed or deleted.",
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

fn busy() -> Page {
    Page::failure(
        StatusCode::SERVICE_UNAVAILABLE,
        "Operator busy",
        "The operator is handling too many authorizations at once. Nothing was changed.",
        "Reload this page in a few seconds; the link stays valid until it expires.",
    )
}

fn still_working() -> Page {
    Page::failure(
        StatusCode::ACCEPTED,
        "Approval received, still being saved",
        "Slack or Kubernetes is slow to answer. The operator keeps working on it: it stores the token, or revokes it if it cannot.",
        "You can close this page. The person who manages the SlackOAuthGrant sees the outcome in its status (kubectl get slackoauthgrant <name>).",
    )
}

fn stopping_page() -> Page {
    Page::failure(
        StatusCode::SERVICE_UNAVAILABLE,
        "Authorization not saved",
        "The operator was stopping and could not save the token, so it revoked it.",
        "Open the authorization link again from the grant's status.authorizationURL once the operator is back.",
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
        assert!(parse(&"a".repeat(MAX_QUERY_LEN + 1)).is_err());
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

    #[test]
    fn api_errors_are_classified_transient_or_final_in_one_place() {
        let api_error = |code: u16| {
            CallError::Kube(kube::Error::Api(
                kube::core::Status::failure("x", "y")
                    .with_code(code)
                    .boxed(),
            ))
        };
        for code in [409, 429, 500, 503] {
            assert!(api_error(code).is_transient(), "{code}");
        }
        for code in [400, 403, 404, 422] {
            assert!(!api_error(code).is_transient(), "{code}");
        }
        assert!(CallError::TimedOut.is_transient());
    }

    #[test]
    fn the_shutdown_budget_fits_the_pod_grace_period() {
        let custody = SHUTDOWN_EXCHANGE_GRACE + SHUTDOWN_STORE_GRACE + SHUTDOWN_REVOKE_BUDGET;
        assert!(custody + Duration::from_secs(5) <= crate::run::SHUTDOWN_BUDGET);
    }
}
