//! `hutch server`: the control plane and local runtime.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use hutch_server::{ConfigOverrides, ServerConfig};

#[derive(Args)]
pub struct ServerArgs {
    /// Optional TOML config file (keys as the flags, with underscores).
    #[arg(long, env = "HUTCH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7070; env HUTCH_LISTEN].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory [default: /var/lib/hutch; env HUTCH_DATA_DIR].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Longest sandbox timeout a client may ask for, in seconds [default: 86400].
    #[arg(long)]
    max_timeout: Option<u64>,
    /// Sandbox timeout when the client gives none, in seconds [default: 300].
    #[arg(long)]
    default_timeout: Option<u64>,
    /// Most live sandboxes (starting, running, paused) per team [default: 100].
    #[arg(long)]
    max_sandboxes_per_team: Option<u64>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
    /// Static `hutch` binary to run as the in-sandbox guest [default: this binary].
    #[arg(long)]
    guest_exe: Option<PathBuf>,
}

pub fn run(a: ServerArgs) -> Result<()> {
    let overrides = ConfigOverrides {
        listen: a.listen,
        data_dir: a.data_dir,
        max_timeout_s: a.max_timeout,
        default_timeout_s: a.default_timeout,
        log_json: a.log_json.then_some(true),
        guest_exe: a.guest_exe,
        max_sandboxes_per_team: a.max_sandboxes_per_team,
        ..Default::default()
    };
    let config = ServerConfig::load(a.config.as_deref(), overrides).context("configuration")?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if config.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start runtime")?;
    rt.block_on(hutch_server::run(config))
}
