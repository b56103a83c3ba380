//! `helm uninstall`: the operator goes, the CRD stays, and so does every grant with its token.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::apps::v1::Deployment,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::Api;
use serde_json::json;

use crate::release::{CLIENT_SECRET, FULL_NAME, Release};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster with a node: run `make test`"]
async fn helm_uninstall_keeps_the_crd_and_every_grant_with_its_token_secret() {
    // This release installs the CRD itself, as users do; the other tests' releases share the CRD
    // they applied, which this one takes over.
    let r = Release::install(
        "uninstall",
        json!({ "crds": { "enabled": true, "keep": true } }),
        &["--take-ownership"],
    )
    .await;
    r.apply_grant("scim", "slack-token").await;
    let link = r.link("scim", Duration::from_secs(60)).await;
    let answer = r.approve(&link).await.expect("the callback is served");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let token = r
        .token("slack-token", Duration::from_secs(30))
        .await
        .expect("the token");
    // The callback writes the Secret before the grant's status: uninstall once both are written.
    crate::support::wait_for_grant_within(&r.grants, "scim", Duration::from_secs(30), |g| {
        crate::support::ready_reason(g).as_deref() == Some("Authorized")
    })
    .await;

    r.helm("uninstall", &["--wait", "--timeout", "120s"]).await;

    // The operator is gone, pods and all.
    let deployments = Api::<Deployment>::namespaced(r.client.clone(), &r.ns.name);
    assert!(
        deployments
            .get_opt(FULL_NAME)
            .await
            .expect("read")
            .is_none()
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while !r.pods().await.is_empty() {
        assert!(Instant::now() < deadline, "the pods were not removed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The CRD stays, marked to be kept; the grant, its status and its token stay with it.
    let crd = Api::<CustomResourceDefinition>::all(r.client.clone())
        .get("slackoauthgrants.slack-oauth-operator.io")
        .await
        .expect("the CRD is kept");
    assert_eq!(
        crd.metadata
            .annotations
            .unwrap_or_default()
            .get("helm.sh/resource-policy")
            .map(String::as_str),
        Some("keep")
    );
    let grant = r.grants.get("scim").await.expect("the grant is kept");
    assert_eq!(
        crate::support::ready_reason(&grant).as_deref(),
        Some("Authorized")
    );
    assert_eq!(
        r.token("slack-token", Duration::ZERO).await.as_deref(),
        Some(token.as_str()),
        "the token Secret is kept, token and all"
    );
    assert!(
        r.secrets
            .get_opt(CLIENT_SECRET)
            .await
            .expect("read")
            .is_some(),
        "the app's client Secret is untouched"
    );
}
