//! `aiosctl tools` and `aiosctl mcp`.

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::json;

use crate::api::{Api, listing, show, table};

#[derive(Subcommand, Debug)]
pub(crate) enum Tools {
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
pub(crate) enum Mcp {
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

/// Runs a `tools` command.
pub(crate) async fn tools(api: &Api, t: Tools, json_out: bool) -> anyhow::Result<()> {
    match t {
        Tools::List => {
            let v = api.get("/v1/tools").await?;
            listing(
                &v,
                json_out,
                &[
                    ("NAME", "/name"),
                    ("VERSION", "/version"),
                    ("DESCRIPTION", "/description"),
                ],
            )?;
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
            listing(
                &v,
                json_out,
                &[
                    ("TOOL", "/tool"),
                    ("AGENT", "/agent"),
                    ("CALLS", "/usage/calls"),
                    ("ERRORS", "/usage/errors"),
                    ("CACHE HITS", "/usage/cache_hits"),
                ],
            )?;
        }
        Tools::Grants => {
            let v = api.get("/v1/tools/grants").await?;
            listing(
                &v,
                json_out,
                &[
                    ("ID", "/id"),
                    ("SOURCE", "/source"),
                    ("TENANT", "/tenant"),
                    ("AGENT", "/agent"),
                    ("ROLE", "/role"),
                    ("TOOLS", "/tools"),
                ],
            )?;
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
    }
    Ok(())
}

/// Runs an `mcp` command.
pub(crate) async fn mcp(api: &Api, m: Mcp, json_out: bool) -> anyhow::Result<()> {
    match m {
        Mcp::List => {
            let v = api.get("/v1/mcp-servers").await?;
            listing(
                &v,
                json_out,
                &[
                    ("NAME", "/name"),
                    ("TRANSPORT", "/transport"),
                    ("CONNECTED", "/connected"),
                    ("PID", "/pid"),
                    ("VERSION", "/version"),
                    ("ERROR", "/error"),
                ],
            )?;
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
    }
    Ok(())
}
