//! Shared helpers for tests that drive the engine with the real static `hutch` guest.

#![allow(dead_code)]

use std::path::PathBuf;

use hutch_api::process::{RunResult, StartProcess};
use hutch_sandbox::{Engine, EngineConfig, SandboxSpec};

/// An engine on a fresh data dir (its own cgroup parent) using the built `hutch` binary.
pub struct TestEngine {
    pub engine: Engine,
    pub dir: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
}

pub fn engine() -> TestEngine {
    let dir = tempfile::Builder::new()
        .prefix("hutch-engine-test")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    let engine = Engine::new(EngineConfig {
        data_dir: dir.path().join("data"),
        guest_exe: Some(guest_exe()),
    })
    .expect("engine");
    engine.templates().ensure_base().expect("base template");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    TestEngine { engine, dir, rt }
}

pub fn guest_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hutch"))
}

pub fn spec(id: &str) -> SandboxSpec {
    SandboxSpec {
        id: id.into(),
        template: "base".into(),
        cpus: Some(1.0),
        memory_mb: Some(256),
        pids: Some(256),
        ..Default::default()
    }
}

impl TestEngine {
    /// Run a shell command in a sandbox and collect its result.
    pub fn sh(&self, id: &str, cmd: &str) -> RunResult {
        let guest = self.engine.guest(id).expect("guest");
        let req = StartProcess {
            command: Some(cmd.into()),
            timeout_ms: Some(60_000),
            ..Default::default()
        };
        self.rt.block_on(guest.exec(&req)).expect("exec")
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for TestEngine {
    fn drop(&mut self) {
        for s in self.engine.list() {
            let _ = self.engine.destroy(&s.id);
        }
        self.engine.release_cgroup_parent();
    }
}
