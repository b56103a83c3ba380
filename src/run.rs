//! The operator process: the controller, the public callback server and the admin server, under
//! one shutdown signal. `main` parses flags and calls [`run`]; tests call it too.

use std::{io, sync::Arc, time::Duration};

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString, api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{Api, Client, api::PostParams};
use kube_lease_manager::LeaseManagerBuilder;
use rand::Rng;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{error, info, warn};

use crate::{
    admin::{self, Readiness},
    api::FIELD_MANAGER,
    cache::{Caches, Packed},
    callback::{
        self, Callback, MAX_CUSTODIES,
        cluster::{KubeCluster, Links},
        state::StateKey,
    },
    client::Watchers,
    config::Config,
    controller, events,
    metrics::Metrics,
    slack::{ClientOptions, SlackClient},
};

/// How long the controller and leader election get to stop once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The longest the process takes to stop: the controller's grace, then the callbacks in custody
/// (an exchange in flight, storing its token, or revoking it: see `callback::flow`). The chart's
/// `terminationGracePeriodSeconds` (75) is larger.
pub const SHUTDOWN_BUDGET: Duration = Duration::from_secs(65);
/// Connect, read and write timeouts of the callback's own Kubernetes client. The controller's
/// client has no read timeout: its watches are long-lived.
const CALLBACK_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Listen backlogs: a burst of browsers (or of an attacker's sockets, which the server then
/// evicts) waits in the kernel instead of being dropped and retried a second later.
const CALLBACK_BACKLOG: u32 = 1024;
const ADMIN_BACKLOG: u32 = 128;

/// The data key of the state key Secret.
const STATE_KEY_DATA: &str = "stateKey";

/// Errors that stop the operator from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to listen for callbacks on {addr}")]
    BindCallback {
        addr: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("failed to listen for admin requests on {addr}")]
    BindAdmin {
        addr: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("failed to build the Slack HTTP client")]
    SlackClient(#[source] reqwest::Error),
    #[error("failed to reach the Kubernetes API")]
    Kubernetes(#[source] kube::Error),
    #[error(transparent)]
    Client(crate::client::Error),
    #[error("failed to load or create the state key Secret {namespace}/{name}")]
    StateKey {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "failed to use the state key Secret {namespace}/{name}: its {STATE_KEY_DATA} is not 32 bytes; delete it to have a new one made"
    )]
    StateKeyInvalid { namespace: String, name: String },
}

/// Runs until `shutdown` is cancelled, then drains callbacks in flight and stops.
pub async fn run(
    kube_config: kube::Config,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let config = Arc::new(config);
    // Watches on one client; requests, at most MAX_REQUESTS_IN_FLIGHT at a time, on another.
    let watchers = Watchers::new(&kube_config, &config.watch_namespaces).map_err(Error::Client)?;
    let client = crate::client::bounded(&kube_config).map_err(Error::Client)?;
    let (callback_listener, admin_listener) = bind(&config)?;
    client
        .apiserver_version()
        .await
        .map_err(Error::Kubernetes)?;
    let state_key = load_state_key(&client, &config.namespace, &config.state_key_secret).await?;

    let readiness = Readiness::default();
    let metrics = Metrics::default();
    let recorder = events::recorder(client.clone());
    let slack = Arc::new(
        SlackClient::new(config.slack_api_url.clone(), ClientOptions::default())
            .map_err(Error::SlackClient)?
            .with_scim_url(config.slack_scim_url.clone()),
    );
    // On the controller's client: watches are long-lived, and that one has no read timeout.
    let watched = controller::Watched::keep(&watchers, &shutdown);
    let links = Links::new(watched.grants.clone());
    let shared = watched.shared_secrets.clone();
    let callback = callback_of(
        kube_config,
        (links, shared),
        &config,
        &state_key,
        (&recorder, &metrics),
        &slack,
        &shutdown,
    )?;
    let custody = callback.custody.clone();
    info!(
        callback = %callback_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        admin = %admin_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        redirect_uri = %config.redirect_uri,
        "serving"
    );
    tokio::spawn(ready_once_the_crd_is_served(
        client.clone(),
        (
            callback.cluster.links.clone(),
            callback.cluster.shared.clone(),
        ),
        readiness.clone(),
        shutdown.clone(),
    ));

    let admin = tokio::spawn(admin::serve(
        admin_listener,
        readiness,
        metrics.clone(),
        shutdown.clone(),
    ));
    let callbacks = tokio::spawn(callback::serve(
        callback_listener,
        callback::router(callback),
        shutdown.clone(),
    ));
    let deps = controller::Deps {
        client,
        watchers,
        watched,
        config,
        state_key,
        recorder,
        metrics,
        slack,
    };
    let leading = reconcile_while_leading(deps, shutdown.clone());
    tokio::pin!(leading);
    tokio::select! {
        () = &mut leading => {}
        () = shutdown.cancelled() => {
            // Stopping the controller and releasing the Lease need the API server; when it is
            // unreachable, do not let them hold up the exit.
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut leading).await.is_err() {
                warn!("the controller did not stop within the grace period; exiting anyway");
            }
        }
    }
    stop(&shutdown, callbacks, custody, admin).await;
    Ok(())
}

