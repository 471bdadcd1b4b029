//! `hutch terminal`: named PTY sessions that outlive connections.

use clap::{Args, Subcommand};
use hutch_api::terminal::{CreateTerminal, TerminalInfo, TerminalInput, TerminalScreen};

use super::client::{decode_list, seg};
use super::table::{Table, relative};
use super::tty::{self, AttachEnd};
use super::{ConnArgs, kv_map, parse_kv};

/// The byte of Ctrl-] (the detach key of `terminal attach`).
pub const DETACH_KEY: u8 = 0x1d;

/// `hutch terminal`.
#[derive(Args, Debug)]
pub struct TerminalArgs {
    #[command(subcommand)]
    pub cmd: TerminalCommand,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Terminal subcommands.
#[derive(Subcommand, Debug)]
pub enum TerminalCommand {
    /// List a sandbox's terminal sessions.
    Ls {
        /// Sandbox id.
        id: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Start a detached terminal session (prints its name).
    Create {
        /// Sandbox id.
        id: String,
        /// Session name [default: generated].
        #[arg(long)]
        name: Option<String>,
        /// Columns.
        #[arg(long, default_value_t = 120)]
        cols: u16,
        /// Rows.
        #[arg(long, default_value_t = 40)]
        rows: u16,
        /// Environment variable (repeatable).
        #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_kv)]
        env: Vec<(String, String)>,
        /// Working directory.
        #[arg(short = 'w', long, value_name = "DIR")]
        cwd: Option<String>,
        /// User (name or uid[:gid]) [default: root].
        #[arg(short, long)]
        user: Option<String>,
        /// Program and arguments [default: the user's login shell].
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        cmd: Vec<String>,
    },
    /// Attach the local terminal to a session (Ctrl-] detaches; the session keeps running).
    Attach {
        /// Sandbox id.
        id: String,
        /// Session name.
        name: String,
    },
    /// Print what a session's screen shows now.
    Capture {
        /// Sandbox id.
        id: String,
        /// Session name.
        name: String,
        /// Also print up to N lines that scrolled off the top.
        #[arg(long, value_name = "N")]
        scrollback: Option<u32>,
    },
    /// Type text and/or named keys into a session.
    #[command(
        after_help = "Keys: Enter, Tab, Escape, Backspace, Up, Down, Left, Right, Home, End, PageUp,\n\
                            PageDown, Delete, Space, C-a … C-z, M-x, F1–F12. Text is sent first, then keys.\n\
                            Example: hutch terminal send sb-1 main 'ls -la' --key Enter"
    )]
    Send {
        /// Sandbox id.
        id: String,
        /// Session name.
        name: String,
        /// Literal text to type.
        text: Option<String>,
        /// A named key to press after the text (repeatable).
        #[arg(short, long = "key", value_name = "KEY")]
        keys: Vec<String>,
    },
    /// Resize a session's PTY.
    Resize {
        /// Sandbox id.
        id: String,
        /// Session name.
        name: String,
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// End a session (kills its program).
    Rm {
        /// Sandbox id.
        id: String,
        /// Session name.
        name: String,
    },
}

fn base(id: &str) -> String {
    format!("/v1/sandboxes/{}/terminals", seg(id))
}

fn path(id: &str, name: &str, rest: &str) -> String {
    format!("{}/{}{rest}", base(id), seg(name))
}

/// Run a terminal subcommand.
pub async fn terminal(args: TerminalArgs) -> anyhow::Result<i32> {
    let client = args.conn.client()?;
    match args.cmd {
        TerminalCommand::Ls { id, json } => {
            let v: serde_json::Value = client.get_json(&base(&id), &[]).await?;
            let items: Vec<TerminalInfo> = decode_list(v)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                print!("{}", terminal_table(&items, chrono::Utc::now()));
            }
        }
        TerminalCommand::Create {
            id,
            name,
            cols,
            rows,
            env,
            cwd,
            user,
            cmd,
        } => {
            let req = CreateTerminal {
                name,
                cmd: (!cmd.is_empty()).then_some(cmd),
                cols,
                rows,
                env: kv_map(&env),
                cwd,
                user,
            };
            let info: TerminalInfo = client.post_json(&base(&id), &req).await?;
            println!("{}", info.name);
        }
        TerminalCommand::Attach { id, name } => {
            // Fail early (with the server's message) when the session does not exist.
            let _: TerminalInfo = client.get_json(&path(&id, &name, ""), &[]).await?;
            match tty::attach(&client, &id, &name, true, Some(DETACH_KEY)).await? {
                AttachEnd::Detached => eprintln!("\r\nDetached from {name}."),
                AttachEnd::Closed => return tty::wait_exit(&client, &id, &name).await,
            }
        }
        TerminalCommand::Capture {
            id,
            name,
            scrollback,
        } => {
            let q: Vec<(&str, String)> = scrollback
                .map(|n| ("scrollback", n.to_string()))
                .into_iter()
                .collect();
            let screen: TerminalScreen = client.get_json(&path(&id, &name, "/screen"), &q).await?;
            print!("{}", capture_text(&screen));
        }
        TerminalCommand::Send {
            id,
            name,
            text,
            keys,
        } => {
            if text.is_none() && keys.is_empty() {
                anyhow::bail!("nothing to send: give TEXT and/or --key");
            }
            let input = TerminalInput { text, keys };
            client
                .post_unit(&path(&id, &name, "/input"), &input)
                .await?;
        }
        TerminalCommand::Resize {
            id,
            name,
            cols,
            rows,
        } => {
            let body = hutch_api::terminal::TerminalResize { cols, rows };
            client
                .post_unit(&path(&id, &name, "/resize"), &body)
                .await?;
        }
        TerminalCommand::Rm { id, name } => {
            client.delete(&path(&id, &name, ""), &[]).await?;
        }
    }
    Ok(0)
}

