//! The subcommands: each reads the grant, hands what it read to the pure parts, and makes the
//! one change it is for.

use std::{
    io::{BufRead, IsTerminal, Write},
    time::Duration,
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{api::core::v1::Event, jiff::Timestamp};
use kube::runtime::WatchStreamExt;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::watcher::watch_object,
};
use serde_json::json;

use super::{
    Cli, Command, Error, OutputFormat,
    cluster::Cluster,
    layout::{self, EventLine},
    manifest,
    pending::{Outcome, Step, View, Wait},
    terminal::{Display, stdout_is_terminal},
};
use crate::api::{DeletionPolicy, SlackOAuthGrant, annotations, conditions, reasons};

/// How many Events `status` shows.
const EVENTS_SHOWN: usize = 10;

pub async fn run(cli: Cli) -> Result<(), Error> {
    let cluster = Cluster::connect(&cli.global).await?;
    match cli.command {
        Command::Authorize { name, wait } => {
            authorize(&cluster, &name, Wait::new(), wait.timeout).await
        }
        Command::Status { name } => status(&cluster, &name).await,
        Command::Reauthorize {
            name,
            wait,
            timeout,
        } => reauthorize(&cluster, &name, wait, timeout.timeout).await,
        Command::Revoke { name, yes, timeout } => revoke(&cluster, &name, yes, timeout).await,
        Command::Manifest {
            name,
            app_name,
            redirect_url,
            token_rotation,
            output,
        } => {
            let grant = cluster.grant(&name).await?;
            let options = manifest::Options {
                app_name,
                redirect_url,
                token_rotation,
            };
            let built = manifest::build(&grant, &options)?;
            let text = match output {
                OutputFormat::Yaml => manifest::to_yaml(&built)?,
                OutputFormat::Json => manifest::to_json(&built)?,
            };
            print_out(&text)
        }
    }
}

fn print_out(text: &str) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(Error::Write)
}

/// Prints the link, then follows the grant with a watch until `wait` says it is over.
async fn authorize(
    cluster: &Cluster,
    name: &str,
    mut wait: Wait,
    timeout: Duration,
) -> Result<(), Error> {
    // Read once first, so an unknown grant or a missing CRD is reported as such.
    cluster.grant(name).await?;
    let mut display = Display::new(stdout_is_terminal());
    let mut last = String::from("nothing yet");
    let mut changes = watch_object(cluster.grants(), name)
        .default_backoff()
        .boxed();
    let followed = tokio::time::timeout(timeout, async {
        while let Some(observed) = changes.next().await {
            let grant = match observed {
                Ok(grant) => grant,
                // The watcher reconnects by itself; a refusal is final.
                Err(error) => {
                    if let kube::runtime::watcher::Error::InitialListFailed(e)
                    | kube::runtime::watcher::Error::WatchStartFailed(e) = error
                        && matches!(&e, kube::Error::Api(s) if s.code == 403 || s.code == 404)
                    {
                        return Err(cluster.refusal(
                            e,
                            name,
                            "watch slackoauthgrants",
                            "watch the grant",
                        ));
                    }
                    continue;
                }
            };
            match wait.observe(grant.as_ref()) {
                Step::Waiting { view, note } => {
                    last = view.summary();
                    if let Some(note) = note {
                        display.say(&format!("Note: {note}"));
                    }
                    if let Some(link) = &view.link {
                        display.link(link);
                    }
                    display.show(&view);
                }
                Step::Finished(outcome) => return Ok(outcome),
            }
        }
        Ok(Outcome::Deleted)
    })
    .await;
    display.finish();
    let outcome = match followed {
        Ok(outcome) => outcome?,
        Err(_) => {
            return Err(Error::TimedOut {
                name: name.to_owned(),
                after: humantime::format_duration(timeout).to_string(),
                last,
            });
        }
    };
    match outcome {
        Outcome::Approved { team } => {
            println!("Approved: grant {name} holds a token for {team}.");
            Ok(())
        }
        Outcome::NothingPending { team } => {
            println!("No approval is pending: grant {name} is Ready, with a token for {team}.");
            Ok(())
        }
        Outcome::Failed { reason, message } => Err(Error::GrantFailed {
            name: name.to_owned(),
            reason,
            message,
        }),
        Outcome::Deleted => Err(Error::Deleted {
            name: name.to_owned(),
        }),
    }
}

