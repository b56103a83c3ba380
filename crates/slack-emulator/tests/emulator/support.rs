//! A running emulator with one app, and the HTTP a client of Slack would send.

use std::collections::BTreeMap;

use reqwest::{StatusCode, header::HeaderMap};
use serde_json::Value;
use slack_emulator::{App, Approver, Decision, SlackEmulator};

pub const CLIENT_ID: &str = "1234567890123.9876543210987";
pub const CLIENT_SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
pub const REDIRECT: &str = "http://127.0.0.1:9/oauth/callback";

pub struct Fixture {
    pub slack: SlackEmulator,
    pub http: reqwest::Client,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).expect("a JSON body")
    }

    pub fn error(&self) -> Option<String> {
        self.json()["error"].as_str().map(str::to_owned)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Fixture {
    /// An emulator with the test app (rotation off) and the owner of workspace Acme.
    pub async fn start() -> Self {
        Self::with_app(App::new(CLIENT_ID, CLIENT_SECRET, REDIRECT)).await
    }

    pub async fn with_app(app: App) -> Self {
        let slack = SlackEmulator::start().await.expect("start the emulator");
        slack.register_app(app);
        slack.set_approver(Approver::workspace_owner("T0ACME", "Acme"));
        install_tls_provider();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Self { slack, http }
    }

    /// The authorize URL with `query`.
    pub fn link(&self, query: &[(&str, &str)]) -> String {
        let mut url =
            url::Url::parse(&format!("{}/oauth/v2/authorize", self.slack.url())).expect("url");
        url.query_pairs_mut().extend_pairs(query);
        url.into()
    }

    /// The operator's usual link: `user_scope=admin`, the redirect URI and a state.
    pub fn user_link(&self) -> String {
        self.link(&[
            ("client_id", CLIENT_ID),
            ("scope", ""),
            ("user_scope", "admin"),
            ("redirect_uri", REDIRECT),
            ("state", "state-1"),
        ])
    }

    /// Approves `link` and returns the code.
    pub async fn code_for(&self, link: &str) -> String {
        let back = self
            .slack
            .authorize(link, Decision::Allow)
            .await
            .expect("consent");
        query_of(&back)
            .remove("code")
            .expect("a code in the redirect")
    }

    /// A code for the usual link.
    pub async fn code(&self) -> String {
        self.code_for(&self.user_link()).await
    }

    /// `oauth.v2.access` with Basic auth, the code and the usual redirect URI.
    pub async fn exchange(&self, code: &str) -> Reply {
        self.post_basic(
            "oauth.v2.access",
            CLIENT_ID,
            CLIENT_SECRET,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
            ],
        )
        .await
    }

    /// A successful exchange's body.
    pub async fn install(&self, link: &str) -> Value {
        let code = self.code_for(link).await;
        let reply = self.exchange(&code).await;
        let body = reply.json();
        assert_eq!(body["ok"], true, "{body}");
        body
    }

    /// A form POST to a Web API method, optionally with a Bearer token.
    pub async fn post(&self, method: &str, form: &[(&str, &str)], bearer: Option<&str>) -> Reply {
        let mut request = self.http.post(self.method_url(method)).form(form);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        reply(request).await
    }

    /// A form POST with HTTP Basic client credentials.
    pub async fn post_basic(
        &self,
        method: &str,
        client_id: &str,
        client_secret: &str,
        form: &[(&str, &str)],
    ) -> Reply {
        let request = self
            .http
            .post(self.method_url(method))
            .basic_auth(client_id, Some(client_secret))
            .form(form);
        reply(request).await
    }

    pub fn method_url(&self, method: &str) -> String {
        format!("{}/{method}", self.slack.api_url())
    }
}

pub async fn reply(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("the emulator answers");
    Reply {
        status: response.status(),
        headers: response.headers().clone(),
        text: response.text().await.expect("body"),
    }
}

/// The query parameters of a URL.
pub fn query_of(url: &str) -> BTreeMap<String, String> {
    url::Url::parse(url)
        .expect("a URL")
        .query_pairs()
        .into_owned()
        .collect()
}

/// In the workspace, reqwest is built without a default TLS provider (the operator picks ring),
/// so every client of these tests needs one installed first, even for plain-HTTP requests.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
