//! `auth.test` and `auth.revoke`, unknown methods and other paths.

use reqwest::StatusCode;
use serde_json::{Value, json};
use slack_emulator::Approver;

use crate::support::{CLIENT_ID, Fixture, REDIRECT, reply};

fn user_token(body: &Value) -> String {
    body["authed_user"]["access_token"]
        .as_str()
        .expect("user token")
        .to_owned()
}

#[tokio::test]
async fn auth_test_describes_a_workspace_user_token() {
    let f = Fixture::start().await;
    let token = user_token(&f.install(&f.user_link()).await);
    let reply = f.post("auth.test", &[], Some(&token)).await;
    let app_id = f.slack.issued_tokens()[0].app_id.clone();
    assert_eq!(
        reply.json(),
        json!({
            "ok": true,
            "url": "https://acme.slack.com/",
            "team": "Acme",
            "user": "owner",
            "team_id": "T0ACME",
            "user_id": "U0OWNER0001",
            "is_enterprise_install": false,
            "app_id": app_id,
            "app_name": "Test App",
        })
    );
    assert_eq!(reply.header("x-oauth-scopes"), Some("admin"));
}

#[tokio::test]
async fn auth_test_reports_the_enterprise_as_team_for_org_installs() {
    let f = Fixture::start().await;
    f.slack
        .set_approver(Approver::org_owner("E0GRID", "Acme Grid"));
    let token = user_token(&f.install(&f.user_link()).await);
    let body = f.post("auth.test", &[("token", &token)], None).await.json();
    assert_eq!(body["team_id"], "E0GRID");
    assert_eq!(body["enterprise_id"], "E0GRID");
    assert_eq!(body["team"], "Acme Grid");
    assert_eq!(body["url"], "https://acme-grid.enterprise.slack.com/");
    assert_eq!(body["is_enterprise_install"], true);
}

#[tokio::test]
async fn auth_test_describes_a_bot_token() {
    let f = Fixture::start().await;
    let body = f
        .install(&f.link(&[
            ("client_id", CLIENT_ID),
            ("scope", "chat:write,users:read"),
            ("redirect_uri", REDIRECT),
        ]))
        .await;
    let token = body["access_token"].as_str().expect("bot token");
    let reply = f.post("auth.test", &[], Some(token)).await;
    let test = reply.json();
    assert_eq!(test["user_id"], body["bot_user_id"]);
    assert!(test["bot_id"].as_str().expect("bot_id").starts_with('B'));
    assert_eq!(test["team_id"], "T0ACME");
    assert!(test.get("enterprise_id").is_none());
    assert_eq!(
        reply.header("x-oauth-scopes"),
        Some("chat:write,users:read")
    );
}

#[tokio::test]
async fn revoked_token_fails_auth_test_as_token_revoked() {
    let f = Fixture::start().await;
    let token = user_token(&f.install(&f.user_link()).await);
    let revoke = f.post("auth.revoke", &[], Some(&token)).await;
    assert_eq!(revoke.json(), json!({ "ok": true, "revoked": true }));
    assert_eq!(revoke.header("x-oauth-scopes"), Some("admin"));
    assert!(!f.slack.is_live(&token));
    assert!(f.slack.issued_tokens()[0].revoked);
    let test = f.post("auth.test", &[], Some(&token)).await;
    assert_eq!(test.error().as_deref(), Some("token_revoked"));
    assert!(test.header("x-oauth-scopes").is_none());
}

#[tokio::test]
async fn a_token_revoked_by_an_admin_is_token_revoked_for_every_method() {
    let f = Fixture::start().await;
    let token = user_token(&f.install(&f.user_link()).await);
    assert!(f.slack.revoke(&token));
    for method in ["auth.test", "auth.revoke"] {
        let reply = f.post(method, &[], Some(&token)).await;
        assert_eq!(reply.error().as_deref(), Some("token_revoked"), "{method}");
    }
}

#[tokio::test]
async fn revoke_accepts_a_bearer_or_a_form_token() {
    let f = Fixture::start().await;
    let by_header = user_token(&f.install(&f.user_link()).await);
    let by_form = user_token(&f.install(&f.user_link()).await);
    assert_eq!(
        f.post("auth.revoke", &[], Some(&by_header)).await.json()["revoked"],
        true
    );
    assert_eq!(
        f.post("auth.revoke", &[("token", &by_form)], None)
            .await
            .json()["revoked"],
        true
    );
    assert!(f.slack.issued_tokens().iter().all(|t| t.revoked));
    let calls = f.slack.calls();
    assert_eq!(calls[2].token(), Some(by_header.as_str()));
    assert_eq!(calls[3].token(), Some(by_form.as_str()));
}

#[tokio::test]
async fn revoke_dry_run_keeps_the_token() {
    let f = Fixture::start().await;
    let token = user_token(&f.install(&f.user_link()).await);
    let dry = f.post("auth.revoke", &[("test", "1")], Some(&token)).await;
    assert_eq!(dry.json(), json!({ "ok": true, "revoked": false }));
    assert!(f.slack.is_live(&token));
}

#[tokio::test]
async fn revoking_twice_is_token_revoked_and_an_unknown_token_invalid_auth() {
    let f = Fixture::start().await;
    let token = user_token(&f.install(&f.user_link()).await);
    assert_eq!(
        f.post("auth.revoke", &[], Some(&token)).await.json()["ok"],
        true
    );
    assert_eq!(
        f.post("auth.revoke", &[], Some(&token))
            .await
            .error()
            .as_deref(),
        Some("token_revoked")
    );
    assert_eq!(
        f.post("auth.revoke", &[], Some("xoxp-1-2-3-nope"))
            .await
            .error()
            .as_deref(),
        Some("invalid_auth")
    );
    assert_eq!(
        f.post("auth.test", &[], Some("xoxp-1-2-3-nope"))
            .await
            .error()
            .as_deref(),
        Some("invalid_auth"),
        "a token never issued stays invalid_auth"
    );
}

#[tokio::test]
async fn missing_token_is_not_authed() {
    let f = Fixture::start().await;
    for method in ["auth.test", "auth.revoke"] {
        assert_eq!(
            f.post(method, &[], None).await.error().as_deref(),
            Some("not_authed"),
            "{method}"
        );
        assert_eq!(
            f.post(method, &[("token", "")], None)
                .await
                .error()
                .as_deref(),
            Some("not_authed"),
            "{method}"
        );
    }
}

#[tokio::test]
async fn json_bodies_do_not_carry_tokens() {
    let f = Fixture::start().await;
    let token = user_token(&f.install(&f.user_link()).await);
    let in_body = reply(
        f.http
            .post(f.method_url("auth.test"))
            .json(&json!({ "token": token })),
    )
    .await;
    assert_eq!(in_body.error().as_deref(), Some("not_authed"));
    let in_header = reply(
        f.http
            .post(f.method_url("auth.test"))
            .bearer_auth(&token)
            .json(&json!({})),
    )
    .await;
    assert_eq!(in_header.json()["ok"], true);
}

#[tokio::test]
async fn unknown_method_answers_unknown_method_and_other_paths_are_404() {
    // (SCIM serves only `GET Users`, the probe; see scim.rs.)
    let f = Fixture::start().await;
    let unknown = f.post("chat.postMessage", &[], None).await;
    assert_eq!(unknown.status, StatusCode::OK);
    assert_eq!(unknown.error().as_deref(), Some("unknown_method"));
    for path in ["/", "/oauth/authorize", "/api", "/scim/v2/Groups"] {
        let reply = reply(f.http.get(format!("{}{path}", f.slack.url()))).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
    }
}
