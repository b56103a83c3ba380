//! The operator binary: flags, logging, then [`slack_oauth_operator::run::run`].

use std::process::ExitCode;

use clap::Parser;
use slack_oauth_operator::{config::Flags, run, server, telemetry};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// jemalloc, with its background thread: it hands memory freed after a peak (a restart's list
/// pages, a burst of approvals) back to the system within seconds, where glibc's allocator kept
/// most of it resident (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let flags = Flags::parse();
    if let Err(error) = telemetry::init(&flags.log_level, flags.log_format) {
        eprintln!("slack-oauth-operator: {error}");
        return ExitCode::FAILURE;
    }
    // The callback server sets its connection bound below this limit, so raise it first.
    match server::raise_open_file_limit() {
        Ok(open_files) => info!(open_files, "raised the open file limit"),
        Err(err) => warn!(
            error = &err as &dyn std::error::Error,
            "failed to raise the open file limit"
        ),
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

    let kube_config = match kube::Config::infer().await {
        Ok(kube_config) => kube_config,
        Err(err) => {
            error!(
                error = &err as &dyn std::error::Error,
                "failed to find a Kubernetes configuration"
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
    match run::run(kube_config, config, shutdown).await {
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
