//! The container image is built the way the tests build the release binary.

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .expect(path)
}

#[test]
fn dockerfile_builds_the_binary_with_the_same_command_as_make_build() {
    let dockerfile = read("Dockerfile");
    let makefile = read("Makefile");
    let command = "cargo build --locked --release --bin slack-oauth-operator";
    assert!(
        dockerfile.contains(&format!("RUN {command}")),
        "the Dockerfile builds with `{command}`"
    );
    assert!(
        makefile.contains(&format!("\t{command}")),
        "`make build` runs `{command}`"
    );
}

#[test]
fn runtime_image_is_distroless_and_runs_as_a_numeric_non_root_user() {
    let dockerfile = read("Dockerfile");
    let runtime = dockerfile.rsplit("FROM ").next().expect("a runtime stage");
    assert!(
        runtime.starts_with("gcr.io/distroless/"),
        "runtime stage: {runtime}"
    );
    assert!(runtime.contains("USER 65532:65532"));
    assert!(
        !runtime.contains("/bin/sh"),
        "no shell in the runtime stage"
    );
}

#[test]
fn chart_app_version_follows_the_crate_version() {
    let chart = read("charts/slack-oauth-operator/Chart.yaml");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        chart.contains(&format!("appVersion: \"{version}\"")),
        "Chart.yaml appVersion must be {version}"
    );
}
