//! The operator binary, run as a separate process with real flags, and what it costs.

use std::{collections::HashSet, path::Path, path::PathBuf, time::Duration};

use super::tools::{free_port, run};

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
        let operator = Self::spawn(launch);
        operator.wait_ready().await;
        operator
    }

    /// Starts the operator like [`Operator::launch`], without waiting until it is ready.
    pub fn spawn(launch: Launch<'_>) -> Self {
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
        // The Slack emulator serves SCIM beside its pages and Web API.
        let scim_url = format!("{}/scim/v2", launch.slack_url.trim_end_matches('/'));
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
                "--slack-scim-url",
                &scim_url,
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
        Self {
            child,
            public_url,
            admin_url: format!("http://127.0.0.1:{admin_port}"),
            log,
        }
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

    /// Waits up to 30 s for `/readyz` to answer 200; panics with the log otherwise.
    pub async fn wait_ready(&self) {
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
        // Whether kill succeeded shows below: the operator exits, or the test fails.
        run("kill", &["-TERM", &self.child.id().to_string()], None);
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
    let ran = run("getconf", &["CLK_TCK"], None);
    Some(ran.stdout)
        .filter(|_| ran.success)
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// The established TCP connections of process `pid` to port `port`: its socket descriptors
/// matched against the TCP tables of its network namespace. `None` once it has exited.
pub fn connections_to(pid: u32, port: u16) -> Option<usize> {
    use procfs::process::{FDTarget, Process};
    let process = Process::new(i32::try_from(pid).ok()?).ok()?;
    let sockets: HashSet<u64> = process
        .fd()
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|fd| match fd.target {
            FDTarget::Socket(inode) => Some(inode),
            _ => None,
        })
        .collect();
    let mut entries = process.tcp().ok()?;
    entries.extend(process.tcp6().unwrap_or_default());
    Some(
        entries
            .iter()
            .filter(|e| e.state == procfs::net::TcpState::Established)
            .filter(|e| e.remote_address.port() == port && sockets.contains(&e.inode))
            .count(),
    )
}

/// The port of the API server in `KUBECONFIG`.
pub async fn apiserver_port() -> u16 {
    kube::Config::infer()
        .await
        .expect("read KUBECONFIG")
        .cluster_url
        .port_u16()
        .unwrap_or(443)
}
