//! The operator image as the tests build it: `hack/image.sh` (what `make image` runs) from the
//! project's Dockerfile, with the Debian stand-ins for the base images because no image registry
//! is reachable here. Built once per test binary; after `make test`'s own image step every layer
//! is cached, so this takes seconds.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// The name the image is built under: the one the chart's values name in the node tests.
pub const NAME: &str = "localhost/slack-oauth-operator";

/// The built image.
pub struct Image {
    pub name: String,
    pub tag: String,
    /// The OCI archive `hack/image.sh` wrote.
    pub archive: PathBuf,
    /// The unpacked size, as podman reports it.
    pub size_bytes: u64,
}

impl Image {
    /// `name:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the image once for this test binary and returns it. Panics with the build's output if
/// it fails, so no test that needs the image passes without it.
pub fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(build)
}

fn build() -> Image {
    let tag = env!("CARGO_PKG_VERSION").to_owned();
    let output = Command::new(repo().join("hack/image.sh"))
        .env("IMAGE_BASES", "stand-in")
        // What `make test` builds first, so this finds every layer cached (Cargo.toml).
        .env("IMAGE_PROFILE", "image-test")
        .env("IMAGE", NAME)
        .env("IMAGE_TAG", &tag)
        .env_remove("IMAGE_ARCHIVE")
        .output()
        .expect("run hack/image.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "hack/image.sh failed ({:?})\n--- stdout\n{stdout}\n--- stderr (last 60 lines)\n{}",
        output.status.code(),
        tail(&stderr, 60)
    );
    let archive = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        archive.is_file(),
        "hack/image.sh printed no archive path: {stdout}"
    );
    let image = Image {
        name: NAME.to_owned(),
        tag,
        archive,
        size_bytes: 0,
    };
    let size = podman(&[
        "image",
        "inspect",
        "--format",
        "{{.Size}}",
        &image.reference(),
    ]);
    Image {
        size_bytes: size
            .trim()
            .parse()
            .expect("podman reports the size in bytes"),
        ..image
    }
}

/// `hack/podman.sh <args>` (podman with the project's store and runtime), which must succeed; its
/// standard output.
pub fn podman(args: &[&str]) -> String {
    let output = Command::new(repo().join("hack/podman.sh"))
        .args(args)
        .output()
        .expect("run hack/podman.sh");
    assert!(
        output.status.success(),
        "podman {} failed ({:?}): {}",
        args.join(" "),
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Like [`podman`], for a command that may fail: (success, stdout, stderr).
pub fn try_podman(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(repo().join("hack/podman.sh"))
        .args(args)
        .output()
        .expect("run hack/podman.sh");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
