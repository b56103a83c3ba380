//! One callback from Slack, from its query to a page, with the token's custody in between.
//!
//! 1. Parse the query and verify the `state`'s signature (`state.rs`). A forged state is refused
//!    here, before any API call, log field or page text comes from it.
//! 2. Take a custody slot, or shed the request (503, at once) when all are taken.
//! 3. Hand the rest to a task of its own (a custody) that no client can cancel: a browser or
//!    proxy that disconnects only stops waiting for the page.
//! 4. The custody checks the state against the grant (the link it publishes, the states already
//!    used, an exchange in flight) and claims the attempt (`status::claim`): the state is
//!    recorded as used and the exchange as started, in one guarded patch, so of two callbacks
//!    with one `state` exactly one goes on, on any replica. The record is renewed while the
//!    custody works, so if this process dies the next leader sees it stop and warns that a
//!    token may be orphaned.
//! 5. Only then the attempt (`attempt.rs`) exchanges the code and stores the token, or revokes
//!    it.
//!
//! A refresh of the success page (its state used, its grant since approved) shows the success
//! again, and changes nothing.

use std::sync::Arc;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use tokio::sync::oneshot;
use tracing::{Instrument, info, info_span, warn};

use super::{
    Callback,
    attempt::Attempt,
    cluster::{Claim, Cluster},
    link::{link_id, published_token},
    outcome::{self, Refusal, refusal_for},
    pages::{About, Page},
    query::{Params, parse},
    state::{self, AuthorizationState, Mismatch},
};
use crate::{
    api::{SlackOAuthGrant, UsedState, conditions},
    authorization::team_label,
    controller::EXCHANGE_RENEW_EVERY,
    slack::SlackApi,
};

/// How long a browser waits for its page: long enough to ride out a short API server outage,
/// short enough for a proxy's usual 60 s read timeout. The custody goes on after that; the page
/// then says the approval was received and where to see the outcome.
pub const PAGE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(50);

pub async fn handle<S: SlackApi, C: Cluster>(callback: &Arc<Callback<S, C>>, query: &str) -> Page {
    let page = match respond(callback, query).await {
        Ok(page) => page,
        Err(refusal) => refusal.page(),
    };
    let outcome = match (&page.reason, page.is_success()) {
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
    let Ok(slot) = callback.slots.clone().try_acquire_owned() else {
        warn!("every custody slot is taken; shedding a callback");
        return Err(Refusal::Busy);
    };
    let span = info_span!("callback", namespace = %state.namespace, grant = %state.name);
    let (answer, page) = oneshot::channel();
    let custody = Custody {
        callback: callback.clone(),
        params,
        state,
    };
    callback.custody.spawn(
        async move {
            // The client may have gone; the outcome is on the grant either way.
            let _ = answer.send(custody.run().await);
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

/// What a state is checked against: the grant as it is now.
fn view(grant: &SlackOAuthGrant) -> state::Grant<'_> {
    let status = grant.status.as_ref();
    state::Grant {
        uid: grant.metadata.uid.as_deref().unwrap_or_default(),
        generation: grant.metadata.generation.unwrap_or_default(),
        link: status
            .and_then(|s| s.authorization_url.as_deref())
            .and_then(published_token)
            .map(link_id),
        used: status
            .map(|s| s.used_states.iter().map(|u| u.id.as_str()).collect())
            .unwrap_or_default(),
        exchanging: status.is_some_and(|s| s.exchange.is_some()),
    }
}

/// Whether the grant was approved (and is Ready) with an approval made while `state` was valid:
/// the page a refresh of the success page shows.
fn approved_since(state: &AuthorizationState, grant: &SlackOAuthGrant) -> Option<String> {
    let status = grant.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::READY)
        .is_some_and(|c| c.status == "True");
    let installation = status.installation.as_ref()?;
    let at = installation.authorized_at.as_ref()?.0.as_second();
    let during = state.issued_at <= at && at <= state.expires_at + 600;
    (ready && during).then(|| team_label(installation))
}

/// One callback with a verified state, run as a task of its own.
struct Custody<S, C> {
    callback: Arc<Callback<S, C>>,
    params: Params,
    state: AuthorizationState,
}

impl<S: SlackApi, C: Cluster> Custody<S, C> {
    async fn run(self) -> Page {
        let cluster = &self.callback.cluster;
        let state = &self.state;
        let now = Timestamp::now();
        // The watch's copy of the grant serves only a state it accepts: the claim that follows
        // is guarded by the copy's resourceVersion, so a stale one costs a read there. Any
        // refusal is decided on a fresh read instead.
        let cached = cluster
            .cached_grant(&state.namespace, &state.name)
            .filter(|grant| grant.metadata.deletion_timestamp.is_none())
            .filter(|grant| state.check(&view(grant), now.as_second()).is_ok());
        let read = match cached {
            Some(grant) => Ok(Some(SlackOAuthGrant::clone(&grant))),
            None => cluster.grant(&state.namespace, &state.name).await,
        };
        let grant = match read {
            // A grant being deleted takes no new token.
            Ok(Some(grant)) if grant.metadata.deletion_timestamp.is_none() => grant,
            Ok(_) => return Refusal::NoLongerValid.page(),
            Err(error) => {
                warn!(
                    error = &error as &dyn std::error::Error,
                    "failed to read the grant"
                );
                return Refusal::Unavailable.page();
            }
        };
        let about = Some(About::of(&grant));
        if let Err(mismatch) = state.check(&view(&grant), now.as_second()) {
            // A refresh of the success page: its state is used (or its link gone), and the
            // grant was approved while it was valid.
            if matches!(
                mismatch,
                Mismatch::Used | Mismatch::NotCurrent | Mismatch::Expired
            ) && let Some(team) = approved_since(state, &grant)
            {
                return outcome::already_approved(&team).about(about);
            }
            info!(?mismatch, "callback refused");
            let refusal = match mismatch {
                Mismatch::NotCurrent if not_pending(&grant) => Refusal::NotPending,
                mismatch => refusal_for(mismatch),
            };
            return refusal.page().about(about);
        }

        // Claim the attempt before anything else, so a second callback with this state is
        // refused, and record the exchange so that a crash from here on is noticed.
        let holder = &self.callback.instance;
        let used = UsedState {
            id: state.id(),
            expires_at: Time(Timestamp::from_second(state.expires_at).unwrap_or(now)),
        };
        let still_valid =
            |fresh: &SlackOAuthGrant| state.check(&view(fresh), now.as_second()).is_ok();
        let grant = match cluster.claim(&grant, holder, &used, still_valid, now).await {
            Ok(Claim::Claimed(claimed)) => *claimed,
            Ok(Claim::Lost) => return Refusal::Used.page().about(about),
            Ok(Claim::TooManyAttempts) => return Refusal::TooManyAttempts.page().about(about),
            Err(error) => {
                warn!(
                    error = &error as &dyn std::error::Error,
                    "failed to claim the approval attempt"
                );
                return Refusal::Unavailable.page().about(about);
            }
        };
        let attempt = Attempt::new(&self.callback, &grant);
        let page = tokio::select! {
            result = attempt.run(self.params) => result.unwrap_or_else(Refusal::page),
            never = renew(cluster, &grant, holder) => match never {},
        };
        page.about(about)
    }
}

/// Whether the grant has no approval pending (`AuthorizationPending` is not `True`).
pub fn not_pending(grant: &SlackOAuthGrant) -> bool {
    !grant.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == conditions::AUTHORIZATION_PENDING && c.status == "True")
    })
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
