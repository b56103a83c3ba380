//! Nothing lost: a token Slack issued reaches its Secret through an API server outage, or is
//! revoked when the operator stops first. These tests stop the shared API server, so `make test`
//! runs them on their own, after everything else (`--test-threads=1`).

use std::time::Duration;

use serde_json::json;
use slack_emulator::{Decision, Fault};

use crate::{scenario::Scenario, support};

fn control_plane(action: &str) {
    support::must(
        support::repo_root().join("hack/cluster.sh"),
        &[action],
        None,
    );
}

/// Stops the API server; starts it again when dropped, even if the test fails on the way.
struct Outage;

impl Outage {
    fn begin() -> Self {
        control_plane("stop-apiserver");
        Self
    }

    fn end(self) {}
}

impl Drop for Outage {
    fn drop(&mut self) {
        control_plane("start-apiserver");
    }
}

/// Starts a callback whose code exchange Slack answers slowly, and returns once the callback has
/// claimed the link: the token will be issued while the API server is down.
async fn callback_in_flight(s: &Scenario, name: &str) -> tokio::task::JoinHandle<(u16, String)> {
    s.create_client_secret().await;
    s.apply_grant(name, json!({})).await;
    let back = s.decide(&s.link(name).await, Decision::Allow).await;
    s.slack
        .emulator
        .inject("oauth.v2.access", Fault::Delay(Duration::from_secs(4)));
    let http = s.http.clone();
    let request = tokio::spawn(async move {
        let response = http
            .get(&back)
            .timeout(Duration::from_secs(180))
            .send()
            .await
            .expect("the callback answers");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    });
    s.wait_reason(name, "Exchanging").await;
    request
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn token_reaches_its_secret_through_a_30_second_api_server_outage() {
    let s = Scenario::start("outage-secret-lands").await;
    let request = callback_in_flight(&s, "scim").await;

    let outage = Outage::begin();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let issued = s.slack.tokens();
    assert_eq!(
        issued.len(),
        1,
        "Slack issued the token while the API server was down"
    );
    outage.end();

    let (status, body) = request.await.expect("callback task");
    assert_eq!(status, 200, "{body}");
    let client = support::client().await;
    let secrets = kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, &s.ns.name);
    let secret = secrets
        .get(crate::scenario::TOKEN_SECRET_NAME)
        .await
        .expect("the Secret landed");
    let stored = secret
        .data
        .and_then(|mut d| d.remove("SLACK_ACCESS_TOKEN"))
        .expect("token");
    assert_eq!(String::from_utf8(stored.0).expect("utf-8"), issued[0].token);
    assert!(!s.slack.tokens()[0].revoked);
    s.wait_ready("scim").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn token_is_revoked_when_the_operator_stops_before_storing_it() {
    let mut s = Scenario::start("outage-stop-revokes").await;
    let request = callback_in_flight(&s, "scim").await;

    let outage = Outage::begin();
    // Wait until Slack has issued the token and the operator is retrying the Secret write.
    for _ in 0..100 {
        if !s.slack.tokens().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.operator.terminate().await;
    let (status, body) = request.await.expect("callback task");
    outage.end();

    assert_eq!(status, 503, "{body}");
    assert!(body.contains("revoked"), "{body}");
    let issued = s.slack.tokens();
    assert_eq!(issued.len(), 1);
    assert!(
        issued[0].revoked,
        "a token that could not be stored must be revoked"
    );
    let client = support::client().await;
    let secrets = kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, &s.ns.name);
    assert!(
        secrets
            .get_opt(crate::scenario::TOKEN_SECRET_NAME)
            .await
            .expect("read")
            .is_none()
    );
}

/// The most CPU time the operator may spend, and the most lines it may log, while the API server
/// is down for 30 s with 100 grants waiting.
const OUTAGE_CPU_SECONDS: f64 = 1.0;
const OUTAGE_LOG_LINES: usize = 100;

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn api_outage_with_100_waiting_grants_costs_under_one_cpu_second_and_100_log_lines() {
    let s = Scenario::start("outage-waiting-cost").await;
    let names = crate::outage_cost::create_waiting_grants(&s, 100).await;
    // Let the reconciles of becoming ClientSecretMissing and their Events settle.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let pid = s.operator.pid();
    let cpu_before = support::cpu_seconds(pid);
    let lines_before = s.operator.log_lines();
    let outage = Outage::begin();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let cpu = support::cpu_seconds(pid) - cpu_before;
    let lines = s.operator.log_lines() - lines_before;
    outage.end();
    println!(
        "API server down for 30 s with {} waiting grants: the operator used {cpu:.2} CPU seconds \
         and logged {lines} lines",
        names.len()
    );

    // Back up, the grants still reconcile: the first one's client Secret appears, it gets a link.
    s.secrets
        .create(
            &Default::default(),
            &support::shared_client_secret("app-0", &s.slack.client_secret),
        )
        .await
        .expect("create a waiting grant's client Secret");
    s.link(&names[0]).await;

    assert!(
        cpu < OUTAGE_CPU_SECONDS,
        "the operator used {cpu:.2} CPU seconds during the outage (under {OUTAGE_CPU_SECONDS} \
         expected)"
    );
    assert!(
        lines < OUTAGE_LOG_LINES,
        "the operator logged {lines} lines during the outage (under {OUTAGE_LOG_LINES} expected); \
         the first of them:\n{}",
        s.operator
            .logs()
            .lines()
            .skip(lines_before)
            .take(10)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
