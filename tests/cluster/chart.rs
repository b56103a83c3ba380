//! The Helm chart as the API server meets it: everything it renders is accepted by a server-side
//! dry run, installs and upgrades are idempotent, it adopts and keeps the shared CRD, its pods
//! pass the restricted Pod Security Standard, the operator it configures is reachable only
//! through its callback, and its RBAC is docs/security.md's model as the API server enforces it:
//! Secrets only in the watched namespaces, the state key alone in the release namespace, and
//! every namespace only with `clusterWide`. What helm alone can check (lint, the values schema,
//! what is rendered) is in `tests/chart_render.rs`, which needs no control plane.
//!
//! Each test that installs a release names it after its own namespace (or installs it in a
//! namespace of its own), so releases of tests running side by side never share an object. The
//! CRD is shared by every test in this binary, so only one test lets Helm own it; the others
//! install with `crds.enabled=false`.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::ReplicaSet,
        authentication::v1::{TokenRequest, TokenRequestSpec},
        core::v1::{Namespace, Pod, Secret, ServiceAccount},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{DeleteParams, GetParams, ListParams, Patch, PatchParams, PostParams, WatchParams},
};
use serde_json::{Value, json};

use crate::support::{
    self, Launch, Operator, Ran, TestNamespace,
    chart::{
        HOST, Rendered, chart, container_port, example_values_files, flag, ingress_with_tls,
        object_id, parse_documents, port_of, render, set, watching,
    },
    helm, kubectl, must_fail, run, tool,
};

const CRD_NAME: &str = "slackoauthgrants.slack-oauth-operator.io";
/// The field manager Helm 4 applies with (server-side apply), seen in `managedFields`.
const HELM_FIELD_MANAGER: &str = "helm";

// ---------------------------------------------------------------------------------------------
// Values and releases in the cluster.

/// Values that turn on every optional object of the chart.
fn everything_enabled() -> Vec<String> {
    [
        ingress_with_tls(),
        set(&[
            "ingress.className=nginx",
            "replicas=2",
            "networkPolicy.enabled=true",
            "networkPolicy.apiServerCIDRs={10.0.0.1/32}",
            "networkPolicy.adminFrom[0].namespaceSelector.matchLabels.team=monitoring",
            "serviceMonitor.enabled=true",
        ]),
    ]
    .concat()
}

/// `helm <verb> <release> <chart>` in the namespace of the same name, then the manifest Helm
/// recorded for the release.
fn helm_release(verb: &[&str], release: &str, values: &[String]) -> String {
    let chart = chart();
    let mut args: Vec<&str> = verb.to_vec();
    args.extend([release, chart.as_str(), "--namespace", release]);
    args.extend(values.iter().map(String::as_str));
    helm(&args);
    helm(&["get", "manifest", release, "--namespace", release])
}

/// Panics, showing the first line that differs, unless Helm recorded the same manifest twice.
fn assert_same_manifest(before: &str, after: &str, what: &str) {
    let mut after_lines = after.lines();
    for (number, line) in before.lines().enumerate() {
        match after_lines.next() {
            Some(other) if other == line => {}
            other => panic!(
                "{what} changed the manifest at line {}:\n- {line}\n+ {}",
                number + 1,
                other.unwrap_or("(end of the manifest)")
            ),
        }
    }
    if let Some(extra) = after_lines.next() {
        panic!("{what} added to the manifest:\n+ {extra}");
    }
}

