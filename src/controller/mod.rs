//! The grant controller: observe (read the grant's Secrets), plan (pure, in `plan`), apply (write
//! the status if it changed, publish Events).
//!
//! It writes grant status and Events only. The token Secret is written by the callback server.
//! The controller watches only label-selected Secrets (docs/security.md): those carrying our
//! managed-by label, and those shared with grants. So it never caches other Secrets, and the
//! number of its watches does not depend on the number of grants.

mod checks;
mod plan;

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::Recorder,
        finalizer::{self, Event as Finalizer, finalizer},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

pub use self::checks::TokenCheck;
pub use self::plan::{
    ClientSecret, EXCHANGE_ORPHANED_AFTER, EXCHANGE_RENEW_EVERY, Inputs, Link, Plan, TokenSecret,
    plan,
};
use crate::{
    api::{DeletionPolicy, FINALIZER, SlackOAuthGrant, labels, reasons},
    authorization::{self, manages, read_secret_record, shared_with},
    callback::state::{AuthorizationState, StateKey},
    config::Config,
    events,
    metrics::Metrics,
    retry::Backoff,
    slack::{SlackApi, SlackClient},
    status,
};

/// Errors from reconciling one grant.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read the grant's namespace: the grant is not namespaced")]
    MissingNamespace,
    #[error("failed to read Secret {name}")]
    ReadSecret {
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("failed to write the grant's status")]
    WriteStatus(#[source] status::Error),
    #[error("failed to {0} within the deadline")]
    TimedOut(&'static str),
    #[error("failed to list the Secrets shared with grants")]
    SharedSecretsUnavailable,
    #[error("failed to revoke the deleted grant's token")]
    Revoke(#[source] crate::slack::SlackError),
    #[error("failed to add or remove the grant's finalizer")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub metrics: Metrics,
    pub config: Arc<Config>,
    pub recorder: Recorder,
    pub state_key: StateKey,
    pub slack: Arc<SlackClient>,
    /// When each Ready grant's token is checked next, and the last verdicts.
    checks: checks::Checks,
    /// Secrets labelled as shared with grants, in the namespace(s) this controller watches.
    shared_secrets: Store<Secret>,
    /// True once `shared_secrets` has listed. (Reconciles wait on this, not on the store itself:
    /// `Store::wait_until_ready` wakes only the last of several concurrent waiters.)
    shared_ready: tokio::sync::watch::Receiver<bool>,
}

/// What the controller is built from.
#[derive(Clone)]
pub struct Deps {
    pub client: Client,
    pub config: Arc<Config>,
    pub state_key: StateKey,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub slack: Arc<SlackClient>,
}

/// Runs the controller until `shutdown` is cancelled: one for all namespaces, or one per
/// namespace in `--watch-namespaces` (so the operator needs no cluster-wide permissions then).
pub async fn run(deps: Deps, shutdown: CancellationToken) {
    if deps.config.watch_namespaces.is_empty() {
        run_in(deps, None, shutdown).await;
    } else {
        let namespaces = deps.config.watch_namespaces.clone();
        let controllers = namespaces
            .iter()
            .map(|namespace| run_in(deps.clone(), Some(namespace), shutdown.clone()));
        futures::future::join_all(controllers).await;
    }
}

async fn run_in(deps: Deps, namespace: Option<&str>, shutdown: CancellationToken) {
    let client = deps.client.clone();
    let (grants, secrets) = match namespace {
        Some(namespace) => (
            Api::<SlackOAuthGrant>::namespaced(client.clone(), namespace),
            Api::<Secret>::namespaced(client.clone(), namespace),
        ),
        None => (
            Api::<SlackOAuthGrant>::all(client.clone()),
            Api::<Secret>::all(client.clone()),
        ),
    };
    let (shared_secrets, shared_writer) = reflector::store();
    let shared = reflector::reflector(
        shared_writer,
        watcher(
            secrets.clone(),
            watcher::Config::default().labels(&format!("{}=true", labels::SHARED_WITH_GRANTS)),
        )
        .backoff(Backoff::watch()),
    )
    .applied_objects();
    let (ready_tx, shared_ready) = tokio::sync::watch::channel(false);
    let store = shared_secrets.clone();
    tokio::spawn(async move {
        if store.wait_until_ready().await.is_ok() {
            let _ = ready_tx.send(true);
        }
    });
    let controller = Controller::new(grants, watcher::Config::default().any_semantic());
    let grant_store = controller.store();
    let Deps {
        client,
        config,
        state_key,
        recorder,
        metrics,
        slack,
    } = deps;
    let context = Arc::new(Context {
        checks: checks::Checks::new(config.token_check_interval),
        shared_ready,
        recorder,
        client,
        config,
        metrics,
        state_key,
        slack,
        shared_secrets,
    });
    let managed =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::OPERATOR));
    info!(namespace = namespace.unwrap_or("*"), "reconciling grants");
    let by_token_secret = grant_store.clone();
    controller
        // A token Secret wakes its owner, and any other grant naming it (which then sees a
        // conflict instead of keeping a link that can only fail).
        .watches(secrets, managed, move |secret| {
            grants_naming(&by_token_secret, &secret, |grant| &grant.spec.secret.name)
        })
        // A shared Secret wakes the grants that use it as their client Secret.
        .watches_stream(shared, move |secret| {
            grants_naming(&grant_store, &secret, |grant| {
                &grant.spec.client_secret_ref.name
            })
        })
        .trigger_backoff(Backoff::watch())
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, context.clone())
        .for_each(|result| async {
            context.metrics.count_reconcile(result.is_ok());
            if let Err(error) = result {
                warn!(error = &error as &dyn std::error::Error, "reconcile failed");
            }
        })
        .await;
}

