//! Token rotation: expiring tokens, refresh tokens, and the active-token limit.

use std::time::Duration;

use serde_json::{Value, json};
use slack_emulator::{App, Approver, ROTATING_TOKEN_LIFETIME, TokenKind};

use crate::support::{CLIENT_ID, CLIENT_SECRET, Fixture, REDIRECT};

async fn rotating() -> Fixture {
    Fixture::with_app(App::new(CLIENT_ID, CLIENT_SECRET, REDIRECT).with_token_rotation()).await
}

async fn refresh(f: &Fixture, refresh_token: &str) -> Value {
    f.post(
        "oauth.v2.access",
        &[
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
        None,
    )
    .await
    .json()
}

fn str_of<'v>(value: &'v Value, pointer: &str) -> &'v str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} in {value}"))
}

#[tokio::test]
async fn rotation_issues_expiring_tokens_and_refresh_works() {
    let f = rotating().await;
    let body = f
        .install(&f.link(&[
            ("client_id", CLIENT_ID),
            ("scope", "chat:write"),
            ("user_scope", "admin"),
            ("redirect_uri", REDIRECT),
        ]))
        .await;
    assert!(str_of(&body, "/access_token").starts_with("xoxe.xoxb-1-"));
    assert!(str_of(&body, "/refresh_token").starts_with("xoxe-1-"));
    assert_eq!(body["expires_in"], 43200);
    let user_token = str_of(&body, "/authed_user/access_token").to_owned();
    assert!(user_token.starts_with("xoxe.xoxp-1-"));
    assert_eq!(body["authed_user"]["expires_in"], 43200);
    let user_refresh = str_of(&body, "/authed_user/refresh_token").to_owned();
    assert!(user_refresh.starts_with("xoxe-1-"));
    let issued = f.slack.issued_tokens();
    assert_eq!(
        issued[1].expires_at,
        Some(issued[1].issued_at + Duration::from_secs(43200))
    );

    let refreshed = refresh(&f, &user_refresh).await;
    let new_token = str_of(&refreshed, "/access_token").to_owned();
    assert!(new_token.starts_with("xoxe.xoxp-1-"));
    let app_id = issued[0].app_id.clone();
    assert_eq!(
        refreshed,
        json!({
            "ok": true,
            "app_id": app_id,
            "scope": "admin",
            "token_type": "user",
            "access_token": new_token,
            "refresh_token": str_of(&refreshed, "/refresh_token"),
            "expires_in": 43200,
            "team": { "id": "T0ACME", "name": "Acme" },
            "enterprise": null,
            "is_enterprise_install": false,
        })
    );
    assert!(
        f.slack.is_live(&user_token),
        "refreshing does not kill the old token at once"
    );
    assert!(f.slack.is_live(&new_token));

    let bot = refresh(&f, str_of(&body, "/refresh_token")).await;
    assert_eq!(bot["token_type"], "bot");
    assert_eq!(bot["bot_user_id"], body["bot_user_id"]);
    assert!(str_of(&bot, "/access_token").starts_with("xoxe.xoxb-1-"));
}

#[tokio::test]
async fn rotating_tokens_expire_after_twelve_hours() {
    let f = rotating().await;
    let body = f.install(&f.user_link()).await;
    let token = str_of(&body, "/authed_user/access_token").to_owned();
    let test = f.post("auth.test", &[], Some(&token)).await.json();
    let left = test["expires_in"].as_u64().expect("expires_in");
    assert!((43_100..=43_200).contains(&left), "{left}");

    f.slack.advance_clock(Duration::from_secs(43_200));
    assert!(!f.slack.is_live(&token));
    let expired = f.post("auth.test", &[], Some(&token)).await;
    assert_eq!(expired.error().as_deref(), Some("token_expired"));
    let revoke = f.post("auth.revoke", &[], Some(&token)).await;
    assert_eq!(revoke.error().as_deref(), Some("token_expired"));

    // The refresh token still works after the access token expired.
    let refreshed = refresh(&f, str_of(&body, "/authed_user/refresh_token")).await;
    assert_eq!(refreshed["ok"], true, "{refreshed}");
}

#[tokio::test]
async fn refresh_tokens_are_single_use() {
    let f = rotating().await;
    let body = f.install(&f.user_link()).await;
    let refresh_token = str_of(&body, "/authed_user/refresh_token");
    assert_eq!(refresh(&f, refresh_token).await["ok"], true);
    assert_eq!(
        refresh(&f, refresh_token).await["error"],
        "invalid_refresh_token"
    );
}

