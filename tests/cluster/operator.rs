//! The operator binary itself, run against the control plane.

use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;
use slack_oauth_operator::api::SlackOAuthGrant;

use crate::support::{self, Operator, TestNamespace};

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn operator_reports_a_missing_client_secret_and_logs_the_grant() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let ns = TestNamespace::create(&client, "operator-watches").await;
    // Slack is never called before a callback, so any URL will do here.
    let operator = Operator::start(
        "operator-watches",
        &ns.name,
        "https://slack.example",
        "https://slack.example/api",
        &[],
    )
    .await;

    let grant: SlackOAuthGrant = serde_json::from_value(json!({
        "apiVersion": "slack-oauth-operator.io/v1alpha1",
        "kind": "SlackOAuthGrant",
        "metadata": { "name": "watched" },
        "spec": {
            "clientID": "1234567890.1234567890",
            "clientSecretRef": { "name": "slack-app" },
            "secret": { "name": "slack-token" }
        }
    }))
    .expect("grant");
    let grants = Api::<SlackOAuthGrant>::namespaced(client.clone(), &ns.name);
    grants
        .patch(
            "watched",
            &PatchParams::apply("operator-test"),
            &Patch::Apply(&grant),
        )
        .await
        .expect("apply the grant");

    // Without the client secret, no link; the condition says why.
    let waiting = support::wait_for_grant(&grants, "watched", |g| {
        support::ready_reason(g).as_deref() == Some("ClientSecretMissing")
    })
    .await;
    assert!(
        waiting
            .status
            .as_ref()
            .and_then(|s| s.authorization_url.as_ref())
            .is_none()
    );

    let logs = operator.logs();
    assert!(
        logs.contains("\"grant\":\"watched\""),
        "the operator logs name the grant:\n{logs}"
    );
}
