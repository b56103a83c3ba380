//! The real Slack client, over HTTPS with reqwest.
//!
//! Every method is a form-encoded POST. The code exchange authenticates the app with HTTP Basic,
//! as Slack recommends. Transient failures (429, 5xx, transport errors, Slack's own
//! `ratelimited`/`service_unavailable`...) are retried with exponential backoff, honouring
//! `Retry-After`, until the caller's deadline.

use std::time::Duration;

use reqwest::{StatusCode, header::RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::time::Instant;
use tracing::{debug, warn};
use url::Url;

use super::{
    CodeExchange, OAuthAccess, Provisioning, Refreshed, SlackApi, SlackError, TokenIdentity,
    TokenRefresh, is_dead_token, is_error_code,
};
use crate::retry::Backoff;

/// Timeouts and backoff of [`SlackClient`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Limit on one HTTP request, connection included.
    pub request_timeout: Duration,
    /// First backoff; doubled after each failure.
    pub initial_backoff: Duration,
    /// Longest backoff between two attempts.
    pub max_backoff: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(15),
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Slack's Web API at a configurable base URL (`https://slack.com/api/` by default).
#[derive(Clone, Debug)]
pub struct SlackClient {
    http: reqwest::Client,
    api_url: Url,
    /// SCIM v2's base (`https://api.slack.com/scim/v2/` by default).
    scim_url: Url,
    options: ClientOptions,
}

/// What every Web API answer has.
#[derive(Deserialize)]
struct Envelope {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
}

impl SlackClient {
    pub fn new(api_url: Url, options: ClientOptions) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .connect_timeout(options.request_timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("slack-oauth-operator/", env!("CARGO_PKG_VERSION")))
            // A redirect from the Web API is never expected; following one could send the
            // credentials elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let scim_url =
            Url::parse("https://api.slack.com/scim/v2/").unwrap_or_else(|_| api_url.clone());
        Ok(Self {
            http,
            api_url,
            scim_url,
            options,
        })
    }

    /// The same client with SCIM at `scim_url`.
    pub fn with_scim_url(mut self, mut scim_url: Url) -> Self {
        if !scim_url.path().ends_with('/') {
            scim_url.set_path(&format!("{}/", scim_url.path()));
        }
        self.scim_url = scim_url;
        self
    }

    /// One SCIM probe: the answer, or a failure with Slack's Retry-After.
    async fn scim_attempt(
        &self,
        url: &Url,
        token: &SecretString,
    ) -> Result<Provisioning, (SlackError, Option<Duration>)> {
        const METHOD: &str = "scim Users";
        let response = self
            .http
            .get(url.clone())
            .bearer_auth(token.expose_secret())
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|source| {
                let source = source.without_url();
                (
                    SlackError::Transport {
                        method: METHOD,
                        source,
                    },
                    None,
                )
            })?;
        let status = response.status();
        let retry_after = retry_after(&response);
        if status == StatusCode::OK {
            return Ok(Provisioning::Ready);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let wait = retry_after.unwrap_or(self.options.initial_backoff);
            let error = SlackError::RateLimited {
                method: METHOD,
                retry_after: wait,
            };
            return Err((error, Some(wait)));
        }
        if status.is_server_error() {
            let error = SlackError::Status {
                method: METHOD,
                status: status.as_u16(),
            };
            return Err((error, retry_after));
        }
        let body = read_limited(METHOD, response).await.unwrap_or_default();
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.get("detail")
                    .or_else(|| v.pointer("/Errors/description"))
                    .and_then(|d| d.as_str())
                    .map(sanitize_code)
            })
            .filter(|code| code != "unknown_error")
            .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
        Ok(Provisioning::Refused(detail))
    }

    /// POSTs `form` to `method` until it succeeds, fails for good, or `deadline` passes.
    async fn call(
        &self,
        method: &'static str,
        form: &[(&str, &str)],
        auth: Auth<'_>,
        deadline: Instant,
    ) -> Result<Vec<u8>, SlackError> {
        let url = self
            .api_url
            .join(method)
            .unwrap_or_else(|_| self.api_url.clone());
        let mut backoff = Backoff::new(self.options.initial_backoff, self.options.max_backoff);
        for attempt in 1u32.. {
            let (error, retry_after) = match self.attempt(method, &url, form, auth).await {
                Ok(body) => return Ok(body),
                Err(failed) => failed,
            };
            if !error.is_transient() {
                return Err(error);
            }
            // Slack's Retry-After wins over our own backoff.
            let next = backoff.next_delay();
            let wait = retry_after.unwrap_or(next);
            if Instant::now() + wait >= deadline {
                warn!(
                    method,
                    attempt,
                    error = &error as &dyn std::error::Error,
                    "giving up on Slack: deadline reached"
                );
                return Err(error);
            }
            debug!(method, attempt, wait_ms = wait.as_millis() as u64, error = %error, "retrying Slack call");
            tokio::time::sleep(wait).await;
        }
        unreachable!("the attempts are counted without end")
    }

    /// One POST. A failure comes with Slack's Retry-After, if it sent one.
    async fn attempt(
        &self,
        method: &'static str,
        url: &Url,
        form: &[(&str, &str)],
        auth: Auth<'_>,
    ) -> Result<Vec<u8>, (SlackError, Option<Duration>)> {
        let mut request = self.http.post(url.clone()).form(form);
        request = match auth {
            Auth::Basic(user, password) => request.basic_auth(user, Some(password.expose_secret())),
            Auth::Bearer(token) => request.bearer_auth(token.expose_secret()),
        };
        let response = request.send().await.map_err(|source| {
            let source = source.without_url();
            (SlackError::Transport { method, source }, None)
        })?;
        let status = response.status();
        let retry_after = retry_after(&response);
        if status == StatusCode::TOO_MANY_REQUESTS {
            let wait = retry_after.unwrap_or(self.options.initial_backoff);
            let error = SlackError::RateLimited {
                method,
                retry_after: wait,
            };
            return Err((error, Some(wait)));
        }
        if status != StatusCode::OK {
            let error = SlackError::Status {
                method,
                status: status.as_u16(),
            };
            return Err((error, retry_after));
        }
        let body = read_limited(method, response)
            .await
            .map_err(|e| (e, None))?;
        let envelope: Envelope = serde_json::from_slice(&body)
            .map_err(|source| (SlackError::Decode { method, source }, None))?;
        if envelope.ok {
            return Ok(body);
        }
        let code = envelope.error.unwrap_or_else(|| "unknown_error".to_owned());
        let code = sanitize_code(&code);
        Err((SlackError::Api { method, code }, retry_after))
    }
}

