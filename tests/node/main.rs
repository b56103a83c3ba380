//! Tests on a real node: the chart installed with helm, its pods run by the kubelet (containerd,
//! runc) from the image built from the Dockerfile, the operator reaching the API server through
//! the `kubernetes` Service with the token the kubelet gives its pod.
//!
//! `make test` starts a cluster with a node (`CLUSTER_NODE=1`, in `.cluster/test-node`) and runs
//! these with `--include-ignored`. Without a node they fail at once, saying how to start one;
//! they never pass.

// Shared by several test binaries, each of which uses only part of it.
#[path = "../cluster/support/mod.rs"]
#[allow(dead_code, unused_imports)]
mod support;

#[allow(dead_code)]
mod image;
mod ingress;
mod node;
mod pods;
mod readme_helm;
mod release;
