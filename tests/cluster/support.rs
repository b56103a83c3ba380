//! What every test against the control plane needs: a client, the CRD, and a namespace of its own.
//!
//! Tests in this binary are `#[ignore]`d so that a plain `cargo test` runs only the fast tests.
//! `make test` starts the local control plane and runs them with `--include-ignored`. Run without a
//! control plane, they fail at once with a message that says how to start one; they never pass.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{conditions, wait::await_condition},
};
use slack_oauth_operator::crdgen::CRD_PATH;

const HOW_TO_START: &str = "start the local control plane with `make cluster-up` and `eval \"$(make cluster-env)\"`, or run everything with `make test`";

/// The repository root, for files such as `crds/` and `examples/`.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

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

/// A namespace that belongs to one test, so tests can run in parallel. The control plane of
/// `make test` is thrown away afterwards, so namespaces are not deleted one by one.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn create(client: &Client, test: &str) -> Self {
        let suffix: String = {
            use rand::RngExt;
            let mut rng = rand::rng();
            (0..6)
                .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
                .collect()
        };
        let prefix: String = test
            .chars()
            .map(|c| {
                if c == '_' {
                    '-'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(40)
            .collect();
        let name = format!("{}-{suffix}", prefix.trim_end_matches('-'));
        let namespace: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "labels": { "slack-oauth-operator.io/test": test.chars().take(63).collect::<String>() }
            }
        }))
        .expect("namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create the test namespace");
        Self { name }
    }
}

/// The path of a tool (`KUBECTL`, `HELM`) that `make test` installs and names in the environment.
pub fn tool(variable: &str) -> PathBuf {
    match std::env::var_os(variable) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!(
            "{variable} is not set: `make test` installs it (hack/tools.sh) and exports {variable}"
        ),
    }
}
