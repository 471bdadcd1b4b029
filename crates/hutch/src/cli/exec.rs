//! `hutch exec` and `hutch shell`: run commands in a sandbox, streamed or in a PTY.

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use hutch_api::process::{
    ProcessEvent, ProcessInfo, ProcessState, SignalRequest, StartProcess, StdinWrite,
};
use hutch_api::terminal::CreateTerminal;
use reqwest::Method;
use tokio::signal::unix::{SignalKind, signal};

use super::client::{Client, ndjson_stream, seg};
use super::pipe::{spawn_stdin_reader, utf8_chunk};
use super::{ConnArgs, exit_status, kv_map, parse_kv, tty, write_stderr, write_stdout};

/// `hutch exec`.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Forward local stdin to the command (closed at end of input).
    #[arg(short, long)]
    pub interactive: bool,
    /// Run the command in a pseudo-terminal, with the local terminal in raw mode.
    #[arg(short, long)]
    pub tty: bool,
    /// Environment variable for the command (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub env: Vec<(String, String)>,
    /// Working directory of the command.
    #[arg(short = 'w', long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// User (name or uid[:gid]) to run the command as [default: root].
    #[arg(short, long, value_name = "USER")]
    pub user: Option<String>,
    /// Kill the command after this many seconds (not with --tty).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Sandbox id.
    pub id: String,
    /// The command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub cmd: Vec<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `hutch shell`.
#[derive(Args, Debug)]
pub struct ShellArgs {
    /// Sandbox id.
    pub id: String,
    /// Environment variable for the shell (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub env: Vec<(String, String)>,
    /// Working directory of the shell.
    #[arg(short = 'w', long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// User (name or uid[:gid]) to log in as [default: root].
    #[arg(short, long, value_name = "USER")]
    pub user: Option<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `hutch exec`.
pub async fn exec(args: ExecArgs) -> anyhow::Result<i32> {
    let client = args.conn.client()?;
    if args.tty {
        let (cols, rows) = tty::local_size();
        let req = CreateTerminal {
            name: Some(tty::session_name("exec")),
            cmd: Some(args.cmd),
            cols,
            rows,
            env: kv_map(&args.env),
            cwd: args.cwd,
            user: args.user,
        };
        return tty::run_session(&client, &args.id, req, args.interactive).await;
    }
    let req = StartProcess {
        cmd: Some(args.cmd),
        env: kv_map(&args.env),
        cwd: args.cwd,
        user: args.user,
        timeout_ms: args.timeout.map(|s| s.saturating_mul(1000)),
        keep_stdin: args.interactive,
        ..StartProcess::default()
    };
    stream_process(&client, &args.id, &req, args.interactive).await
}

/// `hutch shell`: a terminal session running the user's login shell.
pub async fn shell(args: ShellArgs) -> anyhow::Result<i32> {
    let client = args.conn.client()?;
    let (cols, rows) = tty::local_size();
    let req = CreateTerminal {
        name: Some(tty::session_name("shell")),
        cmd: None,
        cols,
        rows,
        env: kv_map(&args.env),
        cwd: args.cwd,
        user: args.user,
    };
    tty::run_session(&client, &args.id, req, true).await
}

/// Start a process with a streamed response, copy its output to stdout/stderr as it comes,
/// forward stdin (when `forward_stdin`) and SIGINT/SIGTERM, and return its exit status.
pub async fn stream_process(
    client: &Client,
    sandbox: &str,
    req: &StartProcess,
    forward_stdin: bool,
) -> anyhow::Result<i32> {
    let base = format!("/v1/sandboxes/{}/processes", seg(sandbox));
    let resp = client
        .send(
            client
                .request(Method::POST, &base)
                .query(&[("stream", "ndjson")])
                .json(req),
        )
        .await?;
    let mut events = ndjson_stream::<ProcessEvent>(resp);
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupts = 0;
    let mut proc_id: Option<String> = None;
    let mut stdin_task: Option<tokio::task::JoinHandle<()>> = None;

    let result = loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(ProcessEvent::Start { id, .. })) => {
                    if forward_stdin {
                        stdin_task = Some(tokio::spawn(forward_stdin_to(client.clone(), format!("{base}/{}", seg(&id)))));
                    }
                    proc_id = Some(id);
                }
                Some(Ok(ProcessEvent::Stdout { data, .. })) => {
                    if let Err(e) = write_stdout(data.as_bytes()) {
                        break output_closed(client, &base, proc_id.as_deref(), e).await;
                    }
                }
                Some(Ok(ProcessEvent::Stderr { data, .. })) => {
                    if let Err(e) = write_stderr(data.as_bytes()) {
                        break output_closed(client, &base, proc_id.as_deref(), e).await;
                    }
                }
                Some(Ok(ProcessEvent::Gap { skipped, .. })) => {
                    eprintln!("hutch: {skipped} bytes of output were dropped by the server");
                }
                Some(Ok(ProcessEvent::Exit { exit_code, signal, timed_out, .. })) => {
                    if timed_out {
                        eprintln!("hutch: the command timed out and was killed");
                    }
                    break Ok(exit_status(exit_code, signal));
                }
                Some(Err(e)) => break Err(e),
                None => break finish_without_exit(client, &base, proc_id.as_deref()).await,
            },
            _ = sigint.recv() => {
                interrupts += 1;
                match &proc_id {
                    Some(id) if interrupts < 3 => send_signal(client, &base, id, "INT").await,
                    Some(id) => {
                        send_signal(client, &base, id, "KILL").await;
                        break Ok(130);
                    }
                    None => break Ok(130),
                }
            }
            _ = sigterm.recv() => {
                if let Some(id) = &proc_id {
                    send_signal(client, &base, id, "TERM").await;
                }
                break Ok(143);
            }
        }
    };
    if let Some(t) = stdin_task {
        t.abort();
    }
    result
}

