//! A release of the chart installed with helm on the node, in a namespace of the test's own, with
//! a Slack emulator on the host and a relay to the Service's node port in front of it:
//!
//! ```text
//! browser/test --http--> 127.0.0.1:<public port> (relay) --> <node ip>:<node port> (Service)
//!                                                              --> an operator pod
//! operator pod --http--> 127.0.0.1:<emulator port> (loopback-to-host) --> the emulator (host)
//! ```
//!
//! The operator takes a plain-http Slack URL only on a loopback address, so the emulator's URL
//! is a loopback one in the pods too: the node sends those ports to the host
//! (`hack/cni/loopback-to-host`).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::Deployment,
    coordination::v1::Lease,
    core::v1::{Pod, Secret, Service},
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use slack_emulator::{Approver, Decision};
use slack_oauth_operator::api::SlackOAuthGrant;

use crate::{
    node::{self, PodLogs, Relay},
    support::{self, TempDir, TestNamespace},
};

/// The release's name, so every object is called `slack-oauth-operator` (the chart's full name
/// when the release name contains the chart's).
pub const RELEASE: &str = "slack-oauth-operator";
/// The chart's ServiceAccount, Lease, Deployment and Service.
pub const FULL_NAME: &str = "slack-oauth-operator";
pub const CLIENT_SECRET: &str = "slack-app";
pub const TEAM: &str = "T0ACME";

/// The Slack emulator on a host port that pods reach over loopback. On drop it records every
/// secret value it saw or issued for the final log scan (`hack/scan-logs.py`).
pub struct NodeSlack {
    pub emulator: slack_emulator::SlackEmulator,
    pub client_id: String,
    pub client_secret: String,
    name: String,
}

impl NodeSlack {
    async fn start(name: &str, public_url: &str) -> Self {
        let listener = node::host_port_listener();
        let addr = listener.local_addr().expect("address");
        drop(listener);
        let emulator = slack_emulator::SlackEmulator::start_on(addr)
            .await
            .expect("start the Slack emulator");
        let (client_id, client_secret) = {
            use rand::RngExt;
            let mut rng = rand::rng();
            (
                format!(
                    "{}.{}",
                    rng.random_range(1_000_000_000u64..9_999_999_999),
                    rng.random_range(1_000_000_000u64..9_999_999_999)
                ),
                (0..32)
                    .map(|_| format!("{:x}", rng.random_range(0..16u8)))
                    .collect::<String>(),
            )
        };
        emulator.register_app(slack_emulator::App::new(
            &client_id,
            &client_secret,
            &format!("{public_url}/oauth/callback"),
        ));
        emulator.set_approver(Approver::workspace_owner(TEAM, "Acme"));
        Self {
            emulator,
            client_id,
            client_secret,
            name: name.to_owned(),
        }
    }

    fn secret_values(&self) -> Vec<String> {
        let mut values = vec![self.client_secret.clone()];
        for token in self.emulator.issued_tokens() {
            values.push(token.token.clone());
            values.extend(token.refresh_token.clone());
        }
        for call in self.emulator.calls() {
            values.extend(call.params.get("code").cloned());
        }
        values
    }
}

impl Drop for NodeSlack {
    fn drop(&mut self) {
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("secrets");
        let _ = std::fs::create_dir_all(&dir);
        let unique: u64 = {
            use rand::RngExt;
            rand::rng().random()
        };
        let _ = std::fs::write(
            dir.join(format!("node-{}-{unique:x}.txt", self.name)),
            self.secret_values().join("\n"),
        );
    }
}

/// What a callback answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

pub struct Release {
    pub ns: TestNamespace,
    pub client: Client,
    pub slack: NodeSlack,
    /// `http://127.0.0.1:<relay port>`: what browsers reach, and the base of the redirect URI.
    pub public_url: String,
    pub grants: Api<SlackOAuthGrant>,
    pub secrets: Api<Secret>,
    pub pods_api: Api<Pod>,
    pub http: reqwest::Client,
    /// The values file every helm command of this release uses.
    pub values: std::path::PathBuf,
    _relay: Relay,
    _logs: PodLogs,
    _dir: TempDir,
    _shared: tokio::sync::RwLockReadGuard<'static, ()>,
}

/// Runs helm off the async runtime, so that the emulator and the relay keep serving meanwhile.
pub async fn helm(args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || support::helm(&args))
        .await
        .expect("helm did not panic")
}

impl Release {
    /// Installs the chart (`helm install --wait`) with the image built here, `extra` values
    /// (YAML, merged over the defaults below) and `flags` for helm; the relay goes to the
    /// chart's Service, of type NodePort.
    pub async fn install(test: &str, extra: serde_json::Value, flags: &[&str]) -> Self {
        Self::install_behind(test, extra, flags, None).await
    }

