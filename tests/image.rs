//! The container image, built from the project's Dockerfile as `make image` builds it, then run.
//!
//! `#[ignore]`d, because a cold build takes minutes: `make test` runs these with
//! `--include-ignored`, after a step of its own has built the image, so the build here finds every
//! layer cached. The last test also needs the control plane and, like every test that does, fails
//! at once without one.

#[path = "node/image.rs"]
#[allow(dead_code)]
mod built;
// Shared by several test binaries, each of which uses only part of it.
#[path = "cluster/support/mod.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use std::time::Duration;

use built::{image, podman, try_podman};

/// What `podman run` needs on this machine kind besides the test's own flags: root lacks
/// CAP_SYS_RESOURCE here, so podman's default rlimits cannot be set.
const RUN: &[&str] = &[
    "run",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// The hardening the chart's securityContext asks for, as podman flags (without podman's
/// writable tmpfs mounts on /tmp and /run, which a pod does not get either).
const HARDENED: &[&str] = &[
    "--read-only",
    "--read-only-tmpfs=false",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
];

#[test]
#[ignore = "builds the image with podman: run `make test`"]
fn the_image_builds_into_an_oci_archive_and_its_size_is_reported() {
    let image = image();
    let megabytes = image.size_bytes as f64 / 1e6;
    let archive_megabytes = std::fs::metadata(&image.archive)
        .expect("the archive")
        .len() as f64
        / 1e6;
    eprintln!(
        "image {}: {megabytes:.1} MB unpacked, OCI archive {archive_megabytes:.1} MB ({})",
        image.reference(),
        image.archive.display()
    );
    let listing = support::must("tar", &["-tf", &image.archive.to_string_lossy()], None);
    for entry in ["oci-layout", "index.json"] {
        assert!(
            listing.lines().any(|l| l == entry),
            "an OCI archive has {entry}: {listing}"
        );
    }
    let index = support::must(
        "tar",
        &["-xOf", &image.archive.to_string_lossy(), "index.json"],
        None,
    );
    let index: serde_json::Value = serde_json::from_str(&index).expect("index.json");
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        image.reference().as_str(),
        "the archive names the image, so a container runtime imports it under that name"
    );
    // A distroless base and one static-ish binary: a regression guard, not a target.
    assert!(
        megabytes < 100.0,
        "the image grew to {megabytes:.1} MB unpacked"
    );
}

#[test]
#[ignore = "builds the image with podman: run `make test`"]
fn the_runtime_image_has_no_shell_runs_as_65532_and_carries_ca_certificates() {
    let image = image();
    let config: serde_json::Value = serde_json::from_str(&podman(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config}}",
        &image.reference(),
    ]))
    .expect("image config");
    assert_eq!(config["User"], "65532:65532", "{config}");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/slack-oauth-operator"]),
        "{config}"
    );
    for port in ["8080/tcp", "8081/tcp"] {
        assert!(
            config["ExposedPorts"].get(port).is_some(),
            "exposes {port}: {config}"
        );
    }

    let container = podman(&["create", &image.reference()]);
    let container = container.trim();
    let dir = support::TempDir::new("image-export");
    let exported = dir.path.join("rootfs.tar");
    let export = try_podman(&["export", "--output", &exported.to_string_lossy(), container]);
    podman(&["rm", container]);
    assert!(export.0, "podman export failed: {}", export.2);
    let listing = list_tar(&exported);
    let has = |path: &str| listing.iter().any(|(name, _)| name == path);
    assert!(has("usr/local/bin/slack-oauth-operator"), "the binary");
    for shell in [
        "bin/sh",
        "usr/bin/sh",
        "bin/bash",
        "usr/bin/bash",
        "bin/dash",
    ] {
        assert!(!has(shell), "no shell in the runtime image, found {shell}");
    }
    // The Slack client trusts the platform's CA bundle (rustls platform verifier); without it the
    // operator does not start.
    let bundle = listing
        .iter()
        .find(|(name, _)| name == "etc/ssl/certs/ca-certificates.crt")
        .expect("a CA bundle at etc/ssl/certs/ca-certificates.crt");
    assert!(bundle.1 > 100_000, "the CA bundle holds certificates");
}

