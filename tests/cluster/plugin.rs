//! `kubectl slack-oauth` (the binary `kubectl-slack_oauth`) against the real API server, the
//! operator process and the Slack emulator: each test runs the plugin as a user would.

use std::{
    io::Read,
    path::PathBuf,
    process::{Output, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use kube::config::{Kubeconfig, NamedContext};
use serde_json::json;

use crate::scenario::Scenario;
use crate::support::TempDir;

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-slack_oauth");

/// The plugin with `args`, for the control plane in `KUBECONFIG`, stdin closed.
fn plugin(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(PLUGIN);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs the plugin to the end (at most a minute).
async fn run(args: &[&str]) -> Output {
    tokio::time::timeout(Duration::from_secs(60), plugin(args).output())
        .await
        .expect("the plugin finishes within a minute")
        .expect("run the plugin")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit code; stdout: {}\nstderr: {}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// A plugin process still running, its output collected as it comes.
struct Running {
    child: tokio::process::Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    fn start(args: &[&str]) -> Self {
        let mut child = plugin(args).spawn().expect("start the plugin");
        let collect = |stream: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| {
            let seen = Arc::new(Mutex::new(String::new()));
            let into = seen.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let Some(mut stream) = stream else { return };
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    into.lock()
                        .expect("lock")
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
            seen
        };
        let stdout = collect(child.stdout.take().map(|s| Box::new(s) as _));
        let stderr = collect(child.stderr.take().map(|s| Box::new(s) as _));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    async fn wait_for_stdout(&self, wanted: &str) {
        wait_for_text(&self.stdout, wanted, Duration::from_secs(30)).await;
    }

    /// Waits for the exit: its code, stdout and stderr.
    async fn finish(mut self, within: Duration) -> (Option<i32>, String, String) {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the plugin exits in time")
            .expect("wait for the plugin");
        // Let the readers drain what is left.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stdout = self.stdout.lock().expect("lock").clone();
        let stderr = self.stderr.lock().expect("lock").clone();
        (status.code(), stdout, stderr)
    }
}

async fn wait_for_text(seen: &Mutex<String>, wanted: &str, within: Duration) {
    let started = Instant::now();
    loop {
        let now = seen.lock().expect("lock").clone();
        if now.contains(wanted) {
            return;
        }
        assert!(
            started.elapsed() < within,
            "the plugin did not print {wanted:?} within {within:?}; it printed: {now}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A grant `scim` waiting for approval, and its link.
async fn awaiting(s: &Scenario) -> String {
    s.create_client_secret().await;
    s.apply_grant("scim", json!({})).await;
    s.link("scim").await
}

/// A Ready grant `scim` with `spec`, and its token.
async fn ready(s: &Scenario, spec: serde_json::Value) -> String {
    s.create_client_secret().await;
    s.apply_grant("scim", spec).await;
    assert_eq!(s.approve(&s.link("scim").await).await.status, 200);
    s.wait_ready("scim").await;
    s.stored_token("SLACK_ACCESS_TOKEN").await.expect("a token")
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn authorize_in_a_terminal_spins_until_the_owner_approves_then_names_the_team() {
    let s = Scenario::start("plugin-authorize-tty").await;
    let link = awaiting(&s).await;

    let pty = portable_pty::native_pty_system();
    let pair = pty
        .openpty(portable_pty::PtySize {
            rows: 60,
            cols: 160,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("a pseudo-terminal");
    let mut command = portable_pty::CommandBuilder::new(PLUGIN);
    command.args(["authorize", "scim", "-n", &s.ns.name]);
    command.env(
        "KUBECONFIG",
        std::env::var_os("KUBECONFIG").expect("KUBECONFIG"),
    );
    let mut child = pair.slave.spawn_command(command).expect("start the plugin");
    drop(pair.slave);
    let seen = Arc::new(Mutex::new(String::new()));
    let mut reader = pair.master.try_clone_reader().expect("reader");
    let into = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock()
                .expect("lock")
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });

    wait_for_text(&seen, &link, Duration::from_secs(30)).await;
    wait_for_text(
        &seen,
        "phase AwaitingAuthorization",
        Duration::from_secs(30),
    )
    .await;
    // Let the spinner turn a few times.
    tokio::time::sleep(Duration::from_secs(1)).await;
    {
        let shown = seen.lock().expect("lock").clone();
        assert!(
            shown.contains('▀') || shown.contains('▄'),
            "a QR code in half blocks: {shown}"
        );
        let frames = ['⠁', '⠂', '⠄', '⡀', '⢀', '⠠', '⠐', '⠈'];
        assert!(
            frames.iter().filter(|f| shown.contains(**f)).count() >= 2,
            "a turning spinner: {shown}"
        );
        assert!(child.try_wait().expect("status").is_none(), "still waiting");
    }

    assert_eq!(s.approve(&link).await.status, 200);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("status") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the plugin exits after the approval: {}",
            seen.lock().expect("lock")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shown = seen.lock().expect("lock").clone();
    println!("{shown}");
    assert!(status.success(), "exit 0: {status:?}; {shown}");
    assert!(shown.contains("Approved"), "{shown}");
    assert!(shown.contains("Acme"), "the team's name: {shown}");
    drop(pair.master);
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn authorize_with_nothing_pending_exits_0_at_once() {
    let s = Scenario::start("plugin-nothing-pending").await;
    ready(&s, json!({})).await;
    let started = Instant::now();
    let output = run(&["authorize", "scim", "-n", &s.ns.name]).await;
    assert_exit(&output, 0);
    assert!(started.elapsed() < Duration::from_secs(10));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("No approval is pending"), "{stdout}");
    assert!(stdout.contains("Acme"), "{stdout}");
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn a_failed_exchange_exits_1_with_the_reason_and_plain_lines_off_a_terminal() {
    let s = Scenario::start("plugin-failure").await;
    s.create_client_secret_with("not-the-client-secret").await;
    s.apply_grant("scim", json!({})).await;
    let link = s.link("scim").await;
    let ns = s.ns.name.clone();
    let running = Running::start(&["authorize", "scim", "-n", &ns]);
    running.wait_for_stdout(&link).await;
    running.wait_for_stdout("phase AwaitingAuthorization").await;

    s.approve(&link).await;
    let (code, stdout, stderr) = running.finish(Duration::from_secs(30)).await;
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("BadClientSecret"), "the reason: {stderr}");
    assert!(
        !stdout.contains('\r') && !stdout.contains('\u{1b}'),
        "plain lines, no spinner: {stdout:?}"
    );
    assert!(!stderr.contains("Error {"), "no Debug dump: {stderr}");
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn authorize_exits_3_when_the_timeout_passes_first() {
    let s = Scenario::start("plugin-timeout").await;
    awaiting(&s).await;
    let output = run(&["authorize", "scim", "-n", &s.ns.name, "--timeout", "2s"]).await;
    assert_exit(&output, 3);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("timed out after 2s"), "{stderr}");
    assert!(stderr.contains("AwaitingAuthorization"), "{stderr}");
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn status_prints_the_team_the_conditions_and_the_events_and_no_token() {
    let s = Scenario::start("plugin-status").await;
    let token = ready(&s, json!({})).await;
    let started = Instant::now();
    let stdout = loop {
        let output = run(&["status", "scim", "-n", &s.ns.name]).await;
        assert_exit(&output, 0);
        let stdout = text(&output.stdout);
        // The operator publishes Events on its own time.
        let events = stdout.split("\nEvents:\n").nth(1).unwrap_or_default();
        if events.contains("Authorized") || started.elapsed() > Duration::from_secs(20) {
            break stdout;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Shown with --nocapture: what docs/kubectl-plugin.md quotes.
    println!("{stdout}");
    assert!(stdout.contains("Team:         Acme (T0ACME)"), "{stdout}");
    assert!(stdout.contains("Phase:        Ready"), "{stdout}");
    assert!(stdout.contains("Scopes:       admin"), "{stdout}");
    assert!(stdout.contains("revision 1"), "{stdout}");
    assert!(stdout.contains("Conditions:\n  TYPE"), "{stdout}");
    let events = stdout
        .split("\nEvents:\n")
        .nth(1)
        .expect("an Events section");
    assert!(
        events.contains("Normal") && events.contains("Authorized"),
        "{stdout}"
    );
    assert!(!stdout.contains(&token), "never the token");
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn reauthorize_sets_the_annotation_and_with_wait_follows_the_new_approval() {
    let s = Scenario::start("plugin-reauthorize").await;
    ready(&s, json!({})).await;
    let output = run(&["reauthorize", "scim", "-n", &s.ns.name]).await;
    assert_exit(&output, 0);
    let grant = s.grants.get("scim").await.expect("grant");
    let first = grant
        .metadata
        .annotations
        .unwrap_or_default()
        .remove("slack-oauth-operator.io/reauthorize")
        .expect("the annotation is set");
    assert!(
        first.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
        "an RFC 3339 time: {first}"
    );
    let link = s.link("scim").await;
    assert_eq!(s.approve(&link).await.status, 200);
    crate::support::wait_for_grant(&s.grants, "scim", |g| {
        slack_oauth_operator::plugin::pending::standing(g)
            != slack_oauth_operator::plugin::pending::Standing::Pending
    })
    .await;

    // Again, and wait this time: the plugin prints the new link and ends with the approval.
    let ns = s.ns.name.clone();
    let running = Running::start(&["reauthorize", "scim", "--wait", "-n", &ns]);
    let fresh = s.new_link("scim", &link).await;
    running.wait_for_stdout(&fresh).await;
    assert_eq!(s.approve(&fresh).await.status, 200);
    let (code, stdout, stderr) = running.finish(Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    println!("{stdout}");
    assert!(stdout.contains("Approved"), "{stdout}");
    assert!(stdout.contains("ReauthorizationRequested"), "{stdout}");
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn revoke_sets_revoke_on_a_retained_grant_deletes_it_and_the_token_is_revoked() {
    let s = Scenario::start("plugin-revoke").await;
    let token = ready(&s, json!({ "deletionPolicy": "Retain" })).await;

    // Without --yes and nobody to ask: refused, nothing changed.
    let refused = run(&["revoke", "scim", "-n", &s.ns.name]).await;
    assert_exit(&refused, 2);
    assert!(text(&refused.stderr).contains("--yes"));
    assert!(s.grants.get_opt("scim").await.expect("read").is_some());

    let output = run(&["revoke", "scim", "--yes", "-n", &s.ns.name]).await;
    assert_exit(&output, 0);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("to Revoke (it was Retain)"), "{stdout}");
    assert!(s.grants.get_opt("scim").await.expect("read").is_none());
    assert!(
        !s.slack.emulator.is_live(&token),
        "the token was revoked at Slack"
    );
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn namespace_and_context_choose_the_grant_and_an_unknown_one_exits_2() {
    let s = Scenario::start("plugin-flags").await;
    awaiting(&s).await;

    // The current context has no namespace: `default`, where there is no such grant.
    let missing = run(&["status", "scim"]).await;
    assert_exit(&missing, 2);
    let stderr = text(&missing.stderr);
    assert!(
        stderr.contains("grant scim not found in namespace default"),
        "{stderr}"
    );

    assert_exit(&run(&["status", "scim", "-n", &s.ns.name]).await, 0);
    let unknown = run(&["status", "no-such-grant", "-n", &s.ns.name]).await;
    assert_exit(&unknown, 2);
    assert!(
        text(&unknown.stderr).contains(&format!(
            "grant no-such-grant not found in namespace {}",
            s.ns.name
        )),
        "{}",
        text(&unknown.stderr)
    );

    // A kubeconfig with a second context whose namespace is the test's.
    let dir = TempDir::new("plugin-kubeconfig");
    let path = std::env::var_os("KUBECONFIG")
        .map(PathBuf::from)
        .expect("KUBECONFIG");
    let mut kubeconfig = Kubeconfig::read_from(&path).expect("kubeconfig");
    let current = kubeconfig
        .current_context
        .clone()
        .expect("a current context");
    let mut context: NamedContext = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == current)
        .cloned()
        .expect("the current context");
    context.name = "tests-namespace".to_owned();
    if let Some(c) = context.context.as_mut() {
        c.namespace = Some(s.ns.name.clone());
    }
    kubeconfig.contexts.push(context);
    let file = dir.path.join("kubeconfig");
    std::fs::write(
        &file,
        serde_saphyr::to_string(&kubeconfig).expect("kubeconfig YAML"),
    )
    .expect("write the kubeconfig");
    let file = file.to_str().expect("utf-8 path");

    let by_context = run(&[
        "status",
        "scim",
        "--kubeconfig",
        file,
        "--context",
        "tests-namespace",
    ])
    .await;
    assert_exit(&by_context, 0);
    assert!(text(&by_context.stdout).contains(&format!("{}/scim", s.ns.name)));
    // -n wins over the context's namespace.
    let overridden = run(&[
        "status",
        "scim",
        "--kubeconfig",
        file,
        "--context",
        "tests-namespace",
        "-n",
        "default",
    ])
    .await;
    assert_exit(&overridden, 2);

    // The manifest takes the callback URL from the published link.
    let manifest = run(&["manifest", "scim", "-n", &s.ns.name]).await;
    assert_exit(&manifest, 0);
    let yaml = text(&manifest.stdout);
    assert!(
        yaml.contains(&format!("{}/oauth/callback", s.operator.public_url)),
        "{yaml}"
    );
}
