//! Integration tests of `aios-supervisor`, one binary (see STYLE: link time).

#![allow(
    clippy::unwrap_used,
    unreachable_pub,
    reason = "test and benchmark code: a failed unwrap is a failed test; helpers are `pub` for the modules of one binary"
)]

mod common;
mod mailbox;
mod model;
mod postgres;
mod snapshot;
mod strategy;
