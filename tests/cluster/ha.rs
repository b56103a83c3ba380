//! Two replicas and least privilege: exactly one replica reconciles, every replica serves
//! callbacks, the other takes over when the leader goes; and the chart's RBAC is all the
//! operator needs.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use kube::Api;
use serde_json::json;
use slack_emulator::Decision;
use slack_oauth_operator::api::SlackOAuthGrant;

use crate::{
    scenario::Scenario,
    support::{self, Launch, Operator, TestNamespace},
};

/// A second replica beside the scenario's operator: same namespace, same Lease, same public URL.
async fn second_replica(s: &Scenario, name: &str, extra: &[&str]) -> Operator {
    Operator::launch(Launch {
        name,
        watch_namespace: &s.ns.name,
        lease_namespace: &s.ns.name,
        callback_port: support::free_port(),
        public_url: Some(&s.operator.public_url),
        slack_url: &s.slack.url(),
        slack_api_url: &s.slack.api_url(),
        kubeconfig: None,
        extra,
    })
    .await
}

/// Waits until exactly one of the two replicas leads, and says which: `true` for `a`.
async fn leader_of(a: &Operator, b: &Operator) -> bool {
    for _ in 0..200 {
        match (a.is_leader().await, b.is_leader().await) {
            (true, false) => return true,
            (false, true) => return false,
            (true, true) => panic!("both replicas lead at once"),
            (false, false) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("no replica became the leader within 20 s");
}

/// The same callback, sent to another replica's port.
fn via(callback_url: &str, operator: &Operator) -> String {
    let query = callback_url
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default();
    format!(
        "http://127.0.0.1:{}/oauth/callback?{query}",
        operator.callback_port()
    )
}

/// How long until the grant's link is published.
async fn time_to_link(grants: &Api<SlackOAuthGrant>, name: &str, since: Instant) -> Duration {
    support::wait_for_grant(grants, name, |g| {
        g.status
            .as_ref()
            .is_some_and(|s| s.authorization_url.is_some())
    })
    .await;
    since.elapsed()
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn one_of_two_replicas_reconciles_both_serve_callbacks_and_the_other_takes_over() {
    let mut s = Scenario::start("ha-failover").await;
    let mut b = second_replica(&s, "ha-failover-b", &[]).await;
    let a_leads = leader_of(&s.operator, &b).await;
    // Only the leader reconciles: it alone says so in its log.
    let (leader_log, follower_log) = if a_leads {
        (s.operator.logs(), b.logs())
    } else {
        (b.logs(), s.operator.logs())
    };
    assert!(leader_log.contains("leading: reconciling grants"));
    assert!(
        !follower_log.contains("leading: reconciling grants"),
        "the follower must not reconcile"
    );

    // A callback that reaches the replica that is not leading completes.
    s.create_client_secret().await;
    s.apply_grant("first", json!({})).await;
    let back = s.decide(&s.link("first").await, Decision::Allow).await;
    let follower = if a_leads { &b } else { &s.operator };
    let answer = s.callback(&via(&back, follower)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    s.wait_ready("first").await;
    assert!(
        !follower.logs().contains("status updated"),
        "the follower never writes grant status"
    );

    // The leader stops; the other publishes the link of a new grant within 15 s.
    if a_leads {
        s.operator.terminate().await;
    } else {
        b.terminate().await;
    }
    let stopped = Instant::now();
    s.apply_grant("second", json!({ "secret": { "name": "slack-token-2" } }))
        .await;
    let took = time_to_link(&s.grants, "second", stopped).await;
    assert!(took <= Duration::from_secs(15), "failover took {took:?}");
    eprintln!("failover after a graceful stop: {took:?}");
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_crashed_leader_is_replaced_within_the_lease_duration() {
    let mut s = Scenario::start("ha-crash").await;
    let mut b = second_replica(&s, "ha-crash-b", &[]).await;
    s.create_client_secret().await;
    let a_leads = leader_of(&s.operator, &b).await;
    // No chance to release the Lease: the other replica must wait for it to expire (10 s by
    // default, so failover stays within the 15 s the chart promises).
    if a_leads {
        s.operator.kill();
    } else {
        b.kill();
    }
    let crashed = Instant::now();
    s.apply_grant("after-crash", json!({})).await;
    let took = time_to_link(&s.grants, "after-crash", crashed).await;
    assert!(
        took <= Duration::from_secs(15),
        "failover after a crash took {took:?}"
    );
    eprintln!("failover after a crash: {took:?}");
}

/// A kubeconfig for the same API server as the tests' admin, authenticating with `token`.
fn kubeconfig_with_token(token: &str, dir: &std::path::Path) -> PathBuf {
    let admin = std::env::var("KUBECONFIG").expect("KUBECONFIG");
    let mut config: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(admin).expect("read KUBECONFIG"))
            .expect("parse KUBECONFIG");
    for user in config["users"].as_array_mut().expect("users") {
        user["user"] = json!({ "token": token });
    }
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_json::to_string(&config).expect("json")).expect("write kubeconfig");
    path
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn operator_with_only_the_charts_rbac_completes_the_flow_and_reads_no_other_namespace() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let operator_ns = TestNamespace::create(&client, "rbac-operator").await;
    let other_ns = TestNamespace::create(&client, "rbac-other").await;

    // The namespace the operator may work in; the chart's Role is bound there.
    let grant_ns = TestNamespace::create(&client, "rbac-grants").await;
    let release = operator_ns.name.clone();
    let rendered = support::helm(&[
        "template",
        &release,
        &support::chart::chart(),
        "--namespace",
        &operator_ns.name,
        "--set",
        "crds.enabled=false",
        "--set",
        &format!("watchNamespaces={{{}}}", grant_ns.name),
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
    ]);
    support::kubectl(&["apply", "--server-side", "-f", "-"], Some(&rendered));
    let service_account = format!("{release}-slack-oauth-operator");
    let token = support::kubectl(
        &[
            "-n",
            &operator_ns.name,
            "create",
            "token",
            &service_account,
            "--duration",
            "1h",
        ],
        None,
    );
    let dir = support::TempDir::new("rbac-kubeconfig");
    let kubeconfig = kubeconfig_with_token(token.trim(), &dir.path);

    // The operator, with nothing but that token and the chart's flags for it, runs the whole
    // authorization flow; its first start creates the state key Secret it may read.
    let state_key = format!("--state-key-secret={release}-slack-oauth-operator-state-key");
    let s = Scenario::builder("rbac-flow")
        .in_namespace(&grant_ns)
        .kubeconfig(&kubeconfig)
        .lease_namespace(&operator_ns.name)
        .flags(&[&state_key])
        .start()
        .await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    let answer = s.approve(&s.link("scim").await).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    s.wait_ready("scim").await;
    assert!(s.stored_token("SLACK_ACCESS_TOKEN").await.is_some());
    let logs = s.operator.logs();
    assert!(
        !logs.contains("is forbidden"),
        "no request of the operator was forbidden:\n{logs}"
    );

    // The same identity cannot read Secrets in a namespace it does not watch.
    let restricted = support::client_from(Some(&kubeconfig))
        .await
        .expect("a client for the service account");
    let denied = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(restricted, &other_ns.name)
        .list(&Default::default())
        .await;
    match denied {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("reading Secrets in another namespace must be forbidden, got {other:?}"),
    }
}
