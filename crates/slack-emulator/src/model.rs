//! The emulator's public vocabulary: the app and approver a test configures, the faults it
//! injects, and the calls and tokens it inspects afterwards.
//!
//! `Call` and `IssuedToken` hold raw secret values in public fields (tests compare them with
//! what the operator stored), but their `Debug` output redacts every secret, so a failed
//! assertion that prints one never leaks a token, a code or a client secret.

use std::{
    collections::BTreeMap,
    fmt,
    time::{Duration, SystemTime},
};

/// A Slack app, as its settings page would configure it.
#[derive(Clone, PartialEq, Eq)]
pub struct App {
    /// The app ID (`A…`), reported as `app_id` by `oauth.v2.access` and `auth.test`.
    pub app_id: String,
    /// The display name shown on the consent page and reported as `app_name` by `auth.test`.
    pub name: String,
    /// The OAuth client ID.
    pub client_id: String,
    /// The OAuth client secret.
    pub client_secret: String,
    /// The configured Redirect URLs, in order; the first is used when an authorize request
    /// sends no `redirect_uri`.
    pub redirect_urls: Vec<String>,
    /// Token rotation (`settings.token_rotation_enabled`): access tokens expire after
    /// [`token_lifetime`](Self::token_lifetime) and come with single-use refresh tokens.
    pub token_rotation: bool,
    /// How long a rotating access token lives, on the emulator's clock. Slack's is always 12
    /// hours ([`ROTATING_TOKEN_LIFETIME`](crate::ROTATING_TOKEN_LIFETIME)), the default; a
    /// shorter one lets a test see tokens rotate in real time. Unused without rotation.
    pub token_lifetime: Duration,
}

impl App {
    /// An app with one Redirect URL, a random app ID, a generic name and rotation off.
    pub fn new(client_id: &str, client_secret: &str, redirect_url: &str) -> Self {
        Self {
            app_id: crate::ids::app_id(),
            name: "Test App".to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            redirect_urls: vec![redirect_url.to_owned()],
            token_rotation: false,
            token_lifetime: crate::ROTATING_TOKEN_LIFETIME,
        }
    }

    /// The same app with token rotation turned on.
    pub fn with_token_rotation(mut self) -> Self {
        self.token_rotation = true;
        self
    }

    /// The same app with token rotation turned on and rotating access tokens that live
    /// `lifetime` instead of Slack's 12 hours. `oauth.v2.access` reports it as `expires_in` in
    /// whole seconds (rounded down, at least 1); the token itself expires after exactly
    /// `lifetime` on the emulator's clock.
    pub fn with_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_rotation = true;
        self.token_lifetime = lifetime;
        self
    }

    /// The same app with another display name.
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// The same app with one more Redirect URL, after the existing ones.
    pub fn with_redirect_url(mut self, redirect_url: &str) -> Self {
        self.redirect_urls.push(redirect_url.to_owned());
        self
    }
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("app_id", &self.app_id)
            .field("name", &self.name)
            .field("client_id", &self.client_id)
            .field("client_secret", &REDACTED)
            .field("redirect_urls", &self.redirect_urls)
            .field("token_rotation", &self.token_rotation)
            .field("token_lifetime", &self.token_lifetime)
            .finish()
    }
}

/// A Slack workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Team {
    /// The workspace ID (`T…`).
    pub id: String,
    /// The workspace name.
    pub name: String,
}

/// An Enterprise Grid organization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enterprise {
    /// The organization ID (`E…`).
    pub id: String,
    /// The organization name.
    pub name: String,
}

/// The person who clicks Allow on the consent page, and what they install on.
///
/// Slack lets the signed-in user choose the workspace (or, for an Org Owner, the organization
/// in the drop-down); that choice wins over the authorize URL's `team` hint, so the approver
/// alone decides where the app is installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approver {
    /// The approving user's ID (`U…`), reported as `authed_user.id`.
    pub user_id: String,
    /// The approving user's name, reported as `user` by `auth.test`.
    pub user_name: String,
    /// The workspace the app is installed on; `None` for an org-wide install.
    pub team: Option<Team>,
    /// The Enterprise Grid organization, if the workspace belongs to one or the install is
    /// org-wide.
    pub enterprise: Option<Enterprise>,
    /// Whether the approver chose the organization rather than a workspace (org-wide install).
    pub enterprise_install: bool,
    /// User scopes granted; `None` grants exactly the requested `user_scope`.
    pub granted_user_scopes: Option<Vec<String>>,
    /// Bot scopes granted; `None` grants exactly the requested `scope`.
    pub granted_bot_scopes: Option<Vec<String>>,
}

impl Approver {
    /// The owner of a stand-alone workspace, installing on it.
    pub fn workspace_owner(team_id: &str, team_name: &str) -> Self {
        Self {
            user_id: "U0OWNER0001".to_owned(),
            user_name: "owner".to_owned(),
            team: Some(Team {
                id: team_id.to_owned(),
                name: team_name.to_owned(),
            }),
            enterprise: None,
            enterprise_install: false,
            granted_user_scopes: None,
            granted_bot_scopes: None,
        }
    }

