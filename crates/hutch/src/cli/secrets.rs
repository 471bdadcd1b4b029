//! `hutch secrets`: a team's secrets. Values are read from stdin, never from the command line
//! (argv is visible to every user of the machine and lands in shell history).

use std::io::{IsTerminal, Read, Write};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use hutch_api::ErrorCode;
use hutch_api::secrets::{CreateSecret, MAX_SECRET_VALUE_BYTES, Secret, UpdateSecret};
use reqwest::Method;

use super::ConnArgs;
use super::client::{Client, ServerError, decode_json, decode_list, seg};
use super::table::{Table, relative};

/// `hutch secrets`.
#[derive(Args, Debug)]
pub struct SecretsArgs {
    #[command(subcommand)]
    pub cmd: SecretsCommand,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Secret subcommands.
#[derive(Subcommand, Debug)]
pub enum SecretsCommand {
    /// List the team's secrets (names and dates; values are never shown).
    #[command(visible_alias = "list")]
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create a secret or replace its value. The value is read from stdin (a prompt without
    /// echo on a terminal; otherwise all of stdin, minus one trailing newline).
    Set {
        /// Secret name (A-Z a-z 0-9 _ . -).
        name: String,
        /// A description (shown by `ls`; must not contain the value).
        #[arg(long, short = 'd')]
        description: Option<String>,
        /// A domain the value may be sent to by the egress gateway (repeatable; exact or
        /// `*.example.com`). Without any, the secret cannot be bound to sandboxes.
        #[arg(long = "host", value_name = "DOMAIN")]
        hosts: Vec<String>,
    },
    /// Delete a secret.
    #[command(visible_alias = "delete")]
    Rm {
        /// Secret name.
        name: String,
    },
}

/// Run a secrets subcommand.
pub async fn secrets(args: SecretsArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    match args.cmd {
        SecretsCommand::Ls { json } => {
            let v: serde_json::Value = client.get_json("/v1/secrets", &[]).await?;
            let items: Vec<Secret> = decode_list(v)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                print!("{}", secret_table(&items, chrono::Utc::now()));
            }
        }
        SecretsCommand::Set {
            name,
            description,
            hosts,
        } => {
            let value = read_value(&name)?;
            let (secret, created) = set(&client, &name, value, description, hosts).await?;
            eprintln!(
                "Secret {} {}.",
                secret.name,
                if created { "created" } else { "updated" }
            );
        }
        SecretsCommand::Rm { name } => {
            client
                .delete(&format!("/v1/secrets/{}", seg(&name)), &[])
                .await?;
            println!("{name}");
        }
    }
    Ok(())
}

/// Creates the secret, or rotates it when it exists. Returns its metadata and whether it was new.
async fn set(
    client: &Client,
    name: &str,
    value: String,
    description: Option<String>,
    hosts: Vec<String>,
) -> anyhow::Result<(Secret, bool)> {
    let create = CreateSecret {
        name: name.to_owned(),
        value,
        description: description.clone(),
        hosts: hosts.clone(),
    };
    let created = client.post_json::<_, Secret>("/v1/secrets", &create).await;
    match created {
        Ok(s) => return Ok((s, true)),
        Err(e)
            if e.downcast_ref::<ServerError>()
                .is_some_and(|s| s.code() == ErrorCode::AlreadyExists) => {}
        Err(e) => return Err(e),
    }
    let update = UpdateSecret {
        value: create.value,
        description,
        // Rotating keeps the hosts unless new ones are given.
        hosts: (!hosts.is_empty()).then_some(hosts),
    };
    let resp = client
        .send(
            client
                .request(Method::PUT, &format!("/v1/secrets/{}", seg(name)))
                .json(&update),
        )
        .await?;
    Ok((decode_json(resp).await?, false))
}

/// Reads the value: a no-echo prompt on a terminal, else all of stdin.
fn read_value(name: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let mut text = String::new();
    if stdin.is_terminal() {
        eprint!("Value for {name}: ");
        std::io::stderr().flush()?;
        super::config::read_line_quietly(&mut text)?;
        eprintln!();
    } else {
        // A little more than allowed (room for a newline), so an oversize value is reported
        // rather than cut.
        let mut bytes = Vec::new();
        stdin
            .lock()
            .take(MAX_SECRET_VALUE_BYTES as u64 + 3)
            .read_to_end(&mut bytes)
            .context("reading the value from stdin")?;
        if bytes.len() > MAX_SECRET_VALUE_BYTES + 2 {
            bail!("the value is larger than {MAX_SECRET_VALUE_BYTES} bytes");
        }
        text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("the value must be UTF-8"))?;
    }
    value_from_input(text)
}