#[tokio::test]
async fn refresh_needs_a_known_refresh_token_of_the_same_app() {
    let f = rotating().await;
    f.slack
        .register_app(App::new("other.app", "other-secret", REDIRECT).with_token_rotation());
    let body = f.install(&f.user_link()).await;
    let refresh_token = str_of(&body, "/authed_user/refresh_token");
    let other = f
        .post_basic(
            "oauth.v2.access",
            "other.app",
            "other-secret",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await;
    assert_eq!(other.error().as_deref(), Some("invalid_refresh_token"));
    assert_eq!(
        refresh(&f, "xoxe-1-unknown").await["error"],
        "invalid_refresh_token"
    );
    let access_token = str_of(&body, "/authed_user/access_token");
    assert_eq!(
        refresh(&f, access_token).await["error"],
        "invalid_refresh_token"
    );
    let missing = f
        .post_basic(
            "oauth.v2.access",
            CLIENT_ID,
            CLIENT_SECRET,
            &[("grant_type", "refresh_token")],
        )
        .await;
    assert_eq!(missing.error().as_deref(), Some("invalid_refresh_token"));
    assert_eq!(
        refresh(&f, refresh_token).await["ok"],
        true,
        "the rightful app still can"
    );
}

#[tokio::test]
async fn at_most_two_access_tokens_stay_active_per_installation() {
    let f = rotating().await;
    let body = f.install(&f.user_link()).await;
    let first = str_of(&body, "/authed_user/access_token").to_owned();
    let second = refresh(&f, str_of(&body, "/authed_user/refresh_token")).await;
    let third = refresh(&f, str_of(&second, "/refresh_token")).await;
    assert!(!f.slack.is_live(&first), "the oldest is revoked");
    assert!(f.slack.is_live(str_of(&second, "/access_token")));
    assert!(f.slack.is_live(str_of(&third, "/access_token")));
    let revoked: Vec<bool> = f.slack.issued_tokens().iter().map(|t| t.revoked).collect();
    assert_eq!(revoked, vec![true, false, false]);
}

#[tokio::test]
async fn refreshing_an_org_wide_install_keeps_the_organization() {
    let f = rotating().await;
    f.slack
        .set_approver(Approver::org_owner("E0GRID", "Acme Grid"));
    let body = f.install(&f.user_link()).await;
    let refreshed = refresh(&f, str_of(&body, "/authed_user/refresh_token")).await;
    assert_eq!(refreshed["team"], Value::Null);
    assert_eq!(
        refreshed["enterprise"],
        json!({ "id": "E0GRID", "name": "Acme Grid" })
    );
    assert_eq!(refreshed["is_enterprise_install"], true);
    let issued = f.slack.issued_tokens();
    assert_eq!(issued[1].kind, TokenKind::User);
    assert_eq!(issued[1].enterprise_id.as_deref(), Some("E0GRID"));
}

#[tokio::test]
async fn a_configured_token_lifetime_is_reported_and_enforced() {
    let lifetime = Duration::from_secs(90);
    let f = Fixture::with_app(
        App::new(CLIENT_ID, CLIENT_SECRET, REDIRECT).with_token_lifetime(lifetime),
    )
    .await;
    let body = f
        .install(&f.link(&[
            ("client_id", CLIENT_ID),
            ("scope", "chat:write"),
            ("user_scope", "admin"),
            ("redirect_uri", REDIRECT),
        ]))
        .await;
    assert!(
        str_of(&body, "/authed_user/access_token").starts_with("xoxe.xoxp-1-"),
        "a lifetime implies rotation"
    );
    assert_eq!(body["expires_in"], 90);
    assert_eq!(body["authed_user"]["expires_in"], 90);
    for issued in f.slack.issued_tokens() {
        assert_eq!(issued.expires_at, Some(issued.issued_at + lifetime));
    }

    let token = str_of(&body, "/authed_user/access_token").to_owned();
    let left = f.post("auth.test", &[], Some(&token)).await.json()["expires_in"]
        .as_u64()
        .expect("expires_in");
    assert!((85..=90).contains(&left), "{left}");
    f.slack.advance_clock(Duration::from_secs(30));
    let left = f.post("auth.test", &[], Some(&token)).await.json()["expires_in"]
        .as_u64()
        .expect("expires_in");
    assert!((55..=60).contains(&left), "counts down: {left}");

    let refreshed = refresh(&f, str_of(&body, "/authed_user/refresh_token")).await;
    assert_eq!(refreshed["expires_in"], 90, "{refreshed}");
    let renewed = f.slack.issued_tokens().pop().expect("the refreshed token");
    assert_eq!(renewed.expires_at, Some(renewed.issued_at + lifetime));

    f.slack.advance_clock(Duration::from_secs(60));
    let expired = f.post("auth.test", &[], Some(&token)).await;
    assert_eq!(expired.error().as_deref(), Some("token_expired"));
    let newer = f
        .post("auth.test", &[], Some(str_of(&refreshed, "/access_token")))
        .await;
    assert_eq!(
        newer.json()["ok"],
        true,
        "the refreshed token lives its own 90 s"
    );
}

#[tokio::test]
async fn a_sub_second_lifetime_reports_one_second_and_expires_in_real_time() {
    let f = Fixture::with_app(
        App::new(CLIENT_ID, CLIENT_SECRET, REDIRECT)
            .with_token_lifetime(Duration::from_millis(300)),
    )
    .await;
    let body = f.install(&f.user_link()).await;
    assert_eq!(body["authed_user"]["expires_in"], 1);
    let token = str_of(&body, "/authed_user/access_token").to_owned();

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!f.slack.is_live(&token));
    let expired = f.post("auth.test", &[], Some(&token)).await;
    assert_eq!(expired.error().as_deref(), Some("token_expired"));
    let refreshed = refresh(&f, str_of(&body, "/authed_user/refresh_token")).await;
    assert_eq!(refreshed["expires_in"], 1, "{refreshed}");
}

