//! Integration tests of the `aios` facade: the node API, and crash tests with real processes.

#![allow(
    clippy::unwrap_used,
    unreachable_pub,
    reason = "test and benchmark code: a failed unwrap is a failed test; helpers are `pub` for the modules of one binary"
)]

mod crash;
mod mcp;
mod memory_crash;
mod run_crash;
mod runtime;
