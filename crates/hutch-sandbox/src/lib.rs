//! Hutch's isolation engine.
//!
//! A sandbox is a set of Linux namespaces (mount, pid, uts, ipc, net, cgroup) around an overlayfs
//! rootfs built from a template's read-only layers plus a per-sandbox writable layer, limited by a
//! cgroup (v1 or v2), hardened with a reduced capability set, `no_new_privs`, rlimits and a seccomp
//! filter, and running `hutch guest` as PID 1. The host talks to the guest over a Unix socket.
//!
//! [`Engine`] is synchronous on purpose: creating a sandbox is a short sequence of syscalls and the
//! control plane calls it from `spawn_blocking`. [`GuestClient`] is async (HTTP over the socket).

mod cgroup;
mod engine;
mod error;
mod guest_client;
mod launch;
mod mounts;
mod netns_pool;
mod seccomp;
mod state;
mod template;

pub use engine::{
    Engine, EngineConfig, NetworkHook, RecoverReport, RuntimeState, SandboxInfo, SandboxSpec,
    SandboxStats, SeedFile,
};
pub use error::{Error, Result};
pub use guest_client::{GuestBody, GuestClient};
pub use mounts::GUEST_PATH;
pub use template::{TemplateInfo, TemplateStore};
