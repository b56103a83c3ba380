//! The Helm chart as helm renders it, with no control plane: it lints and renders with every
//! example values file, its schema refuses values that cannot work, its CRD is the generated one,
//! the NOTES print the redirect URL, the Deployment is restricted and probed on the admin port,
//! and its RBAC is exactly docs/security.md's rules. What only the API server can show (a
//! server-side dry run, installs, upgrades, RBAC as enforced) is in the cluster tier,
//! `tests/cluster/chart.rs`.
//!
//! These run in a plain `cargo test`, and need the `helm` binary named by `HELM`: `make test`
//! installs it (hack/tools.sh) and exports it. Without it they fail, saying how to get it; they
//! never pass.

#[path = "cluster/support/mod.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use serde_json::{Value, json};
use slack_oauth_operator::{crdgen::CRD_PATH, run::SHUTDOWN_BUDGET};

use support::{
    chart::{
        HOST, Rendered, chart, container_port, example_values_files, flag, ingress_with_tls,
        object_id, port_of, render, set, watching,
    },
    helm, must_fail, tool,
};

#[test]
fn missing_helm_fails_with_instructions() {
    let error = support::tool_from("HELM", None).expect_err("no helm without HELM");
    assert!(error.contains("HELM is not set"), "{error}");
    assert!(error.contains("hack/tools.sh"), "{error}");
    assert!(error.contains("make test"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// 1. Lint, render and the values schema.

#[test]
fn chart_lints_strictly_and_renders_with_the_default_values_and_every_example_values_file() {
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

#[test]
fn values_schema_refuses_values_that_cannot_work_and_names_the_field() {
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
        let error = must_fail(tool("HELM"), &args);
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

#[test]
fn chart_crd_is_the_generated_crd_and_follows_crds_enabled_and_crds_keep() {
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

// ---------------------------------------------------------------------------------------------
// 3. NOTES and the public URL.

#[test]
fn notes_print_the_redirect_url_and_the_command_that_prints_the_authorization_link() {
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
            notes.contains(&format!(
                "{public_url}/oauth/start/<token>; each stays valid for 168h"
            )),
            "{case}: the NOTES say where approval links are served, and for how long:\n{notes}"
        );
        assert!(
            notes.contains(
                "kubectl -n <namespace> get slackoauthgrant <name> -o jsonpath='{.status.authorizationURL}'"
            ),
            "{case}: the NOTES say how to get the authorization link:\n{notes}"
        );
        assert_eq!(
            notes.contains("WARNING: neither publicURL nor an Ingress"),
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
            "must forward /oauth/callback and /oauth/start/ to the Ingress as https://{HOST}/oauth/callback\n   and https://{HOST}/oauth/start/, the only paths the operator answers."
        )),
        "{notes}"
    );
    // The Ingress routes exactly those two paths, and nothing else (health, metrics).
    let rendered = render("notes", "notes", &cases[0].1);
    let ingress = rendered_object(&rendered, "Ingress notes/notes-slack-oauth-operator");
    let paths: Vec<(&str, &str)> = ingress["spec"]["rules"][0]["http"]["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap_or_default(),
                p["pathType"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        paths,
        [("/oauth/start/", "Prefix"), ("/oauth/callback", "Exact")]
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
#[test]
fn notes_warn_while_the_image_is_the_unpublished_default() {
    let warning = "WARNING: image.repository is the chart's default";
    let notes = install_notes(&[]);
    assert!(notes.contains(warning), "{notes}");
    assert!(notes.contains("make image"), "{notes}");
    let notes = install_notes(&set(&[
        "image.repository=registry.example.com/platform/slack-oauth-operator",
    ]));
    assert!(!notes.contains(warning), "{notes}");
}

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
// 4. The Deployment and the PodDisruptionBudget.

#[test]
fn deployment_runs_two_restricted_replicas_probed_on_the_admin_port() {
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

    // The lifecycle settings reach the operator, with its own defaults unless set.
    for (flag_name, default) in [
        ("--token-check-interval", "1h"),
        ("--revoke-grace", "10m"),
        ("--slack-scim-url", "https://api.slack.com/scim/v2"),
        ("--max-concurrent-reconciles", "16"),
    ] {
        assert_eq!(flag(container, flag_name), default, "{flag_name}");
    }
    let tuned = render(
        "deploy",
        "deploy",
        &set(&[
            "tokenCheckInterval=15m",
            "revokeGrace=0s",
            "slack.scimURL=https://api.slack-gov.com/scim/v2",
            "maxConcurrentReconciles=4",
        ]),
    );
    assert_eq!(flag(tuned.container(), "--max-concurrent-reconciles"), "4");
    assert_eq!(flag(tuned.container(), "--token-check-interval"), "15m");
    assert_eq!(flag(tuned.container(), "--revoke-grace"), "0s");
    assert_eq!(
        flag(tuned.container(), "--slack-scim-url"),
        "https://api.slack-gov.com/scim/v2"
    );

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

#[test]
fn pod_disruption_budget_is_rendered_only_with_more_than_one_replica() {
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

// ---------------------------------------------------------------------------------------------
// 5. RBAC: docs/security.md's model, as the chart renders it.

/// What the operator needs in a namespace whose grants it reconciles, and nowhere else.
fn grant_rules() -> Value {
    json!([
        {
            "apiGroups": ["slack-oauth-operator.io"],
            "resources": ["slackoauthgrants"],
            "verbs": ["get", "list", "watch", "patch"],
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
fn own_secrets_rules() -> Value {
    json!([
        { "apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch", "update", "delete"] },
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
#[test]
fn rbac_grants_the_documented_rules_in_the_watched_namespaces_and_cluster_wide_only_when_asked() {
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
            ("own-secrets", own_secrets_rules()),
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
            "{case}: the operator's state key is the chart's"
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

/// `rolloutRestart.enabled` adds get and patch on workloads to the grant rules, in each watched
/// namespace and cluster-wide alike, and nothing else; off (the default), no rule names them.
#[test]
fn rollout_restart_rbac_is_added_only_when_enabled() {
    let release = "rollout";
    let fullname = "rollout-slack-oauth-operator";
    let workloads = json!({
        "apiGroups": ["apps"],
        "resources": ["deployments", "statefulsets"],
        "verbs": ["get", "patch"],
    });
    let mut with_workloads = grant_rules();
    with_workloads
        .as_array_mut()
        .expect("rules")
        .push(workloads);
    let off = render(release, release, &[]);
    assert_eq!(
        rendered_object(&off, &format!("Role {release}/{fullname}"))["rules"],
        grant_rules()
    );
    let on = render(release, release, &set(&["rolloutRestart.enabled=true"]));
    assert_eq!(
        rendered_object(&on, &format!("Role {release}/{fullname}"))["rules"],
        with_workloads
    );
    let wide = render(
        release,
        release,
        &set(&["rolloutRestart.enabled=true", "clusterWide=true"]),
    );
    assert_eq!(
        rendered_object(&wide, &format!("ClusterRole /{release}:{fullname}"))["rules"],
        with_workloads
    );
}
