//! What the benchmarks share beyond the cluster tests' support code: their parameters, the
//! control plane check, the operator's memory and metrics, and reading the audit log across a
//! rotation. Each bench includes it with `mod common;`, and `support` beside it.

use std::time::Duration;

use slack_oauth_operator::api::SlackOAuthGrant;

use crate::support;

/// The number in environment variable `name`, or `default` when it is unset.
pub fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}

pub fn minutes_seconds(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs();
    format!("{} min {} s", seconds / 60, seconds % 60)
}

/// Fails at once, saying how to start one, when there is no control plane.
pub async fn require_control_plane(bench: &str) {
    let kubeconfig = std::env::var_os("KUBECONFIG").map(std::path::PathBuf::from);
    if let Err(message) = support::client_from(kubeconfig.as_deref()).await {
        panic!(
            "{bench} needs the local control plane: run `make cluster-up`, then \
             `source .cluster/local/env` to export KUBECONFIG ({message})"
        );
    }
}

/// Ready with reason `Authorized`: approved, and the token in its Secret.
pub fn is_authorized(grant: &SlackOAuthGrant) -> bool {
    grant.status.as_ref().is_some_and(|st| {
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True" && c.reason == "Authorized")
    })
}

/// The nearest-rank percentile of `values`.
pub fn percentile<T: Copy + Ord + Default>(values: &[T], p: f64) -> T {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1))
        .copied()
        .unwrap_or_default()
}

/// The resident memory of process `pid`, in KiB (`VmRSS`); 0 once it has exited.
pub fn rss_kib(pid: u32) -> u64 {
    i32::try_from(pid)
        .ok()
        .and_then(|pid| procfs::process::Process::new(pid).ok())
        .and_then(|process| process.status().ok())
        .and_then(|status| status.vmrss)
        .unwrap_or_default()
}

/// The sum of every series of the operator's metric `name` (without the `slack_oauth_operator_`
/// prefix) whose labels contain `labels`, from its `/metrics` text.
pub fn metric_sum(metrics: &str, name: &str, labels: &str) -> f64 {
    let full = format!("slack_oauth_operator_{name}");
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let series = l.split([' ', '{']).next().unwrap_or_default();
            series == full
        })
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A point in the control plane's audit log (`CLUSTER_DIR/audit.log`), which the API server
/// renames to `audit-<time>.log` when it reaches 100 MB, as it can within one run.
pub struct AuditMark {
    inode: u64,
    offset: u64,
}

impl AuditMark {
    /// Now; `None` when `CLUSTER_DIR` is not set.
    pub fn now() -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        std::env::var_os("CLUSTER_DIR")?;
        let log = support::audit_log();
        Some(Self {
            inode: std::fs::metadata(&log).map(|m| m.ino()).unwrap_or_default(),
            offset: support::audit_offset(&log),
        })
    }

    /// Every event logged since, across one rotation; `None` after more.
    pub fn events_since(&self) -> Option<Vec<serde_json::Value>> {
        Some(
            self.pieces()?
                .iter()
                .flat_map(|(log, from)| support::audit_events_since(log, *from))
                .collect(),
        )
    }

    /// The writes to `namespace` logged since (`verb resource/name by agent`), across one
    /// rotation; `None` after more.
    pub fn writes_since(&self, namespace: &str) -> Option<Vec<String>> {
        Some(
            self.pieces()?
                .iter()
                .flat_map(|(log, from)| support::audit_writes_in_namespace(log, *from, namespace))
                .collect(),
        )
    }

    /// The files that hold what was logged since, each with the offset to read from.
    fn pieces(&self) -> Option<Vec<(std::path::PathBuf, u64)>> {
        use std::os::unix::fs::MetadataExt;
        let log = support::audit_log();
        let inode = |path: &std::path::Path| std::fs::metadata(path).map(|m| m.ino()).ok();
        if inode(&log) == Some(self.inode) {
            return Some(vec![(log, self.offset)]);
        }
        let rotated = log
            .parent()
            .and_then(|dir| std::fs::read_dir(dir).ok())
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| inode(path) == Some(self.inode))?;
        Some(vec![(rotated, self.offset), (log, 0)])
    }
}

/// Whether an audit event is a request that changes state.
pub fn is_write(event: &serde_json::Value) -> bool {
    matches!(
        event["verb"].as_str(),
        Some("create" | "update" | "patch" | "delete" | "deletecollection")
    )
}
