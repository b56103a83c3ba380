//! What a callback's person is told, and what its grant records, as plain values: no I/O, and
//! the time is passed in. The custody (`flow.rs`) decides which of these happened; this module
//! says what each one means.

use axum::http::StatusCode;

use super::{pages::Page, state::Mismatch};
use crate::{
    api::reasons,
    authorization,
    slack::{SlackError, is_error_code},
};

/// Why a visit or a callback was refused before (or without) an approval attempt. Nothing is
/// recorded on the grant for these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A repeated or overlong parameter.
    Malformed,
    NoState,
    /// A link or state this operator did not sign: forged, damaged, or from another
    /// installation. One answer for all, which names no grant.
    NotOurs,
    /// The state's half hour is up.
    Expired,
    /// The approval link's own lifetime is up (a new one is being published).
    LinkExpired,
    /// The grant was deleted, recreated or changed since the state was minted. One answer for
    /// all three, so a state tells nobody which.
    NoLongerValid,
    /// The link is not (or no longer) one a grant publishes: approved, re-authorized, deleted.
    NoLongerNeeded,
    /// The grant has no approval pending.
    NotPending,
    /// This state was already used for an attempt.
    Used,
    /// Another approval of the grant is being exchanged right now.
    InProgress,
    /// The grant remembers as many recent attempts as it may.
    TooManyAttempts,
    /// Every custody slot is taken.
    Busy,
    /// The Kubernetes API could not be reached.
    Unavailable,
    /// The operator has not loaded the grants yet.
    Starting,
    /// The page deadline passed; the custody goes on.
    StillWorking,
    /// The process stopped before the token could be stored; it was revoked.
    Stopping,
}

/// The refusal a genuine state's mismatch with its grant gets.
pub fn refusal_for(mismatch: Mismatch) -> Refusal {
    match mismatch {
        Mismatch::Expired => Refusal::Expired,
        Mismatch::GrantGone | Mismatch::OlderGeneration => Refusal::NoLongerValid,
        Mismatch::NotCurrent => Refusal::NoLongerNeeded,
        Mismatch::Used => Refusal::Used,
        Mismatch::InProgress => Refusal::InProgress,
    }
}

const OPEN_AGAIN: &str =
    "Open the approval link you were given again: it sends you back to Slack with a fresh start.";
const ASK_AGAIN: &str = "Ask the person who sent you the link for the current one (they get it with kubectl slack-oauth authorize <grant>).";

impl Refusal {
    pub fn page(self) -> Page {
        match self {
            Self::Malformed | Self::NoState | Self::NotOurs => Page::failure(
                StatusCode::BAD_REQUEST,
                "Link not valid",
                "This link was not issued by this operator, or it was damaged when it was copied. Nothing was changed.",
                "Copy the whole link again from the message you received, or ask the person who sent it to send it again.",
            ),
            Self::Expired => Page::failure(
                StatusCode::GONE,
                "Approval page expired",
                "More than 30 minutes passed between opening the approval link and answering Slack's page. Nothing was changed.",
                OPEN_AGAIN,
            ),
            Self::LinkExpired => Page::failure(
                StatusCode::GONE,
                "Approval link expired",
                "This approval link has reached the end of its lifetime; the operator publishes a new one. Nothing was changed.",
                ASK_AGAIN,
            ),
            Self::NoLongerValid => Page::failure(
                StatusCode::GONE,
                "Approval no longer valid",
                "The grant this approval was for has been changed or deleted since you opened the link. Nothing was changed.",
                OPEN_AGAIN,
            )
            .tell("That the grant changed while you were approving it, in case that was not expected."),
            Self::NoLongerNeeded => Page::neutral(
                StatusCode::GONE,
                "This link is no longer needed",
                "The approval it asked for is done, or a newer link has replaced it. Nothing was changed.",
                "Nothing, unless you were asked for a new approval: then ask for the current link (kubectl slack-oauth authorize <grant> prints it).",
            ),
            Self::NotPending => Page::neutral(
                StatusCode::OK,
                "No approval is pending",
                "This grant is not waiting for an approval: its token is in place. Nothing was changed.",
                "Nothing. If a new approval is needed, the person who manages the grant asks for one (kubectl slack-oauth reauthorize <grant>) and sends you the link again.",
            ),
            Self::Used => Page::neutral(
                StatusCode::CONFLICT,
                "Already received",
                "This answer from Slack has already been received; it works only once. Nothing was changed this time.",
                "If the first attempt failed, open the approval link you were given again.",
            ),
            Self::InProgress => Page::neutral(
                StatusCode::CONFLICT,
                "An approval is being saved",
                "Another approval of this grant is being saved right now. Nothing was changed.",
                "Wait a minute, then open the approval link again: it says whether an approval is still needed.",
            ),
            Self::TooManyAttempts => Page::failure(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                "This grant has had many approval attempts in the last 30 minutes, so the operator takes no more for now. Nothing was changed.",
                "Wait half an hour, then open the approval link again.",
            )
            .tell("That approvals kept failing, and what the pages said."),
            Self::Busy => Page::failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "Operator busy",
                "The operator is handling too many approvals at once. Nothing was changed.",
                "Reload this page in a few seconds.",
            ),
            Self::Unavailable => Page::failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "Operator temporarily unavailable",
                "The operator could not reach the Kubernetes API. Nothing was changed.",
                "Reload this page in a minute.",
            ),
            Self::Starting => Page::failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "Operator starting",
                "The operator has just started and is still loading its grants. Nothing was changed.",
                "Reload this page in a few seconds.",
            ),
            Self::StillWorking => Page::neutral(
                StatusCode::ACCEPTED,
                "Approval received, still being saved",
                "Slack or Kubernetes is slow to answer. The operator keeps working on it: it stores the token, or revokes it if it cannot.",
                "You can close this page. Opening the approval link again later tells you whether an approval is still needed.",
            )
            .tell("That you approved; they see the outcome with kubectl slack-oauth status <grant>."),
            Self::Stopping => Page::failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "Approval not saved",
                "The operator was stopping and could not save the token, so it revoked it.",
                "Open the approval link you were given again in a minute, once the operator is back.",
            ),
        }
    }
}

