//! The runtime's tests that need the `cluster` feature (ractor_cluster between `aiosd`
//! processes, and the deployment files for the cluster image):
//! `cargo test -p aios-runtime --features cluster --test cluster_mode`.

#![allow(
    clippy::unwrap_used,
    unreachable_pub,
    reason = "test code: a failed unwrap is a failed test; helpers are `pub` for the modules of one binary"
)]

#[path = "../common/mod.rs"]
mod common;

mod deploy;
mod membership;
