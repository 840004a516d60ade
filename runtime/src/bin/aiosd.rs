//! `aiosd`: the AIOS daemon. Runs a node on its data dir behind the REST API.
//!
//! ```sh
//! aiosd                                  # ./aios-data, 127.0.0.1:7600, offline scripted model
//! aiosd --config aiosd.toml --data-dir /var/lib/aios --listen 127.0.0.1:7600
//! ```
//!
//! The first start creates an admin key and prints it once (or takes `AIOS_ADMIN_KEY`).
//! SIGTERM or SIGINT: stop accepting, drain, stop the node in order, final flush.

use std::path::PathBuf;

use aios_runtime::daemon::{Daemon, DaemonConfig, config::LogFormat};
use anyhow::Context as _;
use clap::Parser;

/// The AIOS daemon.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A TOML configuration file.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// The data directory (overrides the file and AIOS_DATA_DIR).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The listen address (overrides the file and AIOS_LISTEN).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = DaemonConfig::load(
        args.config.as_deref(),
        |k| std::env::var(k).ok(),
        args.data_dir,
        args.listen,
    )?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(config))
}

async fn run(config: DaemonConfig) -> anyhow::Result<()> {
    let admin = std::env::var("AIOS_ADMIN_KEY").ok();
    let (daemon, first) = Daemon::start(config, admin).await?;
    if let Some(key) = first {
        // Shown once: only its hash is stored.
        println!("admin key (shown once, store it now): {}", key.secret);
    }
    println!("aiosd listening on http://{}", daemon.addr);
    if let Some(m) = daemon.metrics_addr {
        println!("metrics on http://{m}/metrics");
    }
    wait_for_signal().await?;
    tracing::info!("shutting down");
    daemon.shutdown().await?;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
