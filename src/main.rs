//! The operator binary: flags, logging, then [`slack_oauth_operator::run::run`].

use std::process::ExitCode;

use clap::Parser;
use slack_oauth_operator::{config::Flags, run, telemetry};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

#[tokio::main]
async fn main() -> ExitCode {
    let flags = Flags::parse();
    if let Err(error) = telemetry::init(&flags.log_level, flags.log_format) {
        eprintln!("slack-oauth-operator: {error}");
        return ExitCode::FAILURE;
    }
    let config = match flags.validate() {
        Ok(config) => config,
        Err(err) => {
            error!(
                error = &err as &dyn std::error::Error,
                "invalid configuration"
            );
            return ExitCode::FAILURE;
        }
    };
    // One process-wide TLS provider for every client (kube and Slack).
    let _ = rustls::crypto::ring::default_provider().install_default();

    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(err) => {
            error!(
                error = &err as &dyn std::error::Error,
                "failed to create a Kubernetes client"
            );
            return ExitCode::FAILURE;
        }
    };
    info!(
        version = env!("CARGO_PKG_VERSION"),
        "starting slack-oauth-operator"
    );
    let shutdown = CancellationToken::new();
    run::cancel_on_signal(shutdown.clone());
    match run::run(client, config, shutdown).await {
        Ok(()) => {
            info!("stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            error!(error = &err as &dyn std::error::Error, "failed to run");
            ExitCode::FAILURE
        }
    }
}
