//! `oauth.v2.access` with `grant_type=authorization_code`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use slack_emulator::{Approver, ClientAuth, TokenKind};

use crate::support::{CLIENT_ID, CLIENT_SECRET, Fixture, REDIRECT, reply};

#[tokio::test]
async fn user_only_install_has_authed_user_and_no_top_level_token() {
    let f = Fixture::start().await;
    let body = f.install(&f.user_link()).await;
    let token = body["authed_user"]["access_token"]
        .as_str()
        .expect("a user token")
        .to_owned();
    assert!(token.starts_with("xoxp-"), "{token}");
    let app_id = f.slack.issued_tokens()[0].app_id.clone();
    assert_eq!(
        body,
        json!({
            "ok": true,
            "app_id": app_id,
            "authed_user": { "id": "U0OWNER0001", "scope": "admin", "access_token": token, "token_type": "user" },
            "team": { "id": "T0ACME", "name": "Acme" },
            "enterprise": null,
            "is_enterprise_install": false,
        })
    );
    let issued = f.slack.issued_tokens();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].kind, TokenKind::User);
    assert_eq!(issued[0].team_id.as_deref(), Some("T0ACME"));
    assert_eq!(issued[0].scopes, vec!["admin"]);
    assert_eq!(issued[0].expires_at, None);
    assert!(f.slack.is_live(&token));
}

#[tokio::test]
async fn bot_and_user_install_returns_both_tokens() {
    let f = Fixture::start().await;
    let body = f
        .install(&f.link(&[
            ("client_id", CLIENT_ID),
            ("scope", "chat:write,channels:read"),
            ("user_scope", "admin,users:read"),
            ("redirect_uri", REDIRECT),
        ]))
        .await;
    assert!(
        body["access_token"]
            .as_str()
            .expect("bot token")
            .starts_with("xoxb-")
    );
    assert_eq!(body["token_type"], "bot");
    assert_eq!(body["scope"], "chat:write,channels:read");
    assert!(
        body["bot_user_id"]
            .as_str()
            .expect("bot user")
            .starts_with('U')
    );
    assert_eq!(body["authed_user"]["scope"], "admin,users:read");
    assert_eq!(body["authed_user"]["token_type"], "user");
    assert!(
        body["authed_user"]["access_token"]
            .as_str()
            .expect("user token")
            .starts_with("xoxp-")
    );
    assert_eq!(body["team"], json!({ "id": "T0ACME", "name": "Acme" }));
    assert!(body.get("refresh_token").is_none() && body.get("expires_in").is_none());
    let kinds: Vec<_> = f.slack.issued_tokens().iter().map(|t| t.kind).collect();
    assert_eq!(kinds, vec![TokenKind::Bot, TokenKind::User]);
}

#[tokio::test]
async fn bot_only_install_has_an_authed_user_without_a_token() {
    let f = Fixture::start().await;
    let body = f
        .install(&f.link(&[
            ("client_id", CLIENT_ID),
            ("scope", "chat:write"),
            ("redirect_uri", REDIRECT),
        ]))
        .await;
    assert_eq!(body["authed_user"], json!({ "id": "U0OWNER0001" }));
    assert_eq!(f.slack.issued_tokens().len(), 1);
}

#[tokio::test]
async fn org_wide_install_has_null_team() {
    let f = Fixture::start().await;
    f.slack
        .set_approver(Approver::org_owner("E0GRID", "Acme Grid"));
    let body = f.install(&f.user_link()).await;
    assert_eq!(body["team"], json!(null));
    assert_eq!(
        body["enterprise"],
        json!({ "id": "E0GRID", "name": "Acme Grid" })
    );
    assert_eq!(body["is_enterprise_install"], true);
    assert!(
        body["authed_user"]["access_token"]
            .as_str()
            .expect("user token")
            .starts_with("xoxp-")
    );
    let issued = &f.slack.issued_tokens()[0];
    assert_eq!(issued.team_id, None);
    assert_eq!(issued.enterprise_id.as_deref(), Some("E0GRID"));
    assert!(issued.is_enterprise_install);
}

#[tokio::test]
async fn workspace_install_in_a_grid_names_the_team_and_the_enterprise() {
    let f = Fixture::start().await;
    f.slack.set_approver(Approver::grid_workspace_owner(
        "T0ACME",
        "Acme",
        "E0GRID",
        "Acme Grid",
    ));
    let body = f.install(&f.user_link()).await;
    assert_eq!(body["team"], json!({ "id": "T0ACME", "name": "Acme" }));
    assert_eq!(
        body["enterprise"],
        json!({ "id": "E0GRID", "name": "Acme Grid" })
    );
    assert_eq!(body["is_enterprise_install"], false);
}

