//! `hutch network`, `hutch egress`, `hutch approvals` and (inside a sandbox) `hutch
//! request-access`.

use std::time::Duration;

use clap::{Args, Subcommand};
use futures::StreamExt;
use hutch_api::network::{
    AccessRequest, AllowRule, Approval, ApproveRequest, DenyRequest, EgressEntry, NetworkInfo,
    NetworkSpec,
};
use hutch_api::sandbox::Page;
use reqwest::Method;

use super::ConnArgs;
use super::client::seg;
use super::table::Table;

/// `hutch network`.
#[derive(Args, Debug)]
pub struct NetworkArgs {
    #[command(subcommand)]
    pub cmd: NetworkCmd,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `hutch network …`.
#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Show a sandbox's network settings, address and gateway.
    Show {
        /// Sandbox id.
        id: String,
    },
    /// Replace a sandbox's allowlist, live (new connections follow it at once).
    Allow {
        /// Sandbox id.
        id: String,
        /// Allowed domains (`api.example.com`, `*.example.com`, `*`); none allows nothing.
        domains: Vec<String>,
    },
}

/// `hutch network`.
pub async fn network(args: NetworkArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    match args.cmd {
        NetworkCmd::Show { id } => {
            let info: NetworkInfo = client
                .get_json(&format!("/v1/sandboxes/{}/network", seg(&id)), &[])
                .await?;
            println!("{}", serde_json::to_string_pretty(&info)?);
        }
        NetworkCmd::Allow { id, domains } => {
            let current: NetworkInfo = client
                .get_json(&format!("/v1/sandboxes/{}/network", seg(&id)), &[])
                .await?;
            let spec = NetworkSpec {
                allow: domains.into_iter().map(AllowRule::Domain).collect(),
                ..current.network
            };
            let resp = client
                .send(
                    client
                        .request(Method::PUT, &format!("/v1/sandboxes/{}/network", seg(&id)))
                        .json(&spec),
                )
                .await?;
            let info: NetworkInfo = super::client::decode_json(resp).await?;
            println!("{}", serde_json::to_string_pretty(&info.network)?);
        }
    }
    Ok(())
}

/// `hutch egress`.
#[derive(Args, Debug)]
pub struct EgressArgs {
    /// Sandbox id.
    pub id: String,
    /// Keep streaming new entries.
    #[arg(short, long)]
    pub follow: bool,
    /// Only entries after this sequence number.
    #[arg(long, value_name = "SEQ")]
    pub after: Option<i64>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

fn egress_row(t: &mut Table, e: &EgressEntry) {
    t.row(vec![
        e.seq.to_string(),
        e.time.format("%H:%M:%S%.3f").to_string(),
        e.kind.clone(),
        e.method.clone().unwrap_or_default(),
        format!(
            "{}:{}{}",
            e.host,
            e.port,
            e.path.clone().unwrap_or_default()
        ),
        e.status.map(|s| s.to_string()).unwrap_or_default(),
        e.decision.clone(),
        e.rule
            .clone()
            .or_else(|| e.reason.clone())
            .unwrap_or_default(),
    ]);
}

const EGRESS_COLUMNS: &[&str] = &[
    "SEQ",
    "TIME",
    "KIND",
    "METHOD",
    "DESTINATION",
    "STATUS",
    "DECISION",
    "RULE/REASON",
];

/// `hutch egress ID [-f]`.
pub async fn egress(args: EgressArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    let path = format!("/v1/sandboxes/{}/egress", seg(&args.id));
    let mut after = args.after.unwrap_or(0);
    if !args.follow {
        loop {
            let page: Page<EgressEntry> = client
                .get_json(
                    &path,
                    &[("after", after.to_string()), ("limit", "500".into())],
                )
                .await?;
            let mut t = Table::new(EGRESS_COLUMNS);
            for e in &page.items {
                if args.json {
                    println!("{}", serde_json::to_string(e)?);
                } else {
                    egress_row(&mut t, e);
                }
            }
            if !args.json {
                print!("{}", t.render());
            }
            match page.next_cursor.and_then(|c| c.parse().ok()) {
                Some(c) => after = c,
                None => return Ok(()),
            }
        }
    }
    let resp = client
        .send(
            client
                .request(Method::GET, &path)
                .query(&[("after", after.to_string()), ("follow", "true".into())])
                .timeout(Duration::from_secs(365 * 24 * 3600)),
        )
        .await?;
    let mut body = resp.bytes_stream();
    let mut buf = Vec::new();
    if !args.json {
        println!("{}", EGRESS_COLUMNS.join("  "));
    }
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk?);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = buf.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&frame);
            for line in text.lines() {
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                let e: EgressEntry = serde_json::from_str(data.trim())?;
                if args.json {
                    println!("{}", serde_json::to_string(&e)?);
                } else {
                    let mut t = Table::new(EGRESS_COLUMNS);
                    egress_row(&mut t, &e);
                    // One row at a time: skip the header line.
                    let text = t.render();
                    print!("{}", text.split_once('\n').map_or("", |(_, rows)| rows));
                }
            }
        }
    }
    Ok(())
}

