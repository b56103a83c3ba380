//! The plugin's command line.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXIT_CODES: &str = "\
Exit codes:
  0  done: approved, nothing pending, printed, revoked
  1  failed with a reason: the approval failed, the grant is blocked, the API server refused
  2  usage: bad arguments, no such kubeconfig or context, grant or CRD not found,
     no --yes where no one can be asked
  3  timeout: --timeout passed first";

/// Work with SlackOAuthGrants: approve them, see how they stand, re-authorize, revoke, and print
/// the Slack app manifest they need.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl slack-oauth",
    bin_name = "kubectl slack-oauth",
    version,
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// The flags kubectl has, with kubectl's meaning.
#[derive(Args, Debug, Clone, Default)]
pub struct Global {
    /// The grant's namespace; defaults to the context's namespace, else `default`.
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use; defaults to the current context.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The kubeconfig file; defaults to $KUBECONFIG, else ~/.kube/config.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the grant's authorization link (and a QR code on a terminal), then wait until a
    /// Slack owner has approved it.
    #[command(after_help = EXIT_CODES)]
    Authorize {
        /// The grant.
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Show who approved the grant, its scopes, its token's expiry and revision, its conditions
    /// and its recent Events. Never shows the token.
    #[command(after_help = EXIT_CODES)]
    Status {
        /// The grant.
        name: String,
    },
    /// Ask for a new approval (the annotation slack-oauth-operator.io/reauthorize). The current
    /// token keeps working until the new approval replaces it.
    #[command(after_help = EXIT_CODES)]
    Reauthorize {
        /// The grant.
        name: String,
        /// Then print the new link and wait for the approval, as `authorize` does.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        timeout: WaitArgs,
    },
    /// Revoke the grant's token at Slack and delete the grant (deletion policy Revoke).
    #[command(after_help = EXIT_CODES)]
    Revoke {
        /// The grant.
        name: String,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        /// How long to wait for the operator to revoke the token and let the grant go.
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Print a Slack app manifest for the grant: its redirect URL, scopes and settings.
    #[command(after_help = EXIT_CODES)]
    Manifest {
        /// The grant.
        name: String,
        /// The app's display name (at most 35 characters); defaults to one made from the grant.
        #[arg(long)]
        app_name: Option<String>,
        /// The redirect URL, when the grant has no link to take it from
        /// (`https://<operator public URL>/oauth/callback`).
        #[arg(long)]
        redirect_url: Option<String>,
        /// Turn on Slack token rotation for the app (`settings.token_rotation_enabled`).
        #[arg(long)]
        token_rotation: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Yaml)]
        output: OutputFormat,
    },
}

/// How long to wait.
#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// Give up after this long (for example 90s, 15m, 1h).
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Yaml,
    Json,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_lists_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:"), "{help}");
        assert!(help.contains("3  timeout"), "{help}");
    }

    #[test]
    fn global_flags_go_after_the_subcommand_as_in_kubectl() {
        let cli = Cli::try_parse_from([
            "kubectl-slack_oauth",
            "status",
            "scim",
            "-n",
            "pf",
            "--context",
            "prod",
        ])
        .expect("parses");
        assert_eq!(cli.global.namespace.as_deref(), Some("pf"));
        assert_eq!(cli.global.context.as_deref(), Some("prod"));
    }

    #[test]
    fn authorize_waits_fifteen_minutes_by_default() {
        let cli = Cli::try_parse_from(["kubectl-slack_oauth", "authorize", "scim"]).expect("ok");
        let Command::Authorize { wait, .. } = cli.command else {
            panic!("authorize");
        };
        assert_eq!(wait.timeout, Duration::from_secs(15 * 60));
    }
}
