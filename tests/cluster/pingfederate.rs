//! The token delivered into PingFederate live: pushed into the SP connection after the Secret
//! has it, with every other field of the connection left as it came; credentials sent only to
//! the admin API their Secret names; failures that only a change can fix not retried; and
//! PingFederate being down holding nothing back.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use pingfederate_emulator::{Outage, PingFederateEmulator};
use serde_json::{Value, json};
use slack_oauth_operator::api::{SlackOAuthGrant, conditions};

use crate::{scenario::Scenario, support};

const KEY: &str = "SLACK_ACCESS_TOKEN";
const CONNECTION: &str = "slack-scim";
const FIELD: &str = "ACCESS_TOKEN";
const CREDENTIALS: &str = "pingfederate-admin";

/// A full connection, as PingFederate exports one: channels, attribute mappings, other secret
/// and plain target settings, and fields the operator has no type for.
fn full_connection() -> Value {
    json!({
        "id": CONNECTION, "name": "Slack SCIM", "entityId": "https://slack.com",
        "active": true, "type": "SP", "loggingMode": "STANDARD",
        "contactInfo": { "company": "Acme", "email": "idm@acme.example" },
        "somethingNewInPingFederate13": { "nested": [1, 2, { "deep": null }], "flag": false },
        "outboundProvision": {
            "type": "SlackProvisioner",
            "targetSettings": [
                { "name": "Unique User Identifier", "value": "primaryEmail" },
                { "name": FIELD, "value": "xoxp-from-ping-hosted-service" },
                { "name": "PROXY_PASSWORD", "value": "proxy-s3cret" },
                { "name": "User Create", "value": "true", "inherited": true }
            ],
            "channels": [{
                "name": "All users", "active": true,
                "channelSource": { "dataSource": { "id": "ldap" }, "baseDn": "ou=people,dc=acme" },
                "attributeMapping": [
                    { "fieldName": "userName", "value": { "elements": [{ "name": "uid" }] } },
                    { "fieldName": "primaryEmail", "value": { "elements": [{ "name": "mail" }] } }
                ]
            }]
        }
    })
}

struct Setup {
    s: Scenario,
    pf: PingFederateEmulator,
}

/// The admin password and the connection's other secrets join the Slack emulator's for the
/// final log scan (`hack/scan-logs.py`).
impl Drop for Setup {
    fn drop(&mut self) {
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("secrets");
        let _ = std::fs::create_dir_all(&dir);
        let values = [self.pf.admin_password(), "proxy-s3cret".to_owned()];
        let unique: u64 = {
            use rand::RngExt;
            rand::rng().random()
        };
        let _ = std::fs::write(
            dir.join(format!("pingfederate-{unique:x}.txt")),
            values.join("\n"),
        );
    }
}

async fn setup(name: &str, flags: &'static [&'static str]) -> Setup {
    let s = Scenario::builder(name).flags(flags).start().await;
    let pf = PingFederateEmulator::start()
        .await
        .expect("start PingFederate");
    pf.seed_connection(full_connection(), &[FIELD, "PROXY_PASSWORD"]);
    s.create_client_secret().await;
    Setup { s, pf }
}

async fn credentials(setup: &Setup, allowed_url: &str, password: &str) -> Secret {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": CREDENTIALS,
            "labels": { "slack-oauth-operator.io/shared-with-grants": "true" },
            "annotations": { "slack-oauth-operator.io/pingfederate-admin-api-url": allowed_url }
        },
        "stringData": { "username": setup.pf.admin_username(), "password": password }
    }))
    .expect("secret");
    setup
        .s
        .secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the credentials Secret")
}

async fn grant(setup: &Setup, field: &str) -> SlackOAuthGrant {
    setup
        .s
        .apply_grant(
            "scim",
            json!({ "teamID": "T0ACME", "pingFederate": {
                "adminAPIURL": setup.pf.admin_api_url(),
                "credentialsSecretRef": { "name": CREDENTIALS },
                "connection": { "name": "Slack SCIM" },
                "tokenField": field
            } }),
        )
        .await
}

fn synced(grant: &SlackOAuthGrant) -> Option<(String, String, String)> {
    grant
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::PINGFEDERATE_SYNCED)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait_synced(setup: &Setup, within: Duration, reason: &str) -> SlackOAuthGrant {
    support::wait_for_grant_within(&setup.s.grants, "scim", within, |g| {
        synced(g).is_some_and(|(_, r, _)| r == reason)
    })
    .await
}

/// Credentials that may go to the emulated admin API, a grant, its approval, and its first push.
async fn synced_once(setup: &Setup) {
    credentials(setup, &setup.pf.admin_api_url(), &setup.pf.admin_password()).await;
    grant(setup, FIELD).await;
    let s = &setup.s;
    assert_eq!(s.approve(&s.link("scim").await).await.status, 200);
    wait_synced(setup, Duration::from_secs(30), "Synced").await;
}