/// The grants in `secret`'s namespace whose `field` names it.
fn grants_naming(
    grants: &Store<SlackOAuthGrant>,
    secret: &Secret,
    field: impl Fn(&SlackOAuthGrant) -> &String,
) -> Vec<ObjectRef<SlackOAuthGrant>> {
    let namespace = secret.namespace();
    let name = secret.name_any();
    grants
        .state()
        .iter()
        .filter(|grant| grant.namespace() == namespace && *field(grant) == name)
        .map(|grant| ObjectRef::from(grant.as_ref()))
        .collect()
}

#[instrument(skip_all, fields(namespace = grant.namespace().as_deref().unwrap_or(""), grant = %grant.name_any()))]
async fn reconcile(grant: Arc<SlackOAuthGrant>, context: Arc<Context>) -> Result<Action, Error> {
    let namespace = grant.namespace().ok_or(Error::MissingNamespace)?;
    let grants = Api::<SlackOAuthGrant>::namespaced(context.client.clone(), &namespace);
    let context = &context;
    let namespace = namespace.as_str();
    finalizer(&grants, FINALIZER, grant, |event| async move {
        match event {
            Finalizer::Apply(grant) => reconcile_live(&grant, namespace, context).await,
            Finalizer::Cleanup(grant) => clean_up(&grant, namespace, context).await,
        }
    })
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)))
}

async fn reconcile_live(
    grant: &SlackOAuthGrant,
    namespace: &str,
    context: &Context,
) -> Result<Action, Error> {
    let (client_secret, token_secret, token) = observe(grant, namespace, context).await?;
    let token_check = match (&token, &token_secret) {
        (
            Some(token),
            TokenSecret::Managed {
                record: Some((_, installation)),
                ..
            },
        ) => check_token(grant, token, installation, context).await,
        _ => TokenCheck::Unchecked,
    };
    let config = &context.config;
    let mut plan = plan(&Inputs {
        grant,
        client_secret,
        token_secret,
        token_check,
        now: Timestamp::now(),
        require_team_id: config.require_team_id,
        authorization_ttl: config.authorization_ttl,
    });
    if let Link::Mint { expires_at } = plan.link {
        plan.publish_link(mint_link(grant, namespace, context, expires_at));
    }
    apply(grant, namespace, context, &plan).await?;
    let uid = grant.uid().unwrap_or_default();
    let next_check = token
        .is_some()
        .then(|| context.checks.until_next(&uid, tokio::time::Instant::now()))
        .flatten();
    Ok(match (plan.requeue_after, next_check) {
        (Some(a), Some(b)) => Action::requeue(a.min(b)),
        (Some(after), None) | (None, Some(after)) => Action::requeue(after),
        (None, None) => Action::await_change(),
    })
}

/// How long one `auth.test` may take, retries included.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// The verdict on the grant's token, checking it with Slack first if a check is due.
async fn check_token(
    grant: &SlackOAuthGrant,
    token: &SecretString,
    installation: &crate::api::InstallationStatus,
    context: &Context,
) -> TokenCheck {
    let uid = grant.uid().unwrap_or_default();
    let now = tokio::time::Instant::now();
    let approved_at = installation.authorized_at.as_ref().map(|t| t.0);
    let (verdict, wait) = context.checks.due(&uid, token, approved_at, now);
    if wait.is_some() {
        return verdict;
    }
    let answer = context.slack.check(token, now + CHECK_TIMEOUT).await;
    let retry_after = match &answer {
        Err(crate::slack::SlackError::RateLimited { retry_after, .. }) => Some(*retry_after),
        _ => None,
    };
    let checked = checks::verdict(&answer, installation);
    context.metrics.count_token_check(match checked {
        Some(TokenCheck::Valid) => "valid",
        Some(TokenCheck::Revoked) => "revoked",
        Some(TokenCheck::Invalid) => "invalid",
        Some(TokenCheck::Unchecked) | None => "unavailable",
    });
    if let (None, Err(error)) = (checked, &answer) {
        warn!(
            error = error as &dyn std::error::Error,
            "failed to check the token with Slack; the grant is unchanged"
        );
    }
    context
        .checks
        .record(&uid, checked, retry_after, tokio::time::Instant::now());
    checked.unwrap_or(verdict)
}

