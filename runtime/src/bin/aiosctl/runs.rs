//! `aiosctl runs`: start, follow, approve, cancel.

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::json;

use crate::api::{Api, items, table};

#[derive(Subcommand, Debug)]
pub(crate) enum Runs {
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

/// The `runs` commands.
pub(crate) async fn runs(api: &Api, cmd: Runs, json_out: bool) -> anyhow::Result<()> {
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
pub(crate) async fn follow(api: &Api, path: &str, json_out: bool) -> anyhow::Result<()> {
    use futures_util::StreamExt as _;
    let req = api.http.get(format!("{}{path}", api.url));
    let resp = api.send(req).await?;
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
