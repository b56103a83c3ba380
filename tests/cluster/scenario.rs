//! One authorization scenario: a namespace, a Slack emulator, an operator process, and helpers to
//! create grants and walk through Slack's consent page.

use std::{path::Path, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use slack_emulator::Decision;
use slack_oauth_operator::api::SlackOAuthGrant;

use crate::support::{self, BrowserPage, Operator, TestNamespace, TestSlack};

pub const CLIENT_SECRET_NAME: &str = "slack-app";
pub const TOKEN_SECRET_NAME: &str = "slack-token";

pub struct Scenario {
    pub client: Client,
    pub ns: TestNamespace,
    pub slack: TestSlack,
    pub operator: Operator,
    pub grants: Api<SlackOAuthGrant>,
    pub secrets: Api<Secret>,
    pub http: reqwest::Client,
    name: String,
}

/// What the operator's callback answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Scenario {
    /// A scenario with the usual operator, in a namespace of its own.
    pub async fn start(name: &str) -> Self {
        Self::builder(name).start().await
    }

    /// A scenario with more than the usual: operator flags, another identity, another Lease
    /// namespace, or an existing namespace.
    pub fn builder(name: &str) -> ScenarioBuilder<'_> {
        ScenarioBuilder {
            name,
            flags: &[],
            kubeconfig: None,
            lease_namespace: None,
            namespace: None,
        }
    }

    /// The Secret with the Slack app's Client Secret, as the admin creates it.
    pub async fn create_client_secret(&self) {
        self.create_client_secret_with(&self.slack.client_secret.clone())
            .await;
    }

    /// The client Secret, shared with the namespace's grants as docs/security.md requires.
    pub async fn create_client_secret_with(&self, value: &str) {
        self.create_secret_for_grants(
            CLIENT_SECRET_NAME,
            json!({ "slack-oauth-operator.io/shared-with-grants": "true" }),
            value,
        )
        .await;
    }

    /// A client Secret with these labels (none: not shared with any grant).
    pub async fn create_secret_for_grants(&self, name: &str, labels: Value, value: &str) {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": { "name": name, "labels": labels },
            "stringData": { "clientSecret": value }
        }))
        .expect("secret");
        self.secrets
            .create(&PostParams::default(), &secret)
            .await
            .expect("create the client secret");
    }

    /// Applies a grant `name` with the scenario's client ID; `spec` is merged over the basics.
    pub async fn apply_grant(&self, name: &str, spec: Value) -> SlackOAuthGrant {
        let mut full = json!({
            "clientID": self.slack.client_id,
            "clientSecretRef": { "name": CLIENT_SECRET_NAME },
            "secret": { "name": TOKEN_SECRET_NAME }
        });
        merge(&mut full, spec);
        let grant = json!({
            "apiVersion": "slack-oauth-operator.io/v1alpha1",
            "kind": "SlackOAuthGrant",
            "metadata": { "name": name },
            "spec": full
        });
        self.grants
            .patch(
                name,
                &PatchParams::apply(&self.name).force(),
                &Patch::Apply(&grant),
            )
            .await
            .expect("apply the grant")
    }

    /// Waits for the grant's authorization link and returns it.
    pub async fn link(&self, grant: &str) -> String {
        let grant = support::wait_for_grant(&self.grants, grant, |g| {
            g.status
                .as_ref()
                .is_some_and(|s| s.authorization_url.is_some())
        })
        .await;
        grant
            .status
            .and_then(|s| s.authorization_url)
            .expect("link")
    }

    /// Waits for a link other than `previous`.
    pub async fn new_link(&self, grant: &str, previous: &str) -> String {
        let grant = support::wait_for_grant(&self.grants, grant, |g| {
            g.status
                .as_ref()
                .and_then(|s| s.authorization_url.as_deref())
                .is_some_and(|u| u != previous)
        })
        .await;
        grant
            .status
            .and_then(|s| s.authorization_url)
            .expect("link")
    }

    /// What Slack's consent page does when the owner clicks Allow or Cancel: the URL Slack
    /// sends the browser back to.
    pub async fn decide(&self, link: &str, decision: Decision) -> String {
        // An approval link; or Slack's own page, as a test builds it for a tool other than the
        // operator.
        let consent = if link.starts_with(&self.slack.url()) {
            link.to_owned()
        } else {
            self.open(link).await
        };
        self.slack
            .emulator
            .authorize(&consent, decision)
            .await
            .expect("Slack's consent page accepts the link")
    }

    /// Opening the approval link: Slack's consent page, with a fresh state.
    pub async fn open(&self, link: &str) -> String {
        support::open_link(&self.http, link).await
    }

    /// The browser following Slack's redirect back to the operator.
    pub async fn callback(&self, url: &str) -> Answer {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .expect("the callback answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("body");
        Answer {
            status,
            body,
            headers,
        }
    }

    /// Turns on Slack token rotation for the scenario's app, with tokens that live `lifetime`.
    pub fn rotate_tokens(&self, lifetime: Duration) {
        self.slack.emulator.register_app(
            slack_emulator::App::new(
                &self.slack.client_id,
                &self.slack.client_secret,
                &self.slack.redirect_uri,
            )
            .with_token_lifetime(lifetime),
        );
    }

    /// Approves the approval `link` and exchanges the code itself, as a tool other than
    /// the operator (Ping's hosted service) would: Slack's whole `oauth.v2.access` answer.
    pub async fn exchange_by_hand(&self, link: &str) -> Value {
        let back = self.decide(link, Decision::Allow).await;
        let code = url::Url::parse(&back)
            .expect("redirect")
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("a code");
        self.http
            .post(format!(
                "{}/oauth.v2.access",
                self.slack.api_url().trim_end_matches('/')
            ))
            .basic_auth(&self.slack.client_id, Some(&self.slack.client_secret))
            .form(&[
                ("code", code.as_str()),
                ("redirect_uri", &self.slack.redirect_uri),
            ])
            .send()
            .await
            .expect("exchange")
            .json()
            .await
            .expect("json")
    }

    /// A Slack owner opening `link` in headless Chromium and clicking Allow: the page the
    /// operator answers with.
    pub async fn approve_in_browser(&self, link: &str) -> BrowserPage {
        support::approve_in_browser(link).await
    }

    /// Allow, then follow the redirect.
    pub async fn approve(&self, link: &str) -> Answer {
        let back = self.decide(link, Decision::Allow).await;
        self.callback(&back).await
    }

    pub async fn wait_ready(&self, grant: &str) -> SlackOAuthGrant {
        support::wait_for_grant(&self.grants, grant, |g| {
            support::ready_reason(g).as_deref() == Some("Authorized")
        })
        .await
    }

    pub async fn wait_reason(&self, grant: &str, reason: &str) -> SlackOAuthGrant {
        support::wait_for_grant(&self.grants, grant, |g| {
            support::ready_reason(g).as_deref() == Some(reason)
        })
        .await
    }

    pub async fn token_secret(&self) -> Option<Secret> {
        self.secrets
            .get_opt(TOKEN_SECRET_NAME)
            .await
            .expect("read the token Secret")
    }

    /// The token stored under `key`.
    pub async fn stored_token(&self, key: &str) -> Option<String> {
        let secret = self.token_secret().await?;
        let bytes = secret.data?.remove(key)?;
        Some(String::from_utf8(bytes.0).expect("utf-8"))
    }

    pub async fn delete_grant(&self, name: &str) {
        self.grants
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete the grant");
        for _ in 0..100 {
            if self.grants.get_opt(name).await.expect("read").is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("grant {name} was not deleted");
    }

    /// Every token Slack issued in this scenario, except `kept`, has been revoked.
    pub fn assert_all_revoked_but(&self, kept: Option<&str>) {
        for token in self.slack.tokens() {
            if Some(token.token.as_str()) == kept {
                assert!(!token.revoked, "the stored token must stay live");
            } else {
                assert!(
                    token.revoked,
                    "a token Slack issued was neither stored nor revoked: {token:?}"
                );
            }
        }
    }
}

/// How to start a [`Scenario`]: `Scenario::builder(name)`, then what differs, then `start()`.
pub struct ScenarioBuilder<'a> {
    name: &'a str,
    flags: &'a [&'a str],
    kubeconfig: Option<&'a Path>,
    lease_namespace: Option<&'a str>,
    namespace: Option<&'a TestNamespace>,
}

