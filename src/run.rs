//! The operator process: the controller, the public callback server and the admin server, under
//! one shutdown signal. `main` parses flags and calls [`run`]; tests call it too.

use std::{io, sync::Arc};

use kube::{
    Client,
    runtime::events::{Recorder, Reporter},
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    admin::{self, Readiness},
    callback::{self, Callback},
    config::Config,
    controller::{self, REPORTER},
    slack::{ClientOptions, SlackClient},
};

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
    let callback_listener = callback::bind(config.callback_addr)
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
    let reporter = Reporter {
        controller: REPORTER.to_owned(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let callback = Arc::new(Callback {
        client: client.clone(),
        slack: Arc::new(slack),
        config: config.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        shutdown: shutdown.clone(),
    });
    info!(
        callback = %callback_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        admin = %admin_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        redirect_uri = %config.redirect_uri,
        "serving"
    );
    readiness.set_ready();

    let admin = tokio::spawn(admin::serve(admin_listener, readiness, shutdown.clone()));
    let callbacks = tokio::spawn(callback::serve(
        callback_listener,
        callback::router(callback),
        shutdown.clone(),
    ));
    controller::run(client, config, shutdown.clone()).await;
    // The controller stops on the shutdown signal; wait for callbacks in flight to finish.
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
