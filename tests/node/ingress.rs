//! Traefik, an Ingress controller built from its Go module (`hack/build-traefik.sh`), run on the
//! node in a namespace of its own, for a test to put in front of a release: it serves the
//! Ingresses of its own IngressClass on a node port, over http and, with the certificates their
//! `tls` Secrets hold, over https.

use std::process::Command;

use k8s_openapi::api::core::v1::Service;
use kube::{Api, Client};
use serde_json::json;

use crate::{
    node,
    support::{self, TestNamespace},
};

pub struct Traefik {
    pub ns: TestNamespace,
    /// The IngressClass it serves (cluster-scoped, so named after its namespace unless a test
    /// names it).
    pub class: String,
    /// The node port of its `web` entry point (http).
    pub node_port: u16,
    /// The node port of its `websecure` entry point (https).
    pub tls_node_port: u16,
    /// Its cluster-scoped RBAC objects, named after its namespace.
    rbac: String,
}

/// Builds Traefik's image (once, cached) and loads it into the node; returns its name.
fn load_image() -> String {
    let output = Command::new(support::repo_root().join("hack/build-traefik.sh"))
        .arg("--oci-archive")
        .output()
        .expect("run hack/build-traefik.sh");
    assert!(
        output.status.success(),
        "hack/build-traefik.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let archive = String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let loaded = Command::new(support::repo_root().join("hack/node.sh"))
        .args(["load-image", &archive])
        .env("CLUSTER_DIR", &node::node().cluster_dir)
        .output()
        .expect("run hack/node.sh load-image");
    assert!(
        loaded.status.success(),
        "loading Traefik's image failed: {}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    let index = support::must("tar", &["-xOf", &archive, "index.json"], None);
    let index: serde_json::Value = serde_json::from_str(&index).expect("index.json");
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .expect("the archive names its image")
        .to_owned()
}

impl Traefik {
    /// Deploys Traefik for an IngressClass of its own and waits until it is Ready.
    pub async fn deploy(client: &Client) -> Self {
        Self::deploy_serving(client, None).await
    }

    /// Deploys Traefik and waits until it is Ready; it serves the IngressClass `class`, which it
    /// creates (and deletes on drop), or one of its own.
    pub async fn deploy_serving(client: &Client, class: Option<&str>) -> Self {
        let image = tokio::task::spawn_blocking(load_image)
            .await
            .expect("the image loaded");
        let ns = TestNamespace::create(client, "traefik").await;
        let rbac = format!("traefik-{}", ns.name);
        let class = class.map_or_else(|| rbac.clone(), str::to_owned);
        let name = "traefik";
        let labels = json!({ "app.kubernetes.io/name": "traefik" });
        let manifests = json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                { "apiVersion": "v1", "kind": "ServiceAccount",
                  "metadata": { "name": name, "namespace": ns.name } },
                // What Traefik's Kubernetes Ingress provider reads (its documented RBAC).
                { "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                  "metadata": { "name": rbac },
                  "rules": [
                    { "apiGroups": [""], "resources": ["services", "endpoints", "secrets", "nodes"],
                      "verbs": ["get", "list", "watch"] },
                    { "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                      "verbs": ["get", "list", "watch"] },
                    { "apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"],
                      "verbs": ["get", "list", "watch"] },
                    { "apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"],
                      "verbs": ["update"] }
                  ] },
                { "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                  "metadata": { "name": rbac },
                  "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": rbac },
                  "subjects": [ { "kind": "ServiceAccount", "name": name, "namespace": ns.name } ] },
                { "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                  "metadata": { "name": class },
                  "spec": { "controller": "traefik.io/ingress-controller" } },
                { "apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": { "name": name, "namespace": ns.name },
                  "spec": {
                    "replicas": 1,
                    "selector": { "matchLabels": labels },
                    "template": {
                      "metadata": { "labels": labels },
                      "spec": {
                        "serviceAccountName": name,
                        "securityContext": { "runAsNonRoot": true, "runAsUser": 65532,
                                             "seccompProfile": { "type": "RuntimeDefault" } },
                        "containers": [{
                          "name": "traefik",
                          "image": image,
                          "imagePullPolicy": "Never",
                          "args": [
                            "--entryPoints.web.address=:8000",
                            // Every router on it gets TLS, with the certificate of the
                            // Ingress's `tls` Secret that matches the name the client asks for.
                            "--entryPoints.websecure.address=:8443",
                            "--entryPoints.websecure.http.tls=true",
                            "--ping=true",
                            "--providers.kubernetesingress=true",
                            format!("--providers.kubernetesingress.ingressClass={class}"),
                            "--global.checkNewVersion=false",
                            "--global.sendAnonymousUsage=false",
                            "--log.level=INFO"
                          ],
                          "ports": [ { "name": "web", "containerPort": 8000 },
                                     { "name": "websecure", "containerPort": 8443 },
                                     { "name": "ping", "containerPort": 8080 } ],
                          "readinessProbe": { "httpGet": { "path": "/ping", "port": "ping" },
                                              "periodSeconds": 2 },
                          "securityContext": { "allowPrivilegeEscalation": false,
                                               "readOnlyRootFilesystem": true,
                                               "capabilities": { "drop": ["ALL"] } }
                        }]
                      }
                    }
                  } },
                { "apiVersion": "v1", "kind": "Service",
                  "metadata": { "name": name, "namespace": ns.name },
                  "spec": { "type": "NodePort", "selector": labels,
                            "ports": [ { "name": "web", "port": 80, "targetPort": "web" },
                                       { "name": "websecure", "port": 443, "targetPort": "websecure" } ] } }
            ]
        });
        let manifests = manifests.to_string();
        tokio::task::spawn_blocking(move || {
            support::kubectl(&["apply", "-f", "-"], Some(&manifests));
        })
        .await
        .expect("kubectl apply");
        let namespace = ns.name.clone();
        tokio::task::spawn_blocking(move || {
            support::kubectl(
                &[
                    "--namespace",
                    &namespace,
                    "rollout",
                    "status",
                    "deployment/traefik",
                    "--timeout=120s",
                ],
                None,
            );
        })
        .await
        .expect("kubectl rollout status");
        let service = Api::<Service>::namespaced(client.clone(), &ns.name)
            .get(name)
            .await
            .expect("Traefik's Service");
        let ports = service.spec.and_then(|s| s.ports).unwrap_or_default();
        let node_port = |name: &str| {
            let port = ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name))
                .and_then(|p| p.node_port)
                .unwrap_or_else(|| panic!("a node port for {name}"));
            u16::try_from(port).expect("a port")
        };
        Self {
            node_port: node_port("web"),
            tls_node_port: node_port("websecure"),
            ns,
            class,
            rbac,
        }
    }
}

impl Drop for Traefik {
    fn drop(&mut self) {
        let kubectl = support::tool("KUBECTL");
        for args in [
            vec![
                "delete",
                "namespace",
                &self.ns.name,
                "--wait=false",
                "--ignore-not-found",
            ],
            vec!["delete", "ingressclass", &self.class, "--ignore-not-found"],
            vec![
                "delete",
                "clusterrole,clusterrolebinding",
                &self.rbac,
                "--ignore-not-found",
            ],
        ] {
            let _ = Command::new(&kubectl)
                .args(&args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}
