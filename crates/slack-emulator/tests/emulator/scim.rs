//! SCIM's `GET /scim/v2/Users`: the probe for "can this token drive SCIM".

use serde_json::Value;

use crate::support::{CLIENT_ID, Fixture, REDIRECT, reply};

async fn users(f: &Fixture, bearer: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(format!("{}Users?count=1", f.slack.scim_url()));
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let answer = reply(request).await;
    (answer.status.as_u16(), answer.json())
}

#[tokio::test]
async fn an_admin_user_token_on_a_plan_with_scim_lists_users_and_a_plan_without_is_plus_teams_only()
{
    let f = Fixture::start().await;
    let body = f.install(&f.user_link()).await;
    let token = body["authed_user"]["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let (status, json) = users(&f, Some(&token)).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["totalResults"], 1);
    f.slack.set_scim_available("T0ACME", false);
    let (status, json) = users(&f, Some(&token)).await;
    assert_eq!(
        (status, json["detail"].as_str()),
        (403, Some("plus_teams_only"))
    );
    assert_eq!(
        json["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:Error"
    );
    f.slack.set_scim_available("T0ACME", true);
    assert_eq!(users(&f, Some(&token)).await.0, 200);
    assert!(
        f.slack
            .calls()
            .iter()
            .any(|c| c.method == slack_emulator::SCIM_USERS)
    );
}

#[tokio::test]
async fn no_token_a_revoked_one_or_one_without_admin_is_refused() {
    let f = Fixture::start().await;
    let (status, json) = users(&f, None).await;
    assert_eq!(
        (status, json["detail"].as_str()),
        (401, Some("missing_authentication"))
    );
    let (status, json) = users(&f, Some("xoxp-unknown")).await;
    assert_eq!(
        (status, json["detail"].as_str()),
        (401, Some("invalid_authentication"))
    );
    let body = f
        .install(&f.link(&[
            ("client_id", CLIENT_ID),
            ("user_scope", "users:read"),
            ("redirect_uri", REDIRECT),
            ("state", "state-1"),
        ]))
        .await;
    let token = body["authed_user"]["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let (status, json) = users(&f, Some(&token)).await;
    assert_eq!(
        (status, json["detail"].as_str()),
        (401, Some("invalid_authentication"))
    );
}
