//! The README's walk-through, run as printed: every command of every `console` block of its
//! "Walk-through" section, in order, in one shell (so `read -rs VAR` keeps `VAR` for the next
//! command), with the same names and namespaces, against the control plane, an operator process
//! and the Slack emulator. Where the README prints a command's output, the real output must match
//! it: a `kubectl get` table by its header and its cells (all but `AGE`), other lines with `...`
//! standing for any text and `https://slack.com` for the emulator's address.
//!
//! The steps a person takes between commands are the test's: it types the secrets at `read -rs`,
//! approves the link as the Slack owner would, and, before the adoption block, starts over with a
//! grant that has no token yet (as that block says it needs). A block whose fence follows a
//! `<!-- not run by tests: why -->` line is left out; this section has none.

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, api::DeleteParams};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};

use crate::{
    scenario::Scenario,
    support::{self, TestNamespace},
};

/// The README's namespace, grant and example app.
const NAMESPACE: &str = "pingfederate";
const GRANT: &str = "slack-scim";
const TOKEN_SECRET: &str = "slack-scim-token";
const EXAMPLE: &str = "examples/pingfederate-workspace.yaml";
const EXAMPLE_CLIENT_ID: &str = "1234567890.1234567890";
const EXAMPLE_TEAM: &str = "T0123ABCD";
const SKIP_MARKER: &str = "<!-- not run by tests";
const DONE: &str = "__readme_command_done__";

/// One command of a `console` block, with the output the README prints under it.
#[derive(Debug)]
struct Printed {
    command: String,
    output: Vec<String>,
}