    /// An Org Owner of an Enterprise Grid organization, installing org-wide.
    pub fn org_owner(enterprise_id: &str, enterprise_name: &str) -> Self {
        Self {
            user_id: "W0ORGOWNER1".to_owned(),
            user_name: "org-owner".to_owned(),
            team: None,
            enterprise: Some(Enterprise {
                id: enterprise_id.to_owned(),
                name: enterprise_name.to_owned(),
            }),
            enterprise_install: true,
            granted_user_scopes: None,
            granted_bot_scopes: None,
        }
    }

    /// An owner of a workspace inside an Enterprise Grid organization, installing on that
    /// workspace only (the drop-down left on the workspace).
    pub fn grid_workspace_owner(
        team_id: &str,
        team_name: &str,
        enterprise_id: &str,
        enterprise_name: &str,
    ) -> Self {
        Self {
            user_id: "W0OWNER0001".to_owned(),
            enterprise: Some(Enterprise {
                id: enterprise_id.to_owned(),
                name: enterprise_name.to_owned(),
            }),
            ..Self::workspace_owner(team_id, team_name)
        }
    }

    /// The same approver with another user ID.
    pub fn with_user(mut self, user_id: &str, user_name: &str) -> Self {
        self.user_id = user_id.to_owned();
        self.user_name = user_name.to_owned();
        self
    }

    /// The ID of what the app is installed on: the organization for an org-wide install,
    /// otherwise the workspace.
    pub(crate) fn install_target(&self) -> (&str, &str) {
        match (&self.team, &self.enterprise) {
            (_, Some(e)) if self.enterprise_install => (&e.id, &e.name),
            (Some(t), _) => (&t.id, &t.name),
            // `set_approver` refuses this combination.
            (None, _) => ("", ""),
        }
    }

    /// Why this approver cannot approve anything, if it cannot.
    pub(crate) fn inconsistency(&self) -> Option<&'static str> {
        if self.enterprise_install && self.enterprise.is_none() {
            Some("an org-wide install (enterprise_install) needs an enterprise")
        } else if !self.enterprise_install && self.team.is_none() {
            Some("a workspace install needs a team")
        } else {
            None
        }
    }
}

impl Default for Approver {
    /// The owner of workspace `T0000000001` ("Test Workspace").
    fn default() -> Self {
        Self::workspace_owner("T0000000001", "Test Workspace")
    }
}

/// What the approver clicks on the consent page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allow: Slack redirects with a `code`.
    Allow,
    /// Cancel: Slack redirects with `error=access_denied`.
    Cancel,
}

/// A failure injected into the next call of one Web API method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 200 with `{"ok": false, "error": <code>}`.
    Error(String),
    /// HTTP 429 with `Retry-After: <secs>` and `{"ok": false, "error": "ratelimited"}`.
    RateLimited {
        /// The `Retry-After` value, in seconds.
        retry_after_secs: u64,
    },
    /// This HTTP status (e.g. 503) with a short HTML body, as Slack's edge answers when the
    /// backend is down. An invalid status code becomes 500.
    ServerError(u16),
    /// Wait this long (real time), then answer normally.
    Delay(Duration),
    /// Answer normally (a code exchange issues its token at once), but hold the answer back this
    /// long (real time) before sending it: as when the network is slow, or the caller dies, after
    /// Slack has acted.
    DelayAnswer(Duration),
}

/// How a Web API call authenticated the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic` with `client_id:client_secret` (Slack's recommendation).
    Basic,
    /// `client_id`/`client_secret` in the body.
    Form,
    /// Neither.
    None,
}

/// One Web API call the emulator answered.
#[derive(Clone, PartialEq)]
pub struct Call {
    /// The Web API method, e.g. `oauth.v2.access`.
    pub method: String,
    /// The HTTP method, e.g. `POST`.
    pub http_method: String,
    /// The `Content-Type` header as sent.
    pub content_type: Option<String>,
    /// How the app authenticated, if it did.
    pub client_auth: ClientAuth,
    /// The client ID claimed by Basic auth or the body.
    pub client_id: Option<String>,
    /// The body parameters (form fields, or a JSON object's members as strings). Raw values:
    /// use [`Call::param`] or the named accessors in tests, never `{:?}` of this map directly
    /// (`{:?}` of the whole `Call` is safe).
    pub params: BTreeMap<String, String>,
    /// The `Authorization: Bearer` token, raw.
    pub bearer: Option<String>,
    /// The HTTP status answered.
    pub status: u16,
    /// The JSON body answered (raw, tokens included); `Null` when the body was not JSON.
    pub response: serde_json::Value,
}

impl Call {
    /// A body parameter, raw.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The authorization `code` sent, raw.
    pub fn code(&self) -> Option<&str> {
        self.param("code")
    }

    /// The `client_secret` sent in the body, raw (Basic credentials are not kept).
    pub fn client_secret(&self) -> Option<&str> {
        self.param("client_secret")
    }

    /// The `refresh_token` sent, raw.
    pub fn refresh_token(&self) -> Option<&str> {
        self.param("refresh_token")
    }