impl SlackClient {
    /// `oauth.v2.access` with `form`, the app authenticated by `app`, decoded as `T`.
    async fn oauth_access<T: serde::de::DeserializeOwned>(
        &self,
        form: &[(&str, &str)],
        app: Auth<'_>,
        deadline: Instant,
    ) -> Result<T, SlackError> {
        const METHOD: &str = "oauth.v2.access";
        let body = self.call(METHOD, form, app, deadline).await?;
        serde_json::from_slice(&body).map_err(|source| SlackError::Decode {
            method: METHOD,
            source,
        })
    }
}

/// How a Web API call authenticates: the app (HTTP Basic, as Slack recommends for the code
/// exchange) or a token.
#[derive(Clone, Copy)]
enum Auth<'a> {
    Basic(&'a str, &'a SecretString),
    Bearer(&'a SecretString),
}

impl SlackApi for SlackClient {
    async fn exchange_code(
        &self,
        request: &CodeExchange,
        deadline: Instant,
    ) -> Result<OAuthAccess, SlackError> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", request.code.expose_secret()),
            ("redirect_uri", request.redirect_uri.as_str()),
        ];
        let app = Auth::Basic(&request.client_id, &request.client_secret);
        self.oauth_access(&form, app, deadline).await
    }

    async fn refresh(
        &self,
        request: &TokenRefresh,
        deadline: Instant,
    ) -> Result<Refreshed, SlackError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", request.refresh_token.expose_secret()),
        ];
        let app = Auth::Basic(&request.client_id, &request.client_secret);
        self.oauth_access(&form, app, deadline).await
    }

    async fn scim_probe(
        &self,
        token: &SecretString,
        deadline: Instant,
    ) -> Result<Provisioning, SlackError> {
        let mut url = self
            .scim_url
            .join("Users")
            .unwrap_or_else(|_| self.scim_url.clone());
        url.query_pairs_mut().append_pair("count", "1");
        let mut backoff = Backoff::new(self.options.initial_backoff, self.options.max_backoff);
        loop {
            let (error, retry_after) = match self.scim_attempt(&url, token).await {
                Ok(answer) => return Ok(answer),
                Err(failed) => failed,
            };
            let wait = retry_after.unwrap_or_else(|| backoff.next_delay());
            if Instant::now() + wait >= deadline {
                return Err(error);
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn revoke(&self, token: &SecretString, deadline: Instant) -> Result<(), SlackError> {
        match self
            .call("auth.revoke", &[], Auth::Bearer(token), deadline)
            .await
        {
            Ok(_) => Ok(()),
            // The token is already gone: that is what revoking wanted.
            Err(error) if is_dead_token(&error) => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn check(
        &self,
        token: &SecretString,
        deadline: Instant,
    ) -> Result<TokenIdentity, SlackError> {
        const METHOD: &str = "auth.test";
        let body = self
            .call(METHOD, &[], Auth::Bearer(token), deadline)
            .await?;
        serde_json::from_slice(&body).map_err(|source| SlackError::Decode {
            method: METHOD,
            source,
        })
    }
}

/// The most of an answer that is read: Slack's OAuth answers are a few KiB.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// Reads the body, refusing (without buffering) anything longer than [`MAX_BODY_BYTES`].
async fn read_limited(
    method: &'static str,
    mut response: reqwest::Response,
) -> Result<Vec<u8>, SlackError> {
    let too_large = SlackError::TooLarge {
        method,
        limit: MAX_BODY_BYTES,
    };
    if response
        .content_length()
        .is_some_and(|length| length > MAX_BODY_BYTES as u64)
    {
        return Err(too_large);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|source| SlackError::Transport { method, source })?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let seconds: u64 = response
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds.min(600)))
}

/// Slack's error codes are kept only when they look like codes, so an unexpected answer can never
/// carry text of Slack's (or anyone's) choosing into a status or a page.
fn sanitize_code(code: &str) -> String {
    if is_error_code(code) {
        code.to_owned()
    } else {
        "unknown_error".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_error_codes_are_kept_only_when_they_look_like_codes() {
        assert_eq!(sanitize_code("invalid_code"), "invalid_code");
        assert_eq!(sanitize_code("<script>"), "unknown_error");
        assert_eq!(sanitize_code("xoxp-123-secret"), "unknown_error");
        assert_eq!(sanitize_code(""), "unknown_error");
    }

    /// A server that answers every request with HTTP 200 and `body_len` bytes of JSON-ish text.
    async fn oversized_slack(body_len: usize) -> Url {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listener");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {body_len}\r\n\r\n"
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&vec![b' '; body_len]).await;
            }
        });
        Url::parse(&format!("http://{addr}/api/")).expect("url")
    }

    #[tokio::test]
    async fn an_answer_larger_than_any_slack_sends_is_refused_unread() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = SlackClient::new(
            oversized_slack(MAX_BODY_BYTES + 1).await,
            ClientOptions::default(),
        )
        .expect("client");
        let token = SecretString::from("xoxp-test");
        let deadline = Instant::now() + Duration::from_secs(5);
        let error = client.revoke(&token, deadline).await.expect_err("refused");
        assert!(matches!(error, SlackError::TooLarge { .. }), "{error:?}");
        assert!(!error.is_transient(), "not retried");
    }

    #[test]
    fn transient_errors_are_classified_in_one_place() {
        let api = |code: &str| SlackError::Api {
            method: "m",
            code: code.to_owned(),
        };
        assert!(api("ratelimited").is_transient());
        assert!(api("service_unavailable").is_transient());
        assert!(!api("invalid_code").is_transient());
        assert!(!api("bad_client_secret").is_transient());
        assert!(
            SlackError::Status {
                method: "m",
                status: 503
            }
            .is_transient()
        );
        assert!(
            !SlackError::Status {
                method: "m",
                status: 404
            }
            .is_transient()
        );
    }
}
