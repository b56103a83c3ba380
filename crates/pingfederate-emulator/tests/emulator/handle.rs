//! The handle: URLs, the call record, lifetime, and what `Debug` shows.

use std::time::Duration;

use pingfederate_emulator::{BasicAuth, PingFederateEmulator, Route};
use reqwest::{Method, StatusCode};

use crate::support::{Fixture, ID, OLD_PASSWORD, OLD_TOKEN, TOKEN, client, reply, with_new_token};

#[tokio::test]
async fn urls_point_at_the_loopback_port() {
    let pf = PingFederateEmulator::start().await.expect("start");
    let port = pf.local_addr().port();
    assert_eq!(pf.url(), format!("http://127.0.0.1:{port}"));
    assert_eq!(
        pf.admin_api_url(),
        format!("http://127.0.0.1:{port}/pf-admin-api/v1")
    );
}

#[tokio::test]
async fn every_call_is_recorded_with_what_was_sent_and_answered() {
    let f = Fixture::start().await;
    let read = f.read().await;
    let sent = with_new_token(read.clone(), "xoxp-new");
    let put = reply(
        f.admin(Method::PUT, &format!("/idp/spConnections/{ID}"))
            .header("X-BypassExternalValidation", "true")
            .json(&sent),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
    f.get("/idp/spConnections?filter=slack").await;

    let calls = f.pf.calls();
    let routes: Vec<_> = calls.iter().map(|c| c.route).collect();
    assert_eq!(
        routes,
        vec![
            Some(Route::GetConnection),
            Some(Route::PutConnection),
            Some(Route::ListConnections)
        ]
    );
    let get = &calls[0];
    assert_eq!(get.method, "GET");
    assert_eq!(get.path, format!("/pf-admin-api/v1/idp/spConnections/{ID}"));
    assert_eq!(get.connection_id.as_deref(), Some(ID));
    assert_eq!(get.xsrf_header.as_deref(), Some("PingFederate"));
    assert_eq!(
        get.basic_auth,
        BasicAuth::Valid {
            username: f.pf.admin_username()
        }
    );
    assert_eq!(get.status, 200);
    assert_eq!(get.response, read);
    assert_eq!(get.request_body, serde_json::Value::Null);

    let put = &calls[1];
    assert_eq!(put.sent_value(TOKEN), Some("xoxp-new"));
    assert_eq!(put.sent_encrypted_value(TOKEN), None);
    assert!(
        put.sent_encrypted_value(crate::support::PASSWORD).is_some(),
        "the password went back encrypted"
    );
    assert_eq!(put.bypass_external_validation.as_deref(), Some("true"));
    assert!(
        put.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/json"))
    );
    assert_eq!(put.request_body, sent);
    assert_eq!(calls[2].query.as_deref(), Some("filter=slack"));
    assert_eq!(calls[2].connection_id, None);
}

#[tokio::test]
async fn debug_output_never_shows_the_password_or_a_secret() {
    let f = Fixture::start().await;
    f.pf.set_admin_credentials("administrator", "Adm1n-Pa55word-Secret");
    let read = f.read().await;
    f.write(&with_new_token(read.clone(), "xoxp-brand-new-secret"))
        .await;
    // A PUT to a connection that does not exist still has its secrets redacted.
    let mut elsewhere = with_new_token(read.clone(), "xoxp-sent-to-nowhere");
    elsewhere["id"] = serde_json::json!("nowhere");
    f.put("/idp/spConnections/nowhere", &elsewhere).await;
    f.get("/idp/spConnections").await;
    // A wrong password is not kept either.
    reply(
        f.http
            .get(f.url("/idp/spConnections"))
            .header("X-XSRF-Header", "PingFederate")
            .basic_auth("administrator", Some("Wrong-Pa55word-Typed")),
    )
    .await;

    let encrypted: Vec<String> = [read.clone(), f.read().await]
        .iter()
        .flat_map(|c| {
            c["outboundProvision"]["targetSettings"]
                .as_array()
                .expect("settings")
                .iter()
                .filter_map(|s| s["encryptedValue"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(encrypted.len() >= 4);
    let printed = format!("{:?}\n{:#?}\n{:?}", f.pf.calls(), f.pf.calls(), f.pf);
    for secret in [
        "Adm1n-Pa55word-Secret",
        "Wrong-Pa55word-Typed",
        "xoxp-brand-new-secret",
        "xoxp-sent-to-nowhere",
        OLD_TOKEN,
        OLD_PASSWORD,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain(encrypted)
    {
        assert!(
            !printed.contains(&secret),
            "{secret} leaked into Debug output:\n{printed}"
        );
    }
    assert!(printed.contains("[redacted]"), "{printed}");
    assert!(
        printed.contains("primaryEmail"),
        "plain values stay visible"
    );
    assert!(printed.contains("administrator"), "usernames stay visible");
    // The raw values stay reachable for tests that need them.
    assert_eq!(
        f.pf.calls()[1].sent_value(TOKEN),
        Some("xoxp-brand-new-secret")
    );
}

#[tokio::test]
async fn emulator_stops_when_the_last_handle_is_dropped() {
    let pf = PingFederateEmulator::start().await.expect("start");
    let clone = pf.clone();
    let url = pf.admin_api_url();
    let http = client();
    drop(pf);
    let answered = http.get(format!("{url}/idp/spConnections")).send().await;
    assert!(answered.is_ok(), "a clone keeps it running");
    drop(clone);
    let mut stopped = false;
    for _ in 0..50 {
        if client()
            .get(format!("{url}/idp/spConnections"))
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
    let pf = PingFederateEmulator::start().await.expect("start");
    let url = pf.admin_api_url();
    pf.shutdown().await;
    let answered = client()
        .get(format!("{url}/idp/spConnections"))
        .send()
        .await;
    assert!(answered.is_err(), "nothing listens after shutdown");
}