    /// The token the call authenticated with: the Bearer token, else the body's `token`, raw.
    pub fn token(&self) -> Option<&str> {
        self.bearer.as_deref().or_else(|| self.param("token"))
    }

    /// Slack's `error` code when the answer was `ok: false`.
    pub fn error(&self) -> Option<&str> {
        self.response.get("error").and_then(|e| e.as_str())
    }

    /// Whether the answer was `ok: true`.
    pub fn ok(&self) -> bool {
        self.response.get("ok").and_then(|ok| ok.as_bool()) == Some(true)
    }
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params: BTreeMap<&str, &str> = self
            .params
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_param(k) || looks_like_token(v) {
                    REDACTED
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("Call")
            .field("method", &self.method)
            .field("http_method", &self.http_method)
            .field("content_type", &self.content_type)
            .field("client_auth", &self.client_auth)
            .field("client_id", &self.client_id)
            .field("params", &params)
            .field("bearer", &self.bearer.as_ref().map(|_| REDACTED))
            .field("status", &self.status)
            .field("response", &redact_json(&self.response))
            .finish()
    }
}

/// Whether a token is a bot or a user token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TokenKind {
    /// `xoxp-` (or `xoxe.xoxp-`), from `authed_user`.
    User,
    /// `xoxb-` (or `xoxe.xoxb-`), the top-level `access_token`.
    Bot,
}

/// An access token the emulator issued.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The access token, raw.
    pub token: String,
    /// Bot or user.
    pub kind: TokenKind,
    /// The client ID of the app it was issued to.
    pub client_id: String,
    /// The app ID of the app it was issued to.
    pub app_id: String,
    /// The user it acts as: the approver for a user token, the bot user for a bot token.
    pub user_id: String,
    /// The workspace; `None` for an org-wide install.
    pub team_id: Option<String>,
    /// The organization, for Grid installs.
    pub enterprise_id: Option<String>,
    /// Whether it came from an org-wide install.
    pub is_enterprise_install: bool,
    /// The granted scopes.
    pub scopes: Vec<String>,
    /// Whether it was revoked (`auth.revoke`, `SlackEmulator::revoke`, or pushed out by newer
    /// rotated tokens); `auth.test` then answers `token_revoked`.
    pub revoked: bool,
    /// The refresh token issued with it (rotation only), raw.
    pub refresh_token: Option<String>,
    /// When it was issued, on the emulator's clock.
    pub issued_at: SystemTime,
    /// When it expires, on the emulator's clock (rotation only).
    pub expires_at: Option<SystemTime>,
}

impl IssuedToken {
    /// Whether it has expired at `now` (the emulator's clock, see `SlackEmulator::now`).
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &redact_token(&self.token))
            .field("kind", &self.kind)
            .field("client_id", &self.client_id)
            .field("app_id", &self.app_id)
            .field("user_id", &self.user_id)
            .field("team_id", &self.team_id)
            .field("enterprise_id", &self.enterprise_id)
            .field("is_enterprise_install", &self.is_enterprise_install)
            .field("scopes", &self.scopes)
            .field("revoked", &self.revoked)
            .field(
                "refresh_token",
                &self.refresh_token.as_deref().map(redact_token),
            )
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why [`SlackEmulator::authorize`](crate::SlackEmulator::authorize) did not reach a decision.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizeError {
    /// The argument is not a URL.
    #[error("failed to open the consent page: the authorize URL does not parse")]
    InvalidUrl,
    /// The URL points somewhere other than this emulator's `/oauth/v2/authorize`.
    #[error("failed to open the consent page: {url} is not this emulator's authorize page")]
    NotThisEmulator {
        /// The URL without its query.
        url: String,
    },
    /// Slack showed an error page instead of the consent page (no redirect happens).
    #[error("failed to open the consent page: Slack shows the error page {code}")]
    ErrorPage {
        /// The error, e.g. `bad_redirect_uri`, `invalid_client_id`, `invalid_scope`.
        code: String,
    },
}

const REDACTED: &str = "[redacted]";

/// Body parameters whose values are secrets.
fn is_secret_param(name: &str) -> bool {
    matches!(
        name,
        "client_secret" | "code" | "token" | "refresh_token" | "code_verifier"
    )
}

fn looks_like_token(value: &str) -> bool {
    value.starts_with("xox")
}

/// A token's non-secret prefix, e.g. `xoxe.xoxp-1-[redacted]`.
pub(crate) fn redact_token(token: &str) -> String {
    const PREFIXES: [&str; 5] = ["xoxe.xoxp-1-", "xoxe.xoxb-1-", "xoxe-1-", "xoxp-", "xoxb-"];
    let prefix = PREFIXES
        .iter()
        .find(|p| token.starts_with(*p))
        .copied()
        .unwrap_or("");
    format!("{prefix}{REDACTED}")
}

fn redact_json(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if matches!(k.as_str(), "access_token" | "refresh_token") {
                        Value::String(REDACTED.to_owned())
                    } else {
                        redact_json(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact_json).collect()),
        Value::String(s) if looks_like_token(s) => Value::String(redact_token(s)),
        other => other.clone(),
    }
}
