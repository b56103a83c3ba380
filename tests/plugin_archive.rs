//! `make plugin-archive` (hack/plugin-archive.sh) packs the kubectl plugin for krew: an archive
//! with the binary at its root and a krew manifest whose sha256, `bin` and `files` match it. The
//! test packs the plugin binary cargo built for the tests (PLUGIN_BINARY), so it builds nothing
//! and needs no cluster.

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde::Deserialize;
use sha2::{Digest, Sha256};

const BIN: &str = "kubectl-slack_oauth";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The parts of krew's plugin manifest (apiVersion krew.googlecontainertools.github.com/v1alpha2)
/// that the script writes.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Manifest {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    version: String,
    homepage: String,
    short_description: String,
    description: String,
    platforms: Vec<Platform>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Platform {
    selector: Selector,
    uri: String,
    sha256: String,
    bin: String,
    files: Vec<FileOperation>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Selector {
    match_labels: MatchLabels,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct MatchLabels {
    os: String,
    arch: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct FileOperation {
    from: String,
    to: String,
}

/// A directory of its own under the system's temp dir, removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn succeeded(what: &str, output: Output) -> String {
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> String {
    let program = program.as_ref();
    let what = format!("{} {}", program.to_string_lossy(), args.join(" "));
    succeeded(
        &what,
        Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{what}: {e}")),
    )
}

fn sha256_hex(path: &Path) -> String {
    let bytes = fs::read(path).expect("read the archive");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn the_krew_archive_holds_the_plugin_and_its_manifest_matches_it() {
    let tmp = TempDir::new("plugin-archive");
    let out = tmp.0.join("out");
    let stdout = succeeded(
        "hack/plugin-archive.sh",
        Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/hack/plugin-archive.sh"
        ))
        .env("PLUGIN_BINARY", env!("CARGO_BIN_EXE_kubectl-slack_oauth"))
        .env("PLUGIN_OUT_DIR", &out)
        // The debug binary is ten times the release one: the fastest gzip saves most of the time.
        .env("PLUGIN_GZIP_LEVEL", "1")
        .env(
            "PLUGIN_BASE_URL",
            "https://downloads.example.com/slack-oauth",
        )
        .output()
        .expect("run hack/plugin-archive.sh"),
    );

    // It prints the archive's path, then the manifest's.
    let printed: Vec<&str> = stdout.lines().collect();
    let [archive, manifest_path] = printed[..] else {
        panic!("two paths on stdout: {stdout}");
    };
    let (archive, manifest_path) = (PathBuf::from(archive), PathBuf::from(manifest_path));
    assert_eq!(manifest_path, out.join("slack-oauth.yaml"));
    let archive_name = archive
        .file_name()
        .and_then(|n| n.to_str())
        .expect("an archive name");
    assert_eq!(archive.parent(), Some(out.as_path()));
    let platform_part = archive_name
        .strip_prefix(&format!("{BIN}-{VERSION}-"))
        .and_then(|rest| rest.strip_suffix(".tar.gz"))
        .unwrap_or_else(|| panic!("{archive_name} is {BIN}-{VERSION}-<os>-<arch>.tar.gz"));
    let (os, arch) = platform_part.split_once('-').expect("<os>-<arch>");
    assert!(["linux", "darwin"].contains(&os), "krew's os name: {os}");
    assert!(
        ["amd64", "arm64"].contains(&arch),
        "krew's arch name: {arch}"
    );

    let manifest: Manifest =
        serde_saphyr::from_str(&fs::read_to_string(&manifest_path).expect("read the manifest"))
            .expect("the manifest is YAML of krew's Plugin shape");
    assert_eq!(
        manifest.api_version,
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(manifest.kind, "Plugin");
    assert_eq!(manifest.metadata.name, "slack-oauth");
    assert_eq!(manifest.spec.version, format!("v{VERSION}"));
    assert!(manifest.spec.homepage.starts_with("https://"));
    assert!(!manifest.spec.short_description.is_empty());
    assert!(!manifest.spec.description.is_empty());
    let [platform] = &manifest.spec.platforms[..] else {
        panic!(
            "one platform, this machine's: {:?}",
            manifest.spec.platforms
        );
    };
    assert_eq!(platform.selector.match_labels.os, os);
    assert_eq!(platform.selector.match_labels.arch, arch);
    assert_eq!(
        platform.uri,
        format!("https://downloads.example.com/slack-oauth/{archive_name}")
    );
    assert_eq!(
        platform.sha256,
        sha256_hex(&archive),
        "the archive's sha256"
    );
    assert_eq!(platform.bin, BIN);

    let listed: BTreeSet<String> = run("tar", &["-tzf", &archive.to_string_lossy()])
        .lines()
        .map(str::to_owned)
        .collect();
    let copied: BTreeSet<String> = platform.files.iter().map(|f| f.from.clone()).collect();
    assert_eq!(copied, listed, "files[] copies all of the archive, no more");
    assert!(
        platform.files.iter().all(|f| f.to == "."),
        "{:?}",
        platform.files
    );
    assert!(listed.contains(BIN), "the binary at the root: {listed:?}");
    assert!(listed.contains("README.md"), "{listed:?}");
    let license = Path::new(env!("CARGO_MANIFEST_DIR")).join("LICENSE");
    assert_eq!(listed.contains("LICENSE"), license.exists(), "{listed:?}");

    let unpacked = tmp.0.join("unpacked");
    fs::create_dir_all(&unpacked).expect("create the unpack dir");
    run(
        "tar",
        &[
            "-xzf",
            &archive.to_string_lossy(),
            "-C",
            &unpacked.to_string_lossy(),
        ],
    );
    let binary = unpacked.join(&platform.bin);
    let mode = fs::metadata(&binary)
        .expect("the binary is unpacked")
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "executable: {mode:o}");
    let version = run(&binary, &["--version"]);
    assert_eq!(version.trim(), format!("kubectl slack-oauth {VERSION}"));
    let help = run(&binary, &["--help"]);
    for subcommand in ["authorize", "status", "reauthorize", "revoke", "manifest"] {
        assert!(help.contains(subcommand), "{subcommand} in --help: {help}");
    }
}
