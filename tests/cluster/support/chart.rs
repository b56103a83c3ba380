//! The Helm chart as `helm template` renders it: its path, its example values, `--set` helpers,
//! and the rendered documents with lookups into them. Needs only helm, no control plane.

use std::{ffi::OsStr, path::PathBuf};

use serde_json::Value;

use super::tools::{helm, repo_root};

/// The Ingress host the chart tests use.
pub const HOST: &str = "slack-oauth.example.com";

/// The chart's directory, as helm takes it.
pub fn chart() -> String {
    repo_root()
        .join("charts/slack-oauth-operator")
        .to_string_lossy()
        .into_owned()
}

/// The example values files in the chart's `ci/` folder (which `helm lint` and chart-testing
/// pick up).
pub fn example_values_files() -> Vec<PathBuf> {
    let dir = repo_root().join("charts/slack-oauth-operator/ci");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension() == Some(OsStr::new("yaml")))
        .collect();
    files.sort();
    files
}

/// `--set` flags, one per `key=value`.
pub fn set(pairs: &[&str]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|pair| ["--set".to_owned(), (*pair).to_owned()])
        .collect()
}

/// An Ingress on [`HOST`] with a TLS certificate, so the public URL is `https://HOST`.
pub fn ingress_with_tls() -> Vec<String> {
    set(&[
        "ingress.enabled=true",
        &format!("ingress.host={HOST}"),
        "ingress.tls[0].secretName=slack-oauth-tls",
    ])
}

/// `watchNamespaces` as a `--set` value.
pub fn watching(namespaces: &[&str]) -> Vec<String> {
    set(&[&format!("watchNamespaces={{{}}}", namespaces.join(","))])
}

/// The documents `helm template` renders.
pub struct Rendered(pub Vec<Value>);

impl Rendered {
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.0.iter().filter(|d| d["kind"] == kind).collect()
    }

    /// The one document of `kind`.
    pub fn one(&self, kind: &str) -> &Value {
        match self.of_kind(kind).as_slice() {
            [one] => one,
            other => panic!(
                "expected one {kind}, found {}; rendered: {:?}",
                other.len(),
                self.names()
            ),
        }
    }

    /// `Kind namespace/name` of every document, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.0.iter().map(object_id).collect();
        names.sort();
        names
    }

    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self
            .0
            .iter()
            .map(|d| d["kind"].as_str().unwrap_or_default().to_owned())
            .collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// The operator's container in the Deployment.
    pub fn container(&self) -> &Value {
        operator_container(self.one("Deployment"))
    }
}

/// The documents of a multi-document YAML stream, without empty ones.
pub fn parse_documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap_or_else(|e| panic!("the rendered YAML parses: {e}\n{yaml}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// `helm template` of release `release` in `namespace` with `values`.
pub fn render(release: &str, namespace: &str, values: &[String]) -> Rendered {
    let chart = chart();
    let mut args = vec![
        "template",
        release,
        chart.as_str(),
        "--namespace",
        namespace,
    ];
    args.extend(values.iter().map(String::as_str));
    Rendered(parse_documents(&helm(&args)))
}

/// `Kind namespace/name`, naming an object in messages and maps.
pub fn object_id(object: &Value) -> String {
    format!(
        "{} {}/{}",
        object["kind"].as_str().unwrap_or_default(),
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

fn operator_container(deployment: &Value) -> &Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|containers| containers.iter().find(|c| c["name"] == "operator"))
        .unwrap_or_else(|| panic!("the Deployment has an `operator` container: {deployment:#}"))
}

/// The value of the container's `--name=value` argument.
pub fn flag(container: &Value, name: &str) -> String {
    let prefix = format!("{name}=");
    container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|arg| arg.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name}= argument in {:#}", container["args"]))
        .to_owned()
}

/// The container port named `name`.
pub fn container_port(container: &Value, name: &str) -> u64 {
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}: {:#}", container["ports"]))
}

/// The port of a `host:port` listen address such as `--admin-addr`'s.
pub fn port_of(address: &str) -> u64 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{address} ends with a port"))
}