/// The value in what was read: one trailing newline (`\n` or `\r\n`) removed; empty and
/// oversize values refused.
pub fn value_from_input(mut text: String) -> anyhow::Result<String> {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        bail!("no value given: write it to stdin (e.g. `hutch secrets set NAME < file`)");
    }
    if text.len() > MAX_SECRET_VALUE_BYTES {
        bail!("the value is larger than {MAX_SECRET_VALUE_BYTES} bytes");
    }
    Ok(text)
}

/// The `secrets ls` table.
pub fn secret_table(items: &[Secret], now: chrono::DateTime<chrono::Utc>) -> String {
    let mut t = Table::new(&["NAME", "HOSTS", "DESCRIPTION", "CREATED", "UPDATED"]);
    for s in items {
        t.row(vec![
            s.name.clone(),
            if s.hosts.is_empty() {
                "-".to_owned()
            } else {
                s.hosts.join(",")
            },
            s.description.clone().unwrap_or_else(|| "-".to_owned()),
            relative(s.created_at, now),
            relative(s.updated_at, now),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::CliCommand;
    use clap::Parser;

    #[derive(Parser)]
    struct Root {
        #[command(subcommand)]
        cmd: CliCommand,
    }

    fn parse(args: &[&str]) -> Result<SecretsArgs, clap::Error> {
        let root = Root::try_parse_from(std::iter::once("hutch").chain(args.iter().copied()))?;
        match root.cmd {
            CliCommand::Secrets(a) => Ok(a),
            _ => panic!("not secrets"),
        }
    }

    #[test]
    fn parses_subcommands() {
        let a = parse(&["secrets", "ls", "--json"]).unwrap();
        assert!(matches!(a.cmd, SecretsCommand::Ls { json: true }));
        let a = parse(&["secrets", "list"]).unwrap();
        assert!(matches!(a.cmd, SecretsCommand::Ls { json: false }));

        let a = parse(&["secrets", "set", "OPENAI_API_KEY", "--description", "prod"]).unwrap();
        let SecretsCommand::Set {
            name, description, ..
        } = a.cmd
        else {
            panic!("not set")
        };
        assert_eq!(name, "OPENAI_API_KEY");
        assert_eq!(description.as_deref(), Some("prod"));

        let a = parse(&["secrets", "rm", "X", "--url", "http://h:1"]).unwrap();
        assert!(matches!(a.cmd, SecretsCommand::Rm { ref name } if name == "X"));
        assert_eq!(a.conn.url.as_deref(), Some("http://h:1"));
    }

    #[test]
    fn value_never_on_argv() {
        // `set` takes exactly one positional (the name): a value argument is an error.
        assert!(parse(&["secrets", "set", "N", "the-value"]).is_err());
        assert!(parse(&["secrets", "set", "N", "--value", "v"]).is_err());
        assert!(parse(&["secrets", "set"]).is_err());
        assert!(parse(&["secrets"]).is_err());
        assert!(parse(&["secrets", "rm"]).is_err());
    }

    #[test]
    fn values_from_input() {
        let v = |s: &str| value_from_input(s.to_owned());
        assert_eq!(v("abc\n").unwrap(), "abc");
        assert_eq!(v("abc\r\n").unwrap(), "abc");
        assert_eq!(v("abc").unwrap(), "abc");
        assert_eq!(v("a\nb\n\n").unwrap(), "a\nb\n");
        assert!(v("").is_err());
        assert!(v("\n").is_err());
        assert!(v(&"x".repeat(MAX_SECRET_VALUE_BYTES)).is_ok());
        assert!(v(&"x".repeat(MAX_SECRET_VALUE_BYTES + 1)).is_err());
    }

    #[test]
    fn table() {
        let now = chrono::Utc::now();
        let items = vec![Secret {
            name: "GH_TOKEN".into(),
            description: Some("github".into()),
            hosts: vec!["api.github.com".into()],
            created_at: now - chrono::Duration::seconds(120),
            updated_at: now - chrono::Duration::seconds(5),
        }];
        let out = secret_table(&items, now);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{out}");
        assert!(
            lines[1].contains("GH_TOKEN") && lines[1].contains("github"),
            "{out}"
        );
        assert!(
            lines[1].contains("2m ago") && lines[1].contains("5s ago"),
            "{out}"
        );
    }
}
