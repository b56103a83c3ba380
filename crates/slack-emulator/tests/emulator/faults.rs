//! Injected faults.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use slack_emulator::Fault;

use crate::support::Fixture;

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let f = Fixture::start().await;
    f.slack.inject(
        "oauth.v2.access",
        Fault::RateLimited {
            retry_after_secs: 7,
        },
    );
    let code = f.code().await;
    let limited = f.exchange(&code).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.header("retry-after"), Some("7"));
    assert_eq!(limited.error().as_deref(), Some("ratelimited"));
    assert_eq!(
        f.exchange(&code).await.json()["ok"],
        true,
        "one-shot, and the code survived"
    );
}

#[tokio::test]
async fn server_error_answers_with_that_status_and_a_short_html_body() {
    let f = Fixture::start().await;
    f.slack.inject("auth.test", Fault::ServerError(503));
    let reply = f.post("auth.test", &[], Some("xoxp-x")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/html"))
    );
    assert!(reply.text.len() < 200);
    let calls = f.slack.calls();
    assert_eq!(calls[0].status, 503);
    assert_eq!(calls[0].response, serde_json::Value::Null);
}

#[tokio::test]
async fn injected_error_is_ok_false_with_http_200() {
    let f = Fixture::start().await;
    f.slack.inject(
        "oauth.v2.access",
        Fault::Error("service_unavailable".into()),
    );
    let code = f.code().await;
    let reply = f.exchange(&code).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.error().as_deref(), Some("service_unavailable"));
    assert!(f.slack.issued_tokens().is_empty());
    assert_eq!(
        f.exchange(&code).await.json()["ok"],
        true,
        "the faulted call did not consume the code"
    );
}

#[tokio::test]
async fn delay_answers_normally_afterwards() {
    let f = Fixture::start().await;
    f.slack
        .inject("oauth.v2.access", Fault::Delay(Duration::from_millis(300)));
    let code = f.code().await;
    let started = Instant::now();
    let reply = f.exchange(&code).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(reply.json()["ok"], true);
}

#[tokio::test]
async fn a_delayed_answer_issues_the_token_before_it_is_sent() {
    let f = Fixture::start().await;
    f.slack.inject(
        "oauth.v2.access",
        Fault::DelayAnswer(Duration::from_millis(500)),
    );
    let code = f.code().await;
    let exchange = f.exchange(&code);
    tokio::pin!(exchange);
    tokio::select! {
        _ = &mut exchange => panic!("the answer came before its delay"),
        () = tokio::time::sleep(Duration::from_millis(200)) => {}
    }
    assert_eq!(
        f.slack.issued_tokens().len(),
        1,
        "the token exists while its answer is held back"
    );
    let reply = exchange.await;
    assert_eq!(reply.json()["ok"], true);
}

#[tokio::test]
async fn a_delayed_call_completes_even_if_the_client_gives_up() {
    let f = Fixture::start().await;
    f.slack
        .inject("oauth.v2.access", Fault::Delay(Duration::from_millis(500)));
    let code = f.code().await;
    let gave_up = f
        .http
        .post(f.method_url("oauth.v2.access"))
        .basic_auth(
            crate::support::CLIENT_ID,
            Some(crate::support::CLIENT_SECRET),
        )
        .form(&[
            ("code", code.as_str()),
            ("redirect_uri", crate::support::REDIRECT),
        ])
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(gave_up.is_err(), "the client timed out");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        f.slack.issued_tokens().len(),
        1,
        "Slack issued the token nobody received"
    );
    assert_eq!(f.slack.calls().len(), 1);
}

#[tokio::test]
async fn faults_apply_in_fifo_order_per_method_and_are_recorded() {
    let f = Fixture::start().await;
    f.slack.inject("auth.test", Fault::ServerError(502));
    f.slack.inject(
        "auth.test",
        Fault::RateLimited {
            retry_after_secs: 1,
        },
    );
    f.slack
        .inject("auth.test", Fault::Error("fatal_error".into()));
    f.slack.inject("auth.revoke", Fault::ServerError(500));
    let statuses = [
        f.post("auth.test", &[], None).await.status,
        f.post("auth.test", &[], None).await.status,
        f.post("auth.test", &[], None).await.status,
        f.post("auth.test", &[], None).await.status,
        f.post("auth.revoke", &[], None).await.status,
    ];
    assert_eq!(statuses.map(|s| s.as_u16()), [502, 429, 200, 200, 500]);
    let calls = f.slack.calls();
    let errors: Vec<_> = calls.iter().map(|c| c.error().map(str::to_owned)).collect();
    assert_eq!(
        errors,
        vec![
            None,
            Some("ratelimited".to_owned()),
            Some("fatal_error".to_owned()),
            Some("not_authed".to_owned()),
            None,
        ]
    );
}

#[tokio::test]
async fn inject_times_repeats_a_fault() {
    let f = Fixture::start().await;
    f.slack
        .inject_times("auth.test", Fault::ServerError(503), 3);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(f.post("auth.test", &[], None).await.status.as_u16());
    }
    assert_eq!(statuses, vec![503, 503, 503, 200]);
}