#[test]
#[ignore = "builds the image with podman: run `make test`"]
fn version_answers_in_a_read_only_container_without_capabilities() {
    let image = image();
    let mut args: Vec<&str> = RUN.to_vec();
    args.extend(HARDENED);
    let reference = image.reference();
    args.extend(["--rm", "--network=none", &reference, "--version"]);
    let out = podman(&args);
    assert_eq!(
        out.trim(),
        format!("slack-oauth-operator {}", env!("CARGO_PKG_VERSION"))
    );

    // And there is nothing else to run in it.
    let mut args: Vec<&str> = RUN.to_vec();
    args.extend([
        "--rm",
        "--network=none",
        "--entrypoint",
        "/bin/sh",
        &reference,
        "-c",
        "true",
    ]);
    let (ok, _, stderr) = try_podman(&args);
    assert!(!ok, "a shell ran in the runtime image");
    assert!(
        stderr.contains("no such file or directory") || stderr.contains("not found"),
        "{stderr}"
    );
}

/// A podman container removed on drop.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = try_podman(&["rm", "--force", "--time", "2", &self.0]);
    }
}

#[tokio::test]
#[ignore = "needs the local control plane: run `make test`"]
async fn the_operator_serves_from_the_image_as_65532_with_a_read_only_root_and_no_capabilities() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let ns = support::TestNamespace::create(&client, "image-run").await;
    let image = image();

    // The admin kubeconfig is readable by root only; the container's user needs a copy it can
    // read, mounted read-only.
    let kubeconfig = std::env::var("KUBECONFIG").expect("KUBECONFIG (support::client checked it)");
    let dir = support::TempDir::new("image-run");
    let copy = dir.path.join("kubeconfig");
    std::fs::copy(&kubeconfig, &copy).expect("copy the kubeconfig");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let (callback, admin) = (support::free_port(), support::free_port());
    let name = format!("{}-operator", ns.name);
    let mount = format!("{}:/kubeconfig:ro", copy.display());
    let reference = image.reference();
    let public_url = format!("http://127.0.0.1:{callback}");
    let callback_addr = format!("--callback-addr=127.0.0.1:{callback}");
    let admin_addr = format!("--admin-addr=127.0.0.1:{admin}");
    let watch = format!("--watch-namespaces={}", ns.name);
    let lease = format!("--leader-election-namespace={}", ns.name);
    let mut args: Vec<&str> = RUN.to_vec();
    args.extend(HARDENED);
    args.extend([
        "--detach",
        "--name",
        &name,
        // The host's network, so that the loopback API server and ports are the test's.
        "--network=host",
        "--volume",
        &mount,
        "--env",
        "KUBECONFIG=/kubeconfig",
        &reference,
        "--public-url",
        &public_url,
        &callback_addr,
        &admin_addr,
        "--slack-url=http://127.0.0.1:9",
        "--slack-api-url=http://127.0.0.1:9/api",
        &watch,
        &lease,
        "--log-format=json",
    ]);
    podman(&args);
    let container = Container(name);

    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..300 {
        if let Ok(response) = http
            .get(format!("http://127.0.0.1:{admin}/readyz"))
            .send()
            .await
            && response.status().is_success()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = try_podman(&["logs", &container.0]);
    std::fs::write(
        support::log_dir().join(format!("image-run-{}.log", std::process::id())),
        format!("{}{}", logs.1, logs.2),
    )
    .expect("keep the log for the scan");
    assert!(
        ready,
        "the operator in the image did not become ready within 30 s:\n{}{}",
        logs.1, logs.2
    );

    let inspect: serde_json::Value =
        serde_json::from_str(&podman(&["inspect", &container.0])).expect("inspect");
    let inspect = &inspect[0];
    assert_eq!(inspect["HostConfig"]["ReadonlyRootfs"], true);
    let pid = inspect["State"]["Pid"].as_u64().expect("a pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(
        field("Uid"),
        ["65532"; 4],
        "real, effective, saved, fs uid: {status}"
    );
    assert_eq!(field("Gid"), ["65532"; 4], "{status}");
    assert_eq!(field("CapEff"), ["0000000000000000"], "{status}");
    assert_eq!(field("NoNewPrivs"), ["1"], "{status}");
}

/// (path, size) of every entry of a tar file, without a leading `./`.
fn list_tar(tar: &std::path::Path) -> Vec<(String, u64)> {
    support::must("tar", &["-tvf", &tar.to_string_lossy()], None)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // mode owner size date time name [-> target]
            let size = fields.get(2)?.parse().ok()?;
            let name = fields.get(5)?.trim_start_matches("./").to_owned();
            Some((name, size))
        })
        .collect()
}
