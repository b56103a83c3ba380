//! What a cached object costs in memory (the scale issue: "a cached grant or Secret keeps only
//! what the operator reads"), measured with jemalloc's own count of the bytes allocated, the
//! allocator the operator runs with. One measurement at a time, so that nothing else allocates
//! meanwhile.

use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::Secret;
use serde_json::json;
use slack_oauth_operator::{
    api::SlackOAuthGrant,
    cache::{Packed, trim},
};
use tikv_jemalloc_ctl::{epoch, stats};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const OBJECTS: usize = 1_000;

fn allocated() -> usize {
    epoch::advance().expect("jemalloc's epoch");
    stats::allocated::read().expect("jemalloc's count")
}

/// Bytes held per object by `OBJECTS` objects that `make` builds, each in an `Arc` as a cache
/// holds it.
fn held_by<T>(make: impl Fn() -> T) -> usize {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let before = allocated();
    let held: Vec<Arc<T>> = (0..OBJECTS).map(|_| Arc::new(make())).collect();
    let after = allocated();
    drop(held);
    (after - before) / OBJECTS
}

/// A grant's token Secret as the API server sends it on a watch, managed fields included.
fn token_secret(i: usize) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": format!("grant-{i}-token"),
            "namespace": "scale-3",
            "uid": "0b5f7a5e-1c39-4d84-9d2b-7e2f4c1d9a10",
            "resourceVersion": "1234567",
            "creationTimestamp": "2026-12-01T00:00:00Z",
            "labels": { "app.kubernetes.io/managed-by": "slack-oauth-operator" },
            "annotations": {
                "slack-oauth-operator.io/grant": format!("grant-{i}"),
                "slack-oauth-operator.io/token-revision": "1"
            },
            "ownerReferences": [{
                "apiVersion": "slack-oauth-operator.io/v1alpha1", "kind": "SlackOAuthGrant",
                "name": format!("grant-{i}"), "uid": "0b5f7a5e-1c39-4d84-9d2b-7e2f4c1d9a11",
                "controller": true, "blockOwnerDeletion": true
            }],
            "managedFields": [{
                "manager": "slack-oauth-operator", "operation": "Apply", "apiVersion": "v1",
                "time": "2026-12-01T00:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": { "f:data": { "f:SLACK_TOKEN": {} }, "f:metadata": {
                    "f:annotations": { "f:slack-oauth-operator.io/grant": {},
                                       "f:slack-oauth-operator.io/token-revision": {} },
                    "f:labels": { "f:app.kubernetes.io/managed-by": {} } } }
            }]
        },
        "type": "Opaque",
        "data": { "SLACK_TOKEN": "eG94cC0xMjM0NTY3ODkwLTEyMzQ1Njc4OTAtMTIzNDU2Nzg5MDEyMy1hYmNkZWYwMTIzNDU2Nzg5" }
    })
}

#[test]
fn a_cached_secret_keeps_a_third_of_a_typed_one() {
    let json = serde_json::to_string(&token_secret(1234)).expect("json");
    let typed = held_by(|| {
        let mut secret: Secret = serde_json::from_str(&json).expect("typed");
        secret.metadata.managed_fields = None;
        secret
    });
    let packed = held_by(|| serde_json::from_str::<Packed<Secret>>(&json).expect("packed"));
    println!("token Secret held: {typed} B typed (without managed fields), {packed} B packed");
    // Most of what is left is the metadata a watch follows a packed object by.
    assert!(
        packed <= 1200 && packed * 5 <= typed * 2,
        "packed {packed} B, typed {typed} B"
    );
}

/// A Ready grant as the API server sends it, managed fields aside.
fn ready_grant(i: usize) -> serde_json::Value {
    let at = "2026-12-01T00:00:00Z";
    json!({
        "apiVersion": "slack-oauth-operator.io/v1alpha1",
        "kind": "SlackOAuthGrant",
        "metadata": {
            "name": format!("grant-{i}"), "namespace": "scale-3",
            "uid": "0b5f7a5e-1c39-4d84-9d2b-7e2f4c1d9a11", "resourceVersion": "1234567",
            "generation": 1, "creationTimestamp": at,
            "finalizers": ["slack-oauth-operator.io/revoke"]
        },
        "spec": {
            "clientID": "1234567890.1234567890",
            "clientSecretRef": { "name": "slack-app" },
            "secret": { "name": format!("grant-{i}-token") }
        },
        "status": {
            "phase": "Ready", "reason": "Authorized", "observedGeneration": 1,
            "conditions": [{ "type": "Ready", "status": "True", "reason": "Authorized",
                             "message": "The token is in Secret grant-1234-token.",
                             "lastTransitionTime": at, "observedGeneration": 1 }],
            "installation": { "teamID": "T0123456", "teamName": "Acme", "authorizedUserID": "U0123456",
                              "scopes": ["admin"], "tokenType": "User", "authorizedAt": at },
            "token": { "revision": 1, "issuedAt": at }
        }
    })
}

#[test]
fn a_cached_grant_keeps_neither_its_managed_fields_nor_kubectls_copy() {
    let bare = serde_json::to_string(&ready_grant(1234)).expect("json");
    let mut applied = ready_grant(1234);
    applied["metadata"]["managedFields"] = token_secret(1234)["metadata"]["managedFields"].clone();
    applied["metadata"]["annotations"] = json!({
        "kubectl.kubernetes.io/last-applied-configuration": bare.clone()
    });
    let applied = serde_json::to_string(&applied).expect("json");
    let typed = held_by(|| serde_json::from_str::<SlackOAuthGrant>(&bare).expect("typed"));
    let as_sent = held_by(|| serde_json::from_str::<SlackOAuthGrant>(&applied).expect("typed"));
    // As the grants' cache keeps it.
    let kept = held_by(|| {
        let mut grant: SlackOAuthGrant = serde_json::from_str(&applied).expect("typed");
        trim(&mut grant);
        grant
    });
    let packed =
        held_by(|| serde_json::from_str::<Packed<SlackOAuthGrant>>(&bare).expect("packed"));
    println!(
        "Ready grant held: {typed} B typed, {as_sent} B with managed fields and kubectl's copy, \
         {kept} B as cached (trimmed), {packed} B packed ({} B of JSON)",
        bare.len()
    );
    assert!(
        kept < as_sent && kept <= typed + 64,
        "cached {kept} B, as sent {as_sent} B, bare {typed} B"
    );
}