/// The `terminal ls` table.
pub fn terminal_table(items: &[TerminalInfo], now: chrono::DateTime<chrono::Utc>) -> String {
    let mut t = Table::new(&["NAME", "PID", "SIZE", "STATE", "CREATED", "COMMAND"]);
    for term in items {
        let state = match (term.alive, term.exit_code) {
            (true, _) => "running".to_owned(),
            (false, Some(c)) => format!("exited ({c})"),
            (false, None) => "exited".to_owned(),
        };
        t.row(vec![
            term.name.clone(),
            term.pid.to_string(),
            format!("{}x{}", term.cols, term.rows),
            state,
            relative(term.created_at, now),
            term.cmd.join(" "),
        ]);
    }
    t.render()
}

/// What `terminal capture` prints: scrollback lines (if any), then the screen, newline-ended.
pub fn capture_text(screen: &TerminalScreen) -> String {
    let mut out = String::new();
    for line in &screen.scrollback {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(screen.text.trim_end_matches('\n'));
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture() {
        let screen: TerminalScreen = serde_json::from_value(serde_json::json!({
            "name": "t", "text": "$ ls\na b\n", "scrollback": ["old"], "cursor_row": 1,
            "cursor_col": 0, "cols": 80, "rows": 24, "alive": true
        }))
        .unwrap();
        assert_eq!(capture_text(&screen), "old\n$ ls\na b\n");
    }

    #[test]
    fn table() {
        let now = chrono::DateTime::parse_from_rfc3339("2025-01-01T00:01:00Z")
            .unwrap()
            .to_utc();
        let t: TerminalInfo = serde_json::from_value(serde_json::json!({
            "name": "main", "pid": 12, "cmd": ["bash", "-l"], "cols": 80, "rows": 24,
            "created_at": "2025-01-01T00:00:00Z", "alive": false, "exit_code": 2
        }))
        .unwrap();
        assert_eq!(
            terminal_table(&[t], now),
            "NAME  PID  SIZE   STATE       CREATED  COMMAND\nmain  12   80x24  exited (2)  1m ago   bash -l\n"
        );
    }
}
