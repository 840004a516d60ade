//! `aiosctl`: the command line over `aiosd`'s REST API.
//!
//! ```sh
//! export AIOS_URL=http://127.0.0.1:7600 AIOS_KEY=aios_…
//! aiosctl status
//! aiosctl agents create writer.json
//! aiosctl agents chat writer "Draft a haiku about supervisors"
//! aiosctl tools test web_fetch
//! aiosctl memory import kb notes.jsonl
//! aiosctl keys create --role viewer --name dashboard
//! aiosctl audit verify
//! ```
//!
//! Tables by default, `--json` for the raw answers.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use serde_json::json;

mod agents;
mod api;
mod audit;
mod keys;
mod memory;
mod runs;
mod schedules;
mod tools;

use agents::Agents;
use api::{Api, show, table};
use audit::Audit;
use keys::Keys;
use memory::Memory;
use runs::Runs;
use schedules::Schedules;
use tools::{Mcp, Tools};

/// The AIOS command line.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// The daemon.
    #[arg(
        long,
        env = "AIOS_URL",
        default_value = "http://127.0.0.1:7600",
        global = true
    )]
    url: String,
    /// The API key.
    #[arg(long, env = "AIOS_KEY", hide_env_values = true, global = true)]
    key: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The daemon's status.
    Status,
    /// The nodes of the cluster, as this daemon sees them.
    Nodes,
    /// Drain this daemon's node: its agents move to the other nodes (final snapshot, lease
    /// released, activated elsewhere on their next message) until `undrain`.
    Drain {
        /// Seconds to wait for busy agents to finish their task.
        #[arg(long, default_value_t = 30)]
        within_s: u64,
    },
    /// End a drain: the node activates agents again.
    Undrain,
    /// Agents.
    #[command(subcommand)]
    Agents(Agents),
    /// Runs: plans carried out by agents.
    #[command(subcommand)]
    Runs(Runs),
    /// Scheduled runs: cron schedules and one-off delayed runs.
    #[command(subcommand)]
    Schedules(Schedules),
    /// Tools.
    #[command(subcommand)]
    Tools(Tools),
    /// MCP servers (their tools become plugin tools).
    #[command(subcommand)]
    Mcp(Mcp),
    /// Memory.
    #[command(subcommand)]
    Memory(Memory),
    /// API keys.
    #[command(subcommand)]
    Keys(Keys),
    /// The audit log.
    #[command(subcommand)]
    Audit(Audit),
    /// Costs of your tenant.
    Costs,
    /// Copy a stopped daemon's whole data dir into one file.
    Backup {
        /// The data dir.
        #[arg(long)]
        data_dir: PathBuf,
        /// The backup file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup file into an empty data dir.
    Restore {
        /// The (empty) data dir.
        #[arg(long)]
        data_dir: PathBuf,
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if !(cli.url.starts_with("http://") || cli.url.starts_with("https://")) {
        bail!("--url {:?} must start with http:// or https://", cli.url);
    }
    let api = Api {
        http: reqwest::Client::new(),
        url: cli.url.trim_end_matches('/').to_string(),
        key: cli.key.clone(),
    };
    let json_out = cli.json;
    match cli.command {
        Command::Backup { data_dir, out } => {
            let n = aios_runtime::daemon::backup::backup(&data_dir, &out).await?;
            println!("backed up {n} records to {}", out.display());
        }
        Command::Restore { data_dir, from } => {
            let n = aios_runtime::daemon::backup::restore(&data_dir, &from).await?;
            println!("restored {n} records into {}", data_dir.display());
        }
        Command::Status => show(&api.get("/v1/status").await?)?,
        Command::Nodes => {
            let v = api.get("/v1/cluster/nodes").await?;
            if json_out {
                show(&v)?;
            } else {
                let mut me = v["self"].clone();
                me["status"] = json!("self");
                let mut rows = vec![me];
                rows.extend(v["nodes"].as_array().cloned().unwrap_or_default());
                table(
                    &rows,
                    &[
                        ("NAME", "/name"),
                        ("ADDRESS", "/address"),
                        ("STATUS", "/status"),
                        ("ACTORS", "/actors"),
                        ("AGENTS", "/agents_active"),
                        ("BUSY", "/agents_busy"),
                        ("SHARDS", "/memory_shards"),
                    ],
                );
            }
        }
        Command::Drain { within_s } => {
            show(
                &api.post("/v1/cluster/drain", json!({ "within_s": within_s }))
                    .await?,
            )?;
        }
        Command::Undrain => show(&api.post("/v1/cluster/undrain", json!({})).await?)?,
        Command::Costs => show(&api.get("/v1/costs").await?)?,
        Command::Agents(a) => agents::run(&api, a, json_out).await?,
        Command::Runs(r) => runs::runs(&api, r, json_out).await?,
        Command::Schedules(c) => schedules::schedules(&api, c, json_out).await?,
        Command::Mcp(m) => tools::mcp(&api, m, json_out).await?,
        Command::Tools(t) => tools::tools(&api, t, json_out).await?,
        Command::Memory(m) => memory::run(&api, m, json_out).await?,
        Command::Keys(k) => keys::run(&api, k, json_out).await?,
        Command::Audit(a) => audit::run(&api, a, json_out).await?,
    }
    Ok(())
}
