//! The cluster's node, as the tests see it: where it is (`CLUSTER_DIR/node/node.env`, written by
//! `hack/node.sh`), the operator image loaded into it, a relay from a loopback port of the host
//! to a node port, and the pods' logs kept for the final scan for secrets.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};

use tokio::net::{TcpListener, TcpStream};

use crate::{image, support};

const HOW_TO_START: &str = "start a cluster with a node, `export CLUSTER_DIR=$PWD/.cluster/node; CLUSTER_NODE=1 make cluster-up; export KUBECONFIG=$CLUSTER_DIR/kubeconfig`, or run everything with `make test`";

/// The node of the cluster in `CLUSTER_DIR`.
pub struct Node {
    pub cluster_dir: PathBuf,
    pub name: String,
    /// The node's address (its end of the veth); node ports answer here.
    pub ip: Ipv4Addr,
    /// In every pod, TCP to 127.0.0.1 on these ports goes to the same port on the host.
    pub host_ports: std::ops::RangeInclusive<u16>,
}

/// The node, read once. Panics with instructions when the cluster has none, so no test that
/// needs a node passes without one.
pub fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| read_node().unwrap_or_else(|message| panic!("{message}")))
}

fn read_node() -> Result<Node, String> {
    let cluster_dir = PathBuf::from(
        std::env::var_os("CLUSTER_DIR")
            .ok_or_else(|| format!("CLUSTER_DIR is not set: {HOW_TO_START}"))?,
    );
    let file = cluster_dir.join("node/node.env");
    let text = std::fs::read_to_string(&file).map_err(|e| {
        format!(
            "the cluster in {} has no running node ({}: {e}): {HOW_TO_START}",
            cluster_dir.display(),
            file.display()
        )
    })?;
    let env: HashMap<&str, &str> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    let get = |key: &str| {
        env.get(key)
            .copied()
            .ok_or_else(|| format!("{} has no {key}", file.display()))
    };
    let (low, high) = get("NODE_HOST_PORTS")?
        .split_once(':')
        .ok_or_else(|| format!("NODE_HOST_PORTS is empty in {}: the node tests need the loopback-to-host ports (hack/node.sh)", file.display()))?;
    Ok(Node {
        name: get("NODE_NAME")?.to_owned(),
        ip: get("NODE_IP")?
            .parse()
            .map_err(|e| format!("NODE_IP: {e}"))?,
        host_ports: low.parse().map_err(|e| format!("NODE_HOST_PORTS: {e}"))?
            ..=high.parse().map_err(|e| format!("NODE_HOST_PORTS: {e}"))?,
        cluster_dir,
    })
}

/// What every test on the node shares: the CRD, and the grants of every namespace. A test that
/// changes them for all holds it alone ([`cluster_to_itself`]); every release holds it shared
/// ([`share_cluster`]), so such a test never runs beside one.
static SHARED: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Waits until no test holds the cluster to itself, and keeps it from doing so while held.
pub async fn share_cluster() -> tokio::sync::RwLockReadGuard<'static, ()> {
    SHARED.read().await
}

/// Waits until no other test uses the cluster, and keeps them waiting while held.
pub async fn cluster_to_itself() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    SHARED.write().await
}

/// The tag under which the same image is loaded a second time, for rolling upgrades.
pub fn next_tag() -> String {
    format!("{}-next", env!("CARGO_PKG_VERSION"))
}

/// Builds the operator image (once) and loads it into the node's containerd under its own tag
/// and [`next_tag`]. Returns the first tag.
pub fn load_image() -> &'static str {
    static LOADED: OnceLock<String> = OnceLock::new();
    LOADED.get_or_init(|| {
        let node = node();
        let image = image::image();
        let next = format!("{}:{}", image.name, next_tag());
        let output = std::process::Command::new(support::repo_root().join("hack/node.sh"))
            .args(["load-image", &image.archive.to_string_lossy(), &next])
            .env("CLUSTER_DIR", &node.cluster_dir)
            .output()
            .expect("run hack/node.sh load-image");
        assert!(
            output.status.success(),
            "hack/node.sh load-image failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        image.tag.clone()
    })
}

/// A free port in the node's loopback-to-host range, bound on every address of the host (pods
/// come from the node's veth, the browser from loopback).
pub fn host_port_listener() -> std::net::TcpListener {
    let range = node().host_ports.clone();
    let span = u32::from(*range.end() - *range.start()) + 1;
    let offset: u32 = {
        use rand::RngExt;
        rand::rng().random_range(0..span)
    };
    for i in 0..span {
        let port = *range.start() + u16::try_from((offset + i) % span).expect("in range");
        if let Ok(listener) = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)) {
            return listener;
        }
    }
    panic!("no free port in {range:?} for the Slack emulator");
}

/// Forwards TCP from `127.0.0.1:<port>` on the host to `target`, as a load balancer in front of
/// a node port would. Stops on drop.
pub struct Relay {
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(listener: std::net::TcpListener, target: SocketAddr) -> Self {
        listener.set_nonblocking(true).expect("non-blocking");
        let listener = TcpListener::from_std(listener).expect("tokio listener");
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    // A refused or failed connection closes the inbound one, which the client
                    // sees as a failed request, as it would through a real load balancer.
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { task }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps the logs of the pods in `namespace` for the final scan for secrets: hard links to the
/// kubelet's log files, made as they appear, so they outlive the pods (the kubelet deletes a
/// pod's logs with the pod) and still see every line written later. Stops on drop.
pub struct PodLogs {
    task: tokio::task::JoinHandle<()>,
}

impl PodLogs {
    pub fn keep(namespace: &str) -> Self {
        let root = node().cluster_dir.join("node/pod-logs");
        let prefix = format!("{namespace}_");
        let into = support::log_dir();
        let task = tokio::spawn(async move {
            loop {
                link_new_logs(&root, &prefix, &into);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Self { task }
    }
}

impl Drop for PodLogs {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn link_new_logs(root: &Path, prefix: &str, into: &Path) {
    let Ok(pods) = std::fs::read_dir(root) else {
        return;
    };
    for pod in pods.flatten() {
        let pod_dir = pod.file_name().to_string_lossy().into_owned();
        if !pod_dir.starts_with(prefix) {
            continue;
        }
        let Ok(containers) = std::fs::read_dir(pod.path()) else {
            continue;
        };
        for container in containers.flatten() {
            let Ok(files) = std::fs::read_dir(container.path()) else {
                continue;
            };
            for file in files.flatten() {
                let name = format!(
                    "pod-{pod_dir}-{}-{}",
                    container.file_name().to_string_lossy(),
                    file.file_name().to_string_lossy()
                );
                let link = into.join(name);
                if !link.exists() {
                    let _ = std::fs::hard_link(file.path(), link);
                }
            }
        }
    }
}
