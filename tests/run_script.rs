//! `make run` (hack/run.sh) builds the operator's public URL from the callback address it really
//! listens on, so that the redirect URL it sends Slack reaches it. `--print-command` only prints
//! the command line: no cluster, no build.

use std::process::Command;

fn command_line(env: &[(&str, &str)], args: &[&str]) -> String {
    let output = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/hack/run.sh"))
        .arg("--print-command")
        .args(args)
        .env_remove("CALLBACK_ADDR")
        .env_remove("PUBLIC_URL")
        .envs(env.iter().copied())
        .output()
        .expect("run hack/run.sh");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

#[test]
fn the_public_url_follows_the_callback_address_in_use() {
    assert!(command_line(&[], &[]).contains("--public-url http://127.0.0.1:8080 "));
    assert!(
        command_line(&[("CALLBACK_ADDR", "0.0.0.0:9191")], &[])
            .contains("--public-url http://127.0.0.1:9191 ")
    );
    assert!(
        command_line(&[], &["--callback-addr", "127.0.0.1:7000"])
            .contains("--public-url http://127.0.0.1:7000 ")
    );
    assert!(
        command_line(&[], &["--callback-addr=[::1]:7001"])
            .contains("--public-url http://[::1]:7001 ")
    );
}

#[test]
fn a_public_url_given_is_kept() {
    let line = command_line(&[("PUBLIC_URL", "https://slack-oauth.example.com")], &[]);
    assert!(!line.contains("--public-url"), "{line}");
    let line = command_line(&[], &["--public-url", "https://slack-oauth.example.com"]);
    assert_eq!(line.matches("--public-url").count(), 1, "{line}");
}
