//! `aiosctl agents`: definitions, placement, history and chat.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::api::{Api, items, listing, show, table};

#[derive(Subcommand, Debug)]
pub(crate) enum Agents {
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

/// Runs an `agents` command.
pub(crate) async fn run(api: &Api, a: Agents, json_out: bool) -> anyhow::Result<()> {
    match a {
        Agents::List => {
            let v = api.get("/v1/agents").await?;
            listing(
                &v,
                json_out,
                &[
                    ("NAME", "/name"),
                    ("ROLE", "/role"),
                    ("MODEL", "/model"),
                    ("DESCRIPTION", "/description"),
                ],
            )?;
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
            api.placement(
                &format!("/v1/agents/{name}/placement"),
                node,
                tags,
                least_loaded,
                reset,
            )
            .await?;
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
            chat(api, &name, &message, user.as_deref(), json_out).await?;
        }
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
    let req = api
        .http
        .post(format!("{}/v1/chat/completions", api.url))
        .json(&body);
    let resp = api.send(req).await?;
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
