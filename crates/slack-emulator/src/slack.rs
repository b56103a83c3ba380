//! The emulated Slack: apps, the consent step, codes, tokens and the Web API methods, as plain
//! state and functions of (state, request, now). No I/O happens here; `server` parses HTTP into
//! [`ApiRequest`]s and turns [`Answer`]s back into HTTP.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::{Duration, SystemTime},
};

use serde_json::{Map, Value, json};
use url::Url;

use crate::{
    ids,
    model::{App, Approver, Call, ClientAuth, Decision, Fault, IssuedToken, TokenKind},
    redirect, scopes,
};

/// An authorization code lives 10 minutes \[OAUTH\].
pub const CODE_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// A rotating access token lives 12 hours; `expires_in` is always 43200 \[ROT\]. It is the
/// default of [`App::token_lifetime`]; [`App::with_token_lifetime`] shortens it for tests.
pub const ROTATING_TOKEN_LIFETIME: Duration = Duration::from_secs(43_200);
/// At most two access tokens of one installation are active after refreshes \[ROT\].
const MAX_ACTIVE_ROTATED_TOKENS: usize = 2;

/// The query of `GET /oauth/v2/authorize`, or the hidden fields of the consent form. For a
/// repeated parameter the first occurrence counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AuthorizeRequest {
    pub client_id: Option<String>,
    pub scope: Option<String>,
    pub user_scope: Option<String>,
    pub redirect_uri: Option<String>,
    pub state: Option<String>,
    pub team: Option<String>,
}

impl AuthorizeRequest {
    pub(crate) fn from_pairs<'a>(pairs: impl IntoIterator<Item = (String, String)> + 'a) -> Self {
        let mut request = Self::default();
        for (name, value) in pairs {
            let slot = match name.as_str() {
                "client_id" => &mut request.client_id,
                "scope" => &mut request.scope,
                "user_scope" => &mut request.user_scope,
                "redirect_uri" => &mut request.redirect_uri,
                "state" => &mut request.state,
                "team" => &mut request.team,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value);
            }
        }
        request
    }
}

/// What the consent page shows and what Allow/Cancel act on.
#[derive(Clone, Debug)]
pub(crate) struct Consent {
    pub request: AuthorizeRequest,
    pub app_name: String,
    pub bot_scopes: Vec<String>,
    pub user_scopes: Vec<String>,
    /// Where the browser goes back to.
    pub redirect_to: Url,
    pub approver: Approver,
}

/// Why Slack shows an error page instead of the consent page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PageError {
    InvalidClientId,
    BadRedirectUri,
    InvalidScope,
    NoScopes,
    InvalidDecision,
}

impl PageError {
    pub(crate) fn code(self) -> &'static str {
        match self {
            Self::InvalidClientId => "invalid_client_id",
            Self::BadRedirectUri => "bad_redirect_uri",
            Self::InvalidScope => "invalid_scope",
            Self::NoScopes => "no_scopes",
            Self::InvalidDecision => "invalid_decision",
        }
    }

    pub(crate) fn explanation(self) -> &'static str {
        match self {
            Self::InvalidClientId => "No app has this client_id.",
            Self::BadRedirectUri => {
                "The redirect_uri is not one of the app's Redirect URLs (or a sub-path of one)."
            }
            Self::InvalidScope => "A requested scope is malformed or not allowed there.",
            Self::NoScopes => "The request asks for no scope and no user_scope.",
            Self::InvalidDecision => "The form carried neither Allow nor Cancel.",
        }
    }
}

/// A Web API request, parsed by `server`.
#[derive(Clone, Debug)]
pub(crate) struct ApiRequest {
    pub method: String,
    pub http_method: String,
    pub content_type: Option<String>,
    pub params: BTreeMap<String, String>,
    /// `Authorization: Basic`: the credentials, or `Err` when they do not decode.
    pub basic: Option<Result<(String, String), ()>>,
    /// `Authorization: Bearer`.
    pub bearer: Option<String>,
    /// The body was JSON: Slack reads tokens from the Authorization header only then.
    pub json_body: bool,
    /// A JSON body without `charset=utf-8`: Slack answers with a `missing_charset` warning.
    pub missing_charset: bool,
    /// The request failed before the method ran.
    pub rejection: Option<Rejection>,
}

