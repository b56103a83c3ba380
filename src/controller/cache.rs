//! When a reconcile may read a grant's token Secret and record from the controller's caches
//! (`crate::cache`) instead of asking the API server: the grants' token Secrets (the
//! label-selected watch in each watched namespace) and their token records (a watch of the
//! record label in the operator's namespace). A restart then lists each kind once and asks
//! nothing per grant.
//!
//! A cache may lag the API server by a moment, so the controller acts on it only where that
//! cannot matter: when the cached Secrets show a grant that needs no write ([`settled`]). Any
//! other view (a Secret missing, edited or behind, a token to refresh, an exchange in flight, a
//! spec not planned for yet) is read again from the API server before anything is written. What
//! a lagging cache hides then reaches the controller as a watch event of its own, which
//! reconciles the grant again.

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};

use super::EXCHANGE_ORPHANED_AFTER;
use crate::{
    api::{SlackOAuthGrant, conditions, labels, reasons},
    authorization::{holds, manages},
    record::{RECORD_LABEL, TokenRecord},
};

/// The grants' token Secrets: the operator's, without its token records.
pub fn token_secret_selector() -> String {
    format!(
        "{}={},!{RECORD_LABEL}",
        labels::MANAGED_BY,
        labels::OPERATOR
    )
}

/// The token records, in the operator's namespace.
pub fn record_selector() -> String {
    format!("{RECORD_LABEL}=true")
}

/// Whether the cached token Secret (`consumer`) and record of `grant` can stand in for reads
/// from the API server: they show a grant that needs no write of its Secrets, and are no older
/// than what its status already reports.
///
/// - No Secret and no record: a grant waiting for its first approval, that nothing may be in
///   the way of (not one that found someone else's Secret under its name, or adopts one: those
///   Secrets are not ours, so not in the cache). An exchange may be in flight: it is planned as
///   one, and the Secrets it writes then wake the grant again.
/// - The grant's own Secret holding the record's token: a grant whose token is kept, with no
///   refresh due, and the record at least as new as the revision the status reports, so that
///   nothing is ever delivered from a record older than one delivered before.
///
/// Either way the status must have been planned for the current spec (`observedGeneration`):
/// a new grant, or a spec that names another Secret, is always read from the API server first.
/// So is a grant whose exchange looks orphaned: warning that a token may be lost is decided on
/// what the API server holds.
pub fn settled(
    grant: &SlackOAuthGrant,
    consumer: Option<&Secret>,
    record: Option<&TokenRecord>,
    now: Timestamp,
) -> bool {
    let Some(status) = grant.status.as_ref() else {
        return false;
    };
    let orphaned = status.exchange.as_ref().is_some_and(|e| {
        std::time::Duration::try_from(now.duration_since(e.renewed_at.0))
            .is_ok_and(|idle| idle >= EXCHANGE_ORPHANED_AFTER)
    });
    if status.observed_generation != grant.metadata.generation || orphaned {
        return false;
    }
    let reported = status.token.as_ref().map(|t| t.revision);
    match (consumer, record) {
        (None, None) => {
            let in_the_way = status.conditions.iter().any(|c| {
                c.type_ == conditions::READY
                    && matches!(
                        c.reason.as_str(),
                        reasons::SECRET_CONFLICT
                            | reasons::ADOPTION_PENDING
                            | reasons::ADOPTION_REFUSED
                    )
            });
            reported.is_none() && !grant.spec.secret.adopt && !in_the_way
        }
        (Some(secret), Some(record)) => {
            manages(secret, grant)
                && holds(secret, grant, record)
                && reported.is_none_or(|revision| record.revision >= revision)
                && record.refresh_at().is_none_or(|at| at > now)
        }
        _ => false,
    }
}

