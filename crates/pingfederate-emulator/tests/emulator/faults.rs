//! Injected faults per route: server errors, 401, slowness; counted or until cleared.

use std::time::{Duration, Instant};

use pingfederate_emulator::{Fault, Route};
use reqwest::{Method, StatusCode};

use crate::support::{Fixture, ID, OLD_TOKEN, TOKEN, reply, with_new_token};

fn connection_path() -> String {
    format!("/idp/spConnections/{ID}")
}

#[tokio::test]
async fn inject_times_fails_that_many_calls_then_answers_normally() {
    let f = Fixture::start().await;
    f.pf.inject_times(Route::GetConnection, Fault::ServerError(503), 2);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(f.get(&connection_path()).await.status.as_u16());
    }
    assert_eq!(statuses, vec![503, 503, 200]);
    let faults: Vec<_> = f.pf.calls().into_iter().map(|c| c.fault).collect();
    assert_eq!(
        faults,
        vec![
            Some(Fault::ServerError(503)),
            Some(Fault::ServerError(503)),
            None
        ]
    );
}

#[tokio::test]
async fn a_server_error_answers_a_short_html_body_and_changes_nothing() {
    let f = Fixture::start().await;
    f.pf.inject(Route::PutConnection, Fault::ServerError(500));
    let sent = with_new_token(f.read().await, "xoxp-new");
    let reply = f.write(&sent).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/html"))
    );
    assert!(reply.text.len() < 200);
    assert_eq!(f.pf.secret_value(ID, TOKEN).as_deref(), Some(OLD_TOKEN));
    assert_eq!(f.write(&sent).await.status, StatusCode::OK);
    assert_eq!(f.pf.secret_value(ID, TOKEN).as_deref(), Some("xoxp-new"));
}

#[tokio::test]
async fn a_fault_until_cleared_lasts_until_cleared() {
    let f = Fixture::start().await;
    f.pf.inject_until_cleared(Route::PutConnection, Fault::ServerError(502));
    let sent = f.read().await;
    for _ in 0..5 {
        assert_eq!(f.write(&sent).await.status, StatusCode::BAD_GATEWAY);
    }
    assert_eq!(
        f.get(&connection_path()).await.status,
        StatusCode::OK,
        "other routes are not affected"
    );
    f.pf.clear_faults(Route::PutConnection);
    assert_eq!(f.write(&sent).await.status, StatusCode::OK);
}

#[tokio::test]
async fn counted_faults_come_before_the_one_until_cleared() {
    let f = Fixture::start().await;
    f.pf.inject_until_cleared(Route::GetConnection, Fault::ServerError(503));
    f.pf.inject(Route::GetConnection, Fault::Unauthorized);
    let first = f.get(&connection_path()).await.status;
    let second = f.get(&connection_path()).await.status;
    assert_eq!(
        (first, second),
        (StatusCode::UNAUTHORIZED, StatusCode::SERVICE_UNAVAILABLE)
    );
}

#[tokio::test]
async fn an_injected_401_looks_like_wrong_credentials() {
    let f = Fixture::start().await;
    f.pf.inject(Route::ListConnections, Fault::Unauthorized);
    let faulted = f.get("/idp/spConnections").await;
    assert_eq!(faulted.status, StatusCode::UNAUTHORIZED);
    assert_eq!(faulted.result_id().as_deref(), Some("invalid_credentials"));
    assert!(faulted.header("www-authenticate").is_some());
    let call = &f.pf.calls()[0];
    assert!(call.basic_auth.is_valid(), "the credentials were right");
    assert_eq!(call.fault, Some(Fault::Unauthorized));
    assert_eq!(f.get("/idp/spConnections").await.status, StatusCode::OK);
}

#[tokio::test]
async fn faults_apply_before_the_xsrf_and_credential_checks() {
    let f = Fixture::start().await;
    f.pf.inject(Route::GetConnection, Fault::ServerError(503));
    let reply = reply(f.http.get(f.url(&connection_path()))).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn faults_of_one_route_leave_the_others_alone() {
    let f = Fixture::start().await;
    f.pf.inject(Route::Replicate, Fault::ServerError(500));
    assert_eq!(f.get(&connection_path()).await.status, StatusCode::OK);
    assert_eq!(f.get("/idp/spConnections").await.status, StatusCode::OK);
    let replicate = reply(f.admin(Method::POST, "/cluster/replicate")).await;
    assert_eq!(replicate.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(f.pf.replications(), 0);
}

#[tokio::test]
async fn clear_faults_drops_queued_faults_too() {
    let f = Fixture::start().await;
    f.pf.inject_times(Route::GetConnection, Fault::ServerError(500), 10);
    f.pf.clear_faults(Route::GetConnection);
    assert_eq!(f.get(&connection_path()).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_delay_waits_then_answers_normally() {
    let f = Fixture::start().await;
    f.pf.inject(
        Route::GetConnection,
        Fault::Delay(Duration::from_millis(300)),
    );
    let started = Instant::now();
    let reply = f.get(&connection_path()).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn a_slow_answer_can_outlast_the_clients_timeout_after_the_put_was_stored() {
    let f = Fixture::start().await;
    f.pf.inject(
        Route::PutConnection,
        Fault::DelayAnswer(Duration::from_millis(600)),
    );
    let sent = with_new_token(f.read().await, "xoxp-stored-anyway");
    let gave_up = f
        .admin(Method::PUT, &connection_path())
        .json(&sent)
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client timed out");
    assert_eq!(
        f.pf.secret_value(ID, TOKEN).as_deref(),
        Some("xoxp-stored-anyway"),
        "PingFederate stored the token nobody heard about"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(f.pf.calls().last().map(|c| c.status), Some(200));
}

#[tokio::test]
async fn a_delayed_put_completes_even_if_the_client_gives_up() {
    let f = Fixture::start().await;
    f.pf.inject(
        Route::PutConnection,
        Fault::Delay(Duration::from_millis(400)),
    );
    let sent = with_new_token(f.read().await, "xoxp-late");
    let gave_up = f
        .admin(Method::PUT, &connection_path())
        .json(&sent)
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(gave_up.is_err());
    assert_eq!(f.pf.secret_value(ID, TOKEN).as_deref(), Some(OLD_TOKEN));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(f.pf.secret_value(ID, TOKEN).as_deref(), Some("xoxp-late"));
}

#[test]
fn every_route_is_listed() {
    assert_eq!(Route::ALL.len(), 4);
}
