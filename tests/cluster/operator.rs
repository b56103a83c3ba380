//! The operator binary itself, run against the control plane.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::json;
use slack_oauth_operator::api::SlackOAuthGrant;

use crate::support::{self, TestNamespace};

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn operator_watches_grants_and_logs_them() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let ns = TestNamespace::create(&client, "operator-watches").await;

    let mut operator = Command::new(env!("CARGO_BIN_EXE_slack-oauth-operator"))
        .args(["--log-format", "json"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the operator");
    let stdout = operator.stdout.take().expect("stdout");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });

    let grant: SlackOAuthGrant = serde_json::from_value(json!({
        "apiVersion": "slack-oauth-operator.io/v1alpha1",
        "kind": "SlackOAuthGrant",
        "metadata": { "name": "watched" },
        "spec": {
            "clientID": "1234567890.1234567890",
            "clientSecretRef": { "name": "slack-app" },
            "secret": { "name": "slack-token" }
        }
    }))
    .expect("grant");
    Api::<SlackOAuthGrant>::namespaced(client.clone(), &ns.name)
        .patch(
            "watched",
            &PatchParams::apply("operator-test"),
            &Patch::Apply(&grant),
        )
        .await
        .expect("apply the grant");

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match received.recv_timeout(left) {
            Ok(line) => {
                let entry: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                let observed = entry["message"] == "observed grant"
                    && entry["span"]["grant"] == "watched"
                    && entry["span"]["namespace"] == ns.name.as_str();
                seen.push(line);
                if observed {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = operator.kill();
    let _ = operator.wait();
    assert!(
        found,
        "the operator did not log the grant within 30 s; it printed:\n{}",
        seen.join("\n")
    );
}
