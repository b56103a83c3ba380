//! The token after issuance: rotation (refreshed before it expires, the Secret never without a
//! live token, the refresh token never in it), a deleted or edited Secret written back from the
//! operator's record, and a re-authorization that keeps `Ready` until the new token lands and
//! then revokes the old one after `--revoke-grace`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use slack_emulator::Fault;
use slack_oauth_operator::api::{SlackOAuthGrant, conditions};

use crate::{scenario::Scenario, support};

const KEY: &str = "SLACK_ACCESS_TOKEN";

fn condition(grant: &SlackOAuthGrant, type_: &str) -> Option<(String, String)> {
    grant
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn revision(grant: &SlackOAuthGrant) -> u64 {
    grant
        .status
        .as_ref()
        .and_then(|s| s.token.as_ref())
        .map_or(0, |t| t.revision)
}

async fn ready(s: &Scenario) -> String {
    s.create_client_secret().await;
    s.apply_grant("scim", json!({ "teamID": "T0ACME" })).await;
    assert_eq!(s.approve(&s.link("scim").await).await.status, 200);
    s.wait_ready("scim").await;
    s.stored_token(KEY).await.expect("a token")
}

fn keys(secret: &Secret) -> Vec<String> {
    secret
        .data
        .as_ref()
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn three_refreshes_in_a_row_keep_a_live_token_in_the_secret_and_the_refresh_token_out_of_it()
{
    let s = Scenario::start("rotation").await;
    // Refreshed with a third of the lifetime left: 6 s into 9.
    s.rotate_tokens(Duration::from_secs(9));
    let first = ready(&s).await;
    let started = Instant::now();
    let mut samples = 0;
    let mut tokens = vec![first];
    loop {
        let secret = s
            .token_secret()
            .await
            .expect("the token Secret is always there");
        assert_eq!(keys(&secret), vec![KEY.to_owned()], "only the access token");
        let token = String::from_utf8(secret.data.expect("data")[KEY].0.clone()).expect("utf-8");
        assert!(
            s.slack.emulator.is_live(&token),
            "the Secret held a dead token after {:?} (sample {samples})",
            started.elapsed()
        );
        if tokens.last() != Some(&token) {
            tokens.push(token);
        }
        samples += 1;
        let grant = s.grants.get("scim").await.expect("grant");
        assert_eq!(support::ready_reason(&grant).as_deref(), Some("Authorized"));
        if tokens.len() >= 4 && revision(&grant) >= 4 {
            let token = grant.status.and_then(|st| st.token).expect("status.token");
            assert!(token.refreshed_at.is_some() && token.expires_at.is_some());
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "three refreshes did not happen in a minute: {} tokens seen",
            tokens.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refreshes: Vec<_> = s
        .slack
        .emulator
        .calls()
        .into_iter()
        .filter(|c| c.method == "oauth.v2.access" && c.refresh_token().is_some())
        .collect();
    assert!(refreshes.len() >= 3, "{} refreshes", refreshes.len());
    assert!(
        refreshes
            .iter()
            .all(|c| c.ok() && c.client_auth == slack_emulator::ClientAuth::Basic),
        "every refresh authenticated the app with Basic and succeeded"
    );
    println!(
        "rotation: {} tokens over {:?}, {samples} samples, all live",
        tokens.len(),
        started.elapsed()
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_refresh_token_slack_refuses_turns_the_grant_refresh_failed_with_a_fresh_link() {
    let s = Scenario::start("refresh-refused").await;
    s.rotate_tokens(Duration::from_secs(6));
    let token = ready(&s).await;
    s.slack.emulator.inject_times(
        "oauth.v2.access",
        Fault::Error("invalid_refresh_token".into()),
        1,
    );
    let grant = support::wait_for_grant(&s.grants, "scim", |g| {
        support::ready_reason(g).as_deref() == Some("RefreshFailed")
            && g.status
                .as_ref()
                .is_some_and(|st| st.authorization_url.is_some())
    })
    .await;
    assert_eq!(
        condition(&grant, conditions::AUTHORIZATION_PENDING),
        Some(("True".into(), "RefreshFailed".into()))
    );
    assert_eq!(s.stored_token(KEY).await.as_deref(), Some(token.as_str()));
    // A new approval makes it Ready again, and rotating.
    assert_eq!(s.approve(&s.link("scim").await).await.status, 200);
    s.wait_ready("scim").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_deleted_or_edited_token_secret_is_written_back_from_the_record_without_an_approval() {
    let s = Scenario::start("restore").await;
    let token = ready(&s).await;
    s.secrets
        .delete(scenario_secret(), &Default::default())
        .await
        .expect("delete the token Secret");
    let grant = support::wait_for_grant(&s.grants, "scim", |g| {
        condition(g, conditions::SECRET_RESTORED).is_some_and(|(_, r)| r == "SecretDeleted")
    })
    .await;
    assert_eq!(support::ready_reason(&grant).as_deref(), Some("Authorized"));
    assert_eq!(s.stored_token(KEY).await.as_deref(), Some(token.as_str()));

    let edited = json!({ "data": { KEY: base64("xoxp-typed-by-hand") } });
    s.secrets
        .patch(
            scenario_secret(),
            &PatchParams::default(),
            &Patch::Merge(&edited),
        )
        .await
        .expect("edit the token Secret");
    support::wait_for_grant(&s.grants, "scim", |g| {
        condition(g, conditions::SECRET_RESTORED).is_some_and(|(_, r)| r == "SecretEdited")
    })
    .await;
    let restored = support::wait_for_grant(&s.grants, "scim", |g| {
        support::ready_reason(g).as_deref() == Some("Authorized")
    })
    .await;
    assert_eq!(revision(&restored), 1, "the same token, no new approval");
    for _ in 0..50 {
        if s.stored_token(KEY).await.as_deref() == Some(token.as_str()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the edited token Secret was not written back");
}

fn scenario_secret() -> &'static str {
    crate::scenario::TOKEN_SECRET_NAME
}

fn base64(value: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(value)
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_reauthorization_keeps_ready_until_the_new_token_lands_then_revokes_the_old_one() {
    let s = Scenario::builder("reauthorize")
        .flags(&["--revoke-grace", "3s"])
        .start()
        .await;
    let old = ready(&s).await;
    let watching = Arc::new(AtomicBool::new(true));
    let sampler = {
        let grants = s.grants.clone();
        let watching = watching.clone();
        tokio::spawn(async move {
            let mut samples = 0;
            while watching.load(Ordering::Relaxed) {
                let grant = grants.get("scim").await.expect("grant");
                let ready = condition(&grant, conditions::READY).expect("Ready");
                assert_eq!(ready.0, "True", "Ready flipped: {ready:?}");
                samples += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            samples
        })
    };
    let annotate = json!({ "metadata": { "annotations": {
        "slack-oauth-operator.io/reauthorize": "2026-12-01"
    } } });
    s.grants
        .patch("scim", &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .expect("annotate");
    let pending = support::wait_for_grant(&s.grants, "scim", |g| {
        condition(g, conditions::AUTHORIZATION_PENDING)
            == Some(("True".into(), "ReauthorizationRequested".into()))
            && g.status
                .as_ref()
                .is_some_and(|st| st.authorization_url.is_some())
    })
    .await;
    let link = pending
        .status
        .and_then(|st| st.authorization_url)
        .expect("link");
    assert_eq!(s.stored_token(KEY).await.as_deref(), Some(old.as_str()));

    assert_eq!(s.approve(&link).await.status, 200);
    let new = s.stored_token(KEY).await.expect("a token");
    assert_ne!(new, old, "the new approval's token is in the Secret");
    assert!(
        s.slack.emulator.is_live(&old),
        "the old token is revoked only after the grace"
    );
    let started = Instant::now();
    while s.slack.emulator.is_live(&old) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the replaced token was not revoked"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "revoked after the grace, not at once"
    );
    assert!(s.slack.emulator.is_live(&new));
    let settled = support::wait_for_grant(&s.grants, "scim", |g| {
        condition(g, conditions::AUTHORIZATION_PENDING) == Some(("False".into(), "UpToDate".into()))
    })
    .await;
    assert_eq!(revision(&settled), 2);
    watching.store(false, Ordering::Relaxed);
    let samples = sampler.await.expect("Ready stayed True throughout");
    assert!(samples > 10, "{samples} samples");
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_scope_change_keeps_the_old_token_ready_until_the_new_approval() {
    let s = Scenario::builder("scope-change")
        .flags(&["--revoke-grace", "1s"])
        .start()
        .await;
    let old = ready(&s).await;
    s.apply_grant(
        "scim",
        json!({ "teamID": "T0ACME", "userScopes": ["admin", "users:read"] }),
    )
    .await;
    let pending = support::wait_for_grant(&s.grants, "scim", |g| {
        condition(g, conditions::AUTHORIZATION_PENDING)
            == Some(("True".into(), "SpecChanged".into()))
    })
    .await;
    assert_eq!(
        support::ready_reason(&pending).as_deref(),
        Some("Authorized")
    );
    assert_eq!(s.stored_token(KEY).await.as_deref(), Some(old.as_str()));
    assert!(s.slack.emulator.is_live(&old));
    let link = s.link("scim").await;
    assert_eq!(s.approve(&link).await.status, 200);
    let started = Instant::now();
    while s.slack.emulator.is_live(&old) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "old token kept"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(s.stored_token(KEY).await.as_deref(), Some(old.as_str()));
}

/// A token issued outside the operator, as Ping's hosted service would get one: the whole OAuth
/// flow against the emulator, by hand.
async fn token_from_elsewhere(s: &Scenario) -> String {
    let mut link = url::Url::parse(&format!("{}/oauth/v2/authorize", s.slack.url())).expect("url");
    link.query_pairs_mut()
        .append_pair("client_id", &s.slack.client_id)
        .append_pair("user_scope", "admin")
        .append_pair("redirect_uri", &s.slack.redirect_uri)
        .append_pair("state", "pasted-by-hand");
    let answer = s.exchange_by_hand(link.as_str()).await;
    answer["authed_user"]["access_token"]
        .as_str()
        .expect("a user token")
        .to_owned()
}

async fn paste(s: &Scenario, token: &str, shared: bool) -> Secret {
    let labels = if shared {
        json!({ "slack-oauth-operator.io/shared-with-grants": "true" })
    } else {
        json!({})
    };
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": scenario_secret(), "labels": labels },
        "stringData": { KEY: token }
    }))
    .expect("secret");
    s.secrets
        .create(&Default::default(), &secret)
        .await
        .expect("create the pasted Secret")
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_valid_pasted_token_is_adopted_checked_and_revoked_with_the_grant() {
    let s = Scenario::start("adopt").await;
    s.create_client_secret().await;
    let token = token_from_elsewhere(&s).await;
    paste(&s, &token, true).await;
    s.apply_grant(
        "scim",
        json!({ "teamID": "T0ACME", "secret": { "name": scenario_secret(), "adopt": true } }),
    )
    .await;
    let grant = s.wait_ready("scim").await;
    let installation = grant
        .status
        .and_then(|st| st.installation)
        .expect("installation");
    assert_eq!(installation.team_id.as_deref(), Some("T0ACME"));
    assert!(
        s.slack
            .emulator
            .calls()
            .iter()
            .any(|c| c.method == "auth.test"),
        "checked with Slack before it was adopted"
    );
    let secret = s.token_secret().await.expect("the Secret");
    assert_eq!(s.stored_token(KEY).await.as_deref(), Some(token.as_str()));
    assert!(
        secret
            .metadata
            .owner_references
            .is_some_and(|o| !o.is_empty()),
        "owned by the grant now"
    );
    assert!(
        !s.operator.logs().contains(&token),
        "the adopted token never reaches a log line"
    );
    s.delete_grant("scim").await;
    assert!(
        !s.slack.emulator.is_live(&token),
        "managed: revoked with the grant"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn an_invalid_pasted_token_is_refused_and_a_secret_that_did_not_opt_in_is_untouched() {
    let s = Scenario::start("adopt-refused").await;
    s.create_client_secret().await;
    let pasted = paste(&s, "xoxp-1234-not-a-real-token", true).await;
    s.apply_grant(
        "scim",
        json!({ "secret": { "name": scenario_secret(), "adopt": true } }),
    )
    .await;
    let refused = s.wait_reason("scim", "AdoptionRefused").await;
    let message = refused
        .status
        .as_ref()
        .map(|st| st.conditions[0].message.clone())
        .unwrap_or_default();
    assert!(message.contains("invalid_auth"), "{message}");
    assert!(
        !message.contains("xoxp-1234"),
        "the token is never in status"
    );
    let after = s.token_secret().await.expect("the Secret");
    assert_eq!(
        after.metadata.resource_version, pasted.metadata.resource_version,
        "the Secret is left exactly as it was"
    );

    // Without the opt-in a foreign Secret is never touched, and Slack is never asked.
    let s = Scenario::start("adopt-not-shared").await;
    s.create_client_secret().await;
    let token = token_from_elsewhere(&s).await;
    let pasted = paste(&s, &token, false).await;
    let checks_before = s
        .slack
        .emulator
        .calls()
        .iter()
        .filter(|c| c.method == "auth.test")
        .count();
    s.apply_grant(
        "scim",
        json!({ "secret": { "name": scenario_secret(), "adopt": true } }),
    )
    .await;
    let conflict = s.wait_reason("scim", "SecretConflict").await;
    let message = conflict
        .status
        .map(|st| st.conditions[0].message.clone())
        .unwrap_or_default();
    assert!(message.contains("shared-with-grants"), "{message}");
    let after = s.token_secret().await.expect("the Secret");
    assert_eq!(
        after.metadata.resource_version,
        pasted.metadata.resource_version
    );
    let checks_after = s
        .slack
        .emulator
        .calls()
        .iter()
        .filter(|c| c.method == "auth.test")
        .count();
    assert_eq!(
        checks_before, checks_after,
        "Slack was not asked about a Secret that did not opt in"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_token_secret_from_before_records_moves_under_one_and_loses_its_refresh_token_on_upgrade()
{
    let s = Scenario::start("upgrade").await;
    s.rotate_tokens(Duration::from_secs(3600));
    s.create_client_secret().await;
    s.apply_grant("scim", json!({ "teamID": "T0ACME" })).await;
    let link = s.link("scim").await;
    // A token approved by hand, stored the way versions before the record did: the refresh
    // token and expiry next to it, the approval in annotations.
    let answer = s.exchange_by_hand(&link).await;
    let user = &answer["authed_user"];
    let token = user["access_token"].as_str().expect("token").to_owned();
    let grant = s.grants.get("scim").await.expect("grant");
    // Approved just now, expiring in an hour: not due for a refresh during the test.
    let now = k8s_openapi::jiff::Timestamp::now();
    let expires = now + k8s_openapi::jiff::SignedDuration::from_secs(3600);
    let installation = json!({ "teamID": "T0ACME", "teamName": "Acme", "authorizedUserID": user["id"],
        "scopes": ["admin"], "tokenType": "User", "authorizedAt": now.to_string() });
    let legacy: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": scenario_secret(),
            "labels": { "app.kubernetes.io/managed-by": "slack-oauth-operator" },
            "annotations": {
                "slack-oauth-operator.io/grant": "scim",
                "slack-oauth-operator.io/grant-generation": grant.metadata.generation.expect("generation").to_string(),
                "slack-oauth-operator.io/installation": installation.to_string(),
            },
            "ownerReferences": [{
                "apiVersion": "slack-oauth-operator.io/v1alpha1", "kind": "SlackOAuthGrant",
                "name": "scim", "uid": grant.metadata.uid.clone().expect("uid"), "controller": true
            }]
        },
        "stringData": {
            KEY: token,
            "SLACK_ACCESS_TOKEN_REFRESH_TOKEN": user["refresh_token"].as_str().expect("refresh"),
            "SLACK_ACCESS_TOKEN_EXPIRES_AT": expires.to_string(),
        }
    }))
    .expect("secret");
    s.secrets
        .create(&Default::default(), &legacy)
        .await
        .expect("create the old-style Secret");

    s.wait_ready("scim").await;
    let started = Instant::now();
    loop {
        let secret = s.token_secret().await.expect("the Secret");
        if keys(&secret) == vec![KEY.to_owned()] {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the refresh token stayed in the consumer Secret: {:?}",
            keys(&secret)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(s.stored_token(KEY).await.as_deref(), Some(token.as_str()));
    let record = format!("slack-oauth-record-{}", grant.metadata.uid.expect("uid"));
    assert!(
        s.secrets.get_opt(&record).await.expect("read").is_some(),
        "the refresh token moved to the operator's record"
    );
}
