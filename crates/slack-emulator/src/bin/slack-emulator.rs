//! Runs the Slack emulator on a fixed address with one app, for manual trials with the operator:
//!
//! ```text
//! slack-emulator --client-id 123.456 --client-secret s3cr3t \
//!   --redirect-url http://127.0.0.1:8080/oauth/callback --team-id T0ACME --team-name Acme
//! ```
//!
//! then start the operator with the printed `--slack-url` and `--slack-api-url`, and open a
//! grant's authorization link in a browser. Set `RUST_LOG=slack_emulator=debug` to see calls.

use std::net::SocketAddr;

use clap::Parser;
use slack_emulator::{App, Approver, Enterprise, SlackEmulator, Team};

/// A local Slack (OAuth v2 consent page, oauth.v2.access, auth.test, auth.revoke).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8900")]
    listen: SocketAddr,
    /// The app's client ID.
    #[arg(long)]
    client_id: String,
    /// The app's client secret.
    #[arg(long, env = "SLACK_EMULATOR_CLIENT_SECRET", hide_env_values = true)]
    client_secret: String,
    /// A Redirect URL of the app (repeatable; the first is the default).
    #[arg(long = "redirect-url", required = true)]
    redirect_urls: Vec<String>,
    /// The app's display name.
    #[arg(long, default_value = "Test App")]
    app_name: String,
    /// The approver's workspace ID (required unless --org-install).
    #[arg(long, required_unless_present = "org_install")]
    team_id: Option<String>,
    /// The approver's workspace name.
    #[arg(long, default_value = "Test Workspace")]
    team_name: String,
    /// The Enterprise Grid organization ID, if the workspace belongs to one.
    #[arg(long)]
    enterprise_id: Option<String>,
    /// The organization's name.
    #[arg(long, default_value = "Test Grid")]
    enterprise_name: String,
    /// Install org-wide (the approver is an Org Owner choosing the organization).
    #[arg(long, requires = "enterprise_id")]
    org_install: bool,
    /// The approving user's ID.
    #[arg(long, default_value = "U0OWNER0001")]
    user_id: String,
    /// Enable token rotation for the app.
    #[arg(long)]
    token_rotation: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("slack_emulator=debug")),
        )
        .init();
    let args = Args::parse();

    let mut app = App::new(&args.client_id, &args.client_secret, &args.redirect_urls[0])
        .with_name(&args.app_name);
    app.redirect_urls = args.redirect_urls.clone();
    app.token_rotation = args.token_rotation;
    let app_id = app.app_id.clone();

    let approver = Approver {
        user_id: args.user_id.clone(),
        user_name: "owner".to_owned(),
        team: args.team_id.clone().map(|id| Team {
            id,
            name: args.team_name.clone(),
        }),
        enterprise: args.enterprise_id.clone().map(|id| Enterprise {
            id,
            name: args.enterprise_name.clone(),
        }),
        enterprise_install: args.org_install,
        granted_user_scopes: None,
        granted_bot_scopes: None,
    };

    let slack = SlackEmulator::start_on(args.listen).await?;
    slack.register_app(app);
    slack.set_approver(approver);
    println!("Slack emulator listening on {}", slack.local_addr());
    println!("  app ID:          {app_id}");
    println!("  --slack-url      {}", slack.url());
    println!("  --slack-api-url  {}", slack.api_url());
    println!("Ctrl-C stops it.");

    tokio::signal::ctrl_c().await?;
    slack.shutdown().await;
    Ok(())
}