impl<'a> ScenarioBuilder<'a> {
    /// Flags for the operator besides the usual ones.
    pub fn flags(mut self, flags: &'a [&'a str]) -> Self {
        self.flags = flags;
        self
    }

    /// Runs the operator as the identity in `kubeconfig` rather than the tests' admin.
    pub fn kubeconfig(mut self, kubeconfig: &'a Path) -> Self {
        self.kubeconfig = Some(kubeconfig);
        self
    }

    /// Keeps the operator's leader Lease in `namespace` rather than the scenario's.
    pub fn lease_namespace(mut self, namespace: &'a str) -> Self {
        self.lease_namespace = Some(namespace);
        self
    }

    /// Runs the scenario in an existing namespace (the caller has installed the CRD) rather
    /// than in a new one.
    pub fn in_namespace(mut self, namespace: &'a TestNamespace) -> Self {
        self.namespace = Some(namespace);
        self
    }

    /// Starts the Slack emulator and the operator, and waits until the operator is ready.
    pub async fn start(self) -> Scenario {
        let client = support::client().await;
        let ns = match self.namespace {
            Some(ns) => ns.clone(),
            None => {
                support::install_crd(&client).await;
                TestNamespace::create(&client, self.name).await
            }
        };
        let port = support::free_port();
        let slack = TestSlack::start(self.name, port).await;
        let operator = Operator::launch(support::Launch {
            name: self.name,
            watch_namespace: &ns.name,
            lease_namespace: self.lease_namespace.unwrap_or(&ns.name),
            callback_port: port,
            public_url: None,
            slack_url: &slack.url(),
            slack_api_url: &slack.api_url(),
            kubeconfig: self.kubeconfig,
            extra: self.flags,
        })
        .await;
        Scenario {
            grants: Api::namespaced(client.clone(), &ns.name),
            secrets: Api::namespaced(client.clone(), &ns.name),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("http"),
            client,
            ns,
            slack,
            operator,
            name: self.name.to_owned(),
        }
    }
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, over) => *base = over,
    }
}