/// The grant is being deleted: revoke its token (`Revoke`) or release its Secret (`Retain`)
/// before the finalizer lets it go. Slack being unreachable keeps the grant, says so, and
/// retries.
async fn clean_up(
    grant: &SlackOAuthGrant,
    namespace: &str,
    context: &Context,
) -> Result<Action, Error> {
    let secrets = Api::<Secret>::namespaced(context.client.clone(), namespace);
    let Some(secret) = get_secret(&secrets, &grant.spec.secret.name)
        .await?
        .filter(|s| manages(s, grant))
    else {
        return Ok(Action::await_change());
    };
    match grant.spec.deletion_policy {
        DeletionPolicy::Retain => {
            release(&secrets, secret, grant).await?;
            info!("grant deleted; its token Secret is retained and released");
        }
        DeletionPolicy::Revoke => {
            let token = token_in(&secret, &grant.spec.secret.key);
            if let Some(token) = token {
                let deadline = tokio::time::Instant::now() + REVOKE_TIMEOUT;
                if let Err(error) = context.slack.revoke(&token, deadline).await {
                    revoke_pending(grant, namespace, context, &error).await;
                    return Err(Error::Revoke(error));
                }
            }
            info!("grant deleted; its token was revoked at Slack");
        }
    }
    Ok(Action::await_change())
}

/// How long one attempt to revoke a deleted grant's token may take.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(15);

fn token_in(secret: &Secret, key: &str) -> Option<SecretString> {
    let bytes = secret.data.as_ref()?.get(key)?;
    let token = String::from_utf8(bytes.0.clone()).ok()?;
    (!token.is_empty()).then(|| SecretString::from(token))
}