/// A request refused before the method runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Not a POST.
    NotPost,
    /// A body problem, with Slack's error code.
    Body(&'static str),
}

/// What a Web API method answers.
#[derive(Clone, Debug)]
pub(crate) struct Answer {
    pub status: u16,
    /// A JSON body; otherwise `text` is the (HTML) body.
    pub json: Option<Value>,
    pub text: String,
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn ok(body: Value) -> Self {
        Self {
            status: 200,
            json: Some(body),
            text: String::new(),
            headers: Vec::new(),
        }
    }

    /// Slack's errors: HTTP 200 with `ok: false`.
    fn error(code: &str) -> Self {
        Self::ok(json!({ "ok": false, "error": code }))
    }

    fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The answer to an injected fault other than a delay.
    pub(crate) fn for_fault(fault: &Fault) -> Self {
        match fault {
            Fault::Error(code) => Self::error(code),
            Fault::RateLimited { retry_after_secs } => Self {
                status: 429,
                ..Self::error("ratelimited")
            }
            .with_header("retry-after", retry_after_secs.to_string()),
            Fault::ServerError(status) => {
                let status = if (100..=999).contains(status) {
                    *status
                } else {
                    500
                };
                Self {
                    status,
                    json: None,
                    text: format!(
                        "<html><body><h1>{status}</h1><p>Slack is having trouble.</p></body></html>"
                    ),
                    headers: Vec::new(),
                }
            }
            // Delays are handled by the caller; answering normally is the point.
            Fault::Delay(_) | Fault::DelayAnswer(_) => Self::error("internal_error"),
        }
    }
}

/// A code waiting for its exchange.
#[derive(Clone, Debug)]
struct PendingCode {
    client_id: String,
    /// The `redirect_uri` of the authorize step, if it sent one.
    redirect_uri_sent: Option<String>,
    /// The URL the browser was sent to.
    redirect_used: String,
    bot_scopes: Vec<String>,
    user_scopes: Vec<String>,
    approver: Approver,
    issued_at: SystemTime,
}

/// An issued access token with what `auth.test` and refreshes need to know about it.
#[derive(Clone, Debug)]
struct TokenRecord {
    issued: IssuedToken,
    user_name: String,
    team_name: Option<String>,
    enterprise_name: Option<String>,
    install_target: String,
    bot_id: Option<String>,
    refresh_used: bool,
}

impl TokenRecord {
    /// Tokens of one installation share this key: refreshes, the active-token limit and
    /// additive scopes work per installation.
    fn installation(&self) -> Installation {
        Installation {
            client_id: self.issued.client_id.clone(),
            target: self.install_target.clone(),
            kind: self.issued.kind,
            user_id: self.issued.user_id.clone(),
        }
    }

    fn is_active(&self, now: SystemTime) -> bool {
        !self.issued.revoked && !self.issued.is_expired_at(now)
    }
}

/// One app installed by one user (or as one bot) on one workspace or organization.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Installation {
    client_id: String,
    target: String,
    kind: TokenKind,
    user_id: String,
}

/// The bot user of one app on one workspace or organization.
#[derive(Clone, Debug)]
struct BotUser {
    user_id: String,
    bot_id: String,
}

/// Everything the emulated Slack knows.
#[derive(Debug, Default)]
pub(crate) struct Slack {
    clock_offset: Duration,
    apps: BTreeMap<String, App>,
    approver: Approver,
    codes: HashMap<String, PendingCode>,
    tokens: Vec<TokenRecord>,
    bot_users: HashMap<(String, String), BotUser>,
    faults: HashMap<String, VecDeque<Fault>>,
    calls: Vec<Call>,
    /// Workspaces or organizations on a plan without SCIM.
    without_scim: std::collections::HashSet<String>,
}

impl Slack {
    // ---- configuration and inspection ----

    /// The emulator's clock: real time plus everything `advance_clock` added.
    pub(crate) fn now(&self) -> SystemTime {
        SystemTime::now() + self.clock_offset
    }

    pub(crate) fn advance_clock(&mut self, by: Duration) {
        self.clock_offset += by;
    }

    pub(crate) fn register_app(&mut self, app: App) {
        self.apps.insert(app.client_id.clone(), app);
    }

    pub(crate) fn set_approver(&mut self, approver: Approver) {
        self.approver = approver;
    }

