//! The control plane's audit log, for tests that count what reached the API server.

use std::path::{Path, PathBuf};

/// The control plane's audit log, from `CLUSTER_DIR`: JSON lines, Metadata level, one event for
/// every write and for every get, list and watch of Secrets and grants (see `hack/cluster.sh`).
pub fn audit_log() -> PathBuf {
    let dir = std::env::var_os("CLUSTER_DIR").unwrap_or_else(|| {
        panic!("CLUSTER_DIR is not set: `make test` sets it to the local control plane's directory")
    });
    PathBuf::from(dir).join("audit.log")
}

/// The audit log's length now: pass it as `from` to read only what is logged after this point.
pub fn audit_offset(audit: &Path) -> u64 {
    std::fs::metadata(audit).map(|m| m.len()).unwrap_or(0)
}

/// Every audit event logged after byte `from` of the audit log, reads and writes alike. A watch
/// appears twice, at `ResponseStarted` and at `ResponseComplete`, with one `auditID`.
pub fn audit_events_since(audit: &Path, from: u64) -> Vec<serde_json::Value> {
    let text = std::fs::read(audit).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(0).min(text.len());
    String::from_utf8_lossy(&text[start..])
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .collect()
}

/// Write requests logged after byte `from` of the audit log that touched `namespace`.
pub fn audit_writes_in_namespace(audit: &Path, from: u64, namespace: &str) -> Vec<String> {
    audit_events_since(audit, from)
        .into_iter()
        .filter(|event| event["objectRef"]["namespace"] == namespace)
        .filter(|event| {
            matches!(
                event["verb"].as_str(),
                Some("create" | "update" | "patch" | "delete" | "deletecollection")
            )
        })
        .map(|event| {
            format!(
                "{} {}/{} by {}",
                event["verb"].as_str().unwrap_or_default(),
                event["objectRef"]["resource"].as_str().unwrap_or_default(),
                event["objectRef"]["name"].as_str().unwrap_or_default(),
                event["userAgent"].as_str().unwrap_or_default()
            )
        })
        .collect()
}
