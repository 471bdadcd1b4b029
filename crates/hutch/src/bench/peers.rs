//! The same workload run by `runc run` and `bwrap`, for ratios measured in the same run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::stats::Samples;

/// Find a program in PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// `bwrap` running `/bin/true` in fresh namespaces over the same root skeleton and `/usr`.
pub fn bwrap(rootfs: &Path, n: usize) -> Result<Samples> {
    let bwrap = which("bwrap").context("bwrap is not installed (scripts/bench.sh installs it)")?;
    let mut s = Samples::new("bwrap: run /bin/true (full cycle)");
    for _ in 0..n {
        let t = Instant::now();
        let st = Command::new(&bwrap)
            .args(["--unshare-all", "--die-with-parent", "--ro-bind"])
            .arg(rootfs)
            .args([
                "/",
                "--ro-bind",
                "/usr",
                "/usr",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "--tmpfs",
                "/tmp",
                "/bin/true",
            ])
            .stdin(Stdio::null())
            .status()
            .context("run bwrap")?;
        if !st.success() {
            bail!("bwrap failed: {st}");
        }
        s.push(t.elapsed());
    }
    Ok(s)
}

/// `runc run` of a bundle whose process is `/bin/true`, root = the same skeleton, `/usr` bound.
pub fn runc(rootfs: &Path, work: &Path, n: usize) -> Result<Samples> {
    let runc = which("runc").context("runc is not installed (scripts/bench.sh installs it)")?;
    let bundle = work.join("runc-bundle");
    std::fs::create_dir_all(&bundle)?;
    let _ = std::fs::remove_file(bundle.join("config.json"));
    let st = Command::new(&runc)
        .arg("spec")
        .current_dir(&bundle)
        .status()
        .context("runc spec")?;
    if !st.success() {
        bail!("runc spec failed");
    }
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json"))?)?;
    cfg["process"]["terminal"] = false.into();
    cfg["process"]["args"] = serde_json::json!(["/bin/true"]);
    cfg["root"]["path"] = rootfs.display().to_string().into();
    cfg["root"]["readonly"] = true.into();
    if let Some(m) = cfg["mounts"].as_array_mut() {
        m.push(serde_json::json!({"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]}));
    }
    std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&cfg)?)?;
    let mut s = Samples::new("runc run: /bin/true (full cycle)");
    for i in 0..n {
        let id = format!("hutch-bench-{}-{i}", std::process::id());
        let t = Instant::now();
        let st = Command::new(&runc)
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .status()
            .context("runc run")?;
        if !st.success() {
            bail!("runc run failed: {st}");
        }
        s.push(t.elapsed());
    }
    Ok(s)
}