/// The release's revisions, oldest first, as `(revision, status)`.
fn history(release: &str) -> Vec<(u64, String)> {
    let json: Value = serde_json::from_str(&helm(&[
        "history",
        release,
        "--namespace",
        release,
        "-o",
        "json",
    ]))
    .expect("helm history prints JSON");
    json.as_array()
        .expect("a list of revisions")
        .iter()
        .map(|r| {
            (
                r["revision"].as_u64().unwrap_or_default(),
                r["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The live objects named in `manifest`, as the API server returns them.
fn live_objects(manifest: &str) -> Vec<Value> {
    let listed: Value =
        serde_json::from_str(&kubectl(&["get", "-f", "-", "-o", "json"], Some(manifest)))
            .expect("kubectl get prints JSON");
    match listed["items"].as_array() {
        Some(items) => items.clone(),
        None => vec![listed],
    }
}

/// `Kind namespace/name` → resourceVersion of every object in `manifest`.
fn resource_versions(manifest: &str) -> BTreeMap<String, String> {
    live_objects(manifest)
        .iter()
        .map(|o| {
            (
                object_id(o),
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

/// The resourceVersions of `manifest`'s objects once the controller-manager has stopped writing
/// their status (it updates a new Deployment's and PodDisruptionBudget's status for a moment after
/// each write): two reads a second apart agree, and both have observed their generation.
async fn settled_resource_versions(manifest: &str) -> BTreeMap<String, String> {
    let observed = || {
        live_objects(manifest)
            .iter()
            .filter(|o| {
                ["Deployment", "PodDisruptionBudget"]
                    .contains(&o["kind"].as_str().unwrap_or_default())
            })
            .all(|o| o["status"]["observedGeneration"] == o["metadata"]["generation"])
    };
    let mut last = resource_versions(manifest);
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = resource_versions(manifest);
        if now == last && observed() {
            return now;
        }
        last = now;
    }
    panic!("the release's objects kept changing for 30 s: {last:#?}");
}

/// `manifest` as Helm applies it: Helm adds its ownership annotations to every object.
fn as_helm_applies_it(manifest: &str, release: &str) -> String {
    let items: Vec<Value> = parse_documents(manifest)
        .into_iter()
        .map(|mut object| {
            let metadata = object["metadata"]
                .as_object_mut()
                .expect("every object has metadata");
            let annotations = metadata
                .entry("annotations")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("annotations are a map");
            annotations.insert("meta.helm.sh/release-name".into(), release.into());
            annotations.insert("meta.helm.sh/release-namespace".into(), release.into());
            object
        })
        .collect();
    json!({ "apiVersion": "v1", "kind": "List", "items": items }).to_string()
}

/// Whether the API server serves the Prometheus Operator's ServiceMonitor, by discovery.
async fn serves_service_monitors(client: &Client) -> bool {
    match kube::discovery::group(client, "monitoring.coreos.com").await {
        Ok(group) => group.recommended_kind("ServiceMonitor").is_some(),
        Err(kube::Error::Discovery(kube::error::DiscoveryError::MissingApiGroup(_))) => false,
        Err(error) => panic!("API discovery of monitoring.coreos.com failed: {error}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The CRD.

/// The one test that lets Helm own the CRD every test shares. The CRD already exists (applied
/// as the other tests apply it), so Helm must adopt it (`--take-ownership`, Helm 4) rather than
/// fail on an object it did not create; its server-side apply agrees with the other tests' field
/// manager on every field, so neither changes the CRD's spec.
#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn installing_with_the_crd_adopts_it_unchanged_and_uninstalling_keeps_it() {
    let client = support::client().await;
    let before = support::install_crd(&client).await;
    let ns = TestNamespace::create(&client, "chart-crd").await;
    let release = ns.name.as_str();
    let crds = Api::<CustomResourceDefinition>::all(client.clone());

    let manifest = helm_release(
        &["install", "--take-ownership"],
        release,
        &set(&["crds.enabled=true"]),
    );
    let recorded = Rendered(parse_documents(&manifest));
    assert_eq!(
        recorded.one("CustomResourceDefinition")["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep",
        "not uninstalling: without the keep policy that would delete the CRD every test uses"
    );

    let adopted = crds.get(CRD_NAME).await.expect("the CRD exists");
    let annotations = adopted.metadata.annotations.clone().unwrap_or_default();
    let labels = adopted.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("meta.helm.sh/release-name")
            .map(String::as_str),
        Some(release)
    );
    assert_eq!(
        annotations
            .get("helm.sh/resource-policy")
            .map(String::as_str),
        Some("keep")
    );
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("Helm")
    );
    assert_eq!(
        adopted.metadata.uid, before.metadata.uid,
        "adopted, not replaced"
    );
    assert_eq!(
        adopted.metadata.generation, before.metadata.generation,
        "Helm's apply left the CRD's spec as it was"
    );

    let uninstalled = helm(&["uninstall", release, "--namespace", release]);
    assert!(
        uninstalled.contains(CRD_NAME),
        "helm says which resource it kept: {uninstalled}"
    );
    let kept = crds
        .get(CRD_NAME)
        .await
        .expect("the CRD survives helm uninstall");
    assert_eq!(kept.metadata.uid, before.metadata.uid);
    assert!(kept.metadata.deletion_timestamp.is_none());
}

// ---------------------------------------------------------------------------------------------
// 2. Server-side dry run.

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn every_manifest_the_chart_renders_passes_a_server_side_dry_run() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let ns = TestNamespace::create(&client, "chart-dry-run").await;
    // Roles for watchNamespaces live in those namespaces, which must exist.
    let watched_a = TestNamespace::create(&client, "chart-dry-run-a").await;
    let watched_b = TestNamespace::create(&client, "chart-dry-run-b").await;
    let service_monitors = serves_service_monitors(&client).await;

    let base_kinds = [
        "CustomResourceDefinition",
        "Deployment",
        "Ingress",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ];
    struct Case<'a> {
        name: String,
        values: Vec<String>,
        /// Where the grant rules are bound: watchNamespaces, or, empty as in the chart, the
        /// release namespace; ignored with `cluster_wide`.
        watched: Vec<&'a str>,
        /// clusterWide: the grant rules in a ClusterRole.
        cluster_wide: bool,
        /// Whether the values enable every optional object.
        everything: bool,
    }
    let mut cases = vec![
        Case {
            name: "everything, the release namespace".into(),
            values: everything_enabled(),
            watched: vec![],
            cluster_wide: false,
            everything: true,
        },
        Case {
            name: "everything, two namespaces".into(),
            values: [
                everything_enabled(),
                watching(&[&watched_a.name, &watched_b.name]),
            ]
            .concat(),
            watched: vec![&watched_a.name, &watched_b.name],
            cluster_wide: false,
            everything: true,
        },
        Case {
            name: "everything, cluster-wide".into(),
            values: [everything_enabled(), set(&["clusterWide=true"])].concat(),
            watched: vec![],
            cluster_wide: true,
            everything: true,
        },
    ];
    for file in example_values_files() {
        // The examples name namespaces of their own (pingfederate); watch ours instead.
        cases.push(Case {
            name: file.display().to_string(),
            values: [
                vec!["-f".to_owned(), file.to_string_lossy().into_owned()],
                watching(&[&watched_a.name]),
            ]
            .concat(),
            watched: vec![&watched_a.name],
            cluster_wide: false,
            everything: false,
        });
    }

    for Case {
        name: case,
        values,
        watched,
        cluster_wide,
        everything,
    } in cases
    {
        let rendered = render(&ns.name, &ns.name, &values);
        let names = rendered.names();
        let fullname = rendered.one("Deployment")["metadata"]["name"]
            .as_str()
            .expect("the Deployment's name")
            .to_owned();
        if everything {
            let kinds = rendered.kinds();
            for kind in base_kinds {
                assert!(
                    kinds.iter().any(|k| k == kind),
                    "{case}: no {kind} in {names:?}"
                );
            }
        }
        // The leader-election and own-secrets Roles in the release namespace, and the grant
        // rules either in each watched namespace only or, when asked, cluster-wide.
        let mut expected = vec![
            format!("Role {}/{fullname}-leader-election", ns.name),
            format!("RoleBinding {}/{fullname}-leader-election", ns.name),
            format!("Role {}/{fullname}-own-secrets", ns.name),
            format!("RoleBinding {}/{fullname}-own-secrets", ns.name),
        ];
        if cluster_wide {
            expected.push(format!("ClusterRole /{}:{fullname}", ns.name));
            expected.push(format!("ClusterRoleBinding /{}:{fullname}", ns.name));
        } else if watched.is_empty() {
            expected.push(format!("Role {}/{fullname}", ns.name));
            expected.push(format!("RoleBinding {}/{fullname}", ns.name));
        }
        for namespace in &watched {
            expected.push(format!("Role {namespace}/{fullname}"));
            expected.push(format!("RoleBinding {namespace}/{fullname}"));
        }
        expected.sort();
        let rbac: Vec<&String> = names
            .iter()
            .filter(|n| n.starts_with("Role") || n.starts_with("ClusterRole"))
            .collect();
        assert_eq!(
            rbac,
            expected.iter().collect::<Vec<_>>(),
            "{case}: the RBAC objects"
        );

        // A ServiceMonitor can only be checked where its CRD (Prometheus Operator) is served.
        let (checked, skipped): (Vec<Value>, Vec<Value>) = rendered
            .0
            .into_iter()
            .partition(|d| service_monitors || d["kind"] != "ServiceMonitor");
        if !skipped.is_empty() {
            eprintln!(
                "{case}: not dry-run, monitoring.coreos.com is not served by this API server: {:?}",
                skipped.iter().map(object_id).collect::<Vec<_>>()
            );
        }
        let list = json!({ "apiVersion": "v1", "kind": "List", "items": checked }).to_string();
        // --force-conflicts: the CRD's fields belong to other managers (the tests, Helm); a dry
        // run that takes them over changes nothing and still validates every field.
        let applied = kubectl(
            &[
                "apply",
                "--server-side",
                "--dry-run=server",
                "--force-conflicts",
                "--field-manager=chart-dry-run",
                "-f",
                "-",
            ],
            Some(&list),
        );
        let accepted = applied
            .lines()
            .filter(|l| l.ends_with("serverside-applied (server dry run)"))
            .count();
        assert_eq!(
            accepted,
            checked.len(),
            "{case}: every object is accepted:\n{applied}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Idempotent installs and upgrades.

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn upgrading_with_the_same_values_changes_nothing_and_a_second_install_is_refused() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let ns = TestNamespace::create(&client, "chart-upgrade").await;
    let watched = TestNamespace::create(&client, "chart-upgrade-watched").await;
    let release = ns.name.as_str();
    // Everything but the ServiceMonitor (no CRD for it here) and the CRD (shared by all tests).
    let values = [
        ingress_with_tls(),
        set(&["crds.enabled=false", "networkPolicy.enabled=true"]),
        watching(&[&watched.name]),
    ]
    .concat();

    let installed = helm_release(&["install"], release, &values);
    let upgraded = helm_release(&["upgrade"], release, &values);
    assert_same_manifest(&installed, &upgraded, "an upgrade with the same values");
    let before = settled_resource_versions(&upgraded).await;
    assert!(
        before.len() >= 10,
        "the release's objects: {:#?}",
        before.keys()
    );

    let upgraded_again = helm_release(&["upgrade"], release, &values);
    assert_same_manifest(&upgraded, &upgraded_again, "a second upgrade");
    assert_eq!(
        resource_versions(&upgraded_again),
        before,
        "a no-op upgrade wrote to no object"
    );
    // And the API server sees nothing to change: a server-side diff as Helm's field manager.
    let diff = run(
        tool("KUBECTL"),
        &[
            "diff",
            "--server-side",
            &format!("--field-manager={HELM_FIELD_MANAGER}"),
            "-f",
            "-",
        ],
        Some(&as_helm_applies_it(&upgraded_again, release)),
    );
    let line = &diff.line;
    assert_eq!(
        diff.code,
        Some(0),
        "`{line}` finds no difference\n--- stdout\n{}\n--- stderr\n{}",
        diff.stdout,
        diff.stderr
    );

    let revisions = history(release);
    assert_eq!(revisions.len(), 3, "{revisions:?}");
    let chart = chart();
    let mut again = vec!["install", release, chart.as_str(), "--namespace", release];
    again.extend(values.iter().map(String::as_str));
    let refused = must_fail(tool("HELM"), &again);
    assert!(
        refused.contains("cannot reuse a name that is still in use"),
        "{refused}"
    );
    assert_eq!(
        history(release),
        revisions,
        "the refused install left no revision"
    );
    assert_eq!(resource_versions(&upgraded_again), before);

    // `helm upgrade --install`, the idempotent way to install, twice.
    for _ in 0..2 {
        let manifest = helm_release(&["upgrade", "--install"], release, &values);
        assert_same_manifest(&installed, &manifest, "helm upgrade --install");
        assert_eq!(resource_versions(&manifest), before);
    }
    assert_eq!(
        history(release).last().map(|(_, status)| status.as_str()),
        Some("deployed")
    );
    helm(&["uninstall", release, "--namespace", release]);
}

// ---------------------------------------------------------------------------------------------
// 4. The Deployment's pods and the Ingress.

/// Pods are never scheduled here (no nodes), but they are created, and Pod Security admission
/// decides then: the ReplicaSet's pods exist only if the restricted standard admits them.
#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn deployment_pods_are_admitted_where_the_restricted_pod_security_standard_is_enforced() {
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "chart-restricted").await;
    let release = ns.name.as_str();
    Api::<Namespace>::all(client.clone())
        .patch(
            release,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            } } })),
        )
        .await
        .expect("enforce the restricted Pod Security Standard");

    helm_release(&["install"], release, &set(&["crds.enabled=false"]));
    let pods = Api::<Pod>::namespaced(client.clone(), release);
    let replica_sets = Api::<ReplicaSet>::namespaced(client.clone(), release);
    let selector = ListParams::default().labels(&format!("app.kubernetes.io/instance={release}"));
    for _ in 0..300 {
        if pods.list(&selector).await.expect("list pods").items.len() == 2 {
            helm(&["uninstall", release, "--namespace", release]);
            return;
        }
        // A refused pod shows as the ReplicaSet's ReplicaFailure condition, with the reason.
        let refused = replica_sets
            .list(&selector)
            .await
            .expect("list ReplicaSets")
            .items
            .into_iter()
            .flat_map(|rs| rs.status.and_then(|s| s.conditions).unwrap_or_default())
            .find(|c| c.type_ == "ReplicaFailure" && c.status == "True");
        if let Some(condition) = refused {
            panic!(
                "the Deployment's pods are refused: {}",
                condition.message.unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = kubectl(&["-n", release, "get", "events"], None);
    panic!("the Deployment's two pods were not created within 30 s; events:\n{events}");
}

/// The Ingress routes exactly one path to exactly the callback port, and the operator (the real
/// binary, with the public URL the chart gives it) answers that path there, and nothing else.
#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn ingress_exposes_only_the_start_and_callback_paths_and_the_operator_answers_them() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let ns = TestNamespace::create(&client, "chart-ingress").await;
    let http = reqwest::Client::new();
    let cases = [
        ("an Ingress with TLS", ingress_with_tls()),
        // A proxy in front serves the public URL under a path and forwards to the Ingress.
        (
            "a publicURL with a path on another host",
            [
                ingress_with_tls(),
                set(&["publicURL=https://sso.example.org/slack-oauth"]),
            ]
            .concat(),
        ),
    ];
    for (case, values) in cases {
        let rendered = render(&ns.name, &ns.name, &values);
        let ingress = rendered.one("Ingress");
        let service = rendered.one("Service");
        let rules = ingress["spec"]["rules"].as_array().expect("rules");
        assert_eq!(rules.len(), 1, "{case}: one rule");
        assert_eq!(rules[0]["host"], HOST, "{case}");
        assert_eq!(
            ingress["spec"]["tls"],
            json!([{ "hosts": [HOST], "secretName": "slack-oauth-tls" }]),
            "{case}"
        );
        let paths = rules[0]["http"]["paths"].as_array().expect("paths");
        assert_eq!(paths.len(), 2, "{case}: two paths: {paths:#?}");
        let start = &paths[0];
        assert_eq!(start["path"], "/oauth/start/", "{case}");
        assert_eq!(start["pathType"], "Prefix", "{case}: the links below it");
        assert_eq!(start["backend"], paths[1]["backend"], "{case}");
        let path = &paths[1];
        assert_eq!(path["path"], "/oauth/callback", "{case}");
        assert_eq!(path["pathType"], "Exact", "{case}: nothing below it");
        assert_eq!(
            path["backend"]["service"],
            json!({ "name": service["metadata"]["name"], "port": { "name": "callback" } }),
            "{case}"
        );
        let callback = service["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "callback")
            .expect("the Service's callback port");
        assert_eq!(callback["targetPort"], "callback");
        let container = rendered.container();
        assert_eq!(
            port_of(&flag(container, "--callback-addr")),
            container_port(container, "callback")
        );

        // The operator, started with the rendered public URL, answers the Ingress's path on its
        // callback port, and only that; health and metrics are on the admin port.
        let public_url = flag(container, "--public-url");
        let callback_port = support::free_port();
        let mut operator = Operator::launch(Launch {
            name: &format!("{}-chart-ingress", ns.name),
            watch_namespace: &ns.name,
            lease_namespace: &ns.name,
            callback_port,
            public_url: Some(&public_url),
            slack_url: "https://slack.com",
            slack_api_url: "https://slack.com/api",
            kubeconfig: None,
            extra: &[],
        })
        .await;
        let callback_base = format!("http://127.0.0.1:{callback_port}");
        let status = |url: String| {
            let http = http.clone();
            async move {
                http.get(&url)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("GET {url}: {e}"))
                    .status()
                    .as_u16()
            }
        };
        let answered = status(format!(
            "{callback_base}{}",
            path["path"].as_str().unwrap_or_default()
        ))
        .await;
        assert_ne!(
            answered, 404,
            "{case}: the operator answers the Ingress's path"
        );
        // And any approval link below the other path (a forged one is refused, not unrouted).
        let link = format!("{callback_base}/oauth/start/{}", "A".repeat(43));
        assert_eq!(
            status(link).await,
            400,
            "{case}: the operator answers /oauth/start/"
        );
        for other in ["/healthz", "/readyz", "/metrics", "/"] {
            assert_eq!(
                status(format!("{callback_base}{other}")).await,
                404,
                "{case}: {other} is not served where the Ingress points"
            );
        }
        for probe in ["livenessProbe", "readinessProbe"] {
            let probe_path = container[probe]["httpGet"]["path"]
                .as_str()
                .unwrap_or_default();
            assert_eq!(
                status(format!("{}{probe_path}", operator.admin_url)).await,
                200,
                "{case}: the {probe} path answers on the admin port"
            );
        }
        operator.terminate().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 5. RBAC: docs/security.md's model as the API server enforces it.

/// A request on Secrets, asked both of `kubectl auth can-i` and of the API server itself.
#[derive(Clone, Copy, Debug)]
enum SecretAccess<'a> {
    Get(&'a str),
    List,
    Watch,
    Create(&'a str),
    Update(&'a str),
    Patch(&'a str),
    Delete(&'a str),
}

impl SecretAccess<'_> {
    fn verb(self) -> &'static str {
        match self {
            Self::Get(_) => "get",
            Self::List => "list",
            Self::Watch => "watch",
            Self::Create(_) => "create",
            Self::Update(_) => "update",
            Self::Patch(_) => "patch",
            Self::Delete(_) => "delete",
        }
    }

    /// `secrets`, or `secrets/<name>` for a request on one existing Secret.
    fn resource(self) -> String {
        match self {
            Self::Get(name) | Self::Update(name) | Self::Patch(name) | Self::Delete(name) => {
                format!("secrets/{name}")
            }
            Self::List | Self::Watch | Self::Create(_) => "secrets".to_owned(),
        }
    }

    /// The real request, in `namespace` (every namespace for `None`).
    fn request(self, namespace: Option<&str>) -> http::Request<Vec<u8>> {
        let secrets = kube::core::Request::new(match namespace {
            Some(namespace) => format!("/api/v1/namespaces/{namespace}/secrets"),
            None => "/api/v1/secrets".to_owned(),
        });
        let body = |name: &str| {
            serde_json::to_vec(&json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": { "name": name },
                "stringData": { "written": "by the chart's service account" },
            }))
            .expect("a Secret serializes")
        };
        match self {
            Self::Get(name) => secrets.get(name, &GetParams::default()),
            Self::List => secrets.list(&ListParams::default()),
            // Ends after a second; the status line is all this looks at.
            Self::Watch => secrets.watch(&WatchParams::default().timeout(1), "0"),
            Self::Create(name) => secrets.create(&PostParams::default(), body(name)),
            Self::Update(name) => secrets.replace(name, &PostParams::default(), body(name)),
            Self::Patch(name) => secrets.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "labels": { "patched": "true" } } })),
            ),
            Self::Delete(name) => secrets.delete(name, &DeleteParams::default()),
        }
        .expect("a valid request")
    }

    /// The status an allowed request gets.
    fn allowed_status(self) -> u16 {
        match self {
            Self::Create(_) => 201,
            _ => 200,
        }
    }
}

/// A service account as the API server sees it: a token from the TokenRequest API, and kubectl
/// and a client that present nothing else (none of the admin kubeconfig's credentials), checked
/// with a SelfSubjectReview before anything is concluded from their answers.
struct Identity {
    username: String,
    token: String,
    client: Client,
    /// The admin kubeconfig with its user emptied, so `--token` is kubectl's only credential.
    userless_kubeconfig: PathBuf,
    _dir: support::TempDir,
}

impl Identity {
    async fn of_service_account(admin: &Client, namespace: &str, name: &str) -> Self {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let token = Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("a token for {namespace}/{name}: {e}"))
            .status
            .expect("the TokenRequest's status")
            .token;
        let dir = support::TempDir::new("chart-rbac");
        let admin_kubeconfig: Value = serde_saphyr::from_str(
            &std::fs::read_to_string(std::env::var("KUBECONFIG").expect("KUBECONFIG"))
                .expect("read KUBECONFIG"),
        )
        .expect("parse KUBECONFIG");
        let write_with_user = |file: &str, user: Value| {
            let mut config = admin_kubeconfig.clone();
            for entry in config["users"].as_array_mut().expect("users") {
                entry["user"] = user.clone();
            }
            let path = dir.path.join(file);
            std::fs::write(&path, config.to_string()).expect("write a kubeconfig");
            path
        };
        let token_kubeconfig = write_with_user("token-kubeconfig", json!({ "token": token }));
        let userless_kubeconfig = write_with_user("userless-kubeconfig", json!({}));
        let client = support::client_from(Some(&token_kubeconfig))
            .await
            .expect("a client with the token");
        let identity = Self {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            token,
            client,
            userless_kubeconfig,
            _dir: dir,
        };
        identity.assert_is_who_it_says();
        identity.assert_client_is_who_it_says().await;
        identity
    }

    /// Runs `kubectl <args>` with nothing but the token.
    fn kubectl(&self, args: &[&str]) -> Ran {
        let kubeconfig = self.userless_kubeconfig.to_string_lossy();
        let mut all = args.to_vec();
        all.extend(["--kubeconfig", &kubeconfig, "--token", &self.token]);
        run(tool("KUBECTL"), &all, None)
    }

    fn assert_is_who_it_says(&self) {
        let ran = self.kubectl(&[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ]);
        assert_eq!(
            ran.stdout.trim(),
            self.username,
            "kubectl with the token is the service account: {}",
            ran.stderr
        );
    }

    async fn assert_client_is_who_it_says(&self) {
        let review = kube::core::Request::new("/apis/authentication.k8s.io/v1/selfsubjectreviews")
            .create(
                &PostParams::default(),
                serde_json::to_vec(&json!({
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "SelfSubjectReview",
                }))
                .expect("json"),
            )
            .expect("a valid request");
        let review: Value = self
            .client
            .request(review)
            .await
            .expect("a SelfSubjectReview");
        assert_eq!(
            review["status"]["userInfo"]["username"], self.username,
            "the client with the token is the service account"
        );
    }

    /// `kubectl auth can-i`: whether the API server would allow `access` in `namespace`
    /// (every namespace for `None`).
    fn can_i(&self, access: SecretAccess<'_>, namespace: Option<&str>) -> bool {
        let resource = access.resource();
        let mut args = vec!["auth", "can-i", access.verb(), resource.as_str()];
        match namespace {
            Some(namespace) => args.extend(["--namespace", namespace]),
            None => args.push("--all-namespaces"),
        }
        let ran = self.kubectl(&args);
        match ran.stdout.trim() {
            "yes" => true,
            "no" => false,
            _ => panic!(
                "kubectl auth can-i {} {resource} answered neither yes nor no ({:?}):\n{}{}",
                access.verb(),
                ran.code,
                ran.stdout,
                ran.stderr.replace(&self.token, "<token>")
            ),
        }
    }

    /// The HTTP status the API server answers `access` in `namespace` with.
    async fn status(&self, access: SecretAccess<'_>, namespace: Option<&str>) -> u16 {
        let request = access.request(namespace).map(kube::client::Body::from);
        let response = tokio::time::timeout(Duration::from_secs(10), self.client.send(request))
            .await
            .unwrap_or_else(|_| panic!("{access:?} in {namespace:?}: no answer within 10 s"))
            .unwrap_or_else(|e| panic!("{access:?} in {namespace:?}: {e}"));
        response.status().as_u16()
    }

    /// Waits until RBAC's cache has the release's bindings: `access` in `namespace` is allowed.
    async fn wait_until_allowed(&self, access: SecretAccess<'_>, namespace: &str) {
        for _ in 0..100 {
            if self.can_i(access, Some(namespace)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{access:?} in {namespace} was not allowed within 10 s of the install");
    }

    /// Asks can-i and the API server about every `(label, namespace, access, allowed)`, in order,
    /// and returns the matrix; panics, printing it, unless both agree with `allowed` everywhere.
    async fn assert_matrix(
        &self,
        what: &str,
        rows: &[(&str, Option<&str>, SecretAccess<'_>, bool)],
    ) -> String {
        let mut table = format!("{what} ({}):\n", self.username);
        let mut wrong = 0;
        for &(label, namespace, access, allowed) in rows {
            let can_i = self.can_i(access, namespace);
            let status = self.status(access, namespace).await;
            let expected_status = if allowed {
                access.allowed_status()
            } else {
                403
            };
            let agrees = can_i == allowed && status == expected_status;
            if !agrees {
                wrong += 1;
            }
            table.push_str(&format!(
                "  {label:<10} {:<8} {:<40} can-i {:<3}  real {status}  documented {:<9} {}\n",
                access.verb(),
                access.resource(),
                if can_i { "yes" } else { "no" },
                if allowed { "allowed" } else { "forbidden" },
                if agrees { "ok" } else { "WRONG" },
            ));
        }
        eprintln!("{table}");
        assert_eq!(wrong, 0, "{table}");
        table
    }
}

/// A Secret with one key, created as the admin.
async fn create_secret(client: &Client, namespace: &str, name: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": name },
        "stringData": { "key": "not for the operator" },
    }))
    .expect("a Secret");
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_or_else(|e| panic!("create Secret {namespace}/{name}: {e}"));
}

/// The acceptance test of the chart's RBAC: installed with `watchNamespaces: [A, B]`, the
/// operator's service account (with a token from the TokenRequest API) may read and write
/// Secrets in A and B, only get its state key in the release namespace, and nothing in C; both
/// `kubectl auth can-i` and real GET, LIST and WATCH requests say so. Only `clusterWide: true`
/// gives it Secrets everywhere.
#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn service_account_reads_secrets_only_where_docs_security_md_says_and_everywhere_only_with_cluster_wide()
 {
    let client = support::client().await;
    let ns = TestNamespace::create(&client, "chart-rbac").await;
    let a = TestNamespace::create(&client, "chart-rbac-a").await;
    let b = TestNamespace::create(&client, "chart-rbac-b").await;
    let c = TestNamespace::create(&client, "chart-rbac-unwatched").await;
    let release = ns.name.as_str();
    let manifest = helm_release(
        &["install"],
        release,
        &[set(&["crds.enabled=false"]), watching(&[&a.name, &b.name])].concat(),
    );
    let recorded = Rendered(parse_documents(&manifest));
    assert!(
        recorded.of_kind("ClusterRole").is_empty()
            && recorded.of_kind("ClusterRoleBinding").is_empty(),
        "nothing cluster-wide without clusterWide: {:?}",
        recorded.names()
    );
    let account = recorded.one("ServiceAccount")["metadata"]["name"]
        .as_str()
        .expect("the service account's name")
        .to_owned();
    let state_key = flag(recorded.container(), "--state-key-secret");

    // An existing Secret everywhere, and the state key where the operator keeps it.
    let probe = "someone-elses-secret";
    for namespace in [&ns.name, &a.name, &b.name, &c.name] {
        create_secret(&client, namespace, probe).await;
    }
    create_secret(&client, release, &state_key).await;

    let operator = Identity::of_service_account(&client, release, &account).await;
    operator
        .wait_until_allowed(SecretAccess::List, &a.name)
        .await;
    operator
        .wait_until_allowed(SecretAccess::List, &b.name)
        .await;
    operator
        .wait_until_allowed(SecretAccess::Get(&state_key), release)
        .await;

    use SecretAccess::{Create, Delete, Get, List, Patch, Update, Watch};
    let written = "written-by-the-operator";
    let (a, b, c) = (
        Some(a.name.as_str()),
        Some(b.name.as_str()),
        Some(c.name.as_str()),
    );
    let own = Some(release);
    let rows = [
        ("A", a, Get(probe), true),
        ("A", a, List, true),
        ("A", a, Watch, true),
        ("B", b, Get(probe), true),
        ("B", b, List, true),
        ("B", b, Watch, true),
        // The operator's own namespace: its state key and token records (RBAC cannot name
        // records made at run time, so any Secret there can be read; the code watches only the
        // records' label).
        ("release", own, Get(&state_key), true),
        ("release", own, Get(probe), true),
        ("release", own, List, true),
        ("release", own, Watch, true),
        ("C", c, Get(probe), false),
        ("C", c, List, false),
        ("C", c, Watch, false),
        ("all", None, List, false),
        ("all", None, Watch, false),
        // Writing: the token Secret is created and replaced, never patched or deleted.
        ("A", a, Create(written), true),
        ("A", a, Update(written), true),
        ("A", a, Patch(written), false),
        ("A", a, Delete(written), false),
        ("A", a, Delete(probe), false),
        // The state key and the token records are created, replaced and deleted, never patched.
        ("release", own, Create(written), true),
        ("release", own, Update(&state_key), true),
        ("release", own, Patch(&state_key), false),
        ("release", own, Delete(&state_key), true),
        ("C", c, Create(written), false),
    ];
    operator
        .assert_matrix("watchNamespaces: [A, B]", &rows)
        .await;
    helm(&["uninstall", release, "--namespace", release]);

    // clusterWide: the same rules in a ClusterRole. Two releases of one name in two namespaces,
    // each with a ClusterRoleBinding of its own for its own service account.
    let first = TestNamespace::create(&client, "chart-rbac-wide").await;
    let second = TestNamespace::create(&client, "chart-rbac-wide").await;
    let chart = chart();
    for namespace in [&first.name, &second.name] {
        let manifest = {
            helm(&[
                "install",
                "twin",
                chart.as_str(),
                "--namespace",
                namespace,
                "--set",
                "crds.enabled=false",
                "--set",
                "clusterWide=true",
            ]);
            helm(&["get", "manifest", "twin", "--namespace", namespace])
        };
        let recorded = Rendered(parse_documents(&manifest));
        let binding = recorded.one("ClusterRoleBinding");
        assert_eq!(
            binding["metadata"]["name"],
            format!("{namespace}:twin-slack-oauth-operator")
        );
        assert_eq!(binding["subjects"][0]["namespace"], namespace.as_str());
    }
    let wide =
        Identity::of_service_account(&client, &first.name, "twin-slack-oauth-operator").await;
    wide.wait_until_allowed(List, c.expect("C")).await;
    let rows = [
        ("C", c, Get(probe), true),
        ("C", c, List, true),
        ("C", c, Watch, true),
        ("all", None, List, true),
        ("all", None, Watch, true),
        ("C", c, Create(written), true),
        ("C", c, Update(written), true),
        ("C", c, Patch(probe), false),
        ("C", c, Delete(probe), false),
    ];
    wide.assert_matrix("clusterWide: true", &rows).await;
    for namespace in [&first.name, &second.name] {
        helm(&["uninstall", "twin", "--namespace", namespace]);
    }
}