/// `Retain`: the Secret stays, no longer owned by the grant (so garbage collection keeps it).
async fn release(
    secrets: &Api<Secret>,
    secret: Secret,
    grant: &SlackOAuthGrant,
) -> Result<(), Error> {
    let uid = grant.uid().unwrap_or_default();
    let mut released = secret;
    released
        .metadata
        .owner_references
        .get_or_insert_default()
        .retain(|o| o.uid != uid);
    released.metadata.managed_fields = None;
    let name = released.name_any();
    let params = kube::api::PostParams {
        field_manager: Some(crate::api::FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    tokio::time::timeout(API_CALL_TIMEOUT, secrets.replace(&name, &params, &released))
        .await
        .map_err(|_| Error::TimedOut("release the token Secret"))?
        .map_err(|source| Error::ReadSecret {
            name,
            source: Box::new(source),
        })?;
    Ok(())
}

/// Says on the deleting grant, once, that its token could not be revoked yet.
async fn revoke_pending(
    grant: &SlackOAuthGrant,
    namespace: &str,
    context: &Context,
    error: &crate::slack::SlackError,
) {
    warn!(
        error = error as &dyn std::error::Error,
        "failed to revoke a deleted grant's token; retrying"
    );
    let current = grant.status.clone().unwrap_or_default();
    let already = current
        .conditions
        .iter()
        .any(|c| c.type_ == crate::api::conditions::READY && c.reason == reasons::REVOKE_PENDING);
    if already {
        return;
    }
    let message = "The grant is being deleted and its token could not be revoked at Slack yet; the operator keeps trying, and lets the grant go once Slack confirms.".to_owned();
    let mut status = current;
    status.conditions = status::with_ready(
        &status.conditions,
        reasons::REVOKE_PENDING,
        &message,
        grant.metadata.generation.unwrap_or_default(),
        Timestamp::now(),
    );
    let grants = Api::<SlackOAuthGrant>::namespaced(context.client.clone(), namespace);
    if status::update(&grants, grant, status).await.is_ok() {
        let event = events::PlannedEvent {
            warning: true,
            reason: reasons::REVOKE_PENDING,
            note: message,
        };
        events::publish(&context.recorder, grant, &event).await;
    }
}

/// The grant's two Secrets as `plan` needs them. The client Secret comes from the cache of
/// shared Secrets: one that is not shared with this grant is as good as missing.
async fn observe(
    grant: &SlackOAuthGrant,
    namespace: &str,
    context: &Context,
) -> Result<(ClientSecret, TokenSecret, Option<SecretString>), Error> {
    context
        .shared_ready
        .clone()
        .wait_for(|ready| *ready)
        .await
        .map_err(|_| Error::SharedSecretsUnavailable)?;
    let reference = &grant.spec.client_secret_ref;
    let app_secret = context
        .shared_secrets
        .get(&ObjectRef::new(&reference.name).within(namespace));
    let client_secret = match &app_secret {
        Some(secret) if shared_with(secret, &grant.name_any()) => {
            if has_key(secret, &reference.key) {
                ClientSecret::Present
            } else {
                ClientSecret::KeyMissing
            }
        }
        _ => ClientSecret::SecretMissing,
    };
    let secrets = Api::<Secret>::namespaced(context.client.clone(), namespace);
    let mut token = None;
    let token_secret = match get_secret(&secrets, &grant.spec.secret.name).await? {
        None => TokenSecret::Absent,
        Some(secret) if manages(&secret, grant) => {
            token = token_in(&secret, &grant.spec.secret.key);
            TokenSecret::Managed {
                has_token: token.is_some(),
                record: read_secret_record(&secret),
            }
        }
        Some(_) => TokenSecret::Foreign,
    };
    Ok((client_secret, token_secret, token))
}

/// A new authorization link for the grant, valid until `expires_at`: a fresh signed state.
fn mint_link(
    grant: &SlackOAuthGrant,
    namespace: &str,
    context: &Context,
    expires_at: Timestamp,
) -> String {
    let state = AuthorizationState::issue(
        namespace,
        &grant.name_any(),
        grant.uid().as_deref().unwrap_or_default(),
        grant.metadata.generation.unwrap_or_default(),
        expires_at.as_second(),
    );
    let config = &context.config;
    authorization::authorization_url(
        &config.authorize_url,
        &config.redirect_uri,
        &grant.spec,
        &context.state_key.sign(&state),
    )
    .to_string()
}

/// Writes the status if it changed and publishes the plan's Events.
async fn apply(
    grant: &SlackOAuthGrant,
    namespace: &str,
    context: &Context,
    plan: &Plan,
) -> Result<(), Error> {
    if grant.status.as_ref() != Some(&plan.status) {
        // The update carries the resourceVersion we planned from, so a status the callback
        // server wrote meanwhile is never overwritten: the conflict requeues with a fresh read.
        let grants = Api::<SlackOAuthGrant>::namespaced(context.client.clone(), namespace);
        status::update(&grants, grant, plan.status.clone())
            .await
            .map_err(Error::WriteStatus)?;
        info!(phase = ?plan.status.phase, reason = %plan.status.conditions[0].reason, "status updated");
    }
    for event in &plan.events {
        events::publish(&context.recorder, grant, event).await;
    }
    Ok(())
}

fn error_policy(grant: Arc<SlackOAuthGrant>, error: &Error, _context: Arc<Context>) -> Action {
    let inner = match error {
        Error::Finalizer(boxed) => match boxed.as_ref() {
            finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
            _ => error,
        },
        _ => error,
    };
    let conflict = matches!(inner, Error::WriteStatus(e) if e.is_conflict());
    warn!(
        namespace = grant.namespace().as_deref().unwrap_or(""),
        grant = %grant.name_any(),
        error = error as &dyn std::error::Error,
        "reconcile failed; retrying"
    );
    // A conflict only means our view was stale: retry at once with a fresh one.
    Action::requeue(if conflict {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(5)
    })
}

/// Deadline of each request the controller makes besides its watches (which are long-lived).
const API_CALL_TIMEOUT: Duration = Duration::from_secs(15);

async fn get_secret(secrets: &Api<Secret>, name: &str) -> Result<Option<Secret>, Error> {
    match tokio::time::timeout(API_CALL_TIMEOUT, secrets.get_opt(name)).await {
        Ok(result) => result.map_err(|source| Error::ReadSecret {
            name: name.to_owned(),
            source: Box::new(source),
        }),
        Err(_) => Err(Error::TimedOut("read a Secret")),
    }
}

fn has_key(secret: &Secret, key: &str) -> bool {
    secret
        .data
        .as_ref()
        .is_some_and(|d| d.get(key).is_some_and(|v| !v.0.is_empty()))
        || secret
            .string_data
            .as_ref()
            .is_some_and(|d| d.get(key).is_some_and(|v| !v.is_empty()))
}
