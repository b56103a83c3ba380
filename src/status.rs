//! Every write to a grant's status, and nothing else, happens here: the controller's update, and
//! the callback's claim of a link, the renewal of its exchange record and the record of a failed
//! attempt. So there is one conflict rule, one set of deadlines, and one place that knows which
//! fields each writer owns.
//!
//! - The controller replaces the whole status, carrying the resourceVersion it planned from: a
//!   conflict means its view was stale, and it plans again from a fresh read.
//! - The callback changes only what it owns, with JSON patches guarded by `test` operations, or
//!   by a replace against a fresh read (for the failure record, which must keep the rest).
//!   The claim of an approval attempt leaves the link published: the same link may be opened
//!   again if the attempt fails.

use std::time::Duration;

use json_patch::{
    AddOperation, Patch as JsonPatch, PatchOperation, ReplaceOperation, TestOperation,
    jsonptr::PointerBuf,
};
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::Value;

use crate::{
    api::{ExchangeStatus, SlackOAuthGrant, SlackOAuthGrantStatus, UsedState, conditions, reasons},
    retry::Backoff,
};

/// The most approval attempts a grant remembers at once (one per state, for as long as the
/// state is valid); beyond that a new attempt waits until older states expire.
pub const MAX_USED_STATES: usize = 16;

/// Deadline of each request made here.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a lost race is retried with a fresh read.
const CONFLICT_RETRIES: u32 = 5;

/// A status write that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to write the grant's status")]
    Kube(#[source] Box<kube::Error>),
    #[error("failed to write the grant's status within {CALL_TIMEOUT:?}")]
    TimedOut,
}

impl Error {
    /// A conflict: someone else wrote the grant since it was read.
    pub fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }

    /// The API server's HTTP status, when it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Kube(error) => match error.as_ref() {
                kube::Error::Api(status) => Some(status.code),
                _ => None,
            },
            Self::TimedOut => None,
        }
    }
}

async fn call<T>(request: impl Future<Output = Result<T, kube::Error>>) -> Result<T, Error> {
    match tokio::time::timeout(CALL_TIMEOUT, request).await {
        Ok(result) => result.map_err(|e| Error::Kube(Box::new(e))),
        Err(_) => Err(Error::TimedOut),
    }
}

