//! `POST /cluster/replicate` (§3.2, §3.4).

use reqwest::{Method, StatusCode};

use crate::support::{Fixture, reply};
use pingfederate_emulator::Route;

#[tokio::test]
async fn replicate_answers_an_api_result_and_is_counted() {
    let f = Fixture::start().await;
    let answer = reply(f.admin(Method::POST, "/cluster/replicate")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let body = answer.json();
    assert_eq!(body["resultId"], "success");
    assert!(body["message"].is_string());
    assert_eq!(f.pf.replications(), 1);
    let call = &f.pf.calls()[0];
    assert_eq!(call.route, Some(Route::Replicate));
    assert_eq!(call.method, "POST");
    assert_eq!(call.path, "/pf-admin-api/v1/cluster/replicate");
    assert_eq!(call.status, 200);
    assert_eq!(call.result_id(), Some("success"));
}

#[tokio::test]
async fn replicate_needs_the_xsrf_header_and_credentials() {
    let f = Fixture::start().await;
    let no_xsrf = reply(
        f.http
            .post(f.url("/cluster/replicate"))
            .basic_auth(f.pf.admin_username(), Some(f.pf.admin_password())),
    )
    .await;
    assert_eq!(no_xsrf.status, StatusCode::FORBIDDEN);
    let no_auth = reply(
        f.http
            .post(f.url("/cluster/replicate"))
            .header("X-XSRF-Header", "PingFederate"),
    )
    .await;
    assert_eq!(no_auth.status, StatusCode::UNAUTHORIZED);
    assert_eq!(f.pf.replications(), 0);
}

#[tokio::test]
async fn replicate_is_post_only() {
    let f = Fixture::start().await;
    let get = f.get("/cluster/replicate").await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.header("allow"), Some("POST"));
    assert_eq!(f.pf.replications(), 0);
}