#[tokio::test]
async fn approver_overrides_limit_the_granted_scopes() {
    let f = Fixture::start().await;
    let mut approver = Approver::workspace_owner("T0ACME", "Acme");
    approver.granted_user_scopes = Some(vec!["users:read".into()]);
    f.slack.set_approver(approver);
    let body = f.install(&f.user_link()).await;
    assert_eq!(body["authed_user"]["scope"], "users:read");
    assert_eq!(f.slack.issued_tokens()[0].scopes, vec!["users:read"]);
}

#[tokio::test]
async fn scopes_are_additive_across_installs_of_the_same_user() {
    let f = Fixture::start().await;
    let first = f
        .install(&f.link(&[
            ("client_id", CLIENT_ID),
            ("user_scope", "admin,users:read"),
            ("redirect_uri", REDIRECT),
        ]))
        .await;
    let narrower = f
        .install(&f.link(&[
            ("client_id", CLIENT_ID),
            ("user_scope", "admin"),
            ("redirect_uri", REDIRECT),
        ]))
        .await;
    assert_eq!(
        narrower["authed_user"]["scope"], "admin,users:read",
        "the live token's scopes stay"
    );
    // Once the broader token is revoked, a new install gets what it asks for.
    let first_token = first["authed_user"]["access_token"]
        .as_str()
        .expect("token");
    let second_token = narrower["authed_user"]["access_token"]
        .as_str()
        .expect("token");
    assert!(f.slack.revoke(first_token) && f.slack.revoke(second_token));
    let fresh = f
        .install(&f.link(&[
            ("client_id", CLIENT_ID),
            ("user_scope", "admin"),
            ("redirect_uri", REDIRECT),
        ]))
        .await;
    assert_eq!(fresh["authed_user"]["scope"], "admin");
}

#[tokio::test]
async fn each_exchange_issues_fresh_independent_tokens() {
    let f = Fixture::start().await;
    let a = f.install(&f.user_link()).await;
    let b = f.install(&f.user_link()).await;
    let (a, b) = (
        &a["authed_user"]["access_token"],
        &b["authed_user"]["access_token"],
    );
    assert_ne!(a, b);
    assert!(f.slack.revoke(a.as_str().expect("token")));
    assert!(
        f.slack.is_live(b.as_str().expect("token")),
        "revoking one leaves the other"
    );
}

#[tokio::test]
async fn tokens_look_like_slack_tokens_and_carry_enough_randomness() {
    let f = Fixture::start().await;
    let body = f
        .install(&f.link(&[
            ("client_id", CLIENT_ID),
            ("scope", "chat:write"),
            ("user_scope", "admin"),
            ("redirect_uri", REDIRECT),
        ]))
        .await;
    let bot = body["access_token"].as_str().expect("bot");
    let user = body["authed_user"]["access_token"].as_str().expect("user");
    // xoxb-<13 digits>-<13 digits>-<24 alphanumerics>
    let parts: Vec<_> = bot.split('-').collect();
    assert_eq!(parts.len(), 4, "{}", bot.len());
    assert_eq!(parts[3].len(), 24);
    assert!(parts[3].chars().all(|c| c.is_ascii_alphanumeric()));
    // xoxp-<n>-<n>-<n>-<32 hex>
    let parts: Vec<_> = user.split('-').collect();
    assert_eq!(parts.len(), 5);
    assert_eq!(parts[4].len(), 32);
    assert!(parts[4].chars().all(|c| c.is_ascii_hexdigit()));
}

#[tokio::test]
async fn code_works_once() {
    let f = Fixture::start().await;
    let code = f.code().await;
    assert_eq!(f.exchange(&code).await.json()["ok"], true);
    let replay = f.exchange(&code).await;
    assert_eq!(replay.status, StatusCode::OK);
    assert_eq!(replay.error().as_deref(), Some("invalid_code"));
    assert_eq!(f.slack.issued_tokens().len(), 1);
}

#[tokio::test]
async fn code_is_used_up_even_by_a_failed_exchange() {
    let f = Fixture::start().await;
    let code = f.code().await;
    let wrong = f
        .post_basic(
            "oauth.v2.access",
            CLIENT_ID,
            CLIENT_SECRET,
            &[
                ("code", &code),
                ("redirect_uri", "http://127.0.0.1:9/oauth/callback/x"),
            ],
        )
        .await;
    assert_eq!(wrong.error().as_deref(), Some("bad_redirect_uri"));
    assert_eq!(
        f.exchange(&code).await.error().as_deref(),
        Some("invalid_code")
    );
}

#[tokio::test]
async fn code_expires_after_ten_minutes() {
    let f = Fixture::start().await;
    let fresh = f.code().await;
    let stale = f.code().await;
    f.slack.advance_clock(Duration::from_secs(9 * 60 + 50));
    assert_eq!(
        f.exchange(&fresh).await.json()["ok"],
        true,
        "still valid just before 10 minutes"
    );
    f.slack.advance_clock(Duration::from_secs(10));
    assert_eq!(
        f.exchange(&stale).await.error().as_deref(),
        Some("invalid_code")
    );
}

