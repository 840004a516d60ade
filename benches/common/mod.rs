//! Helpers shared by the benchmarks: percentiles, rates and the `BENCH` line format.
#![allow(dead_code)]

use std::time::Duration;

/// Prints one figure line: `BENCH <name> <key>=<value> ...`.
pub fn bench_line(name: &str, pairs: &[(&str, String)]) {
    let mut line = format!("BENCH {name}");
    for (k, v) in pairs {
        line.push_str(&format!(" {k}={v}"));
    }
    println!("{line}");
}

pub fn per_s(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// The `q` quantile (0..=1) of `samples` in microseconds; sorts them.
pub fn quantile_us(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort_unstable();
    let idx = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[idx].as_secs_f64() * 1e6
}

pub fn fmt0(x: f64) -> String {
    format!("{x:.0}")
}

pub fn fmt1(x: f64) -> String {
    format!("{x:.1}")
}

pub fn fmt2(x: f64) -> String {
    format!("{x:.2}")
}

/// A multi-threaded runtime with the machine's two cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building the tokio runtime")
}

/// Reads a count from the environment (for opt-in larger runs), or the default.
pub fn env_count(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