    pub(crate) fn inject(&mut self, method: &str, fault: Fault, times: usize) {
        let queue = self.faults.entry(method.to_owned()).or_default();
        queue.extend(std::iter::repeat_n(fault, times));
    }

    pub(crate) fn clear_faults(&mut self, method: &str) {
        self.faults.remove(method);
    }

    /// The next fault queued for `method`, if any.
    pub(crate) fn take_fault(&mut self, method: &str) -> Option<Fault> {
        self.faults.get_mut(method)?.pop_front()
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.calls.clone()
    }

    pub(crate) fn issued_tokens(&self) -> Vec<IssuedToken> {
        self.tokens.iter().map(|t| t.issued.clone()).collect()
    }

    pub(crate) fn is_live(&self, token: &str) -> bool {
        let now = self.now();
        self.token(token).is_some_and(|t| t.is_active(now))
    }

    /// The live tokens of app `client_id` installed on `installed_on` (a workspace ID, or the
    /// organization ID of an org-wide install), bot and user, in issue order.
    pub(crate) fn live_tokens(&self, client_id: &str, installed_on: &str) -> Vec<IssuedToken> {
        let now = self.now();
        self.tokens
            .iter()
            .filter(|t| {
                t.issued.client_id == client_id
                    && t.install_target == installed_on
                    && t.is_active(now)
            })
            .map(|t| t.issued.clone())
            .collect()
    }

    /// Revokes `token` as an admin would in Slack's UI; whether it was live.
    pub(crate) fn revoke(&mut self, token: &str) -> bool {
        let now = self.now();
        match self.tokens.iter_mut().find(|t| t.issued.token == token) {
            Some(record) if record.is_active(now) => {
                record.issued.revoked = true;
                true
            }
            _ => false,
        }
    }

    fn token(&self, token: &str) -> Option<&TokenRecord> {
        self.tokens.iter().find(|t| t.issued.token == token)
    }

    /// Puts `installed_on` (a workspace or organization ID) on a plan with or without SCIM.
    pub(crate) fn set_scim(&mut self, installed_on: &str, available: bool) {
        if available {
            self.without_scim.remove(installed_on);
        } else {
            self.without_scim.insert(installed_on.to_owned());
        }
    }

    pub(crate) fn without_scim(&self, installed_on: &str) -> bool {
        self.without_scim.contains(installed_on)
    }

    /// Records a call with its answer.
    pub(crate) fn record(&mut self, request: &ApiRequest, answer: &Answer) {
        let (client_auth, client_id) = match (&request.basic, request.params.get("client_id")) {
            (Some(Ok((id, _))), _) => (ClientAuth::Basic, Some(id.clone())),
            (Some(Err(())), _) => (ClientAuth::Basic, None),
            (None, Some(id)) => (ClientAuth::Form, Some(id.clone())),
            (None, None) if request.params.contains_key("client_secret") => {
                (ClientAuth::Form, None)
            }
            (None, None) => (ClientAuth::None, None),
        };
        self.calls.push(Call {
            method: request.method.clone(),
            http_method: request.http_method.clone(),
            content_type: request.content_type.clone(),
            client_auth,
            client_id,
            params: request.params.clone(),
            bearer: request.bearer.clone(),
            status: answer.status,
            response: answer.json.clone().unwrap_or(Value::Null),
        });
    }

    // ---- the consent step ----

    /// The checks Slack runs before it shows the consent page. Failures are error pages on
    /// Slack's side, never redirects: a `redirect_uri` that was not verified must not receive
    /// the browser, and which install errors Slack sends back as `?error=` is UNCONFIRMED, so
    /// the emulator sends none (only `access_denied`, for Cancel).
    pub(crate) fn check_authorize(&self, request: &AuthorizeRequest) -> Result<Consent, PageError> {
        let app = request
            .client_id
            .as_deref()
            .and_then(|id| self.apps.get(id))
            .ok_or(PageError::InvalidClientId)?;
        let redirect_to = match request.redirect_uri.as_deref() {
            Some(sent) if redirect::is_allowed(sent, &app.redirect_urls) => {
                redirect::parse(sent).ok_or(PageError::BadRedirectUri)?
            }
            Some(_) => return Err(PageError::BadRedirectUri),
            None => redirect::default_for(&app.redirect_urls).ok_or(PageError::BadRedirectUri)?,
        };
        let bot_scopes =
            scopes::parse(request.scope.as_deref()).map_err(|_| PageError::InvalidScope)?;
        let user_scopes =
            scopes::parse(request.user_scope.as_deref()).map_err(|_| PageError::InvalidScope)?;
        if bot_scopes.iter().any(|s| scopes::is_user_only(s)) {
            return Err(PageError::InvalidScope);
        }
        if bot_scopes.is_empty() && user_scopes.is_empty() {
            return Err(PageError::NoScopes);
        }
        Ok(Consent {
            request: request.clone(),
            app_name: app.name.clone(),
            bot_scopes,
            user_scopes,
            redirect_to,
            approver: self.approver.clone(),
        })
    }

