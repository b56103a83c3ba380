//! A Slack emulator for tests of slack-oauth-operator: Slack's OAuth v2 consent page
//! (`/oauth/v2/authorize`) and the Web API methods the operator calls (`oauth.v2.access`,
//! `auth.test`, `auth.revoke`), served over plain HTTP on a local port.
//!
//! It follows the team's research notes (`reference/slack-oauth.md`); the source tags in doc
//! comments (`[OAUTH]`, `[V2ACCESS]`, `[ROT]`, …) point into them. Where the notes mark a
//! behaviour UNCONFIRMED, the emulator picks the stricter reading and says so where it does.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use slack_emulator::{App, Approver, Decision, SlackEmulator};
//!
//! let slack = SlackEmulator::start().await?;
//! slack.register_app(App::new("123.456", "s3cr3t", "http://127.0.0.1:8080/oauth/callback"));
//! slack.set_approver(Approver::workspace_owner("T0ACME", "Acme"));
//! // Operator flags: --slack-url <slack.url()> --slack-api-url <slack.api_url()>
//! let link = format!("{}/oauth/v2/authorize?client_id=123.456&user_scope=admin&state=s1", slack.url());
//! let back = slack.authorize(&link, Decision::Allow).await.expect("consent");
//! assert!(back.starts_with("http://127.0.0.1:8080/oauth/callback?code="));
//! # Ok(()) }
//! ```
//!
//! What the emulator does, in short:
//! - **Consent** (`GET /oauth/v2/authorize`): checks `client_id`, `redirect_uri` (Slack's
//!   equal-or-sub-path rule; `http` only for loopback hosts) and the scope lists, then shows a
//!   page naming the app, the scopes and where the current [`Approver`] installs it, with
//!   Allow/Cancel buttons (`#allow`, `#cancel`). Problems are error pages, never redirects.
//! - **Codes**: single-use, 10 minutes on the emulator's clock ([`SlackEmulator::advance_clock`]).
//! - **`oauth.v2.access`**: Basic or body client credentials; Slack's response shapes for user,
//!   bot and org-wide installs; with rotation, `xoxe.` tokens, 12-hour expiry (or
//!   [`App::with_token_lifetime`]) and single-use refresh tokens. Every exchange issues fresh
//!   tokens; scopes are additive per installation.
//! - **SCIM** (`GET /scim/v2/Users`, [`SlackEmulator::scim_url`]): a live user token with
//!   `admin`, on a plan with SCIM ([`SlackEmulator::set_scim_available`]) and, on Enterprise
//!   Grid, from an org-wide install; errors in SCIM v2's shape (401 for authentication, 403 for
//!   `plus_teams_only` and `non_org_teams_only`; the exact statuses are UNCONFIRMED).
//! - **`auth.test` / `auth.revoke`**: Bearer or body `token`; `x-oauth-scopes` on answers for a
//!   valid token.
//! - **Faults** ([`Fault`]) queued per method, and a record of every call ([`Call`]) and token
//!   ([`IssuedToken`]), whose `Debug` output redacts secrets; which tokens of an installation
//!   are live ([`SlackEmulator::live_tokens`]).
//!
//! Readings of what the notes leave open (each also documented where it is implemented):
//! - Every authorize-step problem (`invalid_client_id`, `bad_redirect_uri`, `invalid_scope`,
//!   `no_scopes`) is an HTTP 400 error page; only Cancel redirects with `?error=`.
//! - `http://` Redirect URLs are accepted for loopback hosts only; a configured URL with a
//!   query must be matched with the same query; `admin` as a bot scope is `invalid_scope`.
//! - The `team` hint is shown but never overrides the approver's choice of workspace.
//! - Another app's code is `invalid_code` and not consumed; a failed exchange that passed
//!   client authentication consumes the code; a replay is `invalid_code` (not
//!   `code_already_used`) and does not revoke the tokens of the first exchange.
//! - Without `redirect_uri` on the authorize step, one sent on the exchange must name the URL
//!   Slack used.
//! - Every exchange issues new tokens (re-installs do not hand back an existing token).
//! - Refresh tokens die at first use (no grace period); a refreshed access token stays live
//!   until its own expiry; the two-active-tokens limit is enforced on refresh;
//!   `invalid_refresh_token` comes as HTTP 200 (not `invalid_grant`/400).
//! - A revoked token (by `auth.revoke`, [`SlackEmulator::revoke`] or the two-active-tokens
//!   limit) is `token_revoked`, an expired rotating token `token_expired`, and only a token the
//!   emulator never issued `invalid_auth`; `auth.revoke` with `test=1` answers
//!   `revoked: false`.
//! - Only POST is served (405 otherwise, where Slack would accept GET); query parameters are
//!   never read; tokens in a JSON body are ignored (Bearer only), as Slack documents for JSON.

