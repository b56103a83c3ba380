//! The ConfigField rules of `outboundProvision.targetSettings` (§3.1): `value` versus
//! `encryptedValue`.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{
    Fixture, ID, OLD_PASSWORD, OLD_TOKEN, PASSWORD, TOKEN, setting, setting_mut, with_new_token,
};

#[tokio::test]
async fn secret_fields_are_answered_encrypted_and_plain_fields_with_their_value() {
    let f = Fixture::start().await;
    let read = f.read().await;
    for name in [TOKEN, PASSWORD] {
        let field = setting(&read, name);
        assert!(field.get("value").is_none(), "{field}");
        let encrypted = field["encryptedValue"].as_str().expect("encryptedValue");
        assert_eq!(encrypted.split('.').count(), 5, "JWE-shaped: {encrypted}");
    }
    assert_ne!(
        setting(&read, TOKEN)["encryptedValue"],
        setting(&read, PASSWORD)["encryptedValue"]
    );
    assert!(!read.to_string().contains(OLD_TOKEN));
    assert!(!read.to_string().contains(OLD_PASSWORD));
    assert_eq!(
        setting(&read, "Unique User Identifier"),
        &json!({"name": "Unique User Identifier", "value": "primaryEmail"})
    );
    assert_eq!(
        setting(&read, "Provision Disabled Users"),
        &json!({"name": "Provision Disabled Users", "value": "false", "inherited": true})
    );
    assert!(
        f.pf.connection(ID).is_some_and(|stored| stored == read),
        "the handle shows what a GET answers"
    );
}

#[tokio::test]
async fn the_seeded_plaintexts_are_readable_by_the_test() {
    let f = Fixture::start().await;
    assert_eq!(f.pf.secret_value(ID, TOKEN).as_deref(), Some(OLD_TOKEN));
    assert_eq!(
        f.pf.secret_value(ID, PASSWORD).as_deref(),
        Some(OLD_PASSWORD)
    );
    assert_eq!(
        f.pf.secret_value(ID, "Unique User Identifier"),
        None,
        "plain fields are not secrets"
    );
    assert_eq!(f.pf.secret_value("nope", TOKEN), None);
}

#[tokio::test]
async fn a_put_with_value_stores_a_new_secret_and_keeps_the_others() {
    let f = Fixture::start().await;
    let before = f.read().await;
    let reply = f.write(&with_new_token(before.clone(), "xoxp-new")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let answered = reply.json();
    assert!(
        setting(&answered, TOKEN).get("value").is_none(),
        "{answered}"
    );
    assert!(
        !reply.text.contains("xoxp-new"),
        "the answer never echoes a secret"
    );
    assert_eq!(f.pf.secret_value(ID, TOKEN).as_deref(), Some("xoxp-new"));
    assert_eq!(
        f.pf.secret_value(ID, PASSWORD).as_deref(),
        Some(OLD_PASSWORD),
        "the password sent back as encryptedValue is kept"
    );
    assert_eq!(
        setting(&answered, PASSWORD)["encryptedValue"],
        setting(&before, PASSWORD)["encryptedValue"]
    );
}

#[tokio::test]
async fn the_same_plaintext_again_gets_a_new_encrypted_value() {
    let f = Fixture::start().await;
    let before = f.read().await;
    f.write(&with_new_token(before.clone(), OLD_TOKEN)).await;
    let after = f.read().await;
    assert_ne!(
        setting(&after, TOKEN)["encryptedValue"],
        setting(&before, TOKEN)["encryptedValue"]
    );
    assert_eq!(f.pf.secret_value(ID, TOKEN).as_deref(), Some(OLD_TOKEN));
}

#[tokio::test]
async fn value_wins_over_encrypted_value() {
    let f = Fixture::start().await;
    let mut sent = f.read().await;
    setting_mut(&mut sent, TOKEN)["value"] = json!("xoxp-both");
    assert_eq!(f.write(&sent).await.status, StatusCode::OK);
    assert_eq!(f.pf.secret_value(ID, TOKEN).as_deref(), Some("xoxp-both"));
}

#[tokio::test]
async fn an_encrypted_value_the_server_never_issued_is_a_validation_error() {
    let f = Fixture::start().await;
    let before = f.read().await;
    let mut sent = before.clone();
    setting_mut(&mut sent, TOKEN)["encryptedValue"] = json!("OBF:made-up");
    let mut sent_with_new_password = sent.clone();
    let password = setting_mut(&mut sent_with_new_password, PASSWORD);
    password
        .as_object_mut()
        .expect("object")
        .remove("encryptedValue");
    password["value"] = json!("new-password");

    let reply = f.write(&sent_with_new_password).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    let body = reply.json();
    assert_eq!(body["resultId"], "validation_error");
    assert_eq!(
        body["validationErrors"][0]["errorId"],
        "invalid_encrypted_value"
    );
    assert_eq!(
        body["validationErrors"][0]["fieldPath"],
        "outboundProvision.targetSettings[0].encryptedValue"
    );
    assert_eq!(
        f.read().await,
        before,
        "nothing stored, not even the good part"
    );
    assert_eq!(
        f.pf.secret_value(ID, PASSWORD).as_deref(),
        Some(OLD_PASSWORD)
    );
}

#[tokio::test]
async fn an_encrypted_value_on_a_plain_field_is_a_validation_error() {
    let f = Fixture::start().await;
    let mut sent = f.read().await;
    let token_encrypted = setting(&sent, TOKEN)["encryptedValue"].clone();
    let field = setting_mut(&mut sent, "User Create");
    field.as_object_mut().expect("object").remove("value");
    field["encryptedValue"] = token_encrypted;
    let reply = f.write(&sent).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        reply.json()["validationErrors"][0]["errorId"],
        "unexpected_encrypted_value"
    );
}