    /// Allow or Cancel on a checked consent: the URL the browser is redirected to. Allow
    /// issues a single-use code that expires 10 minutes later on the emulator's clock.
    pub(crate) fn decide(&mut self, consent: &Consent, decision: Decision) -> String {
        let mut url = consent.redirect_to.clone();
        match decision {
            Decision::Allow => {
                let code = ids::code();
                let pending = PendingCode {
                    client_id: consent.request.client_id.clone().unwrap_or_default(),
                    redirect_uri_sent: consent.request.redirect_uri.clone(),
                    redirect_used: consent.redirect_to.to_string(),
                    bot_scopes: consent.bot_scopes.clone(),
                    user_scopes: consent.user_scopes.clone(),
                    approver: self.approver.clone(),
                    issued_at: self.now(),
                };
                url.query_pairs_mut().append_pair("code", &code);
                self.codes.insert(code, pending);
            }
            Decision::Cancel => {
                url.query_pairs_mut().append_pair("error", "access_denied");
            }
        }
        if let Some(state) = &consent.request.state {
            url.query_pairs_mut().append_pair("state", state);
        }
        url.into()
    }

    // ---- the Web API ----

    /// Runs one Web API method (faults already applied by the caller).
    pub(crate) fn call(&mut self, request: &ApiRequest) -> Answer {
        let answer = match request.rejection {
            Some(Rejection::NotPost) => Answer {
                status: 405,
                ..Answer::error("invalid_post_type")
            }
            .with_header("allow", "POST".to_owned()),
            Some(Rejection::Body(code)) => Answer::error(code),
            None => match request.method.as_str() {
                "oauth.v2.access" => self.oauth_v2_access(request),
                "auth.test" => self.auth_test(request),
                "auth.revoke" => self.auth_revoke(request),
                SCIM_USERS => self.scim_users(request.bearer.as_deref()),
                _ => Answer::error("unknown_method"),
            },
        };
        with_charset_warning(answer, request.missing_charset)
    }

    /// `oauth.v2.access`: the code exchange and, with rotation, the refresh.
    fn oauth_v2_access(&mut self, request: &ApiRequest) -> Answer {
        let app = match self.authenticate_client(request) {
            Ok(app) => app,
            Err(code) => return Answer::error(code),
        };
        match param(request, "grant_type") {
            None | Some("authorization_code") => self.exchange_code(request, &app),
            Some("refresh_token") => self.refresh(request, &app),
            Some(_) => Answer::error("invalid_grant_type"),
        }
    }

