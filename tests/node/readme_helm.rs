//! The README's "Installing with Helm", run as printed on the node: every command of every
//! `console` block of that section, in order, in one shell, with the same names and namespaces
//! (release and namespace `slack-oauth-operator`, image
//! `registry.example.com/platform/slack-oauth-operator`, IngressClass `nginx`, host
//! `slack-oauth.example.com`, namespace `pingfederate`), its printed output matched as in the
//! walk-through's test (`cluster/readme.rs`). Only the block the README sets apart with
//! `<!-- not run by tests: why -->` is left out: the push to a registry.
//!
//! The environment is made to fit the README, not the other way round:
//! - the shell works in a copy of the repository (a user's clone, without `target/`), where the
//!   test writes `values-pingfederate.yaml` from the README's block that starts with that name;
//! - `make image` builds from the local stand-ins of the base images (`IMAGE_BASES=stand-in`,
//!   as the README says to where no registry is reachable) with the tests' cargo profile
//!   (`IMAGE_PROFILE=image-test`, whose layers `make test` has just built), both set in the
//!   shell's environment; the archive it prints is what the test loads into the node's
//!   containerd, in place of the push;
//! - PingFederate's namespace and its admin Secret exist before the install, as they would;
//! - Traefik serves the IngressClass `nginx`, and the test issues the certificate of the
//!   Ingress's `tls` Secret as cert-manager would, so the callback answers at
//!   `https://slack-oauth.example.com` (resolved to Traefik's node port).
//!
//! Between the install and the removal the test checks what the README promises: both operator
//! pods Ready from that image, the callback served through the Ingress and nothing else, and a
//! grant in `pingfederate` reconciled; the removal block then deletes that grant through the
//! operator's finalizer, the release and the CRD.
//!
//! The printed `helm install` creates the CRD (`crds.enabled` is the chart's default) and the
//! removal block deletes every grant in every namespace and the CRD, so this test needs the
//! cluster to itself: `make test` runs it first and alone on its fresh cluster with a node, and
//! skips it in its other runs. Run with the other node tests, it holds the cluster to itself
//! (`node::cluster_to_itself`: their releases wait, or it waits for them), and before it installs
//! it removes the CRD they applied, with the grants they left in namespaces being deleted.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        core::v1::{Namespace, Pod, Secret},
        networking::v1::Ingress,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;
use slack_oauth_operator::api::SlackOAuthGrant;

use crate::{
    ingress::Traefik,
    node::{self, PodLogs},
    release::{image_of, is_ready},
    support::{
        self, TempDir,
        readme_blocks::{ConsoleBlock, Shell, code_block, console_blocks},
    },
};

