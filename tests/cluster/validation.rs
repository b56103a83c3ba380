//! Every Ready grant's token is checked with `auth.test`: a token revoked at Slack turns the
//! grant `TokenRevoked` with a fresh link (the Secret keeps the old value), and Slack being down
//! changes nothing.

use std::time::Duration;

use serde_json::json;
use slack_emulator::Fault;

use crate::{scenario::Scenario, support};

const FAST_CHECKS: &[&str] = &["--token-check-interval", "2s"];

async fn ready_token(s: &Scenario) -> String {
    s.create_client_secret().await;
    s.apply_grant("scim", json!({ "teamID": "T0ACME" })).await;
    assert_eq!(s.approve(&s.link("scim").await).await.status, 200);
    s.wait_ready("scim").await;
    s.stored_token("SLACK_ACCESS_TOKEN").await.expect("a token")
}

fn checks(s: &Scenario) -> usize {
    s.slack
        .emulator
        .calls()
        .iter()
        .filter(|c| c.method == "auth.test")
        .count()
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_token_revoked_at_slack_turns_the_grant_token_revoked_with_a_fresh_link() {
    let s = Scenario::builder("check-revoked")
        .flags(FAST_CHECKS)
        .start()
        .await;
    let token = ready_token(&s).await;
    assert!(s.slack.emulator.revoke(&token), "revoked out of band");
    let grant = support::wait_for_grant_within(&s.grants, "scim", Duration::from_secs(90), |g| {
        support::ready_reason(g).as_deref() == Some("TokenRevoked")
            && g.status
                .as_ref()
                .is_some_and(|st| st.authorization_url.is_some())
    })
    .await;
    assert_eq!(
        grant.status.and_then(|st| st.phase),
        Some(slack_oauth_operator::api::Phase::AwaitingAuthorization)
    );
    assert_eq!(
        s.stored_token("SLACK_ACCESS_TOKEN").await.as_deref(),
        Some(token.as_str()),
        "the Secret is unchanged until a new approval"
    );
    // A new approval makes it Ready again.
    assert_eq!(s.approve(&s.link("scim").await).await.status, 200);
    s.wait_ready("scim").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn slack_failing_every_check_leaves_a_ready_grant_ready() {
    let s = Scenario::builder("check-slack-down")
        .flags(FAST_CHECKS)
        .start()
        .await;
    ready_token(&s).await;
    s.slack
        .emulator
        .inject_times("auth.test", Fault::ServerError(503), 1_000);
    let before = checks(&s);
    let started = std::time::Instant::now();
    // The first check after the token lands comes within the first-check spread (a minute).
    while checks(&s) < before + 2 {
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "no checks were made"
        );
        let grant = s.grants.get("scim").await.expect("grant");
        assert_eq!(support::ready_reason(&grant).as_deref(), Some("Authorized"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let grant = s.grants.get("scim").await.expect("grant");
    assert_eq!(support::ready_reason(&grant).as_deref(), Some("Authorized"));
    s.slack.emulator.inject_times(
        "auth.test",
        Fault::RateLimited {
            retry_after_secs: 1,
        },
        1_000,
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let grant = s.grants.get("scim").await.expect("grant");
    assert_eq!(support::ready_reason(&grant).as_deref(), Some("Authorized"));
}
