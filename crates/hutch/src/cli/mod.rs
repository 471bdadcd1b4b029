//! The client side of `hutch`: commands that drive a Hutch server over its `/v1` API.
//!
//! Every command resolves its connection (server URL and API key) from `--url`/`--api-key`, the
//! `HUTCH_URL`/`HUTCH_API_KEY` environment variables and the config file written by
//! `hutch login`, in that order of precedence (see [`config`]).

pub mod client;
pub mod config;
pub mod cp;
pub mod events;
pub mod exec;
pub mod keys;
pub mod network;
pub mod pipe;
pub mod port_forward;
pub mod run;
pub mod sandboxes;
pub mod secrets;
pub mod table;
pub mod templates;
pub mod terminal;
pub mod tty;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};

use self::client::Client;

/// Where the server is and how to authenticate. Flattened into every client command.
#[derive(Args, Debug, Clone, Default)]
pub struct ConnArgs {
    /// Base URL of the Hutch server [default: from `hutch login`, else http://127.0.0.1:7070].
    #[arg(long, env = "HUTCH_URL", global = true, value_name = "URL")]
    pub url: Option<String>,
    /// API key sent as `Authorization: Bearer KEY` [default: from `hutch login`].
    #[arg(
        long,
        env = "HUTCH_API_KEY",
        global = true,
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
}

impl ConnArgs {
    /// Build an HTTP client from the flags, the environment and the config file.
    pub fn client(&self) -> anyhow::Result<Client> {
        let file = config::load_file()?;
        let resolved = config::resolve(self.url.clone(), self.api_key.clone(), file);
        Client::new(resolved)
    }
}

/// Client commands.
#[derive(Subcommand)]
pub enum CliCommand {
    /// Save the server URL and an API key to ~/.config/hutch/config.toml (after checking them).
    Login(config::LoginArgs),
    /// Create a sandbox, run one command in it with live output, and exit with its exit code.
    Run(run::RunArgs),
    /// Create a sandbox and print its id.
    Create(sandboxes::CreateArgs),
    /// List sandboxes.
    #[command(visible_alias = "list")]
    Ls(sandboxes::LsArgs),
    /// Show everything about one sandbox as JSON.
    Inspect(sandboxes::IdArgs),
    /// Run a command in a running sandbox and exit with its exit code.
    Exec(exec::ExecArgs),
    /// Open an interactive login shell in a sandbox (like `exec -it ID` with the user's shell).
    Shell(exec::ShellArgs),
    /// Copy files and directories between the host and a sandbox (`ID:/path` names the sandbox side).
    Cp(cp::CpArgs),
    /// Forward local ports to ports inside a sandbox (`[LOCAL:]REMOTE`; Ctrl-C stops).
    PortForward(port_forward::PortForwardArgs),
    /// Delete sandboxes.
    #[command(visible_alias = "delete")]
    Rm(sandboxes::RmArgs),
    /// Freeze every process of a sandbox.
    Pause(sandboxes::IdArgs),
    /// Thaw a paused sandbox.
    Resume(sandboxes::IdArgs),
    /// Push a sandbox's expiry back by its timeout.
    Keepalive(sandboxes::IdArgs),
    /// Set a sandbox's expiry to SECONDS from now.
    Timeout(sandboxes::TimeoutArgs),
    /// List audit and lifecycle events, newest first.
    Events(events::EventsArgs),
    /// Manage named terminal (PTY) sessions in a sandbox.
    #[command(subcommand_required = true)]
    Terminal(terminal::TerminalArgs),
    /// Manage templates (root filesystems sandboxes start from).
    #[command(subcommand_required = true)]
    Template(templates::TemplateArgs),
    /// Manage API keys (admin keys only).
    #[command(subcommand_required = true)]
    Keys(keys::KeysArgs),
    /// Manage the team's secrets (values are write-only; the egress gateway injects them).
    #[command(subcommand_required = true)]
    Secrets(secrets::SecretsArgs),
    /// Show or change a sandbox's network allowlist (live).
    #[command(subcommand_required = true)]
    Network(network::NetworkArgs),
    /// Show a sandbox's egress log: every request through the gateway and its decision.
    Egress(network::EgressArgs),
    /// List, approve and deny sandboxes' requests for more network access.
    #[command(subcommand_required = true)]
    Approvals(network::ApprovalsArgs),
    /// Inside a sandbox: ask the operator for access to a host (via http://hutch.internal).
    RequestAccess(network::RequestAccessArgs),
}

/// Run a client command. Commands that must exit with a specific code (`run`, `exec`, `shell`,
/// `terminal attach`) end the process with it; errors are returned for `main` to print.
pub fn run(cmd: CliCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(dispatch(cmd));
    // Do not wait for threads blocked on stdin reads.
    runtime.shutdown_timeout(Duration::from_millis(50));
    let code = result?;
    if code != 0 {
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        std::process::exit(code);
    }
    Ok(())
}

