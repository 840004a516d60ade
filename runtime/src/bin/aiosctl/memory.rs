//! `aiosctl memory`: namespaces, search, import and export, shards.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::api::{Api, listing, show, table};

#[derive(Subcommand, Debug)]
pub(crate) enum Memory {
    /// List namespaces.
    Namespaces,
    /// Create a namespace.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        shards: u32,
    },
    /// Search a namespace.
    Search {
        namespace: String,
        query: String,
        #[arg(short, default_value_t = 5)]
        k: usize,
    },
    /// Import a JSONL file of `{"text": …, "importance"?: …, "tags"?: […]}` lines (an
    /// export's lines are accepted: their text, importance and tags are kept).
    Import { namespace: String, file: PathBuf },
    /// A namespace's shards: items, index, and the node hosting each (in a cluster).
    Shards { namespace: String },
    /// Show or set where a namespace's shards may run in a cluster (applied now).
    Place {
        namespace: String,
        /// On this node only.
        #[arg(long)]
        node: Option<String>,
        /// On the nodes with this tag (repeatable); spread over them.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Each shard on the allowed node hosting the fewest shards when it is placed.
        #[arg(long)]
        least_loaded: bool,
        /// Back to the default: spread over every node.
        #[arg(long, conflicts_with_all = ["node", "tags", "least_loaded"])]
        reset: bool,
    },
    /// Export a namespace as JSON lines (to stdout, or `--out FILE`).
    Export {
        namespace: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Erase the memories of a user (or of an agent) in a namespace.
    Erase {
        namespace: String,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        agent: Option<String>,
    },
}

/// Runs a `memory` command.
pub(crate) async fn run(api: &Api, m: Memory, json_out: bool) -> anyhow::Result<()> {
    match m {
        Memory::Namespaces => {
            let v = api.get("/v1/memory/namespaces").await?;
            listing(
                &v,
                json_out,
                &[("NAME", "/name"), ("SHARDS", "/shards"), ("DIM", "/dim")],
            )?;
        }
        Memory::Create { name, shards } => show(
            &api.post(
                "/v1/memory/namespaces",
                json!({"name": name, "shards": shards}),
            )
            .await?,
        )?,
        Memory::Search {
            namespace,
            query,
            k,
        } => {
            let v = api
                .post(
                    &format!("/v1/memory/namespaces/{namespace}/search"),
                    json!({"query": query, "k": k}),
                )
                .await?;
            if json_out {
                show(&v)?;
            } else {
                let hits = v["hits"].as_array().cloned().unwrap_or_default();
                table(
                    &hits,
                    &[("ID", "/id"), ("SCORE", "/score"), ("TEXT", "/text")],
                );
            }
        }
        Memory::Import { namespace, file } => import(api, &namespace, &file).await?,
        Memory::Place {
            namespace,
            node,
            tags,
            least_loaded,
            reset,
        } => {
            api.placement(
                &format!("/v1/memory/namespaces/{namespace}/placement"),
                node,
                tags,
                least_loaded,
                reset,
            )
            .await?;
        }
        Memory::Shards { namespace } => {
            let v = api
                .get(&format!("/v1/memory/namespaces/{namespace}/shards"))
                .await?;
            listing(
                &v,
                json_out,
                &[
                    ("SHARD", "/shard"),
                    ("NODE", "/node"),
                    ("ITEMS", "/items"),
                    ("ANN", "/ann"),
                    ("ERROR", "/error"),
                ],
            )?;
        }
        Memory::Export { namespace, out } => {
            let req = api.http.get(format!(
                "{}/v1/memory/namespaces/{namespace}/export",
                api.url
            ));
            let resp = api.send(req).await?;
            if !resp.status().is_success() {
                let status = resp.status();
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                bail!("{status}: {}", v["detail"].as_str().unwrap_or("error"));
            }
            let body = resp.bytes().await.context("reading the export")?;
            match out {
                Some(path) => {
                    // An export holds a tenant's memory: readable by the owner only.
                    aios_runtime::daemon::backup::owner_only(&path)
                        .and_then(|mut f| f.write_all(&body))
                        .with_context(|| format!("writing {}", path.display()))?;
                    let lines = body.iter().filter(|b| **b == b'\n').count();
                    println!("exported {lines} items to {}", path.display());
                }
                None => std::io::stdout().write_all(&body)?,
            }
        }
        Memory::Erase {
            namespace,
            user,
            agent,
        } => {
            if user.is_none() && agent.is_none() {
                bail!("give --user or --agent");
            }
            let v = api
                .post(
                    &format!("/v1/memory/namespaces/{namespace}/erase"),
                    json!({"filter": {"user": user, "agent": agent}}),
                )
                .await?;
            println!("erased {} memories", v["erased"]);
        }
    }
    Ok(())
}

/// Imports a JSONL file in batches of 100, with a progress bar.
async fn import(api: &Api, namespace: &str, file: &PathBuf) -> anyhow::Result<()> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let total = std::io::BufReader::new(std::fs::File::open(file)?)
        .lines()
        .count() as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} items {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut batch = Vec::new();
    let mut imported = 0u64;
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let item: Value = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: not JSON", file.display(), n + 1))?;
        if !item["text"].is_string() {
            bail!("{} line {}: no \"text\" string", file.display(), n + 1);
        }
        // Keep what the API takes (an export's lines carry ids, vectors and more).
        let mut kept = json!({"text": item["text"]});
        if item["importance"].is_number() {
            kept["importance"] = item["importance"].clone();
        }
        if item["tags"].is_array() {
            kept["tags"] = item["tags"].clone();
        }
        batch.push(kept);
        if batch.len() == 100 {
            imported += send_batch(api, namespace, &mut batch).await?;
            bar.set_position(imported);
        }
    }
    imported += send_batch(api, namespace, &mut batch).await?;
    bar.finish_and_clear();
    println!("imported {imported} items into {namespace}");
    Ok(())
}

async fn send_batch(api: &Api, namespace: &str, batch: &mut Vec<Value>) -> anyhow::Result<u64> {
    if batch.is_empty() {
        return Ok(0);
    }
    let n = batch.len() as u64;
    api.post(
        &format!("/v1/memory/namespaces/{namespace}/items"),
        json!({"items": std::mem::take(batch)}),
    )
    .await?;
    Ok(n)
}