#[tokio::test]
async fn a_refreshed_token_stays_live_until_pushed_out_by_the_next_refresh() {
    let f = rotating().await;
    let body = f.install(&f.user_link()).await;
    let mut tokens = vec![str_of(&body, "/authed_user/access_token").to_owned()];
    let mut refresh_token = str_of(&body, "/authed_user/refresh_token").to_owned();
    for n in 1..=3 {
        let refreshed = refresh(&f, &refresh_token).await;
        assert_eq!(refreshed["ok"], true, "refresh {n}: {refreshed}");
        tokens.push(str_of(&refreshed, "/access_token").to_owned());
        refresh_token = str_of(&refreshed, "/refresh_token").to_owned();

        for (age, token) in tokens.iter().rev().enumerate() {
            let test = f.post("auth.test", &[], Some(token)).await;
            if age < 2 {
                assert_eq!(test.json()["ok"], true, "refresh {n}, token {age} back");
            } else {
                assert_eq!(
                    test.error().as_deref(),
                    Some("token_revoked"),
                    "refresh {n}, token {age} back"
                );
            }
        }
    }
}

#[tokio::test]
async fn live_tokens_lists_the_live_tokens_of_one_installation() {
    let f = rotating().await;
    let both = f.link(&[
        ("client_id", CLIENT_ID),
        ("scope", "chat:write"),
        ("user_scope", "admin"),
        ("redirect_uri", REDIRECT),
    ]);
    let acme = f.install(&both).await;
    f.slack
        .set_approver(Approver::workspace_owner("T0OTHER", "Other"));
    let other = f.install(&both).await;
    f.slack
        .set_approver(Approver::org_owner("E0GRID", "Acme Grid"));
    let grid = f.install(&f.user_link()).await;

    let live = |target: &str| -> Vec<String> {
        f.slack
            .live_tokens(CLIENT_ID, target)
            .into_iter()
            .map(|t| t.token)
            .collect()
    };
    let bot = str_of(&acme, "/access_token").to_owned();
    let user = str_of(&acme, "/authed_user/access_token").to_owned();
    assert_eq!(live("T0ACME"), vec![bot.clone(), user.clone()]);
    assert_eq!(
        live("T0OTHER"),
        vec![
            str_of(&other, "/access_token").to_owned(),
            str_of(&other, "/authed_user/access_token").to_owned(),
        ]
    );
    assert_eq!(
        live("E0GRID"),
        vec![str_of(&grid, "/authed_user/access_token").to_owned()]
    );
    assert!(f.slack.live_tokens("other.app", "T0ACME").is_empty());

    let first = refresh(&f, str_of(&acme, "/authed_user/refresh_token")).await;
    let second = refresh(&f, str_of(&first, "/refresh_token")).await;
    let first = str_of(&first, "/access_token").to_owned();
    let second = str_of(&second, "/access_token").to_owned();
    assert_eq!(
        live("T0ACME"),
        vec![bot.clone(), first.clone(), second.clone()],
        "the original user token was pushed out"
    );
    assert!(f.slack.revoke(&bot));
    assert_eq!(live("T0ACME"), vec![first, second]);
    let tokens = f.slack.live_tokens(CLIENT_ID, "T0ACME");
    assert!(
        tokens
            .iter()
            .all(|t| t.kind == TokenKind::User && !t.revoked)
    );

    f.slack.advance_clock(ROTATING_TOKEN_LIFETIME);
    assert!(live("T0ACME").is_empty(), "expired tokens are not live");
    assert!(live("E0GRID").is_empty());
}
