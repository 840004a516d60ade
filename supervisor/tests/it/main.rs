//! Integration tests of `aios-supervisor`, one binary (see STYLE: link time).

mod common;
mod mailbox;
mod model;
mod postgres;
mod snapshot;
mod strategy;
