//! `GET`/`PUT /idp/spConnections/{id}` and the list: full replace, round trips, validation.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{
    Fixture, ID, OLD_TOKEN, TOKEN, full_connection, reply, setting, with_new_token,
};

/// `connection` without its token entry: everything a token rotation must leave alone.
fn without_token(connection: &Value) -> Value {
    let mut connection = connection.clone();
    connection["outboundProvision"]["targetSettings"]
        .as_array_mut()
        .expect("target settings")
        .retain(|field| field["name"] != TOKEN);
    connection
}

#[tokio::test]
async fn get_answers_the_seeded_connection_with_every_member() {
    let f = Fixture::start().await;
    let read = f.read().await;
    let mut expected = full_connection();
    // Only the secrets differ: they are answered encrypted.
    for name in crate::support::SECRETS {
        let field = crate::support::setting_mut(&mut expected, name);
        field.as_object_mut().expect("object").remove("value");
        field["encryptedValue"] = setting(&read, name)["encryptedValue"].clone();
    }
    assert_eq!(read, expected);
    assert_eq!(
        read["somethingNewInPf13"]["nested"][5].as_u64(),
        Some(9_007_199_254_740_993),
        "integers beyond f64 precision survive"
    );
}

#[tokio::test]
async fn rotating_the_token_leaves_every_other_member_byte_identical() {
    let f = Fixture::start().await;
    let before = f.read().await;
    let reply = f.write(&with_new_token(before.clone(), "xoxp-new")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let after = f.read().await;

    assert_eq!(
        serde_json::to_string(&without_token(&after)).expect("json"),
        serde_json::to_string(&without_token(&before)).expect("json"),
    );
    assert_eq!(
        reply.json(),
        after,
        "the PUT answers the connection as stored"
    );
    assert_eq!(
        after["outboundProvision"]["targetSettings"][0]["name"], TOKEN,
        "the token entry keeps its place in the list"
    );
    assert_ne!(
        setting(&after, TOKEN)["encryptedValue"],
        setting(&before, TOKEN)["encryptedValue"]
    );
    assert_eq!(f.pf.secret_value(ID, TOKEN).as_deref(), Some("xoxp-new"));
}

#[tokio::test]
async fn a_get_put_round_trip_without_changes_changes_nothing() {
    let f = Fixture::start().await;
    let before = f.read().await;
    assert_eq!(f.write(&before).await.status, StatusCode::OK);
    assert_eq!(f.read().await, before);
    assert_eq!(f.pf.secret_value(ID, TOKEN).as_deref(), Some(OLD_TOKEN));
}

#[tokio::test]
async fn put_is_a_full_replace_that_drops_what_it_omits() {
    let f = Fixture::start().await;
    let mut sent = f.read().await;
    let object = sent.as_object_mut().expect("object");
    object.remove("extendedProperties");
    object.remove("somethingNewInPf13");
    sent["outboundProvision"]
        .as_object_mut()
        .expect("object")
        .remove("channels");
    assert_eq!(f.write(&sent).await.status, StatusCode::OK);
    let after = f.read().await;
    assert!(after.get("extendedProperties").is_none());
    assert!(after.get("somethingNewInPf13").is_none());
    assert!(after["outboundProvision"].get("channels").is_none());
    assert_eq!(after, sent);
}

#[tokio::test]
async fn a_put_without_id_takes_the_paths() {
    let f = Fixture::start().await;
    let mut sent = f.read().await;
    sent.as_object_mut().expect("object").remove("id");
    let reply = f.write(&sent).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(f.read().await["id"], ID);
}

#[tokio::test]
async fn put_needs_a_json_content_type() {
    let f = Fixture::start().await;
    let body = f.read().await.to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = f
            .admin(Method::PUT, &format!("/idp/spConnections/{ID}"))
            .body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let reply = reply(request).await;
        assert_eq!(
            reply.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        assert_eq!(reply.result_id().as_deref(), Some("unsupported_media_type"));
    }
    let with_charset = reply(
        f.admin(Method::PUT, &format!("/idp/spConnections/{ID}"))
            .header("content-type", "application/json; charset=UTF-8")
            .body(body),
    )
    .await;
    assert_eq!(with_charset.status, StatusCode::OK, "{}", with_charset.text);
}

#[tokio::test]
async fn put_refuses_a_body_that_is_not_a_json_object() {
    let f = Fixture::start().await;
    for body in ["{not json", "[1, 2]", ""] {
        let reply = reply(
            f.admin(Method::PUT, &format!("/idp/spConnections/{ID}"))
                .header("content-type", "application/json")
                .body(body),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(reply.result_id().as_deref(), Some("invalid_request"));
    }
    assert_eq!(f.pf.secret_value(ID, TOKEN).as_deref(), Some(OLD_TOKEN));
}

#[tokio::test]
async fn unknown_connections_are_404_in_pingfederates_shape() {
    let f = Fixture::start().await;
    let get = f.get("/idp/spConnections/nope").await;
    assert_eq!(get.status, StatusCode::NOT_FOUND);
    assert_eq!(
        get.json(),
        json!({"resultId": "resource_not_found", "message": "Resource not found."})
    );
    let mut body = f.read().await;
    body["id"] = json!("nope");
    let put = f.put("/idp/spConnections/nope", &body).await;
    assert_eq!(put.status, StatusCode::NOT_FOUND);
    assert!(f.pf.connection("nope").is_none(), "a PUT does not create");
}

#[tokio::test]
async fn a_removed_connection_is_gone() {
    let f = Fixture::start().await;
    assert!(f.pf.remove_connection(ID));
    assert!(!f.pf.remove_connection(ID));
    assert_eq!(
        f.get(&format!("/idp/spConnections/{ID}")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn validation_errors_come_as_422_with_every_problem() {
    let f = Fixture::start().await;
    let mut sent = f.read().await;
    sent["id"] = json!("another");
    sent.as_object_mut().expect("object").remove("name");
    sent["entityId"] = json!("");
    let reply = f.write(&sent).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    let body = reply.json();
    assert_eq!(body["resultId"], "validation_error");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    let problems: Vec<(String, String)> = body["validationErrors"]
        .as_array()
        .expect("validationErrors")
        .iter()
        .map(|e| {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
            (
                e["errorId"].as_str().expect("errorId").to_owned(),
                e["fieldPath"].as_str().expect("fieldPath").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        problems,
        vec![
            ("id_mismatch".to_owned(), "id".to_owned()),
            ("required_field".to_owned(), "entityId".to_owned()),
            ("required_field".to_owned(), "name".to_owned()),
        ]
    );
    assert_eq!(
        f.read().await["name"],
        "Slack Provisioner",
        "nothing stored"
    );
}

#[tokio::test]
async fn the_list_filters_by_entity_id_exactly_and_by_filter_loosely() {
    let f = Fixture::start().await;
    f.pf.seed_connection(
        json!({"id": "a-other", "name": "Salesforce", "entityId": "https://SLACK.example/sf"}),
        &[],
    );
    f.pf.seed_connection(
        json!({"id": "z-third", "name": "Zoom", "entityId": "zoom.us"}),
        &[],
    );
    let ids = |reply: crate::support::Reply| -> Vec<String> {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply.json()["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|c| c["id"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(
        ids(f.get("/idp/spConnections").await),
        vec!["a-other", ID, "z-third"]
    );
    assert_eq!(
        ids(f
            .get("/idp/spConnections?entityId=https%3A%2F%2Fslack.com")
            .await),
        vec![ID]
    );
    assert!(
        ids(f
            .get("/idp/spConnections?entityId=https%3A%2F%2FSLACK.com")
            .await)
        .is_empty(),
        "entityId is case-sensitive"
    );
    assert_eq!(
        ids(f.get("/idp/spConnections?filter=slack").await),
        vec!["a-other", ID],
        "filter matches name or entity ID, partially, ignoring case"
    );
    assert_eq!(
        ids(f.get("/idp/spConnections?filter=PROVISIONER").await),
        vec![ID]
    );
    assert_eq!(
        ids(f.get("/idp/spConnections?numberPerPage=2&page=2").await),
        vec!["z-third"]
    );
    let bad = f.get("/idp/spConnections?page=0").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_list_answers_secrets_encrypted_too() {
    let f = Fixture::start().await;
    let list = f.get("/idp/spConnections?filter=slack").await.json();
    let listed = &list["items"][0];
    assert_eq!(listed, &f.read().await);
    assert!(setting(listed, TOKEN).get("value").is_none());
    assert!(!list.to_string().contains(OLD_TOKEN));
}

#[tokio::test]
async fn connection_ids_in_paths_are_percent_decoded() {
    let f = Fixture::start().await;
    f.pf.seed_connection(
        json!({"id": "with space", "name": "S", "entityId": "s"}),
        &[],
    );
    let reply = f.get("/idp/spConnections/with%20space").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["id"], "with space");
}
