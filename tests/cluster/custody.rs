//! Token custody: once Slack has answered, a token reaches its Secret or is revoked, whatever the
//! browser does, whatever the API server answers, and even when the operator is killed.
//!
//! Secret writes are made to fail with admission control, scoped by a label to this test's
//! namespace: a validating webhook that cannot be reached (the API server answers 500, a
//! transient error) and a ValidatingAdmissionPolicy that denies (a permanent one).

use std::time::Duration;

use k8s_openapi::api::{
    admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding, ValidatingWebhookConfiguration,
    },
    core::v1::Secret,
    events::v1::Event,
};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use serde_json::{Value, json};
use slack_emulator::{Decision, Fault};

use crate::{
    scenario::Scenario,
    support::{self, Operator},
};

/// Admission objects are cluster-scoped: each test names its own after its namespace, and
/// deletes them when dropped.
struct Admission {
    client: Client,
    webhook: Option<String>,
    policy: Option<String>,
}

impl Admission {
    fn new(client: &Client) -> Self {
        Self {
            client: client.clone(),
            webhook: None,
            policy: None,
        }
    }

    /// Makes every write of a Secret labelled `custody-test=<namespace>` fail with a 500: the
    /// webhook's URL is `upstream`, which accepts no TLS (`hang`) or no connection at all.
    async fn fail_secret_writes(&mut self, namespace: &str, upstream: &str) {
        let name = format!("custody-{namespace}");
        let webhook: ValidatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": { "name": name },
            "webhooks": [{
                "name": "unreachable.custody.slack-oauth-operator.io",
                "clientConfig": { "url": upstream },
                "rules": [{ "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["secrets"] }],
                "objectSelector": { "matchLabels": { "custody-test": namespace } },
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 2
            }]
        }))
        .expect("webhook");
        Api::<ValidatingWebhookConfiguration>::all(self.client.clone())
            .create(&PostParams::default(), &webhook)
            .await
            .expect("create the webhook");
        self.webhook = Some(name);
        self.wait_until_refused(namespace, None).await;
    }

    async fn allow_secret_writes(&mut self) {
        if let Some(name) = self.webhook.take() {
            let _ = Api::<ValidatingWebhookConfiguration>::all(self.client.clone())
                .delete(&name, &DeleteParams::default())
                .await;
        }
    }

    /// Denies for good every write of a Secret labelled `custody-deny=<namespace>`.
    async fn deny_secret_writes(&mut self, namespace: &str) {
        let name = format!("custody-deny-{namespace}");
        let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": { "resourceRules": [{ "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["secrets"] }] },
                "validations": [{ "expression": "false", "message": "denied by the custody test" }]
            }
        }))
        .expect("policy");
        let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": { "objectSelector": { "matchLabels": { "custody-deny": namespace } } }
            }
        }))
        .expect("binding");
        Api::<ValidatingAdmissionPolicy>::all(self.client.clone())
            .create(&PostParams::default(), &policy)
            .await
            .expect("create the policy");
        Api::<ValidatingAdmissionPolicyBinding>::all(self.client.clone())
            .create(&PostParams::default(), &binding)
            .await
            .expect("create the binding");
        self.policy = Some(name);
        self.wait_until_refused(namespace, Some(())).await;
    }

    /// Policies take effect a moment after they are created: wait until a probe Secret with the
    /// label is refused.
    async fn wait_until_refused(&self, namespace: &str, deny: Option<()>) {
        let secrets = Api::<Secret>::namespaced(self.client.clone(), namespace);
        let label = if deny.is_some() {
            "custody-deny"
        } else {
            "custody-test"
        };
        for attempt in 0..100 {
            let probe: Secret = serde_json::from_value(json!({
                "metadata": { "name": format!("probe-{attempt}"), "labels": { label: namespace } },
                "stringData": { "x": "y" }
            }))
            .expect("probe");
            match secrets.create(&PostParams::default(), &probe).await {
                Err(kube::Error::Api(status)) => {
                    if deny.is_some() {
                        assert!(
                            (400..500).contains(&status.code),
                            "a permanent refusal: {status:?}"
                        );
                    } else {
                        assert!(status.code >= 500, "a transient failure: {status:?}");
                    }
                    return;
                }
                Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        panic!("the admission objects never took effect");
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let webhook = self.webhook.take();
        let policy = self.policy.take();
        if webhook.is_none() && policy.is_none() {
            return;
        }
        // Cluster-scoped leftovers would outlive the test namespace. The cleanup runs on a
        // runtime of its own, with a client of its own: the test's runtime is blocked here.
        let cleanup = async move {
            let client = support::client().await;
            if let Some(name) = webhook {
                let _ = Api::<ValidatingWebhookConfiguration>::all(client.clone())
                    .delete(&name, &DeleteParams::default())
                    .await;
            }
            if let Some(name) = policy {
                let _ = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
                    .delete(&name, &DeleteParams::default())
                    .await;
                let _ = Api::<ValidatingAdmissionPolicy>::all(client)
                    .delete(&name, &DeleteParams::default())
                    .await;
            }
        };
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|runtime| runtime.block_on(cleanup))
        })
        .join();
    }
}

