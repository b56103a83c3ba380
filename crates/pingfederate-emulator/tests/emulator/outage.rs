//! The whole server down: 503 for everything, or unreachable.

use std::time::Duration;

use pingfederate_emulator::{Fault, Outage, Route};
use reqwest::{Method, StatusCode};

use crate::support::{Fixture, ID, client, reply};

fn connection_path() -> String {
    format!("/idp/spConnections/{ID}")
}

#[tokio::test]
async fn while_unavailable_every_request_gets_503_and_is_recorded() {
    let f = Fixture::start().await;
    f.pf.inject(Route::GetConnection, Fault::ServerError(500));
    f.pf.set_outage(Some(Outage::Unavailable));
    assert_eq!(f.pf.outage(), Some(Outage::Unavailable));
    let statuses = [
        f.get(&connection_path()).await.status,
        f.get("/idp/spConnections").await.status,
        f.write(&crate::support::full_connection()).await.status,
        reply(f.admin(Method::POST, "/cluster/replicate"))
            .await
            .status,
        reply(f.http.get(f.url("/anything"))).await.status,
    ];
    assert_eq!(statuses, [StatusCode::SERVICE_UNAVAILABLE; 5]);
    let calls = f.pf.calls();
    assert_eq!(calls.len(), 5);
    assert!(calls.iter().all(|c| c.during_outage && c.status == 503));
    assert_eq!(f.pf.replications(), 0);

    f.pf.set_outage(None);
    assert_eq!(
        f.get(&connection_path()).await.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "the fault was not used up during the outage"
    );
    assert_eq!(f.get(&connection_path()).await.status, StatusCode::OK);
}

#[tokio::test]
async fn while_unreachable_connections_fail_and_nothing_is_recorded() {
    let f = Fixture::start().await;
    f.pf.set_outage(Some(Outage::Unreachable));
    for _ in 0..3 {
        let attempt = f
            .admin(Method::GET, &connection_path())
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let error = attempt.expect_err("a transport error");
        assert!(!error.is_timeout(), "fails fast: {error}");
    }
    assert!(f.pf.calls().is_empty());
    assert!(f.pf.cut_connections() >= 3);

    f.pf.set_outage(None);
    let back = reply(
        client()
            .get(f.url(&connection_path()))
            .header("X-XSRF-Header", "PingFederate")
            .basic_auth(f.pf.admin_username(), Some(f.pf.admin_password())),
    )
    .await;
    assert_eq!(back.status, StatusCode::OK);
}

#[tokio::test]
async fn a_connection_opened_before_an_unreachable_outage_is_dead_after_it() {
    let f = Fixture::start().await;
    // One client, so the second request reuses the first one's pooled connection.
    assert_eq!(f.get(&connection_path()).await.status, StatusCode::OK);
    f.pf.set_outage(Some(Outage::Unreachable));
    f.pf.set_outage(None);
    let first = f.admin(Method::GET, &connection_path()).send().await;
    let second = f.admin(Method::GET, &connection_path()).send().await;
    assert!(
        first.is_err(),
        "the server that accepted the pooled connection went away"
    );
    assert_eq!(second.expect("a new connection").status(), StatusCode::OK);
}

#[tokio::test]
async fn a_timed_outage_ends_by_itself() {
    let f = Fixture::start().await;
    f.pf.set_outage_for(Outage::Unavailable, Duration::from_millis(300));
    assert_eq!(
        f.get(&connection_path()).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(f.pf.outage(), None);
    assert_eq!(f.get(&connection_path()).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_timed_outage_does_not_end_a_later_one() {
    let f = Fixture::start().await;
    f.pf.set_outage_for(Outage::Unavailable, Duration::from_millis(100));
    f.pf.set_outage(Some(Outage::Unreachable));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.pf.outage(), Some(Outage::Unreachable));
}
