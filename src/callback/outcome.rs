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

/// Why a callback was refused before (or without) claiming its link. Nothing is recorded on the
/// grant for these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A repeated or overlong parameter.
    Malformed,
    NoState,
    /// Not signed by this operator: forged, or from another installation.
    NotOurs,
    Expired,
    /// The grant was deleted, recreated or changed since the link was issued. One answer for
    /// all three, so a link tells nobody which.
    NoLongerValid,
    /// Already used, or replaced by a newer link.
    NotCurrent,
    /// Every custody slot is taken.
    Busy,
    /// The Kubernetes API could not be reached.
    Unavailable,
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
        Mismatch::NotCurrent => Refusal::NotCurrent,
    }
}

const OPEN_CURRENT_LINK: &str = "Open the current link from the grant's status.authorizationURL (kubectl get slackoauthgrant <name> -o jsonpath='{.status.authorizationURL}'), or ask the person who manages the grant for it.";

fn not_accepted(status: StatusCode, what: &str) -> Page {
    Page::failure(
        status,
        "Authorization link not accepted",
        format!("{what}. Nothing was changed."),
        OPEN_CURRENT_LINK,
    )
}

fn gone(what: &str) -> Page {
    Page::failure(
        StatusCode::GONE,
        "Authorization link no longer valid",
        format!("{what} Nothing was changed."),
        OPEN_CURRENT_LINK,
    )
}

impl Refusal {
    pub fn page(self) -> Page {
        match self {
            Self::Malformed => not_accepted(
                StatusCode::BAD_REQUEST,
                "This is not a valid authorization response",
            ),
            Self::NoState => not_accepted(
                StatusCode::BAD_REQUEST,
                "This authorization response has no state",
            ),
            Self::NotOurs => not_accepted(
                StatusCode::BAD_REQUEST,
                "This authorization response was not issued by this operator",
            ),
            Self::Expired => gone("This authorization link has expired."),
            Self::NoLongerValid => gone(
                "This authorization link was issued for a SlackOAuthGrant that has since been changed or deleted.",
            ),
            Self::NotCurrent => not_accepted(
                StatusCode::CONFLICT,
                "This authorization link has already been used, or has been replaced by a newer one",
            ),
            Self::Busy => Page::failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "Operator busy",
                "The operator is handling too many authorizations at once. Nothing was changed.",
                "Reload this page in a few seconds; the link stays valid until it expires.",
            ),
            Self::Unavailable => Page::failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "Operator temporarily unavailable",
                "The operator could not reach the Kubernetes API. Nothing was changed.",
                "Reload this page in a minute; the link stays valid until it expires.",
            ),
            Self::StillWorking => Page::failure(
                StatusCode::ACCEPTED,
                "Approval received, still being saved",
                "Slack or Kubernetes is slow to answer. The operator keeps working on it: it stores the token, or revokes it if it cannot.",
                "You can close this page. The person who manages the SlackOAuthGrant sees the outcome in its status (kubectl get slackoauthgrant <name>).",
            ),
            Self::Stopping => Page::failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "Authorization not saved",
                "The operator was stopping and could not save the token, so it revoked it.",
                "Open the authorization link again from the grant's status.authorizationURL once the operator is back.",
            ),
        }
    }
}

/// A claimed attempt that failed: recorded on the grant as `Ready=False` with `reason` (one of
/// [`reasons::ATTEMPT_FAILURES`]), published as a Warning Event, and shown to the person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub status: StatusCode,
    pub reason: &'static str,
    pub message: String,
}

const NEW_LINK: &str = "A new authorization link has been published in status.authorizationURL.";

impl Failure {
    fn new(status: StatusCode, reason: &'static str, message: String) -> Self {
        Self {
            status,
            reason,
            message,
        }
    }

