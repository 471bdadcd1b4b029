//! Sandbox lifecycle: `create`, `ls`, `inspect`, `rm`, `pause`, `resume`, `keepalive`, `timeout`.

use anyhow::Context;
use clap::Args;
use hutch_api::network::{AllowRule, NetworkSpec};
use hutch_api::sandbox::{CreateSandbox, Page, Sandbox, SandboxState, SetTimeout};

use super::client::{Client, decode_json, is_not_found, seg};
use super::table::{Table, relative, relative_opt};
use super::{ConnArgs, kv_map, parse_kv};

/// Settings of a new sandbox (shared by `create` and `run`).
#[derive(Args, Debug, Clone, Default)]
pub struct SandboxSpecArgs {
    /// Template to start from [default: the server's default, `base`].
    #[arg(long, value_name = "NAME")]
    pub template: Option<String>,
    /// CPU quota in cores (fractions allowed, e.g. 0.5).
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Memory limit in MiB.
    #[arg(long, value_name = "MB")]
    pub memory: Option<u64>,
    /// Maximum number of processes and threads.
    #[arg(long, value_name = "N")]
    pub pids: Option<u64>,
    /// Seconds until the sandbox expires and is deleted [default: the server's, 300].
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Environment variable for every process in the sandbox (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub env: Vec<(String, String)>,
    /// Metadata label to attach to the sandbox (repeatable).
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub metadata: Vec<(String, String)>,
    /// Give the sandbox a network limited to this domain (repeatable; `*.example.com`, `*`).
    /// Without it the sandbox has only loopback.
    #[arg(long = "allow", value_name = "DOMAIN")]
    pub allow: Vec<String>,
    /// Give the sandbox a network with an empty allowlist (grow it later with `hutch network
    /// allow` or access requests).
    #[arg(long)]
    pub net: bool,
}

impl SandboxSpecArgs {
    /// The request body.
    pub fn to_request(&self) -> CreateSandbox {
        CreateSandbox {
            template: self.template.clone(),
            cpus: self.cpus,
            memory_mb: self.memory,
            pids: self.pids,
            timeout_s: self.timeout,
            env: kv_map(&self.env),
            metadata: kv_map(&self.metadata),
            network: (self.net || !self.allow.is_empty()).then(|| NetworkSpec {
                mode: "allowlist".into(),
                allow: self.allow.iter().cloned().map(AllowRule::Domain).collect(),
                ..NetworkSpec::default()
            }),
            ..CreateSandbox::default()
        }
    }
}

/// `hutch create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub spec: SandboxSpecArgs,
    /// Print the whole sandbox as JSON instead of its id.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Create a sandbox from `req`.
pub async fn create_sandbox(client: &Client, req: &CreateSandbox) -> anyhow::Result<Sandbox> {
    client.post_json("/v1/sandboxes", req).await
}

/// `hutch create`: print the new sandbox's id.
pub async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let sb = create_sandbox(&client, &args.spec.to_request()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&sb)?);
    } else {
        println!("{}", sb.id);
    }
    Ok(())
}

