//! `aiosctl audit`: tail and verify.

use clap::Subcommand;
use serde_json::{Value, json};

use crate::api::{Api, items, show, table};

#[derive(Subcommand, Debug)]
pub(crate) enum Audit {
    /// The latest entries.
    Tail {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Another node's chain (on a store nodes share), or `*` for every node's, merged
        /// by time.
        #[arg(long)]
        node: Option<String>,
    },
    /// Recompute the hash chain.
    Verify,
}

/// Runs an `audit` command.
pub(crate) async fn run(api: &Api, a: Audit, json_out: bool) -> anyhow::Result<()> {
    match a {
        Audit::Tail { limit, node } => {
            // Walk to the end, keeping the last `limit` entries.
            let merged = node.as_deref() == Some("*");
            let mut page = String::new();
            let mut last: Vec<Value> = Vec::new();
            loop {
                let mut path = format!("/v1/audit?limit=1000{page}");
                // Node names are [A-Za-z0-9._-], cursors `name:seq,…`: nothing to escape
                // in a query string.
                if let Some(n) = &node {
                    path.push_str(&format!("&node={n}"));
                }
                let v = api.get(&path).await?;
                last.extend(items(&v));
                if last.len() > limit {
                    last.drain(..last.len() - limit);
                }
                page = match (merged, v["next"].as_u64(), v["next_cursor"].as_str()) {
                    (false, Some(n), _) => format!("&after={n}"),
                    (true, _, Some(c)) => format!("&cursor={c}"),
                    _ => break,
                };
            }
            if json_out {
                show(&json!(last))?;
            } else {
                table(
                    &last,
                    &[
                        ("NODE", "/node"),
                        ("SEQ", "/seq"),
                        ("AT_MS", "/at_ms"),
                        ("TENANT", "/tenant"),
                        ("KEY", "/key_id"),
                        ("ACTION", "/action"),
                        ("OUTCOME", "/outcome"),
                    ],
                );
            }
        }
        Audit::Verify => {
            let v = api.get("/v1/audit/verify").await?;
            if json_out {
                show(&v)?;
            } else if v["ok"] == json!(true) {
                println!("audit chain intact: {} entries", v["checked"]);
            } else {
                println!(
                    "audit chain BROKEN at entry {}: {}",
                    v["broken_at"], v["problem"]
                );
            }
            if v["ok"] != json!(true) {
                std::process::exit(2);
            }
        }
    }
    Ok(())
}
