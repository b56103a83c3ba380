//! The operator process: configuration, logging, then the controller.

use std::process::ExitCode;

use clap::Parser;
use slack_oauth_operator::{config::Config, controller, telemetry};
use tracing::{error, info};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(error) = telemetry::init(&config.log_level, config.log_format) {
        eprintln!("slack-oauth-operator: {error}");
        return ExitCode::FAILURE;
    }
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
    controller::run(client).await;
    info!("stopped");
    ExitCode::SUCCESS
}
