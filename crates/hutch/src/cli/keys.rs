//! `hutch keys`: API key administration.

use clap::{Args, Subcommand};
use hutch_api::sandbox::{ApiKey, CreateApiKey, CreatedApiKey};

use super::ConnArgs;
use super::client::{decode_list, seg};
use super::table::{Table, relative};

/// `hutch keys`.
#[derive(Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub cmd: KeysCommand,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Key subcommands.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create an API key and print it (it is shown only this once).
    Create {
        /// A name to recognise the key by.
        name: String,
        /// Make it an admin key (can manage keys, teams and templates).
        #[arg(long)]
        admin: bool,
        /// Team of the key [default: the caller's team].
        #[arg(long, value_name = "TEAM_ID")]
        team: Option<String>,
        /// Print the whole answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List API keys.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key.
    Revoke {
        /// Key id (from `hutch keys ls`).
        id: String,
    },
}

/// Run a keys subcommand.
pub async fn keys(args: KeysArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    match args.cmd {
        KeysCommand::Create {
            name,
            admin,
            team,
            json,
        } => {
            let req = CreateApiKey {
                name,
                team_id: team,
                admin,
            };
            let created: CreatedApiKey = client.post_json("/v1/keys", &req).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                println!("{}", created.key);
                eprintln!(
                    "Key {} ({}) created; it will not be shown again.",
                    created.meta.id, created.meta.name
                );
            }
        }
        KeysCommand::Ls { json } => {
            let v: serde_json::Value = client.get_json("/v1/keys", &[]).await?;
            let items: Vec<ApiKey> = decode_list(v)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                print!("{}", key_table(&items, chrono::Utc::now()));
            }
        }
        KeysCommand::Revoke { id } => {
            client
                .delete(&format!("/v1/keys/{}", seg(&id)), &[])
                .await?;
            println!("{id}");
        }
    }
    Ok(())
}

/// The `keys ls` table.
pub fn key_table(items: &[ApiKey], now: chrono::DateTime<chrono::Utc>) -> String {
    let mut t = Table::new(&[
        "ID", "NAME", "TEAM", "ADMIN", "PREFIX", "CREATED", "REVOKED",
    ]);
    for k in items {
        t.row(vec![
            k.id.clone(),
            k.name.clone(),
            k.team_id.clone(),
            if k.admin { "yes" } else { "no" }.to_owned(),
            k.prefix.clone(),
            relative(k.created_at, now),
            k.revoked_at
                .map(|r| relative(r, now))
                .unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    t.render()
}
