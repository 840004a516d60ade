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

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

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

#[derive(Subcommand, Debug)]
enum Agents {
    /// List agents.
    List,
    /// Show one agent.
    Get { name: String },
    /// Create an agent from a JSON or TOML definition file.
    Create { file: PathBuf },
    /// Delete an agent.
    Delete { name: String },
    /// Show or set where a cluster activates an agent (no option: show it).
    Place {
        name: String,
        /// On this node only.
        #[arg(long)]
        node: Option<String>,
        /// On a node with this tag (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// On the least loaded of the nodes allowed.
        #[arg(long)]
        least_loaded: bool,
        /// Back to the default: the node asked.
        #[arg(long, conflicts_with_all = ["node", "tags", "least_loaded"])]
        reset: bool,
    },
    /// Show an agent's transcript: every task's input and outcome, oldest first.
    History {
        name: String,
        /// The conversation kept under this user (as with `chat --user`).
        #[arg(long, conflicts_with = "session")]
        user: Option<String>,
        /// The conversation kept under this session key (as with the API's `session`).
        #[arg(long)]
        session: Option<String>,
        /// The first entry's sequence number.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// At most this many entries (1..=1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
    },
    /// Send a message and stream the answer.
    Chat {
        name: String,
        message: String,
        /// Keep a separate conversation under this user.
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum Schedules {
    /// List your schedules.
    List,
    /// Create a schedule: `--cron` (with `--timezone`), or `--in` seconds for a one-off run.
    Create {
        /// Its name.
        name: String,
        /// The run's task.
        #[arg(long)]
        task: String,
        /// A cron expression: five fields, or six with leading seconds.
        #[arg(long, required_unless_present = "in_s", conflicts_with = "in_s")]
        cron: Option<String>,
        /// The cron expression's IANA time zone (default UTC).
        #[arg(long, requires = "cron")]
        timezone: Option<String>,
        /// A one-off run this many seconds from now.
        #[arg(long = "in", value_name = "SECONDS")]
        in_s: Option<u64>,
        /// The run's planner agent.
        #[arg(long)]
        planner: Option<String>,
        /// Skip due times missed while the daemon was down (default: run once for them).
        #[arg(long)]
        skip_missed: bool,
    },
    /// Delete a schedule.
    Delete { id: String },
    /// Pause a schedule.
    Pause { id: String },
    /// Resume a schedule from its next due time.
    Resume { id: String },
}

#[derive(Subcommand, Debug)]
enum Runs {
    /// Start a run and follow its events until it finishes.
    Start {
        task: String,
        /// The planner agent (else the best with capability `plan`).
        #[arg(long)]
        planner: Option<String>,
        /// Return at once with the run id instead of following it.
        #[arg(long)]
        detach: bool,
    },
    /// List runs.
    List,
    /// Show a run.
    Get { id: String },
    /// Approve a step that waits.
    Approve {
        id: String,
        step: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Deny a step that waits (the run fails).
    Deny {
        id: String,
        step: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Cancel a run.
    Cancel { id: String },
}

#[derive(Subcommand, Debug)]
enum Mcp {
    /// List MCP servers.
    List,
    /// Add a stdio server: `aiosctl mcp add-stdio fs -- mcp-server-filesystem /srv`.
    AddStdio {
        name: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Add a streamable HTTP server.
    AddHttp { name: String, url: String },
    /// Remove a server and its tools.
    Remove { name: String },
}

#[derive(Subcommand, Debug)]
enum Tools {
    /// List installed tools.
    List,
    /// Run a tool's manifest examples (`name` or `name@req`).
    Test { name: String },
    /// Calls, errors and cache hits per tool and agent.
    Usage,
    /// The grants that reach this key's tenant (the operator tenant: every grant).
    Grants,
    /// Grant tools (operator tenant's admins): to a tenant, one of its agents, or a role.
    Grant {
        /// Tool names, or `*` for every tool.
        #[arg(required = true)]
        tools: Vec<String>,
        /// The tenant (absent: every tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// One agent of that tenant, by its name in the tenant.
        #[arg(long, requires = "tenant")]
        agent: Option<String>,
        /// Only agents with this role.
        #[arg(long)]
        role: Option<String>,
    },
    /// Remove a grant made through the API, by its id (`aiosctl tools grants`).
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
enum Memory {
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

#[derive(Subcommand, Debug)]
enum Keys {
    /// List your tenant's keys.
    List,
    /// Create a key (its secret is printed once).
    Create {
        #[arg(long)]
        role: String,
        #[arg(long, default_value = "")]
        name: String,
        /// Another tenant (operator-tenant admins only).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Rotate a key: a new secret; the old one works for the overlap.
    Rotate {
        id: String,
        /// Overlap, e.g. `1h`, `30m`, `0s`.
        #[arg(long, default_value = "24h")]
        overlap: humantime::Duration,
    },
    /// Revoke a key now.
    Revoke { id: String },
}

#[derive(Subcommand, Debug)]
enum Audit {
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

struct Api {
    http: reqwest::Client,
    url: String,
    key: Option<String>,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.url));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach {} (is aiosd running?)", self.url))?;
        let status = resp.status();
        let text = resp.text().await.context("reading the answer")?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let detail = value["detail"]
                .as_str()
                .or_else(|| value["error"]["message"].as_str())
                .map(str::to_string)
                .unwrap_or_else(|| value.to_string());
            bail!("{method} {path}: {status}: {detail}");
        }
        Ok(value)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

async fn schedules(api: &Api, c: Schedules, json_out: bool) -> anyhow::Result<()> {
    match c {
        Schedules::List => {
            let v = api.get("/v1/schedules").await?;
            if json_out {
                show(&v)?;
            } else {
                table(
                    &items(&v),
                    &[
                        ("ID", "/id"),
                        ("NAME", "/name"),
                        ("CRON", "/when/cron"),
                        ("TZ", "/when/timezone"),
                        ("AT_MS", "/when/at_ms"),
                        ("NEXT_DUE_MS", "/next_due_ms"),
                        ("FIRED", "/fired"),
                        ("MISSED", "/missed"),
                        ("PAUSED", "/paused"),
                        ("ERROR", "/last_error"),
                    ],
                );
            }
        }
        Schedules::Create {
            name,
            task,
            cron,
            timezone,
            in_s,
            planner,
            skip_missed,
        } => {
            let body = json!({
                "name": name, "task": task, "cron": cron, "timezone": timezone,
                "delay_s": in_s, "planner": planner,
                "on_missed": if skip_missed { "skip" } else { "run_once" },
            });
            let v = api.post("/v1/schedules", body).await?;
            if json_out {
                show(&v)?;
            } else {
                println!(
                    "created schedule {} (next due at {} ms)",
                    v["id"], v["next_due_ms"]
                );
            }
        }
        Schedules::Delete { id } => {
            api.call(
                reqwest::Method::DELETE,
                &format!("/v1/schedules/{id}"),
                None,
            )
            .await?;
            println!("deleted {id}");
        }
        Schedules::Pause { id } => {
            show(
                &api.post(&format!("/v1/schedules/{id}/pause"), json!({}))
                    .await?,
            )?;
        }
        Schedules::Resume { id } => {
            show(
                &api.post(&format!("/v1/schedules/{id}/resume"), json!({}))
                    .await?,
            )?;
        }
    }
    Ok(())
}

/// Prints a JSON answer, indented.
fn show(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn table(rows: &[Value], columns: &[(&str, &str)]) {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(columns.iter().map(|(h, _)| *h));
    for r in rows {
        t.add_row(columns.iter().map(|(_, pointer)| match r.pointer(pointer) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => "-".into(),
            Some(v) => v.to_string(),
        }));
    }
    println!("{t}");
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
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
        Command::Agents(a) => match a {
            Agents::List => {
                let v = api.get("/v1/agents").await?;
                if json_out {
                    show(&v)?;
                } else {
                    table(
                        &items(&v),
                        &[
                            ("NAME", "/name"),
                            ("ROLE", "/role"),
                            ("MODEL", "/model"),
                            ("DESCRIPTION", "/description"),
                        ],
                    );
                }
            }
            Agents::Get { name } => show(&api.get(&format!("/v1/agents/{name}")).await?)?,
            Agents::Create { file } => {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let def: Value = if file.extension().is_some_and(|e| e == "toml") {
                    let t: toml::Value = toml::from_str(&text)
                        .with_context(|| format!("{} is not valid TOML", file.display()))?;
                    serde_json::to_value(t)?
                } else {
                    serde_json::from_str(&text)
                        .with_context(|| format!("{} is not valid JSON", file.display()))?
                };
                let v = api.post("/v1/agents", def).await?;
                if json_out {
                    show(&v)?;
                } else {
                    println!("created {} (version {})", v["name"], v["version"]);
                }
            }
            Agents::Place {
                name,
                node,
                tags,
                least_loaded,
                reset,
            } => {
                let path = format!("/v1/agents/{name}/placement");
                if node.is_none() && tags.is_empty() && !least_loaded && !reset {
                    show(&api.get(&path).await?)?;
                } else {
                    let body = json!({"node": node, "tags": tags, "least_loaded": least_loaded});
                    show(&api.call(reqwest::Method::PUT, &path, Some(body)).await?)?;
                }
            }
            Agents::Delete { name } => {
                api.call(reqwest::Method::DELETE, &format!("/v1/agents/{name}"), None)
                    .await?;
                println!("deleted {name}");
            }
            Agents::History {
                name,
                user,
                session,
                from,
                limit,
            } => {
                let mut path = format!("/v1/agents/{name}/history?from={from}&limit={limit}");
                if let Some(key) = session.or(user.map(|u| format!("u-{u}"))) {
                    anyhow::ensure!(
                        key.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)),
                        "{key:?}: a user or session is made of a-z, A-Z, 0-9, '_', '-', '.'"
                    );
                    path.push_str("&session=");
                    path.push_str(&key);
                }
                let v = api.get(&path).await?;
                if json_out {
                    show(&v)?;
                } else {
                    table(
                        &items(&v),
                        &[
                            ("SEQ", "/seq"),
                            ("INPUT", "/input"),
                            ("OUTPUT", "/output"),
                            ("ERROR", "/error"),
                            ("STEPS", "/steps"),
                        ],
                    );
                    if let Some(next) = v["next"].as_u64() {
                        println!("more from --from {next}");
                    }
                }
            }
            Agents::Chat {
                name,
                message,
                user,
            } => {
                chat(&api, &name, &message, user.as_deref(), json_out).await?;
            }
        },
        Command::Runs(r) => runs(&api, r, json_out).await?,
        Command::Schedules(c) => schedules(&api, c, json_out).await?,
        Command::Mcp(m) => match m {
            Mcp::List => {
                let v = api.get("/v1/mcp-servers").await?;
                if json_out {
                    show(&v)?;
                } else {
                    table(
                        &items(&v),
                        &[
                            ("NAME", "/name"),
                            ("TRANSPORT", "/transport"),
                            ("CONNECTED", "/connected"),
                            ("PID", "/pid"),
                            ("VERSION", "/version"),
                            ("ERROR", "/error"),
                        ],
                    );
                }
            }
            Mcp::AddStdio { name, command } => {
                let (cmd, args) = command.split_first().context("give the command after --")?;
                let v = api
                    .post("/v1/mcp-servers", json!({"name": name, "transport": {"kind": "stdio", "command": cmd, "args": args}}))
                    .await?;
                println!("added {name}: {}", v["tools"]);
            }
            Mcp::AddHttp { name, url } => {
                let v = api
                    .post(
                        "/v1/mcp-servers",
                        json!({"name": name, "transport": {"kind": "http", "url": url}}),
                    )
                    .await?;
                println!("added {name}: {}", v["tools"]);
            }
            Mcp::Remove { name } => {
                api.call(
                    reqwest::Method::DELETE,
                    &format!("/v1/mcp-servers/{name}"),
                    None,
                )
                .await?;
                println!("removed {name}");
            }
        },
        Command::Tools(t) => match t {
            Tools::List => {
                let v = api.get("/v1/tools").await?;
                if json_out {
                    show(&v)?;
                } else {
                    table(
                        &items(&v),
                        &[
                            ("NAME", "/name"),
                            ("VERSION", "/version"),
                            ("DESCRIPTION", "/description"),
                        ],
                    );
                }
            }
            Tools::Test { name } => {
                let v = api
                    .post(&format!("/v1/tools/{name}/test"), json!({}))
                    .await?;
                if json_out {
                    show(&v)?;
                } else {
                    let examples = v["examples"].as_array().cloned().unwrap_or_default();
                    table(
                        &examples,
                        &[
                            ("EXAMPLE", "/name"),
                            ("PASSED", "/passed"),
                            ("DETAIL", "/detail"),
                        ],
                    );
                }
                if v["passed"] != json!(true) {
                    bail!("some examples of {name} failed");
                }
            }
            Tools::Usage => {
                let v = api.get("/v1/tools/usage").await?;
                if json_out {
                    show(&v)?;
                } else {
                    table(
                        &items(&v),
                        &[
                            ("TOOL", "/tool"),
                            ("AGENT", "/agent"),
                            ("CALLS", "/usage/calls"),
                            ("ERRORS", "/usage/errors"),
                            ("CACHE HITS", "/usage/cache_hits"),
                        ],
                    );
                }
            }
            Tools::Grants => {
                let v = api.get("/v1/tools/grants").await?;
                if json_out {
                    show(&v)?;
                } else {
                    table(
                        &items(&v),
                        &[
                            ("ID", "/id"),
                            ("SOURCE", "/source"),
                            ("TENANT", "/tenant"),
                            ("AGENT", "/agent"),
                            ("ROLE", "/role"),
                            ("TOOLS", "/tools"),
                        ],
                    );
                }
            }
            Tools::Grant {
                tools,
                tenant,
                agent,
                role,
            } => {
                let v = api
                    .post(
                        "/v1/tools/grants",
                        json!({"tools": tools, "tenant": tenant, "agent": agent, "role": role}),
                    )
                    .await?;
                if json_out {
                    show(&v)?;
                } else {
                    println!(
                        "granted {} (id {})",
                        v["tools"],
                        v["id"].as_str().unwrap_or("")
                    );
                }
            }
            Tools::Revoke { id } => {
                api.call(
                    reqwest::Method::DELETE,
                    &format!("/v1/tools/grants/{id}"),
                    None,
                )
                .await?;
                println!("revoked grant {id}");
            }
        },
        Command::Memory(m) => match m {
            Memory::Namespaces => {
                let v = api.get("/v1/memory/namespaces").await?;
                if json_out {
                    show(&v)?;
                } else {
                    table(
                        &items(&v),
                        &[("NAME", "/name"), ("SHARDS", "/shards"), ("DIM", "/dim")],
                    );
                }
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
            Memory::Import { namespace, file } => import(&api, &namespace, &file).await?,
            Memory::Place {
                namespace,
                node,
                tags,
                least_loaded,
                reset,
            } => {
                let path = format!("/v1/memory/namespaces/{namespace}/placement");
                if node.is_none() && tags.is_empty() && !least_loaded && !reset {
                    show(&api.get(&path).await?)?;
                } else {
                    let body = json!({"node": node, "tags": tags, "least_loaded": least_loaded});
                    show(&api.call(reqwest::Method::PUT, &path, Some(body)).await?)?;
                }
            }
            Memory::Shards { namespace } => {
                let v = api
                    .get(&format!("/v1/memory/namespaces/{namespace}/shards"))
                    .await?;
                if json_out {
                    show(&v)?;
                } else {
                    table(
                        &items(&v),
                        &[
                            ("SHARD", "/shard"),
                            ("NODE", "/node"),
                            ("ITEMS", "/items"),
                            ("ANN", "/ann"),
                            ("ERROR", "/error"),
                        ],
                    );
                }
            }
            Memory::Export { namespace, out } => {
                let mut req = api.http.get(format!(
                    "{}/v1/memory/namespaces/{namespace}/export",
                    api.url
                ));
                if let Some(k) = &api.key {
                    req = req.bearer_auth(k);
                }
                let resp = req
                    .send()
                    .await
                    .with_context(|| format!("cannot reach {}", api.url))?;
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
        },
        Command::Keys(k) => match k {
            Keys::List => {
                let v = api.get("/v1/keys").await?;
                if json_out {
                    show(&v)?;
                } else {
                    table(
                        &items(&v),
                        &[
                            ("ID", "/id"),
                            ("NAME", "/name"),
                            ("ROLE", "/role"),
                            ("TENANT", "/tenant"),
                            ("EXPIRES", "/expires_ms"),
                            ("REVOKED", "/revoked_ms"),
                        ],
                    );
                }
            }
            Keys::Create { role, name, tenant } => {
                let mut body = json!({"role": role, "name": name});
                if let Some(t) = tenant {
                    body["tenant"] = json!(t);
                }
                let v = api.post("/v1/keys", body).await?;
                if json_out {
                    show(&v)?;
                } else {
                    println!(
                        "key {} ({} of {}); secret, shown once:",
                        v["key"]["id"], v["key"]["role"], v["key"]["tenant"]
                    );
                    println!("{}", v["secret"].as_str().unwrap_or_default());
                }
            }
            Keys::Rotate { id, overlap } => {
                let ms = u64::try_from(overlap.as_millis()).unwrap_or(u64::MAX);
                let v = api
                    .post(&format!("/v1/keys/{id}/rotate"), json!({"overlap_ms": ms}))
                    .await?;
                if json_out {
                    show(&v)?;
                } else {
                    println!("new key {}; secret, shown once:", v["key"]["id"]);
                    println!("{}", v["secret"].as_str().unwrap_or_default());
                }
            }
            Keys::Revoke { id } => {
                api.call(reqwest::Method::DELETE, &format!("/v1/keys/{id}"), None)
                    .await?;
                println!("revoked {id}");
            }
        },
        Command::Audit(a) => match a {
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
        },
    }
    Ok(())
}

/// Streams an answer through the OpenAI-compatible endpoint, printing tokens as they come.
async fn chat(
    api: &Api,
    name: &str,
    message: &str,
    user: Option<&str>,
    json_out: bool,
) -> anyhow::Result<()> {
    use futures_util::StreamExt as _;
    let mut body =
        json!({"model": name, "stream": true, "messages": [{"role": "user", "content": message}]});
    if let Some(u) = user {
        body["user"] = json!(u);
    }
    let mut req = api
        .http
        .post(format!("{}/v1/chat/completions", api.url))
        .json(&body);
    if let Some(k) = &api.key {
        req = req.bearer_auth(k);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach {}", api.url))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        bail!(
            "{status}: {}",
            v["error"]["message"].as_str().unwrap_or("error")
        );
    }
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(
            &chunk.context("reading the stream")?,
        ));
        while let Some(i) = buf.find("\n\n") {
            let event: String = buf.drain(..i + 2).collect();
            for line in event.lines() {
                let Some(data) = line.strip_prefix("data: ") else {
                    continue;
                };
                if data == "[DONE]" {
                    println!();
                    return Ok(());
                }
                let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                if json_out {
                    println!("{v}");
                } else if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                    write!(out, "{t}")?;
                    out.flush()?;
                } else if let Some(e) = v["error"]["message"].as_str() {
                    bail!("the agent failed: {e}");
                }
            }
        }
    }
    println!();
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

/// The `runs` commands.
async fn runs(api: &Api, cmd: Runs, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        Runs::Start {
            task,
            planner,
            detach,
        } => {
            let mut body = json!({"task": task});
            if let Some(p) = planner {
                body["planner"] = json!(p);
            }
            let v = api.post("/v1/runs", body).await?;
            let id = v["id"].as_str().unwrap_or_default().to_string();
            if detach {
                println!("{id}");
                return Ok(());
            }
            eprintln!("run {id}");
            follow(api, &format!("/v1/runs/{id}/events"), json_out).await?;
            let run = api.get(&format!("/v1/runs/{id}")).await?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&run)?);
            } else {
                println!(
                    "{}: {}",
                    run["status"],
                    run["answer"]
                        .as_str()
                        .or(run["error"].as_str())
                        .unwrap_or("")
                );
            }
        }
        Runs::List => {
            let v = api.get("/v1/runs").await?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                table(
                    &items(&v),
                    &[("ID", "/id"), ("STATUS", "/status"), ("TASK", "/spec/task")],
                );
            }
        }
        Runs::Get { id } => println!(
            "{}",
            serde_json::to_string_pretty(&api.get(&format!("/v1/runs/{id}")).await?)?
        ),
        Runs::Approve { id, step, note } => {
            api.post(
                &format!("/v1/runs/{id}/steps/{step}/decision"),
                json!({"approve": true, "note": note}),
            )
            .await?;
            println!("approved {step}");
        }
        Runs::Deny { id, step, note } => {
            api.post(
                &format!("/v1/runs/{id}/steps/{step}/decision"),
                json!({"approve": false, "note": note}),
            )
            .await?;
            println!("denied {step}");
        }
        Runs::Cancel { id } => {
            let v = api
                .post(&format!("/v1/runs/{id}/cancel"), json!({}))
                .await?;
            println!("cancelled: {}", v["cancelled"]);
        }
    }
    Ok(())
}

/// Prints a server-sent event stream until it ends.
async fn follow(api: &Api, path: &str, json_out: bool) -> anyhow::Result<()> {
    use futures_util::StreamExt as _;
    let mut req = api.http.get(format!("{}{path}", api.url));
    if let Some(k) = &api.key {
        req = req.bearer_auth(k);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach {}", api.url))?;
    if !resp.status().is_success() {
        bail!("{path}: {}", resp.status());
    }
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(
            &chunk.context("reading the stream")?,
        ));
        while let Some(i) = buf.find("\n\n") {
            let event: String = buf.drain(..i + 2).collect();
            for line in event.lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    if json_out {
                        println!("{data}");
                    } else {
                        eprintln!("  {data}");
                    }
                }
            }
        }
    }
    Ok(())
}
