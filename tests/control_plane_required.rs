//! A test that needs the control plane must fail loudly without one, never pass. This checks the
//! one helper every such test gets its client from.

#[path = "cluster/support/mod.rs"]
#[allow(dead_code, unused_imports)]
mod support;

#[tokio::test]
async fn missing_kubeconfig_fails_with_instructions() {
    let error = support::client_from(None)
        .await
        .err()
        .expect("no client without a KUBECONFIG");
    assert!(error.contains("KUBECONFIG is not set"), "{error}");
    assert!(error.contains("make test"), "{error}");
}

#[tokio::test]
async fn unreachable_control_plane_fails_with_instructions() {
    let dir = std::env::temp_dir().join(format!("sog-unreachable-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("kubeconfig");
    // Port 9 (discard) on loopback: nothing listens there.
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:9', insecure-skip-tls-verify: true}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
    )
    .expect("write kubeconfig");
    let error = support::client_from(Some(&path))
        .await
        .err()
        .expect("no client for a dead API server");
    assert!(
        error.contains("not reachable") || error.contains("did not answer"),
        "{error}"
    );
    assert!(error.contains("make cluster-up"), "{error}");
}
