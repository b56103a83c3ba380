//! The chart's pods on the node. Every test installs a release of its own, in a namespace of its
//! own, so they run side by side. (`make test` skips `pods::` in its first run, which has no
//! node, and runs this binary once the node is up.)

mod failover;
mod ingress;
mod install;
mod uninstall;
mod upgrade;