    /// Basic credentials win over body fields; a body `client_id` that contradicts them is
    /// refused. Missing credentials count as an unknown client.
    fn authenticate_client(&self, request: &ApiRequest) -> Result<App, &'static str> {
        let (client_id, secret) = match &request.basic {
            Some(Ok((id, secret))) => {
                if param(request, "client_id").is_some_and(|body_id| body_id != id) {
                    return Err("invalid_client_id");
                }
                (id.as_str(), secret.as_str())
            }
            Some(Err(())) => return Err("invalid_client_id"),
            None => (
                param(request, "client_id").ok_or("invalid_client_id")?,
                param(request, "client_secret").unwrap_or(""),
            ),
        };
        let app = self.apps.get(client_id).ok_or("invalid_client_id")?;
        if app.client_secret != secret {
            return Err("bad_client_secret");
        }
        Ok(app.clone())
    }

    fn exchange_code(&mut self, request: &ApiRequest, app: &App) -> Answer {
        let now = self.now();
        let Some(code) = param(request, "code") else {
            return Answer::error("invalid_code");
        };
        // Another app's code is refused without being consumed: it is not this app's to burn.
        if self
            .codes
            .get(code)
            .is_none_or(|pending| pending.client_id != app.client_id)
        {
            return Answer::error("invalid_code");
        }
        // From here on the code is used up, whatever the outcome: a replay is `invalid_code`.
        let Some(pending) = self.codes.remove(code) else {
            return Answer::error("invalid_code");
        };
        if now >= pending.issued_at + CODE_LIFETIME {
            return Answer::error("invalid_code");
        }
        let redirect_ok = match (&pending.redirect_uri_sent, param(request, "redirect_uri")) {
            (Some(sent), Some(got)) => sent == got,
            (Some(_), None) => false,
            (None, None) => true,
            // Not sent on the authorize step but sent now: it must name the URL Slack used.
            (None, Some(got)) => {
                got == pending.redirect_used || app.redirect_urls.first().is_some_and(|f| f == got)
            }
        };
        if !redirect_ok {
            return Answer::error("bad_redirect_uri");
        }
        self.install(app, &pending, now)
    }

    /// Issues the tokens of an approved code and answers in Slack's shape.
    fn install(&mut self, app: &App, pending: &PendingCode, now: SystemTime) -> Answer {
        let approver = &pending.approver;
        let bot_scopes = approver
            .granted_bot_scopes
            .clone()
            .unwrap_or_else(|| pending.bot_scopes.clone());
        let user_scopes = approver
            .granted_user_scopes
            .clone()
            .unwrap_or_else(|| pending.user_scopes.clone());
        let bot = (!bot_scopes.is_empty())
            .then(|| self.issue(app, approver, TokenKind::Bot, &bot_scopes, now));
        let user = (!user_scopes.is_empty())
            .then(|| self.issue(app, approver, TokenKind::User, &user_scopes, now));

        let mut body = json!({
            "ok": true,
            "app_id": app.app_id,
            "team": team_json(approver),
            "enterprise": enterprise_json(approver),
            "is_enterprise_install": approver.enterprise_install,
        });
        let mut authed_user = Map::new();
        authed_user.insert("id".into(), json!(approver.user_id));
        if let Some(index) = user {
            let record = &self.tokens[index];
            authed_user.insert("scope".into(), json!(record.issued.scopes.join(",")));
            authed_user.insert("access_token".into(), json!(record.issued.token));
            authed_user.insert("token_type".into(), json!("user"));
            insert_rotation(&mut authed_user, record, app);
        }
        body["authed_user"] = Value::Object(authed_user);
        if let (Some(index), Value::Object(top)) = (bot, &mut body) {
            let record = &self.tokens[index];
            top.insert("scope".into(), json!(record.issued.scopes.join(",")));
            top.insert("token_type".into(), json!("bot"));
            top.insert("access_token".into(), json!(record.issued.token));
            top.insert("bot_user_id".into(), json!(record.issued.user_id));
            insert_rotation(top, record, app);
        }
        Answer::ok(body)
    }

    /// Issues one access token; its index in `tokens`. Scopes are additive across installs of
    /// the same user (or bot) and app \[OAUTH\]: the new token also carries the scopes of the
    /// installation's tokens that are still active.
    fn issue(
        &mut self,
        app: &App,
        approver: &Approver,
        kind: TokenKind,
        granted: &[String],
        now: SystemTime,
    ) -> usize {
        let (target_id, _) = approver.install_target();
        let target_id = target_id.to_owned();
        let bot_user = match kind {
            TokenKind::Bot => Some(
                self.bot_users
                    .entry((app.client_id.clone(), target_id.clone()))
                    .or_insert_with(|| BotUser {
                        user_id: ids::object_id('U'),
                        bot_id: ids::object_id('B'),
                    })
                    .clone(),
            ),
            TokenKind::User => None,
        };
        let user_id = bot_user
            .as_ref()
            .map_or_else(|| approver.user_id.clone(), |b| b.user_id.clone());
        let key = Installation {
            client_id: app.client_id.clone(),
            target: target_id.clone(),
            kind,
            user_id: user_id.clone(),
        };
        let scopes = self
            .tokens
            .iter()
            .filter(|t| t.is_active(now) && t.installation() == key)
            .fold(granted.to_vec(), |all, t| {
                scopes::union(&all, &t.issued.scopes)
            });
        let (token, refresh_token, expires_at) = if app.token_rotation {
            (
                ids::rotating_token(kind == TokenKind::Bot),
                Some(ids::refresh_token()),
                expiry(now, app.token_lifetime),
            )
        } else {
            let token = match kind {
                TokenKind::Bot => ids::bot_token(),
                TokenKind::User => ids::user_token(),
            };
            (token, None, None)
        };
        let user_name = match &bot_user {
            Some(_) => slug(&app.name),
            None => approver.user_name.clone(),
        };
        self.tokens.push(TokenRecord {
            issued: IssuedToken {
                token,
                kind,
                client_id: app.client_id.clone(),
                app_id: app.app_id.clone(),
                user_id,
                team_id: if approver.enterprise_install {
                    None
                } else {
                    approver.team.as_ref().map(|t| t.id.clone())
                },
                enterprise_id: approver.enterprise.as_ref().map(|e| e.id.clone()),
                is_enterprise_install: approver.enterprise_install,
                scopes,
                revoked: false,
                refresh_token,
                issued_at: now,
                expires_at,
            },
            user_name,
            team_name: approver.team.as_ref().map(|t| t.name.clone()),
            enterprise_name: approver.enterprise.as_ref().map(|e| e.name.clone()),
            install_target: target_id,
            bot_id: bot_user.map(|b| b.bot_id),
            refresh_used: false,
        });
        self.tokens.len() - 1
    }

    /// `grant_type=refresh_token`. Refresh tokens are single-use; Slack revokes a used one
    /// "after a short grace period", the emulator at once (the defensive reading). The old
    /// access token stays valid until its own expiry, unless the two-active-tokens limit pushes
    /// it out. The new token lives the app's current [`App::token_lifetime`].
    fn refresh(&mut self, request: &ApiRequest, app: &App) -> Answer {
        let now = self.now();
        let Some(refresh_token) = param(request, "refresh_token") else {
            return Answer::error("invalid_refresh_token");
        };
        let Some(index) = self.tokens.iter().position(|t| {
            t.issued.refresh_token.as_deref() == Some(refresh_token)
                && t.issued.client_id == app.client_id
                && !t.refresh_used
        }) else {
            return Answer::error("invalid_refresh_token");
        };
        self.tokens[index].refresh_used = true;
        let old = self.tokens[index].clone();
        let kind = old.issued.kind;
        let mut renewed = old.clone();
        renewed.issued.token = ids::rotating_token(kind == TokenKind::Bot);
        renewed.issued.refresh_token = Some(ids::refresh_token());
        renewed.issued.revoked = false;
        renewed.issued.issued_at = now;
        renewed.issued.expires_at = expiry(now, app.token_lifetime);
        renewed.refresh_used = false;
        self.tokens.push(renewed);
        self.limit_active_tokens(&old, now);
        let record = self.tokens.last().unwrap_or(&old);

        let team = if record.issued.is_enterprise_install {
            Value::Null
        } else {
            json!({ "id": record.issued.team_id, "name": record.team_name })
        };
        let enterprise = match (&record.issued.enterprise_id, &record.enterprise_name) {
            (Some(id), name) => json!({ "id": id, "name": name }),
            (None, _) => Value::Null,
        };
        let mut body = json!({
            "ok": true,
            "app_id": record.issued.app_id,
            "scope": record.issued.scopes.join(","),
            "token_type": match kind { TokenKind::Bot => "bot", TokenKind::User => "user" },
            "access_token": record.issued.token,
            "refresh_token": record.issued.refresh_token,
            "expires_in": expires_in(app),
            "team": team,
            "enterprise": enterprise,
            "is_enterprise_install": record.issued.is_enterprise_install,
        });
        if kind == TokenKind::Bot {
            body["bot_user_id"] = json!(record.issued.user_id);
        }
        Answer::ok(body)
    }

    /// Revokes the oldest active tokens of `like`'s installation beyond the limit. Only a
    /// refresh applies it ("extra refreshes revoke the oldest" \[ROT\]); separate exchanges each
    /// stand on their own.
    fn limit_active_tokens(&mut self, like: &TokenRecord, now: SystemTime) {
        let key = like.installation();
        let mut active: Vec<usize> = (0..self.tokens.len())
            .filter(|&i| self.tokens[i].is_active(now) && self.tokens[i].installation() == key)
            .collect();
        active.sort_by_key(|&i| self.tokens[i].issued.issued_at);
        let excess = active.len().saturating_sub(MAX_ACTIVE_ROTATED_TOKENS);
        for &i in &active[..excess] {
            self.tokens[i].issued.revoked = true;
        }
    }

    /// The token a call authenticates with: Bearer, else the body's `token` (not for JSON
    /// bodies, where Slack only reads the Authorization header).
    fn calling_token(request: &ApiRequest) -> Option<&str> {
        request.bearer.as_deref().or_else(|| {
            if request.json_body {
                None
            } else {
                param(request, "token")
            }
        })
    }

    /// The live token record of a call, or Slack's error: `invalid_auth` for a token never
    /// issued, `token_revoked` for one revoked in any way (`auth.revoke`, an admin, or the
    /// two-active-tokens limit), `token_expired` for an expired rotating one.
    fn authenticate_token(&self, request: &ApiRequest) -> Result<usize, &'static str> {
        let token = Self::calling_token(request).ok_or("not_authed")?;
        let index = self
            .tokens
            .iter()
            .position(|t| t.issued.token == token)
            .ok_or("invalid_auth")?;
        let record = &self.tokens[index];
        // Slack documents `invalid_auth`, `token_revoked` and `token_expired`; the specific code
        // tells a test why the operator's token stopped working, and the operator must accept
        // each of them.
        if record.issued.revoked {
            return Err("token_revoked");
        }
        if record.issued.is_expired_at(self.now()) {
            return Err("token_expired");
        }
        Ok(index)
    }

    /// `auth.test`.
    fn auth_test(&self, request: &ApiRequest) -> Answer {
        let index = match self.authenticate_token(request) {
            Ok(index) => index,
            Err(code) => return Answer::error(code),
        };
        let record = &self.tokens[index];
        let issued = &record.issued;
        let app_name = self
            .apps
            .get(&issued.client_id)
            .map(|a| a.name.clone())
            .unwrap_or_default();
        // For an org-wide install the "team" is the organization: team_id is the enterprise
        // ID ([JAVA] SCIM2ClientImpl) and the URL is the org's.
        let (team_id, team_name, url) = if issued.is_enterprise_install {
            let name = record.enterprise_name.clone().unwrap_or_default();
            let url = format!("https://{}.enterprise.slack.com/", slug(&name));
            (issued.enterprise_id.clone(), name, url)
        } else {
            let name = record.team_name.clone().unwrap_or_default();
            let url = format!("https://{}.slack.com/", slug(&name));
            (issued.team_id.clone(), name, url)
        };
        let mut body = json!({
            "ok": true,
            "url": url,
            "team": team_name,
            "user": record.user_name,
            "team_id": team_id,
            "user_id": issued.user_id,
            "is_enterprise_install": issued.is_enterprise_install,
            "app_id": issued.app_id,
            "app_name": app_name,
        });
        if let Some(bot_id) = &record.bot_id {
            body["bot_id"] = json!(bot_id);
        }
        if let Some(enterprise_id) = &issued.enterprise_id {
            body["enterprise_id"] = json!(enterprise_id);
        }
        if let Some(expires_at) = issued.expires_at {
            let left = expires_at
                .duration_since(self.now())
                .unwrap_or(Duration::ZERO);
            body["expires_in"] = json!(left.as_secs());
        }
        Answer::ok(body).with_header("x-oauth-scopes", issued.scopes.join(","))
    }

    /// `auth.revoke`: revokes only the calling token (with rotation too \[ROT\]). `test=1` is a
    /// dry run, answered `revoked: false` because nothing was revoked (Slack's exact dry-run
    /// answer is not in the reference).
    fn auth_revoke(&mut self, request: &ApiRequest) -> Answer {
        let index = match self.authenticate_token(request) {
            Ok(index) => index,
            Err(code) => return Answer::error(code),
        };
        let dry_run = matches!(param(request, "test"), Some("1" | "true"));
        let record = &mut self.tokens[index];
        if !dry_run {
            record.issued.revoked = true;
        }
        let scopes = record.issued.scopes.join(",");
        Answer::ok(json!({ "ok": true, "revoked": !dry_run })).with_header("x-oauth-scopes", scopes)
    }
}