/// The README's names.
const SECTION: &str = "Installing with Helm";
const VALUES_BLOCK: &str = "# values-pingfederate.yaml";
const VALUES_FILE: &str = "values-pingfederate.yaml";
const RELEASE: &str = "slack-oauth-operator";
const NAMESPACE: &str = "slack-oauth-operator";
const PINGFEDERATE: &str = "pingfederate";
const PINGFEDERATE_ADMIN: &str = "pingfederate-admin";
const IMAGE: &str = "registry.example.com/platform/slack-oauth-operator";
const INGRESS_CLASS: &str = "nginx";
const HOST: &str = "slack-oauth.example.com";
const TLS_SECRET: &str = "slack-oauth-operator-tls";
const CRD: &str = "slackoauthgrants.slack-oauth-operator.io";
/// The walk-through's grant, applied in PingFederate's namespace ("Create grants as in the
/// walk-through").
const EXAMPLE: &str = "examples/pingfederate-workspace.yaml";
const GRANT: &str = "slack-scim";
const GRANT_CLIENT_SECRET: &str = "slack-scim-app";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the local cluster with a node, without the CRD: run `make test`"]
async fn the_helm_section_runs_as_printed_on_the_node() {
    let started = Instant::now();
    let _alone = node::cluster_to_itself().await;
    let node = node::node();
    let client = support::client().await;
    ensure_no_crd(&client).await;
    let _cleanup = Cleanup;

    let repo = support::repo_root();
    let readme = std::fs::read_to_string(repo.join("README.md")).expect("README.md");
    let blocks = console_blocks(&readme, SECTION);
    let not_run: Vec<&ConsoleBlock> = blocks.iter().filter(|b| b.not_run.is_some()).collect();
    assert!(
        not_run.len() == 1
            && not_run[0]
                .commands
                .iter()
                .all(|c| c.command.starts_with("hack/podman.sh push ")),
        "only the push to a registry is set apart from the tests: {not_run:#?}"
    );

    // What a user of this section already has: PingFederate's namespace and its admin
    // credentials, an Ingress controller for the class the values name, and a clone of the
    // repository with the values file in it.
    let secrets = Secrets::new();
    create_pingfederate(&client, &secrets.admin_password).await;
    let traefik = Traefik::deploy_serving(&client, Some(INGRESS_CLASS)).await;
    let dir = TempDir::new("readme-helm");
    let clone = dir.path.join("slack-oauth-operator");
    copy_repository(&repo, &clone);
    let values = code_block(&readme, SECTION, VALUES_BLOCK)
        .unwrap_or_else(|| panic!("the section's yaml block that starts with {VALUES_BLOCK:?}"));
    std::fs::write(clone.join(VALUES_FILE), values).expect("write the values file");
    let _logs = PodLogs::keep(NAMESPACE);

    let mut shell = Shell::start(
        &clone,
        &[
            ("IMAGE_BASES", Some("stand-in")),
            ("IMAGE_PROFILE", Some("image-test")),
            // So that the archive lands in the clone's target/, as it does for a user.
            ("CARGO_TARGET_DIR", None),
            ("IMAGE_ARCHIVE", None),
        ],
    );
    // `make image` rebuilds the operator's layer when the sources changed since `make test`
    // built it.
    shell.timeout = Duration::from_secs(900);
    let tag = env!("CARGO_PKG_VERSION");
    let (mut ran, mut installed, mut removed) = (0, false, false);
    for block in blocks.iter().filter(|b| b.not_run.is_none()) {
        for printed in &block.commands {
            let command = printed.command.as_str();
            if command.starts_with("kubectl delete slackoauthgrants ") {
                assert!(installed, "the removal follows the install");
                assert!(
                    grant_exists(&client).await,
                    "the grant is there to be deleted"
                );
            }
            let step = Instant::now();
            let output = shell.run_as_printed(printed, None, false, &[]).await;
            eprintln!(
                "readme-helm: `{}` in {:.1} s",
                command.lines().next().unwrap_or_default(),
                step.elapsed().as_secs_f64()
            );
            ran += 1;
            if command.starts_with("make image ") {
                // In place of the push: the archive `make image` printed, into the node.
                let archive = output
                    .lines()
                    .map(str::trim)
                    .rfind(|line| line.ends_with(".oci.tar"))
                    .expect("`make image` prints the archive it wrote")
                    .to_owned();
                load_into_node(&node.cluster_dir, &archive, &format!("{IMAGE}:{tag}")).await;
            } else if command.starts_with("helm install ") {
                installed = true;
                check_install(&client, &traefik, &format!("{IMAGE}:{tag}")).await;
                apply_grant(&client, &secrets.client_secret).await;
            } else if command.starts_with("kubectl delete slackoauthgrants ") {
                // kubectl waited for the operator's finalizer.
                assert!(!grant_exists(&client).await, "the grant is deleted");
            } else if command.starts_with("kubectl delete crd ") {
                removed = true;
            }
        }
    }
    assert!(
        installed && removed,
        "the section installs and removes the operator"
    );
    drop(shell);

    // Nothing of the release is left but its namespace (helm does not delete what
    // --create-namespace made), and the CRD is gone.
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    assert!(crds.get_opt(CRD).await.expect("read").is_none());
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pods
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the operator's pods were not removed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    delete_namespaces(&client).await;
    eprintln!(
        "readme-helm: ran {ran} commands of the Helm section as printed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The printed install must create the CRD, as on a first install. One left by other tests (or
/// an earlier run of this one) goes, once no grant is left: grants in namespaces being deleted
/// lose their finalizer, as no operator will ever finalize them (their tests are over); a grant
/// anywhere else means another test still uses the cluster.
async fn ensure_no_crd(client: &Client) {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    if crds.get_opt(CRD).await.expect("read CRDs").is_none() {
        return;
    }
    let namespaces = Api::<Namespace>::all(client.clone());
    let all_grants = Api::<SlackOAuthGrant>::all(client.clone());
    // An operator still running in a namespace being deleted may put its finalizer back until
    // its pod stops: hence the loop.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = all_grants
            .list(&ListParams::default())
            .await
            .expect("list grants")
            .items;
        if left.is_empty() {
            break;
        }
        let mut in_use = Vec::new();
        for grant in &left {
            let namespace = grant.namespace().unwrap_or_default();
            let ending = namespaces
                .get_opt(&namespace)
                .await
                .expect("read the namespace")
                .is_none_or(|n| n.metadata.deletion_timestamp.is_some());
            if !ending {
                in_use.push(format!("{namespace}/{}", grant.name_any()));
            } else if !grant.finalizers().is_empty() {
                let _ = Api::<SlackOAuthGrant>::namespaced(client.clone(), &namespace)
                    .patch(
                        &grant.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
                    )
                    .await;
            }
        }
        assert!(
            in_use.is_empty(),
            "this test installs the CRD with helm and deletes every grant, so it needs the \
             cluster to itself: `make test` runs it first, alone (or `cargo test --test node -- \
             --include-ignored readme_helm::`); grants in use: {in_use:?}"
        );
        assert!(
            Instant::now() < deadline,
            "grants in namespaces being deleted were left after 120 s: {:?}",
            left.iter()
                .map(|g| (g.namespace(), g.name_any(), g.finalizers().to_vec()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    crds.delete(CRD, &DeleteParams::default())
        .await
        .expect("delete the CRD");
    while crds.get_opt(CRD).await.expect("read CRDs").is_some() {
        assert!(Instant::now() < deadline, "the CRD was not deleted");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    delete_namespaces(client).await;
}

/// The secret values the test makes, recorded on drop for the final log scan
/// (`hack/scan-logs.py`).
struct Secrets {
    admin_password: String,
    client_secret: String,
}

impl Secrets {
    fn new() -> Self {
        use rand::RngExt;
        let mut rng = rand::rng();
        let mut random = || {
            (0..32)
                .map(|_| format!("{:x}", rng.random_range(0..16u8)))
                .collect::<String>()
        };
        Self {
            admin_password: random(),
            client_secret: random(),
        }
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("secrets");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(
            dir.join("node-readme-helm.txt"),
            format!("{}\n{}\n", self.admin_password, self.client_secret),
        );
    }
}

/// PingFederate's namespace, with the admin credentials Secret the section labels and annotates.
async fn create_pingfederate(client: &Client, password: &str) {
    let namespace: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": PINGFEDERATE } })).expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("create PingFederate's namespace");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": PINGFEDERATE_ADMIN },
        "stringData": { "username": "administrator", "password": password }
    }))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), PINGFEDERATE)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create PingFederate's admin Secret");
}

/// The repository as a user's clone has it: everything but what builds and tests leave.
fn copy_repository(repo: &Path, into: &Path) {
    std::fs::create_dir_all(into).expect("the clone's directory");
    for entry in std::fs::read_dir(repo).expect("read the repository") {
        let entry = entry.expect("an entry");
        let name = entry.file_name();
        if [".git", "target", ".cluster"].contains(&name.to_string_lossy().as_ref()) {
            continue;
        }
        support::must(
            "cp",
            &[
                "-a".as_ref(),
                entry.path().as_os_str(),
                into.join(&name).as_os_str(),
            ],
            None,
        );
    }
}

/// `hack/node.sh load-image`: the archive into the node's containerd, under the name it holds,
/// which must be `reference`.
async fn load_into_node(cluster_dir: &Path, archive: &str, reference: &str) {
    let index = support::must("tar", &["-xOf", archive, "index.json"], None);
    let index: serde_json::Value = serde_json::from_str(&index).expect("index.json");
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"].as_str(),
        Some(reference),
        "the archive `make image` printed holds the image the chart is pointed at"
    );
    let (cluster_dir, archive) = (cluster_dir.to_owned(), archive.to_owned());
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new(support::repo_root().join("hack/node.sh"))
            .args(["load-image", &archive])
            .env("CLUSTER_DIR", &cluster_dir)
            .output()
            .expect("run hack/node.sh load-image");
        assert!(
            output.status.success(),
            "hack/node.sh load-image failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    })
    .await
    .expect("the image loaded");
}

/// After the printed install (which does not wait): both operator pods Ready from the image, the
/// Ingress of class `nginx` for the README's host, and the callback, and only the callback,
/// served through it over https.
async fn check_install(client: &Client, traefik: &Traefik, image: &str) {
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE);
    let selector = ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}"));
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let all = pods.list(&selector).await.expect("list the pods").items;
        if all.len() == 2 && all.iter().all(|p| is_ready(p) && image_of(p) == image) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the release's two pods were not Ready from {image} within 180 s: {:?}",
            all.iter()
                .map(|p| (p.name_any(), image_of(p), is_ready(p)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let ingress = Api::<Ingress>::namespaced(client.clone(), NAMESPACE)
        .get(RELEASE)
        .await
        .expect("the chart's Ingress");
    let spec = ingress.spec.expect("a spec");
    assert_eq!(spec.ingress_class_name.as_deref(), Some(INGRESS_CLASS));
    let tls = spec.tls.unwrap_or_default();
    assert!(
        tls.iter()
            .any(|t| t.secret_name.as_deref() == Some(TLS_SECRET)
                && t.hosts.as_deref() == Some(&[HOST.to_owned()][..])),
        "the Ingress takes its certificate from {TLS_SECRET}: {tls:?}"
    );

    // cert-manager's part: the annotation asks it for a certificate in the tls Secret.
    let dir = TempDir::new("readme-helm-tls");
    let ca = issue_certificate(client, &dir.path).await;
    let https = reqwest::Client::builder()
        .resolve(
            HOST,
            SocketAddr::from((node::node().ip, traefik.tls_node_port)),
        )
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("the CA"))
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an https client");
    // Traefik answers once it has read the Ingress and the Secret (until then it has no route,
    // or only its own certificate, which the client refuses).
    let callback = format!("https://{HOST}/oauth/callback");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (status, body) = loop {
        let last = match https.get(&callback).send().await {
            Ok(response) if response.status() != 404 => {
                let status = response.status().as_u16();
                break (status, response.text().await.unwrap_or_default());
            }
            Ok(response) => format!("HTTP {}", response.status()),
            Err(error) => crate::release::chain(&error),
        };
        assert!(
            Instant::now() < deadline,
            "{callback} was not served through the Ingress within 60 s: {last}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        (400..500).contains(&status) && body.contains("<html"),
        "the operator answers a callback without a code with its own page: {status} {body}"
    );
    // Health checks and metrics stay inside the cluster.
    let healthz = https
        .get(format!("https://{HOST}/healthz"))
        .send()
        .await
        .expect("Traefik answers");
    assert_eq!(healthz.status(), 404);
    assert_eq!(
        healthz.text().await.unwrap_or_default().trim(),
        "404 page not found",
        "Traefik's own 404"
    );
}

/// A CA, and a certificate for the README's host signed by it in the Ingress's `tls` Secret, as
/// cert-manager would issue it. Returns the CA, in PEM.
async fn issue_certificate(client: &Client, dir: &Path) -> String {
    let at = |file: &str| dir.join(file).to_string_lossy().into_owned();
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-sha256",
        "-days",
        "1",
        "-subj",
        "/CN=readme-helm CA",
    ];
    ca.extend(key);
    let (ca_key, ca_crt) = (at("ca.key"), at("ca.crt"));
    ca.extend(["-keyout", &ca_key, "-out", &ca_crt]);
    support::must("openssl", &ca, None);
    let subject = format!("/CN={HOST}");
    let (tls_key, tls_csr, tls_crt, ext) =
        (at("tls.key"), at("tls.csr"), at("tls.crt"), at("tls.ext"));
    let mut csr = vec!["req", "-new", "-subj", &subject];
    csr.extend(key);
    csr.extend(["-keyout", &tls_key, "-out", &tls_csr]);
    support::must("openssl", &csr, None);
    std::fs::write(&ext, format!("subjectAltName=DNS:{HOST}\n")).expect("the extensions");
    support::must(
        "openssl",
        &[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "1",
            "-in",
            &tls_csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-extfile",
            &ext,
            "-out",
            &tls_crt,
        ],
        None,
    );
    let read = |path: &str| std::fs::read_to_string(path).expect("a PEM file");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": TLS_SECRET },
        "type": "kubernetes.io/tls",
        "stringData": { "tls.crt": read(&tls_crt), "tls.key": read(&tls_key) }
    }))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the Ingress's tls Secret");
    read(&ca_crt)
}

