//! Command-line flags, each with an environment-variable twin, turned into a validated [`Config`].

use clap::{Parser, ValueEnum};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    Text,
    /// One JSON object per line, for a log pipeline.
    Json,
}

/// The operator's settings.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "slack-oauth-operator",
    version,
    about = "Obtains Slack OAuth tokens and keeps them in Kubernetes Secrets"
)]
pub struct Config {
    /// Log filter, in `RUST_LOG` syntax (for example `info` or `slack_oauth_operator=debug`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}
