//! `hutch run`: create a sandbox, run one command with live output, exit with its code.

use clap::Args;
use hutch_api::process::StartProcess;
use hutch_api::terminal::CreateTerminal;

use super::sandboxes::{SandboxSpecArgs, create_sandbox, delete_sandbox};
use super::{ConnArgs, exec, tty};

/// `hutch run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub spec: SandboxSpecArgs,
    /// Delete the sandbox when the command ends (also when it fails).
    #[arg(long)]
    pub rm: bool,
    /// Forward local stdin to the command.
    #[arg(short, long)]
    pub interactive: bool,
    /// Run the command in a pseudo-terminal, with the local terminal in raw mode.
    #[arg(short, long)]
    pub tty: bool,
    /// Working directory of the command.
    #[arg(short = 'w', long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// User (name or uid[:gid]) to run the command as [default: root].
    #[arg(short, long, value_name = "USER")]
    pub user: Option<String>,
    /// The command and its arguments (with --tty, the login shell when empty).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub cmd: Vec<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `hutch run`.
pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    if args.cmd.is_empty() && !args.tty {
        anyhow::bail!("no command given (usage: hutch run [OPTIONS] -- CMD...)");
    }
    let client = args.conn.client()?;
    let sb = create_sandbox(&client, &args.spec.to_request()).await?;
    if !args.rm {
        eprintln!("{}", sb.id);
    }
    let result = if args.tty {
        let (cols, rows) = tty::local_size();
        let req = CreateTerminal {
            name: Some(tty::session_name("run")),
            cmd: (!args.cmd.is_empty()).then_some(args.cmd),
            cols,
            rows,
            env: Default::default(),
            cwd: args.cwd,
            user: args.user,
        };
        tty::run_session(&client, &sb.id, req, args.interactive).await
    } else {
        let req = StartProcess {
            cmd: Some(args.cmd),
            cwd: args.cwd,
            user: args.user,
            keep_stdin: args.interactive,
            ..StartProcess::default()
        };
        exec::stream_process(&client, &sb.id, &req, args.interactive).await
    };
    if args.rm
        && let Err(e) = delete_sandbox(&client, &sb.id).await
    {
        eprintln!("hutch: cannot delete sandbox {}: {e:#}", sb.id);
    }
    result
}
