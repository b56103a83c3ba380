//! One callback from Slack, from its query to a page, with the token's custody in between.
//!
//! 1. Parse the query and verify the `state`'s signature (`state.rs`). A forged state is refused
//!    here, before any API call, log field or page text comes from it.
//! 2. Take a custody slot, or shed the request (503, at once) when all are taken.
//! 3. Hand the rest to a task of its own (a custody) that no client can cancel: a browser or
//!    proxy that disconnects only stops waiting for the page.
//! 4. The custody checks the state against the grant and claims the link (`status::claim`):
//!    the URL is removed and the exchange recorded, in one guarded patch, so of two callbacks
//!    with one `state` exactly one goes on, on any replica. The record is renewed while the
//!    custody works, so if this process dies the next leader sees it stop and warns that a
//!    token may be orphaned.
//! 5. Only then the attempt (`attempt.rs`) exchanges the code and stores the token, or revokes
//!    it.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use tokio::sync::oneshot;
use tracing::{Instrument, info, info_span, warn};

use super::{
    Callback,
    attempt::Attempt,
    cluster::Cluster,
    outcome::{Refusal, refusal_for},
    pages::Page,
    query::{Params, parse},
    state::AuthorizationState,
};
use crate::{authorization::state_of, controller::EXCHANGE_RENEW_EVERY, slack::SlackApi};

/// How long a browser waits for its page: long enough to ride out a short API server outage,
/// short enough for a proxy's usual 60 s read timeout. The custody goes on after that; the page
/// then says the approval was received and where to see the outcome.
pub const PAGE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(50);

pub async fn handle<S: SlackApi, C: Cluster>(callback: &Arc<Callback<S, C>>, query: &str) -> Page {
    let page = match respond(callback, query).await {
        Ok(page) => page,
        Err(refusal) => refusal.page(),
    };
    let outcome = match (&page.reason, page.success) {
        (_, true) => "Authorized",
        (Some(reason), false) => reason,
        (None, false) => "Refused",
    };
    callback.metrics.count_callback(outcome);
    page
}

async fn respond<S: SlackApi, C: Cluster>(
    callback: &Arc<Callback<S, C>>,
    query: &str,
) -> Result<Page, Refusal> {
    let params = parse(query).map_err(|_| Refusal::Malformed)?;
    let raw_state = params.state.clone().ok_or(Refusal::NoState)?;
    // Nothing in a state is used, not even for a log line, before its signature is checked.
    let state = callback
        .state_key
        .verify(&raw_state)
        .map_err(|_| Refusal::NotOurs)?;
    if Timestamp::now().as_second() >= state.expires_at {
        return Err(Refusal::Expired);
    }
    let Ok(slot) = callback.slots.clone().try_acquire_owned() else {
        warn!("every custody slot is taken; shedding a callback");
        return Err(Refusal::Busy);
    };
    let span = info_span!("callback", namespace = %state.namespace, grant = %state.name);
    let (answer, page) = oneshot::channel();
    let custody = Custody {
        callback: callback.clone(),
        params,
        raw_state,
        state,
    };
    callback.custody.spawn(
        async move {
            // The client may have gone; the outcome is on the grant either way.
            let _ = answer.send(custody.run().await.unwrap_or_else(Refusal::page));
            drop(slot);
        }
        .instrument(span),
    );
    match tokio::time::timeout(PAGE_DEADLINE, page).await {
        Ok(Ok(page)) => Ok(page),
        Ok(Err(_)) => Err(Refusal::Unavailable),
        Err(_) => Err(Refusal::StillWorking),
    }
}

/// One callback with a verified state, run as a task of its own.
struct Custody<S, C> {
    callback: Arc<Callback<S, C>>,
    params: Params,
    raw_state: String,
    state: AuthorizationState,
}

impl<S: SlackApi, C: Cluster> Custody<S, C> {
    async fn run(self) -> Result<Page, Refusal> {
        let cluster = &self.callback.cluster;
        let state = &self.state;
        let grant = match cluster.grant(&state.namespace, &state.name).await {
            // A grant being deleted takes no new token.
            Ok(Some(grant)) if grant.metadata.deletion_timestamp.is_none() => grant,
            Ok(_) => return Err(Refusal::NoLongerValid),
            Err(error) => {
                warn!(
                    error = &error as &dyn std::error::Error,
                    "failed to read the grant"
                );
                return Err(Refusal::Unavailable);
            }
        };
        let current = grant
            .status
            .as_ref()
            .and_then(|s| s.authorization_url.as_deref())
            .and_then(state_of);
        let now = Timestamp::now();
        let uid = grant.metadata.uid.as_deref().unwrap_or_default();
        let generation = grant.metadata.generation.unwrap_or_default();
        if let Err(mismatch) = state.check(
            &self.raw_state,
            uid,
            generation,
            current.as_deref(),
            now.as_second(),
        ) {
            info!(?mismatch, "callback refused");
            return Err(refusal_for(mismatch));
        }

        // Claim the link before anything else, so a second callback with it is refused, and
        // record the exchange so that a crash from here on is noticed.
        let holder = &self.callback.instance;
        let grant = match cluster.claim(&grant, holder, now).await {
            Ok(Some(claimed)) => claimed,
            Ok(None) => return Err(Refusal::NotCurrent),
            Err(error) => {
                warn!(
                    error = &error as &dyn std::error::Error,
                    "failed to claim the link"
                );
                return Err(Refusal::Unavailable);
            }
        };
        let attempt = Attempt::new(&self.callback, &grant);
        tokio::select! {
            result = attempt.run(self.params) => result,
            never = renew(cluster, &grant, holder) => match never {},
        }
    }
}

/// Renews the exchange record every [`EXCHANGE_RENEW_EVERY`] while the custody works; never
/// returns.
async fn renew<C: Cluster>(
    cluster: &C,
    grant: &crate::api::SlackOAuthGrant,
    holder: &str,
) -> std::convert::Infallible {
    loop {
        tokio::time::sleep(EXCHANGE_RENEW_EVERY).await;
        if let Err(error) = cluster.renew(grant, holder, Timestamp::now()).await {
            tracing::debug!(
                error = &error as &dyn std::error::Error,
                "failed to renew the exchange record"
            );
        }
    }
}