/// A port nothing listens on.
fn closed_port_url() -> String {
    format!("https://127.0.0.1:{}/", support::free_port())
}

/// The browser's request for `url`, as a task the test can drop (closing the connection).
fn browser_request(s: &Scenario, url: String) -> tokio::task::JoinHandle<()> {
    let http = s.http.clone();
    tokio::spawn(async move {
        let _ = http.get(url).send().await;
    })
}

/// Waits until `done` holds, polling every 10 ms for up to `limit`.
async fn until(limit: Duration, what: &str, done: impl Fn() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn exchanged(s: &Scenario) -> bool {
    s.slack
        .emulator
        .calls()
        .iter()
        .any(|c| c.method == "oauth.v2.access" && c.ok())
}

fn label_spec(namespace: &str, label: &str) -> Value {
    json!({ "secret": { "labels": { label: namespace } } })
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_client_that_disconnects_right_after_slack_answered_still_gets_its_token_stored() {
    let s = Scenario::start("custody-after-answer").await;
    let mut admission = Admission::new(&s.client);
    s.create_client_secret().await;
    s.apply_grant("scim", label_spec(&s.ns.name, "custody-test"))
        .await;
    let link = s.link("scim").await;
    // Writes hang on a webhook that accepts connections and never answers, then fail.
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let upstream = format!(
        "https://127.0.0.1:{}/",
        blackhole.local_addr().expect("addr").port()
    );
    admission.fail_secret_writes(&s.ns.name, &upstream).await;

    let back = s.decide(&link, Decision::Allow).await;
    let browser = browser_request(&s, back);
    until(Duration::from_secs(20), "Slack's answer", || exchanged(&s)).await;
    browser.abort();
    admission.allow_secret_writes().await;

    let grant = s.wait_ready("scim").await;
    assert!(grant.status.and_then(|st| st.exchange).is_none());
    let stored = s.stored_token("SLACK_ACCESS_TOKEN").await;
    assert!(stored.is_some(), "the token reached its Secret");
    s.assert_all_revoked_but(stored.as_deref());
    drop(blackhole);
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_client_that_disconnects_during_secret_write_retries_still_gets_its_token_stored() {
    let s = Scenario::start("custody-retries").await;
    let mut admission = Admission::new(&s.client);
    s.create_client_secret().await;
    s.apply_grant("scim", label_spec(&s.ns.name, "custody-test"))
        .await;
    let link = s.link("scim").await;
    admission
        .fail_secret_writes(&s.ns.name, &closed_port_url())
        .await;

    let back = s.decide(&link, Decision::Allow).await;
    let browser = browser_request(&s, back);
    until(Duration::from_secs(30), "two failed writes", || {
        s.operator
            .logs()
            .lines()
            .filter(|l| {
                l.contains("failed to record the token; retrying")
                    || l.contains("failed to write the token Secret; retrying")
            })
            .count()
            >= 2
    })
    .await;
    browser.abort();
    tokio::time::sleep(Duration::from_secs(1)).await;
    admission.allow_secret_writes().await;

    s.wait_ready("scim").await;
    let stored = s.stored_token("SLACK_ACCESS_TOKEN").await;
    assert!(stored.is_some(), "the token reached its Secret");
    s.assert_all_revoked_but(stored.as_deref());
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_permanent_write_error_revokes_at_once_even_if_the_client_disconnects_during_the_revoke()
{
    let s = Scenario::start("custody-revoke").await;
    let mut admission = Admission::new(&s.client);
    s.create_client_secret().await;
    s.apply_grant("scim", label_spec(&s.ns.name, "custody-deny"))
        .await;
    let link = s.link("scim").await;
    admission.deny_secret_writes(&s.ns.name).await;
    s.slack
        .emulator
        .inject("auth.revoke", Fault::Delay(Duration::from_secs(2)));

    let back = s.decide(&link, Decision::Allow).await;
    let started = std::time::Instant::now();
    let browser = browser_request(&s, back);
    until(Duration::from_secs(20), "the revoke to start", || {
        s.operator.logs().contains("for good; revoking the token")
    })
    .await;
    browser.abort();

    until(Duration::from_secs(20), "the token to be revoked", || {
        let tokens = s.slack.tokens();
        !tokens.is_empty() && tokens.iter().all(|t| t.revoked)
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "given up at once, not retried: {:?}",
        started.elapsed()
    );
    let grant = support::wait_for_grant(&s.grants, "scim", |g| {
        support::ready_reason(g).as_deref() == Some("ExchangeFailed")
            && g.status
                .as_ref()
                .is_some_and(|st| st.authorization_url.is_some())
    })
    .await;
    let status = grant.status.expect("status");
    assert!(status.exchange.is_none());
    assert!(
        status.authorization_url.is_some(),
        "a fresh link for the next try"
    );
    assert!(s.token_secret().await.is_none(), "nothing was written");
}

/// Warning Events with `reason` about grant `name`.
async fn warnings(s: &Scenario, name: &str, reason: &str) -> usize {
    Api::<Event>::namespaced(s.client.clone(), &s.ns.name)
        .list(&Default::default())
        .await
        .expect("list Events")
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.reason.as_deref() == Some(reason)
                && e.type_.as_deref() == Some("Warning")
        })
        .count()
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn sigkill_during_an_exchange_is_reported_on_that_grant_only_with_a_fresh_link() {
    let mut s = Scenario::start("custody-sigkill").await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    // A second grant that is only waiting: the restart must say nothing about it.
    s.apply_grant("idle", json!({ "secret": { "name": "idle-token" } }))
        .await;
    let link = s.link("scim").await;
    s.link("idle").await;
    // Slack issues the token at once and holds its answer back: the operator dies in between.
    s.slack.emulator.inject(
        "oauth.v2.access",
        Fault::DelayAnswer(Duration::from_secs(30)),
    );
    let back = s.decide(&link, Decision::Allow).await;
    let browser = browser_request(&s, back);
    until(Duration::from_secs(20), "Slack to issue the token", || {
        !s.slack.tokens().is_empty()
    })
    .await;
    let claimed = support::wait_for_grant(&s.grants, "scim", |g| {
        g.status.as_ref().is_some_and(|st| st.exchange.is_some())
    })
    .await;
    let claimed = claimed.status.expect("status");
    assert_eq!(
        claimed.authorization_url.as_deref(),
        Some(link.as_str()),
        "the link stays out while its attempt is exchanged"
    );
    assert_eq!(claimed.used_states.len(), 1, "the attempt's state is used");

    let port = s.operator.callback_port();
    s.operator.kill();
    browser.abort();
    let killed_at = std::time::Instant::now();
    s.operator = Operator::start_on(
        "custody-sigkill-2",
        &s.ns.name,
        port,
        &s.slack.url(),
        &s.slack.api_url(),
        &[],
    )
    .await;

    let grant = support::wait_for_grant_within(&s.grants, "scim", Duration::from_secs(60), |g| {
        support::ready_reason(g).as_deref() == Some("ExchangeInterrupted")
            && g.status
                .as_ref()
                .is_some_and(|st| st.authorization_url.is_some())
    })
    .await;
    let took = killed_at.elapsed();
    println!("SIGKILL to ExchangeInterrupted with a fresh link: {took:?}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    let status = grant.status.expect("status");
    assert!(status.exchange.is_none());
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert!(
        ready.message.contains("revoke it in Slack"),
        "{}",
        ready.message
    );
    let mut events = 0;
    for _ in 0..50 {
        events = warnings(&s, "scim", "ExchangeInterrupted").await;
        if events > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(events, 1, "one Warning Event on the interrupted grant");
    assert_eq!(
        warnings(&s, "idle", "ExchangeInterrupted").await,
        0,
        "none on a grant with no exchange in flight"
    );
    assert_eq!(
        support::ready_reason(&s.grants.get("idle").await.expect("grant")).as_deref(),
        Some("AwaitingAuthorization")
    );

    // The fresh link works.
    let answer = s.approve(&s.link("scim").await).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    s.wait_ready("scim").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_restart_with_no_exchange_in_flight_warns_about_nothing() {
    let mut s = Scenario::start("custody-clean-restart").await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    assert_eq!(s.approve(&s.link("scim").await).await.status, 200);
    s.wait_ready("scim").await;
    s.apply_grant("waiting", json!({ "secret": { "name": "waiting-token" } }))
        .await;
    s.link("waiting").await;

    let port = s.operator.callback_port();
    s.operator.kill();
    s.operator = Operator::start_on(
        "custody-clean-restart-2",
        &s.ns.name,
        port,
        &s.slack.url(),
        &s.slack.api_url(),
        &[],
    )
    .await;
    // Longer than the lease and the orphan threshold together.
    tokio::time::sleep(Duration::from_secs(45)).await;
    for grant in ["scim", "waiting"] {
        assert_eq!(
            warnings(&s, grant, "ExchangeInterrupted").await,
            0,
            "{grant}"
        );
    }
    assert_eq!(
        support::ready_reason(&s.grants.get("scim").await.expect("grant")).as_deref(),
        Some("Authorized")
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn grant_names_of_any_legal_length_get_their_secret() {
    let s = Scenario::start("custody-long-name").await;
    s.create_client_secret().await;
    let name = format!("{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(63));
    s.apply_grant(
        &name,
        json!({ "secret": { "labels": { "team": "identity" }, "annotations": { "example.com/note": "any text, with spaces: fine" } } }),
    )
    .await;
    assert_eq!(s.approve(&s.link(&name).await).await.status, 200);
    s.wait_ready(&name).await;
    let secret = s.token_secret().await.expect("the token Secret");
    assert_eq!(
        secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("slack-oauth-operator.io/grant")),
        Some(&name)
    );
    assert_eq!(
        secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("team"))
            .map(String::as_str),
        Some("identity")
    );
}
