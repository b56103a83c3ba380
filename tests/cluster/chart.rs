//! The Helm chart as a user meets it: it lints and renders with every example values file, its
//! schema refuses values that cannot work, its CRD is the generated one, everything it renders is
//! accepted by the real API server, installs and upgrades are idempotent, the NOTES print the
//! redirect URL, the operator it deploys is restricted, probed and reachable only through its
//! callback, and its RBAC is docs/security.md's model as the API server enforces it: Secrets only
//! in the watched namespaces, the state key alone in the release namespace, and every namespace
//! only with `clusterWide`.
//!
//! Each test that installs a release names it after its own namespace (or installs it in a
//! namespace of its own), so releases of tests running side by side never share an object. The
//! CRD is shared by every test in this binary, so only one test lets Helm own it; the others
//! install with `crds.enabled=false`.

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
use slack_oauth_operator::{crdgen::CRD_PATH, run::SHUTDOWN_BUDGET};

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
            "CustomResourceDefinition",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ],
        "what the default values render: Roles, and no ClusterRole"
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
        (
            "clusterWide together with watchNamespaces (which would it be?)",
            file(
                "cluster-wide.yaml",
                "clusterWide: true\nwatchNamespaces: [pingfederate]\n",
            ),
            &[
                SCHEMA,
                "/clusterWide",
                "value must be false",
                "/watchNamespaces",
            ],
        ),
        (
            "a clusterWide that is not a boolean",
            vec!["--set-string".into(), "clusterWide=true".into()],
            &[SCHEMA, "/clusterWide", "want boolean"],
        ),
        (
            "a requireTeamID that is not a boolean",
            vec!["--set-string".into(), "requireTeamID=false".into()],
            &[SCHEMA, "/requireTeamID", "want boolean"],
        ),
        (
            "a grace period within the operator's shutdown budget",
            set(&[&format!(
                "terminationGracePeriodSeconds={}",
                SHUTDOWN_BUDGET.as_secs()
            )]),
            &[SCHEMA, "/terminationGracePeriodSeconds", "minimum"],
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
    // Cluster-wide access stays explicit even without the schema: the template refuses an
    // ambiguous scope rather than guess one.
    refuses(
        &["template", "refused", "--skip-schema-validation"],
        "clusterWide with watchNamespaces, schema skipped",
        &set(&["clusterWide=true", "watchNamespaces={pingfederate}"]),
        &["clusterWide", "cannot be combined with watchNamespaces"],
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
        // The leader-election and state-key Roles in the release namespace, and the grant
        // rules either in each watched namespace only or, when asked, cluster-wide.
        let mut expected = vec![
            format!("Role {}/{fullname}-leader-election", ns.name),
            format!("RoleBinding {}/{fullname}-leader-election", ns.name),
            format!("Role {}/{fullname}-state-key", ns.name),
            format!("RoleBinding {}/{fullname}-state-key", ns.name),
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

    // They say where grants are reconciled, and that the client Secret must opt in.
    let opt_in = "kubectl -n <namespace> label secret <client secret> slack-oauth-operator.io/shared-with-grants=true";
    for (values, scope) in [
        (
            vec![],
            "reconciles grants in its own namespace only,\n   notes ",
        ),
        (
            watching(&["team-a", "team-b"]),
            "reconciles grants in team-a, team-b (watchNamespaces)",
        ),
        (
            set(&["clusterWide=true"]),
            "reconciles grants in every namespace (clusterWide: it may read every Secret",
        ),
    ] {
        let notes = install_notes(&values);
        assert!(notes.contains(scope), "{scope:?} in\n{notes}");
        assert!(notes.contains(opt_in), "{notes}");
    }
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

    // Kubernetes kills the pod after the grace period, so it must outlast the operator's budget
    // for storing or revoking the tokens in flight at SIGTERM.
    let budget = SHUTDOWN_BUDGET.as_secs();
    assert_eq!(pod["terminationGracePeriodSeconds"], 75);
    assert!(75 > budget, "the shutdown budget is {budget} s");
    let just_enough = render(
        "deploy",
        "deploy",
        &set(&[&format!("terminationGracePeriodSeconds={}", budget + 1)]),
    );
    assert_eq!(
        just_enough.one("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        budget + 1
    );
    assert_eq!(flag(container, "--require-team-id"), "false");
    let pinned = render("deploy", "deploy", &set(&["requireTeamID=true"]));
    assert_eq!(flag(pinned.container(), "--require-team-id"), "true");

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

// ---------------------------------------------------------------------------------------------
// 7. RBAC: docs/security.md's model, rendered and as the API server enforces it.

/// What the operator needs in a namespace whose grants it reconciles, and nowhere else.
fn grant_rules() -> Value {
    json!([
        {
            "apiGroups": ["slack-oauth-operator.io"],
            "resources": ["slackoauthgrants"],
            "verbs": ["get", "list", "watch"],
        },
        {
            "apiGroups": ["slack-oauth-operator.io"],
            "resources": ["slackoauthgrants/status"],
            "verbs": ["get", "update", "patch"],
        },
        // No delete (owner references collect token Secrets), no patch.
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["get", "list", "watch", "create", "update"],
        },
        {
            "apiGroups": ["events.k8s.io"],
            "resources": ["events"],
            "verbs": ["create", "patch"],
        },
    ])
}

/// The state key in the release namespace: that one Secret by name, and create for the first
/// start (which RBAC cannot limit by name).
fn state_key_rules(secret: &str) -> Value {
    json!([
        { "apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret], "verbs": ["get"] },
        { "apiGroups": [""], "resources": ["secrets"], "verbs": ["create"] },
    ])
}

fn leader_election_rules() -> Value {
    json!([{
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "create", "patch"],
    }])
}

/// The rendered object `Kind namespace/name`.
fn rendered_object<'a>(rendered: &'a Rendered, id: &str) -> &'a Value {
    rendered
        .0
        .iter()
        .find(|d| object_id(d) == id)
        .unwrap_or_else(|| panic!("no {id} in {:#?}", rendered.names()))
}

/// Panics unless the binding `binding` (`Kind namespace/name`) binds `role_kind` `role` to the
/// service account `namespace/account`, and only to it.
fn assert_binds(
    rendered: &Rendered,
    binding: &str,
    role_kind: &str,
    role: &str,
    account: (&str, &str),
) {
    let binding_object = rendered_object(rendered, binding);
    assert_eq!(
        binding_object["roleRef"],
        json!({ "apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role }),
        "{binding}"
    );
    assert_eq!(
        binding_object["subjects"],
        json!([{ "kind": "ServiceAccount", "namespace": account.0, "name": account.1 }]),
        "{binding}"
    );
}

/// Every rule the chart renders is exactly docs/security.md's: the grant rules in each watched
/// namespace (the release namespace by default) and nowhere else, the Lease and the state key in
/// the release namespace, a ClusterRole only with `clusterWide`, and the operator told to watch
/// exactly the namespaces it has Roles in.
#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn rbac_grants_the_documented_rules_in_the_watched_namespaces_and_cluster_wide_only_when_asked()
 {
    let release = "rbac";
    let fullname = "rbac-slack-oauth-operator";
    let state_key = format!("{fullname}-state-key");
    let account = (release, fullname);
    // (case, values, the watched namespaces; None for clusterWide)
    let mut cases: Vec<(String, Vec<String>, Option<Vec<String>>)> = vec![
        (
            "the defaults: the release namespace only".into(),
            vec![],
            Some(vec![release.into()]),
        ),
        (
            "two namespaces, not the release namespace".into(),
            watching(&["team-a", "team-b"]),
            Some(vec!["team-a".into(), "team-b".into()]),
        ),
        (
            "the release namespace among others".into(),
            watching(&[release, "team-a"]),
            Some(vec![release.into(), "team-a".into()]),
        ),
        ("clusterWide".into(), set(&["clusterWide=true"]), None),
    ];
    for file in example_values_files() {
        let values: Value = serde_saphyr::from_str(
            &std::fs::read_to_string(&file).expect("read an example values file"),
        )
        .expect("the example values file parses");
        let listed: Vec<String> = values["watchNamespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect();
        let watched = if listed.is_empty() {
            vec![release.to_owned()]
        } else {
            listed
        };
        cases.push((
            file.display().to_string(),
            vec!["-f".to_owned(), file.to_string_lossy().into_owned()],
            Some(watched),
        ));
    }

    for (case, values, watched) in &cases {
        let rendered = render(release, release, values);
        let mut expected = Vec::new();
        for (suffix, rules) in [
            ("leader-election", leader_election_rules()),
            ("state-key", state_key_rules(&state_key)),
        ] {
            let role = format!("{fullname}-{suffix}");
            let role_id = format!("Role {release}/{role}");
            assert_eq!(
                rendered_object(&rendered, &role_id)["rules"],
                rules,
                "{case}: {role_id}"
            );
            let binding = format!("RoleBinding {release}/{role}");
            assert_binds(&rendered, &binding, "Role", &role, account);
            expected.extend([role_id, binding]);
        }
        let container = rendered.container();
        assert_eq!(
            flag(container, "--state-key-secret"),
            state_key,
            "{case}: the operator reads the one Secret its Role names"
        );
        let watch_flags: Vec<&str> = container["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|arg| arg.starts_with("--watch-namespaces"))
            .collect();
        match watched {
            Some(namespaces) => {
                for namespace in namespaces {
                    let role_id = format!("Role {namespace}/{fullname}");
                    assert_eq!(
                        rendered_object(&rendered, &role_id)["rules"],
                        grant_rules(),
                        "{case}: {role_id}"
                    );
                    let binding = format!("RoleBinding {namespace}/{fullname}");
                    assert_binds(&rendered, &binding, "Role", fullname, account);
                    expected.extend([role_id, binding]);
                }
                assert_eq!(
                    watch_flags,
                    [format!("--watch-namespaces={}", namespaces.join(","))],
                    "{case}: the operator watches exactly where its Roles are"
                );
            }
            None => {
                let name = format!("{release}:{fullname}");
                let role_id = format!("ClusterRole /{name}");
                assert_eq!(
                    rendered_object(&rendered, &role_id)["rules"],
                    grant_rules(),
                    "{case}: the same rules, cluster-wide"
                );
                let binding = format!("ClusterRoleBinding /{name}");
                assert_binds(&rendered, &binding, "ClusterRole", &name, account);
                expected.extend([role_id, binding]);
                assert!(
                    watch_flags.is_empty(),
                    "{case}: no --watch-namespaces, so every namespace: {watch_flags:?}"
                );
            }
        }
        expected.sort();
        let rbac: Vec<String> = rendered
            .names()
            .into_iter()
            .filter(|n| n.starts_with("Role") || n.starts_with("ClusterRole"))
            .collect();
        assert_eq!(rbac, expected, "{case}: these RBAC objects and no other");
    }

    // Cluster-scoped names carry the release namespace: two releases of one name in two
    // namespaces neither clash nor take over each other's binding.
    let cluster_scoped = |namespace: &str| -> Vec<String> {
        render("twin", namespace, &set(&["clusterWide=true"]))
            .names()
            .into_iter()
            .filter(|n| n.starts_with("Cluster"))
            .collect()
    };
    let (first, second) = (cluster_scoped("team-a"), cluster_scoped("team-b"));
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(
        first.iter().all(|n| !second.contains(n)),
        "{first:?} / {second:?}"
    );

    // Every rule says why (the comment line above it).
    let chart = chart();
    for values in [vec![], set(&["clusterWide=true"])] {
        let mut args = vec![
            "template",
            release,
            chart.as_str(),
            "--show-only",
            "templates/rbac.yaml",
        ];
        args.extend(values.iter().map(String::as_str));
        let text = helm(&args);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let rules = lines
            .iter()
            .filter(|l| l.starts_with("- apiGroups:"))
            .count();
        assert!(rules >= 7, "{rules} rules in\n{text}");
        for (number, pair) in lines.windows(2).enumerate() {
            if pair[1].starts_with("- apiGroups:") {
                assert!(
                    pair[0].starts_with('#'),
                    "the rule at line {} has no comment saying why:\n{text}",
                    number + 2
                );
            }
        }
    }
}

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
        run("KUBECTL", &all, None).1
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
        ("release", own, Get(&state_key), true),
        ("release", own, Get(probe), false),
        ("release", own, List, false),
        ("release", own, Watch, false),
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
        // The state key is created on the first start (create cannot be limited by name), and
        // never changed or deleted.
        ("release", own, Create(written), true),
        ("release", own, Update(&state_key), false),
        ("release", own, Patch(&state_key), false),
        ("release", own, Delete(&state_key), false),
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