    /// Like [`Release::install`], with the chart's Ingress served by `ingress` in front: the
    /// public URL is then `http://localhost:<relay port>` (an Ingress host cannot be an IP
    /// address), and the relay goes to the Ingress controller's node port.
    pub async fn install_behind(
        test: &str,
        extra: serde_json::Value,
        flags: &[&str],
        ingress: Option<&crate::ingress::Traefik>,
    ) -> Self {
        let shared = node::share_cluster().await;
        let node = node::node();
        let tag = tokio::task::spawn_blocking(node::load_image)
            .await
            .expect("the image loaded");
        let client = support::client().await;
        support::install_crd(&client).await;
        let ns = TestNamespace::create(&client, test).await;
        let public = std::net::TcpListener::bind("127.0.0.1:0").expect("a public port");
        let public_port = public.local_addr().expect("address").port();
        let public_url = match ingress {
            None => format!("http://127.0.0.1:{public_port}"),
            Some(_) => format!("http://localhost:{public_port}"),
        };
        let slack = NodeSlack::start(test, &public_url).await;
        let mut values = json!({
            "image": { "repository": crate::image::NAME, "tag": tag, "pullPolicy": "Never" },
            "publicURL": public_url,
            "slack": { "url": slack.emulator.url(), "apiURL": slack.emulator.api_url() },
            "service": { "type": "NodePort" },
            // The tests apply the committed CRD themselves (support::install_crd); several
            // releases share it.
            "crds": { "enabled": false },
            "requireTeamID": true,
            "log": { "level": "info,slack_oauth_operator=debug" },
        });
        if let Some(ingress) = ingress {
            merge(
                &mut values,
                json!({
                    "service": { "type": "ClusterIP" },
                    "ingress": { "enabled": true, "className": ingress.class, "host": "localhost" },
                }),
            );
        }
        merge(&mut values, extra);
        let dir = TempDir::new(&format!("release-{test}"));
        let values_file = dir.path.join("values.yaml");
        std::fs::write(
            &values_file,
            serde_json::to_string_pretty(&values).expect("values"),
        )
        .expect("write the values");
        let logs = PodLogs::keep(&ns.name);

        let mut args: Vec<String> = [
            "install",
            RELEASE,
            &support::chart::chart(),
            "--namespace",
            &ns.name,
            "--values",
            &values_file.to_string_lossy(),
            "--wait",
            "--timeout",
            "180s",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(flags.iter().map(|s| (*s).to_owned()));
        let started = Instant::now();
        helm(args).await;
        eprintln!("{test}: helm install --wait took {:?}", started.elapsed());

        let node_port = match ingress {
            Some(ingress) => ingress.node_port,
            None => {
                let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
                let service = services.get(FULL_NAME).await.expect("the chart's Service");
                let port = service
                    .spec
                    .and_then(|s| s.ports)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|p| p.name.as_deref() == Some("callback"))
                    .and_then(|p| p.node_port)
                    .expect("a node port for the callback");
                u16::try_from(port).expect("a port")
            }
        };
        let relay = Relay::start(public, SocketAddr::from((node.ip, node_port))).await;

        let release = Self {
            grants: Api::namespaced(client.clone(), &ns.name),
            secrets: Api::namespaced(client.clone(), &ns.name),
            pods_api: Api::namespaced(client.clone(), &ns.name),
            // A connection per request, as a browser coming back from Slack has no connection
            // to reuse: a pooled one may be closed by a pod that is stopping just as a request
            // goes out on it, a race of HTTP keep-alive that browsers answer by retrying.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            values: values_file,
            ns,
            client,
            slack,
            public_url,
            _relay: relay,
            _logs: logs,
            _dir: dir,
            _shared: shared,
        };
        release.create_client_secret().await;
        release.wait_until_served().await;
        release
    }

