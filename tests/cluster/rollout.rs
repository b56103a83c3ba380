//! Consumers follow the token: a listed Deployment that opted in is restarted (its pod
//! template's token-revision annotation set) once per new token and never otherwise; one that
//! did not opt in is never touched; and a finished rollout lets the replaced token be revoked at
//! once instead of after `--revoke-grace`.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::{scenario::Scenario, support};

const KEY: &str = "SLACK_ACCESS_TOKEN";

async fn deployment(s: &Scenario, name: &str, opt_in: Option<&str>) -> Api<Deployment> {
    let deployments = Api::<Deployment>::namespaced(s.client.clone(), &s.ns.name);
    let annotations = match opt_in {
        Some(grant) => json!({ "slack-oauth-operator.io/restart-on-token-change": grant }),
        None => json!({}),
    };
    // No replicas: this control plane has no node, and a rollout of none finishes as soon as
    // the Deployment controller has seen the new template.
    let object: Deployment = serde_json::from_value(json!({
        "metadata": { "name": name, "annotations": annotations },
        "spec": {
            "replicas": 0,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "pf", "image": "pingidentity/pingfederate" }] }
            }
        }
    }))
    .expect("deployment");
    deployments
        .create(&PostParams::default(), &object)
        .await
        .expect("create the Deployment");
    deployments
}

fn template_revision(deployment: &Deployment) -> Option<String> {
    deployment
        .spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get("slack-oauth-operator.io/token-revision")
        .cloned()
}

async fn reauthorize(s: &Scenario, value: &str) -> String {
    let annotate = json!({ "metadata": { "annotations": {
        "slack-oauth-operator.io/reauthorize": value
    } } });
    s.grants
        .patch("scim", &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .expect("annotate");
    s.link("scim").await
}

async fn wait_revision(deployments: &Api<Deployment>, name: &str, revision: &str) -> Deployment {
    let started = Instant::now();
    loop {
        let deployment = deployments.get(name).await.expect("the Deployment");
        if template_revision(&deployment).as_deref() == Some(revision) {
            return deployment;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name} was not restarted for token revision {revision}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_token_change_restarts_the_listed_deployment_once_and_never_one_that_did_not_opt_in() {
    let s = Scenario::start("rollout").await;
    let deployments = deployment(&s, "pingfederate-admin", Some("scim")).await;
    deployment(&s, "bystander", None).await;
    let bystander = deployments.get("bystander").await.expect("bystander");
    s.create_client_secret().await;
    s.apply_grant(
        "scim",
        json!({ "teamID": "T0ACME", "secret": { "name": "slack-token", "rolloutRestart": [
            { "kind": "Deployment", "name": "pingfederate-admin" },
            { "kind": "Deployment", "name": "bystander" }
        ] } }),
    )
    .await;
    assert_eq!(s.approve(&s.link("scim").await).await.status, 200);
    s.wait_ready("scim").await;
    let first = wait_revision(&deployments, "pingfederate-admin", "1").await;

    // The token stays the same: nothing more happens to the workload.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let still = deployments.get("pingfederate-admin").await.expect("get");
    assert_eq!(
        still.metadata.generation, first.metadata.generation,
        "no restart while the token stays the same"
    );
    let grant = s.grants.get("scim").await.expect("grant");
    let rollout = grant
        .status
        .and_then(|st| st.rollout)
        .expect("status.rollout");
    let states: Vec<(&str, &str)> = rollout
        .targets
        .iter()
        .map(|t| (t.name.as_str(), t.state.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("pingfederate-admin", "RolledOut"),
            ("bystander", "NotOptedIn")
        ]
    );
    assert!(
        rollout.finished_at.is_none(),
        "a listed workload did not roll"
    );

    // A new token: one restart more.
    let link = reauthorize(&s, "one").await;
    assert_eq!(s.approve(&link).await.status, 200);
    let second = wait_revision(&deployments, "pingfederate-admin", "2").await;
    assert_eq!(
        second.metadata.generation.map(|g| g - 1),
        first.metadata.generation,
        "exactly one template change per new token"
    );
    // (Its resourceVersion moves: the Deployment controller writes its status.)
    let untouched = deployments.get("bystander").await.expect("bystander");
    assert_eq!(
        untouched.metadata.generation, bystander.metadata.generation,
        "a Deployment that did not opt in is never restarted"
    );
    assert_eq!(template_revision(&untouched), None);
    let writers: Vec<String> = untouched
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|f| f.manager.clone())
        .collect();
    assert!(
        !writers.iter().any(|m| m == "slack-oauth-operator"),
        "the operator never wrote it: {writers:?}"
    );
    assert!(
        support::ready_reason(&s.grants.get("scim").await.expect("grant")).as_deref()
            == Some("Authorized")
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_finished_rollout_revokes_the_replaced_token_without_waiting_for_the_grace() {
    let s = Scenario::builder("rollout-revoke")
        .flags(&["--revoke-grace", "10m"])
        .start()
        .await;
    let deployments = deployment(&s, "pingfederate-admin", Some("scim")).await;
    s.create_client_secret().await;
    s.apply_grant(
        "scim",
        json!({ "teamID": "T0ACME", "secret": { "name": "slack-token", "rolloutRestart": [
            { "kind": "Deployment", "name": "pingfederate-admin" }
        ] } }),
    )
    .await;
    assert_eq!(s.approve(&s.link("scim").await).await.status, 200);
    s.wait_ready("scim").await;
    let old = s.stored_token(KEY).await.expect("token");
    wait_revision(&deployments, "pingfederate-admin", "1").await;

    let link = reauthorize(&s, "one").await;
    assert_eq!(s.approve(&link).await.status, 200);
    let new = s.stored_token(KEY).await.expect("token");
    assert_ne!(new, old);
    let started = Instant::now();
    while s.slack.emulator.is_live(&old) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the replaced token was not revoked after the rollout finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let grant = s.grants.get("scim").await.expect("grant");
    let rollout = grant
        .status
        .and_then(|st| st.rollout)
        .expect("status.rollout");
    assert_eq!(rollout.revision, 2);
    assert!(rollout.finished_at.is_some());
    assert_eq!(
        template_revision(&deployments.get("pingfederate-admin").await.expect("get")).as_deref(),
        Some("2"),
        "revoked only after the workload rolled out with the new token"
    );
    assert!(s.slack.emulator.is_live(&new));
}
