//! What a grant's status says about its approval, and how a wait for one ends. No I/O: the
//! commands feed [`Wait::observe`] each version of the grant a watch delivers.
//!
//! How status shows an approval (src/status.rs, src/controller/plan.rs):
//! - pending: `AuthorizationPending` is `True`; a link is in `status.authorizationURL`, or a
//!   Slack owner approved and the operator is exchanging the code (reason `Exchanging`).
//! - completed: `AuthorizationPending` turns `False` (`UpToDate`) and `Ready` is `True`.
//! - a failed attempt: the condition the attempt is recorded on (`Ready` while it is `False`,
//!   `AuthorizationPending` while a working token keeps `Ready` `True`) takes one of
//!   [`reasons::ATTEMPT_FAILURES`], and the same link stays published for the next attempt. So a
//!   failure is a change *to* such a reason seen during the wait; one already there when the
//!   wait starts is an earlier attempt's, shown as a note.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::api::{Phase, SlackOAuthGrant, conditions, reasons};

/// What the grant shows now, for the spinner or a progress line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// `status.phase`, or `Unknown` before the operator wrote one.
    pub phase: String,
    /// The condition that explains the state now: `Ready` unless it is `True`, then
    /// `AuthorizationPending`.
    pub condition: String,
    pub reason: String,
    pub message: String,
    /// `status.authorizationURL`.
    pub link: Option<String>,
}

impl View {
    pub fn of(grant: &SlackOAuthGrant) -> Self {
        let status = grant.status.clone().unwrap_or_default();
        let explaining = attempt_condition(grant);
        Self {
            phase: status
                .phase
                .map_or_else(|| "Unknown".to_owned(), |p| phase_name(p).to_owned()),
            condition: explaining.map_or_else(|| conditions::READY.to_owned(), |c| c.type_.clone()),
            reason: explaining.map_or_else(|| "NotObservedYet".to_owned(), |c| c.reason.clone()),
            message: explaining.map(|c| c.message.clone()).unwrap_or_default(),
            link: status.authorization_url,
        }
    }

    /// One line: phase, then the explaining condition's reason.
    pub fn summary(&self) -> String {
        format!("phase {}, {}: {}", self.phase, self.condition, self.reason)
    }
}

pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::AwaitingAuthorization => "AwaitingAuthorization",
        Phase::Ready => "Ready",
        Phase::Failed => "Failed",
    }
}

/// The grant's condition of type `type_`.
pub fn condition<'a>(grant: &'a SlackOAuthGrant, type_: &str) -> Option<&'a Condition> {
    grant
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// The condition an approval attempt is recorded on (as in [`crate::status::with_attempt`]).
pub fn attempt_condition(grant: &SlackOAuthGrant) -> Option<&Condition> {
    match condition(grant, conditions::READY) {
        Some(ready) if ready.status == "True" => {
            condition(grant, conditions::AUTHORIZATION_PENDING).or(Some(ready))
        }
        ready => ready,
    }
}

/// Where the grant's approval stands, from its status alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// The operator has not written a status for the current spec yet.
    Unobserved,
    /// An approval is pending (`AuthorizationPending` is `True`).
    Pending,
    /// No approval is pending and the token is in the Secret.
    Ready { team: String },
    /// No approval is pending and none can be until something changes (phase `Failed`).
    Blocked { reason: String, message: String },
    /// No approval is pending, and the grant is not Ready yet for another reason (adoption
    /// pending, a link about to be published): the operator is working on it.
    Settling,
}

pub fn standing(grant: &SlackOAuthGrant) -> Standing {
    let Some(status) = grant.status.as_ref() else {
        return Standing::Unobserved;
    };
    let Some(pending) = condition(grant, conditions::AUTHORIZATION_PENDING) else {
        return Standing::Unobserved;
    };
    if status.observed_generation < grant.metadata.generation {
        return Standing::Unobserved;
    }
    if pending.status == "True" {
        return Standing::Pending;
    }
    let ready = condition(grant, conditions::READY);
    match ready {
        Some(ready) if ready.status == "True" => Standing::Ready {
            team: team_name(grant),
        },
        _ if status.phase == Some(Phase::Failed) => Standing::Blocked {
            reason: ready.map(|c| c.reason.clone()).unwrap_or_default(),
            message: ready.map(|c| c.message.clone()).unwrap_or_default(),
        },
        _ => Standing::Settling,
    }
}

/// The approving team as people call it: the workspace, else the organization, else its ID.
pub fn team_name(grant: &SlackOAuthGrant) -> String {
    let installation = grant
        .status
        .as_ref()
        .and_then(|s| s.installation.clone())
        .unwrap_or_default();
    installation
        .team_name
        .or(installation.enterprise_name)
        .or(installation.team_id)
        .or(installation.enterprise_id)
        .unwrap_or_else(|| "an unnamed team".to_owned())
}