/// A body parameter; an empty value counts as absent.
fn param<'r>(request: &'r ApiRequest, name: &str) -> Option<&'r str> {
    request
        .params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn team_json(approver: &Approver) -> Value {
    match &approver.team {
        Some(team) if !approver.enterprise_install => json!({ "id": team.id, "name": team.name }),
        _ => Value::Null,
    }
}

fn enterprise_json(approver: &Approver) -> Value {
    match &approver.enterprise {
        Some(e) => json!({ "id": e.id, "name": e.name }),
        None => Value::Null,
    }
}

/// `refresh_token` and `expires_in` of a rotating token.
fn insert_rotation(object: &mut Map<String, Value>, record: &TokenRecord, app: &App) {
    if let Some(refresh_token) = &record.issued.refresh_token {
        object.insert("refresh_token".into(), json!(refresh_token));
        object.insert("expires_in".into(), json!(expires_in(app)));
    }
}

/// When a rotating token issued at `now` expires; a lifetime too long for the clock means
/// never.
fn expiry(now: SystemTime, lifetime: Duration) -> Option<SystemTime> {
    now.checked_add(lifetime)
}

/// `expires_in` of a new rotating token of `app`, in whole seconds: rounded down, so a client
/// that trusts it never holds an expired token, but at least 1, so a sub-second lifetime does
/// not read as already expired.
fn expires_in(app: &App) -> u64 {
    app.token_lifetime.as_secs().max(1)
}