/// A claimed attempt that failed: recorded on the grant as `Ready=False` (or on
/// `AuthorizationPending`) with `reason` (one of [`reasons::ATTEMPT_FAILURES`]), published as a
/// Warning Event, and shown to the Slack owner with what they can do and what to pass on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub status: StatusCode,
    pub reason: &'static str,
    /// For the grant's status and Event.
    pub message: String,
    /// The page's heading.
    title: &'static str,
    /// For the Slack owner, where it differs from `message`.
    explanation: Option<String>,
    next_step: String,
    tell: Option<String>,
}

/// How a failed attempt's message on the grant ends.
const SAME_LINK: &str =
    "A Slack owner can try again with the same link in status.authorizationURL.";
const FIXED_THEN_AGAIN: &str = "Nothing you can fix from Slack: pass the message above on. Once it is fixed, open the same approval link again.";

impl Failure {
    fn new(status: StatusCode, reason: &'static str, message: String) -> Self {
        Self {
            status,
            reason,
            message: format!("{message} {SAME_LINK}"),
            title: "Approval failed",
            explanation: Some(message.clone()),
            next_step: OPEN_AGAIN.to_owned(),
            tell: None,
        }
    }

    /// A failure of the grant's or the app's configuration: the owner passes it on.
    fn configuration(status: StatusCode, reason: &'static str, message: String) -> Self {
        Self {
            next_step: FIXED_THEN_AGAIN.to_owned(),
            tell: Some(message.clone()),
            ..Self::new(status, reason, message)
        }
    }

    /// Slack sent the browser back with `error` instead of a code.
    pub fn declined(error: &str) -> Self {
        if error == "access_denied" {
            return Self {
                status: StatusCode::OK,
                title: "Approval cancelled",
                explanation: Some(
                    "You cancelled on Slack's page, so nothing was approved and nothing was changed."
                        .to_owned(),
                ),
                next_step: "Nothing. If you cancelled by mistake, open the same approval link again."
                    .to_owned(),
                tell: Some("That you declined, if you meant to, and why.".to_owned()),
                ..Self::new(
                    StatusCode::OK,
                    reasons::ACCESS_DENIED,
                    "The Slack owner cancelled on Slack's page (Slack's access_denied).".to_owned(),
                )
            };
        }
        // Anything that does not look like one of Slack's codes is not repeated to anyone.
        let code = if is_error_code(error) {
            error
        } else {
            "an unrecognised error"
        };
        Self {
            tell: Some(format!("Slack answered {code} instead of an approval.")),
            ..Self::new(
                StatusCode::FORBIDDEN,
                reasons::AUTHORIZATION_FAILED,
                format!("Slack did not authorize the app: {code}."),
            )
        }
    }

