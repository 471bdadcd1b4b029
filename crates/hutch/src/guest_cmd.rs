//! `hutch guest`: start the guest API, either handed fds by the engine (inside a sandbox) or on
//! an address of its own (standalone, as an in-box control API).

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use hutch_guest::{GuestConfig, Listener};

#[derive(Args)]
pub struct GuestArgs {
    /// Serve on an inherited, already-bound Unix listener (set by the engine).
    #[arg(long, conflicts_with = "listen")]
    listen_fd: Option<RawFd>,
    /// Write one byte here once serving (set by the engine).
    #[arg(long)]
    status_fd: Option<RawFd>,
    /// Read the JSON guest config from this fd (set by the engine).
    #[arg(long, conflicts_with = "token_file")]
    config_fd: Option<RawFd>,
    /// Standalone: listen on `unix:/path` or `HOST:PORT`.
    #[arg(long)]
    listen: Option<String>,
    /// Standalone: file holding the API token.
    #[arg(long)]
    token_file: Option<PathBuf>,
}

pub fn run(args: GuestArgs) -> Result<()> {
    let config = match (args.config_fd, &args.token_file) {
        (Some(fd), _) => {
            // SAFETY: the engine hands us this fd number for our exclusive use.
            let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).context("read guest config")?;
            serde_json::from_slice::<GuestConfig>(&buf).context("decode guest config")?
        }
        (None, Some(path)) => {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("read {}", path.display()))?;
            let token = token.trim().to_string();
            if token.len() < 16 {
                bail!(
                    "the token in {} is shorter than 16 characters",
                    path.display()
                );
            }
            GuestConfig {
                token,
                ..Default::default()
            }
        }
        (None, None) => bail!("give --token-file (standalone) or --config-fd"),
    };
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start runtime")?;
    rt.block_on(async move {
        let listener = match (args.listen_fd, &args.listen) {
            (Some(fd), _) => {
                // SAFETY: the engine hands us this bound listener at this fd number.
                let std_l = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
                // dup2 in the engine cleared close-on-exec: set it again so no process the
                // guest starts inherits the listener.
                nix::fcntl::fcntl(
                    fd,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                )
                .context("set close-on-exec on the listener")?;
                std_l.set_nonblocking(true)?;
                Listener::Unix(tokio::net::UnixListener::from_std(std_l)?)
            }
            (None, Some(addr)) => match addr.strip_prefix("unix:") {
                Some(path) => {
                    let _ = std::fs::remove_file(path);
                    Listener::Unix(
                        tokio::net::UnixListener::bind(path)
                            .with_context(|| format!("bind {path}"))?,
                    )
                }
                None => Listener::Tcp(
                    tokio::net::TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("bind {addr}"))?,
                ),
            },
            (None, None) => bail!("give --listen ADDR or --listen-fd"),
        };
        let status_fd = args.status_fd;
        let ready = move || {
            if let Some(fd) = status_fd {
                // SAFETY: the engine hands us the write end of its status pipe at this number.
                let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
                let _ = std::io::Write::write_all(&mut f, b"R");
            }
        };
        hutch_guest::serve(listener, config, ready)
            .await
            .context("guest")
    })
}
