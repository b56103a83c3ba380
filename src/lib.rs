//! slack-oauth-operator: obtains Slack OAuth tokens for workloads in a Kubernetes cluster and
//! keeps them in Secrets.
//!
//! The binaries (`slack-oauth-operator`, `crdgen`) are thin wrappers around this library, so that
//! the integration tests in `tests/` drive the same code the operator runs.

pub mod admin;
pub mod api;
pub mod authorization;
pub mod cache;
pub mod callback;
pub mod client;
pub mod config;
pub mod controller;
pub mod crdgen;
pub mod events;
pub mod metrics;
pub mod pingfederate;
pub mod plugin;
pub mod record;
pub mod retry;
pub mod run;
pub mod server;
pub mod slack;
pub mod status;
pub mod store;
pub mod telemetry;
