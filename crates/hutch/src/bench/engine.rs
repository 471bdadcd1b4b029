//! `hutch bench engine`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use hutch_api::process::StartProcess;
use hutch_sandbox::{Engine, EngineConfig, SandboxSpec};

use super::peers;
use super::stats::Samples;

#[derive(Args)]
pub struct EngineBenchArgs {
    /// Cold creates to time.
    #[arg(long, default_value_t = 200)]
    pub creates: usize,
    /// Exec round trips to time on one sandbox.
    #[arg(long, default_value_t = 500)]
    pub execs: usize,
    /// Idle-sandbox counts at which to measure host memory per sandbox.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    pub idle: Vec<usize>,
    /// Scratch data dir (removed afterwards).
    #[arg(long, default_value = "/var/tmp/hutch-bench")]
    pub data_dir: PathBuf,
    /// Skip the runc/bwrap comparison.
    #[arg(long)]
    pub no_peers: bool,
}

pub fn run(a: EngineBenchArgs) -> Result<()> {
    let _ = std::fs::remove_dir_all(&a.data_dir);
    let engine = Engine::new(EngineConfig {
        data_dir: a.data_dir.clone(),
        guest_exe: None,
    })
    .context("engine")?;
    engine.templates().ensure_base().context("base template")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = bench(&engine, &rt, &a);
    for s in engine.list() {
        let _ = engine.destroy(&s.id);
    }
    let _ = std::fs::remove_dir_all(&a.data_dir);
    result
}

fn spec(id: String) -> SandboxSpec {
    SandboxSpec {
        id,
        template: "base".into(),
        cpus: Some(1.0),
        memory_mb: Some(256),
        pids: Some(256),
        ..Default::default()
    }
}

fn true_cmd() -> StartProcess {
    StartProcess {
        cmd: Some(vec!["/bin/true".into()]),
        ..Default::default()
    }
}

fn bench(engine: &Engine, rt: &tokio::runtime::Runtime, a: &EngineBenchArgs) -> Result<()> {
    println!(
        "hutch bench engine: {} cores, cgroup {}",
        num_cpus(),
        if engine.cgroup_v2() { "v2" } else { "v1" }
    );
    // Warm the page cache and the kernel's overlay/cgroup paths once.
    for i in 0..5 {
        let id = format!("warm-{i}");
        engine.create(&spec(id.clone()))?;
        engine.destroy(&id)?;
    }
    let mut create = Samples::new("hutch: create (guest ready)");
    let mut first = Samples::new("hutch: create -> exec /bin/true done");
    let mut destroy = Samples::new("hutch: destroy");
    let mut cycle = Samples::new("hutch: create -> exec -> destroy (full cycle)");
    for i in 0..a.creates {
        let id = format!("cold-{i}");
        let t = Instant::now();
        engine.create(&spec(id.clone()))?;
        let created = t.elapsed();
        let guest = engine.guest(&id)?;
        let r = rt.block_on(guest.exec(&true_cmd()))?;
        anyhow::ensure!(r.exit_code == Some(0), "/bin/true failed: {r:?}");
        let done = t.elapsed();
        let d = Instant::now();
        engine.destroy(&id)?;
        destroy.push(d.elapsed());
        create.push(created);
        first.push(done);
        cycle.push(t.elapsed());
    }
    engine.create(&spec("exec".into()))?;
    let guest = engine.guest("exec")?;
    let mut exec = Samples::new("hutch: exec /bin/true round trip");
    for _ in 0..a.execs {
        let t = Instant::now();
        rt.block_on(guest.exec(&true_cmd()))?;
        exec.push(t.elapsed());
    }
    engine.destroy("exec")?;
    for s in [&create, &first, &destroy, &cycle, &exec] {
        println!("{}", s.line());
    }

    if !a.no_peers {
        let rootfs = a.data_dir.join("templates/base/rootfs");
        let n = a.creates.min(100);
        for peer in [
            peers::runc(&rootfs, &a.data_dir, n),
            peers::bwrap(&rootfs, n),
        ] {
            match peer {
                Ok(s) => println!(
                    "{}\n    ratio {}/hutch full cycle p50: {:.2}x",
                    s.line(),
                    s.name.split(':').next().unwrap_or("peer"),
                    s.pct_ms(50.0) / cycle.pct_ms(50.0)
                ),
                Err(e) => println!("peer skipped: {e:#}"),
            }
        }
    }

    for &n in &a.idle {
        idle_memory(engine, rt, n)?;
    }
    Ok(())
}

/// Host memory per idle sandbox: the drop in MemAvailable (which counts kernel memory: mounts,
/// namespaces, cgroups, page tables) divided by the number of sandboxes.
fn idle_memory(engine: &Engine, rt: &tokio::runtime::Runtime, n: usize) -> Result<()> {
    drop_caches();
    let before = mem_available_kib()?;
    let t = Instant::now();
    for i in 0..n {
        engine.create(&spec(format!("idle-{i}")))?;
    }
    let created = t.elapsed();
    // Every guest answers: they are idle, not wedged.
    let g = engine.guest(&format!("idle-{}", n - 1))?;
    rt.block_on(g.exec(&true_cmd()))?;
    std::thread::sleep(Duration::from_millis(500));
    drop_caches();
    let after = mem_available_kib()?;
    let per = (before.saturating_sub(after)) as f64 / n as f64 / 1024.0;
    println!(
        "hutch: host memory per idle sandbox at {n:>5}: {per:.2} MB  ({} MB total, created in {:.2} s)",
        (before.saturating_sub(after)) / 1024,
        created.as_secs_f64()
    );
    let t = Instant::now();
    for i in 0..n {
        engine.destroy(&format!("idle-{i}"))?;
    }
    println!(
        "hutch: destroyed {n} sandboxes in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn drop_caches() {
    // Page cache is not sandbox memory; drop it so MemAvailable deltas measure what we hold.
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

fn mem_available_kib() -> Result<u64> {
    let s = std::fs::read_to_string("/proc/meminfo")?;
    s.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("MemAvailable missing from /proc/meminfo")
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