/// The controller's write: `grant`'s status becomes `status`, if nobody wrote the grant since it
/// was read (a conflict is returned, not retried: the controller plans again).
pub async fn update(
    grants: &Api<SlackOAuthGrant>,
    grant: &SlackOAuthGrant,
    status: SlackOAuthGrantStatus,
) -> Result<(), Error> {
    let mut updated = grant.clone();
    updated.status = Some(status);
    updated.metadata.managed_fields = None;
    call(grants.replace_status(&grant.name_any(), &PostParams::default(), &updated)).await?;
    Ok(())
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn value<T: serde::Serialize>(v: &T) -> Value {
    // Status types are plain data: serializing them cannot fail.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The claim: records the state as used and the exchange as started, in one patch guarded by
/// the resourceVersion it was computed from. `None` when the grant already remembers
/// [`MAX_USED_STATES`] unexpired states.
pub(crate) fn claim_patch(
    grant: &SlackOAuthGrant,
    exchange: &ExchangeStatus,
    used: &UsedState,
    now: Timestamp,
) -> Option<JsonPatch> {
    let status = grant.status.clone().unwrap_or_default();
    let mut used_states: Vec<UsedState> = status
        .used_states
        .iter()
        .filter(|u| u.expires_at.0 > now)
        .cloned()
        .collect();
    if used_states.len() >= MAX_USED_STATES {
        return None;
    }
    used_states.push(used.clone());
    let conditions = with_attempt(
        &status.conditions,
        reasons::EXCHANGING,
        "A Slack owner approved; the operator is exchanging the code and writing the Secret.",
        grant.metadata.generation.unwrap_or_default(),
        now,
    );
    Some(JsonPatch(vec![
        PatchOperation::Test(TestOperation {
            path: pointer(&["metadata", "resourceVersion"]),
            value: value(&grant.resource_version()),
        }),
        PatchOperation::Add(AddOperation {
            path: pointer(&["status", "usedStates"]),
            value: value(&used_states),
        }),
        PatchOperation::Add(AddOperation {
            path: pointer(&["status", "conditions"]),
            value: value(&conditions),
        }),
        PatchOperation::Add(AddOperation {
            path: pointer(&["status", "exchange"]),
            value: value(exchange),
        }),
        PatchOperation::Add(AddOperation {
            path: pointer(&["status", "reason"]),
            value: Value::String(reasons::EXCHANGING.to_owned()),
        }),
    ]))
}

/// What became of a claim.
#[derive(Debug)]
pub enum Claim {
    /// The attempt is `holder`'s: the grant as the claim left it.
    Claimed(Box<SlackOAuthGrant>),
    /// Another callback (or the controller) changed the grant first, so that `still_valid` no
    /// longer holds, or the grant is gone.
    Lost,
    /// The grant remembers [`MAX_USED_STATES`] unexpired attempts already.
    TooManyAttempts,
}

/// Claims an approval attempt on `grant` for `holder`, recording `used` (its state) so that the
/// state works once. A lost race re-reads the grant and tries again while `still_valid` says the
/// state still holds for the grant as it is now.
pub async fn claim(
    grants: &Api<SlackOAuthGrant>,
    grant: &SlackOAuthGrant,
    holder: &str,
    used: &UsedState,
    still_valid: impl Fn(&SlackOAuthGrant) -> bool,
    now: Timestamp,
) -> Result<Claim, Error> {
    let exchange = ExchangeStatus {
        holder: holder.to_owned(),
        started_at: Time(now),
        renewed_at: Time(now),
    };
    let name = grant.name_any();
    let mut current = grant.clone();
    let mut backoff = Backoff::conflict();
    for _ in 0..CONFLICT_RETRIES {
        let Some(patch) = claim_patch(&current, &exchange, used, now) else {
            return Ok(Claim::TooManyAttempts);
        };
        let patch = Patch::<()>::Json(patch);
        match call(grants.patch_status(&name, &PatchParams::default(), &patch)).await {
            Ok(claimed) => return Ok(Claim::Claimed(Box::new(claimed))),
            Err(error) if error.code() == Some(404) => return Ok(Claim::Lost),
            // 422: the resourceVersion `test` failed.
            Err(error) if matches!(error.code(), Some(409 | 422)) => {
                let Some(fresh) = call(grants.get_opt(&name)).await? else {
                    return Ok(Claim::Lost);
                };
                if !still_valid(&fresh) {
                    return Ok(Claim::Lost);
                }
                current = fresh;
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(Claim::Lost)
}

/// Renews `holder`'s exchange record, only if it is still `holder`'s: a finished or superseded
/// exchange is never brought back.
pub async fn renew(
    grants: &Api<SlackOAuthGrant>,
    name: &str,
    holder: &str,
    now: Timestamp,
) -> Result<(), Error> {
    let patch = JsonPatch(vec![
        PatchOperation::Test(TestOperation {
            path: pointer(&["status", "exchange", "holder"]),
            value: Value::String(holder.to_owned()),
        }),
        PatchOperation::Replace(ReplaceOperation {
            path: pointer(&["status", "exchange", "renewedAt"]),
            value: value(&Time(now)),
        }),
    ]);
    call(grants.patch_status(name, &PatchParams::default(), &Patch::<()>::Json(patch))).await?;
    Ok(())
}

/// Records a failed attempt: `Ready` becomes `False` with `reason`, and the exchange record ends.
/// Conflicts are retried with fresh reads, but a failure is recorded only against the generation
/// it happened in, never a newer one.
pub async fn record_failure(
    grants: &Api<SlackOAuthGrant>,
    grant: &SlackOAuthGrant,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> Result<(), Error> {
    let name = grant.name_any();
    let mut current = grant.clone();
    for _ in 0..CONFLICT_RETRIES {
        let mut status = current.status.clone().unwrap_or_default();
        let generation = grant.metadata.generation.unwrap_or_default();
        status.conditions = with_attempt(&status.conditions, reason, message, generation, now);
        status.reason = Some(reason.to_owned());
        status.exchange = None;
        match update(grants, &current, status).await {
            Ok(()) => return Ok(()),
            Err(error) if error.is_conflict() => {
                current = call(grants.get(&name)).await?;
                if current.metadata.generation != grant.metadata.generation {
                    return Ok(());
                }
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// `conditions` with an approval attempt's `reason` recorded, as the controller plans it (so
/// the reconcile the write wakes has nothing to change): on `AuthorizationPending`, which stays
/// `True` while the link is out, and also on `Ready` unless a working token keeps it `True` (a
/// re-authorization, a spec change). Each condition keeps its place.
pub fn with_attempt(
    conditions: &[Condition],
    reason: &str,
    message: &str,
    generation: i64,
    now: Timestamp,
) -> Vec<Condition> {
    let ready = conditions.iter().find(|c| c.type_ == conditions::READY);
    let mut updated = if ready.is_none_or(|c| c.status != "True") {
        with_ready(conditions, reason, message, generation, now)
    } else {
        conditions.to_vec()
    };
    let previous = updated
        .iter()
        .find(|c| c.type_ == conditions::AUTHORIZATION_PENDING);
    let mut pending =
        conditions::ready(previous, true, reason, message.to_owned(), generation, now);
    pending.type_ = conditions::AUTHORIZATION_PENDING.to_owned();
    match updated
        .iter_mut()
        .find(|c| c.type_ == conditions::AUTHORIZATION_PENDING)
    {
        Some(slot) => *slot = pending,
        None => updated.push(pending),
    }
    updated
}

/// `conditions` with `Ready` set to `False` for `reason`, first.
pub fn with_ready(
    conditions: &[Condition],
    reason: &str,
    message: &str,
    generation: i64,
    now: Timestamp,
) -> Vec<Condition> {
    let previous = conditions.iter().find(|c| c.type_ == conditions::READY);
    let ready = conditions::ready(previous, false, reason, message.to_owned(), generation, now);
    let mut updated: Vec<Condition> = conditions
        .iter()
        .filter(|c| c.type_ != conditions::READY)
        .cloned()
        .collect();
    updated.insert(0, ready);
    updated
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn failure_keeps_the_transition_time_while_ready_stays_false() {
        let then = Timestamp::from_second(1_000).expect("time");
        let now = Timestamp::from_second(2_000).expect("time");
        let first = with_ready(&[], reasons::EXCHANGING, "x", 1, then);
        let second = with_ready(&first, reasons::ACCESS_DENIED, "y", 1, now);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].reason, reasons::ACCESS_DENIED);
        assert_eq!(second[0].last_transition_time, Time(then));
    }

    #[test]
    fn the_claim_is_guarded_by_the_resource_version_and_records_the_state_and_the_exchange() {
        let grant: SlackOAuthGrant = serde_json::from_value(json!({
            "apiVersion": "slack-oauth-operator.io/v1alpha1", "kind": "SlackOAuthGrant",
            "metadata": { "name": "scim", "namespace": "pf", "resourceVersion": "42", "generation": 3 },
            "spec": { "clientID": "1.2", "clientSecretRef": { "name": "a" }, "secret": { "name": "t" } },
            "status": { "authorizationURL": "https://slack.com/oauth/v2/authorize?a=1&state=s" }
        }))
        .expect("grant");
        let now = Timestamp::from_second(1_000).expect("time");
        let exchange = ExchangeStatus {
            holder: "pod/1".into(),
            started_at: Time(now),
            renewed_at: Time(now),
        };
        let used = |id: &str, at: i64| UsedState {
            id: id.into(),
            expires_at: Time(Timestamp::from_second(at).expect("time")),
        };
        let mut grant = grant;
        grant.status.get_or_insert_default().used_states =
            vec![used("old", 999), used("live", 1_500)];
        let patch = claim_patch(&grant, &exchange, &used("new", 2_800), now).expect("room");
        let patch = serde_json::to_value(patch).expect("json");
        assert_eq!(
            patch[0],
            json!({ "op": "test", "path": "/metadata/resourceVersion", "value": "42" })
        );
        assert_eq!(patch[1]["path"], "/status/usedStates");
        let ids: Vec<&str> = patch[1]["value"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|u| u["id"].as_str())
            .collect();
        assert_eq!(ids, ["live", "new"], "expired entries dropped");
        assert_eq!(patch[2]["value"][0]["reason"], "Exchanging");
        assert_eq!(patch[3]["path"], "/status/exchange");
        assert_eq!(patch[3]["value"]["holder"], "pod/1");
        assert!(
            !patch.to_string().contains("authorizationURL"),
            "the link stays published"
        );
    }

    #[test]
    fn a_grant_remembers_a_bounded_number_of_attempts() {
        let now = Timestamp::from_second(1_000).expect("time");
        let later = Time(Timestamp::from_second(2_000).expect("time"));
        let mut grant = SlackOAuthGrant::new(
            "g",
            serde_json::from_value(json!({
                "clientID": "1.2", "clientSecretRef": { "name": "a" }, "secret": { "name": "t" }
            }))
            .expect("spec"),
        );
        grant.status.get_or_insert_default().used_states = (0..MAX_USED_STATES)
            .map(|i| UsedState {
                id: i.to_string(),
                expires_at: later.clone(),
            })
            .collect();
        let exchange = ExchangeStatus {
            holder: "pod/1".into(),
            started_at: Time(now),
            renewed_at: Time(now),
        };
        let new = UsedState {
            id: "new".into(),
            expires_at: later,
        };
        assert!(claim_patch(&grant, &exchange, &new, now).is_none());
    }
}
