//! Tests against the real local control plane (kube-apiserver, kube-controller-manager, etcd).
//! `make test` starts it and runs these with `--include-ignored`.

mod api_server;
mod operator;
mod support;
