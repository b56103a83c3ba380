//! The emulator over HTTP, as the operator and a browser use it.

mod auth;
mod consent;
mod exchange;
mod faults;
mod handle;
mod rotation;
mod scim;
mod support;