async fn dispatch(cmd: CliCommand) -> anyhow::Result<i32> {
    match cmd {
        CliCommand::Login(args) => config::login(args).await.map(|()| 0),
        CliCommand::Run(args) => run::run(args).await,
        CliCommand::Create(args) => sandboxes::create(args).await.map(|()| 0),
        CliCommand::Ls(args) => sandboxes::ls(args).await.map(|()| 0),
        CliCommand::Inspect(args) => sandboxes::inspect(args).await.map(|()| 0),
        CliCommand::Exec(args) => exec::exec(args).await,
        CliCommand::Shell(args) => exec::shell(args).await,
        CliCommand::Cp(args) => cp::cp(args).await.map(|()| 0),
        CliCommand::PortForward(args) => port_forward::port_forward(args).await.map(|()| 0),
        CliCommand::Rm(args) => sandboxes::rm(args).await,
        CliCommand::Pause(args) => sandboxes::action(args, "pause").await.map(|()| 0),
        CliCommand::Resume(args) => sandboxes::action(args, "resume").await.map(|()| 0),
        CliCommand::Keepalive(args) => sandboxes::action(args, "keepalive").await.map(|()| 0),
        CliCommand::Timeout(args) => sandboxes::set_timeout(args).await.map(|()| 0),
        CliCommand::Events(args) => events::events(args).await.map(|()| 0),
        CliCommand::Terminal(args) => terminal::terminal(args).await,
        CliCommand::Template(args) => templates::template(args).await.map(|()| 0),
        CliCommand::Keys(args) => keys::keys(args).await.map(|()| 0),
        CliCommand::Secrets(args) => secrets::secrets(args).await.map(|()| 0),
        CliCommand::Network(args) => network::network(args).await.map(|()| 0),
        CliCommand::Egress(args) => network::egress(args).await.map(|()| 0),
        CliCommand::Approvals(args) => network::approvals(args).await.map(|()| 0),
        CliCommand::RequestAccess(args) => network::request_access(args).await,
    }
}

/// Parse one `KEY=VALUE` argument (the value may be empty and may contain `=`).
pub fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Collect parsed `KEY=VALUE` pairs into a map (later entries win).
pub fn kv_map(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    pairs.iter().cloned().collect()
}

/// The process exit code for a finished process: its exit code, or 128 + the signal number.
pub fn exit_status(exit_code: Option<i32>, signal: Option<i32>) -> i32 {
    match (exit_code, signal) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    }
}

/// Write bytes to stdout and flush (so interleaving with stderr stays in order).
pub fn write_stdout(data: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(data)?;
    out.flush()
}

/// Write bytes to stderr.
pub fn write_stderr(data: &[u8]) -> std::io::Result<()> {
    let mut err = std::io::stderr().lock();
    err.write_all(data)?;
    err.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Root {
        #[command(subcommand)]
        cmd: CliCommand,
    }

    fn parse(args: &[&str]) -> Result<CliCommand, clap::Error> {
        Root::try_parse_from(std::iter::once("hutch").chain(args.iter().copied())).map(|r| r.cmd)
    }

    #[test]
    fn kv() {
        assert_eq!(parse_kv("A=b").unwrap(), ("A".into(), "b".into()));
        assert_eq!(parse_kv("A=").unwrap(), ("A".into(), "".into()));
        assert_eq!(parse_kv("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(parse_kv("A").is_err());
        assert!(parse_kv("=b").is_err());
        let m = kv_map(&[("a".into(), "1".into()), ("a".into(), "2".into())]);
        assert_eq!(m.get("a").map(String::as_str), Some("2"));
    }

    #[test]
    fn exit_statuses() {
        assert_eq!(exit_status(Some(3), None), 3);
        assert_eq!(exit_status(None, Some(9)), 137);
        assert_eq!(exit_status(None, None), 1);
    }

    #[test]
    fn clap_definition_is_valid() {
        Root::command().debug_assert();
    }

    #[test]
    fn parses_run_and_exec() {
        let CliCommand::Run(r) =
            parse(&["run", "--rm", "--env", "A=1", "--", "sh", "-c", "exit 3"]).unwrap()
        else {
            panic!("not run")
        };
        assert!(r.rm);
        assert_eq!(r.cmd, vec!["sh", "-c", "exit 3"]);
        assert_eq!(r.spec.env, vec![("A".to_owned(), "1".to_owned())]);

        let CliCommand::Exec(e) = parse(&["exec", "-it", "sb1", "--", "ls", "-la"]).unwrap() else {
            panic!("not exec")
        };
        assert!(e.interactive && e.tty);
        assert_eq!(e.id, "sb1");
        assert_eq!(e.cmd, vec!["ls", "-la"]);

        let CliCommand::Exec(e) = parse(&["exec", "sb1", "ls", "-la"]).unwrap() else {
            panic!("not exec")
        };
        assert_eq!(e.cmd, vec!["ls", "-la"]);
        assert!(parse(&["exec", "sb1"]).is_err());
        assert!(parse(&["create", "--env", "novalue"]).is_err());
    }

    #[test]
    fn conn_flags_on_subcommands() {
        let CliCommand::Ls(l) = parse(&["ls", "--url", "http://x:1", "--api-key", "k"]).unwrap()
        else {
            panic!("not ls")
        };
        assert_eq!(l.conn.url.as_deref(), Some("http://x:1"));
        assert_eq!(l.conn.api_key.as_deref(), Some("k"));
        let CliCommand::Terminal(t) =
            parse(&["terminal", "capture", "--url", "http://y", "sb", "main"]).unwrap()
        else {
            panic!("not terminal")
        };
        assert_eq!(t.conn.url.as_deref(), Some("http://y"));
    }
}