async fn status(cluster: &Cluster, name: &str) -> Result<(), Error> {
    let grant = cluster.grant(name).await?;
    let events = match grant.metadata.uid.as_deref() {
        Some(uid) => {
            let selector = format!("involvedObject.uid={uid}");
            let listed = Api::<Event>::namespaced(cluster.client.clone(), &cluster.namespace)
                .list(&ListParams::default().fields(&selector))
                .await
                .map_err(|e| cluster.refusal(e, name, "list events", "list the grant's Events"))?;
            listed.items.iter().map(EventLine::of).collect()
        }
        None => Vec::new(),
    };
    let events = layout::recent(events, EVENTS_SHOWN);
    print_out(&layout::render(&grant, &events, Timestamp::now()))
}

async fn reauthorize(
    cluster: &Cluster,
    name: &str,
    then_wait: bool,
    timeout: Duration,
) -> Result<(), Error> {
    cluster.grant(name).await?;
    let value = Timestamp::now().to_string();
    let patch = json!({ "metadata": { "annotations": { (annotations::REAUTHORIZE): value } } });
    cluster
        .grants()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| cluster.refusal(e, name, "patch slackoauthgrants", "annotate the grant"))?;
    println!(
        "Asked for a new approval of grant {name} ({}={value}); the current token keeps working until it is replaced.",
        annotations::REAUTHORIZE
    );
    if then_wait {
        authorize(cluster, name, Wait::expecting_pending(), timeout).await
    } else {
        Ok(())
    }
}

async fn revoke(cluster: &Cluster, name: &str, yes: bool, timeout: Duration) -> Result<(), Error> {
    let grant = cluster.grant(name).await?;
    let retain = grant.spec.deletion_policy == DeletionPolicy::Retain;
    if !yes {
        confirm(&grant, retain)?;
    }
    let grants = cluster.grants();
    if retain {
        let patch = json!({ "spec": { "deletionPolicy": "Revoke" } });
        grants
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| {
                cluster.refusal(e, name, "patch slackoauthgrants", "set the deletion policy")
            })?;
        println!("Set spec.deletionPolicy of grant {name} to Revoke (it was Retain).");
    }
    let has_finalizer = grant
        .finalizers()
        .iter()
        .any(|f| f == crate::api::FINALIZER);
    if !has_finalizer && grant.status.as_ref().is_some_and(|s| s.token.is_some()) {
        eprintln!(
            "Warning: grant {name} has no {} finalizer, so no operator will revoke its token: revoke it in Slack yourself.",
            crate::api::FINALIZER
        );
    }
    grants
        .delete(name, &DeleteParams::default())
        .await
        .map_err(|e| cluster.refusal(e, name, "delete slackoauthgrants", "delete the grant"))?;
    println!("Deleting grant {name}; waiting for the operator to revoke its token at Slack...");
    let mut changes = watch_object(grants, name).default_backoff().boxed();
    let mut last = String::from("deleting");
    let mut said = None;
    let gone = tokio::time::timeout(timeout, async {
        while let Some(observed) = changes.try_next().await.transpose() {
            let Ok(grant) = observed else { continue };
            let Some(grant) = grant else { return };
            let view = View::of(&grant);
            last = view.summary();
            if view.reason == reasons::REVOKE_PENDING && said.as_ref() != Some(&view.message) {
                println!("{}: {}", view.reason, view.message);
                said = Some(view.message.clone());
            }
        }
    })
    .await;
    match gone {
        Ok(()) => {
            println!("Grant {name} is gone: its token was revoked at Slack.");
            Ok(())
        }
        Err(_) => Err(Error::TimedOut {
            name: name.to_owned(),
            after: humantime::format_duration(timeout).to_string(),
            last,
        }),
    }
}

/// Asks on the terminal; refuses when nobody can be asked.
fn confirm(grant: &SlackOAuthGrant, retain: bool) -> Result<(), Error> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Error::ConfirmationUnavailable);
    }
    let name = grant.name_any();
    let team = super::pending::team_name(grant);
    let policy = if retain {
        " Its deletionPolicy is Retain: it will be set to Revoke first."
    } else {
        ""
    };
    let ready =
        super::pending::condition(grant, conditions::READY).is_some_and(|c| c.status == "True");
    let holds = if ready {
        format!("the token for {team}")
    } else {
        "its token, if it holds one,".to_owned()
    };
    eprint!(
        "Revoke {holds} at Slack and delete grant {}/{name}?{policy} Workloads using Secret {} lose access. [y/N] ",
        grant.namespace().unwrap_or_default(),
        grant.spec.secret.name
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(Error::ReadAnswer)?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(Error::Declined),
    }
}
