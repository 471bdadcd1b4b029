//! `hutch bench api`: time-to-interactive through the HTTP API of an in-process server on
//! loopback (create → exec `echo hi` → output received), exec round trips, sustained creates.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Args;
use hutch_api::process::RunResult;
use hutch_api::sandbox::Sandbox;
use hutch_server::{ConfigOverrides, ServerConfig};
use serde_json::json;

use super::stats::Samples;

#[derive(Args)]
pub struct ApiBenchArgs {
    /// Sequential create → exec → output measurements.
    #[arg(long, default_value_t = 200)]
    pub sequential: usize,
    /// Size of each concurrent burst.
    #[arg(long, default_value_t = 20)]
    pub burst: usize,
    /// Number of concurrent bursts.
    #[arg(long, default_value_t = 5)]
    pub bursts: usize,
    /// Exec round trips on one sandbox.
    #[arg(long, default_value_t = 500)]
    pub execs: usize,
    /// Sandboxes created for the sustained-rate measurement.
    #[arg(long, default_value_t = 100)]
    pub sustained: usize,
    /// Scratch data dir (removed afterwards).
    #[arg(long, default_value = "/var/tmp/hutch-bench-api")]
    pub data_dir: PathBuf,
}

struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
    /// The server's own engine, to time the same work without HTTP (the peer in this run).
    engine: std::sync::Arc<hutch_sandbox::Engine>,
}

impl Api {
    async fn create(&self) -> Result<String> {
        let r = self
            .http
            .post(format!("{}/v1/sandboxes", self.base))
            .bearer_auth(&self.key)
            .json(&json!({"timeout_s": 600}))
            .send()
            .await?;
        ensure!(r.status().as_u16() == 201, "create: {}", r.text().await?);
        Ok(r.json::<Sandbox>().await?.id)
    }

    async fn exec_echo(&self, id: &str) -> Result<()> {
        let r = self
            .http
            .post(format!("{}/v1/sandboxes/{id}/exec", self.base))
            .bearer_auth(&self.key)
            .json(&json!({"cmd": ["echo", "hi"]}))
            .send()
            .await?;
        ensure!(r.status().is_success(), "exec: {}", r.text().await?);
        let out: RunResult = r.json().await?;
        ensure!(out.stdout == "hi\n", "unexpected output {:?}", out.stdout);
        Ok(())
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let r = self
            .http
            .delete(format!("{}/v1/sandboxes/{id}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await?;
        ensure!(r.status().is_success(), "delete: {}", r.status());
        Ok(())
    }

    async fn tti(&self) -> Result<(Duration, String)> {
        let t = Instant::now();
        let id = self.create().await?;
        self.exec_echo(&id).await?;
        Ok((t.elapsed(), id))
    }
}

pub fn run(a: ApiBenchArgs) -> Result<()> {
    let _ = std::fs::remove_dir_all(&a.data_dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(bench(&a));
    let _ = std::fs::remove_dir_all(&a.data_dir);
    result
}

async fn bench(a: &ApiBenchArgs) -> Result<()> {
    let overrides = ConfigOverrides {
        listen: Some("127.0.0.1:0".parse()?),
        data_dir: Some(a.data_dir.clone()),
        ..Default::default()
    };
    let config = ServerConfig::load(None, overrides).context("config")?;
    let server = hutch_server::spawn(config).await.context("start server")?;
    let api = Api {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?,
        base: server.url(),
        key: server
            .admin_key
            .clone()
            .context("fresh data dir has an admin key")?,
        engine: server.state.engine().clone(),
    };
    println!(
        "hutch bench api: in-process server on {} ({} cores)",
        server.addr,
        std::thread::available_parallelism()?.get()
    );
    let r = measure(&api, a).await;
    // Clean up whatever is left, then stop the server.
    if let Ok(resp) = api
        .http
        .get(format!("{}/v1/sandboxes?limit=1000", api.base))
        .bearer_auth(&api.key)
        .send()
        .await
        && let Ok(page) = resp.json::<hutch_api::sandbox::Page<Sandbox>>().await
    {
        for s in page.items {
            let _ = api.delete(&s.id).await;
        }
    }
    server.stop().await;
    r
}

async fn measure(api: &Api, a: &ApiBenchArgs) -> Result<()> {
    for _ in 0..5 {
        let (_, id) = api.tti().await?;
        api.delete(&id).await?;
    }
    let mut seq = Samples::new("TTI sequential (create -> exec echo -> output)");
    for _ in 0..a.sequential {
        let (d, id) = api.tti().await?;
        seq.push(d);
        api.delete(&id).await?;
    }
    println!("{}", seq.line());

    let mut conc = Samples::new(&format!("TTI in bursts of {} concurrent", a.burst));
    for _ in 0..a.bursts {
        let tasks: Vec<_> = (0..a.burst).map(|_| api.tti()).collect();
        let results = futures::future::join_all(tasks).await;
        for r in results {
            let (d, id) = r?;
            conc.push(d);
            api.delete(&id).await?;
        }
    }
    println!("{}", conc.line());

    let id = api.create().await?;
    let mut exec = Samples::new("exec round trip (echo hi, via /v1)");
    for _ in 0..a.execs {
        let t = Instant::now();
        api.exec_echo(&id).await?;
        exec.push(t.elapsed());
    }
    // The same exec straight to the guest over its socket: what HTTP, auth and the proxy add.
    let guest = api.engine.guest(&id)?;
    let echo = hutch_api::process::StartProcess {
        cmd: Some(vec!["echo".into(), "hi".into()]),
        ..Default::default()
    };
    let mut direct = Samples::new("exec round trip (echo hi, guest socket)");
    for _ in 0..a.execs {
        let t = Instant::now();
        let out = guest.exec(&echo).await?;
        ensure!(out.stdout == "hi\n", "unexpected output {:?}", out.stdout);
        direct.push(t.elapsed());
    }
    api.delete(&id).await?;
    println!("{}", exec.line());
    println!("{}", direct.line());
    println!(
        "    ratio /v1 / guest socket p50: {:.2}x",
        exec.pct_ms(50.0) / direct.pct_ms(50.0)
    );

    let t = Instant::now();
    let mut ids = Vec::new();
    let workers = 4;
    for chunk in (0..a.sustained).collect::<Vec<_>>().chunks(workers) {
        let tasks: Vec<_> = chunk.iter().map(|_| api.create()).collect();
        for r in futures::future::join_all(tasks).await {
            ids.push(r?);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{:<44} {:.1} creates/s  ({} sandboxes, {} at a time)",
        "sustained create rate",
        ids.len() as f64 / secs,
        ids.len(),
        workers
    );
    for id in ids {
        api.delete(&id).await?;
    }
    println!(
        "targets: TTI p50 <= 10 ms (now {:.2}), p99 <= 30 ms (now {:.2}); exec p50 <= 1 ms (now {:.2})",
        seq.pct_ms(50.0),
        seq.pct_ms(99.0),
        exec.pct_ms(50.0)
    );
    Ok(())
}
