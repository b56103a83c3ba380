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

/// A free loopback port. Another process could take it before it is used, which on a test
/// machine is rare enough; the ports are below the ephemeral range only by chance.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Where tests keep operator logs, for the final scan for secrets (`hack/scan-logs.py`).
pub fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("operator-logs");
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}

/// How to start an operator process.
pub struct Launch<'a> {
    /// Names its log file.
    pub name: &'a str,
    /// The one namespace it reconciles (`--watch-namespaces`).
    pub watch_namespace: &'a str,
    /// Where its leader Lease lives.
    pub lease_namespace: &'a str,
    pub callback_port: u16,
    /// Defaults to `http://127.0.0.1:<callback_port>`; replicas share one.
    pub public_url: Option<&'a str>,
    pub slack_url: &'a str,
    pub slack_api_url: &'a str,
    /// Another identity than the tests' admin, for RBAC tests.
    pub kubeconfig: Option<&'a Path>,
    pub extra: &'a [&'a str],
}

/// The operator binary, run as a separate process with real flags, logging JSON to a file.
pub struct Operator {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>`: the public URL, and so the base of the redirect URI.
    pub public_url: String,
    pub admin_url: String,
    pub log: PathBuf,
}

impl Operator {
    /// Starts the operator against the control plane in `KUBECONFIG` and Slack at `slack_url`
    /// (web) and `slack_api_url`, and waits until it is ready. It reconciles only `namespace`
    /// (and keeps its leader Lease there), so tests running side by side stay apart.
    pub async fn start(
        name: &str,
        namespace: &str,
        slack_url: &str,
        slack_api_url: &str,
        extra: &[&str],
    ) -> Self {
        Self::start_on(
            name,
            namespace,
            free_port(),
            slack_url,
            slack_api_url,
            extra,
        )
        .await
    }

    /// Like [`Operator::start`], on a given callback port (to restart "the same" operator).
    pub async fn start_on(
        name: &str,
        namespace: &str,
        callback_port: u16,
        slack_url: &str,
        slack_api_url: &str,
        extra: &[&str],
    ) -> Self {
        Self::launch(Launch {
            name,
            watch_namespace: namespace,
            lease_namespace: namespace,
            callback_port,
            public_url: None,
            slack_url,
            slack_api_url,
            kubeconfig: None,
            extra,
        })
        .await
    }

    /// Starts the operator with every setting spelled out.
    pub async fn launch(launch: Launch<'_>) -> Self {
        let admin_port = free_port();
        let callback_port = launch.callback_port;
        let public_url = launch.public_url.map_or_else(
            || format!("http://127.0.0.1:{callback_port}"),
            str::to_owned,
        );
        let log = log_dir().join(format!("{}-{}.log", launch.name, std::process::id()));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_slack-oauth-operator"));
        command
            .args(["--public-url", &public_url])
            .args(["--callback-addr", &format!("127.0.0.1:{callback_port}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
            .args([
                "--slack-url",
                launch.slack_url,
                "--slack-api-url",
                launch.slack_api_url,
            ])
            .args([
                "--log-format",
                "json",
                "--log-level",
                "info,slack_oauth_operator=debug",
            ])
            .args(["--watch-namespaces", launch.watch_namespace])
            .args(["--leader-election-namespace", launch.lease_namespace])
            .args(launch.extra)
            .env_remove("RUST_LOG")
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file);
        if let Some(kubeconfig) = launch.kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        let child = command.spawn().expect("start the operator");
        let operator = Self {
            child,
            public_url,
            admin_url: format!("http://127.0.0.1:{admin_port}"),
            log,
        };
        operator.wait_ready().await;
        operator
    }

    /// The operator's Prometheus metrics.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin_url))
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }

    /// Whether this replica reconciles, by its `leader` metric.
    pub async fn is_leader(&self) -> bool {
        self.metrics()
            .await
            .lines()
            .any(|l| l.trim() == "slack_oauth_operator_leader 1")
    }

    /// Kills the operator without letting it clean up, as a crashed node would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(response) = http.get(format!("{}/readyz", self.admin_url)).send().await
                && response.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the operator did not become ready within 30 s; its log:\n{}",
            self.logs()
        );
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The operator's process id, for reading what it costs from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lines in the operator's log so far.
    pub fn log_lines(&self) -> usize {
        self.logs().lines().count()
    }

    /// The port the callback server listens on.
    pub fn callback_port(&self) -> u16 {
        self.public_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    /// Stops the operator the way Kubernetes does (SIGTERM), waiting for it to exit. Async, so
    /// that servers on the test's runtime (the Slack emulator) keep answering meanwhile.
    pub async fn terminate(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..300 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("the operator did not stop within 30 s of SIGTERM");
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The reason of the grant's `Ready` condition.
pub fn ready_reason(grant: &slack_oauth_operator::api::SlackOAuthGrant) -> Option<String> {
    grant
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.reason.clone())
}

/// Waits up to 30 s for the grant to satisfy `done`, and returns it.
pub async fn wait_for_grant(
    grants: &Api<slack_oauth_operator::api::SlackOAuthGrant>,
    name: &str,
    done: impl Fn(&slack_oauth_operator::api::SlackOAuthGrant) -> bool,
) -> slack_oauth_operator::api::SlackOAuthGrant {
    wait_for_grant_within(grants, name, Duration::from_secs(30), done).await
}

/// Like [`wait_for_grant`], for up to `limit`.
pub async fn wait_for_grant_within(
    grants: &Api<slack_oauth_operator::api::SlackOAuthGrant>,
    name: &str,
    limit: Duration,
    done: impl Fn(&slack_oauth_operator::api::SlackOAuthGrant) -> bool,
) -> slack_oauth_operator::api::SlackOAuthGrant {
    let mut last = None;
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if let Ok(grant) = grants.get(name).await {
            if done(&grant) {
                return grant;
            }
            last = Some(grant);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "grant {name} did not reach the expected state within {limit:?}; last seen: {:#?}",
        last.map(|g| g.status)
    );
}

/// Waits up to `within` for every grant in `names` to satisfy `done`, listing them (one request
/// per poll, however many grants).
pub async fn wait_for_grants(
    grants: &Api<slack_oauth_operator::api::SlackOAuthGrant>,
    names: &[String],
    within: Duration,
    done: impl Fn(&slack_oauth_operator::api::SlackOAuthGrant) -> bool,
) {
    let deadline = std::time::Instant::now() + within;
    let mut pending: Vec<&String> = names.iter().collect();
    while std::time::Instant::now() < deadline {
        if let Ok(list) = grants.list(&Default::default()).await {
            let finished: std::collections::HashSet<String> = list
                .items
                .iter()
                .filter(|g| done(g))
                .map(ResourceExt::name_any)
                .collect();
            pending = names.iter().filter(|n| !finished.contains(*n)).collect();
            if pending.is_empty() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!(
        "{} of {} grants did not reach the expected state within {within:?}, e.g. {:?}",
        pending.len(),
        names.len(),
        pending.iter().take(5).collect::<Vec<_>>()
    );
}

/// The label with which a Secret opts in to being read by the grants of its namespace.
pub const SHARED_WITH_GRANTS: &str = "slack-oauth-operator.io/shared-with-grants";

/// A Slack app's client Secret named `name`, holding `value` under the default key, opted in to
/// being read by every grant in its namespace.
pub fn shared_client_secret(name: &str, value: &str) -> k8s_openapi::api::core::v1::Secret {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name, "labels": { (SHARED_WITH_GRANTS): "true" } },
        "stringData": { (slack_oauth_operator::api::DEFAULT_CLIENT_SECRET_KEY): value }
    }))
    .expect("client secret")
}

/// CPU time (user plus system, all threads) that process `pid` has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    // The fields after the parenthesised command name (which may hold spaces) start with the
    // state (field 3); utime and stime are fields 14 and 15, in clock ticks.
    let after_name = &stat[stat.rfind(')').expect("comm in /proc/<pid>/stat") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / clock_ticks_per_second()
}

/// `getconf CLK_TCK`: 100 on every Linux we run on, asked anyway rather than assumed.
fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// Headless Chromium driven through ChromeDriver (WebDriver), for what a person does in a
/// browser. `make test` installs both (hack/browser.sh) and exports `CHROMEDRIVER`.
pub struct Browser {
    driver: std::process::Child,
    pub client: fantoccini::Client,
    _profile: TempDir,
}

impl Browser {
    pub async fn start() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let chromedriver = tool("CHROMEDRIVER");
        let port = free_port();
        let driver = std::process::Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = TempDir::new("chromium-profile");
        let capabilities: serde_json::Map<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
            "goog:chromeOptions": {
                "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned()),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", "--disable-quic",
                    format!("--user-data-dir={}", profile.path.display()),
                ]
            }
        }))
        .expect("capabilities");
        let url = format!("http://127.0.0.1:{port}");
        let mut last_error = String::new();
        for _ in 0..100 {
            match fantoccini::ClientBuilder::rustls()
                .expect("TLS for the WebDriver client")
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Self {
                        driver,
                        client,
                        _profile: profile,
                    };
                }
                Err(error) => last_error = error.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("could not start headless Chromium through ChromeDriver at {url}: {last_error}");
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let unique: u64 = {
            use rand::RngExt;
            rand::rng().random()
        };
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{prefix}-{unique:x}"));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A Slack emulator with one app registered for an operator on `callback_port`. On drop it
/// records every secret value it saw or issued for the final log scan (`hack/scan-logs.py`).
pub struct TestSlack {
    pub emulator: slack_emulator::SlackEmulator,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    name: String,
}

impl TestSlack {
    pub async fn start(name: &str, callback_port: u16) -> Self {
        let emulator = slack_emulator::SlackEmulator::start()
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
        let redirect_uri = format!("http://127.0.0.1:{callback_port}/oauth/callback");
        emulator.register_app(slack_emulator::App::new(
            &client_id,
            &client_secret,
            &redirect_uri,
        ));
        emulator.set_approver(slack_emulator::Approver::workspace_owner("T0ACME", "Acme"));
        Self {
            emulator,
            client_id,
            client_secret,
            redirect_uri,
            name: name.to_owned(),
        }
    }

    pub fn url(&self) -> String {
        self.emulator.url()
    }

    pub fn api_url(&self) -> String {
        self.emulator.api_url()
    }

    /// Every token Slack issued.
    pub fn tokens(&self) -> Vec<slack_emulator::IssuedToken> {
        self.emulator.issued_tokens()
    }

    /// Every secret value this Slack saw or issued: the client secret, codes, tokens.
    pub fn secret_values(&self) -> Vec<String> {
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

impl Drop for TestSlack {
    fn drop(&mut self) {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("secrets");
        let _ = std::fs::create_dir_all(&dir);
        let unique: u64 = {
            use rand::RngExt;
            rand::rng().random()
        };
        let _ = std::fs::write(
            dir.join(format!("{}-{unique:x}.txt", self.name)),
            self.secret_values().join("\n"),
        );
    }
}

/// The control plane's audit log, from `CLUSTER_DIR`: JSON lines, Metadata level, one event for
/// every write and for every get, list and watch of Secrets and grants (see `hack/cluster.sh`).
pub fn audit_log() -> PathBuf {
    let dir = std::env::var_os("CLUSTER_DIR").unwrap_or_else(|| {
        panic!("CLUSTER_DIR is not set: `make test` sets it to the local control plane's directory")
    });
    PathBuf::from(dir).join("audit.log")
}

/// Write requests logged after byte `from` of the audit log that touched `namespace`.
pub fn audit_writes_in_namespace(audit: &Path, from: u64, namespace: &str) -> Vec<String> {
    let text = std::fs::read(audit).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(0).min(text.len());
    String::from_utf8_lossy(&text[start..])
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["objectRef"]["namespace"] == namespace)
        .filter(|event| {
            matches!(
                event["verb"].as_str(),
                Some("create" | "update" | "patch" | "delete" | "deletecollection")
            )
        })
        .map(|event| {
            format!(
                "{} {}/{} by {}",
                event["verb"].as_str().unwrap_or_default(),
                event["objectRef"]["resource"].as_str().unwrap_or_default(),
                event["objectRef"]["name"].as_str().unwrap_or_default(),
                event["userAgent"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// The audit log's length now: pass it as `from` to read only what is logged after this point.
pub fn audit_offset(audit: &Path) -> u64 {
    std::fs::metadata(audit).map(|m| m.len()).unwrap_or(0)
}

/// Every audit event logged after byte `from` of the audit log, reads and writes alike. A watch
/// appears twice, at `ResponseStarted` and at `ResponseComplete`, with one `auditID`.
pub fn audit_events_since(audit: &Path, from: u64) -> Vec<serde_json::Value> {
    let text = std::fs::read(audit).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(0).min(text.len());
    String::from_utf8_lossy(&text[start..])
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .collect()
}
