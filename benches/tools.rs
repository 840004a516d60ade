//! `BENCH tool_call`: a no-op tool called through the tool service — grant check, input
//! schema validation, the host actor hop and task, output check — one call at a time, against
//! calling the same implementation directly in the same run. Goal p99 ≤ 50 µs.
//! `AIOS_BENCH_TOOL_CALLS` (default 20,000) sets the number of calls.
//!
//! `BENCH mcp_stdio`: the `echo` tool of the `aios-mcp-test-server` child process called over
//! stdio through the tool service (grants, schema, host actor, MCP round trip), against a bare
//! `rmcp` client calling the same tool of another child in the same run.
//! `AIOS_BENCH_MCP_CALLS` (default 5,000) sets the number of calls.

#![allow(
    clippy::unwrap_used,
    unreachable_pub,
    reason = "test and benchmark code: a failed unwrap is a failed test; helpers are `pub` for the modules of one binary"
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aios::actors::records::Records;
use aios::actors::tools::{
    CallContext, Grant, McpServerConfig, ToolManifest, ToolRegistry, ToolRequirement, ToolService,
};
use aios_core::{Tool, ToolContext, ToolError, ToolSpec};
use aios_supervisor::snapshot::{SledStore, Snapshots};
use aios_supervisor::{Strategy, SupervisorSpec, TreeEnv, start_root};
use common::{bench_line, env_count, fmt0, fmt1, per_s, quantile_us};
use serde_json::{Value, json};

struct Noop;

#[async_trait::async_trait]
impl Tool for Noop {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "noop".into(),
            description: "Returns its arguments.".into(),
            parameters: json!({"type": "object"}),
        }
    }

    async fn call(&self, args: Value, _: &ToolContext) -> Result<Value, ToolError> {
        Ok(args)
    }
}

fn main() {
    let calls = env_count("AIOS_BENCH_TOOL_CALLS", 20_000) as usize;
    common::runtime().block_on(async {
        let snapshots = Snapshots::new(Arc::new(SledStore::temporary().expect("store")));
        let root = start_root(
            SupervisorSpec::new("bench", Strategy::OneForOne),
            TreeEnv::new(Some(snapshots.clone())),
        )
        .await
        .expect("root");
        let sup = root
            .supervisor()
            .start_supervisor(SupervisorSpec::dynamic("tools"))
            .await
            .expect("tools supervisor");
        let service = ToolService::open(
            ToolRegistry::open(Records::new(snapshots))
                .await
                .expect("registry"),
            sup,
        )
        .await
        .expect("service");
        let manifest = ToolManifest::from_toml(
            r#"
name = "noop"
version = "1.0.0"
description = "Returns its arguments."
input_schema = { type = "object", properties = { n = { type = "integer" } }, required = ["n"] }
"#,
        )
        .expect("manifest");
        service
            .install(manifest, Arc::new(Noop))
            .await
            .expect("install");
        service.grant_node(Grant {
            tools: vec!["*".into()],
            ..Grant::default()
        });
        let req = ToolRequirement::parse("noop@^1").expect("req");
        let ctx = CallContext {
            agent: "bench".into(),
            ..CallContext::default()
        };
        // Warm-up.
        for n in 0..1000 {
            service
                .call(&req, json!({"n": n}), &ctx)
                .await
                .expect("call");
        }
        let mut lat = Vec::with_capacity(calls);
        let start = Instant::now();
        for n in 0..calls {
            let t = Instant::now();
            service
                .call(&req, json!({"n": n}), &ctx)
                .await
                .expect("call");
            lat.push(t.elapsed());
        }
        let ours = per_s(calls as u64, start.elapsed());
        let noop = Noop;
        let direct_ctx = ToolContext {
            agent: Some(aios_core::AgentId::main("bench")),
            ..ToolContext::default()
        };
        let start = Instant::now();
        for n in 0..calls {
            std::hint::black_box(noop.call(json!({"n": n}), &direct_ctx).await.expect("call"));
        }
        let direct = per_s(calls as u64, start.elapsed());
        bench_line(
            "tool_call",
            &[
                ("p50_us", fmt1(quantile_us(&mut lat, 0.5))),
                ("p99_us", fmt1(quantile_us(&mut lat, 0.99))),
                ("per_s", fmt0(ours)),
                ("direct_per_s", fmt0(direct)),
                ("calls", calls.to_string()),
            ],
        );

        let mcp_calls = env_count("AIOS_BENCH_MCP_CALLS", 5_000) as usize;
        let server = env!("CARGO_BIN_EXE_aios-mcp-test-server");
        service
            .add_mcp_server(McpServerConfig::stdio("b", server, vec![]))
            .await
            .expect("MCP server");
        let echo = ToolRequirement::parse("b__echo").expect("req");
        let args = json!({"text": "ping"});
        for _ in 0..200 {
            service.call(&echo, args.clone(), &ctx).await.expect("call");
        }
        let mut lat = Vec::with_capacity(mcp_calls);
        for _ in 0..mcp_calls {
            let t = Instant::now();
            service.call(&echo, args.clone(), &ctx).await.expect("call");
            lat.push(t.elapsed());
        }

        use rmcp::ServiceExt;
        let child = rmcp::transport::TokioChildProcess::new(tokio::process::Command::new(server))
            .expect("spawn");
        let client = ().serve(child).await.expect("handshake");
        let call = || {
            let mut p = rmcp::model::CallToolRequestParams::new("echo");
            p.arguments = args.as_object().cloned();
            client.call_tool(p)
        };
        for _ in 0..200 {
            call().await.expect("call");
        }
        let mut direct = Vec::with_capacity(mcp_calls);
        for _ in 0..mcp_calls {
            let t = Instant::now();
            call().await.expect("call");
            direct.push(t.elapsed());
        }
        let p99 = quantile_us(&mut lat, 0.99);
        let direct_p99 = quantile_us(&mut direct, 0.99);
        bench_line(
            "mcp_stdio",
            &[
                ("p50_us", fmt1(quantile_us(&mut lat, 0.5))),
                ("p99_us", fmt1(p99)),
                ("direct_p50_us", fmt1(quantile_us(&mut direct, 0.5))),
                ("direct_p99_us", fmt1(direct_p99)),
                ("ratio_p99", format!("{:.2}", p99 / direct_p99)),
                ("calls", mcp_calls.to_string()),
            ],
        );
        drop(client);
        root.shutdown(Duration::from_secs(10)).await.expect("stop");
    });
}