/// The `console` blocks of the README section headed `heading` (a `## ` heading), in order.
fn console_blocks(readme: &str, heading: &str) -> Vec<Vec<Printed>> {
    let mut blocks = Vec::new();
    let mut in_section = false;
    let mut previous = "";
    let mut block: Option<(usize, Vec<Printed>)> = None;
    for line in readme.lines() {
        if let Some((indent, commands)) = &mut block {
            let text = line.get(*indent..).unwrap_or(line.trim_start());
            if text.trim_start().starts_with("```") {
                blocks.push(std::mem::take(commands));
                block = None;
            } else if let Some(command) = text.strip_prefix("$ ") {
                commands.push(Printed {
                    command: command.to_owned(),
                    output: Vec::new(),
                });
            } else if let Some(last) = commands.last_mut() {
                if last.command.ends_with('\\') && last.output.is_empty() {
                    last.command.push('\n');
                    last.command.push_str(text);
                } else {
                    last.output.push(text.to_owned());
                }
            }
            continue;
        }
        if let Some(title) = line.strip_prefix("## ") {
            in_section = title.starts_with(heading);
        } else if in_section
            && line.trim_start() == "```console"
            && !previous.trim_start().starts_with(SKIP_MARKER)
        {
            block = Some((line.len() - line.trim_start().len(), Vec::new()));
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
    blocks
}

/// One bash, fed the commands on its standard input, its standard error merged into its output.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Shell {
    fn start(repo: &Path) -> Self {
        let kubectl = support::tool("KUBECTL");
        let kubectl_dir = Path::new(&kubectl).parent().expect("kubectl's directory");
        let path = format!(
            "{}:{}",
            kubectl_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = Command::new("bash")
            .args(["--noprofile", "--norc"])
            .current_dir(repo)
            .env("PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start bash");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// Runs `command`, typing `typed` on the next line (for `read`); its output and exit status.
    async fn run(&mut self, command: &str, typed: Option<&str>) -> (String, i32) {
        let mut script = format!("{{ {command}\n}} 2>&1\n");
        if let Some(typed) = typed {
            script.push_str(typed);
            script.push('\n');
        }
        script.push_str(&format!("printf '\\n{DONE} %s\\n' \"$?\"\n"));
        self.stdin
            .write_all(script.as_bytes())
            .await
            .expect("feed bash");
        let mut output = Vec::new();
        let read = async {
            while let Some(line) = self.stdout.next_line().await.expect("read bash") {
                if let Some(status) = line.strip_prefix(&format!("{DONE} ")) {
                    return status.trim().parse().unwrap_or(-1);
                }
                output.push(line);
            }
            panic!("bash exited while running {command:?}: {output:?}");
        };
        let status = tokio::time::timeout(Duration::from_secs(120), read)
            .await
            .unwrap_or_else(|_| panic!("{command:?} did not finish within 120 s"));
        if output.last().is_some_and(String::is_empty) {
            output.pop();
        }
        (output.join("\n"), status)
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The cells of a `kubectl get` row, by the columns of its header (kubectl aligns them).
fn cells(header: &str, row: &str) -> Vec<(String, String)> {
    let mut starts = Vec::new();
    let mut previous = ' ';
    for (i, c) in header.char_indices() {
        if c != ' ' && previous == ' ' {
            starts.push(i);
        }
        previous = c;
    }
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let end = starts.get(n + 1).copied().unwrap_or(usize::MAX);
            let name = header[start..end.min(header.len())].trim().to_owned();
            let value = row
                .get(start..end.min(row.len()))
                .unwrap_or_default()
                .trim()
                .to_owned();
            (name, value)
        })
        .collect()
}

/// Whether `line` matches the printed `pattern`, where `...` stands for any text.
fn matches(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split("...");
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// Why `actual` does not match what the README prints, if it does not.
fn mismatch(printed: &[String], actual: &str, slack_url: &str) -> Option<String> {
    let actual: Vec<&str> = actual.lines().collect();
    let first = printed.first()?;
    if first.starts_with("NAME ") {
        let header = actual.first().copied().unwrap_or_default();
        let printed_columns: Vec<&str> = first.split_whitespace().collect();
        let columns: Vec<&str> = header.split_whitespace().collect();
        if printed_columns != columns {
            return Some(format!(
                "columns {columns:?}, the README prints {printed_columns:?}"
            ));
        }
        for (n, row) in printed.iter().enumerate().skip(1) {
            let expected = cells(first, row);
            let got = cells(header, actual.get(n).copied().unwrap_or_default());
            for (column, value) in &expected {
                if column == "AGE" {
                    continue;
                }
                let real = got
                    .iter()
                    .find(|(c, _)| c == column)
                    .map(|(_, v)| v.as_str());
                if real != Some(value.as_str()) {
                    return Some(format!("{column} is {real:?}, the README prints {value:?}"));
                }
            }
        }
        return None;
    }
    for (n, line) in printed.iter().enumerate() {
        let pattern = line.replace("https://slack.com", slack_url.trim_end_matches('/'));
        let real = actual.get(n).copied().unwrap_or_default();
        if !matches(&pattern, real) {
            return Some(format!(
                "line {} is {real:?}, the README prints {line:?}",
                n + 1
            ));
        }
    }
    None
}

async fn namespace_gone(namespaces: &Api<Namespace>) {
    let started = Instant::now();
    while namespaces.get_opt(NAMESPACE).await.expect("read").is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "namespace {NAMESPACE} was not deleted within 90 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn the_walk_through_runs_as_printed() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let lease = TestNamespace::create(&client, "readme-lease").await;
    let s = Scenario::builder("readme")
        .in_namespace(&TestNamespace {
            name: NAMESPACE.to_owned(),
        })
        .lease_namespace(&lease.name)
        .start()
        .await;
    // The example's app and workspace, at the emulator.
    s.slack.emulator.register_app(slack_emulator::App::new(
        EXAMPLE_CLIENT_ID,
        &s.slack.client_secret,
        &s.slack.redirect_uri,
    ));
    s.slack
        .emulator
        .set_approver(slack_emulator::Approver::workspace_owner(
            EXAMPLE_TEAM,
            "Acme",
        ));
    // A namespace left by an earlier run goes first, with the operator there for finalizers.
    let namespaces = Api::<Namespace>::all(client.clone());
    if namespaces.get_opt(NAMESPACE).await.expect("read").is_some() {
        namespaces
            .delete(NAMESPACE, &DeleteParams::default())
            .await
            .expect("delete the namespace");
        namespace_gone(&namespaces).await;
    }

    let repo = support::repo_root();
    let readme = std::fs::read_to_string(repo.join("README.md")).expect("README.md");
    let blocks = console_blocks(&readme, "Walk-through");
    assert!(
        blocks.len() >= 4,
        "the walk-through's console blocks: {blocks:#?}"
    );
    let mut shell = Shell::start(&repo);
    let (mut approved, mut adopted, mut ran) = (false, false, 0);
    let mut pasted = None;
    for block in &blocks {
        let adoption = block
            .first()
            .is_some_and(|c| c.command == "read -rs PASTED_TOKEN");
        if adoption {
            // "For a grant that has no token yet": the same grant, applied afresh.
            s.delete_grant(GRANT).await;
            support::kubectl(&["-n", NAMESPACE, "apply", "-f", EXAMPLE], None);
            pasted = Some(user_token(&s).await);
        }
        for printed in block {
            let typed = match printed.command.as_str() {
                "read -rs SLACK_CLIENT_SECRET" => Some(s.slack.client_secret.clone()),
                "read -rs PASTED_TOKEN" => pasted.clone(),
                _ => None,
            };
            let retried = printed.command.contains(" get ");
            let started = Instant::now();
            let output = loop {
                let (output, status) = shell.run(&printed.command, typed.as_deref()).await;
                let why = if status == 0 {
                    mismatch(&printed.output, &output, &s.slack.url())
                } else {
                    Some(format!("it exited with {status}"))
                };
                match why {
                    None => break output,
                    Some(why) if !retried || started.elapsed() > Duration::from_secs(30) => {
                        panic!(
                            "the README's `{}` does not run as printed: {why}\n--- its output\n{output}",
                            printed.command
                        )
                    }
                    Some(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            };
            ran += 1;
            if printed.command.contains("{.status.authorizationURL}") {
                // The Slack owner opens the link and clicks Allow.
                let answer = s.approve(output.trim()).await;
                assert_eq!(answer.status, 200, "{}", answer.body);
                s.wait_ready(GRANT).await;
                approved = true;
            }
        }
        if adoption {
            let token = pasted.clone().expect("the pasted token");
            let started = Instant::now();
            while stored_token(&s).await.as_deref() != Some(token.as_str())
                || support::ready_reason(&s.grants.get(GRANT).await.expect("the grant")).as_deref()
                    != Some("Authorized")
            {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "the pasted token was not adopted"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            adopted = true;
        }
    }
    assert!(
        approved && adopted,
        "the walk-through hands out the link and adopts a token"
    );
    eprintln!(
        "readme: ran {ran} commands of {} console blocks as printed",
        blocks.len()
    );
    drop(shell);

    namespaces
        .delete(NAMESPACE, &DeleteParams::default())
        .await
        .expect("delete the namespace");
    namespace_gone(&namespaces).await;
}

/// The token in the example's Secret.
async fn stored_token(s: &Scenario) -> Option<String> {
    let secret = s
        .secrets
        .get_opt(TOKEN_SECRET)
        .await
        .expect("read the Secret")?;
    let bytes = secret.data?.remove("SLACK_ACCESS_TOKEN")?;
    String::from_utf8(bytes.0).ok()
}

/// A live user token for the example's workspace, from an approval made outside the operator
/// (as Ping's hosted service makes them).
async fn user_token(s: &Scenario) -> String {
    let link = format!(
        "{}/oauth/v2/authorize?client_id={}&user_scope=admin&redirect_uri={}&state=outside",
        s.slack.url().trim_end_matches('/'),
        s.slack.client_id,
        url::form_urlencoded::byte_serialize(s.slack.redirect_uri.as_bytes()).collect::<String>()
    );
    let answer = s.exchange_by_hand(&link).await;
    answer["authed_user"]["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("a user token: {answer}"))
        .to_owned()
}

#[test]
fn console_blocks_keep_commands_outputs_and_skip_markers() {
    let readme = "## Walk-through\n\ntext\n\n```console\n$ kubectl get sog\nNAME   READY\nscim   True\n$ helm install a \\\n    chart\n```\n\n<!-- not run by tests: a placeholder -->\n```console\n$ make test\n```\n\n  ```console\n  $ kubectl annotate x\n  ```\n\n## Other\n\n```console\n$ not-this\n```\n";
    let blocks = console_blocks(readme, "Walk-through");
    assert_eq!(blocks.len(), 2, "{blocks:#?}");
    assert_eq!(blocks[0][0].command, "kubectl get sog");
    assert_eq!(blocks[0][0].output, ["NAME   READY", "scim   True"]);
    assert_eq!(blocks[0][1].command, "helm install a \\\n    chart");
    assert_eq!(blocks[1][0].command, "kubectl annotate x");
}

#[test]
fn outputs_match_tables_by_cell_and_lines_by_pattern() {
    let printed = vec![
        "NAME   READY   PHASE   AGE".to_owned(),
        "scim   True    Ready   4m".to_owned(),
    ];
    assert_eq!(
        mismatch(
            &printed,
            "NAME   READY   PHASE   AGE\nscim   True    Ready   12s",
            ""
        ),
        None
    );
    assert!(
        mismatch(
            &printed,
            "NAME   READY   PHASE   AGE\nscim   False   Failed  1s",
            ""
        )
        .is_some()
    );
    assert!(mismatch(&printed, "NAME   PHASE   AGE\nscim   Ready   1s", "").is_some());
    let url = vec!["https://slack.com/oauth/v2/authorize?client_id=1&state=...".to_owned()];
    assert_eq!(
        mismatch(
            &url,
            "http://127.0.0.1:9/oauth/v2/authorize?client_id=1&state=abc",
            "http://127.0.0.1:9/"
        ),
        None
    );
    assert!(matches("xoxp-...", "xoxp-123"));
    assert!(!matches("xoxp-...", "xoxb-123"));
    assert!(matches("a...b...c", "a1b2c"));
}
