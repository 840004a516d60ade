//! `aiosctl schedules`.

use clap::Subcommand;
use serde_json::json;

use crate::api::{Api, listing, show};

#[derive(Subcommand, Debug)]
pub(crate) enum Schedules {
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

pub(crate) async fn schedules(api: &Api, c: Schedules, json_out: bool) -> anyhow::Result<()> {
    match c {
        Schedules::List => {
            let v = api.get("/v1/schedules").await?;
            listing(
                &v,
                json_out,
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
            )?;
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