/// The connection without the token's entry: what must not change.
fn all_but_the_token(connection: &Value) -> Value {
    let mut rest = connection.clone();
    if let Some(settings) = rest
        .pointer_mut("/outboundProvision/targetSettings")
        .and_then(Value::as_array_mut)
    {
        settings.retain(|s| s["name"] != FIELD);
    }
    rest
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn an_approved_grant_ends_with_its_token_in_the_secret_and_in_the_connection_unchanged_otherwise()
 {
    let setup = setup("pf-push", &[]).await;
    let before = setup.pf.connection(CONNECTION).expect("seeded");
    credentials(
        &setup,
        &setup.pf.admin_api_url(),
        &setup.pf.admin_password(),
    )
    .await;
    grant(&setup, FIELD).await;
    let s = &setup.s;
    // Approved by a Slack owner in a real (headless) browser.
    let shown = s.approve_in_browser(&s.link("scim").await).await;
    assert_eq!(shown.heading, "Slack approval complete", "{}", shown.text);
    let grant = wait_synced(&setup, Duration::from_secs(30), "Synced").await;
    let token = s.stored_token(KEY).await.expect("token");
    assert_eq!(
        setup.pf.secret_value(CONNECTION, FIELD).as_deref(),
        Some(token.as_str())
    );
    let after = setup.pf.connection(CONNECTION).expect("connection");
    assert_eq!(
        serde_json::to_string(&all_but_the_token(&after)).expect("json"),
        serde_json::to_string(&all_but_the_token(&before)).expect("json"),
        "every other field is unchanged, encrypted values included"
    );
    assert_eq!(
        setup
            .pf
            .secret_value(CONNECTION, "PROXY_PASSWORD")
            .as_deref(),
        Some("proxy-s3cret")
    );
    let status = grant
        .status
        .and_then(|st| st.ping_federate)
        .expect("status");
    assert_eq!(
        status.connection_id.as_deref(),
        Some(CONNECTION),
        "looked up by name"
    );
    assert_eq!(status.synced_revision, Some(1));
    let calls = setup.pf.calls();
    assert!(!calls.is_empty() && calls.iter().all(|c| c.has_xsrf_header()));
    assert_eq!(
        support::ready_reason(&s.grants.get("scim").await.expect("grant")).as_deref(),
        Some("Authorized")
    );
    let logs = s.operator.logs();
    assert!(!logs.contains(&token) && !logs.contains(&setup.pf.admin_password()));
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn credentials_that_name_another_admin_api_are_never_sent() {
    let setup = setup("pf-elsewhere", &[]).await;
    credentials(
        &setup,
        "https://pingfederate.elsewhere.example:9999/pf-admin-api/v1",
        &setup.pf.admin_password(),
    )
    .await;
    grant(&setup, FIELD).await;
    let s = &setup.s;
    assert_eq!(s.approve(&s.link("scim").await).await.status, 200);
    let grant = wait_synced(&setup, Duration::from_secs(30), "CredentialsNotShared").await;
    let (status, _, message) = synced(&grant).expect("condition");
    assert_eq!(status, "False");
    assert!(message.contains("pingfederate-admin-api-url"), "{message}");
    assert!(
        setup.pf.calls().is_empty(),
        "nothing was sent to PingFederate"
    );
    assert!(
        s.stored_token(KEY).await.is_some(),
        "the Secret has the token anyway"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_401_is_reported_and_not_retried_until_the_credentials_change() {
    let setup = setup("pf-unauthorized", &[]).await;
    credentials(&setup, &setup.pf.admin_api_url(), "not-the-password").await;
    grant(&setup, FIELD).await;
    let s = &setup.s;
    assert_eq!(s.approve(&s.link("scim").await).await.status, 200);
    wait_synced(&setup, Duration::from_secs(30), "Unauthorized").await;
    let requests = setup.pf.calls().len();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        setup.pf.calls().len(),
        requests,
        "no request until something changes"
    );
    assert_eq!(requests, 1, "one request: the lookup that got the 401");

    let fixed = json!({ "stringData": { "password": setup.pf.admin_password() } });
    s.secrets
        .patch(CREDENTIALS, &PatchParams::default(), &Patch::Merge(&fixed))
        .await
        .expect("fix the password");
    wait_synced(&setup, Duration::from_secs(30), "Synced").await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_missing_token_field_names_the_fields_the_connection_has_and_no_values() {
    let setup = setup("pf-field", &[]).await;
    credentials(
        &setup,
        &setup.pf.admin_api_url(),
        &setup.pf.admin_password(),
    )
    .await;
    grant(&setup, "OAuth 2 Access Token").await;
    let s = &setup.s;
    assert_eq!(s.approve(&s.link("scim").await).await.status, 200);
    let grant = wait_synced(&setup, Duration::from_secs(30), "TokenFieldNotFound").await;
    let (_, _, message) = synced(&grant).expect("condition");
    assert!(
        message.contains("Unique User Identifier, ACCESS_TOKEN, PROXY_PASSWORD, User Create"),
        "{message}"
    );
    for value in ["primaryEmail", "proxy-s3cret", "xoxp", "eyJ"] {
        assert!(!message.contains(value), "{value} in {message}");
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn pingfederate_down_for_30_seconds_holds_nothing_back_and_the_push_lands_after() {
    let setup = setup("pf-down", &[]).await;
    credentials(
        &setup,
        &setup.pf.admin_api_url(),
        &setup.pf.admin_password(),
    )
    .await;
    grant(&setup, FIELD).await;
    let s = &setup.s;
    setup
        .pf
        .set_outage_for(Outage::Unreachable, Duration::from_secs(30));
    let down_at = Instant::now();
    assert_eq!(s.approve(&s.link("scim").await).await.status, 200);
    assert!(
        s.stored_token(KEY).await.is_some(),
        "the Secret is written at once"
    );
    s.wait_ready("scim").await;
    wait_synced(&setup, Duration::from_secs(25), "Unavailable").await;
    let grant = wait_synced(&setup, Duration::from_secs(100), "Synced").await;
    let after_return = down_at.elapsed().saturating_sub(Duration::from_secs(30));
    assert!(
        after_return < Duration::from_secs(60),
        "landed {after_return:?} after PingFederate came back"
    );
    println!("pingfederate: the push landed {after_return:?} after PingFederate came back");
    let token = s.stored_token(KEY).await.expect("token");
    assert_eq!(
        setup.pf.secret_value(CONNECTION, FIELD).as_deref(),
        Some(token.as_str())
    );
    assert_eq!(
        grant
            .status
            .and_then(|st| st.ping_federate)
            .and_then(|p| p.synced_revision),
        Some(1)
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn three_refreshes_in_a_row_each_reach_pingfederate_before_the_previous_token_expires() {
    let setup = setup("pf-rotation", &[]).await;
    let s = &setup.s;
    s.rotate_tokens(Duration::from_secs(9));
    synced_once(&setup).await;
    let started = Instant::now();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let pushed = setup
            .pf
            .secret_value(CONNECTION, FIELD)
            .expect("a token in PingFederate");
        assert!(
            s.slack.emulator.is_live(&pushed),
            "PingFederate held a dead token after {:?}",
            started.elapsed()
        );
        if seen.last() != Some(&pushed) {
            seen.push(pushed);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} tokens pushed",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_token_on_a_plan_without_scim_is_ready_but_not_provisioning_ready() {
    let s = Scenario::start("scim-plan").await;
    s.create_client_secret().await;
    s.slack.emulator.set_scim_available("T0ACME", false);
    s.apply_grant("scim", json!({ "teamID": "T0ACME" })).await;
    assert_eq!(s.approve(&s.link("scim").await).await.status, 200);
    let grant = support::wait_for_grant(&s.grants, "scim", |g| {
        g.status.as_ref().is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == conditions::PROVISIONING_READY && c.status == "False")
        })
    })
    .await;
    assert_eq!(
        support::ready_reason(&grant).as_deref(),
        Some("Authorized"),
        "the token works"
    );
    let condition = grant
        .status
        .as_ref()
        .and_then(|st| {
            st.conditions
                .iter()
                .find(|c| c.type_ == conditions::PROVISIONING_READY)
        })
        .expect("ProvisioningReady");
    assert!(
        condition.message.contains("plus_teams_only"),
        "{}",
        condition.message
    );
    assert!(
        condition.message.contains("Business+"),
        "{}",
        condition.message
    );

    // On a plan with SCIM, the next approval's token is provisioning-ready.
    s.slack.emulator.set_scim_available("T0ACME", true);
    let annotate =
        json!({ "metadata": { "annotations": { "slack-oauth-operator.io/reauthorize": "1" } } });
    s.grants
        .patch("scim", &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .expect("annotate");
    let link = support::wait_for_grant(&s.grants, "scim", |g| {
        g.status
            .as_ref()
            .is_some_and(|st| st.authorization_url.is_some())
    })
    .await
    .status
    .and_then(|st| st.authorization_url)
    .expect("link");
    assert_eq!(s.approve(&link).await.status, 200);
    support::wait_for_grant(&s.grants, "scim", |g| {
        g.status.as_ref().is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == conditions::PROVISIONING_READY && c.status == "True")
        })
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn pushes_still_failing_as_pingfederates_token_nears_expiry_are_a_warning_not_silence() {
    let setup = setup("pf-behind", &[]).await;
    let s = &setup.s;
    s.rotate_tokens(Duration::from_secs(12));
    synced_once(&setup).await;
    setup.pf.set_outage(Some(Outage::Unavailable));
    let grant = wait_synced(&setup, Duration::from_secs(40), "ExpiringBeforePush").await;
    assert_eq!(support::ready_reason(&grant).as_deref(), Some("Authorized"));
    let events =
        kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(s.client.clone(), &s.ns.name);
    let started = Instant::now();
    loop {
        let listed = events.list(&Default::default()).await.expect("events");
        if listed.items.iter().any(|e| {
            e.reason.as_deref() == Some("ExpiringBeforePush")
                && e.type_.as_deref() == Some("Warning")
        }) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no Warning Event"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    setup.pf.set_outage(None);
    wait_synced(&setup, Duration::from_secs(30), "Synced").await;
}