/// How often the CRD is looked for while it is not installed.
const CRD_RECHECK: Duration = Duration::from_secs(5);
/// How often its absence is logged again.
const CRD_MISSING_LOG_EVERY: Duration = Duration::from_secs(60);

/// Marks the operator ready once the API server serves SlackOAuthGrants and the grants and the
/// Secrets shared with them are loaded: without the CRD no grant can exist, so no callback could
/// succeed and no pod should take traffic; before the grants are loaded, no approval link can be
/// answered. Until then it
/// says, in words, what is missing and how to install it. Discovery is readable by every
/// authenticated client, so this needs no extra permission.
async fn ready_once_the_crd_is_served(
    client: Client,
    (links, shared): (Links, Caches<Packed<Secret>>),
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let group_version = format!("{}/{}", crate::api::GROUP, crate::api::VERSION);
    let mut logged: Option<tokio::time::Instant> = None;
    loop {
        let served = match client.list_api_group_resources(&group_version).await {
            Ok(list) => Ok(list.resources.iter().any(|r| r.name == crate::api::PLURAL)),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(error) => Err(error),
        };
        match served {
            Ok(true) => {
                tokio::select! {
                    () = links.synced() => {}
                    () = shutdown.cancelled() => return,
                }
                tokio::select! {
                    // Only a watch that ended (the process stopping) fails.
                    _ = shared.ready() => {}
                    () = shutdown.cancelled() => return,
                }
                info!("the SlackOAuthGrant CRD is served and the grants are loaded; ready");
                readiness.set_ready();
                return;
            }
            Ok(false) if logged.is_none_or(|at| at.elapsed() >= CRD_MISSING_LOG_EVERY) => {
                error!(
                    crd = %format!("{}.{}", crate::api::PLURAL, crate::api::GROUP),
                    "the SlackOAuthGrant CRD is not installed, so there are no grants to serve and /readyz stays not ready: install it with the Helm chart (crds.enabled=true) or `kubectl apply --server-side -f crds/`"
                );
                logged = Some(tokio::time::Instant::now());
            }
            Ok(false) => {}
            Err(error) => {
                warn!(error = %error, "failed to ask the API server whether the SlackOAuthGrant CRD is installed; retrying")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(CRD_RECHECK) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// The callback server's state: its own Kubernetes client (with timeouts), Slack, the key.
fn callback_of(
    kube_config: kube::Config,
    (links, shared): (Links, Caches<Packed<Secret>>),
    config: &Arc<Config>,
    state_key: &StateKey,
    (recorder, metrics): (&events::Recorder, &Metrics),
    slack: &Arc<SlackClient>,
    shutdown: &CancellationToken,
) -> Result<Arc<Callback<SlackClient>>, Error> {
    let mut callback_config = kube_config;
    callback_config.connect_timeout = Some(CALLBACK_CLIENT_TIMEOUT);
    callback_config.read_timeout = Some(CALLBACK_CLIENT_TIMEOUT);
    callback_config.write_timeout = Some(CALLBACK_CLIENT_TIMEOUT);
    let client = crate::client::bounded(&callback_config).map_err(Error::Client)?;
    Ok(Arc::new(Callback {
        cluster: KubeCluster {
            links,
            shared,
            records: crate::store::Records::new(client.clone(), &config.namespace),
            client,
            recorder: recorder.clone(),
        },
        state_key: state_key.clone(),
        instance: instance_id(),
        slots: Arc::new(tokio::sync::Semaphore::new(MAX_CUSTODIES)),
        custody: TaskTracker::new(),
        slack: slack.clone(),
        config: config.clone(),
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
    }))
}

/// Callbacks in custody finish (storing their token, or revoking it) before the process exits,
/// each within its own shutdown budget, and all within [`SHUTDOWN_BUDGET`].
async fn stop(
    shutdown: &CancellationToken,
    callbacks: tokio::task::JoinHandle<()>,
    custody: TaskTracker,
    admin: tokio::task::JoinHandle<io::Result<()>>,
) {
    shutdown.cancel();
    if let Err(error) = callbacks.await {
        warn!(
            error = &error as &dyn std::error::Error,
            "callback server task failed"
        );
    }
    custody.close();
    if tokio::time::timeout(SHUTDOWN_BUDGET, custody.wait())
        .await
        .is_err()
    {
        error!("callbacks in custody did not finish within the shutdown budget");
    }
    match admin.await {
        Ok(Err(error)) => warn!(
            error = &error as &dyn std::error::Error,
            "admin server failed"
        ),
        Err(error) => warn!(
            error = &error as &dyn std::error::Error,
            "admin server task failed"
        ),
        Ok(Ok(())) => {}
    }
}

/// Runs the controller on this replica only while it holds the leader Lease (or always, without
/// leader election), until `shutdown`. Leaving releases the Lease so another replica takes over
/// at once; a replica that dies without releasing it is replaced once the Lease expires.
async fn reconcile_while_leading(deps: controller::Deps, shutdown: CancellationToken) {
    let metrics = deps.metrics.clone();
    let Some(election) = deps.config.leader_election.clone() else {
        metrics.leader.set(1);
        controller::run(deps, shutdown).await;
        return;
    };
    let Some(manager) = lease_manager(&deps.client, &election, &shutdown).await else {
        return;
    };
    let (mut leading, election_task) = manager.watch().await;
    'terms: loop {
        // Wait to lead.
        while !*leading.borrow_and_update() {
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { break 'terms },
                () = shutdown.cancelled() => break 'terms,
            }
        }
        info!(lease = %election.lease, namespace = %election.namespace, "leading: reconciling grants");
        let term = shutdown.child_token();
        metrics.leader.set(1);
        let controller = tokio::spawn(controller::run(deps.clone(), term.clone()));
        // Lead until the Lease is lost or the process stops.
        loop {
            tokio::select! {
                changed = leading.changed() => {
                    if changed.is_err() || !*leading.borrow_and_update() {
                        warn!("lost the leader Lease: no longer reconciling");
                        break;
                    }
                }
                () = shutdown.cancelled() => break,
            }
        }
        term.cancel();
        let _ = controller.await;
        metrics.leader.set(0);
        if shutdown.is_cancelled() {
            break;
        }
    }
    // Dropping the receiver makes the election task release the Lease and end.
    drop(leading);
    if let Ok(Err(error)) = election_task.await {
        warn!(
            error = &error as &dyn std::error::Error,
            "failed to release the leader Lease"
        );
    }
}

/// The leader-election Lease manager, retried until it can be set up or the process stops.
async fn lease_manager(
    client: &Client,
    election: &crate::config::LeaderElection,
    shutdown: &CancellationToken,
) -> Option<kube_lease_manager::LeaseManager> {
    let duration = election.duration.as_secs().max(2);
    loop {
        let builder = LeaseManagerBuilder::new(client.clone(), &election.lease)
            .with_namespace(&election.namespace)
            .with_duration(duration)
            .with_grace((duration / 3).max(1))
            .with_field_manager(FIELD_MANAGER);
        let builder = match std::env::var("POD_NAME") {
            Ok(pod) => builder.with_identity(pod),
            Err(_) => builder,
        };
        match builder.build().await {
            Ok(manager) => return Some(manager),
            Err(error) => {
                warn!(
                    error = &error as &dyn std::error::Error,
                    "failed to set up leader election; retrying"
                );
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    () = shutdown.cancelled() => return None,
                }
            }
        }
    }
}

/// The callback and admin listeners.
fn bind(config: &Config) -> Result<(tokio::net::TcpListener, tokio::net::TcpListener), Error> {
    let callback =
        listen(config.callback_addr, CALLBACK_BACKLOG).map_err(|source| Error::BindCallback {
            addr: config.callback_addr,
            source,
        })?;
    let admin = listen(config.admin_addr, ADMIN_BACKLOG).map_err(|source| Error::BindAdmin {
        addr: config.admin_addr,
        source,
    })?;
    Ok((callback, admin))
}

/// A listener on `addr` with `backlog`, address reuse on as `TcpListener::bind` has it.
fn listen(addr: std::net::SocketAddr, backlog: u32) -> io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// This process, as named in the exchange records it leaves on grants: the pod (when known) and
/// a random part, so that a restarted pod is a new holder.
fn instance_id() -> String {
    let mut bytes = [0u8; 6];
    rand::rng().fill_bytes(&mut bytes);
    let random: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match std::env::var("POD_NAME") {
        Ok(pod) if crate::callback::state::is_dns_subdomain(&pod) => format!("{pod}/{random}"),
        _ => random,
    }
}

/// The key states are signed with, shared by every replica through a Secret in the operator's
/// namespace. The first replica to start creates it; a replica that loses that race reads the
/// winner's.
async fn load_state_key(client: &Client, namespace: &str, name: &str) -> Result<StateKey, Error> {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let failed = |source| Error::StateKey {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source,
    };
    for _ in 0..3 {
        if let Some(secret) = secrets.get_opt(name).await.map_err(failed)? {
            let bytes = secret
                .data
                .and_then(|mut d| d.remove(STATE_KEY_DATA))
                .map(|b| b.0)
                .unwrap_or_default();
            return StateKey::from_bytes(&bytes).map_err(|_| Error::StateKeyInvalid {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            });
        }
        let key = StateKey::generate();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([
                    (
                        "app.kubernetes.io/name".to_owned(),
                        "slack-oauth-operator".to_owned(),
                    ),
                    (
                        "app.kubernetes.io/component".to_owned(),
                        "state-key".to_owned(),
                    ),
                ])),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".to_owned()),
            data: Some(BTreeMap::from([(
                STATE_KEY_DATA.to_owned(),
                ByteString(key.to_bytes()),
            )])),
            ..Secret::default()
        };
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        match secrets.create(&params, &secret).await {
            Ok(_) => {
                info!(namespace, name, "created the state key Secret");
                return Ok(key);
            }
            // Another replica created it first: read theirs.
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(failed(error)),
        }
    }
    Err(Error::StateKeyInvalid {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// Cancels `shutdown` on SIGTERM or Ctrl-C.
pub fn cancel_on_signal(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let terminate = async {
            #[cfg(unix)]
            if let Ok(mut signal) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                signal.recv().await;
                return;
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
        info!("shutting down");
        shutdown.cancel();
    });
}
