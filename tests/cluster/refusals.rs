//! Every refused callback changes nothing: the right HTTP status and page, the right condition
//! where a grant exists, the token Secret untouched, and every token Slack issued revoked.

use serde_json::json;
use slack_emulator::{Approver, Decision, Fault};

use crate::scenario::{Answer, Scenario};

/// The token Secret's resourceVersion, or `None` when there is none.
async fn secret_version(s: &Scenario) -> Option<String> {
    s.token_secret()
        .await
        .and_then(|secret| secret.metadata.resource_version)
}

fn assert_page(answer: &Answer, status: u16, says: &str) {
    assert_eq!(answer.status, status, "HTTP status; page: {}", answer.body);
    assert!(
        answer.body.contains(says),
        "the page should say {says:?}: {}",
        answer.body
    );
    assert!(
        answer.body.contains("What to do now"),
        "the page says what to do next: {}",
        answer.body
    );
    assert_eq!(answer.headers["cache-control"], "no-store");
    assert_eq!(answer.headers["referrer-policy"], "no-referrer");
    assert!(
        answer.headers["content-security-policy"]
            .to_str()
            .unwrap_or_default()
            .starts_with("default-src 'none'")
    );
}

/// A Ready grant, so that refusals can be checked against a Secret that exists.
async fn ready_scenario(name: &str) -> (Scenario, String) {
    let s = Scenario::start(name).await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    let link = s.link("scim").await;
    let back = s.decide(&link, Decision::Allow).await;
    assert_eq!(s.callback(&back).await.status, 200);
    s.wait_ready("scim").await;
    (s, back)
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn callbacks_without_a_valid_state_change_nothing() {
    let (s, _) = ready_scenario("refuse-bad-state").await;
    let before = secret_version(&s).await;
    let base = format!("{}/oauth/callback", s.operator.public_url);

    assert_page(
        &s.callback(&format!("{base}?code=abc")).await,
        400,
        "Link not valid",
    );
    assert_page(
        &s.callback(&format!("{base}?code=abc&state=forged-by-someone"))
            .await,
        400,
        "Link not valid",
    );
    assert_page(
        &s.callback(&format!("{base}?state=a&state=b")).await,
        400,
        "Link not valid",
    );
    // A well-formed state naming the grant, signed with another key: refused like any forgery,
    // without a word about whether the grant exists.
    let other_key = slack_oauth_operator::callback::state::StateKey::generate();
    for name in ["scim", "no-such-grant"] {
        let forged = other_key.sign(
            &slack_oauth_operator::callback::state::AuthorizationState::issue(
                &s.ns.name,
                name,
                "some-uid",
                1,
                "some-link",
                k8s_openapi::jiff::Timestamp::now().as_second(),
            ),
        );
        assert_page(
            &s.callback(&format!("{base}?code=abc&state={forged}")).await,
            400,
            "Link not valid",
        );
    }
    let answer = s
        .callback(&format!("{}/oauth/other", s.operator.public_url))
        .await;
    assert_eq!(answer.status, 404);

    assert_eq!(secret_version(&s).await, before, "the Secret is untouched");
    assert_eq!(
        crate::support::ready_reason(&s.grants.get("scim").await.expect("grant")).as_deref(),
        Some("Authorized")
    );
    s.assert_all_revoked_but(s.stored_token("SLACK_ACCESS_TOKEN").await.as_deref());
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn replayed_callback_shows_the_success_again_and_changes_nothing() {
    let (s, used) = ready_scenario("refuse-replay").await;
    let before = secret_version(&s).await;
    let calls = s.slack.emulator.calls().len();
    // What a refresh of the success page sends: it shows the success, and does nothing.
    assert_page(&s.callback(&used).await, 200, "Slack approval complete");
    assert_eq!(secret_version(&s).await, before);
    assert_eq!(
        s.slack.emulator.calls().len(),
        calls,
        "a replay never reaches Slack"
    );
    assert_eq!(
        crate::support::ready_reason(&s.grants.get("scim").await.expect("grant")).as_deref(),
        Some("Authorized")
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn callback_for_a_deleted_grant_is_refused() {
    let s = Scenario::start("refuse-deleted-grant").await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    let back = s.decide(&s.link("scim").await, Decision::Allow).await;
    s.delete_grant("scim").await;
    assert_page(&s.callback(&back).await, 410, "changed or deleted");
    assert!(s.token_secret().await.is_none());
    assert!(s.slack.tokens().is_empty(), "no code was exchanged");
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn callback_for_an_older_generation_is_refused() {
    let s = Scenario::start("refuse-old-generation").await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    let old_link = s.link("scim").await;
    let back = s.decide(&old_link, Decision::Allow).await;
    s.apply_grant("scim", json!({ "userScopes": ["admin", "users:read"] }))
        .await;
    // The link outlives the change; the state minted before it does not.
    let changed = crate::support::wait_for_grant(&s.grants, "scim", |g| {
        g.status.as_ref().and_then(|st| st.observed_generation) == Some(2)
    })
    .await;
    assert_eq!(
        changed
            .status
            .and_then(|st| st.authorization_url)
            .as_deref(),
        Some(old_link.as_str())
    );

    assert_page(&s.callback(&back).await, 410, "changed or deleted");
    assert!(s.token_secret().await.is_none());
    assert!(s.slack.tokens().is_empty());
    assert_eq!(
        crate::support::ready_reason(&s.grants.get("scim").await.expect("grant")).as_deref(),
        Some("AwaitingAuthorization")
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_cancel_is_recorded_and_the_same_link_works_again() {
    let s = Scenario::start("refuse-access-denied").await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    let link = s.link("scim").await;
    let back = s.decide(&link, Decision::Cancel).await;
    assert!(back.contains("error=access_denied"), "{back}");
    let answer = s.callback(&back).await;
    assert_page(&answer, 200, "Approval cancelled");
    assert!(
        answer.body.contains(r#"class="neutral""#),
        "{}",
        answer.body
    );

    let grant = s.wait_reason("scim", "AccessDenied").await;
    assert_eq!(
        grant.status.and_then(|st| st.authorization_url).as_deref(),
        Some(link.as_str()),
        "the same link"
    );
    assert!(s.token_secret().await.is_none());
    assert!(s.slack.tokens().is_empty());
    assert_eq!(s.approve(&link).await.status, 200, "and it works again");
    s.wait_ready("scim").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn slack_refusing_the_code_is_recorded() {
    let s = Scenario::start("refuse-invalid-code").await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    s.slack
        .emulator
        .inject("oauth.v2.access", Fault::Error("invalid_code".into()));
    assert_page(&s.approve(&s.link("scim").await).await, 400, "invalid_code");
    s.wait_reason("scim", "InvalidCode").await;
    assert!(s.token_secret().await.is_none());
    s.assert_all_revoked_but(None);
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn wrong_client_secret_is_recorded() {
    let s = Scenario::start("refuse-bad-client-secret").await;
    s.create_client_secret_with("not-the-apps-client-secret")
        .await;
    s.apply_grant("scim", json!({})).await;
    let answer = s.approve(&s.link("scim").await).await;
    assert_page(&answer, 502, "bad_client_secret");
    s.wait_reason("scim", "BadClientSecret").await;
    assert!(s.token_secret().await.is_none());
    assert!(s.slack.tokens().is_empty());

    // `kubectl get` tells the story: the last attempt failed, and why.
    let started = std::time::Instant::now();
    let line = loop {
        let line = crate::support::kubectl(
            &[
                "get",
                "slackgrants",
                "scim",
                "-n",
                &s.ns.name,
                "--no-headers",
            ],
            None,
        );
        if line.contains("Failed") || started.elapsed() > std::time::Duration::from_secs(30) {
            break line;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        &columns[..4],
        ["scim", "False", "Failed", "BadClientSecret"],
        "NAME READY PHASE REASON"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn approval_from_the_wrong_team_is_revoked() {
    let s = Scenario::start("refuse-wrong-team").await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({ "teamID": "T0OTHER" })).await;
    let answer = s.approve(&s.link("scim").await).await;
    assert_page(&answer, 403, "T0OTHER");
    s.wait_reason("scim", "WrongTeam").await;
    assert!(s.token_secret().await.is_none());
    assert!(!s.slack.tokens().is_empty(), "Slack issued a token");
    s.assert_all_revoked_but(None);
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn workspace_install_for_an_organization_grant_is_revoked() {
    let s = Scenario::start("refuse-wrong-level").await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({ "installation": "Organization" }))
        .await;
    assert_page(
        &s.approve(&s.link("scim").await).await,
        403,
        "Enterprise Grid organization install",
    );
    s.wait_reason("scim", "WrongInstallation").await;
    assert!(s.token_secret().await.is_none());
    s.assert_all_revoked_but(None);
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn approval_missing_a_scope_is_revoked() {
    let s = Scenario::start("refuse-missing-scope").await;
    let mut approver = Approver::workspace_owner("T0ACME", "Acme");
    approver.granted_user_scopes = Some(vec!["users:read".into()]);
    s.slack.emulator.set_approver(approver);
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    assert_page(&s.approve(&s.link("scim").await).await, 403, "admin");
    s.wait_reason("scim", "MissingScope").await;
    assert!(s.token_secret().await.is_none());
    s.assert_all_revoked_but(None);
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn secret_owned_by_someone_else_is_never_overwritten() {
    let s = Scenario::start("refuse-secret-conflict").await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    let link = s.link("scim").await;
    // The controller re-reads the grant once after publishing its link; let that pass, so the
    // foreign Secret below is first met by the callback, not withdrawn as a conflict beforehand.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let foreign: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": { "name": crate::scenario::TOKEN_SECRET_NAME },
        "stringData": { "SLACK_ACCESS_TOKEN": "someone-elses-value" }
    }))
    .expect("secret");
    s.secrets
        .create(&Default::default(), &foreign)
        .await
        .expect("create a foreign Secret");
    let before = secret_version(&s).await;

    assert_page(
        &s.approve(&link).await,
        409,
        "not managed by slack-oauth-operator",
    );
    s.wait_reason("scim", "SecretConflict").await;
    assert_eq!(
        secret_version(&s).await,
        before,
        "the foreign Secret is untouched"
    );
    assert_eq!(
        s.stored_token("SLACK_ACCESS_TOKEN").await.as_deref(),
        Some("someone-elses-value")
    );
    s.assert_all_revoked_but(None);
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn the_second_grant_naming_a_taken_secret_loses_its_link_at_once() {
    let s = Scenario::start("shared-secret-name").await;
    s.create_client_secret().await;
    s.apply_grant("first", json!({})).await;
    s.apply_grant("second", json!({})).await;
    let first = s.link("first").await;
    s.link("second").await;
    assert_eq!(s.approve(&first).await.status, 200);
    s.wait_ready("first").await;
    // The first grant's Secret wakes the second, which no longer offers a link that could only
    // end in a conflict.
    let second = crate::support::wait_for_grant(&s.grants, "second", |g| {
        crate::support::ready_reason(g).as_deref() == Some("SecretConflict")
            && g.status
                .as_ref()
                .is_some_and(|st| st.authorization_url.is_none())
    })
    .await;
    assert!(second.status.and_then(|st| st.exchange).is_none());
}
