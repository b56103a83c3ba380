//! Slack's OAuth endpoints, behind a trait so the callback flow can be tested without a network,
//! and its responses as types. Secret values are `SecretString`s: their `Debug` is redacted, so
//! they cannot reach a log line or an error message by accident.

mod client;

use std::{future::Future, time::Duration};

use secrecy::SecretString;
use serde::Deserialize;
use tokio::time::Instant;

pub use client::{ClientOptions, SlackClient};

/// The Slack calls the operator makes.
pub trait SlackApi: Send + Sync + 'static {
    /// `oauth.v2.access` with `grant_type=authorization_code`, retried on transient failures
    /// until `deadline` (a code lives for 10 minutes).
    fn exchange_code(
        &self,
        request: &CodeExchange,
        deadline: Instant,
    ) -> impl Future<Output = Result<OAuthAccess, SlackError>> + Send;

    /// `auth.revoke` for `token`. A token Slack no longer knows counts as revoked.
    fn revoke(
        &self,
        token: &SecretString,
        deadline: Instant,
    ) -> impl Future<Output = Result<(), SlackError>> + Send;

    /// `oauth.v2.access` with `grant_type=refresh_token` (client authenticated by HTTP Basic):
    /// a new access token and the next refresh token. Transient failures are retried until
    /// `deadline`.
    fn refresh(
        &self,
        request: &TokenRefresh,
        deadline: Instant,
    ) -> impl Future<Output = Result<Refreshed, SlackError>> + Send;

    /// SCIM's `GET Users?count=1` with `token`: whether the token can drive SCIM provisioning.
    /// Slack being unreachable (network, 429, 5xx) is an error, retried until `deadline`; a
    /// refusal is an answer.
    fn scim_probe(
        &self,
        token: &SecretString,
        deadline: Instant,
    ) -> impl Future<Output = Result<Provisioning, SlackError>> + Send;

    /// `auth.test` for `token`: who the token belongs to, if Slack still accepts it. Transient
    /// failures are retried until `deadline`.
    fn check(
        &self,
        token: &SecretString,
        deadline: Instant,
    ) -> impl Future<Output = Result<TokenIdentity, SlackError>> + Send;
}

/// SCIM's answer to whether a token can drive provisioning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Provisioning {
    /// `GET Users?count=1` answered 200.
    Ready,
    /// SCIM refused the token: its error code (`plus_teams_only`, `invalid_authentication`,
    /// `non_org_teams_only`, `permission_denied`, ...) or, without one, the HTTP status.
    Refused(String),
}

/// What `auth.test` says a token belongs to.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct TokenIdentity {
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub enterprise_id: Option<String>,
    /// The workspace's (or, org-wide, the organization's) name.
    #[serde(default)]
    pub team: Option<String>,
    /// Set for a bot token.
    #[serde(default)]
    pub bot_id: Option<String>,
    #[serde(default)]
    pub is_enterprise_install: bool,
}

/// Slack's answers meaning a token is no longer valid (revoked, expired, or its user gone).
pub fn is_dead_token(error: &SlackError) -> bool {
    matches!(
        error.code(),
        Some(
            "invalid_auth" | "token_revoked" | "token_expired" | "account_inactive" | "not_authed"
        )
    )
}

/// The parameters of a code exchange.
#[derive(Debug)]
pub struct CodeExchange {
    pub client_id: String,
    pub client_secret: SecretString,
    pub code: SecretString,
    pub redirect_uri: String,
}

/// The parameters of a token refresh.
#[derive(Debug)]
pub struct TokenRefresh {
    pub client_id: String,
    pub client_secret: SecretString,
    pub refresh_token: SecretString,
}

/// A successful refresh: Slack's flat answer (`token_type` `bot` or `user`, the new
/// `access_token`, the next `refresh_token`, `expires_in`).
#[derive(Debug, Deserialize)]
pub struct Refreshed {
    pub access_token: SecretString,
    #[serde(default)]
    pub refresh_token: Option<SecretString>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// Whether Slack refused a refresh for good: the refresh token is used up, revoked or unknown.
/// (`invalid_grant` is what one third party reports instead; it is read the same way.)
pub fn is_dead_refresh(error: &SlackError) -> bool {
    matches!(
        error.code(),
        Some("invalid_refresh_token" | "invalid_grant" | "token_revoked" | "token_expired")
    ) || matches!(error, SlackError::Status { status: 400, .. })
}

/// A workspace or organization as Slack names it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct IdName {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// The user part of an `oauth.v2.access` answer.
#[derive(Debug, Deserialize)]
pub struct AuthedUser {
    pub id: String,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub access_token: Option<SecretString>,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<SecretString>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

/// A successful `oauth.v2.access` answer, in Slack's shape.
#[derive(Debug, Deserialize)]
pub struct OAuthAccess {
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub authed_user: Option<AuthedUser>,
    /// The bot token's scopes, comma-separated.
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub token_type: Option<String>,
    /// The bot token (`xoxb-`), when bot scopes were granted.
    #[serde(default)]
    pub access_token: Option<SecretString>,
    #[serde(default)]
    pub refresh_token: Option<SecretString>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub bot_user_id: Option<String>,
    #[serde(default)]
    pub team: Option<IdName>,
    #[serde(default)]
    pub enterprise: Option<IdName>,
    #[serde(default)]
    pub is_enterprise_install: bool,
}

impl OAuthAccess {
    /// Every token in the answer, so that the ones not kept can be revoked.
    pub fn tokens(&self) -> Vec<&SecretString> {
        let user = self
            .authed_user
            .as_ref()
            .and_then(|u| u.access_token.as_ref());
        self.access_token.iter().chain(user).collect()
    }
}

/// Whether `code` looks like one of Slack's error codes: a short snake_case word.
pub fn is_error_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
}

/// A failed Slack call. Messages never contain a secret value.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    /// Slack answered `{"ok": false, "error": code}`.
    #[error("failed to call {method}: Slack answered {code}")]
    Api { method: &'static str, code: String },
    /// HTTP 429 that outlived the deadline.
    #[error("failed to call {method}: rate limited by Slack (retry after {retry_after:?})")]
    RateLimited {
        method: &'static str,
        retry_after: Duration,
    },
    /// An HTTP status other than 200 or 429.
    #[error("failed to call {method}: Slack answered HTTP {status}")]
    Status { method: &'static str, status: u16 },
    /// The request did not complete (connection, TLS, timeout).
    #[error("failed to call {method}: the request did not complete")]
    Transport {
        method: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// The answer was larger than any answer Slack documents.
    #[error("failed to call {method}: the answer was larger than {limit} bytes")]
    TooLarge { method: &'static str, limit: usize },
    /// The answer was not the JSON Slack documents.
    #[error("failed to call {method}: the answer was not Slack's documented JSON")]
    Decode {
        method: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl SlackError {
    /// Whether trying again later may succeed. Decided here and nowhere else.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api { code, .. } => matches!(
                code.as_str(),
                "ratelimited"
                    | "service_unavailable"
                    | "request_timeout"
                    | "internal_error"
                    | "fatal_error"
            ),
            Self::RateLimited { .. } | Self::Transport { .. } => true,
            Self::Status { status, .. } => *status >= 500,
            Self::Decode { .. } | Self::TooLarge { .. } => false,
        }
    }

    /// Slack's error code, when Slack answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}
