//! `BENCH tool_call`: a no-op tool called through the tool service — grant check, input
//! schema validation, the host actor hop and task, output check — one call at a time, against
//! calling the same implementation directly in the same run. Goal p99 ≤ 50 µs.
//! `AIOS_BENCH_TOOL_CALLS` (default 20,000) sets the number of calls.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aios::actors::records::Records;
use aios::actors::tools::{
    CallContext, Grant, ToolImpl, ToolManifest, ToolRegistry, ToolRequirement, ToolService,
};
use aios_supervisor::snapshot::{SledStore, Snapshots};
use aios_supervisor::{Strategy, SupervisorSpec, TreeEnv, start_root};
use common::{bench_line, env_count, fmt0, fmt1, per_s, quantile_us};
use serde_json::{Value, json};

struct Noop;

#[async_trait::async_trait]
impl ToolImpl for Noop {
    async fn call(&self, args: Value, _: &CallContext) -> Result<Value, String> {
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
        let service = ToolService::new(
            ToolRegistry::open(Records::new(snapshots))
                .await
                .expect("registry"),
            sup,
        );
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
        service.grant(Grant {
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
        let start = Instant::now();
        for n in 0..calls {
            std::hint::black_box(noop.call(json!({"n": n}), &ctx).await.expect("call"));
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
        root.shutdown(Duration::from_secs(10)).await.expect("stop");
    });
}
