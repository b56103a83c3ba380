//! The bare client: the API work of each measured operation done directly, in the same run, so
//! that the operator's times are read as ratios to it rather than as absolute times, which vary
//! with whatever else the machine runs.

use std::time::{Duration, Instant};

use json_patch::{AddOperation, Patch as JsonPatch, PatchOperation, jsonptr::PointerBuf};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde::de::DeserializeOwned;
use serde_json::json;
use slack_oauth_operator::api::{SlackOAuthGrant, labels};

/// Page size of the paged LISTs: the operator's watchers page by 500 too (kube's default).
pub const PAGE_SIZE: u32 = 500;

/// Every object `lp` selects, listed in pages of [`PAGE_SIZE`] with continue tokens.
pub async fn paged_list<K>(api: &Api<K>, lp: &ListParams) -> Result<Vec<K>, kube::Error>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut objects = Vec::new();
    let mut page = lp.clone().limit(PAGE_SIZE);
    loop {
        let list = api.list(&page).await?;
        objects.extend(list.items);
        match list.metadata.continue_ {
            Some(token) if !token.is_empty() => page = page.continue_token(&token),
            _ => return Ok(objects),
        }
    }
}

/// The operator's Secrets: those labelled as managed by it.
pub fn managed_secrets() -> ListParams {
    ListParams::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::OPERATOR))
}

/// What the restart has to read: every grant and every operator-owned Secret of `namespaces`,
/// listed in pages, all namespaces and both kinds at once (as the operator's watchers start).
/// Returns how long it took and how many objects it read.
pub async fn list_everything(client: &kube::Client, namespaces: &[String]) -> (Duration, usize) {
    let started = Instant::now();
    let lists = namespaces.iter().map(|ns| async move {
        let grants: Api<SlackOAuthGrant> = Api::namespaced(client.clone(), ns);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let (all, managed) = (ListParams::default(), managed_secrets());
        let (grants, secrets) =
            futures::join!(paged_list(&grants, &all), paged_list(&secrets, &managed));
        grants.expect("list the grants").len() + secrets.expect("list the Secrets").len()
    });
    let objects = futures::future::join_all(lists).await.into_iter().sum();
    (started.elapsed(), objects)
}

/// A grant created and given an authorization link, as the operator's first reconcile does:
/// create, then a status update. Returns the time both took.
pub async fn create_and_publish(
    grants: &Api<SlackOAuthGrant>,
    grant: &SlackOAuthGrant,
) -> Duration {
    let started = Instant::now();
    let mut created = grants
        .create(&PostParams::default(), grant)
        .await
        .expect("the bare client creates a grant");
    created.status = Some(
        serde_json::from_value(json!({
            "authorizationURL": format!("http://127.0.0.1/oauth/start/{}", created.metadata.uid.clone().unwrap_or_default()),
            "phase": "AwaitingAuthorization"
        }))
        .expect("status"),
    );
    let name = created.metadata.name.clone().unwrap_or_default();
    grants
        .replace_status(&name, &PostParams::default(), &created)
        .await
        .expect("the bare client writes a grant's status");
    started.elapsed()
}

/// The API requests of one callback, done directly: read the grant, claim the attempt (a JSON
/// patch of its status), read the client Secret, look for the token Secret (absent), create it,
/// and write the grant's final status. Returns the time the six took.
pub async fn approve_like_callback(
    grants: &Api<SlackOAuthGrant>,
    secrets: &Api<Secret>,
    name: &str,
    client_secret: &str,
) -> Duration {
    let started = Instant::now();
    grants.get(name).await.expect("get the grant");
    let claim = JsonPatch(vec![PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(["status", "phase"]),
        value: json!("AwaitingAuthorization"),
    })]);
    let mut claimed = grants
        .patch_status(name, &PatchParams::default(), &Patch::<()>::Json(claim))
        .await
        .expect("claim the attempt");
    secrets
        .get(client_secret)
        .await
        .expect("get the client Secret");
    let token_secret = format!("{name}-token");
    let absent = secrets
        .get_opt(&token_secret)
        .await
        .expect("look for the token Secret");
    assert!(
        absent.is_none(),
        "the bare token Secret {token_secret} exists already"
    );
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {
            "name": token_secret,
            "labels": { (labels::MANAGED_BY): labels::OPERATOR }
        },
        "stringData": { "token": "xoxp-bare" }
    }))
    .expect("token Secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the token Secret");
    claimed.status = Some(serde_json::from_value(json!({ "phase": "Ready" })).expect("status"));
    grants
        .replace_status(name, &PostParams::default(), &claimed)
        .await
        .expect("write the grant's status");
    started.elapsed()
}