    /// Slack sent the browser back with `error` instead of a code.
    pub fn declined(error: &str) -> Self {
        if error == "access_denied" {
            return Self::new(
                StatusCode::FORBIDDEN,
                reasons::ACCESS_DENIED,
                format!(
                    "The Slack owner declined the authorization (Slack's access_denied). {NEW_LINK}"
                ),
            );
        }
        // Anything that does not look like one of Slack's codes is not repeated to anyone.
        let code = if is_error_code(error) {
            error
        } else {
            "an unrecognised error"
        };
        Self::new(
            StatusCode::FORBIDDEN,
            reasons::AUTHORIZATION_FAILED,
            format!("Slack did not authorize the app: {code}. {NEW_LINK}"),
        )
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
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            reasons::CLIENT_SECRET_MISSING,
            format!(
                "Secret {namespace}/{name} with key {key} (the Slack app's Client Secret) was not found, or is not shared with this grant, when the callback arrived."
            ),
        )
    }

    pub fn client_secret_unreadable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            reasons::EXCHANGE_FAILED,
            "The operator could not read the Slack app's Client Secret from Kubernetes.".to_owned(),
        )
    }

    /// Slack refused the code exchange, or could not be reached.
    pub fn exchange(error: &SlackError, redirect_uri: &str) -> Self {
        let (status, reason, what) = match error.code() {
            Some("invalid_code") => (
                StatusCode::BAD_REQUEST,
                reasons::INVALID_CODE,
                "Slack refused the authorization code (invalid_code): it expired, was already used, or belongs to another app.".to_owned(),
            ),
            Some("bad_client_secret") => (
                StatusCode::BAD_GATEWAY,
                reasons::BAD_CLIENT_SECRET,
                "Slack refused the app's Client Secret (bad_client_secret): check the Secret named by spec.clientSecretRef.".to_owned(),
            ),
            Some("invalid_client_id") => (
                StatusCode::BAD_GATEWAY,
                reasons::INVALID_CLIENT_ID,
                "Slack does not know spec.clientID (invalid_client_id).".to_owned(),
            ),
            Some("bad_redirect_uri") => (
                StatusCode::BAD_GATEWAY,
                reasons::BAD_REDIRECT_URI,
                format!("Slack refused the redirect URI (bad_redirect_uri): add {redirect_uri} to the Slack app's Redirect URLs."),
            ),
            Some(code) => (
                StatusCode::BAD_GATEWAY,
                reasons::EXCHANGE_FAILED,
                format!("Slack refused the code exchange: {code}."),
            ),
            None if error.is_transient() => (
                StatusCode::SERVICE_UNAVAILABLE,
                reasons::SLACK_UNAVAILABLE,
                "Slack could not be reached, or kept failing, within the code's 10-minute lifetime.".to_owned(),
            ),
            None => (
                StatusCode::BAD_GATEWAY,
                reasons::EXCHANGE_FAILED,
                "Slack's answer to the code exchange could not be understood.".to_owned(),
            ),
        };
        Self::new(status, reason, format!("{what} {NEW_LINK}"))
    }

    /// Slack's answer does not satisfy the grant; its tokens were revoked.
    pub fn mismatch(mismatch: &authorization::Mismatch) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            mismatch.reason(),
            format!(
                "{mismatch}. The tokens Slack issued were revoked; a new authorization link has been published in status.authorizationURL."
            ),
        )
    }

    pub fn secret_conflict(secret: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            reasons::SECRET_CONFLICT,
            format!(
                "Secret {secret} exists and is not this grant's (it is not managed by slack-oauth-operator for it), so it was not overwritten; the new token was revoked. Delete that Secret or change spec.secret.name, then approve the new link in status.authorizationURL."
            ),
        )
    }

    /// The API server refused the token Secret for good (HTTP `code`).
    pub fn secret_refused(secret: &str, code: u16) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            reasons::EXCHANGE_FAILED,
            format!(
                "The Kubernetes API refused to write Secret {secret} (HTTP {code}), so the new token was revoked. Check spec.secret and the operator's permissions, then approve the new link in status.authorizationURL."
            ),
        )
    }

    pub fn page(&self) -> Page {
        let title = match self.reason {
            reasons::ACCESS_DENIED => "Authorization declined",
            reasons::SLACK_UNAVAILABLE => "Slack is unavailable",
            reasons::SECRET_CONFLICT => "Secret not overwritten",
            _ => "Authorization failed",
        };
        Page::failure_for(
            self.reason,
            self.status,
            title,
            self.message.clone(),
            "Ask the person who manages this SlackOAuthGrant for the new link (kubectl get slackoauthgrant -o jsonpath='{.status.authorizationURL}'), fix what the message above names if anything, and approve again.",
        )
    }
}

/// The token is in its Secret.
pub fn stored(team: &str, secret: &str) -> Page {
    Page::success(
        "Slack authorization complete",
        format!("The token approved by {team} is stored in Secret {secret}."),
        "Nothing: you can close this page. A workload that mounts the Secret as a file sees the token at once; one that loads it as environment variables (envFrom, as PingFederate's chart does) gets it when its pods restart, which the operator does for the workloads the grant lists in spec.secret.rolloutRestart.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn forged_input_is_answered_with_4xx_and_never_5xx() {
        for refusal in [Refusal::Malformed, Refusal::NoState, Refusal::NotOurs] {
            assert!(refusal.page().status.is_client_error(), "{refusal:?}");
        }
    }
}