    /// Waits until the operator answers at the public URL, through the relay and the node
    /// port: kube-proxy programs a new Service's node port a moment after the Service exists
    /// (until then connections are refused), and an Ingress controller answers 404 until it has
    /// read the Ingress.
    async fn wait_until_served(&self) {
        let started = Instant::now();
        let url = format!("{}/oauth/callback", self.public_url);
        let mut last = String::new();
        while started.elapsed() < Duration::from_secs(60) {
            match self.http.get(&url).send().await {
                Ok(response) if !matches!(response.status().as_u16(), 404 | 502 | 503 | 504) => {
                    return;
                }
                Ok(response) => last = format!("HTTP {}", response.status()),
                Err(error) => last = chain(&error),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the Service's node port did not answer within 60 s: {last}");
    }

    /// `helm <command> slack-oauth-operator --namespace <ns> <args>`.
    pub async fn helm(&self, command: &str, args: &[&str]) -> String {
        let mut all = vec![
            command.to_owned(),
            RELEASE.to_owned(),
            "--namespace".to_owned(),
            self.ns.name.clone(),
        ];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        helm(all).await
    }

    async fn create_client_secret(&self) {
        self.secrets
            .create(
                &PostParams::default(),
                &support::shared_client_secret(CLIENT_SECRET, &self.slack.client_secret),
            )
            .await
            .expect("create the app's client Secret");
    }

    /// The release's pods, not yet deleted, oldest first.
    pub async fn pods(&self) -> Vec<Pod> {
        let mut pods: Vec<Pod> = self
            .pods_api
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")))
            .await
            .expect("list the pods")
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        pods.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
        pods
    }

    /// The Lease's holder.
    pub async fn leader(&self) -> Option<String> {
        Api::<Lease>::namespaced(self.client.clone(), &self.ns.name)
            .get_opt(FULL_NAME)
            .await
            .expect("read the Lease")
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    }

    pub async fn deployment(&self) -> Deployment {
        Api::<Deployment>::namespaced(self.client.clone(), &self.ns.name)
            .get(FULL_NAME)
            .await
            .expect("the chart's Deployment")
    }

    /// A pod's `/metrics`, read from its admin port (the host routes to the node's pods).
    pub async fn metrics(&self, pod: &Pod) -> String {
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .expect("a pod IP");
        self.http
            .get(format!("http://{ip}:8081/metrics"))
            .send()
            .await
            .expect("the admin port answers")
            .text()
            .await
            .expect("metrics text")
    }

    /// Applies a grant for the app, writing its token to the Secret `secret`.
    pub async fn apply_grant(&self, name: &str, secret: &str) {
        let grant = json!({
            "apiVersion": "slack-oauth-operator.io/v1alpha1",
            "kind": "SlackOAuthGrant",
            "metadata": { "name": name },
            "spec": {
                "clientID": self.slack.client_id,
                "clientSecretRef": { "name": CLIENT_SECRET },
                "teamID": TEAM,
                "secret": { "name": secret }
            }
        });
        self.grants
            .patch(
                name,
                &PatchParams::apply("slack-oauth-operator-node-tests").force(),
                &Patch::Apply(&grant),
            )
            .await
            .expect("apply the grant");
    }

    /// Waits up to `within` for the grant's link.
    pub async fn link(&self, grant: &str, within: Duration) -> String {
        support::wait_for_grant_within(&self.grants, grant, within, |g| {
            g.status
                .as_ref()
                .is_some_and(|s| s.authorization_url.is_some())
        })
        .await
        .status
        .and_then(|s| s.authorization_url)
        .expect("a link")
    }

    /// A Slack owner clicks Allow, and the browser follows Slack's redirect to the public URL,
    /// through the relay and the Service to a pod. An error means the callback was not served.
    pub async fn approve(&self, link: &str) -> Result<Answer, String> {
        let consent = support::open_link(&self.http, link).await;
        let back = self
            .slack
            .emulator
            .authorize(&consent, Decision::Allow)
            .await
            .map_err(|e| format!("Slack's consent page refused the link: {e:?}"))?;
        if !back.starts_with(&self.public_url) {
            return Err(format!("Slack redirected elsewhere: {back}"));
        }
        let response = self
            .http
            .get(&back)
            .send()
            .await
            .map_err(|e| format!("the callback was not served: {}", chain(&e)))?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|e| format!("the callback's page did not arrive: {}", chain(&e)))?;
        Ok(Answer { status, body })
    }

    /// The token in `secret` (key SLACK_ACCESS_TOKEN), waiting up to `within` for it.
    pub async fn token(&self, secret: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(secret)) = self.secrets.get_opt(secret).await
                && let Some(value) = secret.data.and_then(|mut d| d.remove("SLACK_ACCESS_TOKEN"))
            {
                return Some(String::from_utf8(value.0).expect("utf-8"));
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every user token the emulator issued, in order.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.slack
            .emulator
            .issued_tokens()
            .into_iter()
            .map(|t| t.token)
            .collect()
    }

    /// Waits up to `within` until the release has `replicas` Ready pods, all running `image`,
    /// and no other pod.
    pub async fn wait_pods(&self, replicas: usize, image: &str, within: Duration) -> Vec<Pod> {
        let deadline = Instant::now() + within;
        loop {
            let all = self
                .pods_api
                .list(
                    &ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")),
                )
                .await
                .expect("list the pods")
                .items;
            let settled = all.len() == replicas
                && all.iter().all(|p| {
                    is_ready(p) && p.metadata.deletion_timestamp.is_none() && image_of(p) == image
                });
            if settled {
                return all;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the release did not settle on {replicas} Ready pods of {image} within {within:?}: {:?}",
                    all.iter()
                        .map(|p| (p.name_any(), image_of(p), is_ready(p)))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// An error with its causes, for messages.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

impl Drop for Release {
    /// The namespace goes, release and pods with it, so that later tests (and a second run on a
    /// developer's cluster) do not share the node with this one's pods.
    fn drop(&mut self) {
        let _ = std::process::Command::new(support::tool("KUBECTL"))
            .args([
                "delete",
                "namespace",
                &self.ns.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Whether the pod's Ready condition is True (the kubelet sets it from the readiness probe).
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The image of the pod's operator container.
pub fn image_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// Whether the pod says it reconciles, by its `leader` metric.
pub fn leads(metrics: &str) -> bool {
    metrics
        .lines()
        .any(|l| l.trim() == "slack_oauth_operator_leader 1")
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(base), serde_json::Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}
