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

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, api::DeleteParams};

use crate::{
    scenario::Scenario,
    support::{
        self, TestNamespace,
        readme_blocks::{Shell, code_block, console_blocks, matches, mismatch},
    },
};

/// The README's namespace, grant and example app.
const NAMESPACE: &str = "pingfederate";
const GRANT: &str = "slack-scim";
const TOKEN_SECRET: &str = "slack-scim-token";
const EXAMPLE: &str = "examples/pingfederate-workspace.yaml";
const EXAMPLE_CLIENT_ID: &str = "1234567890.1234567890";
const EXAMPLE_TEAM: &str = "T0123ABCD";

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
    let blocks: Vec<_> = console_blocks(&readme, "Walk-through")
        .into_iter()
        .filter(|b| b.not_run.is_none())
        .map(|b| b.commands)
        .collect();
    assert!(
        blocks.len() >= 4,
        "the walk-through's console blocks: {blocks:#?}"
    );
    let mut shell = Shell::start(&repo, &[]);
    let slack_url = s.slack.url();
    let replace = [
        ("https://slack.com", slack_url.trim_end_matches('/')),
        (
            "https://slack-oauth.example.com",
            s.operator.public_url.as_str(),
        ),
    ];
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
            let output = shell
                .run_as_printed(printed, typed.as_deref(), retried, &replace)
                .await;
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
    assert_eq!(blocks.len(), 3, "{blocks:#?}");
    assert_eq!(blocks[0].commands[0].command, "kubectl get sog");
    assert_eq!(
        blocks[0].commands[0].output,
        ["NAME   READY", "scim   True"]
    );
    assert_eq!(
        blocks[0].commands[1].command,
        "helm install a \\\n    chart"
    );
    assert_eq!(blocks[0].not_run, None);
    assert_eq!(blocks[1].commands[0].command, "make test");
    assert_eq!(blocks[1].not_run.as_deref(), Some("a placeholder"));
    assert_eq!(blocks[2].commands[0].command, "kubectl annotate x");
    assert_eq!(blocks[2].not_run, None);
}

#[test]
fn code_blocks_are_found_by_their_first_line_within_the_section() {
    let readme = "## Installing\n\n```yaml\nother: 1\n```\n\n   ```yaml\n   # values.yaml\n   a:\n     b: 1\n   ```\n\n## Next\n\n```yaml\n# later.yaml\n```\n";
    assert_eq!(
        code_block(readme, "Installing", "# values.yaml").as_deref(),
        Some("# values.yaml\na:\n  b: 1\n")
    );
    assert_eq!(code_block(readme, "Installing", "# later.yaml"), None);
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
            &[]
        ),
        None
    );
    assert!(
        mismatch(
            &printed,
            "NAME   READY   PHASE   AGE\nscim   False   Failed  1s",
            &[]
        )
        .is_some()
    );
    assert!(mismatch(&printed, "NAME   PHASE   AGE\nscim   Ready   1s", &[]).is_some());
    let url = vec!["https://slack.com/oauth/v2/authorize?client_id=1&state=...".to_owned()];
    assert_eq!(
        mismatch(
            &url,
            "http://127.0.0.1:9/oauth/v2/authorize?client_id=1&state=abc",
            &[("https://slack.com", "http://127.0.0.1:9")]
        ),
        None
    );
    assert!(matches("xoxp-...", "xoxp-123"));
    assert!(!matches("xoxp-...", "xoxb-123"));
    assert!(matches("a...b...c", "a1b2c"));
}

#[test]
fn a_printed_line_of_three_dots_stands_for_any_number_of_lines() {
    let printed: Vec<String> = ["...", "built ... in ... s", ".../image.tar"]
        .map(str::to_owned)
        .to_vec();
    assert_eq!(
        mismatch(
            &printed,
            "STEP 1\nSTEP 2\nbuilt x in 2 s\n/t/image.tar",
            &[]
        ),
        None
    );
    assert_eq!(
        mismatch(&printed, "built x in 2 s\n/t/image.tar", &[]),
        None
    );
    assert!(mismatch(&printed, "STEP 1\nbuilt x in 2 s", &[]).is_some());
    let middle: Vec<String> = ["NAME: x", "...", "  url", "..."]
        .map(str::to_owned)
        .to_vec();
    assert_eq!(mismatch(&middle, "NAME: x\na\nb\n  url\nc", &[]), None);
    assert!(mismatch(&middle, "NAME: y\n  url", &[]).is_some());
    assert!(mismatch(&middle, "NAME: x\na\nb", &[]).is_some());
}
