//! The world under test: the watched namespaces and their grants, the operator's own namespace,
//! a namespace the operator does not watch (for the bare client), the Slack emulator, and the
//! walk through the approval flow.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use serde_json::json;
use slack_emulator::Decision;
use slack_oauth_operator::api::SlackOAuthGrant;

use crate::{
    bare,
    support::{self, Launch, Operator, TestNamespace, TestSlack},
};

/// The client Secret every grant names, one per namespace.
pub const CLIENT_SECRET_NAME: &str = "slack-app";
/// Approvals walked through at once while setting up.
const SETUP_CONCURRENCY: usize = 32;

pub struct Fleet {
    pub client: Client,
    /// The namespaces the operator reconciles; grant `i` lives in `watched[i % len]`.
    pub watched: Vec<TestNamespace>,
    /// The operator's own: its Lease, state key and exchange records.
    pub home: TestNamespace,
    /// Not watched: the bare client's grants live here.
    pub bare: TestNamespace,
    pub slack: TestSlack,
    callback_port: u16,
    /// Does not follow redirects, as the approval walk reads each one.
    pub http: reqwest::Client,
}

impl Fleet {
    /// Installs the CRD, creates the namespaces with a shared client Secret in each, and starts
    /// the Slack emulator.
    pub async fn create(namespaces: usize) -> Self {
        let client = support::client().await;
        support::install_crd(&client).await;
        let mut watched = Vec::new();
        for _ in 0..namespaces {
            watched.push(TestNamespace::create(&client, "scale").await);
        }
        let home = TestNamespace::create(&client, "scale-operator").await;
        let bare = TestNamespace::create(&client, "scale-bare").await;
        let callback_port = support::free_port();
        let slack = TestSlack::start("scale", callback_port).await;
        for ns in watched.iter().chain([&bare]) {
            Api::<Secret>::namespaced(client.clone(), &ns.name)
                .create(
                    &PostParams::default(),
                    &support::shared_client_secret(CLIENT_SECRET_NAME, &slack.client_secret),
                )
                .await
                .expect("create the client Secret");
        }
        Self {
            client,
            watched,
            home,
            bare,
            slack,
            callback_port,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("http client"),
        }
    }

    /// Every namespace the bench created, for the audit log and the clean-up.
    pub fn namespaces(&self) -> Vec<String> {
        self.watched
            .iter()
            .chain([&self.home, &self.bare])
            .map(|ns| ns.name.clone())
            .collect()
    }

    /// Starts the operator process, always on the same callback port (the Slack app's
    /// redirect URI), without waiting for it to be ready.
    pub fn spawn_operator(&self, name: &str) -> Operator {
        let watched: Vec<&str> = self.watched.iter().map(|ns| ns.name.as_str()).collect();
        Operator::spawn(Launch {
            name,
            watch_namespace: &watched.join(","),
            lease_namespace: &self.home.name,
            callback_port: self.callback_port,
            public_url: None,
            slack_url: &self.slack.url(),
            slack_api_url: &self.slack.api_url(),
            kubeconfig: None,
            extra: &[],
        })
    }

    pub fn watched_names(&self) -> Vec<String> {
        self.watched.iter().map(|ns| ns.name.clone()).collect()
    }

    pub fn grants_in(&self, namespace: &str) -> Api<SlackOAuthGrant> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The watched namespace of grant number `i`.
    pub fn namespace_of(&self, i: usize) -> &str {
        &self.watched[i % self.watched.len()].name
    }

    /// A grant with the emulator's app, as its owner writes it.
    pub fn grant(&self, name: &str) -> SlackOAuthGrant {
        serde_json::from_value(json!({
            "apiVersion": "slack-oauth-operator.io/v1alpha1",
            "kind": "SlackOAuthGrant",
            "metadata": { "name": name },
            "spec": {
                "clientID": self.slack.client_id,
                "clientSecretRef": { "name": CLIENT_SECRET_NAME },
                "secret": { "name": format!("{name}-token") }
            }
        }))
        .expect("grant")
    }

    /// Creates grants `<prefix>-<i>` for `numbers`, spread over the watched namespaces.
    pub async fn create_grants(&self, prefix: &str, numbers: std::ops::Range<usize>) {
        futures::stream::iter(numbers)
            .for_each_concurrent(SETUP_CONCURRENCY, |i| async move {
                let name = format!("{prefix}-{i}");
                self.grants_in(self.namespace_of(i))
                    .create(&PostParams::default(), &self.grant(&name))
                    .await
                    .unwrap_or_else(|e| panic!("create grant {name}: {e}"));
            })
            .await;
    }

    /// Waits up to `within` until `count` grants of the watched namespaces satisfy `done`,
    /// listing them every 2 s; returns those that do.
    pub async fn wait_for(
        &self,
        what: &str,
        count: usize,
        within: Duration,
        done: impl Fn(&SlackOAuthGrant) -> bool,
    ) -> Vec<SlackOAuthGrant> {
        let started = Instant::now();
        loop {
            let mut finished = Vec::new();
            for ns in &self.watched {
                let listed = bare::paged_list(&self.grants_in(&ns.name), &ListParams::default())
                    .await
                    .unwrap_or_default();
                finished.extend(listed.into_iter().filter(|g| done(g)));
            }
            if finished.len() >= count {
                return finished;
            }
            assert!(
                started.elapsed() < within,
                "only {} of {count} grants were {what} within {within:?}",
                finished.len()
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Opens a grant's approval link and clicks Allow on Slack's consent page: the callback URL
    /// Slack sends the browser back to, with a fresh code.
    pub async fn consent(&self, link: &str) -> String {
        let consent = support::open_link(&self.http, link).await;
        self.slack
            .emulator
            .authorize(&consent, Decision::Allow)
            .await
            .expect("Slack's consent page accepts the link")
    }

    /// Approves every grant of `grants` through the consent page and the operator's callback.
    pub async fn approve(&self, grants: &[SlackOAuthGrant]) {
        let links: Vec<String> = grants
            .iter()
            .filter_map(|g| g.status.as_ref()?.authorization_url.clone())
            .collect();
        assert_eq!(links.len(), grants.len(), "every grant has a link");
        futures::stream::iter(&links)
            .for_each_concurrent(SETUP_CONCURRENCY, |link| async move {
                let back = self.consent(link).await;
                let answer = self
                    .http
                    .get(&back)
                    .send()
                    .await
                    .expect("the callback answers");
                let status = answer.status();
                assert!(
                    status.is_success(),
                    "the callback failed with {status}: {}",
                    answer.text().await.unwrap_or_default()
                );
            })
            .await;
    }
}