#[tokio::test]
async fn unknown_code_or_a_code_of_another_app_is_invalid() {
    let f = Fixture::start().await;
    f.slack.register_app(slack_emulator::App::new(
        "other.app",
        "other-secret",
        REDIRECT,
    ));
    assert_eq!(
        f.exchange("123.456.deadbeef").await.error().as_deref(),
        Some("invalid_code")
    );
    let missing = f
        .post_basic(
            "oauth.v2.access",
            CLIENT_ID,
            CLIENT_SECRET,
            &[("redirect_uri", REDIRECT)],
        )
        .await;
    assert_eq!(missing.error().as_deref(), Some("invalid_code"));

    let code = f.code().await;
    let stolen = f
        .post_basic(
            "oauth.v2.access",
            "other.app",
            "other-secret",
            &[("code", &code), ("redirect_uri", REDIRECT)],
        )
        .await;
    assert_eq!(stolen.error().as_deref(), Some("invalid_code"));
    assert_eq!(
        f.exchange(&code).await.json()["ok"],
        true,
        "the rightful app can still use it"
    );
}

#[tokio::test]
async fn redirect_uri_must_match_the_authorize_step() {
    let f = Fixture::start().await;
    let code = f.code().await;
    let missing = f
        .post_basic(
            "oauth.v2.access",
            CLIENT_ID,
            CLIENT_SECRET,
            &[("code", &code)],
        )
        .await;
    assert_eq!(
        missing.error().as_deref(),
        Some("bad_redirect_uri"),
        "required once sent on authorize"
    );

    let code = f.code().await;
    let sub_path = format!("{REDIRECT}/other");
    let other = f
        .post_basic(
            "oauth.v2.access",
            CLIENT_ID,
            CLIENT_SECRET,
            &[("code", &code), ("redirect_uri", &sub_path)],
        )
        .await;
    assert_eq!(
        other.error().as_deref(),
        Some("bad_redirect_uri"),
        "identical, not merely allowed"
    );

    let code = f.code().await;
    assert_eq!(f.exchange(&code).await.json()["ok"], true);
}

#[tokio::test]
async fn redirect_uri_is_optional_when_the_authorize_step_omitted_it() {
    let f = Fixture::start().await;
    let link = f.link(&[("client_id", CLIENT_ID), ("user_scope", "admin")]);
    let code = f.code_for(&link).await;
    let ok = f
        .post_basic(
            "oauth.v2.access",
            CLIENT_ID,
            CLIENT_SECRET,
            &[("code", &code)],
        )
        .await;
    assert_eq!(ok.json()["ok"], true);

    let code = f.code_for(&link).await;
    assert_eq!(
        f.exchange(&code).await.json()["ok"],
        true,
        "naming the URL Slack used is fine"
    );

    let code = f.code_for(&link).await;
    let other = f
        .post_basic(
            "oauth.v2.access",
            CLIENT_ID,
            CLIENT_SECRET,
            &[("code", &code), ("redirect_uri", "https://x.example/cb")],
        )
        .await;
    assert_eq!(other.error().as_deref(), Some("bad_redirect_uri"));
}

