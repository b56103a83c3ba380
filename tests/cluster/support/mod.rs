//! What the tests need around the code under test, one file per concern: a client and the CRD
//! (`client`), a namespace of each test's own (`namespace`), grants as the tests watch them
//! (`grants`), the operator process (`operator`), a browser (`browser`), a Slack emulator
//! (`slack`), the control plane's audit log (`audit`), the chart as helm renders it (`chart`),
//! and the machine with its tools and the one way to run a program (`tools`).
//!
//! Tests in the `cluster` binary are `#[ignore]`d so that a plain `cargo test` runs only the fast
//! tests. `make test` starts the local control plane and runs them with `--include-ignored`. Run
//! without a control plane, they fail at once with a message that says how to start one; they
//! never pass.
//!
//! Other test binaries include this module with `#[path = "cluster/support/mod.rs"] mod
//! support;`, so nothing here refers to `crate::`.

mod audit;
mod browser;
pub mod chart;
mod client;
mod grants;
mod namespace;
mod operator;
pub mod readme_blocks;
mod slack;
mod tools;

pub use audit::{audit_events_since, audit_log, audit_offset, audit_writes_in_namespace};
pub use browser::{Browser, BrowserPage, approve_in_browser};
pub use client::{client, client_from, install_crd};
pub use grants::{
    SHARED_WITH_GRANTS, open_link, ready_reason, shared_client_secret, wait_for_grant,
    wait_for_grant_within, wait_for_grants,
};
pub use namespace::TestNamespace;
pub use operator::{Launch, Operator, apiserver_port, connections_to, cpu_seconds, log_dir};
pub use slack::TestSlack;
pub use tools::{
    Ran, TempDir, free_port, helm, kubectl, must, must_fail, repo_root, run, tool, tool_from,
};