    pub fn no_code() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            reasons::AUTHORIZATION_FAILED,
            "Slack sent the browser back without an authorization code.".to_owned(),
        )
    }

    /// The client Secret is missing, lacks the key, or is not shared with the grant: one text.
    pub fn client_secret_missing(namespace: &str, name: &str, key: &str) -> Self {
        Self::configuration(
            StatusCode::SERVICE_UNAVAILABLE,
            reasons::CLIENT_SECRET_MISSING,
            format!(
                "Secret {namespace}/{name} with key {key} (the Slack app's Client Secret) was not found, or is not shared with this grant, when the approval arrived."
            ),
        )
    }

    pub fn client_secret_unreadable() -> Self {
        Self {
            next_step: "Open the same approval link again in a minute.".to_owned(),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                reasons::EXCHANGE_FAILED,
                "The operator could not read the Slack app's Client Secret from Kubernetes."
                    .to_owned(),
            )
        }
    }

    /// Slack refused the code exchange, or could not be reached.
    pub fn exchange(error: &SlackError, redirect_uri: &str) -> Self {
        let configuration = |reason, what: &str| {
            Self::configuration(StatusCode::BAD_GATEWAY, reason, what.to_owned())
        };
        match error.code() {
            Some("invalid_code") => Self::new(
                StatusCode::BAD_REQUEST,
                reasons::INVALID_CODE,
                "Slack refused the authorization code (invalid_code): it expired, was already used, or belongs to another app.".to_owned(),
            ),
            Some("bad_client_secret") => configuration(
                reasons::BAD_CLIENT_SECRET,
                "Slack refused the app's Client Secret (bad_client_secret): check the Secret named by spec.clientSecretRef.",
            ),
            Some("invalid_client_id") => configuration(
                reasons::INVALID_CLIENT_ID,
                "Slack does not know spec.clientID (invalid_client_id).",
            ),
            Some("bad_redirect_uri") => configuration(
                reasons::BAD_REDIRECT_URI,
                &format!("Slack refused the redirect URI (bad_redirect_uri): add {redirect_uri} to the Slack app's Redirect URLs."),
            ),
            Some(code) => configuration(
                reasons::EXCHANGE_FAILED,
                &format!("Slack refused the code exchange: {code}."),
            ),
            None if error.is_transient() => Self {
                title: "Slack is unavailable",
                next_step: "Open the same approval link again in a few minutes.".to_owned(),
                tell: Some("Nothing, unless it keeps happening.".to_owned()),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    reasons::SLACK_UNAVAILABLE,
                    "Slack could not be reached, or kept failing, within the code's 10-minute lifetime.".to_owned(),
                )
            },
            None => configuration(
                reasons::EXCHANGE_FAILED,
                "Slack's answer to the code exchange could not be understood.",
            ),
        }
    }

    /// Slack's answer does not satisfy the grant; its tokens were revoked.
    pub fn mismatch(mismatch: &authorization::Mismatch) -> Self {
        let failure = Self::new(
            StatusCode::FORBIDDEN,
            mismatch.reason(),
            format!("{mismatch}. The tokens Slack issued were revoked."),
        );
        match mismatch {
            authorization::Mismatch::WrongTeam { want, got } => Self {
                title: "Approved from another workspace",
                explanation: Some(format!(
                    "This grant must be approved from {want}, but Slack's page was answered for {got}. The token Slack issued was revoked; nothing was stored."
                )),
                next_step: format!(
                    "In Slack, switch to {want} (the workspace switcher, or sign in to it), then open the same approval link again and check the workspace shown at the top right of Slack's page before you click Allow."
                ),
                tell: Some(format!(
                    "Nothing, unless you cannot reach {want}: then the grant's spec.teamID may be wrong."
                )),
                ..failure
            },
            authorization::Mismatch::NotOrganizationInstall => Self {
                title: "Installed on one workspace only",
                next_step: "Open the same approval link again, choose the organization itself (not one of its workspaces) at the top right of Slack's page, and approve as an Org Owner.".to_owned(),
                ..failure
            },
            authorization::Mismatch::UnexpectedOrganizationInstall => Self {
                title: "Installed org-wide",
                next_step: "Open the same approval link again and choose a single workspace at the top right of Slack's page.".to_owned(),
                tell: Some("That the app is set up for org-wide installs while the grant asks for a workspace install (spec.installation).".to_owned()),
                ..failure
            },
            authorization::Mismatch::MissingToken(_) | authorization::Mismatch::MissingScopes { .. } => Self {
                title: "Permissions missing",
                next_step: "Open the same approval link again and allow every permission Slack's page lists. If it did not list them, pass the message above on.".to_owned(),
                tell: Some(format!("{mismatch}: the Slack app may lack them in OAuth & Permissions.")),
                ..failure
            },
        }
    }

    pub fn secret_conflict(secret: &str) -> Self {
        Self {
            title: "Token not saved",
            ..Self::configuration(
                StatusCode::CONFLICT,
                reasons::SECRET_CONFLICT,
                format!(
                    "Secret {secret} exists and is not this grant's (it is not managed by slack-oauth-operator for it), so it was not overwritten and the new token was revoked. Delete that Secret or change spec.secret.name."
                ),
            )
        }
    }

    /// The API server refused the token Secret for good (HTTP `code`).
    pub fn secret_refused(secret: &str, code: u16) -> Self {
        Self {
            title: "Token not saved",
            ..Self::configuration(
                StatusCode::BAD_GATEWAY,
                reasons::EXCHANGE_FAILED,
                format!(
                    "The Kubernetes API refused to write Secret {secret} (HTTP {code}), so the new token was revoked. Check spec.secret and the operator's permissions."
                ),
            )
        }
    }

    pub fn page(&self) -> Page {
        let explanation = self
            .explanation
            .clone()
            .unwrap_or_else(|| self.message.clone());
        let page = if self.reason == reasons::ACCESS_DENIED {
            Page::neutral(self.status, self.title, explanation, self.next_step.clone())
        } else {
            Page::failure(self.status, self.title, explanation, self.next_step.clone())
        };
        let page = page.recorded(self.reason);
        match &self.tell {
            Some(tell) => page.tell(tell.clone()),
            None => page,
        }
    }
}

