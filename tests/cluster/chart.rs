//! The Helm chart as a user meets it: it lints and renders with every example values file, its
//! schema refuses values that cannot work, its CRD is the generated one, everything it renders is
//! accepted by the real API server, installs and upgrades are idempotent, the NOTES print the
//! redirect URL, and the operator it deploys is restricted, probed and reachable only through its
//! callback.
//!
//! Each test that installs a release names it after its own namespace: the chart also renders
//! cluster-scoped objects (a ClusterRole and ClusterRoleBinding named after the release), so
//! releases of tests running side by side must not share a name. The CRD is shared by every test
//! in this binary, so only one test lets Helm own it; the others install with
//! `crds.enabled=false`.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use k8s_openapi::{
    api::{
        apps::v1::ReplicaSet,
        core::v1::{Namespace, Pod},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use slack_oauth_operator::crdgen::CRD_PATH;

use crate::support::{self, Launch, Operator, TestNamespace};

const CRD_NAME: &str = "slackoauthgrants.slack-oauth-operator.io";
/// The field manager Helm 4 applies with (server-side apply), seen in `managedFields`.
const HELM_FIELD_MANAGER: &str = "helm";
const HOST: &str = "slack-oauth.example.com";

// ---------------------------------------------------------------------------------------------
// Running helm and kubectl.

/// What a finished helm or kubectl run printed.
struct Ran {
    success: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the tool named by the environment variable `tool` (`HELM`, `KUBECTL`), feeding `stdin`.
fn run<S: AsRef<OsStr>>(tool: &str, args: &[S], stdin: Option<&str>) -> (String, Ran) {
    let program = support::tool(tool);
    let line = std::iter::once(program.display().to_string())
        .chain(
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned()),
        )
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new(&program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{line}`: {e}"));
    // Written from a thread, so a tool that prints before it has read all its input cannot
    // deadlock on full pipes; dropping stdin then closes it, which ends a `-f -` input.
    let mut input = child.stdin.take().expect("stdin is piped");
    let text = stdin.unwrap_or_default().to_owned();
    let writer = std::thread::spawn(move || input.write_all(text.as_bytes()));
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("`{line}` did not finish: {e}"));
    writer
        .join()
        .expect("the stdin writer did not panic")
        .unwrap_or_else(|e| panic!("cannot write to `{line}`: {e}"));
    let ran = Ran {
        success: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    (line, ran)
}

/// Runs a tool that must succeed, and returns its standard output.
fn must<S: AsRef<OsStr>>(tool: &str, args: &[S], stdin: Option<&str>) -> String {
    let (line, ran) = run(tool, args, stdin);
    assert!(
        ran.success,
        "`{line}` failed ({:?})\n--- stdout\n{}\n--- stderr\n{}",
        ran.code, ran.stdout, ran.stderr
    );
    ran.stdout
}

/// Runs a tool that must fail, and returns everything it printed (helm lint reports on stdout,
/// helm template on stderr).
fn must_fail<S: AsRef<OsStr>>(tool: &str, args: &[S]) -> String {
    let (line, ran) = run(tool, args, None);
    assert!(
        !ran.success,
        "`{line}` should have failed, but succeeded\n--- stdout\n{}\n--- stderr\n{}",
        ran.stdout, ran.stderr
    );
    format!("{}{}", ran.stdout, ran.stderr)
}

fn helm<S: AsRef<OsStr>>(args: &[S]) -> String {
    must("HELM", args, None)
}

fn kubectl<S: AsRef<OsStr>>(args: &[S], stdin: Option<&str>) -> String {
    must("KUBECTL", args, stdin)
}

// ---------------------------------------------------------------------------------------------
// The chart, its values and what it renders.

fn chart() -> String {
    support::repo_root()
        .join("charts/slack-oauth-operator")
        .to_string_lossy()
        .into_owned()
}

/// The example values files in the chart's `ci/` folder (which `helm lint` and chart-testing
/// pick up).
fn example_values_files() -> Vec<PathBuf> {
    let dir = support::repo_root().join("charts/slack-oauth-operator/ci");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension() == Some(OsStr::new("yaml")))
        .collect();
    files.sort();
    files
}

/// `--set` flags, one per `key=value`.
fn set(pairs: &[&str]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|pair| ["--set".to_owned(), (*pair).to_owned()])
        .collect()
}

/// An Ingress on [`HOST`] with a TLS certificate, so the public URL is `https://HOST`.
fn ingress_with_tls() -> Vec<String> {
    set(&[
        "ingress.enabled=true",
        &format!("ingress.host={HOST}"),
        "ingress.tls[0].secretName=slack-oauth-tls",
    ])
}

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

/// `watchNamespaces` as a `--set` value.
fn watching(namespaces: &[&str]) -> Vec<String> {
    set(&[&format!("watchNamespaces={{{}}}", namespaces.join(","))])
}

/// The documents `helm template` renders.
struct Rendered(Vec<Value>);

impl Rendered {
    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.0.iter().filter(|d| d["kind"] == kind).collect()
    }

    /// The one document of `kind`.
    fn one(&self, kind: &str) -> &Value {
        match self.of_kind(kind).as_slice() {
            [one] => one,
            other => panic!(
                "expected one {kind}, found {}; rendered: {:?}",
                other.len(),
                self.names()
            ),
        }
    }

    /// `Kind namespace/name` of every document, sorted.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.0.iter().map(object_id).collect();
        names.sort();
        names
    }

    fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self
            .0
            .iter()
            .map(|d| d["kind"].as_str().unwrap_or_default().to_owned())
            .collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// The operator's container in the Deployment.
    fn container(&self) -> &Value {
        operator_container(self.one("Deployment"))
    }
}

fn parse_documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap_or_else(|e| panic!("the rendered YAML parses: {e}\n{yaml}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// `helm template` of release `release` in `namespace` with `values`.
fn render(release: &str, namespace: &str, values: &[String]) -> Rendered {
    let chart = chart();
    let mut args = vec![
        "template",
        release,
        chart.as_str(),
        "--namespace",
        namespace,
    ];
    args.extend(values.iter().map(String::as_str));
    Rendered(parse_documents(&helm(&args)))
}

/// `Kind namespace/name`, naming an object in messages and maps.
fn object_id(object: &Value) -> String {
    format!(
        "{} {}/{}",
        object["kind"].as_str().unwrap_or_default(),
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

fn operator_container(deployment: &Value) -> &Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|containers| containers.iter().find(|c| c["name"] == "operator"))
        .unwrap_or_else(|| panic!("the Deployment has an `operator` container: {deployment:#}"))
}

/// The value of the container's `--name=value` argument.
fn flag(container: &Value, name: &str) -> String {
    let prefix = format!("{name}=");
    container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|arg| arg.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name}= argument in {:#}", container["args"]))
        .to_owned()
}

/// The container port named `name`.
fn container_port(container: &Value, name: &str) -> u64 {
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}: {:#}", container["ports"]))
}

/// The port of a `host:port` listen address such as `--admin-addr`'s.
fn port_of(address: &str) -> u64 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{address} ends with a port"))
}

// ---------------------------------------------------------------------------------------------
// Releases in the cluster.

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

/// Where two JSON values first differ, as a path with both sides, or `None` when equal. Keeps a
/// failure about a 300-line CRD readable.
fn first_difference(left: &Value, right: &Value, path: &str) -> Option<String> {
    match (left, right) {
        (Value::Object(l), Value::Object(r)) => l
            .keys()
            .chain(r.keys().filter(|k| !l.contains_key(*k)))
            .find_map(|k| {
                first_difference(
                    l.get(k).unwrap_or(&Value::Null),
                    r.get(k).unwrap_or(&Value::Null),
                    &format!("{path}.{k}"),
                )
            }),
        (Value::Array(l), Value::Array(r)) if l.len() == r.len() => l
            .iter()
            .zip(r)
            .enumerate()
            .find_map(|(i, (l, r))| first_difference(l, r, &format!("{path}[{i}]"))),
        _ if left == right => None,
        _ => Some(format!("{path}: chart {left} / committed {right}")),
    }
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
// 1. Lint, render and the values schema.

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn chart_lints_strictly_and_renders_with_the_default_values_and_every_example_values_file() {
    let chart = chart();
    helm(&["lint", "--strict", chart.as_str()]);
    assert_eq!(
        render("lint", "lint", &[]).kinds(),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ],
        "what the default values render"
    );

    let examples = example_values_files();
    assert!(
        examples.len() >= 2,
        "the chart's ci/ folder holds the example values files: {examples:?}"
    );
    for file in &examples {
        let file = file.to_string_lossy();
        helm(&["lint", "--strict", chart.as_str(), "-f", &file]);
        let rendered = render("lint", "lint", &["-f".to_owned(), file.to_string()]);
        rendered.one("Deployment");
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn values_schema_refuses_values_that_cannot_work_and_names_the_field() {
    let chart = chart();
    let dir = support::TempDir::new("chart-values");
    let file = |name: &str, yaml: &str| {
        let path = dir.path.join(name);
        std::fs::write(&path, yaml).expect("write a values file");
        vec!["-f".to_owned(), path.to_string_lossy().into_owned()]
    };
    const SCHEMA: &str = "values don't meet the specifications of the schema";
    // (what is wrong, the values, what the error must say); `helm template` and `helm lint
    // --strict` both refuse these.
    let cases: Vec<(&str, Vec<String>, &[&str])> = vec![
        (
            "a non-numeric replicas with --set-string",
            vec!["--set-string".into(), "replicas=two".into()],
            &[SCHEMA, "/replicas", "want integer"],
        ),
        (
            "a non-numeric replicas in a values file",
            file("replicas.yaml", "replicas: two\n"),
            &[SCHEMA, "/replicas", "want integer"],
        ),
        (
            "a negative replicas",
            set(&["replicas=-1"]),
            &[SCHEMA, "/replicas", "minimum"],
        ),
        (
            "an enabled Ingress without a host",
            file("ingress.yaml", "ingress:\n  enabled: true\n"),
            &[SCHEMA, "/ingress/host"],
        ),
        (
            "an Ingress host that is not a DNS name",
            set(&[
                "ingress.enabled=true",
                "ingress.host=https://slack.example.com",
            ]),
            &[SCHEMA, "/ingress/host", "does not match pattern"],
        ),
        (
            "an unknown top-level key (a typo of replicas)",
            set(&["replica=3"]),
            &[SCHEMA, "additional properties 'replica' not allowed"],
        ),
        (
            "an unknown nested key (hosts instead of host)",
            file("hosts.yaml", "ingress:\n  hosts: [slack.example.com]\n"),
            &[SCHEMA, "/ingress", "'hosts' not allowed"],
        ),
        (
            "a publicURL without a scheme",
            set(&["publicURL=slack.example.com"]),
            &[SCHEMA, "/publicURL"],
        ),
        (
            "an unknown log format",
            set(&["log.format=xml"]),
            &[SCHEMA, "/log/format"],
        ),
    ];
    let refuses = |verb: &[&str], what: &str, values: &[String], says: &[&str]| {
        let mut args: Vec<&str> = verb.to_vec();
        args.push(&chart);
        args.extend(values.iter().map(String::as_str));
        let error = must_fail("HELM", &args);
        for expected in says {
            assert!(
                error.contains(expected),
                "helm {} refuses {what}, saying {expected:?}; it said:\n{error}",
                verb[0]
            );
        }
    };
    for (what, values, says) in &cases {
        refuses(&["template", "refused"], what, values, says);
        refuses(&["lint", "--strict"], what, values, says);
    }
    // Not the schema's but the template's: a path on the Ingress host that the chart's Ingress
    // would not route. `helm lint` renders with `fail` only logged, so install and template
    // refuse it, lint does not.
    let path_on_ingress_host = [
        ingress_with_tls(),
        set(&[&format!("publicURL=https://{HOST}/slack")]),
    ]
    .concat();
    let says = ["publicURL", "has a path", "/oauth/callback"];
    let what = "a publicURL with a path on the Ingress host";
    refuses(&["template", "refused"], what, &path_on_ingress_host, &says);
    refuses(
        &["install", "refused", "--dry-run=client"],
        what,
        &path_on_ingress_host,
        &says,
    );
}

// ---------------------------------------------------------------------------------------------
// 2. The CRD.

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn chart_crd_is_the_generated_crd_and_follows_crds_enabled_and_crds_keep() {
    let committed = std::fs::read_to_string(support::repo_root().join(CRD_PATH))
        .expect("read the committed CRD");
    let committed: Value = serde_saphyr::from_str(&committed).expect("the committed CRD parses");

    let rendered = render("crd", "crd", &set(&["crds.enabled=true"]));
    let crd = rendered.one("CustomResourceDefinition");
    assert_eq!(crd["metadata"]["name"], committed["metadata"]["name"]);
    assert_eq!(crd["apiVersion"], committed["apiVersion"]);
    if let Some(difference) = first_difference(&crd["spec"], &committed["spec"], "spec") {
        panic!("the chart's CRD differs from {CRD_PATH} at {difference}: run `make generate`");
    }
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "crds.keep defaults to true: uninstalling keeps the CRD, and so every grant"
    );

    let not_kept = render("crd", "crd", &set(&["crds.keep=false"]));
    assert!(
        not_kept.one("CustomResourceDefinition")["metadata"]["annotations"]
            .get("helm.sh/resource-policy")
            .is_none(),
        "crds.keep=false leaves the CRD to Helm"
    );

    let disabled = render("crd", "crd", &set(&["crds.enabled=false"]));
    assert!(
        disabled.of_kind("CustomResourceDefinition").is_empty(),
        "crds.enabled=false renders no CRD: {:?}",
        disabled.names()
    );
}

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
// 3. Server-side dry run.

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
        /// watchNamespaces, where the grant rules are bound; empty, as in the chart, for every
        /// namespace (a ClusterRole).
        watched: Vec<&'a str>,
        /// Whether the values enable every optional object.
        everything: bool,
    }
    let mut cases = vec![
        Case {
            name: "everything, every namespace".into(),
            values: everything_enabled(),
            watched: vec![],
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
            everything: false,
        });
    }

    for Case {
        name: case,
        values,
        watched,
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
        // The leader-election Role in the release namespace, and the grant rules either
        // cluster-wide or in each watched namespace only.
        let mut expected = vec![
            format!("Role {}/{fullname}-leader-election", ns.name),
            format!("RoleBinding {}/{fullname}-leader-election", ns.name),
        ];
        if watched.is_empty() {
            expected.push(format!("ClusterRole /{fullname}"));
            expected.push(format!("ClusterRoleBinding /{fullname}"));
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
// 4. Idempotent installs and upgrades.

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
    let (line, diff) = run(
        "KUBECTL",
        &[
            "diff",
            "--server-side",
            &format!("--field-manager={HELM_FIELD_MANAGER}"),
            "-f",
            "-",
        ],
        Some(&as_helm_applies_it(&upgraded_again, release)),
    );
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
    let refused = must_fail("HELM", &again);
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
// 5. NOTES and the public URL.

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn notes_print_the_redirect_url_and_the_command_that_prints_the_authorization_link() {
    let service_url = "http://notes-slack-oauth-operator.notes.svc:8080";
    // (how the public URL is chosen, the values, the public URL)
    let cases: Vec<(&str, Vec<String>, String)> = vec![
        (
            "the Ingress host, https with TLS",
            ingress_with_tls(),
            format!("https://{HOST}"),
        ),
        (
            "the Ingress host, http without TLS",
            set(&["ingress.enabled=true", &format!("ingress.host={HOST}")]),
            format!("http://{HOST}"),
        ),
        (
            "publicURL, which wins over the Ingress",
            [
                ingress_with_tls(),
                set(&["publicURL=https://slack-oauth.example.org/"]),
            ]
            .concat(),
            "https://slack-oauth.example.org".into(),
        ),
        (
            "publicURL with a path, without an Ingress",
            set(&["publicURL=https://operator.example.com/slack"]),
            "https://operator.example.com/slack".into(),
        ),
        (
            "neither: the in-cluster Service",
            vec![],
            service_url.into(),
        ),
    ];
    for (case, values, public_url) in &cases {
        let notes = install_notes(values);
        let redirect = format!("{public_url}/oauth/callback");
        assert!(
            notes.contains(&format!("\n     {redirect}\n")),
            "{case}: the NOTES print the redirect URL {redirect}:\n{notes}"
        );
        assert!(
            notes.contains(
                "kubectl -n <namespace> get slackoauthgrant <name> -o jsonpath='{.status.authorizationURL}'"
            ),
            "{case}: the NOTES say how to get the authorization link:\n{notes}"
        );
        assert_eq!(
            notes.contains("WARNING"),
            public_url == service_url,
            "{case}: the NOTES warn exactly when browsers cannot reach the URL:\n{notes}"
        );
        // The operator is told the same URL, so the redirect_uri it sends Slack is the one
        // registered from the NOTES.
        let rendered = render("notes", "notes", values);
        assert_eq!(
            &flag(rendered.container(), "--public-url"),
            public_url,
            "{case}"
        );
    }

    // A publicURL on another host than the Ingress's is served by something in front, which the
    // NOTES tell where to forward to.
    let notes = install_notes(&cases[2].1);
    assert!(
        notes.contains(&format!(
            "must forward that URL to the Ingress as https://{HOST}/oauth/callback"
        )),
        "{notes}"
    );
    assert!(!install_notes(&cases[0].1).contains("must forward"));
}

/// The NOTES `helm install` prints for `values` (a client-side dry run: NOTES are not part of
/// `helm template`'s output).
fn install_notes(values: &[String]) -> String {
    let chart = chart();
    let mut args = vec![
        "install",
        "notes",
        chart.as_str(),
        "--namespace",
        "notes",
        "--dry-run=client",
    ];
    args.extend(values.iter().map(String::as_str));
    let output = helm(&args);
    match output.split_once("\nNOTES:\n") {
        Some((_, notes)) => notes.to_owned(),
        None => panic!("no NOTES in\n{output}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 6. The Deployment, the PodDisruptionBudget, the Ingress.

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn deployment_runs_two_restricted_replicas_probed_on_the_admin_port() {
    let rendered = render("deploy", "deploy", &[]);
    let deployment = rendered.one("Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2, "two replicas by default");

    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = rendered.container();
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"], json!({ "drop": ["ALL"] }));
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert!(security.get("privileged").is_none_or(|p| p == false));

    // The probes use the admin port, which is where the operator serves /healthz and /readyz:
    // check that with a non-default port, so a hard-coded 8081 anywhere would show.
    for (values, admin_port) in [(vec![], 8081), (set(&["service.adminPort=9091"]), 9091)] {
        let rendered = render("deploy", "deploy", &values);
        let container = rendered.container();
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        for probe in ["livenessProbe", "readinessProbe"] {
            assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
        }
        assert_eq!(container_port(container, "admin"), admin_port);
        assert_eq!(port_of(&flag(container, "--admin-addr")), admin_port);
        assert_ne!(
            container_port(container, "callback"),
            admin_port,
            "the callback (public) and admin ports differ"
        );
    }
}

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

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn pod_disruption_budget_is_rendered_only_with_more_than_one_replica() {
    for replicas in [0, 1, 2, 3] {
        let rendered = render("pdb", "pdb", &set(&[&format!("replicas={replicas}")]));
        let budgets = rendered.of_kind("PodDisruptionBudget");
        if replicas > 1 {
            assert_eq!(budgets.len(), 1, "replicas={replicas}");
            assert_eq!(budgets[0]["spec"]["minAvailable"], 1);
            assert_eq!(
                budgets[0]["spec"]["selector"],
                rendered.one("Deployment")["spec"]["selector"],
                "the budget covers the operator's pods"
            );
        } else {
            assert!(
                budgets.is_empty(),
                "replicas={replicas}: a budget would block every node drain"
            );
        }
    }
    let disabled = render(
        "pdb",
        "pdb",
        &set(&["replicas=3", "podDisruptionBudget.enabled=false"]),
    );
    assert!(disabled.of_kind("PodDisruptionBudget").is_empty());
}

/// The Ingress routes exactly one path to exactly the callback port, and the operator (the real
/// binary, with the public URL the chart gives it) answers that path there, and nothing else.
#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn ingress_exposes_only_the_callback_path_and_the_operator_answers_it() {
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
        assert_eq!(paths.len(), 1, "{case}: one path: {paths:#?}");
        let path = &paths[0];
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
