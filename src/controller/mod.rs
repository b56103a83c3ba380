//! The grant controller: observe (read the grant's Secrets and token record), keep the tokens
//! (`tokens`: migrate, refresh, write the consumer Secret back from the record, revoke replaced
//! tokens), deliver them (`rollout`: restart the listed workloads; `push`: PingFederate), plan
//! (pure, in `plan`), apply (write the status if it changed, publish Events).
//!
//! The callback server writes the record and the consumer Secret of a new approval; the
//! controller writes them after a refresh or a repair. Both write only conditionally
//! (`crate::store`). The controller watches only label-selected Secrets (docs/security.md):
//! those carrying our managed-by label, and those shared with grants. So it never caches other
//! Secrets, and the number of its watches does not depend on the number of grants.

mod cache;
mod checks;
mod plan;
mod push;
mod rollout;
mod tokens;

use std::{sync::Arc, time::Duration};

use crate::cache::{Cache, Caches, Packed, labelled};
use futures::StreamExt;
use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        finalizer::{self, Event as Finalizer, finalizer},
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

pub use self::checks::TokenCheck;
pub use self::plan::{
    Adoption, ClientSecret, EXCHANGE_ORPHANED_AFTER, EXCHANGE_RENEW_EVERY, Held, Inputs, Link,
    Plan, TokenSecret, plan,
};
pub use self::push::Synced;
use crate::{
    api::{DeletionPolicy, FINALIZER, SlackOAuthGrant, labels, reasons},
    authorization::{manages, shared_with, token_in},
    callback::{link, state::StateKey},
    config::Config,
    events::{self, Recorder},
    metrics::Metrics,
    record,
    retry::Backoff,
    slack::{SlackApi, SlackClient},
    status,
    store::{self, CallError, Records},
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
    #[error("failed to list the Secrets the controller caches")]
    SecretsUnavailable,
    #[error("failed to revoke the deleted grant's token")]
    Revoke(#[source] crate::slack::SlackError),
    #[error("failed to read or write the grant's token record")]
    Record(#[source] CallError),
    #[error("failed to write the token Secret")]
    WriteSecret(#[source] CallError),
    #[error("failed to refresh the token at Slack")]
    Refresh(#[source] crate::slack::SlackError),
    #[error("failed to refresh the token: the client Secret is missing or not shared")]
    RefreshWithoutClientSecret,
    #[error("failed to record the refreshed token: the token record was deleted")]
    RecordGone,
    #[error("failed to wait for a reconcile turn: the controller is stopping")]
    Stopping,
    /// The reconcile's own error, or the finalizer's (kube's message says which).
    #[error(transparent)]
    Finalizer(Box<finalizer::Error<Error>>),
    #[error("failed to add the grant's finalizer")]
    AddFinalizer(#[source] Box<kube::Error>),
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub metrics: Metrics,
    pub config: Arc<Config>,
    pub recorder: Recorder,
    pub state_key: StateKey,
    pub slack: Arc<SlackClient>,
    /// The grants' token records, in the operator's namespace.
    pub records: Records,
    /// Cancelled when the process stops: custody of a refreshed token then has a deadline.
    pub shutdown: CancellationToken,
    /// When each Ready grant's token is checked next, and the last verdicts.
    checks: checks::Checks,
    /// Secrets labelled as shared with grants, in the namespace(s) this controller watches.
    shared_secrets: Cache<Packed<Secret>>,
    /// The grants' token Secrets, in the namespace(s) this controller watches.
    token_secrets: Cache<Packed<Secret>>,
    /// The token records, in the operator's namespace.
    record_secrets: Cache<Packed<Secret>>,
    /// One permit per reconcile running, shared by every watched namespace's controller
    /// (`--max-concurrent-reconciles`).
    turns: Arc<Turns>,
}

/// What the controller is built from.
#[derive(Clone)]
pub struct Deps {
    /// For requests: at most [`crate::client::MAX_REQUESTS_IN_FLIGHT`] at once.
    pub client: Client,
    /// For the controller's watches, which are long-lived and must never wait for a request.
    pub watchers: crate::client::Watchers,
    /// The watches the controller shares with the callback server.
    pub watched: Watched,
    pub config: Arc<Config>,
    pub state_key: StateKey,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub slack: Arc<SlackClient>,
}

/// The watches that every replica keeps, leader or not, and the controller shares while it
/// leads: one of each kind per watched namespace (or one of every namespace), in the order of
/// `--watch-namespaces`.
#[derive(Clone)]
pub struct Watched {
    /// The grants: the approval links' index, and the controller's queue.
    pub grants: Caches<SlackOAuthGrant>,
    /// The Secrets labelled as shared with grants: client Secrets, Secrets to adopt,
    /// PingFederate's credentials.
    pub shared_secrets: Caches<Packed<Secret>>,
}

impl Watched {
    /// Starts the watches; they stop with `shutdown`.
    pub fn keep(watchers: &crate::client::Watchers, shutdown: &CancellationToken) -> Self {
        Self {
            grants: Caches::keep(
                watchers,
                &watcher::Config::default().any_semantic(),
                "grants",
                shutdown,
            ),
            shared_secrets: Caches::keep(
                watchers,
                &labelled(&format!("{}=true", labels::SHARED_WITH_GRANTS)),
                "Secrets shared with grants",
                shutdown,
            ),
        }
    }
}

/// Runs the controller until `shutdown` is cancelled: one for all namespaces, or one per
/// namespace in `--watch-namespaces` (so the operator needs no cluster-wide permissions then).
pub async fn run(deps: Deps, shutdown: CancellationToken) {
    let records = Cache::keep(
        Api::<Packed<Secret>>::namespaced(
            deps.watchers.of(Some(&deps.config.namespace)).clone(),
            &deps.config.namespace,
        ),
        labelled(&cache::record_selector()),
        "token records",
        shutdown.clone(),
    );
    let turns = Arc::new(Turns::new(deps.config.max_concurrent_reconciles));
    let namespaces: Vec<Option<String>> = if deps.config.watch_namespaces.is_empty() {
        vec![None]
    } else {
        deps.config
            .watch_namespaces
            .iter()
            .cloned()
            .map(Some)
            .collect()
    };
    let watched = deps.watched.clone();
    let controllers = namespaces
        .iter()
        .zip(
            watched
                .grants
                .each()
                .iter()
                .zip(watched.shared_secrets.each()),
        )
        .map(|(namespace, (grants, shared))| {
            run_in(
                deps.clone(),
                namespace.as_deref(),
                Own {
                    grants: grants.clone(),
                    shared_secrets: shared.clone(),
                    record_secrets: records.clone(),
                    turns: turns.clone(),
                },
                shutdown.clone(),
            )
        });
    futures::future::join_all(controllers).await;
}

/// What one namespace's controller works from, besides its [`Deps`].
struct Own {
    grants: Cache<SlackOAuthGrant>,
    shared_secrets: Cache<Packed<Secret>>,
    record_secrets: Cache<Packed<Secret>>,
    turns: Arc<Turns>,
}

async fn run_in(deps: Deps, namespace: Option<&str>, own: Own, shutdown: CancellationToken) {
    let client = deps.watchers.of(namespace).clone();
    let secrets = match namespace {
        Some(namespace) => Api::<Packed<Secret>>::namespaced(client, namespace),
        None => Api::<Packed<Secret>>::all(client),
    };
    let token_secrets = Cache::keep(
        secrets,
        labelled(&cache::token_secret_selector()),
        "token Secrets",
        shutdown.clone(),
    );
    let Own {
        grants,
        shared_secrets,
        record_secrets,
        turns,
    } = own;
    let controller = Controller::for_shared_stream(grants.applied(), grants.store());
    let grant_store = controller.store();
    let token_changes = token_secrets.changes();
    let shared = shared_secrets.changes();
    let Deps {
        client,
        watchers: _,
        watched: _,
        config,
        state_key,
        recorder,
        metrics,
        slack,
    } = deps;
    let context = Arc::new(Context {
        records: Records::new(client.clone(), &config.namespace),
        shutdown: shutdown.clone(),
        checks: checks::Checks::new(config.token_check_interval),
        token_secrets,
        record_secrets,
        turns,
        recorder,
        client,
        config,
        metrics,
        state_key,
        slack,
        shared_secrets,
    });
    info!(namespace = namespace.unwrap_or("*"), "reconciling grants");
    let by_token_secret = grant_store.clone();
    controller
        // A token Secret wakes its owner, and any other grant naming it (which then sees a
        // conflict instead of keeping a link that can only fail).
        .watches_shared_stream(token_changes, move |secret| {
            grants_naming(&by_token_secret, &secret, |grant, name| {
                grant.spec.secret.name == name
            })
        })
        // A shared Secret wakes the grants that use it: as their client Secret, as the token
        // to adopt, or as PingFederate's credentials.
        .watches_shared_stream(shared, move |secret| {
            grants_naming(&grant_store, &secret, |grant, name| {
                let spec = &grant.spec;
                spec.client_secret_ref.name == name
                    || (spec.secret.adopt && spec.secret.name == name)
                    || spec
                        .ping_federate
                        .as_ref()
                        .is_some_and(|pf| pf.credentials_secret_ref.name == name)
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

/// The grants in `secret`'s namespace that `names` it.
fn grants_naming(
    grants: &Store<SlackOAuthGrant>,
    secret: &Packed<Secret>,
    names: impl Fn(&SlackOAuthGrant, &str) -> bool,
) -> Vec<ObjectRef<SlackOAuthGrant>> {
    let namespace = secret.namespace();
    let name = secret.name_any();
    grants
        .state()
        .iter()
        .filter(|grant| grant.namespace() == namespace && names(grant, &name))
        .map(|grant| ObjectRef::from(grant.as_ref()))
        .collect()
}

/// A reconcile that runs this long is logged (once): every step of it has a deadline shorter
/// than this.
const SLOW_RECONCILE: Duration = Duration::from_secs(60);

/// The `--max-concurrent-reconciles` turns, shared by every watched namespace's controller.
///
/// Reconciles take turns in order, except that one coming back from Slack or PingFederate
/// ([`Turn::away`]) goes before every new one but the first in line: new reconciles queue for
/// the `entry`, one at a time, and only the one holding it queues for a turn beside those coming
/// back. Otherwise a reconcile would go to the back of the line each time it waited on Slack
/// (three or four times for a token check), behind thousands after a restart or a burst, and
/// finish minutes after it began.
pub struct Turns {
    permits: Arc<tokio::sync::Semaphore>,
    entry: tokio::sync::Semaphore,
}

impl Turns {
    pub fn new(turns: usize) -> Self {
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(turns)),
            entry: tokio::sync::Semaphore::new(1),
        }
    }
}

/// One of the [`Turns`], held by a reconcile while it works with the API server, and given back
/// while it waits on Slack or PingFederate ([`Turn::away`]): an outside service being slow (a
/// check that times out after 15 s) then never keeps other grants, new ones with no link yet
/// among them, waiting for a turn.
struct Turn {
    turns: Arc<tokio::sync::Semaphore>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Turn {
    /// Waits for a turn; the others wait in order.
    async fn take(turns: &Turns) -> Result<Self, Error> {
        let _first_in_line = turns.entry.acquire().await.map_err(|_| Error::Stopping)?;
        let permit = turns
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Stopping)?;
        Ok(Self {
            turns: turns.permits.clone(),
            permit: Some(permit),
        })
    }

    /// Runs `outside` (a call to Slack or PingFederate) without the turn, then waits for a
    /// turn again, before any new reconcile but the first in line.
    async fn away<T>(&mut self, outside: impl Future<Output = T>) -> Result<T, Error> {
        self.permit = None;
        let result = outside.await;
        let permit = self
            .turns
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Stopping)?;
        self.permit = Some(permit);
        Ok(result)
    }
}

/// Reconciles `grant` in turn (at most `--max-concurrent-reconciles` work with the API server
/// at once; the rest wait in order), and says so if it runs for more than [`SLOW_RECONCILE`].
#[instrument(skip_all, fields(namespace = grant.namespace().as_deref().unwrap_or(""), grant = %grant.name_any()))]
async fn reconcile(grant: Arc<SlackOAuthGrant>, context: Arc<Context>) -> Result<Action, Error> {
    let mut turn = Turn::take(&context.turns).await?;
    let started = tokio::time::Instant::now();
    // On the heap, and only once the turn is taken: every grant queued for a turn is a task
    // of its own (kube spawns each reconcile), so a restart or a burst of thousands would
    // otherwise each hold the whole reconcile's state (kilobytes) while they wait.
    let mut work = Box::pin(reconcile_turn(grant, &context, &mut turn));
    match tokio::time::timeout(SLOW_RECONCILE, &mut work).await {
        Ok(result) => result,
        Err(_) => {
            warn!(
                seconds = SLOW_RECONCILE.as_secs(),
                "a reconcile is still running"
            );
            let result = work.await;
            info!(
                seconds = started.elapsed().as_secs(),
                "the slow reconcile finished"
            );
            result
        }
    }
}

async fn reconcile_turn(
    grant: Arc<SlackOAuthGrant>,
    context: &Arc<Context>,
    turn: &mut Turn,
) -> Result<Action, Error> {
    let namespace = grant.namespace().ok_or(Error::MissingNamespace)?;
    let grants = Api::<SlackOAuthGrant>::namespaced(context.client.clone(), &namespace);
    let context = &context;
    let namespace = namespace.as_str();
    let grant = with_finalizer(&grants, grant).await?;
    finalizer(&grants, FINALIZER, grant, |event| async move {
        match event {
            Finalizer::Apply(grant) => reconcile_live(&grant, namespace, context, turn).await,
            Finalizer::Cleanup(grant) => clean_up(&grant, namespace, context).await,
        }
    })
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)))
}

/// `grant` with the finalizer: as it is, if it has it or is being deleted; else as the API
/// server returns it once the finalizer is added. So a new grant is reconciled on from the
/// patched object, not again after the patch comes back on the watch (which, in a burst of new
/// grants, would queue it behind every other one a second time).
///
/// The patch is kube's `finalizer` helper's own: guarded by a `test` of the finalizers it read,
/// so that a finalizer someone else added meanwhile fails it (and the grant is tried again)
/// instead of being overwritten.
async fn with_finalizer(
    grants: &Api<SlackOAuthGrant>,
    grant: Arc<SlackOAuthGrant>,
) -> Result<Arc<SlackOAuthGrant>, Error> {
    if grant.metadata.deletion_timestamp.is_some()
        || grant.finalizers().iter().any(|f| f == FINALIZER)
    {
        return Ok(grant);
    }
    // Added to the list it read (or as the list, if there was none), if that is still the list.
    let pointer =
        |tokens: &[&str]| json_patch::jsonptr::PointerBuf::from_tokens(tokens.iter().copied());
    let read = grant.finalizers();
    let (was, add_at, added) = if read.is_empty() {
        (
            serde_json::Value::Null,
            pointer(&["metadata", "finalizers"]),
            serde_json::json!([FINALIZER]),
        )
    } else {
        (
            serde_json::json!(read),
            pointer(&["metadata", "finalizers", "-"]),
            serde_json::json!(FINALIZER),
        )
    };
    let patch = vec![
        json_patch::PatchOperation::Test(json_patch::TestOperation {
            path: pointer(&["metadata", "finalizers"]),
            value: was,
        }),
        json_patch::PatchOperation::Add(json_patch::AddOperation {
            path: add_at,
            value: added,
        }),
    ];
    let mut patched: SlackOAuthGrant = tokio::time::timeout(
        API_CALL_TIMEOUT,
        grants.patch(
            &grant.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(json_patch::Patch(patch)),
        ),
    )
    .await
    .map_err(|_| Error::TimedOut("add the finalizer"))?
    .map_err(|source| Error::AddFinalizer(Box::new(source)))?;
    patched.metadata.managed_fields = None;
    Ok(Arc::new(patched))
}

async fn reconcile_live(
    grant: &SlackOAuthGrant,
    namespace: &str,
    context: &Context,
    turn: &mut Turn,
) -> Result<Action, Error> {
    let observed = observe(grant, namespace, context).await?;
    let kept = tokens::keep(
        grant,
        context,
        observed.consumer,
        observed.held,
        observed.client_secret_value.as_ref(),
    )
    .await?;
    let token_check = match &kept.held {
        Some(held) if kept.token_secret == TokenSecret::Managed => {
            let record = &held.record;
            turn.away(check_token(grant, &record.access_token, record, context))
                .await?
        }
        _ => TokenCheck::Unchecked,
    };
    let (rollout, rollout_next) = match &kept.held {
        Some(held) if kept.token_secret == TokenSecret::Managed => {
            rollout::follow(grant, namespace, held.record.revision, context).await
        }
        _ => (None, None),
    };
    let managed = kept.token_secret == TokenSecret::Managed;
    let provisioning = match &kept.held {
        Some(held)
            if managed && matches!(token_check, TokenCheck::Valid | TokenCheck::Unchecked) =>
        {
            turn.away(provisioning(grant, &held.record, context))
                .await?
        }
        _ => None,
    };
    let record = kept.held.as_ref().filter(|_| managed).map(|h| &h.record);
    let (ping_federate, push_next) = turn
        .away(push::sync(grant, namespace, record, context))
        .await?;
    let held = kept.held.as_ref().map(|held| Held {
        installation: held.record.installation.clone(),
        token: held.record.status(),
        pending: held.record.approved_for.pending_for(grant),
        refresh_failed: held.record.refresh_failed,
        restored: kept.restored,
    });
    let config = &context.config;
    let mut plan = plan(&Inputs {
        grant,
        client_secret: observed.client_secret,
        token_secret: kept.token_secret,
        adoption: kept.adoption,
        held,
        rollout,
        ping_federate,
        provisioning,
        token_check,
        now: Timestamp::now(),
        require_team_id: config.require_team_id,
        authorization_ttl: config.authorization_ttl,
        start_url: &config.start_url,
        state_key: &context.state_key,
    });
    if let Link::Mint { .. } = plan.link {
        let token = context.state_key.issue_link();
        plan.publish_link(link::link_url(&config.start_url, &token));
    }
    apply(grant, namespace, context, &plan).await?;
    let ready = plan
        .status
        .conditions
        .first()
        .is_some_and(|c| c.status == "True");
    let expires_at = plan
        .status
        .token
        .as_ref()
        .and_then(|t| t.expires_at.as_ref())
        .map(|t| t.0.as_second());
    context
        .metrics
        .grant_observed(&grant_labels(grant), ready, expires_at);
    let uid = grant.uid().unwrap_or_default();
    let next_check = kept
        .held
        .is_some()
        .then(|| context.checks.until_next(&uid, tokio::time::Instant::now()))
        .flatten();
    let next = [
        plan.requeue_after,
        next_check,
        kept.next,
        rollout_next,
        push_next,
    ]
    .into_iter()
    .flatten()
    .min();
    Ok(next.map_or_else(Action::await_change, Action::requeue))
}

fn grant_labels(grant: &SlackOAuthGrant) -> crate::metrics::GrantLabels {
    crate::metrics::GrantLabels {
        namespace: grant.namespace().unwrap_or_default(),
        grant: grant.name_any(),
    }
}

/// How long a SCIM probe may take, retries included.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// The verdict on the grant's token, checking it with Slack first if a check is due.
async fn check_token(
    grant: &SlackOAuthGrant,
    token: &SecretString,
    record: &crate::record::TokenRecord,
    context: &Context,
) -> TokenCheck {
    let installation = &record.installation;
    let uid = grant.uid().unwrap_or_default();
    let now = tokio::time::Instant::now();
    let (verdict, wait) = context.checks.due(&uid, token, Some(record.issued_at), now);
    if wait.is_some() {
        return verdict;
    }
    // One attempt: a check Slack cannot answer is retried by the schedule (after 30 s, or
    // Slack's Retry-After), not in a loop here, so that Slack failing never multiplies the
    // calls of thousands of grants.
    let answer = context.slack.check(token, now).await;
    let retry_after = match &answer {
        Err(crate::slack::SlackError::RateLimited { retry_after, .. }) => Some(*retry_after),
        _ => None,
    };
    let checked = checks::verdict(&answer, installation);
    if checked.is_some() {
        context.metrics.grant_checked(&grant_labels(grant));
    }
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
    if checked == Some(TokenCheck::Valid) && needs_scim(grant) {
        probe_scim(&uid, token, context).await;
    }
    checked.unwrap_or(verdict)
}

/// Whether the grant's token is one PingFederate's Slack provisioner drives SCIM with: a user
/// token with the `admin` scope.
fn needs_scim(grant: &SlackOAuthGrant) -> bool {
    let spec = &grant.spec;
    spec.effective_token() == crate::api::TokenKind::User
        && spec
            .user_scopes
            .iter()
            .any(|s| s == crate::api::DEFAULT_USER_SCOPE)
}

/// Asks SCIM whether the token can drive provisioning. Slack being unreachable changes nothing.
async fn probe_scim(uid: &str, token: &SecretString, context: &Context) {
    let deadline = tokio::time::Instant::now() + CHECK_TIMEOUT;
    match context.slack.scim_probe(token, deadline).await {
        Ok(answer) => context.checks.record_provisioning(uid, answer),
        Err(error) => warn!(
            error = &error as &dyn std::error::Error,
            "failed to ask Slack's SCIM API about the token; the grant is unchanged"
        ),
    }
}

/// SCIM's verdict on the grant's token: asked at once about a token issued while this
/// controller runs (an approval, a refresh), else with each periodic check.
async fn provisioning(
    grant: &SlackOAuthGrant,
    record: &crate::record::TokenRecord,
    context: &Context,
) -> Option<crate::slack::Provisioning> {
    if !needs_scim(grant) {
        return None;
    }
    let uid = grant.uid().unwrap_or_default();
    if context.checks.provisioning(&uid).is_none()
        && context.checks.issued_since_start(record.issued_at)
    {
        probe_scim(&uid, &record.access_token, context).await;
    }
    context.checks.provisioning(&uid)
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
    let uid = grant.uid().unwrap_or_default();
    let consumer = get_secret(&secrets, &grant.spec.secret.name)
        .await?
        .filter(|s| manages(s, grant));
    let held = context.records.get(&uid).await.map_err(Error::Record)?;
    let revoke = grant.spec.deletion_policy == DeletionPolicy::Revoke;
    for token in tokens::to_revoke_on_delete(grant, held.as_ref(), consumer.as_ref(), revoke) {
        let deadline = tokio::time::Instant::now() + REVOKE_TIMEOUT;
        if let Err(error) = context.slack.revoke(&token, deadline).await {
            revoke_pending(grant, namespace, context, &error).await;
            return Err(Error::Revoke(error));
        }
    }
    if !revoke && let Some(secret) = consumer {
        release(&secrets, secret, grant).await?;
    }
    context.records.delete(&uid).await.map_err(Error::Record)?;
    context.checks.forget(&uid);
    context.metrics.grant_deleted(&grant_labels(grant));
    if revoke {
        info!("grant deleted; its tokens were revoked at Slack");
    } else {
        info!("grant deleted; its token Secret is retained and released");
    }
    Ok(Action::await_change())
}

/// How long one attempt to revoke a deleted grant's token may take.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(15);

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

/// What a reconcile reads.
struct Observed {
    client_secret: ClientSecret,
    /// The Client Secret itself, to refresh tokens with.
    client_secret_value: Option<SecretString>,
    /// The Secret named by `spec.secret`, whoever's it is.
    consumer: Option<Secret>,
    held: Option<store::Held>,
}

/// The grant's Secrets and its token record. The client Secret comes from the cache of shared
/// Secrets: one that is not shared with this grant is as good as missing. The token Secret and
/// the record come from the caches when those show a settled grant ([`cache::settled`]), else
/// from the API server.
async fn observe(
    grant: &SlackOAuthGrant,
    namespace: &str,
    context: &Context,
) -> Result<Observed, Error> {
    for cache in [
        &context.shared_secrets,
        &context.token_secrets,
        &context.record_secrets,
    ] {
        cache.ready().await.map_err(|_| Error::SecretsUnavailable)?;
    }
    let reference = &grant.spec.client_secret_ref;
    let app_secret = context
        .shared_secrets
        .get(namespace, &reference.name)
        .map(|packed| packed.unpack())
        .filter(|secret| shared_with(secret, &grant.name_any()));
    let client_secret_value = app_secret
        .as_ref()
        .and_then(|secret| token_in(secret, &reference.key))
        .map(|value| SecretString::from(value.expose_secret().trim().to_owned()));
    let client_secret = match &app_secret {
        Some(secret) if has_key(secret, &reference.key) => ClientSecret::Present,
        Some(_) => ClientSecret::KeyMissing,
        None => ClientSecret::SecretMissing,
    };
    let uid = grant.uid().unwrap_or_default();
    let consumer = context
        .token_secrets
        .get(namespace, &grant.spec.secret.name)
        .map(|packed| packed.unpack());
    let held = context
        .record_secrets
        .get(&context.config.namespace, &record::secret_name(&uid))
        .and_then(|packed| store::Held::of(&packed.unpack(), &uid));
    let now = Timestamp::now();
    let (consumer, held) = if cache::settled(
        grant,
        consumer.as_ref(),
        held.as_ref().map(|h| &h.record),
        now,
    ) {
        context.metrics.count_read("cache");
        (consumer, held)
    } else {
        context.metrics.count_read("api");
        let secrets = Api::<Secret>::namespaced(context.client.clone(), namespace);
        let consumer = get_secret(&secrets, &grant.spec.secret.name).await?;
        let held = if held.is_none() && cache::unrecorded(grant) {
            None
        } else {
            context.records.get(&uid).await.map_err(Error::Record)?
        };
        (consumer, held)
    };
    Ok(Observed {
        client_secret,
        client_secret_value,
        consumer,
        held,
    })
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test]
    async fn a_reconcile_back_from_slack_goes_before_new_ones_but_the_first_in_line() {
        let turns = Arc::new(Turns::new(1));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut back = Turn::take(&turns).await.expect("a turn");
        let new: Vec<_> = ["new-1", "new-2", "new-3"]
            .into_iter()
            .map(|name| {
                let (turns, order) = (turns.clone(), order.clone());
                tokio::spawn(async move {
                    let _turn = Turn::take(&turns).await.expect("a turn");
                    order.lock().expect("order").push(name);
                    tokio::task::yield_now().await;
                })
            })
            .collect();
        // Every new reconcile is waiting now.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        back.away(async {}).await.expect("a turn again");
        order.lock().expect("order").push("back");
        drop(back);
        for reconcile in new {
            reconcile.await.expect("the reconcile ran");
        }
        assert_eq!(
            *order.lock().expect("order"),
            ["new-1", "back", "new-2", "new-3"]
        );
    }
}
