//! Tests against the real local control plane (kube-apiserver, kube-controller-manager, etcd).
//! `make test` starts it and runs these with `--include-ignored`.

mod api_cost;
mod api_server;
mod chart;
mod connections;
mod custody;
mod deletion;
mod flow;
mod ha;
mod hardening;
mod lifecycle;
mod no_crd;
mod operator;
mod opt_in;
mod outage;
mod outage_cost;
mod pages;
mod pingfederate;
mod plugin;
mod readme;
mod refusals;
mod rollout;
mod scenario;
mod turns;
mod validation;
// Shared by several test binaries, each of which uses only part of it.
#[allow(dead_code, unused_imports)]
mod support;