#[tokio::test]
async fn a_stale_encrypted_value_restores_the_older_secret() {
    // PingFederate decrypts any encryptedValue it made: a client that PUTs what it read before
    // someone else's change silently undoes it. The emulator reproduces that lost update.
    let f = Fixture::start().await;
    let stale = f.read().await;
    f.write(&with_new_token(stale.clone(), "xoxp-newer")).await;
    assert_eq!(f.pf.secret_value(ID, TOKEN).as_deref(), Some("xoxp-newer"));
    assert_eq!(f.write(&stale).await.status, StatusCode::OK);
    assert_eq!(f.pf.secret_value(ID, TOKEN).as_deref(), Some(OLD_TOKEN));
}

#[tokio::test]
async fn omitting_a_secret_field_drops_it_and_sending_it_bare_empties_it() {
    let f = Fixture::start().await;
    let mut sent = f.read().await;
    sent["outboundProvision"]["targetSettings"]
        .as_array_mut()
        .expect("list")
        .retain(|field| field["name"] != PASSWORD);
    let bare = setting_mut(&mut sent, TOKEN);
    *bare = json!({"name": TOKEN});
    assert_eq!(f.write(&sent).await.status, StatusCode::OK);
    let after = f.read().await;
    assert_eq!(setting(&after, TOKEN), &json!({"name": TOKEN}));
    assert_eq!(f.pf.secret_value(ID, TOKEN), None);
    assert_eq!(f.pf.secret_value(ID, PASSWORD), None);

    // The field is still secret: a later value is encrypted again.
    let reply = f.write(&with_new_token(after, "xoxp-again")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        setting(&reply.json(), TOKEN)
            .get("encryptedValue")
            .is_some()
    );
    assert_eq!(f.pf.secret_value(ID, TOKEN).as_deref(), Some("xoxp-again"));
}

#[tokio::test]
async fn malformed_target_settings_are_validation_errors() {
    let f = Fixture::start().await;
    let before = f.read().await;
    let mut duplicate = before.clone();
    duplicate["outboundProvision"]["targetSettings"]
        .as_array_mut()
        .expect("list")
        .push(json!({"name": "User Create", "value": "false"}));
    let mut nameless = before.clone();
    nameless["outboundProvision"]["targetSettings"]
        .as_array_mut()
        .expect("list")
        .push(json!({"value": "x"}));
    let mut not_a_string = before.clone();
    setting_mut(&mut not_a_string, "User Update")["value"] = json!(true);
    let mut not_a_list = before.clone();
    not_a_list["outboundProvision"]["targetSettings"] = json!({"name": TOKEN});
    for (sent, error_id) in [
        (duplicate, "duplicate_field"),
        (nameless, "missing_field_name"),
        (not_a_string, "invalid_field_value"),
        (not_a_list, "invalid_target_settings"),
    ] {
        let reply = f.write(&sent).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{error_id}");
        assert_eq!(reply.json()["validationErrors"][0]["errorId"], error_id);
    }
    assert_eq!(f.read().await, before);
}

#[tokio::test]
async fn a_seeded_encrypted_value_is_kept_with_an_unknown_plaintext() {
    let f = Fixture::start().await;
    f.pf.seed_connection(
        json!({
            "id": "exported", "name": "From an export", "entityId": "x",
            "outboundProvision": {"type": "T", "targetSettings": [
                {"name": TOKEN, "encryptedValue": "eyJ-from-a-real-export"},
            ]},
        }),
        &[TOKEN],
    );
    assert_eq!(f.pf.secret_value("exported", TOKEN), None);
    let read = f.get("/idp/spConnections/exported").await.json();
    assert_eq!(
        setting(&read, TOKEN)["encryptedValue"],
        "eyJ-from-a-real-export"
    );
    let back = f.put("/idp/spConnections/exported", &read).await;
    assert_eq!(
        back.status,
        StatusCode::OK,
        "sent back unchanged, it is kept"
    );
}

#[tokio::test]
#[should_panic(expected = "cannot seed the connection")]
async fn seeding_an_encrypted_value_on_a_plain_field_is_a_test_mistake() {
    let f = Fixture::start().await;
    f.pf.seed_connection(
        json!({"id": "bad", "outboundProvision": {"targetSettings": [
            {"name": "PLAIN", "encryptedValue": "x"},
        ]}}),
        &[],
    );
}

#[tokio::test]
#[should_panic(expected = "needs a string \"id\"")]
async fn seeding_a_connection_without_id_is_a_test_mistake() {
    let f = Fixture::start().await;
    f.pf.seed_connection(json!({"name": "no id"}), &[]);
}
