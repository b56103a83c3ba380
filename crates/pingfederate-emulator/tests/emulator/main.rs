//! The emulator over HTTP, as the operator's PingFederate client uses it.

mod auth;
mod connections;
mod faults;
mod handle;
mod outage;
mod replicate;
mod secrets;
mod support;