/// Slack warns about a JSON body sent without `charset=utf-8` \[V2ACCESS\].
fn with_charset_warning(mut answer: Answer, missing_charset: bool) -> Answer {
    if let (true, Some(Value::Object(body))) = (missing_charset, &mut answer.json) {
        body.insert("warning".into(), json!("missing_charset"));
        body.insert(
            "response_metadata".into(),
            json!({ "warnings": ["missing_charset"] }),
        );
    }
    answer
}

/// A name as a subdomain: `Acme Grid` becomes `acme-grid`.
fn slug(name: &str) -> String {
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let slug = slug.trim_matches('-');
    if slug.is_empty() {
        "workspace".to_owned()
    } else {
        slug.to_owned()
    }
}

// SCIM v2 `GET /scim/v2/Users`, the probe the reference recommends for "can this token drive
// SCIM" (slack-oauth.md section 6): it needs a live user token with the `admin` scope, on a
// plan with SCIM (Business+ or Enterprise, else `plus_teams_only`), and on Enterprise Grid an
// org-wide install (else `non_org_teams_only`). Errors come in SCIM v2's shape,
// `{"schemas": [...Error], "detail": <code>, "status": <http>}`.
//
// Readings of what the reference leaves open: the HTTP status per code is UNCONFIRMED, so
// authentication problems are 401 and plan or install problems 403; `count` is honoured up to
// 1 (one user, the installer, is listed).