/// `hutch approvals`.
#[derive(Args, Debug)]
pub struct ApprovalsArgs {
    #[command(subcommand)]
    pub cmd: ApprovalsCmd,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `hutch approvals …`.
#[derive(Subcommand, Debug)]
pub enum ApprovalsCmd {
    /// List access requests (pending ones unless --all).
    Ls {
        /// Every request, decided ones too.
        #[arg(long)]
        all: bool,
        /// Only this sandbox's.
        #[arg(long, value_name = "ID")]
        sandbox: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Grant a request (optionally narrowed); the sandbox's allowlist changes at once.
    Approve {
        /// Request id (`ar-…`).
        id: String,
        /// Grant this domain instead (within the requested one).
        #[arg(long)]
        host: Option<String>,
        /// Grant only this path prefix.
        #[arg(long)]
        path: Option<String>,
        /// Grant only these methods (repeatable).
        #[arg(long = "method")]
        methods: Vec<String>,
        /// A note for the record.
        #[arg(long)]
        note: Option<String>,
    },
    /// Refuse a request.
    Deny {
        /// Request id.
        id: String,
        /// A note for the record.
        #[arg(long)]
        note: Option<String>,
    },
}

/// `text` safe to print in a terminal: control characters shown escaped.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().collect()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn approvals_table(items: &[Approval]) -> Table {
    let mut t = Table::new(&[
        "ID",
        "SANDBOX",
        "STATE",
        "HOST",
        "PATH",
        "JUSTIFICATION",
        "CREATED",
    ]);
    for a in items {
        t.row(vec![
            a.id.clone(),
            a.sandbox_id.clone(),
            a.state.as_str().to_owned(),
            printable(&a.host),
            printable(&a.path.clone().unwrap_or_default()),
            printable(&a.justification.chars().take(60).collect::<String>()),
            a.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        ]);
    }
    t
}

/// `hutch approvals`.
pub async fn approvals(args: ApprovalsArgs) -> anyhow::Result<()> {
    let client = args.conn.client()?;
    match args.cmd {
        ApprovalsCmd::Ls { all, sandbox, json } => {
            let mut q = Vec::new();
            if !all {
                q.push(("state", "pending".to_owned()));
            }
            if let Some(s) = sandbox {
                q.push(("sandbox_id", s));
            }
            let page: Page<Approval> = client.get_json("/v1/approvals", &q).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page.items)?);
            } else {
                print!("{}", approvals_table(&page.items).render());
            }
        }
        ApprovalsCmd::Approve {
            id,
            host,
            path,
            methods,
            note,
        } => {
            let a: Approval = client
                .post_json(
                    &format!("/v1/approvals/{}/approve", seg(&id)),
                    &ApproveRequest {
                        host,
                        path,
                        methods,
                        note,
                    },
                )
                .await?;
            println!("{} approved for sandbox {}", a.id, a.sandbox_id);
        }
        ApprovalsCmd::Deny { id, note } => {
            let a: Approval = client
                .post_json(
                    &format!("/v1/approvals/{}/deny", seg(&id)),
                    &DenyRequest { note },
                )
                .await?;
            println!("{} denied", a.id);
        }
    }
    Ok(())
}

/// `hutch request-access` (run inside a sandbox).
#[derive(Args, Debug)]
pub struct RequestAccessArgs {
    /// Domain to ask for (`api.example.com` or `*.example.com`).
    pub host: String,
    /// Why the agent needs it (shown to the operator).
    #[arg(long)]
    pub reason: String,
    /// Only this path prefix.
    #[arg(long)]
    pub path: Option<String>,
    /// Ports (default 80 and 443; repeatable).
    #[arg(long = "port")]
    pub ports: Vec<u16>,
    /// Wait up to SECONDS for the decision (exit 0 approved, 3 denied, 4 still pending).
    #[arg(long, value_name = "SECONDS")]
    pub wait: Option<u64>,
}

/// `hutch request-access`: asks `http://hutch.internal` (the sandbox's gateway) for access.
pub async fn request_access(args: RequestAccessArgs) -> anyhow::Result<i32> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let base = "http://hutch.internal";
    let resp = http
        .post(format!("{base}/v1/access-requests"))
        .json(&AccessRequest {
            host: args.host,
            path: args.path,
            ports: args.ports,
            justification: args.reason,
        })
        .send()
        .await?;
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_default();
        anyhow::bail!("{}", super::client::decode_error(status, &body).message);
    }
    let mut a: Approval = resp.json().await?;
    println!("requested {} ({})", a.id, a.host);
    if let Some(wait) = args.wait {
        let deadline = std::time::Instant::now() + Duration::from_secs(wait);
        while a.state == hutch_api::network::ApprovalState::Pending
            && std::time::Instant::now() < deadline
        {
            let left = deadline
                .saturating_duration_since(std::time::Instant::now())
                .as_secs()
                .max(1);
            a = http
                .get(format!(
                    "{base}/v1/access-requests/{}?wait={}",
                    a.id,
                    left.min(300)
                ))
                .timeout(Duration::from_secs(left.min(300) + 10))
                .send()
                .await?
                .json()
                .await?;
        }
    }
    println!("{}", a.state.as_str());
    Ok(match a.state {
        hutch_api::network::ApprovalState::Approved => 0,
        hutch_api::network::ApprovalState::Denied => 3,
        hutch_api::network::ApprovalState::Pending => 4,
    })
}
