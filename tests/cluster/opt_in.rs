//! The confused-deputy rule (docs/security.md): a grant may use only Secrets that opted in, and a
//! Secret that did not reads exactly like a missing one.

use std::time::Duration;

use serde_json::json;

use crate::{scenario::Scenario, support};

fn ready_message(grant: &slack_oauth_operator::api::SlackOAuthGrant) -> String {
    grant
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_client_secret_that_did_not_opt_in_is_treated_as_missing_and_nothing_reaches_slack() {
    let s = Scenario::start("opt-in").await;
    let secret = s.slack.client_secret.clone();
    // An ordinary Secret the grant author knows the name of, and one that opted in for another
    // grant only.
    s.create_secret_for_grants("not-shared", json!({}), &secret)
        .await;
    s.create_secret_for_grants(
        "shared-with-other",
        json!({ "slack-oauth-operator.io/shared-with-grants": "true" }),
        &secret,
    )
    .await;
    let mut annotated = s.secrets.get("shared-with-other").await.expect("secret");
    annotated
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(
            "slack-oauth-operator.io/allowed-grants".into(),
            "other, someone".into(),
        );
    annotated.metadata.managed_fields = None;
    s.secrets
        .replace("shared-with-other", &Default::default(), &annotated)
        .await
        .expect("annotate");

    for (grant, reference) in [
        ("absent", "does-not-exist"),
        ("unshared", "not-shared"),
        ("narrowed", "shared-with-other"),
    ] {
        s.apply_grant(
            grant,
            json!({ "clientSecretRef": { "name": reference }, "secret": { "name": format!("{grant}-token") } }),
        )
        .await;
    }
    let mut messages = Vec::new();
    for (grant, reference) in [
        ("absent", "does-not-exist"),
        ("unshared", "not-shared"),
        ("narrowed", "shared-with-other"),
    ] {
        let g = s.wait_reason(grant, "ClientSecretMissing").await;
        let status = g.status.clone().expect("status");
        assert_eq!(status.authorization_url, None, "{grant}: no link");
        messages.push(ready_message(&g).replace(reference, "<name>"));
    }
    assert!(
        messages.windows(2).all(|w| w[0] == w[1]),
        "one text for missing and not shared: {messages:#?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        s.slack.emulator.calls().is_empty(),
        "nothing was sent to Slack"
    );

    // Naming the grant in the annotation lets it in, at once (the shared Secret is watched).
    let mut allowed = s.secrets.get("shared-with-other").await.expect("secret");
    allowed.metadata.annotations.get_or_insert_default().insert(
        "slack-oauth-operator.io/allowed-grants".into(),
        "other,narrowed".into(),
    );
    allowed.metadata.managed_fields = None;
    s.secrets
        .replace("shared-with-other", &Default::default(), &allowed)
        .await
        .expect("annotate");
    let link = s.link("narrowed").await;
    assert_eq!(s.approve(&link).await.status, 200);
    s.wait_ready("narrowed").await;

    // Labelling the ordinary Secret shares it with every grant in the namespace.
    let mut labelled = s.secrets.get("not-shared").await.expect("secret");
    labelled.metadata.labels.get_or_insert_default().insert(
        "slack-oauth-operator.io/shared-with-grants".into(),
        "true".into(),
    );
    labelled.metadata.managed_fields = None;
    s.secrets
        .replace("not-shared", &Default::default(), &labelled)
        .await
        .expect("label");
    support::wait_for_grant(&s.grants, "unshared", |g| {
        g.status
            .as_ref()
            .is_some_and(|st| st.authorization_url.is_some())
    })
    .await;
}
