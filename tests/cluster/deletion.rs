//! What deleting a grant does to its token (`spec.deletionPolicy`): `Revoke` revokes it at Slack
//! before the grant goes, even if Slack is down for a while; `Retain` keeps it live in a Secret
//! that outlives the grant.

use std::time::Duration;

use serde_json::json;
use slack_emulator::Fault;

use crate::scenario::{Scenario, TOKEN_SECRET_NAME};

/// A Ready grant `scim` and the token it stored.
async fn ready_grant(s: &Scenario, spec: serde_json::Value) -> String {
    s.create_client_secret().await;
    s.apply_grant("scim", spec).await;
    assert_eq!(s.approve(&s.link("scim").await).await.status, 200);
    s.wait_ready("scim").await;
    s.stored_token("SLACK_ACCESS_TOKEN").await.expect("a token")
}

async fn wait_gone(s: &Scenario, within: Duration) {
    let started = std::time::Instant::now();
    while s.grants.get_opt("scim").await.expect("read").is_some() {
        assert!(
            started.elapsed() < within,
            "the grant was not let go within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn deleting_a_grant_revokes_its_token_before_the_grant_goes() {
    let s = Scenario::start("delete-revokes").await;
    let token = ready_grant(&s, json!({})).await;
    let grant = s.grants.get("scim").await.expect("grant");
    assert!(
        grant
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "slack-oauth-operator.io/revoke-token"),
        "a Ready grant carries the finalizer: {:?}",
        grant.metadata.finalizers
    );
    assert!(s.slack.emulator.is_live(&token));
    s.grants
        .delete("scim", &Default::default())
        .await
        .expect("delete");
    wait_gone(&s, Duration::from_secs(30)).await;
    assert!(
        !s.slack.emulator.is_live(&token),
        "the token was revoked at Slack"
    );
    s.assert_all_revoked_but(None);
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn deleting_a_grant_while_slack_is_down_keeps_it_until_slack_answers() {
    let s = Scenario::start("delete-slack-down").await;
    let token = ready_grant(&s, json!({})).await;
    s.slack
        .emulator
        .inject_times("auth.revoke", Fault::ServerError(503), 1_000);
    s.grants
        .delete("scim", &Default::default())
        .await
        .expect("delete");
    let pending = s.wait_reason("scim", "RevokePending").await;
    assert!(pending.metadata.deletion_timestamp.is_some());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        s.grants.get_opt("scim").await.expect("read").is_some(),
        "kept while Slack is down"
    );
    assert!(s.slack.emulator.is_live(&token));

    // Slack answers again.
    s.slack.emulator.clear_faults("auth.revoke");
    wait_gone(&s, Duration::from_secs(60)).await;
    assert!(
        !s.slack.emulator.is_live(&token),
        "revoked once Slack answered"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn with_retain_the_secret_outlives_the_grant_and_the_token_stays_live() {
    let s = Scenario::start("delete-retains").await;
    let token = ready_grant(&s, json!({ "deletionPolicy": "Retain" })).await;
    s.grants
        .delete("scim", &Default::default())
        .await
        .expect("delete");
    wait_gone(&s, Duration::from_secs(30)).await;
    // Give garbage collection time to act, had the Secret still been owned.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let secret = s
        .secrets
        .get_opt(TOKEN_SECRET_NAME)
        .await
        .expect("read")
        .expect("the Secret survives the grant");
    assert!(
        secret
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(
        s.stored_token("SLACK_ACCESS_TOKEN").await.as_deref(),
        Some(token.as_str())
    );
    assert!(s.slack.emulator.is_live(&token), "nothing was revoked");
}