/// The token is in its Secret.
pub fn stored(team: &str, secret: &str) -> Page {
    Page::success(
        "Slack approval complete",
        format!("Thank you: the token approved by {team} is stored in Secret {secret}."),
        "Nothing: you can close this page. The approval link you used is no longer needed.",
    )
    .tell("That it is approved; kubectl slack-oauth status <grant> shows who approved and when.")
}

/// A refresh of the success page, or a state whose approval another one completed: the grant is
/// approved, by the team named.
pub fn already_approved(team: &str) -> Page {
    Page::success(
        "Slack approval complete",
        format!("This grant is approved by {team}, and its token is stored."),
        "Nothing: you can close this page.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::pages::Tone;

    #[test]
    fn error_codes_from_the_browser_are_not_echoed_unless_they_look_like_codes() {
        assert!(
            Failure::declined("invalid_scope")
                .message
                .contains("invalid_scope")
        );
        let odd = Failure::declined("<b>hi</b>");
        assert!(odd.message.contains("an unrecognised error"));
        assert!(!odd.message.contains("<b>"));
    }

    #[test]
    fn every_failure_records_a_reason_the_controller_keeps() {
        let slack = |code: &str| SlackError::Api {
            method: "oauth.v2.access",
            code: code.to_owned(),
        };
        let failures = [
            Failure::declined("access_denied"),
            Failure::declined("x"),
            Failure::no_code(),
            Failure::client_secret_missing("ns", "s", "k"),
            Failure::client_secret_unreadable(),
            Failure::exchange(&slack("invalid_code"), "u"),
            Failure::exchange(&slack("bad_client_secret"), "u"),
            Failure::exchange(&slack("invalid_client_id"), "u"),
            Failure::exchange(&slack("bad_redirect_uri"), "u"),
            Failure::exchange(&slack("other"), "u"),
            Failure::exchange(
                &SlackError::Status {
                    method: "m",
                    status: 503,
                },
                "u",
            ),
            Failure::secret_conflict("ns/s"),
            Failure::secret_refused("ns/s", 422),
        ];
        for failure in failures {
            assert!(
                reasons::ATTEMPT_FAILURES.contains(&failure.reason)
                    || failure.reason == reasons::CLIENT_SECRET_MISSING,
                "{failure:?}"
            );
            assert_eq!(failure.page().status, failure.status);
        }
    }

    #[test]
    fn a_cancel_is_neutral_and_a_wrong_workspace_says_which_to_switch_to() {
        let cancel = Failure::declined("access_denied");
        assert_eq!(cancel.page().tone, Tone::Neutral);
        assert_eq!(cancel.page().status, StatusCode::OK);
        assert_eq!(cancel.reason, reasons::ACCESS_DENIED);
        let wrong = Failure::mismatch(&authorization::Mismatch::WrongTeam {
            want: "T0ACME".into(),
            got: "T0OTHER".into(),
        })
        .page();
        assert!(wrong.next_step.contains("switch to T0ACME"), "{wrong:?}");
        assert!(wrong.explanation.contains("T0OTHER"), "{wrong:?}");
    }

    #[test]
    fn a_configuration_failure_is_passed_on_and_every_failure_says_the_link_works_again() {
        let slack = SlackError::Api {
            method: "oauth.v2.access",
            code: "bad_client_secret".to_owned(),
        };
        let failure = Failure::exchange(&slack, "u");
        let page = failure.page();
        assert!(
            page.tell
                .as_deref()
                .is_some_and(|t| t.contains("spec.clientSecretRef"))
        );
        assert!(page.next_step.contains("same approval link again"));
        assert!(failure.message.ends_with(SAME_LINK), "{}", failure.message);
    }

    #[test]
    fn forged_input_is_answered_with_4xx_and_never_5xx() {
        for refusal in [Refusal::Malformed, Refusal::NoState, Refusal::NotOurs] {
            assert!(refusal.page().status.is_client_error(), "{refusal:?}");
        }
    }
}
