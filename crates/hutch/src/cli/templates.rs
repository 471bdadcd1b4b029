//! `hutch template`: list, import (streamed, with progress) and delete templates.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use futures::StreamExt;
use hutch_api::sandbox::Template;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;

use super::ConnArgs;
use super::client::{decode_json, decode_list, seg};
use super::pipe::tar_dir;
use super::table::{Table, bytes, relative};

/// `hutch template`.
#[derive(Args, Debug)]
pub struct TemplateArgs {
    #[command(subcommand)]
    pub cmd: TemplateCommand,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Template subcommands.
#[derive(Subcommand, Debug)]
pub enum TemplateCommand {
    /// List templates.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Import a root filesystem as a new template (admin keys only).
    Import {
        /// Template name (`[a-z0-9][a-z0-9._-]*`).
        name: String,
        /// A .tar or .tar.gz of the root filesystem, or a directory (archived on the fly).
        path: PathBuf,
    },
    /// Delete a template.
    Rm {
        /// Template name.
        name: String,
    },
}

/// Run a template subcommand.
pub async fn template(args: TemplateArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    match args.cmd {
        TemplateCommand::Ls { json } => {
            let v: serde_json::Value = client.get_json("/v1/templates", &[]).await?;
            let items: Vec<Template> = decode_list(v)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                print!("{}", template_table(&items, chrono::Utc::now()));
            }
        }
        TemplateCommand::Import { name, path } => {
            let meta = tokio::fs::metadata(&path)
                .await
                .with_context(|| format!("cannot read {}", path.display()))?;
            let pb = progress_bar(if meta.is_dir() {
                None
            } else {
                Some(meta.len())
            });
            let body_stream = if meta.is_dir() {
                tar_dir(path.clone()).boxed()
            } else {
                let file = tokio::fs::File::open(&path)
                    .await
                    .with_context(|| format!("cannot open {}", path.display()))?;
                tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).boxed()
            };
            let counter = pb.clone();
            let body_stream = body_stream.inspect(move |chunk| {
                if let Ok(b) = chunk {
                    counter.inc(b.len() as u64);
                }
            });
            let mut rb = client
                .request(Method::POST, "/v1/templates")
                .query(&[("name", name.as_str())])
                .header(http::header::CONTENT_TYPE, "application/x-tar")
                .body(reqwest::Body::wrap_stream(body_stream));
            if !meta.is_dir() {
                rb = rb.header(http::header::CONTENT_LENGTH, meta.len());
            }
            let result = client.send(rb).await;
            pb.finish_and_clear();
            let t: Template = decode_json(result?).await?;
            println!("{} ({})", t.name, bytes(t.size_bytes));
        }
        TemplateCommand::Rm { name } => {
            client
                .delete(&format!("/v1/templates/{}", seg(&name)), &[])
                .await?;
            println!("{name}");
        }
    }
    Ok(())
}

/// A progress bar on stderr when it is a terminal (hidden otherwise).
fn progress_bar(total: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    match total {
        Some(len) => {
            let pb = ProgressBar::new(len);
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} uploading [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                pb.set_style(style.progress_chars("=> "));
            }
            pb
        }
        None => {
            let pb = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} uploading {bytes} {bytes_per_sec} {elapsed}",
            ) {
                pb.set_style(style);
            }
            pb.enable_steady_tick(std::time::Duration::from_millis(120));
            pb
        }
    }
}

/// The `template ls` table.
pub fn template_table(items: &[Template], now: chrono::DateTime<chrono::Utc>) -> String {
    let mut t = Table::new(&["NAME", "SIZE", "CREATED", "IN USE"]);
    for tpl in items {
        t.row(vec![
            tpl.name.clone(),
            bytes(tpl.size_bytes),
            relative(tpl.created_at, now),
            tpl.in_use.to_string(),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let now = chrono::DateTime::parse_from_rfc3339("2025-01-02T00:00:00Z")
            .unwrap()
            .to_utc();
        let t: Template = serde_json::from_value(serde_json::json!({
            "name": "base", "size_bytes": 2048, "created_at": "2025-01-01T00:00:00Z", "in_use": 3
        }))
        .unwrap();
        assert_eq!(
            template_table(&[t], now),
            "NAME  SIZE    CREATED  IN USE\nbase  2.0KiB  1d ago   3\n"
        );
    }
}