/// Whether a grant that is not [`settled`], and whose record the cache does not show, can be
/// taken to have none without asking: a grant with no status yet has never published a link, so
/// no approval can have made it a record (records are named from the grant's UID, so not even
/// a deleted grant of the same name's counts). A new grant then costs no read of a record.
pub fn unrecorded(grant: &SlackOAuthGrant) -> bool {
    grant.status.is_none()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;
    use serde_json::json;

    use super::*;
    use crate::{api::InstallationStatus, authorization::Approved};

    const NOW: i64 = 1_800_000_000;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("time")
    }

    /// A grant with `status` (JSON), at generation 1.
    fn grant(status: serde_json::Value) -> SlackOAuthGrant {
        serde_json::from_value(json!({
            "apiVersion": "slack-oauth-operator.io/v1alpha1",
            "kind": "SlackOAuthGrant",
            "metadata": { "name": "scim", "namespace": "pf", "uid": "uid-1", "generation": 1 },
            "spec": {
                "clientID": "1.2",
                "clientSecretRef": { "name": "app" },
                "secret": { "name": "slack-token" }
            },
            "status": status
        }))
        .expect("grant")
    }

    fn ready(revision: u64) -> serde_json::Value {
        json!({
            "observedGeneration": 1,
            "token": { "revision": revision, "issuedAt": at(NOW).to_string() },
            "conditions": [{ "type": "Ready", "status": "True", "reason": "Authorized",
                             "message": "", "lastTransitionTime": at(NOW).to_string() }]
        })
    }

    fn waiting(reason: &str) -> serde_json::Value {
        json!({
            "observedGeneration": 1,
            "conditions": [{ "type": "Ready", "status": "False", "reason": reason,
                             "message": "", "lastTransitionTime": at(NOW).to_string() }]
        })
    }

    /// The record of an approval of `grant`, `previous` approvals ago; rotating tokens expire.
    fn record(grant: &SlackOAuthGrant, approvals: u64, expires_in: Option<u64>) -> TokenRecord {
        let mut record: Option<TokenRecord> = None;
        for i in 0..approvals {
            let approved = Approved {
                token: SecretString::from(format!("xoxp-{i}")),
                refresh_token: expires_in.map(|_| SecretString::from(format!("xoxe-{i}"))),
                expires_in,
                installation: InstallationStatus::default(),
            };
            record = Some(TokenRecord::approved(
                grant,
                &approved,
                record.as_ref(),
                at(NOW),
                Duration::from_secs(600),
            ));
        }
        record.expect("at least one approval")
    }

    #[test]
    fn a_ready_grant_whose_secret_holds_its_record_reads_from_the_caches() {
        let grant = grant(ready(1));
        let record = record(&grant, 1, None);
        let secret = crate::authorization::token_secret(&grant, &record);
        assert!(settled(&grant, Some(&secret), Some(&record), at(NOW)));
    }

    /// `grant` with an exchange in flight, last renewed at `renewed`.
    fn exchanging(mut grant: SlackOAuthGrant, renewed: i64) -> SlackOAuthGrant {
        grant.status.as_mut().expect("status").exchange = Some(
            serde_json::from_value(json!({
                "holder": "op-1", "startedAt": at(renewed).to_string(),
                "renewedAt": at(renewed).to_string()
            }))
            .expect("exchange"),
        );
        grant
    }

    #[test]
    fn a_grant_waiting_for_its_first_approval_reads_from_the_caches() {
        let grant = grant(waiting("AwaitingAuthorization"));
        assert!(settled(&grant, None, None, at(NOW)));
        let claimed = exchanging(grant, NOW - 5);
        assert!(
            settled(&claimed, None, None, at(NOW)),
            "an exchange in flight"
        );
    }

    #[test]
    fn only_a_grant_with_no_status_is_taken_to_have_no_record() {
        let mut new = grant(json!(null));
        new.status = None;
        assert!(unrecorded(&new));
        for status in [waiting("AwaitingAuthorization"), ready(1)] {
            assert!(!unrecorded(&grant(status)));
        }
    }

    /// What a case shows: its name, the grant, the cached Secret and record, and when.
    type Case<'a> = (
        &'a str,
        &'a SlackOAuthGrant,
        Option<&'a Secret>,
        Option<&'a TokenRecord>,
        i64,
    );

    #[test]
    fn anything_to_act_on_is_read_from_the_api_server() {
        let fresh = grant(ready(2));
        let record_2 = record(&fresh, 2, None);
        let secret_2 = crate::authorization::token_secret(&fresh, &record_2);
        let record_1 = record(&fresh, 1, None);
        let secret_1 = crate::authorization::token_secret(&fresh, &record_1);
        let mut new_spec = fresh.clone();
        new_spec.metadata.generation = Some(2);
        let orphaned = exchanging(fresh.clone(), NOW - 60);
        let mut foreign = secret_2.clone();
        foreign.metadata.owner_references = None;
        let rotating = record(&fresh, 2, Some(43_200));
        let rotating_secret = crate::authorization::token_secret(&fresh, &rotating);
        let mut adopting = grant(waiting("AwaitingAuthorization"));
        adopting.spec.secret.adopt = true;
        let cases: [Case; 10] = [
            ("no status yet", &grant(json!(null)), None, None, NOW),
            (
                "a spec not planned for",
                &new_spec,
                Some(&secret_2),
                Some(&record_2),
                NOW,
            ),
            (
                "an exchange orphaned",
                &orphaned,
                Some(&secret_2),
                Some(&record_2),
                NOW,
            ),
            ("the Secret gone", &fresh, None, Some(&record_2), NOW),
            (
                "a Secret without a record",
                &fresh,
                Some(&secret_2),
                None,
                NOW,
            ),
            (
                "a Secret behind its record",
                &fresh,
                Some(&secret_1),
                Some(&record_2),
                NOW,
            ),
            (
                "a record older than the status reports",
                &fresh,
                Some(&secret_1),
                Some(&record_1),
                NOW,
            ),
            (
                "someone else's Secret",
                &fresh,
                Some(&foreign),
                Some(&record_2),
                NOW,
            ),
            (
                "a refresh due",
                &fresh,
                Some(&rotating_secret),
                Some(&rotating),
                NOW + 43_200,
            ),
            ("a Secret to adopt", &adopting, None, None, NOW),
        ];
        for (case, grant, secret, record, now) in cases {
            assert!(!settled(grant, secret, record, at(now)), "{case}");
        }
        let conflict = grant(waiting("SecretConflict"));
        assert!(
            !settled(&conflict, None, None, at(NOW)),
            "a Secret in the way"
        );
        let token_reported = grant(ready(1));
        assert!(
            !settled(&token_reported, None, None, at(NOW)),
            "a token the status reports, gone from both caches"
        );
    }
}
