//! `helm install` on the node: two Ready replicas, one leader, the chart's ServiceAccount and
//! nothing more, and a grant completed in a real browser through the Service.

use std::time::Duration;

use k8s_openapi::api::{
    core::v1::Pod,
    rbac::v1::{ClusterRoleBinding, RoleBinding},
};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::{
    node,
    release::{self, FULL_NAME, Release},
    support,
};

/// The operator process of `pod`, found on the host by its pod's UID in its cgroup path.
fn operator_process(pod: &Pod) -> u32 {
    let uid = pod.metadata.uid.clone().expect("a pod UID");
    // cgroupfs paths carry the UID with underscores for dashes (kubepods/.../pod<uid>/<id>).
    let marker = format!("pod{}", uid);
    let marker_underscored = format!("pod{}", uid.replace('-', "_"));
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !cmdline.starts_with(b"/usr/local/bin/slack-oauth-operator\0") {
            continue;
        }
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if cgroup.contains(&marker) || cgroup.contains(&marker_underscored) {
            return pid;
        }
    }
    panic!("no operator process of pod {} on this host", pod.name_any());
}

fn status_field(pid: u32, name: &str) -> Vec<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster with a node: run `make test`"]
async fn helm_install_runs_two_replicas_ready_through_their_probes_and_one_holds_the_lease() {
    let r = Release::install("install-ready", json!({}), &[]).await;
    let deployment = r.deployment().await;
    let status = deployment.status.expect("status");
    assert_eq!(status.ready_replicas, Some(2), "{status:?}");
    assert_eq!(status.available_replicas, Some(2), "{status:?}");

    let pods = r.pods().await;
    assert_eq!(pods.len(), 2);
    for pod in &pods {
        assert!(release::is_ready(pod), "{} is Ready", pod.name_any());
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some(node::node().name.as_str()));
        let container = &spec.containers[0];
        let probe_path = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
            probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.clone())
        };
        assert_eq!(
            probe_path(&container.readiness_probe).as_deref(),
            Some("/readyz")
        );
        assert_eq!(
            probe_path(&container.liveness_probe).as_deref(),
            Some("/healthz")
        );
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default();
        assert_eq!(statuses[0].restart_count, 0, "{}", pod.name_any());
        assert_eq!(statuses[0].image, container.image.clone().expect("image"));

        // The container as the kernel runs it: the chart's securityContext, for real.
        let pid = operator_process(pod);
        assert_eq!(
            status_field(pid, "Uid"),
            ["65532"; 4],
            "uid of {}",
            pod.name_any()
        );
        assert_eq!(status_field(pid, "Gid"), ["65532"; 4]);
        assert_eq!(status_field(pid, "CapEff"), ["0000000000000000"]);
        assert_eq!(status_field(pid, "NoNewPrivs"), ["1"]);
        assert_eq!(
            status_field(pid, "Seccomp"),
            ["2"],
            "RuntimeDefault seccomp filter"
        );
        let mounts = std::fs::read_to_string(format!("/proc/{pid}/mounts")).expect("mounts");
        let root = mounts
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some("/"))
            .expect("a root mount");
        let options = root.split_whitespace().nth(3).unwrap_or_default();
        assert!(
            options.split(',').any(|o| o == "ro"),
            "read-only root filesystem: {root}"
        );
    }

    // One leader: the Lease names it, and it alone says so in its metrics.
    let mut leader = None;
    for _ in 0..100 {
        leader = r.leader().await;
        if leader.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let leader = leader.expect("a Lease holder");
    let names: Vec<String> = pods.iter().map(ResourceExt::name_any).collect();
    assert!(names.contains(&leader), "{leader} is one of {names:?}");
    let mut leading = Vec::new();
    for _ in 0..50 {
        leading.clear();
        for pod in &pods {
            if release::leads(&r.metrics(pod).await) {
                leading.push(pod.name_any());
            }
        }
        if leading == [leader.clone()] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(leading, [leader], "exactly the Lease holder leads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster with a node: run `make test`"]
async fn the_pods_reach_the_api_server_through_the_service_as_the_charts_service_account_only() {
    let r = Release::install("install-identity", json!({}), &[]).await;
    let audit = support::audit_log();
    let from = support::audit_offset(&audit);
    // A whole authorization, so that every permission the operator uses is exercised.
    r.apply_grant("scim", "slack-token").await;
    let link = r.link("scim", Duration::from_secs(60)).await;
    let answer = r.approve(&link).await.expect("the callback is served");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let token = r.token("slack-token", Duration::from_secs(30)).await;
    assert_eq!(
        token.as_deref(),
        r.issued_tokens().first().map(String::as_str)
    );

    let pods = r.pods().await;
    let pod_names: Vec<String> = pods.iter().map(ResourceExt::name_any).collect();
    for pod in &pods {
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.service_account_name.as_deref(), Some(FULL_NAME));
        let env: Vec<String> = spec.containers[0]
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(
            !env.iter().any(|e| e == "KUBECONFIG"),
            "in-cluster configuration, no kubeconfig: {env:?}"
        );
    }

    // The audit log: who made the operator's requests, with which token, from where.
    let user = format!("system:serviceaccount:{}:{FULL_NAME}", r.ns.name);
    let node = node::node();
    let mut seen = 0;
    for _ in 0..50 {
        let events: Vec<serde_json::Value> = support::audit_events_since(&audit, from)
            .into_iter()
            .filter(|e| e["user"]["username"] == user.as_str())
            .collect();
        seen = events.len();
        if events
            .iter()
            .any(|e| e["objectRef"]["resource"] == "secrets" && e["verb"] == "create")
        {
            for event in &events {
                let pod_name = event["user"]["extra"]["authentication.kubernetes.io/pod-name"][0]
                    .as_str()
                    .unwrap_or_default();
                assert!(
                    pod_names.iter().any(|n| n == pod_name),
                    "every request carries the bound token of one of the pods {pod_names:?}: {event}"
                );
                assert_eq!(
                    event["sourceIPs"][0],
                    node.ip.to_string(),
                    "from the node, through the kubernetes Service: {event}"
                );
                let code = event["responseStatus"]["code"].as_u64().unwrap_or(200);
                assert!(
                    code != 401 && code != 403,
                    "the chart's RBAC allows everything the operator does: {event}"
                );
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        seen > 0,
        "the audit log shows requests by {user} (the pods' ServiceAccount)"
    );

    // Nothing but the chart binds that ServiceAccount to anything.
    let is_ours = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount"
                && s.name == FULL_NAME
                && s.namespace.as_deref() == Some(r.ns.name.as_str())
        })
    };
    let from_chart = |labels: &std::collections::BTreeMap<String, String>| {
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str)
            == Some("Helm")
            && labels.get("app.kubernetes.io/instance").map(String::as_str)
                == Some(release::RELEASE)
    };
    let role_bindings = Api::<RoleBinding>::all(r.client.clone())
        .list(&Default::default())
        .await
        .expect("list RoleBindings");
    let ours: Vec<&RoleBinding> = role_bindings
        .items
        .iter()
        .filter(|b| is_ours(&b.subjects))
        .collect();
    assert!(!ours.is_empty(), "the chart binds its Roles");
    for binding in ours {
        assert!(from_chart(binding.labels()), "{:?}", binding.metadata);
        assert_eq!(binding.namespace().as_deref(), Some(r.ns.name.as_str()));
    }
    let cluster_bindings = Api::<ClusterRoleBinding>::all(r.client.clone())
        .list(&Default::default())
        .await
        .expect("list ClusterRoleBindings");
    assert!(
        !cluster_bindings.items.iter().any(|b| is_ours(&b.subjects)),
        "no ClusterRoleBinding names the ServiceAccount by default"
    );
    let other_namespace = support::run(
        support::tool("KUBECTL"),
        &[
            "auth",
            "can-i",
            "list",
            "secrets",
            "--namespace",
            "default",
            "--as",
            &user,
        ],
        None,
    );
    assert_eq!(
        other_namespace.stdout.trim(),
        "no",
        "{}",
        other_namespace.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster with a node: run `make test`"]
async fn a_grant_completes_in_a_real_browser_through_the_service() {
    let r = Release::install("install-browser", json!({}), &[]).await;
    r.apply_grant("scim", "slack-token").await;
    let link = r.link("scim", Duration::from_secs(60)).await;

    let support::BrowserPage {
        heading,
        text: page,
        url: landed_on,
    } = support::approve_in_browser(&link).await;

    assert_eq!(heading, "Slack approval complete", "page: {page}");
    assert!(
        landed_on.as_str().starts_with(&r.public_url),
        "landed on {landed_on}"
    );
    let issued = r.issued_tokens();
    assert_eq!(issued.len(), 1, "Slack issued one token");
    assert!(!page.contains(&issued[0]), "the page never shows the token");
    assert_eq!(
        r.token("slack-token", Duration::from_secs(30))
            .await
            .as_deref(),
        Some(issued[0].as_str())
    );
}
