//! The Helm chart: lint, render, schema, the CRD it carries, server-side dry run of everything it
//! renders, and idempotent installs and upgrades.

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Output, Stdio},
};

use serde_json::Value;

use crate::support::{self, TestNamespace};

fn chart() -> String {
    support::repo_root()
        .join("charts/slack-oauth-operator")
        .to_string_lossy()
        .into_owned()
}

fn tool(program: &PathBuf, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run a tool");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("tool output")
}

/// Runs a tool that must succeed and returns its standard output.
fn ok(program: &PathBuf, args: &[&str], stdin: Option<&str>) -> String {
    let output = tool(program, args, stdin);
    assert!(
        output.status.success(),
        "{} {args:?} failed:\n{}\n{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a tool that must fail and returns its standard error.
fn fails(program: &PathBuf, args: &[&str]) -> String {
    let output = tool(program, args, None);
    assert!(
        !output.status.success(),
        "{} {args:?} should have failed",
        program.display()
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn helm() -> PathBuf {
    support::tool("HELM")
}

fn kubectl() -> PathBuf {
    support::tool("KUBECTL")
}

/// `helm template` with `args`, as parsed documents.
fn render(namespace: &str, args: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut all = vec!["template", "t", chart.as_str(), "--namespace", namespace];
    all.extend_from_slice(args);
    let text = ok(&helm(), &all, None);
    serde_saphyr::from_multiple::<Value>(&text)
        .expect("rendered YAML")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn of_kind<'a>(documents: &'a [Value], kind: &str) -> Vec<&'a Value> {
    documents.iter().filter(|d| d["kind"] == kind).collect()
}

fn example_values() -> Vec<String> {
    let mut files: Vec<String> =
        std::fs::read_dir(support::repo_root().join("charts/slack-oauth-operator/ci"))
            .expect("ci values")
            .map(|e| e.expect("entry").path().to_string_lossy().into_owned())
            .filter(|p| p.ends_with(".yaml"))
            .collect();
    files.sort();
    files
}

#[test]
#[ignore = "needs the local control plane: run `make test`"]
fn chart_lints_strictly_with_the_default_and_every_example_values_file() {
    let chart = chart();
    ok(&helm(), &["lint", "--strict", &chart], None);
    let examples = example_values();
    assert!(!examples.is_empty());
    for values in &examples {
        ok(&helm(), &["lint", "--strict", &chart, "-f", values], None);
        assert!(!render("default", &["-f", values]).is_empty());
    }
}

#[test]
#[ignore = "needs the local control plane: run `make test`"]
fn values_schema_refuses_values_that_cannot_work() {
    let chart = chart();
    let error = fails(
        &helm(),
        &["template", "t", &chart, "--set-string", "replicas=two"],
    );
    assert!(error.contains("replicas"), "{error}");
    let error = fails(
        &helm(),
        &["template", "t", &chart, "--set", "ingress.enabled=true"],
    );
    assert!(error.contains("host"), "{error}");
    let error = fails(&helm(), &["template", "t", &chart, "--set", "replica=3"]);
    assert!(error.contains("replica"), "{error}");
    let error = fails(
        &helm(),
        &["template", "t", &chart, "--set", "log.format=xml"],
    );
    assert!(error.contains("format"), "{error}");
}

#[test]
#[ignore = "needs the local control plane: run `make test`"]
fn chart_crd_is_the_generated_crd() {
    let committed =
        std::fs::read_to_string(support::repo_root().join(slack_oauth_operator::crdgen::CRD_PATH))
            .expect("crd");
    let committed: Value = serde_saphyr::from_str(&committed).expect("crd yaml");
    let rendered = render("default", &[]);
    let crds = of_kind(&rendered, "CustomResourceDefinition");
    assert_eq!(crds.len(), 1);
    assert_eq!(
        crds[0]["spec"], committed["spec"],
        "the chart's CRD differs from crds/: run `make generate`"
    );
    assert_eq!(
        crds[0]["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );

    assert!(
        of_kind(
            &render("default", &["--set", "crds.enabled=false"]),
            "CustomResourceDefinition"
        )
        .is_empty()
    );
    let not_kept = render("default", &["--set", "crds.keep=false"]);
    assert!(of_kind(&not_kept, "CustomResourceDefinition")[0]["metadata"]["annotations"].is_null());
}

#[test]
#[ignore = "needs the local control plane: run `make test`"]
fn deployment_is_restricted_probed_and_configured_from_values() {
    let rendered = render(
        "ops",
        &[
            "--set",
            "ingress.enabled=true",
            "--set",
            "ingress.host=slack.example.com",
        ],
    );
    let deployment = of_kind(&rendered, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.contains(&"--public-url=http://slack.example.com"),
        "{args:?}"
    );
    assert_eq!(of_kind(&rendered, "PodDisruptionBudget").len(), 1);

    // With TLS the public URL is https; an explicit publicURL wins.
    let tls = render(
        "ops",
        &[
            "--set",
            "ingress.enabled=true",
            "--set",
            "ingress.host=slack.example.com",
            "--set",
            "ingress.tls[0].secretName=tls",
        ],
    );
    let args = of_kind(&tls, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
        .to_string();
    assert!(
        args.contains("--public-url=https://slack.example.com"),
        "{args}"
    );
    let explicit = render(
        "ops",
        &[
            "--set",
            "publicURL=https://op.example.com/slack",
            "--set",
            "replicas=1",
        ],
    );
    let args =
        of_kind(&explicit, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
            .to_string();
    assert!(
        args.contains("--public-url=https://op.example.com/slack"),
        "{args}"
    );
    assert!(
        of_kind(&explicit, "PodDisruptionBudget").is_empty(),
        "no PDB with one replica"
    );

    // The Ingress routes only the callback.
    let ingress = of_kind(&tls, "Ingress")[0];
    let paths = &ingress["spec"]["rules"][0]["http"]["paths"];
    assert_eq!(paths.as_array().map(Vec::len), Some(1));
    assert_eq!(paths[0]["path"], "/oauth/callback");
    assert_eq!(paths[0]["backend"]["service"]["port"]["name"], "callback");
}

#[test]
#[ignore = "needs the local control plane: run `make test`"]
fn notes_print_the_redirect_url_and_how_to_get_the_link() {
    let chart = chart();
    let output = ok(
        &helm(),
        &[
            "install",
            "t",
            &chart,
            "--dry-run=client",
            "--set",
            "ingress.enabled=true",
            "--set",
            "ingress.host=slack.example.com",
            "--set",
            "ingress.tls[0].secretName=tls",
        ],
        None,
    );
    assert!(
        output.contains("https://slack.example.com/oauth/callback"),
        "{output}"
    );
    assert!(
        output.contains("jsonpath='{.status.authorizationURL}'"),
        "{output}"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn every_rendered_manifest_passes_a_server_side_dry_run() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let ns = TestNamespace::create(&client, "chart-dry-run").await;
    let watched = TestNamespace::create(&client, "chart-dry-run-watched").await;
    let has_service_monitors = ok(
        &kubectl(),
        &[
            "api-resources",
            "--api-group=monitoring.coreos.com",
            "-o",
            "name",
        ],
        None,
    )
    .contains("servicemonitors");
    let everything = [
        "--set",
        "ingress.enabled=true",
        "--set",
        "ingress.host=slack.example.com",
        "--set",
        "ingress.tls[0].secretName=tls",
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "crds.enabled=false",
    ];
    for watch in [None, Some(watched.name.as_str())] {
        let mut args: Vec<String> = everything.iter().map(|s| s.to_string()).collect();
        if let Some(namespace) = watch {
            args.extend(["--set".into(), format!("watchNamespaces={{{namespace}}}")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let documents = render(&ns.name, &args);
        let mut kinds: Vec<String> = documents
            .iter()
            .map(|d| d["kind"].as_str().unwrap_or_default().to_owned())
            .collect();
        kinds.sort();
        kinds.dedup();
        for expected in [
            "Deployment",
            "Service",
            "Ingress",
            "ServiceAccount",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "Role",
            "RoleBinding",
        ] {
            assert!(
                kinds.iter().any(|k| k == expected),
                "{expected} not rendered: {kinds:?}"
            );
        }
        for document in &documents {
            // The ServiceMonitor's CRD (Prometheus Operator) is not part of this control plane.
            if document["kind"] == "ServiceMonitor" && !has_service_monitors {
                continue;
            }
            let manifest = serde_json::to_string(document).expect("json");
            ok(
                &kubectl(),
                &[
                    "apply",
                    "--server-side",
                    "--dry-run=server",
                    "--field-manager=chart-test",
                    "-f",
                    "-",
                ],
                Some(&manifest),
            );
        }
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn installing_and_upgrading_twice_changes_nothing() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let ns = TestNamespace::create(&client, "chart-idempotent").await;
    let chart = chart();
    let release = ns.name.as_str();
    let values = [
        "--set",
        "crds.enabled=false",
        "--set",
        "ingress.enabled=true",
        "--set",
        "ingress.host=slack.example.com",
    ];
    let install = |verb: &str| {
        let mut args = vec![verb, release, chart.as_str(), "--namespace", release];
        if verb == "upgrade" {
            args.push("--install");
        }
        args.extend_from_slice(&values);
        ok(&helm(), &args, None);
        ok(
            &helm(),
            &["get", "manifest", release, "--namespace", release],
            None,
        )
    };
    let versions = |manifest: &str| -> Vec<(String, String)> {
        let listed: Value = serde_json::from_str(&ok(
            &kubectl(),
            &["get", "-f", "-", "-o", "json"],
            Some(manifest),
        ))
        .expect("kubectl get json");
        let items = listed["items"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| vec![listed.clone()]);
        items
            .iter()
            .map(|o| {
                let id = format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or_default(),
                    o["metadata"]["name"].as_str().unwrap_or_default()
                );
                (
                    id,
                    o["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    };
    let first = install("install");
    let second = install("upgrade");
    let before = versions(&second);
    let third = install("upgrade");
    assert_eq!(
        first, second,
        "an upgrade with the same values renders the same manifests"
    );
    assert_eq!(second, third);
    // The objects in the cluster are untouched by a no-op upgrade: no write, no diff.
    assert_eq!(
        before,
        versions(&third),
        "a no-op upgrade changed objects in the cluster"
    );
    assert!(before.len() >= 7, "{before:?}");
    // A second install of the same release is refused, leaving it as it was.
    let mut again = vec!["install", release, chart.as_str(), "--namespace", release];
    again.extend_from_slice(&values);
    fails(&helm(), &again);
    ok(
        &helm(),
        &["uninstall", release, "--namespace", release],
        None,
    );
}
