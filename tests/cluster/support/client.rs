//! A client for the control plane, and the CRD installed in it.

use std::{path::Path, path::PathBuf, time::Duration};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, Config, ResourceExt,
    api::{Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{conditions, wait::await_condition},
};
use slack_oauth_operator::crdgen::CRD_PATH;

use super::tools::repo_root;

const HOW_TO_START: &str = "start the local control plane with `make cluster-up` and `eval \"$(make cluster-env)\"`, or run everything with `make test`";

/// A client for the control plane named by `KUBECONFIG`. Panics with instructions when there is
/// none, so a test that needs the control plane can never pass without one.
pub async fn client() -> Client {
    let kubeconfig = std::env::var_os("KUBECONFIG").map(PathBuf::from);
    match client_from(kubeconfig.as_deref()).await {
        Ok(client) => client,
        Err(message) => panic!("{message}"),
    }
}

/// A client for the control plane in `kubeconfig`, checked to answer.
pub async fn client_from(kubeconfig: Option<&Path>) -> Result<Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let path = kubeconfig.ok_or_else(|| format!("KUBECONFIG is not set: {HOW_TO_START}"))?;
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
        format!(
            "cannot read KUBECONFIG {}: {e}; {HOW_TO_START}",
            path.display()
        )
    })?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("invalid KUBECONFIG {}: {e}; {HOW_TO_START}", path.display()))?;
    let client = Client::try_from(config).map_err(|e| format!("cannot build a client: {e}"))?;
    tokio::time::timeout(Duration::from_secs(10), client.apiserver_version())
        .await
        .map_err(|_| {
            format!(
                "the API server in {} did not answer within 10 s; {HOW_TO_START}",
                path.display()
            )
        })?
        .map_err(|e| {
            format!(
                "the API server in {} is not reachable: {e}; {HOW_TO_START}",
                path.display()
            )
        })?;
    Ok(client)
}

/// Applies the committed CRD (not the in-memory one, so the file under test is the file users
/// apply) and waits until the API server serves it.
pub async fn install_crd(client: &Client) -> CustomResourceDefinition {
    let path = repo_root().join(CRD_PATH);
    let yaml = std::fs::read_to_string(&path).expect("read the committed CRD");
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(&yaml).expect("parse the committed CRD");
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let applied = crds
        .patch(
            &crd.name_any(),
            &PatchParams::apply("slack-oauth-operator-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("the API server accepts the CRD");
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(crds, &crd.name_any(), conditions::is_crd_established()),
    )
    .await
    .expect("the CRD is established within 30 s")
    .expect("watch the CRD");
    applied
}
