//! The operator process: the controller, the public callback server and the admin server, under
//! one shutdown signal. `main` parses flags and calls [`run`]; tests call it too.

use std::{io, sync::Arc, time::Duration};

use kube::{Client, runtime::events::Recorder};
use kube_lease_manager::LeaseManagerBuilder;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    admin::{self, Readiness},
    api::FIELD_MANAGER,
    callback::{self, Callback},
    config::Config,
    controller,
    metrics::Metrics,
    slack::{ClientOptions, SlackClient},
};

/// How long the controller and leader election get to stop once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
}

/// Runs until `shutdown` is cancelled, then drains callbacks in flight and stops.
pub async fn run(client: Client, config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let config = Arc::new(config);
    let slack = SlackClient::new(config.slack_api_url.clone(), ClientOptions::default())
        .map_err(Error::SlackClient)?;
    let callback_listener = tokio::net::TcpListener::bind(config.callback_addr)
        .await
        .map_err(|source| Error::BindCallback {
            addr: config.callback_addr,
            source,
        })?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin_addr)
        .await
        .map_err(|source| Error::BindAdmin {
            addr: config.admin_addr,
            source,
        })?;
    client
        .apiserver_version()
        .await
        .map_err(Error::Kubernetes)?;

    let readiness = Readiness::default();
    let metrics = Metrics::default();
    let recorder = controller::recorder(client.clone());
    let callback = Arc::new(Callback {
        client: client.clone(),
        slack: Arc::new(slack),
        config: config.clone(),
        recorder: recorder.clone(),
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
    });
    info!(
        callback = %callback_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        admin = %admin_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        redirect_uri = %config.redirect_uri,
        "serving"
    );
    readiness.set_ready();

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
    let leading = reconcile_while_leading(client, config, recorder, metrics, shutdown.clone());
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
    // Callbacks in flight finish (storing their token, or revoking it) before the process exits.
    shutdown.cancel();
    if let Err(error) = callbacks.await {
        warn!(
            error = &error as &dyn std::error::Error,
            "callback server task failed"
        );
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
    Ok(())
}

/// Runs the controller on this replica only while it holds the leader Lease (or always, without
/// leader election), until `shutdown`. Leaving releases the Lease so another replica takes over
/// at once; a replica that dies without releasing it is replaced once the Lease expires.
async fn reconcile_while_leading(
    client: Client,
    config: Arc<Config>,
    recorder: Recorder,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let Some(election) = config.leader_election.clone() else {
        metrics.leader.set(1);
        controller::run(client, config, recorder, metrics, shutdown).await;
        return;
    };
    let duration = election.duration.as_secs().max(2);
    let builder = || {
        let builder = LeaseManagerBuilder::new(client.clone(), &election.lease)
            .with_namespace(&election.namespace)
            .with_duration(duration)
            .with_grace((duration / 3).max(1))
            .with_field_manager(FIELD_MANAGER);
        match std::env::var("POD_NAME") {
            Ok(pod) => builder.with_identity(pod),
            Err(_) => builder,
        }
    };
    let manager = loop {
        match builder().build().await {
            Ok(manager) => break manager,
            Err(error) => {
                warn!(
                    error = &error as &dyn std::error::Error,
                    "failed to set up leader election; retrying"
                );
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
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
        let controller = tokio::spawn(controller::run(
            client.clone(),
            config.clone(),
            recorder.clone(),
            metrics.clone(),
            term.clone(),
        ));
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
