//! The XSRF header and Basic auth on every request (§3.3), and paths the emulator does not
//! serve.

use pingfederate_emulator::{BasicAuth, DEFAULT_USERNAME, Route};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{Fixture, ID, reply};

#[tokio::test]
async fn a_request_without_the_xsrf_header_is_refused_with_403() {
    let f = Fixture::start().await;
    for (method, path) in [
        (Method::GET, format!("/idp/spConnections/{ID}")),
        (Method::GET, "/idp/spConnections".to_owned()),
        (Method::POST, "/cluster/replicate".to_owned()),
    ] {
        let request = f
            .http
            .request(method.clone(), f.url(&path))
            .basic_auth(f.pf.admin_username(), Some(f.pf.admin_password()));
        let reply = reply(request).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method} {path}");
        let body = reply.json();
        assert_eq!(body["resultId"], "missing_xsrf_header");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("X-XSRF-Header")),
            "the message names the header: {body}"
        );
    }
    assert_eq!(f.pf.replications(), 0);
}

#[tokio::test]
async fn a_put_without_the_xsrf_header_changes_nothing() {
    let f = Fixture::start().await;
    let before = f.read().await;
    let reply = reply(
        f.http
            .put(f.url(&format!("/idp/spConnections/{ID}")))
            .basic_auth(f.pf.admin_username(), Some(f.pf.admin_password()))
            .json(&crate::support::with_new_token(before.clone(), "xoxp-x")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(f.read().await, before);
}

#[tokio::test]
async fn any_xsrf_header_value_will_do() {
    let f = Fixture::start().await;
    let reply = reply(
        f.http
            .get(f.url(&format!("/idp/spConnections/{ID}")))
            .header("x-xsrf-header", "anything")
            .basic_auth(f.pf.admin_username(), Some(f.pf.admin_password())),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn missing_or_wrong_credentials_are_401_with_a_basic_challenge() {
    let f = Fixture::start().await;
    let path = f.url(&format!("/idp/spConnections/{ID}"));
    let xsrf = |r: reqwest::RequestBuilder| r.header("X-XSRF-Header", "PingFederate");
    let attempts = [
        xsrf(f.http.get(&path)),
        xsrf(f.http.get(&path)).basic_auth(DEFAULT_USERNAME, Some("wrong")),
        xsrf(f.http.get(&path)).basic_auth("someone", Some(f.pf.admin_password())),
        xsrf(f.http.get(&path)).bearer_auth("a-token"),
        xsrf(f.http.get(&path)).header("authorization", "Basic !!!not-base64"),
    ];
    for attempt in attempts {
        let reply = reply(attempt).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Basic realm=\"PingFederate\"")
        );
        assert_eq!(reply.result_id().as_deref(), Some("invalid_credentials"));
        assert!(!reply.text.contains("Slack"), "no connection data leaks");
    }
    let judged: Vec<BasicAuth> = f.pf.calls().into_iter().map(|c| c.basic_auth).collect();
    assert_eq!(
        judged,
        vec![
            BasicAuth::Missing,
            BasicAuth::Wrong {
                username: DEFAULT_USERNAME.to_owned()
            },
            BasicAuth::Wrong {
                username: "someone".to_owned()
            },
            BasicAuth::Malformed,
            BasicAuth::Malformed,
        ]
    );
}

#[tokio::test]
async fn the_xsrf_header_is_checked_before_credentials() {
    let f = Fixture::start().await;
    let reply = reply(f.http.get(f.url(&format!("/idp/spConnections/{ID}")))).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let call = &f.pf.calls()[0];
    assert!(!call.has_xsrf_header());
    assert_eq!(call.basic_auth, BasicAuth::Missing);
}

#[tokio::test]
async fn changed_admin_credentials_take_effect_at_once() {
    let f = Fixture::start().await;
    let old_password = f.pf.admin_password();
    f.pf.set_admin_credentials("admin2", "n3w-pa55");
    let old = reply(
        f.http
            .get(f.url(&format!("/idp/spConnections/{ID}")))
            .header("X-XSRF-Header", "PingFederate")
            .basic_auth(DEFAULT_USERNAME, Some(old_password)),
    )
    .await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    assert_eq!(f.pf.admin_username(), "admin2");
    // `admin` uses the current credentials.
    assert_eq!(
        f.get(&format!("/idp/spConnections/{ID}")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_default_password_is_random() {
    let one = pingfederate_emulator::PingFederateEmulator::start()
        .await
        .expect("start");
    let two = pingfederate_emulator::PingFederateEmulator::start()
        .await
        .expect("start");
    assert_eq!(one.admin_username(), DEFAULT_USERNAME);
    assert!(one.admin_password().len() >= 24);
    assert_ne!(one.admin_password(), two.admin_password());
}

#[tokio::test]
async fn unknown_paths_are_404_and_other_methods_405_after_the_checks() {
    let f = Fixture::start().await;
    let unknown = f.get("/idp/spConnections/x/credentials/certs").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.result_id().as_deref(), Some("resource_not_found"));
    let outside = reply(
        f.http
            .get(format!("{}/pf-admin-api/v2/idp/spConnections", f.pf.url()))
            .header("X-XSRF-Header", "PingFederate")
            .basic_auth(f.pf.admin_username(), Some(f.pf.admin_password())),
    )
    .await;
    assert_eq!(outside.status, StatusCode::NOT_FOUND);

    let delete = reply(f.admin(Method::DELETE, &format!("/idp/spConnections/{ID}"))).await;
    assert_eq!(delete.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(delete.header("allow"), Some("GET, PUT"));
    assert!(f.pf.connection(ID).is_some());
    let create = reply(f.admin(Method::POST, "/idp/spConnections").json(&json!({}))).await;
    assert_eq!(create.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(create.header("allow"), Some("GET"));

    let unauthenticated = reply(
        f.http
            .delete(f.url(&format!("/idp/spConnections/{ID}")))
            .header("X-XSRF-Header", "PingFederate"),
    )
    .await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
    let routes: Vec<Option<Route>> = f.pf.calls().iter().map(|c| c.route).collect();
    assert_eq!(routes, vec![None; 5]);
}
