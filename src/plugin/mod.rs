//! `kubectl slack-oauth`: the kubectl plugin for `SlackOAuthGrant`s (docs/kubectl-plugin.md).
//!
//! The binary `kubectl-slack_oauth` only parses its arguments and calls [`run`]. Deciding what a
//! grant's status means (is an approval pending, did it complete, did it fail), laying out
//! `status` and building a Slack app manifest are plain functions tested without a cluster
//! ([`pending`], [`layout`], [`manifest`]); the commands around them do the Kubernetes calls.
//!
//! The plugin never reads the token Secret: everything it shows comes from the grant's status
//! and Events, which hold no secret values.

mod cli;
mod cluster;
mod commands;
pub mod layout;
pub mod manifest;
pub mod pending;
mod terminal;

use std::process::ExitCode;

pub use cli::{Cli, Command, Global, OutputFormat};

/// What the plugin exits with; also listed in `--help` and docs/kubectl-plugin.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Done: approved, nothing pending, printed, revoked.
    Done = 0,
    /// Failed with a reason: the approval failed, the grant is blocked, the API server refused.
    Failed = 1,
    /// Usage: bad arguments, no such kubeconfig or context, grant or CRD not found, a
    /// confirmation that cannot be asked.
    Usage = 2,
    /// `--timeout` passed before the grant got where it was going.
    TimedOut = 3,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// Why a command did not finish with [`Exit::Done`]. Each message is written for the person at
/// the terminal: it names the grant and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read the kubeconfig")]
    ReadKubeconfig(#[source] kube::config::KubeconfigError),
    #[error("failed to use the kubeconfig")]
    LoadKubeconfig(#[source] kube::config::KubeconfigError),
    #[error("failed to build a Kubernetes client")]
    BuildClient(#[source] kube::Error),
    #[error("grant {name} not found in namespace {namespace}")]
    NotFound { name: String, namespace: String },
    #[error(
        "the API server does not serve slackoauthgrants.slack-oauth-operator.io: is the CRD installed? (kubectl apply -f crds/)"
    )]
    NoCrd,
    #[error("forbidden: you may not {verb} in namespace {namespace}: {message}")]
    Forbidden {
        verb: &'static str,
        namespace: String,
        message: String,
    },
    #[error("failed to {step}: {message}")]
    Api { step: &'static str, message: String },
    #[error("failed to {step}")]
    Kube {
        step: &'static str,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("grant {name}: {reason}: {message}")]
    GrantFailed {
        name: String,
        reason: String,
        message: String,
    },
    #[error("grant {name} was deleted while waiting")]
    Deleted { name: String },
    #[error("timed out after {after} waiting for grant {name}; last seen: {last}")]
    TimedOut {
        name: String,
        after: String,
        last: String,
    },
    #[error("refusing to revoke without --yes: stdin is not a terminal to ask on")]
    ConfirmationUnavailable,
    #[error("not revoked: the answer was not yes")]
    Declined,
    #[error("failed to read the answer")]
    ReadAnswer(#[source] std::io::Error),
    #[error(transparent)]
    Manifest(#[from] manifest::Error),
    #[error("failed to write the output")]
    Write(#[source] std::io::Error),
}

impl Error {
    /// The exit code this error stands for.
    pub fn exit(&self) -> Exit {
        match self {
            Self::ReadKubeconfig(_)
            | Self::LoadKubeconfig(_)
            | Self::NotFound { .. }
            | Self::NoCrd
            | Self::ConfirmationUnavailable
            | Self::Manifest(manifest::Error::NoPublicUrl { .. }) => Exit::Usage,
            Self::TimedOut { .. } => Exit::TimedOut,
            _ => Exit::Failed,
        }
    }

    /// The message and its causes, `: `-separated, as a user reads them (never a Debug dump).
    pub fn report(&self) -> String {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let cause = cause.to_string();
            if !message.contains(&cause) {
                message.push_str(": ");
                message.push_str(&cause);
            }
            source = cause_of(source);
        }
        message
    }
}

fn cause_of<'a>(
    error: Option<&'a (dyn std::error::Error + 'static)>,
) -> Option<&'a (dyn std::error::Error + 'static)> {
    error.and_then(std::error::Error::source)
}

/// Runs the command line, printing errors to stderr: what the binary calls.
pub async fn run(cli: Cli) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match commands::run(cli).await {
        Ok(()) => Exit::Done.into(),
        Err(error) => {
            eprintln!("error: {}", error.report());
            error.exit().into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_exits_with_its_documented_code() {
        let not_found = Error::NotFound {
            name: "scim".into(),
            namespace: "pf".into(),
        };
        assert_eq!(not_found.exit(), Exit::Usage);
        assert_eq!(Error::NoCrd.exit(), Exit::Usage);
        assert_eq!(Error::ConfirmationUnavailable.exit(), Exit::Usage);
        let timed_out = Error::TimedOut {
            name: "scim".into(),
            after: "2s".into(),
            last: "phase AwaitingAuthorization".into(),
        };
        assert_eq!(timed_out.exit(), Exit::TimedOut);
        let failed = Error::GrantFailed {
            name: "scim".into(),
            reason: "AccessDenied".into(),
            message: "The Slack owner clicked Cancel.".into(),
        };
        assert_eq!(failed.exit(), Exit::Failed);
        assert_eq!(ExitCode::from(Exit::TimedOut), ExitCode::from(3));
    }

    /// The guarantee of the module doc, kept by never naming the Secret type.
    #[test]
    fn no_part_of_the_plugin_can_read_a_secret() {
        let sources = [
            include_str!("commands.rs"),
            include_str!("cluster.rs"),
            include_str!("layout.rs"),
            include_str!("pending.rs"),
            include_str!("terminal.rs"),
            include_str!("manifest.rs"),
        ];
        for source in sources {
            assert!(!source.contains(concat!("v1::", "Secret")));
            assert!(!source.contains(concat!("Api::<", "Secret>")));
        }
    }

    #[test]
    fn a_report_is_the_message_and_its_causes_on_one_line() {
        let error = Error::ReadAnswer(std::io::Error::other("stdin closed"));
        assert_eq!(error.report(), "failed to read the answer: stdin closed");
        let not_found = Error::NotFound {
            name: "scim".into(),
            namespace: "pf".into(),
        };
        assert_eq!(not_found.report(), "grant scim not found in namespace pf");
    }
}
