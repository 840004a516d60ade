//! Integration tests of aios-actors against a real HTTP fake provider on 127.0.0.1.

#![allow(
    clippy::unwrap_used,
    unreachable_pub,
    reason = "test and benchmark code: a failed unwrap is a failed test; helpers are `pub` for the modules of one binary"
)]

mod agents;
mod common;
mod layers;
mod long_running;
mod memory;
mod orchestration;
mod providers;
mod scheduler;
mod tools;
