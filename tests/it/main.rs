//! Integration tests of the `aios` facade: the node API, and crash tests with real processes.

mod crash;
mod mcp;
mod memory_crash;
mod run_crash;
mod runtime;
