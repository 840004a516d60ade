//! Integration tests of aios-actors against a real HTTP fake provider on 127.0.0.1.

mod agents;
mod common;
mod layers;
mod long_running;
mod memory;
mod orchestration;
mod providers;
mod scheduler;
mod tools;