mod consent;
mod ids;
mod model;
mod redirect;
mod scopes;
mod server;
mod slack;

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub use model::{
    App, Approver, AuthorizeError, Call, ClientAuth, Decision, Enterprise, Fault, IssuedToken,
    Team, TokenKind,
};
pub use slack::{CODE_LIFETIME, ROTATING_TOKEN_LIFETIME, SCIM_USERS};

use crate::{server::Shared, slack::AuthorizeRequest};

/// A running emulator. Clones share it; it stops when the last clone is dropped or on
/// [`shutdown`](Self::shutdown).
#[derive(Clone)]
pub struct SlackEmulator {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    slack: Shared,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(stop) = self
            .stop
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = stop.send(());
        }
    }
}

impl std::fmt::Debug for SlackEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackEmulator")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl SlackEmulator {
    /// Starts an emulator on `127.0.0.1` with a free port, served by a task on the current
    /// tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Starts an emulator on `addr` (port 0 picks a free one).
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let slack: Shared = Arc::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let router = server::router(slack.clone());
        let task = tokio::spawn(async move {
            let serving = axum::serve(listener, router).with_graceful_shutdown(async move {
                // A dropped sender also means stop.
                let _ = stopped.await;
            });
            if let Err(error) = serving.await {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "Slack emulator stopped"
                );
            }
        });
        tracing::debug!(%addr, "Slack emulator listening");
        Ok(Self {
            inner: Arc::new(Inner {
                addr,
                slack,
                stop: Mutex::new(Some(stop)),
                task: Mutex::new(Some(task)),
            }),
        })
    }

    /// The base URL of Slack's pages, e.g. `http://127.0.0.1:40123`; the consent page is
    /// `<url>/oauth/v2/authorize`. Pass it as the operator's `--slack-url`.
    pub fn url(&self) -> String {
        let mut addr = self.inner.addr;
        // A wildcard listen address is not something to connect to.
        if addr.ip().is_unspecified() {
            addr.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    /// The Web API base URL, `<url>/api`; methods are `<api_url>/<method>`. Pass it as the
    /// operator's `--slack-api-url`.
    pub fn api_url(&self) -> String {
        format!("{}/api", self.url())
    }

    /// The address the emulator listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    fn slack(&self) -> std::sync::MutexGuard<'_, slack::Slack> {
        server::lock(&self.inner.slack)
    }

    /// Registers an app (replacing one with the same client ID).
    pub fn register_app(&self, app: App) {
        self.slack().register_app(app);
    }

    /// Sets who approves from now on: the user, and the workspace or organization the app is
    /// installed on. It applies to every later Allow until changed. Without a call, the
    /// approver is [`Approver::default`].
    ///
    /// # Panics
    /// If the approver is inconsistent: an org-wide install without an enterprise, or a
    /// workspace install without a team. That is a mistake in the test, not a Slack behaviour.
    pub fn set_approver(&self, approver: Approver) {
        if let Some(problem) = approver.inconsistency() {
            panic!("Slack emulator: invalid approver: {problem}");
        }
        self.slack().set_approver(approver);
    }

    /// What a browser does on the consent page, without a browser: the checks of opening
    /// `authorize_url` (which must be this emulator's `/oauth/v2/authorize`), then a click on
    /// Allow or Cancel. Returns the URL Slack redirects the browser to:
    /// `redirect_uri?code=…&state=…` or `redirect_uri?error=access_denied&state=…`.
    /// Where Slack would show an error page instead, returns [`AuthorizeError::ErrorPage`].
    pub async fn authorize(
        &self,
        authorize_url: &str,
        decision: Decision,
    ) -> Result<String, AuthorizeError> {
        let url = url::Url::parse(authorize_url).map_err(|_| AuthorizeError::InvalidUrl)?;
        let ours = url::Url::parse(&self.url()).map_err(|_| AuthorizeError::InvalidUrl)?;
        let same_origin = url.scheme() == ours.scheme()
            && url.host() == ours.host()
            && url.port_or_known_default() == ours.port_or_known_default();
        if !same_origin || url.path() != "/oauth/v2/authorize" {
            let mut shown = url.clone();
            shown.set_query(None);
            return Err(AuthorizeError::NotThisEmulator {
                url: shown.to_string(),
            });
        }
        let request = AuthorizeRequest::from_pairs(url.query_pairs().into_owned());
        let mut slack = self.slack();
        let consent =
            slack
                .check_authorize(&request)
                .map_err(|error| AuthorizeError::ErrorPage {
                    code: error.code().to_owned(),
                })?;
        Ok(slack.decide(&consent, decision))
    }

    /// Queues `fault` for the next call of `method` (`oauth.v2.access`, `auth.revoke`,
    /// `auth.test`, …). Faults of one method apply in the order they were queued, one per
    /// call, before the method runs; faulted calls are recorded like any other.
    pub fn inject(&self, method: &str, fault: Fault) {
        self.inject_times(method, fault, 1);
    }

    /// Queues `fault` for the next `times` calls of `method`.
    pub fn inject_times(&self, method: &str, fault: Fault, times: usize) {
        self.slack().inject(method, fault, times);
    }

    /// Drops every fault still queued for `method`: it answers normally again.
    pub fn clear_faults(&self, method: &str) {
        self.slack().clear_faults(method);
    }

    /// Every Web API call so far, in the order answered (a delayed call is recorded when its
    /// answer is ready).
    pub fn calls(&self) -> Vec<Call> {
        self.slack().calls()
    }

    /// Every access token issued so far, in issue order, with its current revoked flag.
    pub fn issued_tokens(&self) -> Vec<IssuedToken> {
        self.slack().issued_tokens()
    }

    /// SCIM's base URL on the emulator (`<url>/scim/v2/`), serving `GET Users`.
    pub fn scim_url(&self) -> String {
        format!("{}/scim/v2/", self.url().trim_end_matches('/'))
    }

    /// Puts the workspace or organization `installed_on` on a plan without SCIM (`false`: SCIM
    /// answers `plus_teams_only`) or back on one with it (`true`, the default).
    pub fn set_scim_available(&self, installed_on: &str, available: bool) {
        self.slack().set_scim(installed_on, available);
    }

    /// Whether `token` is an issued access token that is neither revoked nor expired.
    pub fn is_live(&self, token: &str) -> bool {
        self.slack().is_live(token)
    }

    /// The live access tokens (see [`is_live`](Self::is_live)) of app `client_id` installed on
    /// `installed_on`: the workspace ID, or the organization ID for an org-wide install. Bot
    /// and user tokens of every approver, in issue order.
    pub fn live_tokens(&self, client_id: &str, installed_on: &str) -> Vec<IssuedToken> {
        self.slack().live_tokens(client_id, installed_on)
    }

    /// Revokes `token` as a workspace admin would in Slack's UI (no Web API call is
    /// recorded). Returns whether it was live.
    pub fn revoke(&self, token: &str) -> bool {
        self.slack().revoke(token)
    }

    /// The emulator's clock: real time plus everything [`advance_clock`](Self::advance_clock)
    /// added. Code and token expiry use it.
    pub fn now(&self) -> SystemTime {
        self.slack().now()
    }

    /// Moves the emulator's clock forward, to expire codes (10 minutes) or rotating tokens
    /// ([`App::token_lifetime`], 12 hours by default) without waiting. Injected delays still
    /// take real time.
    pub fn advance_clock(&self, by: Duration) {
        self.slack().advance_clock(by);
    }

    /// Stops serving, for every clone of this handle, and waits up to 5 seconds for calls in
    /// flight to finish.
    pub async fn shutdown(self) {
        let stop = self
            .inner
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut task) = task
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}