/// The method name SCIM's `GET /scim/v2/Users` is recorded and faulted under.
pub const SCIM_USERS: &str = "scim.Users";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

fn error(status: u16, detail: &str) -> Answer {
    let mut answer =
        Answer::ok(json!({ "schemas": [ERROR_SCHEMA], "detail": detail, "status": status }));
    answer.status = status;
    answer
}

impl Slack {
    // ---- SCIM ----

    /// `GET /scim/v2/Users` with `bearer`.
    pub(crate) fn scim_users(&self, bearer: Option<&str>) -> Answer {
        let Some(token) = bearer else {
            return error(401, "missing_authentication");
        };
        let now = self.now();
        let Some(record) = self.token(token).filter(|t| t.is_active(now)) else {
            return error(401, "invalid_authentication");
        };
        let issued = &record.issued;
        if issued.kind != TokenKind::User || !issued.scopes.iter().any(|s| s == "admin") {
            return error(401, "invalid_authentication");
        }
        let installed_on = record.install_target.as_str();
        if self.without_scim(installed_on) {
            return error(403, "plus_teams_only");
        }
        if issued.enterprise_id.is_some() && !issued.is_enterprise_install {
            return error(403, "non_org_teams_only");
        }
        Answer::ok(json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": 1,
            "itemsPerPage": 1,
            "startIndex": 1,
            "Resources": [{
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "id": issued.user_id,
                "userName": record.user_name,
                "active": true
            }]
        }))
    }
}