/// `hutch ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Print JSON (an array of sandboxes) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Only sandboxes in this state (starting, running, paused, stopped, error; comma-separated).
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,
    /// Only sandboxes with this metadata entry (repeatable).
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub metadata: Vec<(String, String)>,
    /// Fetch every page, not just the first.
    #[arg(short, long)]
    pub all: bool,
    /// Page size.
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Print only ids.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Build the query of `GET /v1/sandboxes`.
pub fn list_query(
    state: Option<&str>,
    metadata: &[(String, String)],
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Vec<(String, String)> {
    let mut q = Vec::new();
    if let Some(s) = state {
        q.push(("state".to_owned(), s.to_owned()));
    }
    for (k, v) in metadata {
        q.push((format!("metadata.{k}"), v.clone()));
    }
    if let Some(l) = limit {
        q.push(("limit".to_owned(), l.to_string()));
    }
    if let Some(c) = cursor {
        q.push(("cursor".to_owned(), c.to_owned()));
    }
    q
}

/// `hutch ls`.
pub async fn ls(args: LsArgs) -> anyhow::Result<()> {
    if let Some(states) = &args.state {
        for s in states.split(',') {
            if SandboxState::parse(s.trim()).is_none() {
                anyhow::bail!(
                    "unknown state {s:?} (expected starting, running, paused, stopped or error)"
                );
            }
        }
    }
    let client = args.conn.client()?;
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = list_query(
            args.state.as_deref(),
            &args.metadata,
            args.limit,
            cursor.as_deref(),
        );
        let resp = client
            .send(
                client
                    .request(reqwest::Method::GET, "/v1/sandboxes")
                    .query(&q),
            )
            .await?;
        let page: Page<Sandbox> = decode_json(resp).await?;
        items.extend(page.items);
        match page.next_cursor {
            Some(c) if args.all && !c.is_empty() => cursor = Some(c),
            _ => break,
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else if args.quiet {
        for sb in &items {
            println!("{}", sb.id);
        }
    } else {
        print!("{}", sandbox_table(&items, chrono::Utc::now()));
    }
    Ok(())
}

/// The `ls` table.
pub fn sandbox_table(items: &[Sandbox], now: chrono::DateTime<chrono::Utc>) -> String {
    let mut t = Table::new(&["ID", "TEMPLATE", "STATE", "CREATED", "EXPIRES"]);
    for sb in items {
        t.row(vec![
            sb.id.clone(),
            sb.template.clone(),
            sb.state.as_str().to_owned(),
            relative(sb.created_at, now),
            relative_opt(sb.expires_at, now),
        ]);
    }
    t.render()
}

/// A command on one sandbox.
#[derive(Args, Debug)]
pub struct IdArgs {
    /// Sandbox id.
    pub id: String,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `hutch inspect`.
pub async fn inspect(args: IdArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let v: serde_json::Value = client
        .get_json(&format!("/v1/sandboxes/{}", seg(&args.id)), &[])
        .await?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// `hutch rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Sandbox ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Ignore sandboxes that do not exist.
    #[arg(short, long)]
    pub force: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Delete a sandbox.
pub async fn delete_sandbox(client: &Client, id: &str) -> anyhow::Result<()> {
    client
        .delete(&format!("/v1/sandboxes/{}", seg(id)), &[])
        .await
}

/// `hutch rm`: delete each sandbox; report failures and exit 1 if any.
pub async fn rm(args: RmArgs) -> anyhow::Result<i32> {
    let client = args.conn.client()?;
    let mut failed = false;
    for id in &args.ids {
        match delete_sandbox(&client, id).await {
            Ok(()) => println!("{id}"),
            Err(e) if args.force && is_not_found(&e) => {}
            Err(e) => {
                eprintln!("hutch: {id}: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// `hutch pause|resume|keepalive ID`.
pub async fn action(args: IdArgs, verb: &str) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let sb: Sandbox = client
        .post_json(
            &format!("/v1/sandboxes/{}/{verb}", seg(&args.id)),
            &serde_json::json!({}),
        )
        .await?;
    match sb.expires_at {
        Some(exp) if verb == "keepalive" => {
            println!(
                "{} {} (expires {})",
                sb.id,
                sb.state.as_str(),
                relative(exp, chrono::Utc::now())
            )
        }
        _ => println!("{} {}", sb.id, sb.state.as_str()),
    }
    Ok(())
}

/// `hutch timeout`.
#[derive(Args, Debug)]
pub struct TimeoutArgs {
    /// Sandbox id.
    pub id: String,
    /// Seconds from now until the sandbox expires.
    pub seconds: u64,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `hutch timeout ID SECONDS`.
pub async fn set_timeout(args: TimeoutArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let path = format!("/v1/sandboxes/{}/timeout", seg(&args.id));
    let resp = client
        .send(
            client
                .request(reqwest::Method::POST, &path)
                .json(&SetTimeout {
                    timeout_s: args.seconds,
                }),
        )
        .await?;
    let body = resp
        .bytes()
        .await
        .context("cannot read the server's answer")?;
    match serde_json::from_slice::<Sandbox>(&body) {
        Ok(sb) => println!(
            "{} expires {}",
            sb.id,
            relative_opt(sb.expires_at, chrono::Utc::now())
        ),
        Err(_) => println!("{}", args.id),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn query() {
        let q = list_query(
            Some("running"),
            &[("team".into(), "a b".into())],
            Some(10),
            Some("c1"),
        );
        assert_eq!(
            q,
            vec![
                ("state".to_owned(), "running".to_owned()),
                ("metadata.team".to_owned(), "a b".to_owned()),
                ("limit".to_owned(), "10".to_owned()),
                ("cursor".to_owned(), "c1".to_owned()),
            ]
        );
        assert!(list_query(None, &[], None, None).is_empty());
    }

    #[test]
    fn request_from_flags() {
        let spec = SandboxSpecArgs {
            template: Some("py".into()),
            memory: Some(256),
            env: vec![("A".into(), "1".into())],
            ..Default::default()
        };
        let v = serde_json::to_value(spec.to_request()).unwrap();
        assert_eq!(v["template"], "py");
        assert_eq!(v["memory_mb"], 256);
        assert_eq!(v["env"]["A"], "1");
        assert!(v.get("cpus").is_none());
    }

    #[test]
    fn table() {
        let now = chrono::Utc.with_ymd_and_hms(2025, 1, 1, 0, 10, 0).unwrap();
        let sb: Sandbox = serde_json::from_value(serde_json::json!({
            "id": "sb-abc", "template": "base", "state": "running", "cpus": 1.0, "memory_mb": 512,
            "pids": 256, "timeout_s": 300, "on_timeout": "kill", "network": {"mode": "none"},
            "created_at": "2025-01-01T00:09:00Z", "expires_at": "2025-01-01T00:14:00Z"
        }))
        .unwrap();
        assert_eq!(
            sandbox_table(&[sb], now),
            "ID      TEMPLATE  STATE    CREATED  EXPIRES\nsb-abc  base      running  1m ago   in 4m\n"
        );
    }
}
