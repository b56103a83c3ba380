//! The grant controller. For now it watches `SlackOAuthGrant`s and reports what it sees; the
//! authorization flow builds on this loop.

use std::sync::Arc;

use futures::StreamExt;
use kube::{
    Api, Client, ResourceExt,
    runtime::{Controller, controller::Action, watcher},
};
use tracing::{info, instrument, warn};

use crate::api::SlackOAuthGrant;

/// Errors from reconciling one grant.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read the grant's namespace: the grant is not namespaced")]
    MissingNamespace,
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
}

/// Runs the controller until the process is asked to stop.
pub async fn run(client: Client) {
    let grants = Api::<SlackOAuthGrant>::all(client.clone());
    let context = Arc::new(Context { client });
    Controller::new(grants, watcher::Config::default().any_semantic())
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(error = &error as &dyn std::error::Error, "reconcile failed");
            }
        })
        .await;
}

#[instrument(skip_all, fields(namespace = grant.namespace().as_deref().unwrap_or(""), grant = %grant.name_any()))]
async fn reconcile(grant: Arc<SlackOAuthGrant>, _context: Arc<Context>) -> Result<Action, Error> {
    grant.namespace().ok_or(Error::MissingNamespace)?;
    info!(
        generation = grant.metadata.generation,
        installation = ?grant.spec.installation,
        token = ?grant.spec.effective_token(),
        secret = %grant.spec.secret.name,
        "observed grant"
    );
    Ok(Action::await_change())
}

fn error_policy(_grant: Arc<SlackOAuthGrant>, _error: &Error, _context: Arc<Context>) -> Action {
    Action::await_change()
}
