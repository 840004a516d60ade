//! The runtime's integration tests against real `aiosd` processes and in-process daemons,
//! in one binary (one link instead of one per file). The cluster-mode tests, which need the
//! `cluster` feature, are the `cluster_mode` binary.

#![allow(
    clippy::unwrap_used,
    unreachable_pub,
    reason = "test code: a failed unwrap is a failed test; helpers are `pub` for the modules of one binary"
)]

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod cluster;
mod daemon;
mod old_data;
mod retention;
mod schedules;
mod tenants;
mod ui;
mod webhooks;