#[tokio::test]
async fn basic_and_form_client_auth_both_work() {
    let f = Fixture::start().await;
    let code = f.code().await;
    assert_eq!(f.exchange(&code).await.json()["ok"], true);

    let code = f.code().await;
    let form = f
        .post(
            "oauth.v2.access",
            &[
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("code", &code),
                ("redirect_uri", REDIRECT),
            ],
            None,
        )
        .await;
    assert_eq!(form.json()["ok"], true);

    let calls = f.slack.calls();
    assert_eq!(calls[0].client_auth, ClientAuth::Basic);
    assert_eq!(calls[0].client_id.as_deref(), Some(CLIENT_ID));
    assert_eq!(
        calls[0].client_secret(),
        None,
        "Basic credentials are not body parameters"
    );
    assert_eq!(calls[1].client_auth, ClientAuth::Form);
    assert_eq!(calls[1].client_secret(), Some(CLIENT_SECRET));
    assert_eq!(
        calls[1].content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
}

#[tokio::test]
async fn unknown_client_wrong_secret_and_missing_credentials_are_refused() {
    let f = Fixture::start().await;
    let code = f.code().await;
    let form = [("code", code.as_str()), ("redirect_uri", REDIRECT)];
    let unknown = f
        .post_basic("oauth.v2.access", "nobody", CLIENT_SECRET, &form)
        .await;
    assert_eq!(unknown.error().as_deref(), Some("invalid_client_id"));
    let wrong = f
        .post_basic("oauth.v2.access", CLIENT_ID, "wrong", &form)
        .await;
    assert_eq!(wrong.error().as_deref(), Some("bad_client_secret"));
    let none = f.post("oauth.v2.access", &form, None).await;
    assert_eq!(none.error().as_deref(), Some("invalid_client_id"));
    let wrong_form = f
        .post(
            "oauth.v2.access",
            &[
                ("client_id", CLIENT_ID),
                ("client_secret", "wrong"),
                ("code", &code),
            ],
            None,
        )
        .await;
    assert_eq!(wrong_form.error().as_deref(), Some("bad_client_secret"));
    let contradicting = f
        .post_basic(
            "oauth.v2.access",
            CLIENT_ID,
            CLIENT_SECRET,
            &[
                ("client_id", "other"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
            ],
        )
        .await;
    assert_eq!(contradicting.error().as_deref(), Some("invalid_client_id"));
    // Failed client authentication does not consume the code.
    assert_eq!(f.exchange(&code).await.json()["ok"], true);
}

#[tokio::test]
async fn errors_are_ok_false_with_http_200() {
    let f = Fixture::start().await;
    for reply in [
        f.exchange("nope").await,
        f.post_basic("oauth.v2.access", CLIENT_ID, "wrong", &[])
            .await,
        f.post("auth.test", &[], None).await,
        f.post("auth.revoke", &[("token", "xoxp-unknown")], None)
            .await,
        f.post("no.such.method", &[], None).await,
    ] {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(
            reply.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        let body = reply.json();
        assert_eq!(body["ok"], false, "{body}");
        assert!(body["error"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn bad_grant_type_is_refused() {
    let f = Fixture::start().await;
    let code = f.code().await;
    let reply = f
        .post_basic(
            "oauth.v2.access",
            CLIENT_ID,
            CLIENT_SECRET,
            &[
                ("grant_type", "password"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
            ],
        )
        .await;
    assert_eq!(reply.error().as_deref(), Some("invalid_grant_type"));
    assert_eq!(
        f.exchange(&code).await.json()["ok"],
        true,
        "the code was not consumed"
    );
}

#[tokio::test]
async fn json_bodies_are_accepted_and_warned_about_a_missing_charset() {
    let f = Fixture::start().await;
    let code = f.code().await;
    let reply = reply(
        f.http
            .post(f.method_url("oauth.v2.access"))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .json(&json!({ "code": code, "redirect_uri": REDIRECT })),
    )
    .await;
    let body = reply.json();
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(body["warning"], "missing_charset");
    assert_eq!(
        body["response_metadata"]["warnings"],
        json!(["missing_charset"])
    );

    let code = f.code().await;
    let reply = crate::support::reply(
        f.http
            .post(f.method_url("oauth.v2.access"))
            .header("content-type", "application/json; charset=utf-8")
            .body(json!({ "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "code": code, "redirect_uri": REDIRECT }).to_string()),
    )
    .await;
    let body = reply.json();
    assert_eq!(body["ok"], true, "{body}");
    assert!(body.get("warning").is_none());
}

#[tokio::test]
async fn multipart_bodies_are_accepted_like_slacks_curl_example() {
    let f = Fixture::start().await;
    let code = f.code().await;
    let boundary = "XyZ123";
    let mut body = String::new();
    for (name, value) in [
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("code", &code),
        ("redirect_uri", REDIRECT),
    ] {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    let reply = reply(
        f.http
            .post(f.method_url("oauth.v2.access"))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body),
    )
    .await;
    assert_eq!(reply.json()["ok"], true, "{}", reply.text);
}

#[tokio::test]
async fn unsupported_bodies_and_methods_are_refused() {
    let f = Fixture::start().await;
    let get = reply(f.http.get(format!(
        "{}?code=x&client_id={CLIENT_ID}",
        f.method_url("oauth.v2.access")
    )))
    .await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.header("allow"), Some("POST"));
    assert_eq!(get.error().as_deref(), Some("invalid_post_type"));

    let xml = reply(
        f.http
            .post(f.method_url("auth.test"))
            .header("content-type", "text/xml")
            .body("<x/>"),
    )
    .await;
    assert_eq!(xml.error().as_deref(), Some("invalid_post_type"));
    let untyped = reply(f.http.post(f.method_url("auth.test")).body("token=x")).await;
    assert_eq!(untyped.error().as_deref(), Some("missing_post_type"));
    let broken = reply(
        f.http
            .post(f.method_url("auth.test"))
            .header("content-type", "application/json")
            .body("{"),
    )
    .await;
    assert_eq!(broken.error().as_deref(), Some("invalid_json"));

    let methods: Vec<_> = f
        .slack
        .calls()
        .iter()
        .map(|c| c.http_method.clone())
        .collect();
    assert_eq!(
        methods,
        vec!["GET", "POST", "POST", "POST"],
        "refused calls are recorded too"
    );
}
