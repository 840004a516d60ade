//! `BENCH http` and `BENCH http_security_cost`: a release `aiosd` on 127.0.0.1 under load from
//! a keep-alive HTTP/1.1 load generator in this process, for two routes:
//! `get_agents` (GET `/v1/agents`, 10 agents) and `post_message` (POST a message to an agent
//! backed by the offline scripted model; each connection rotates over its own sessions).
//! Each route runs with security on (API key, rate limit set high, audit of the POSTs) and
//! then off (`insecure_no_auth`), in the same run; the cost line is rps on / rps off.
//!
//! `AIOS_BENCH_HTTP_SECS` (default 4) sets the seconds per case, `AIOS_BENCH_HTTP_CONNS`
//! (default 32) the connections, `AIOS_BENCH_HTTP_ROUNDS` (default 3) the on/off rounds whose
//! medians are printed.

#![allow(
    clippy::unwrap_used,
    unreachable_pub,
    reason = "test and benchmark code: a failed unwrap is a failed test; helpers are `pub` for the modules of one binary"
)]

#[path = "../../benches/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use common::{bench_line, env_count, fmt0, fmt2};
use support::{ADMIN, Aiosd};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn start(secure: bool) -> Aiosd {
    Aiosd::start(
        &format!(
            "insecure_no_auth = {}\n[rate_limit]\nrequests_per_s = 10000000\nburst = 10000000\n",
            !secure
        ),
        &[],
    )
}

/// One keep-alive connection sending requests one after another.
struct Conn {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
    body: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str) -> Self {
        let s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let (r, w) = s.into_split();
        Self {
            r: BufReader::new(r),
            w,
            body: Vec::new(),
        }
    }

    /// Sends one request, reads the response; returns the status.
    async fn send(&mut self, request: &[u8]) -> u16 {
        self.w.write_all(request).await.expect("write");
        let mut line = String::new();
        self.r.read_line(&mut line).await.expect("status line");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let mut len = 0usize;
        loop {
            line.clear();
            self.r.read_line(&mut line).await.expect("header");
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().expect("length");
            }
        }
        self.body.resize(len, 0);
        self.r.read_exact(&mut self.body).await.expect("body");
        status
    }
}

fn request(method: &str, path: &str, secure: bool, body: &str) -> Vec<u8> {
    let auth = if secure {
        format!("authorization: Bearer {ADMIN}\r\n")
    } else {
        String::new()
    };
    let mut r = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{auth}");
    if !body.is_empty() {
        r.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r.into_bytes()
}

struct Outcome {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn load(addr: &str, secure: bool, route: &str, conns: usize, secs: u64) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let addr = addr.to_string();
        let route = route.to_string();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await;
            let mut lat = Vec::new();
            let get = request("GET", "/v1/agents", secure, "");
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let status = if route == "get_agents" {
                    conn.send(&get).await
                } else {
                    // A fresh session every 20 turns keeps conversations short.
                    let body = format!(r#"{{"content":"hello {n}","session":"c{c}-{}"}}"#, n / 20);
                    conn.send(&request("POST", "/v1/agents/echo/messages", secure, &body))
                        .await
                };
                assert_eq!(status, 200, "{route}: status {status}");
                lat.push(t.elapsed());
                n += 1;
            }
            lat
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("load task"));
    }
    let elapsed = started.elapsed();
    let rps = all.len() as f64 / elapsed.as_secs_f64();
    let p50 = common::quantile_us(&mut all, 0.5) / 1000.0;
    let p99 = common::quantile_us(&mut all, 0.99) / 1000.0;
    Outcome {
        rps,
        p50_ms: p50,
        p99_ms: p99,
    }
}

async fn setup(addr: &str, secure: bool) {
    let mut conn = Conn::open(addr).await;
    for i in 0..10 {
        let name = if i == 0 {
            "echo".to_string()
        } else {
            format!("agent{i}")
        };
        let body = format!(
            r#"{{"name":"{name}","role":"executor","model":"scripted/demo","system_prompt":"Be brief."}}"#
        );
        let status = conn
            .send(&request("POST", "/v1/agents", secure, &body))
            .await;
        assert_eq!(status, 201, "creating {name}");
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let secs = env_count("AIOS_BENCH_HTTP_SECS", 4);
    let conns = env_count("AIOS_BENCH_HTTP_CONNS", 32) as usize;
    // Rounds alternate security on and off, each on a fresh daemon; medians are printed, so
    // one slow round (a sled flush storm, the other core busy) does not decide the ratio.
    let rounds = env_count("AIOS_BENCH_HTTP_ROUNDS", 3).max(1) as usize;
    let rt = common::runtime();
    for route in ["get_agents", "post_message"] {
        let mut results: [Vec<Outcome>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..rounds {
            for (i, secure) in [true, false].into_iter().enumerate() {
                let server = start(secure);
                let out = rt.block_on(async {
                    setup(server.addr(), secure).await;
                    // Warm-up.
                    load(server.addr(), secure, route, conns, 1).await;
                    load(server.addr(), secure, route, conns, secs).await
                });
                results[i].push(out);
                drop(server);
            }
        }
        let mut rps = [0.0f64; 2];
        for (i, secure) in [true, false].into_iter().enumerate() {
            let r = &results[i];
            rps[i] = median(r.iter().map(|o| o.rps).collect());
            bench_line(
                "http",
                &[
                    ("route", route.to_string()),
                    ("security", if secure { "on" } else { "off" }.to_string()),
                    ("rps", fmt0(rps[i])),
                    ("p50_ms", fmt2(median(r.iter().map(|o| o.p50_ms).collect()))),
                    ("p99_ms", fmt2(median(r.iter().map(|o| o.p99_ms).collect()))),
                    ("conns", conns.to_string()),
                    ("rounds", rounds.to_string()),
                ],
            );
        }
        bench_line(
            "http_security_cost",
            &[
                ("route", route.to_string()),
                ("ratio", fmt2(rps[0] / rps[1])),
            ],
        );
    }
}