/// Local stdout/stderr went away (`hutch exec … | head -1`): stop the process like SIGPIPE
/// would, and exit with 141 (128 + SIGPIPE) without a message.
async fn output_closed(
    client: &Client,
    base: &str,
    id: Option<&str>,
    err: std::io::Error,
) -> anyhow::Result<i32> {
    if err.kind() != std::io::ErrorKind::BrokenPipe {
        return Err(anyhow::Error::new(err).context("cannot write the output"));
    }
    if let Some(id) = id {
        send_signal(client, base, id, "TERM").await;
    }
    Ok(141)
}

async fn send_signal(client: &Client, base: &str, id: &str, sig: &str) {
    let req = SignalRequest {
        signal: sig.to_owned(),
    };
    if let Err(e) = client
        .post_unit(&format!("{base}/{}/signal", seg(id)), &req)
        .await
    {
        tracing::debug!(error = %e, "cannot forward the signal");
    }
}

/// The stream ended without an `exit` event: ask the server how the process ended.
async fn finish_without_exit(client: &Client, base: &str, id: Option<&str>) -> anyhow::Result<i32> {
    let Some(id) = id else {
        anyhow::bail!("the server closed the stream before the process started")
    };
    let info: ProcessInfo = client.get_json(&format!("{base}/{}", seg(id)), &[]).await?;
    if info.state == ProcessState::Exited {
        return Ok(exit_status(info.exit_code, info.signal));
    }
    anyhow::bail!("the output stream of process {id} ended before it exited")
}

/// Copy local stdin to the process's stdin until end of input, then close it.
async fn forward_stdin_to(client: Client, proc_path: String) {
    let path = format!("{proc_path}/stdin");
    let mut rx = spawn_stdin_reader();
    let mut carry = Vec::new();
    while let Some(chunk) = rx.recv().await {
        let data = utf8_chunk(&mut carry, &chunk);
        if data.is_empty() {
            continue;
        }
        if let Err(e) = client
            .post_unit(&path, &StdinWrite { data, close: false })
            .await
        {
            tracing::debug!(error = %e, "stdin write failed");
            return;
        }
    }
    let data = String::from_utf8_lossy(&carry).into_owned();
    if let Err(e) = client
        .post_unit(&path, &StdinWrite { data, close: true })
        .await
    {
        tracing::debug!(error = %e, "stdin close failed");
    }
}
