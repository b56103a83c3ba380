//! The handle: URLs, the call record, lifetime, and what `Debug` shows.

use std::time::Duration;

use slack_emulator::{ClientAuth, SlackEmulator, TokenKind};

use crate::support::{CLIENT_ID, CLIENT_SECRET, Fixture};

#[tokio::test]
async fn urls_point_at_the_loopback_port() {
    let slack = SlackEmulator::start().await.expect("start");
    let port = slack.local_addr().port();
    assert_eq!(slack.url(), format!("http://127.0.0.1:{port}"));
    assert_eq!(slack.api_url(), format!("http://127.0.0.1:{port}/api"));
}

#[tokio::test]
async fn every_api_call_is_recorded_in_order() {
    let f = Fixture::start().await;
    let code = f.code().await;
    let body = f.exchange(&code).await.json();
    let token = body["authed_user"]["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    f.post("auth.test", &[], Some(&token)).await;
    f.post("auth.revoke", &[], Some(&token)).await;

    let calls = f.slack.calls();
    let methods: Vec<_> = calls.iter().map(|c| c.method.as_str()).collect();
    assert_eq!(methods, vec!["oauth.v2.access", "auth.test", "auth.revoke"]);
    let exchange = &calls[0];
    assert_eq!(exchange.http_method, "POST");
    assert_eq!(exchange.client_auth, ClientAuth::Basic);
    assert_eq!(exchange.code(), Some(code.as_str()));
    assert_eq!(exchange.param("grant_type"), Some("authorization_code"));
    assert_eq!(exchange.status, 200);
    assert!(exchange.ok());
    assert_eq!(exchange.response, body);
    assert_eq!(calls[1].bearer.as_deref(), Some(token.as_str()));
    assert_eq!(calls[1].client_auth, ClientAuth::None);
    assert_eq!(calls[2].response["revoked"], true);
}

#[tokio::test]
async fn debug_output_redacts_secrets() {
    let f = Fixture::with_app(
        slack_emulator::App::new(CLIENT_ID, CLIENT_SECRET, crate::support::REDIRECT)
            .with_token_rotation(),
    )
    .await;
    let code = f.code().await;
    let body = f
        .post(
            "oauth.v2.access",
            &[
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
                ("code", &code),
                ("redirect_uri", crate::support::REDIRECT),
            ],
            None,
        )
        .await
        .json();
    let token = body["authed_user"]["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let refresh = body["authed_user"]["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    f.post("auth.test", &[], Some(&token)).await;
    f.post("auth.revoke", &[("token", &token)], None).await;

    let printed = format!(
        "{:?}\n{:#?}\n{:?}\n{:?}",
        f.slack.calls(),
        f.slack.issued_tokens(),
        f.slack,
        slack_emulator::App::new(CLIENT_ID, CLIENT_SECRET, "https://x.example/cb")
    );
    for secret in [
        CLIENT_SECRET,
        code.as_str(),
        token.as_str(),
        refresh.as_str(),
    ] {
        assert!(
            !printed.contains(secret),
            "a secret leaked into Debug output:\n{printed}"
        );
    }
    assert!(printed.contains("xoxe.xoxp-1-[redacted]"), "{printed}");
    assert!(printed.contains(CLIENT_ID), "non-secrets stay visible");
    assert!(printed.contains("oauth.v2.access"));
    // The raw values stay reachable for tests that need them.
    let issued = &f.slack.issued_tokens()[0];
    assert_eq!(issued.token, token);
    assert_eq!(issued.refresh_token.as_deref(), Some(refresh.as_str()));
    assert_eq!(issued.kind, TokenKind::User);
    assert_eq!(f.slack.calls()[0].client_secret(), Some(CLIENT_SECRET));
}

#[test]
fn app_debug_shows_rotation_and_the_token_lifetime() {
    let app = slack_emulator::App::new(CLIENT_ID, CLIENT_SECRET, crate::support::REDIRECT)
        .with_token_lifetime(Duration::from_secs(90));
    assert!(app.token_rotation, "a lifetime implies rotation");
    let printed = format!("{app:?}");
    assert!(printed.contains("token_rotation: true"), "{printed}");
    assert!(printed.contains("token_lifetime: 90s"), "{printed}");
    assert!(!printed.contains(CLIENT_SECRET), "{printed}");
    let default = slack_emulator::App::new(CLIENT_ID, CLIENT_SECRET, crate::support::REDIRECT);
    assert_eq!(
        default.token_lifetime,
        slack_emulator::ROTATING_TOKEN_LIFETIME
    );
}

#[tokio::test]
async fn is_live_tracks_revocation_and_expiry() {
    let f = Fixture::start().await;
    assert!(!f.slack.is_live("xoxp-never-issued"));
    let body = f.install(&f.user_link()).await;
    let token = body["authed_user"]["access_token"].as_str().expect("token");
    assert!(f.slack.is_live(token));
    f.slack.advance_clock(Duration::from_secs(365 * 24 * 3600));
    assert!(
        f.slack.is_live(token),
        "without rotation tokens never expire"
    );
    assert!(f.slack.revoke(token));
    assert!(!f.slack.is_live(token));
    assert!(!f.slack.revoke(token), "already revoked");
}

#[tokio::test]
async fn emulator_stops_when_the_last_handle_is_dropped() {
    let slack = SlackEmulator::start().await.expect("start");
    let clone = slack.clone();
    let url = slack.url();
    crate::support::install_tls_provider();
    let http = reqwest::Client::new();
    drop(slack);
    let reply = http.post(format!("{url}/api/auth.test")).send().await;
    assert!(reply.is_ok(), "a clone keeps it running");
    drop(clone);
    let mut stopped = false;
    for _ in 0..50 {
        let fresh = reqwest::Client::new();
        if fresh
            .post(format!("{url}/api/auth.test"))
            .send()
            .await
            .is_err()
        {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        stopped,
        "the emulator still answers after the last handle was dropped"
    );
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let slack = SlackEmulator::start().await.expect("start");
    let url = slack.url();
    slack.shutdown().await;
    crate::support::install_tls_provider();
    let reply = reqwest::Client::new()
        .post(format!("{url}/api/auth.test"))
        .send()
        .await;
    assert!(reply.is_err(), "nothing listens after shutdown");
}

#[tokio::test]
#[should_panic(expected = "invalid approver")]
async fn an_inconsistent_approver_is_a_test_mistake() {
    let slack = SlackEmulator::start().await.expect("start");
    let mut approver = slack_emulator::Approver::org_owner("E0GRID", "Acme Grid");
    approver.enterprise = None;
    slack.set_approver(approver);
}
