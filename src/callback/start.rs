//! A visit to an approval link, `GET /oauth/start/<token>`: from memory, with no request to the
//! API server and nothing written, since chat apps fetch a pasted link to preview it and anyone
//! may open it.
//!
//! 1. A token this operator did not sign gets the one generic answer, before any lookup.
//! 2. A genuine token no grant publishes any more (approved, re-authorized, deleted) is "no
//!    longer needed".
//! 3. A grant with no approval pending, an exchange in flight, or a link past its lifetime says
//!    so, and what the grant is.
//! 4. Otherwise a fresh `state`, bound to the grant's UID, generation and this link, is signed and
//!    the browser is sent on to Slack's consent page with it.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;
use tracing::{debug, info};

use super::{
    Callback,
    cluster::Cluster,
    flow::not_pending,
    link::link_id,
    outcome::Refusal,
    pages::{self, About},
    state::AuthorizationState,
};
use crate::{authorization, slack::SlackApi};

/// How long a genuine token that no grant publishes is looked for again before it is "no longer
/// needed": a link published a moment ago may not have reached this replica's watch yet.
const WATCH_LAG: Duration = Duration::from_secs(3);

pub async fn visit<S: SlackApi, C: Cluster>(callback: &Callback<S, C>, token: &str) -> Response {
    let (outcome, response) = match respond(callback, token).await {
        Ok(location) => ("Redirected", pages::redirect(&location)),
        Err(refused) => {
            let (refusal, about) = *refused;
            debug!(?refusal, "approval link visit refused");
            let outcome = match refusal {
                Refusal::NotOurs => "Forged",
                Refusal::NoLongerNeeded => "NoLongerNeeded",
                Refusal::NotPending => "NotPending",
                Refusal::InProgress => "InProgress",
                Refusal::LinkExpired => "Expired",
                _ => "Unavailable",
            };
            (outcome, refusal.page().about(about).into_response())
        }
    };
    callback.metrics.count_visit(outcome);
    response
}

/// A refusal, with the approval it is about once the link named a grant.
type Refused = Box<(Refusal, Option<About>)>;

/// Where to send the browser: Slack's consent page with a fresh state.
async fn respond<S: SlackApi, C: Cluster>(
    callback: &Callback<S, C>,
    token: &str,
) -> Result<String, Refused> {
    // Nothing is looked up for a token this operator did not sign.
    callback
        .state_key
        .verify_link(token)
        .map_err(|_| Box::new((Refusal::NotOurs, None)))?;
    let give_up = Instant::now() + WATCH_LAG;
    let grant = loop {
        let found = callback
            .cluster
            .linked(token)
            .map_err(|_| Box::new((Refusal::Starting, None)))?;
        match found {
            Some(grant) => break grant,
            None if Instant::now() < give_up => tokio::time::sleep(WATCH_LAG / 30).await,
            None => return Err(Box::new((Refusal::NoLongerNeeded, None))),
        }
    };
    if grant.metadata.deletion_timestamp.is_some() {
        return Err(Box::new((Refusal::NoLongerNeeded, None)));
    }
    let refuse = |refusal| Box::new((refusal, Some(About::of(&grant))));
    let status = grant.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    if not_pending(&grant) {
        return Err(refuse(Refusal::NotPending));
    }
    if status.exchange.is_some() {
        return Err(refuse(Refusal::InProgress));
    }
    if status
        .authorization_expires_at
        .as_ref()
        .is_some_and(|at| at.0 <= now)
    {
        return Err(refuse(Refusal::LinkExpired));
    }
    let namespace = grant.metadata.namespace.as_deref().unwrap_or_default();
    let name = grant.metadata.name.as_deref().unwrap_or_default();
    let state = AuthorizationState::issue(
        namespace,
        name,
        grant.metadata.uid.as_deref().unwrap_or_default(),
        grant.metadata.generation.unwrap_or_default(),
        &link_id(token),
        now.as_second(),
    );
    info!(
        namespace,
        grant = name,
        "approval link opened; sending the browser to Slack"
    );
    let config = &callback.config;
    Ok(authorization::authorization_url(
        &config.authorize_url,
        &config.redirect_uri,
        &grant.spec,
        &callback.state_key.sign(&state),
    )
    .to_string())
}
