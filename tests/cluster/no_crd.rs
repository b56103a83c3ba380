//! An operator started before its CRD is installed: `/readyz` stays not ready, and the log says
//! in words what is missing and how to install it, until the CRD appears.
//!
//! This needs a control plane that has never had the CRD, so `make test` runs it first, on its
//! fresh control plane, before any other test installs the CRD; the main run skips it.

use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;

use crate::support::{self, Launch, Operator, TestNamespace};

const CRD: &str = "slackoauthgrants.slack-oauth-operator.io";

#[tokio::test]
#[ignore = "needs a local control plane without the CRD: run `make test`"]
async fn without_the_crd_the_operator_is_not_ready_and_says_what_is_missing() {
    let client = support::client().await;
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    assert!(
        crds.get_opt(CRD).await.expect("read CRDs").is_none(),
        "this test needs a control plane where {CRD} was never installed: `make test` runs it first on a fresh one (or `hack/cluster.sh down && hack/cluster.sh up`)"
    );
    let ns = TestNamespace::create(&client, "no-crd").await;
    let operator = Operator::spawn(Launch {
        name: "no-crd",
        watch_namespace: &ns.name,
        lease_namespace: &ns.name,
        callback_port: support::free_port(),
        public_url: None,
        // Never called: nothing can be reconciled without the CRD.
        slack_url: "http://127.0.0.1:9",
        slack_api_url: "http://127.0.0.1:9/api",
        kubeconfig: None,
        extra: &[],
    });

    let says = "the SlackOAuthGrant CRD is not installed";
    let started = Instant::now();
    while !operator.logs().contains(says) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the log should say {says:?}; it is:\n{}",
            operator.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let line = operator
        .logs()
        .lines()
        .find(|l| l.contains(says))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(
        line.contains(CRD) && line.contains("crds.enabled=true") && line.contains("kubectl apply"),
        "it names the CRD and how to install it: {line}"
    );
    let readyz = reqwest::get(format!("{}/readyz", operator.admin_url))
        .await
        .expect("the admin server answers");
    assert_eq!(readyz.status(), 503, "not ready without the CRD");

    support::install_crd(&client).await;
    operator.wait_ready().await;
}
