//! The authorization flow end to end: a grant, its link, Slack's consent page, the callback, and
//! the token in the Secret.

use std::time::Duration;

use kube::{Api, api::DeleteParams};
use serde_json::json;
use slack_emulator::Approver;
use slack_oauth_operator::api::{Phase, SlackOAuthGrant, TokenKind};

use crate::{
    scenario::{Scenario, TOKEN_SECRET_NAME},
    support::{self, Operator},
};

fn user_tokens(scenario: &Scenario) -> Vec<String> {
    scenario
        .slack
        .tokens()
        .into_iter()
        .filter(|t| t.kind == slack_emulator::TokenKind::User)
        .map(|t| t.token)
        .collect()
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn happy_path_in_a_real_browser_stores_the_user_token() {
    let s = Scenario::start("browser-happy-path").await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({ "teamID": "T0ACME" })).await;
    let link = s.link("scim").await;

    let shown = s.approve_in_browser(&link).await;
    let (heading, page, landed_on) = (shown.heading, shown.text, shown.url);

    assert_eq!(heading, "Slack approval complete", "page: {page}");
    assert!(
        landed_on.starts_with(&s.operator.public_url),
        "landed on {landed_on}"
    );
    assert!(
        page.contains("Acme (T0ACME)"),
        "the page names the workspace: {page}"
    );
    assert!(
        page.contains(&format!("{}/{TOKEN_SECRET_NAME}", s.ns.name)),
        "the page names the Secret: {page}"
    );

    let issued = user_tokens(&s);
    assert_eq!(issued.len(), 1, "Slack issued one user token");
    assert!(!page.contains(&issued[0]), "the page never shows the token");
    assert_eq!(
        s.stored_token("SLACK_ACCESS_TOKEN").await.as_deref(),
        Some(issued[0].as_str())
    );

    let grant = s.wait_ready("scim").await;
    let status = grant.status.expect("status");
    assert_eq!(status.phase, Some(Phase::Ready));
    assert_eq!(
        status.authorization_url, None,
        "a used link is not republished"
    );
    let installation = status.installation.expect("installation");
    assert_eq!(installation.team_id.as_deref(), Some("T0ACME"));
    assert_eq!(installation.team_name.as_deref(), Some("Acme"));
    assert_eq!(installation.scopes, vec!["admin"]);
    assert_eq!(installation.token_type, Some(TokenKind::User));
    assert!(!installation.enterprise_install);
    assert!(installation.authorized_at.is_some());
    s.assert_all_revoked_but(Some(&issued[0]));

    // The Secret belongs to the grant, and carries the managed-by label.
    let secret = s.token_secret().await.expect("secret");
    let owner = &secret.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(owner.kind, "SlackOAuthGrant");
    assert_eq!(owner.name, "scim");
    assert_eq!(
        secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/managed-by"))
            .map(String::as_str),
        Some("slack-oauth-operator")
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn enterprise_grid_org_wide_install_stores_the_org_token() {
    let s = Scenario::start("org-install").await;
    s.slack
        .emulator
        .set_approver(Approver::org_owner("E0GRID", "Acme Grid"));
    s.create_client_secret().await;
    s.apply_grant(
        "grid",
        json!({ "installation": "Organization", "teamID": "E0GRID" }),
    )
    .await;
    let answer = s.approve(&s.link("grid").await).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.body.contains("Acme Grid (E0GRID)"),
        "{}",
        answer.body
    );

    let grant = s.wait_ready("grid").await;
    let installation = grant
        .status
        .and_then(|s| s.installation)
        .expect("installation");
    assert!(installation.enterprise_install);
    assert_eq!(installation.enterprise_id.as_deref(), Some("E0GRID"));
    assert_eq!(installation.team_id, None);
    let issued = user_tokens(&s);
    assert_eq!(
        s.stored_token("SLACK_ACCESS_TOKEN").await.as_deref(),
        Some(issued[0].as_str())
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn bot_token_grant_stores_the_bot_token() {
    let s = Scenario::start("bot-token").await;
    s.create_client_secret().await;
    s.apply_grant(
        "notifier",
        json!({ "userScopes": [], "botScopes": ["chat:write", "channels:read"], "secret": { "key": "SLACK_BOT_TOKEN" } }),
    )
    .await;
    let answer = s.approve(&s.link("notifier").await).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let grant = s.wait_ready("notifier").await;
    let installation = grant
        .status
        .and_then(|s| s.installation)
        .expect("installation");
    assert_eq!(installation.token_type, Some(TokenKind::Bot));
    assert_eq!(installation.scopes, vec!["chat:write", "channels:read"]);
    let bot = s
        .slack
        .tokens()
        .into_iter()
        .find(|t| t.kind == slack_emulator::TokenKind::Bot)
        .expect("a bot token");
    assert_eq!(
        s.stored_token("SLACK_BOT_TOKEN").await.as_deref(),
        Some(bot.token.as_str())
    );
    s.assert_all_revoked_but(Some(&bot.token));
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn missing_client_secret_publishes_no_link_until_it_appears() {
    let s = Scenario::start("client-secret-missing").await;
    s.apply_grant("scim", json!({})).await;
    let waiting = s.wait_reason("scim", "ClientSecretMissing").await;
    let status = waiting.status.expect("status");
    assert_eq!(status.authorization_url, None);
    assert_eq!(status.phase, Some(Phase::Failed));

    s.create_client_secret().await;
    let started = std::time::Instant::now();
    let link = s.link("scim").await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the grant recovers as soon as the Secret appears"
    );
    assert!(
        link.starts_with(&format!("{}/oauth/start/", s.operator.public_url)),
        "{link}"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn expired_link_is_replaced_at_its_expiry() {
    let s = Scenario::builder("link-expiry")
        .flags(&["--authorization-ttl", "6s"])
        .start()
        .await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    let first = s.link("scim").await;
    let grant = s.grants.get("scim").await.expect("grant");
    let expires = grant
        .status
        .and_then(|s| s.authorization_expires_at)
        .expect("expiry")
        .0;
    let second = s.new_link("scim", &first).await;
    let replaced_at = k8s_openapi::jiff::Timestamp::now();
    assert!(
        replaced_at >= expires,
        "replaced at {replaced_at}, expiry {expires}"
    );
    assert_ne!(first, second);

    // The expired link is no longer needed, the fresh one works.
    let refused = s.callback(&first).await;
    assert_eq!(refused.status, 410, "{}", refused.body);
    assert!(
        refused.body.contains("no longer needed"),
        "{}",
        refused.body
    );
    let answer = s.approve(&second).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn spec_change_after_ready_keeps_the_old_token_until_the_new_one_replaces_it() {
    let s = Scenario::start("spec-change").await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    assert_eq!(s.approve(&s.link("scim").await).await.status, 200);
    s.wait_ready("scim").await;
    let old = s
        .stored_token("SLACK_ACCESS_TOKEN")
        .await
        .expect("old token");

    s.apply_grant("scim", json!({ "userScopes": ["admin", "users:read"] }))
        .await;
    let asking = support::wait_for_grant(&s.grants, "scim", |g| {
        g.status.as_ref().is_some_and(|st| {
            st.authorization_url.is_some()
                && st.conditions.iter().any(|c| {
                    c.type_ == "AuthorizationPending"
                        && c.status == "True"
                        && c.reason == "SpecChanged"
                })
        })
    })
    .await;
    assert_eq!(
        support::ready_reason(&asking).as_deref(),
        Some("Authorized"),
        "the old token still works, so the grant stays Ready"
    );
    assert_eq!(
        asking.status.as_ref().and_then(|s| s.phase),
        Some(Phase::Ready)
    );
    let link = asking
        .status
        .and_then(|s| s.authorization_url)
        .expect("a new link");
    let consent = s.open(&link).await;
    assert!(
        consent.contains("user_scope=admin%2Cusers%3Aread"),
        "{consent}"
    );
    assert_eq!(
        s.stored_token("SLACK_ACCESS_TOKEN").await.as_deref(),
        Some(old.as_str()),
        "the old token stays"
    );

    assert_eq!(s.approve(&link).await.status, 200);
    let ready = support::wait_for_grant(&s.grants, "scim", |g| {
        g.status
            .as_ref()
            .and_then(|st| st.installation.as_ref())
            .is_some_and(|i| i.scopes.len() == 2)
    })
    .await;
    assert_eq!(
        ready.status.and_then(|s| s.installation).map(|i| i.scopes),
        Some(vec!["admin".into(), "users:read".into()])
    );
    let new = s
        .stored_token("SLACK_ACCESS_TOKEN")
        .await
        .expect("new token");
    assert_ne!(new, old);
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn deleted_secret_without_a_record_reports_secret_missing_and_publishes_a_new_link() {
    // With its record, a deleted Secret is written back (tests/cluster/lifecycle.rs). Without
    // one (the record deleted too), a new approval is the only way back.
    let s = Scenario::start("secret-deleted").await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    assert_eq!(s.approve(&s.link("scim").await).await.status, 200);
    let grant = s.wait_ready("scim").await;

    let record = format!("slack-oauth-record-{}", grant.metadata.uid.expect("uid"));
    s.secrets
        .delete(&record, &DeleteParams::default())
        .await
        .expect("delete the token record");
    s.secrets
        .delete(TOKEN_SECRET_NAME, &DeleteParams::default())
        .await
        .expect("delete the token Secret");
    let missing = s.wait_reason("scim", "SecretMissing").await;
    let status = missing.status.expect("status");
    assert!(
        status.authorization_url.is_some(),
        "a new link is published"
    );
    assert_eq!(status.phase, Some(Phase::AwaitingAuthorization));

    assert_eq!(
        s.approve(&status.authorization_url.expect("link"))
            .await
            .status,
        200
    );
    s.wait_ready("scim").await;
    assert!(s.token_secret().await.is_some());
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn link_published_before_an_operator_restart_still_completes() {
    let mut s = Scenario::start("operator-restart").await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    let link = s.link("scim").await;

    let port = s.operator.callback_port();
    s.operator.terminate().await;
    // A new process, on the same public URL, with nothing carried over in memory.
    s.operator = Operator::start_on(
        "operator-restart-2",
        &s.ns.name,
        port,
        &s.slack.url(),
        &s.slack.api_url(),
        &[],
    )
    .await;
    let answer = s.approve(&link).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    s.wait_ready("scim").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn two_concurrent_callbacks_with_one_state_store_exactly_one_token() {
    let s = Scenario::start("concurrent-callbacks").await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    let link = s.link("scim").await;
    // Two approvals of the same link: two codes, one state.
    let first = s.decide(&link, slack_emulator::Decision::Allow).await;
    let second = s.decide(&link, slack_emulator::Decision::Allow).await;
    let (a, b) = tokio::join!(s.callback(&first), s.callback(&second));
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 409],
        "one succeeds, one is refused: {} / {}",
        a.body,
        b.body
    );

    s.wait_ready("scim").await;
    let stored = s.stored_token("SLACK_ACCESS_TOKEN").await.expect("stored");
    let live: Vec<_> = s
        .slack
        .tokens()
        .into_iter()
        .filter(|t| !t.revoked)
        .collect();
    assert_eq!(live.len(), 1, "exactly one live token");
    assert_eq!(live[0].token, stored);
    s.assert_all_revoked_but(Some(&stored));
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn idle_ready_grant_causes_no_writes_and_no_slack_calls() {
    let s = Scenario::start("idle").await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    assert_eq!(s.approve(&s.link("scim").await).await.status, 200);
    s.wait_ready("scim").await;
    // Let the last Events and status writes of becoming Ready settle.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let audit = support::audit_log();
    let from = std::fs::metadata(&audit).map(|m| m.len()).unwrap_or(0);
    let calls_before = s.slack.emulator.calls().len();
    tokio::time::sleep(Duration::from_secs(60)).await;

    // The leader Lease's renewals are the operator's heartbeat, not work for the grant.
    let writes: Vec<_> = support::audit_writes_in_namespace(&audit, from, &s.ns.name)
        .into_iter()
        .filter(|w| !w.contains(" leases/"))
        .collect();
    assert!(
        writes.is_empty(),
        "an idle Ready grant caused API writes: {writes:#?}"
    );
    assert_eq!(
        s.slack.emulator.calls().len(),
        calls_before,
        "an idle grant calls Slack"
    );
    // And the grant is still Ready.
    let grant = Api::<SlackOAuthGrant>::namespaced(s.client.clone(), &s.ns.name)
        .get("scim")
        .await
        .expect("grant");
    assert_eq!(support::ready_reason(&grant).as_deref(), Some("Authorized"));
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn rate_limits_and_server_errors_are_retried_within_the_codes_lifetime() {
    let s = Scenario::start("slack-retries").await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    let link = s.link("scim").await;
    s.slack.emulator.inject(
        "oauth.v2.access",
        slack_emulator::Fault::RateLimited {
            retry_after_secs: 1,
        },
    );
    s.slack
        .emulator
        .inject("oauth.v2.access", slack_emulator::Fault::ServerError(503));
    let started = std::time::Instant::now();
    let answer = s.approve(&link).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );

    let exchanges: Vec<_> = s
        .slack
        .emulator
        .calls()
        .into_iter()
        .filter(|c| c.method == "oauth.v2.access")
        .collect();
    assert_eq!(
        exchanges.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![429, 503, 200]
    );
    // Every attempt is a form-encoded POST authenticated with HTTP Basic, with the same redirect_uri.
    for call in &exchanges {
        assert_eq!(call.http_method, "POST");
        assert!(
            call.content_type
                .as_deref()
                .unwrap_or_default()
                .starts_with("application/x-www-form-urlencoded")
        );
        assert_eq!(call.client_auth, slack_emulator::ClientAuth::Basic);
        assert_eq!(
            call.param("redirect_uri"),
            Some(s.slack.redirect_uri.as_str())
        );
    }
    s.wait_ready("scim").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn events_name_the_link_and_the_team_and_no_secret_reaches_events_or_status() {
    let s = Scenario::start("events").await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    assert_eq!(s.approve(&s.link("scim").await).await.status, 200);
    s.wait_ready("scim").await;

    let events =
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(s.client.clone(), &s.ns.name);
    let mut notes = Vec::new();
    for _ in 0..100 {
        notes = events
            .list(&Default::default())
            .await
            .expect("list Events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("scim"))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect::<Vec<_>>();
        if notes.iter().any(|(reason, _)| reason == "Authorized") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        notes
            .iter()
            .any(|(reason, _)| reason == "AwaitingAuthorization"),
        "an Event for the link: {notes:?}"
    );
    let authorized = notes
        .iter()
        .find(|(reason, _)| reason == "Authorized")
        .expect("an Authorized Event");
    assert!(
        authorized.1.contains("Acme (T0ACME)"),
        "the Event names the team: {}",
        authorized.1
    );

    let status =
        serde_json::to_string(&s.grants.get("scim").await.expect("grant").status).expect("status");
    let everything = format!("{status}\n{notes:?}");
    for secret in s.slack.secret_values() {
        assert!(
            !everything.contains(&secret),
            "a secret value reached an Event or the status"
        );
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn visits_to_an_approval_link_make_no_api_request_and_each_gets_its_own_state() {
    let s = Scenario::start("link-visits").await;
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    let link = s.link("scim").await;
    // Let the controller settle after publishing the link.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let audit = support::audit_log();
    let from = support::audit_offset(&audit);
    let forged = format!("{}/oauth/start/{}", s.operator.public_url, "A".repeat(43));
    let mut states = std::collections::HashSet::new();
    for _ in 0..20 {
        // A chat app's preview, a colleague, the owner: each visit its own state.
        let consent = s.open(&link).await;
        let state = url::Url::parse(&consent)
            .expect("Slack's URL")
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .expect("a state");
        states.insert(state);
        assert_eq!(s.callback(&forged).await.status, 400);
    }
    assert_eq!(states.len(), 20, "no visit replaces another's state");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let requests: Vec<String> = support::audit_events_since(&audit, from)
        .into_iter()
        .filter(|event| event["objectRef"]["namespace"] == s.ns.name.as_str())
        .filter(|event| event["verb"] != "watch")
        .map(|event| format!("{} {}", event["verb"], event["objectRef"]["resource"]))
        .collect();
    assert!(
        requests.is_empty(),
        "visits made API requests: {requests:?}"
    );
    // Any one of them still works.
    let consent = s.open(&link).await;
    let back = s
        .slack
        .emulator
        .authorize(&consent, slack_emulator::Decision::Allow)
        .await
        .expect("consent");
    assert_eq!(s.callback(&back).await.status, 200);
    s.wait_ready("scim").await;
}