/// The walk-through's grant and its app's client Secret, in PingFederate's namespace; the
/// operator the section installed reconciles it (a link for the Slack owner).
async fn apply_grant(client: &Client, client_secret: &str) {
    Api::<Secret>::namespaced(client.clone(), PINGFEDERATE)
        .create(
            &PostParams::default(),
            &support::shared_client_secret(GRANT_CLIENT_SECRET, client_secret),
        )
        .await
        .expect("create the app's client Secret");
    support::kubectl(&["-n", PINGFEDERATE, "apply", "-f", EXAMPLE], None);
    let grants = Api::<SlackOAuthGrant>::namespaced(client.clone(), PINGFEDERATE);
    support::wait_for_grant_within(&grants, GRANT, Duration::from_secs(60), |g| {
        g.status
            .as_ref()
            .is_some_and(|s| s.authorization_url.is_some())
    })
    .await;
}

async fn grant_exists(client: &Client) -> bool {
    Api::<SlackOAuthGrant>::namespaced(client.clone(), PINGFEDERATE)
        .get_opt(GRANT)
        .await
        .expect("read the grant")
        .is_some()
}

/// Deletes the README's two namespaces and waits until they are gone.
async fn delete_namespaces(client: &Client) {
    let namespaces = Api::<Namespace>::all(client.clone());
    for name in [NAMESPACE, PINGFEDERATE] {
        if namespaces.get_opt(name).await.expect("read").is_some() {
            namespaces
                .delete(name, &DeleteParams::default())
                .await
                .expect("delete the namespace");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for name in [NAMESPACE, PINGFEDERATE] {
        while namespaces.get_opt(name).await.expect("read").is_some() {
            assert!(
                Instant::now() < deadline,
                "namespace {name} was not deleted within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// After a failure, whatever the section would have removed goes, so that the next run (and the
/// tests after this one) start clean; after a success there is nothing left to do.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let script = format!(
            "\"$HELM\" uninstall {RELEASE} -n {NAMESPACE} --ignore-not-found
             \"$KUBECTL\" -n {PINGFEDERATE} get slackoauthgrants -o name 2>/dev/null \
               | xargs -r \"$KUBECTL\" -n {PINGFEDERATE} patch --type=merge -p '{{\"metadata\":{{\"finalizers\":null}}}}'
             \"$KUBECTL\" delete crd {CRD} --ignore-not-found --wait=false
             \"$KUBECTL\" delete namespace {NAMESPACE} {PINGFEDERATE} --ignore-not-found --wait=false"
        );
        let _ = std::process::Command::new("bash")
            .args(["-c", &script])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}
