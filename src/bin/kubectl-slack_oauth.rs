//! `kubectl slack-oauth`: the kubectl plugin for SlackOAuthGrants. kubectl finds it on PATH by
//! its name; everything it does is in `slack_oauth_operator::plugin` (docs/kubectl-plugin.md).

use std::process::ExitCode;

use clap::Parser;
use slack_oauth_operator::plugin::{self, Cli, Exit};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let usage = error.use_stderr();
            let _ = error.print();
            return if usage { Exit::Usage } else { Exit::Done }.into();
        }
    };
    plugin::run(cli).await
}