/// A reason an approval attempt failed with.
fn is_attempt_failure(reason: &str) -> bool {
    reasons::ATTEMPT_FAILURES.contains(&reason)
}

/// How a wait ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The pending approval completed.
    Approved { team: String },
    /// Nothing was pending when the wait began.
    NothingPending { team: String },
    /// The attempt failed, or the grant cannot be approved now.
    Failed { reason: String, message: String },
    /// The grant is gone.
    Deleted,
}

/// What to do after one observation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Keep waiting; show this. `note` is said once: an earlier attempt's failure, for example.
    Waiting {
        view: View,
        note: Option<String>,
    },
    Finished(Outcome),
}

/// A wait for an approval, fed every version of the grant in order.
#[derive(Clone, Debug, Default)]
pub struct Wait {
    /// Wait for an approval to become pending first (after asking for a re-authorization, the
    /// first versions seen may predate the operator's answer).
    expect_pending: bool,
    seen_pending: bool,
    /// The attempt condition's reason in the last version seen.
    last_reason: Option<String>,
}

impl Wait {
    /// A wait that is over at once when nothing is pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// A wait for an approval that was just asked for.
    pub fn expecting_pending() -> Self {
        Self {
            expect_pending: true,
            ..Self::default()
        }
    }

    pub fn observe(&mut self, grant: Option<&SlackOAuthGrant>) -> Step {
        let Some(grant) = grant else {
            return Step::Finished(Outcome::Deleted);
        };
        let view = View::of(grant);
        let previous = self.last_reason.replace(view.reason.clone());
        let waiting = |note| Step::Waiting {
            view: view.clone(),
            note,
        };
        match standing(grant) {
            Standing::Unobserved | Standing::Settling => waiting(None),
            Standing::Pending => {
                let first = !self.seen_pending;
                self.seen_pending = true;
                let failed = is_attempt_failure(&view.reason)
                    && attempt_condition(grant).is_some_and(|c| {
                        c.observed_generation.is_none()
                            || c.observed_generation == grant.metadata.generation
                    });
                match previous {
                    _ if !failed => waiting(None),
                    Some(before) if !first && before != view.reason => {
                        Step::Finished(Outcome::Failed {
                            reason: view.reason.clone(),
                            message: view.message.clone(),
                        })
                    }
                    _ if first => waiting(Some(format!(
                        "the last attempt failed ({}): {}",
                        view.reason, view.message
                    ))),
                    _ => waiting(None),
                }
            }
            Standing::Ready { team } => {
                if self.seen_pending {
                    Step::Finished(Outcome::Approved { team })
                } else if self.expect_pending {
                    Step::Waiting {
                        view: View {
                            message: "waiting for the operator to publish a new link".to_owned(),
                            ..view
                        },
                        note: None,
                    }
                } else {
                    Step::Finished(Outcome::NothingPending { team })
                }
            }
            Standing::Blocked { reason, message } => {
                if self.expect_pending && !self.seen_pending {
                    waiting(None)
                } else {
                    Step::Finished(Outcome::Failed { reason, message })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn grant(phase: &str, conditions: Value) -> SlackOAuthGrant {
        serde_json::from_value(json!({
            "apiVersion": "slack-oauth-operator.io/v1alpha1", "kind": "SlackOAuthGrant",
            "metadata": { "name": "scim", "namespace": "pf", "generation": 1 },
            "spec": { "clientID": "1.2", "clientSecretRef": { "name": "a" }, "secret": { "name": "t" } },
            "status": {
                "phase": phase,
                "observedGeneration": 1,
                "authorizationURL": "https://op.example/oauth/start/abc",
                "installation": { "teamID": "T1", "teamName": "Acme" },
                "conditions": conditions,
            }
        }))
        .expect("grant")
    }

    fn cond(type_: &str, status: &str, reason: &str) -> Value {
        json!({ "type": type_, "status": status, "reason": reason, "message": format!("{reason} happened"),
                "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1 })
    }

    fn awaiting(reason: &str) -> SlackOAuthGrant {
        grant(
            "AwaitingAuthorization",
            json!([
                cond("Ready", "False", reason),
                cond("AuthorizationPending", "True", "FirstApproval")
            ]),
        )
    }

    fn ready() -> SlackOAuthGrant {
        grant(
            "Ready",
            json!([
                cond("Ready", "True", "Authorized"),
                cond("AuthorizationPending", "False", "UpToDate")
            ]),
        )
    }

    fn reauthorizing(reason: &str) -> SlackOAuthGrant {
        grant(
            "Ready",
            json!([
                cond("Ready", "True", "Authorized"),
                cond("AuthorizationPending", "True", reason)
            ]),
        )
    }

    #[test]
    fn a_published_link_is_a_pending_approval() {
        assert_eq!(
            standing(&awaiting("AwaitingAuthorization")),
            Standing::Pending
        );
        assert_eq!(
            standing(&reauthorizing("ReauthorizationRequested")),
            Standing::Pending
        );
    }

    #[test]
    fn ready_without_a_pending_approval_needs_nothing() {
        let mut wait = Wait::new();
        assert_eq!(
            wait.observe(Some(&ready())),
            Step::Finished(Outcome::NothingPending {
                team: "Acme".into()
            })
        );
    }

    #[test]
    fn a_pending_approval_that_completes_is_approved() {
        let mut wait = Wait::new();
        assert!(matches!(
            wait.observe(Some(&awaiting("AwaitingAuthorization"))),
            Step::Waiting { note: None, .. }
        ));
        assert!(matches!(
            wait.observe(Some(&awaiting("Exchanging"))),
            Step::Waiting { .. }
        ));
        assert_eq!(
            wait.observe(Some(&ready())),
            Step::Finished(Outcome::Approved {
                team: "Acme".into()
            })
        );
    }

    #[test]
    fn a_failure_during_the_wait_fails_it_with_the_reason() {
        let mut wait = Wait::new();
        wait.observe(Some(&awaiting("AwaitingAuthorization")));
        wait.observe(Some(&awaiting("Exchanging")));
        let Step::Finished(Outcome::Failed { reason, message }) =
            wait.observe(Some(&awaiting("BadClientSecret")))
        else {
            panic!("a failure");
        };
        assert_eq!(reason, "BadClientSecret");
        assert_eq!(message, "BadClientSecret happened");
    }

    #[test]
    fn an_earlier_failure_is_a_note_and_the_wait_goes_on() {
        let mut wait = Wait::new();
        let Step::Waiting {
            note: Some(note), ..
        } = wait.observe(Some(&awaiting("AccessDenied")))
        else {
            panic!("waiting with a note");
        };
        assert!(note.contains("AccessDenied"), "{note}");
        // A new attempt that fails again, with the same reason, still ends the wait.
        wait.observe(Some(&awaiting("Exchanging")));
        assert!(matches!(
            wait.observe(Some(&awaiting("AccessDenied"))),
            Step::Finished(Outcome::Failed { .. })
        ));
    }

    #[test]
    fn a_failed_reauthorization_is_read_from_authorization_pending() {
        let mut wait = Wait::new();
        wait.observe(Some(&reauthorizing("ReauthorizationRequested")));
        wait.observe(Some(&reauthorizing("Exchanging")));
        assert!(matches!(
            wait.observe(Some(&reauthorizing("WrongTeam"))),
            Step::Finished(Outcome::Failed { reason, .. }) if reason == "WrongTeam"
        ));
    }

    #[test]
    fn after_asking_for_reauthorization_an_old_ready_status_is_not_the_end() {
        let mut wait = Wait::expecting_pending();
        assert!(matches!(wait.observe(Some(&ready())), Step::Waiting { .. }));
        wait.observe(Some(&reauthorizing("ReauthorizationRequested")));
        assert_eq!(
            wait.observe(Some(&ready())),
            Step::Finished(Outcome::Approved {
                team: "Acme".into()
            })
        );
    }

    #[test]
    fn a_blocked_grant_fails_at_once_with_its_reason() {
        let blocked = grant(
            "Failed",
            json!([
                cond("Ready", "False", "ClientSecretMissing"),
                cond("AuthorizationPending", "False", "ClientSecretMissing")
            ]),
        );
        assert!(matches!(
            Wait::new().observe(Some(&blocked)),
            Step::Finished(Outcome::Failed { reason, .. }) if reason == "ClientSecretMissing"
        ));
    }

    #[test]
    fn a_status_for_an_older_spec_is_not_read_as_the_answer() {
        let mut stale = ready();
        stale.metadata.generation = Some(2);
        assert_eq!(standing(&stale), Standing::Unobserved);
        assert!(matches!(
            Wait::new().observe(Some(&stale)),
            Step::Waiting { .. }
        ));
    }

    #[test]
    fn a_deleted_grant_ends_the_wait() {
        assert_eq!(Wait::new().observe(None), Step::Finished(Outcome::Deleted));
    }

    #[test]
    fn the_view_names_the_phase_and_the_explaining_reason() {
        assert_eq!(
            View::of(&awaiting("AwaitingAuthorization")).summary(),
            "phase AwaitingAuthorization, Ready: AwaitingAuthorization"
        );
        assert_eq!(
            View::of(&reauthorizing("ReauthorizationRequested")).summary(),
            "phase Ready, AuthorizationPending: ReauthorizationRequested"
        );
    }
}
