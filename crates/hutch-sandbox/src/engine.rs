//! The engine: create, inspect, pause, resume, destroy and recover sandboxes.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs;
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cgroup::{Cgroup, Hierarchy, Limits};
use crate::error::{Error, IoContext, Result};
use crate::guest_client::GuestClient;
use crate::launch::{self, ChildPlan};
use crate::mounts::{self, FsSpec, HostOverlay};
use crate::netns_pool::NetnsPool;
use crate::seccomp;
use crate::state::{self, SandboxRecord};
use crate::template::TemplateStore;

/// Data dir whose sandboxes live under the plain `hutch` cgroup; others get `hutch-<hash>` so
/// several engines (tests, side-by-side installs) never touch each other's groups.
const DEFAULT_DATA_DIR: &str = "/var/lib/hutch";
/// Network namespaces kept ready (see [`NetnsPool`]).
const NETNS_POOL_SIZE: usize = 4;
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Root of Hutch's on-disk state (templates, sandboxes).
    pub data_dir: PathBuf,
    /// The static `hutch` binary run as the guest. Default: the running executable.
    pub guest_exe: Option<PathBuf>,
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct SandboxSpec {
    /// Sandbox id, also its hostname: `[a-z0-9][a-z0-9-]{0,62}`.
    pub id: String,
    pub template: String,
    pub cpus: Option<f64>,
    pub memory_mb: Option<u64>,
    pub pids: Option<u64>,
    /// Environment for every process the guest starts.
    pub env: BTreeMap<String, String>,
    /// Give the sandbox a network (the installed [`NetworkHook`] sets it up). Without it the
    /// sandbox has only `lo`.
    pub network: bool,
    /// Files written into the sandbox's writable layer before it starts (e.g. `/etc/resolv.conf`,
    /// a CA bundle). They shadow the template's files at the same paths.
    pub files: Vec<SeedFile>,
}

/// A file placed in a sandbox's root filesystem at create time.
#[derive(Debug, Clone)]
pub struct SeedFile {
    /// Absolute path inside the sandbox, without `..` components.
    pub path: PathBuf,
    /// Contents.
    pub contents: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// Runtime state of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeState {
    Running,
    Paused,
    /// PID 1 is gone (crashed or killed); destroy to clean up.
    Dead,
}

/// A sandbox as the engine sees it.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxInfo {
    pub id: String,
    pub template: String,
    /// Host pid of the sandbox's PID 1 (the guest).
    pub pid: i32,
    pub state: RuntimeState,
    pub created_at: DateTime<Utc>,
}

/// Resource usage from the sandbox's cgroup.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SandboxStats {
    pub memory_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub cpu_usage_us: u64,
    pub pids: u64,
    /// Processes the kernel OOM-killed inside the sandbox so far.
    pub oom_kills: u64,
}

/// What [`Engine::recover`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecoverReport {
    /// Sandboxes still running, now reattached.
    pub running: Vec<String>,
    /// Dead sandboxes or leftovers that were cleaned up.
    pub cleaned: Vec<String>,
}

/// A sandbox the engine holds: its record and a pidfd for its PID 1.
struct Live {
    record: SandboxRecord,
    pidfd: OwnedFd,
    cgroup: Cgroup,
}

/// Network setup for sandboxes that get more than loopback. `setup` runs in the host process
/// after PID 1 exists and before anything in the sandbox runs; an error aborts the create (fail
/// closed). Configure the namespace behind `netns`: it is the sandbox's, while
/// `/proc/<pid>/ns/net` may still be the host's for a moment (PID 1 joins a pre-made namespace
/// concurrently). `teardown` runs on destroy.
pub trait NetworkHook: Send + Sync {
    fn setup(&self, id: &str, pid: i32, netns: std::os::fd::BorrowedFd<'_>) -> Result<()>;
    fn teardown(&self, id: &str) -> Result<()>;
}

/// Config the guest reads from its config fd (see `hutch_guest::GuestConfig`).
#[derive(Serialize)]
struct GuestBoot<'a> {
    token: &'a str,
    env: &'a BTreeMap<String, String>,
    hostname: &'a str,
}

/// The sandbox engine. `Send + Sync`; share it in an `Arc`.
pub struct Engine {
    sandboxes_dir: PathBuf,
    /// Cgroup (under each hierarchy root) holding this engine's sandbox groups.
    cgroup_parent: String,
    hierarchy: Hierarchy,
    /// Resolved host path of the guest binary.
    exe: PathBuf,
    seccomp: seccomp::Filters,
    templates: TemplateStore,
    live: Mutex<HashMap<String, Arc<Live>>>,
    network: Mutex<Option<Arc<dyn NetworkHook>>>,
    netns_pool: Option<NetnsPool>,
}

impl Engine {
    /// Open (and prepare) the engine's directories and cgroups.
    pub fn new(cfg: EngineConfig) -> Result<Engine> {
        let data = &cfg.data_dir;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data)
            .ctx(|| format!("create {}", data.display()))?;
        // The data dir holds guest tokens and sandbox filesystems: never world-readable.
        fs::set_permissions(data, fs::Permissions::from_mode(0o700))
            .ctx(|| format!("chmod {}", data.display()))?;
        let sandboxes_dir = data.join("sandboxes");
        fs::create_dir_all(&sandboxes_dir).ctx(|| format!("create {}", sandboxes_dir.display()))?;
        let templates = TemplateStore::new(data.join("templates"), sandboxes_dir.clone())?;
        let hierarchy = Hierarchy::detect()?;
        let cgroup_parent = cgroup_parent_for(data);
        hierarchy.init_parent(&cgroup_parent)?;
        let exe_path = cfg
            .guest_exe
            .clone()
            .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
        let exe =
            fs::canonicalize(&exe_path).ctx(|| format!("guest binary {}", exe_path.display()))?;
        if !exe.is_file() {
            return Err(Error::Invalid {
                field: "guest_exe",
                message: format!("{} is not a file", exe.display()),
            });
        }
        Ok(Engine {
            sandboxes_dir,
            cgroup_parent,
            hierarchy,
            exe,
            seccomp: seccomp::build()?,
            templates,
            live: Mutex::new(HashMap::new()),
            network: Mutex::new(None),
            netns_pool: match netns_pool_size() {
                0 => None,
                n => NetnsPool::start(n),
            },
        })
    }

    /// Install the network hook (see [`NetworkHook`]).
    pub fn set_network_hook(&self, hook: Arc<dyn NetworkHook>) {
        *self.network.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    fn network_hook(&self) -> Option<Arc<dyn NetworkHook>> {
        self.network
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The template store.
    pub fn templates(&self) -> &TemplateStore {
        &self.templates
    }

    /// The cgroup (below each hierarchy's root) that holds this engine's sandboxes.
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// Remove this engine's parent cgroup when it holds no sandbox any more (for throw-away data
    /// dirs such as tests'; a later `Engine::new` recreates it).
    pub fn release_cgroup_parent(&self) {
        if self.lock().is_empty() {
            self.hierarchy.remove_parent(&self.cgroup_parent);
        }
    }

    /// Whether the host uses cgroup v2.
    pub fn cgroup_v2(&self) -> bool {
        self.hierarchy.is_v2()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Live>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.sandboxes_dir.join(id)
    }

    /// Create and start a sandbox. Returns once its guest is serving.
    pub fn create(&self, spec: &SandboxSpec) -> Result<SandboxInfo> {
        validate(spec)?;
        let tpl = self.templates.resolve(&spec.template)?;
        check_mount_points(&tpl)?;
        let dir = self.dir(&spec.id);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::State {
                    id: spec.id.clone(),
                    state: "existing".into(),
                    message: "a sandbox with this id exists".into(),
                });
            }
            Err(e) => {
                return Err(Error::Io {
                    context: format!("create {}", dir.display()),
                    source: e,
                });
            }
        }
        let cgroup = self.hierarchy.group(&self.cgroup_parent, &spec.id);
        match self.start(spec, &dir, &cgroup, tpl) {
            Ok(live) => {
                let info = info_of(&live);
                self.lock().insert(spec.id.clone(), Arc::new(live));
                Ok(info)
            }
            Err(e) => {
                let _ = cgroup.kill_all();
                let _ = cgroup.remove();
                if let Some(hook) = self.network_hook() {
                    // Setup may have got as far as creating interfaces.
                    let _ = hook.teardown(&spec.id);
                }
                let _ = fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    fn start(
        &self,
        spec: &SandboxSpec,
        dir: &Path,
        cgroup: &Cgroup,
        tpl: crate::template::Resolved,
    ) -> Result<Live> {
        let prepare = std::time::Instant::now();
        let (upper, work, rootfs) = (dir.join("upper"), dir.join("work"), dir.join("rootfs"));
        for d in [&upper, &work, &rootfs] {
            fs::create_dir(d).ctx(|| format!("create {}", d.display()))?;
        }
        seed_files(&upper, &spec.files)?;
        let mut host_overlays = Vec::new();
        for (i, target) in tpl.host_overlays.iter().enumerate() {
            let (u, w) = (
                dir.join(format!("host{i}-upper")),
                dir.join(format!("host{i}-work")),
            );
            fs::create_dir(&u).ctx(|| format!("create {}", u.display()))?;
            fs::create_dir(&w).ctx(|| format!("create {}", w.display()))?;
            host_overlays.push(HostOverlay {
                source: PathBuf::from(target),
                target: target.clone(),
                upper: u,
                work: w,
            });
        }
        let steps = mounts::plan(&FsSpec {
            rootfs: &rootfs,
            layers: &tpl.layers,
            upper: &upper,
            work: &work,
            host_binds: &tpl.host_binds,
            host_overlays: &host_overlays,
            cgroup_v2: self.hierarchy.is_v2(),
            guest_exe: &self.exe,
        })?;
        let limits = Limits {
            memory_bytes: spec.memory_mb.map(|m| m * 1024 * 1024),
            cpus: spec.cpus,
            pids: spec.pids,
        };

        let sock = dir.join("guest.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock)
            .ctx(|| format!("bind {}", sock.display()))?;
        fs::set_permissions(&sock, fs::Permissions::from_mode(0o600))
            .ctx(|| "chmod guest socket".into())?;
        let token = hex::encode(rand::random::<[u8; 32]>());
        let boot = serde_json::to_vec(&GuestBoot {
            token: &token,
            env: &spec.env,
            hostname: &spec.id,
        })
        .map_err(std::io::Error::other)
        .ctx(|| "encode guest config".into())?;
        let config = memfd_with(&boot)?;
        let (status_r, status_w) = pipe()?;
        let (go_r, go_w) = pipe()?;
        // Child-side fds live at high numbers so moving them to 3/4/5 in the child cannot clobber.
        let child_fds = [
            high_dup(listener.as_raw_fd())?,
            high_dup(status_w.as_raw_fd())?,
            high_dup(config.as_raw_fd())?,
        ];
        let child_go = high_dup(go_r.as_raw_fd())?;
        // The guest's stdio is /dev/null: never the host process's terminal or log pipe, and no
        // host file a sandbox could grow through /proc/1/fd.
        let null = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .ctx(|| "open /dev/null".into())?;
        let stdio = high_dup(null.as_raw_fd())?;
        drop((listener, status_w, config, go_r));
        let mut plan = ChildPlan {
            steps,
            hostname: mounts::cstr(&spec.id)?,
            seccomp: self.seccomp.programs.clone(),
            exe_path: mounts::cstr(mounts::GUEST_PATH)?,
            argv: [
                "hutch",
                "guest",
                "--listen-fd",
                "3",
                "--status-fd",
                "4",
                "--config-fd",
                "5",
            ]
            .iter()
            .map(|s| mounts::cstr(s))
            .collect::<Result<_>>()?,
            envp: vec![
                mounts::cstr("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")?,
                mounts::cstr("HOME=/root")?,
            ],
            fds: [
                child_fds[0].as_raw_fd(),
                child_fds[1].as_raw_fd(),
                child_fds[2].as_raw_fd(),
            ],
            go_fd: child_go.as_raw_fd(),
            nofile: launch::nofile_limit(),
            netns_fd: -1,
            stdio: [stdio.as_raw_fd(); 3],
        };
        tracing::debug!(id = %spec.id, prepared = ?prepare.elapsed(), "sandbox prepared");
        // Held until launch returns: the child joins it before then.
        // Like the other child-side fds it must sit above 5, or moving fds to 3/4/5 clobbers it.
        let netns = match self.netns_pool.as_ref().and_then(|p| p.take()) {
            Some(fd) => Some(high_dup(fd.as_raw_fd())?),
            None => None,
        };
        plan.netns_fd = netns.as_ref().map_or(-1, |f| f.as_raw_fd());
        let launched = launch::launch(
            &plan,
            go_w,
            status_r,
            vec_of(child_fds, child_go),
            READY_TIMEOUT,
            |pid| {
                let t = std::time::Instant::now();
                cgroup.create(&limits)?;
                cgroup.add(pid)?;
                tracing::debug!(id = %spec.id, cgroup = ?t.elapsed(), "sandbox cgroup ready");
                if !spec.network {
                    return Ok(());
                }
                // Asked for a network but nothing can provide one: fail closed.
                let Some(hook) = self.network_hook() else {
                    return Err(Error::Invalid {
                        field: "network",
                        message: "this engine has no network support".into(),
                    });
                };
                match &netns {
                    Some(fd) => hook.setup(&spec.id, pid, fd.as_fd()),
                    None => {
                        // A fresh namespace from clone: PID 1 is in it from the start.
                        let fd = fs::File::open(format!("/proc/{pid}/ns/net"))
                            .ctx(|| "open the sandbox's network namespace".into())?;
                        hook.setup(&spec.id, pid, fd.as_fd())
                    }
                }
            },
        )?;
        let record = SandboxRecord {
            id: spec.id.clone(),
            template: spec.template.clone(),
            pid: launched.pid,
            start_time: state::start_time(launched.pid).unwrap_or(0),
            created_at: Utc::now(),
            token,
        };
        if let Err(e) = record.save(dir) {
            // SAFETY: signalling our own child through its pidfd.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    launched.pidfd.as_raw_fd(),
                    libc::SIGKILL,
                    0,
                    0,
                )
            };
            return Err(e);
        }
        Ok(Live {
            record,
            pidfd: launched.pidfd,
            cgroup: cgroup.clone(),
        })
    }

    fn get(&self, id: &str) -> Result<Arc<Live>> {
        self.lock()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// Current information on a sandbox.
    pub fn info(&self, id: &str) -> Result<SandboxInfo> {
        Ok(info_of(&*self.get(id)?))
    }

    /// Every sandbox the engine holds.
    pub fn list(&self) -> Vec<SandboxInfo> {
        let all: Vec<Arc<Live>> = self.lock().values().cloned().collect();
        let mut out: Vec<SandboxInfo> = all.iter().map(|l| info_of(l)).collect();
        out.sort_by_key(|a| a.created_at);
        out
    }

    /// Resource usage.
    pub fn stats(&self, id: &str) -> Result<SandboxStats> {
        let u = self.get(id)?.cgroup.usage();
        Ok(SandboxStats {
            memory_bytes: u.memory_bytes,
            memory_limit_bytes: u.memory_limit_bytes,
            cpu_usage_us: u.cpu_usage_us,
            pids: u.pids,
            oom_kills: u.oom_kills,
        })
    }

    /// Freeze every process of the sandbox; memory is kept.
    pub fn pause(&self, id: &str) -> Result<()> {
        let live = self.get(id)?;
        match state_of(&live) {
            RuntimeState::Running => live.cgroup.set_frozen(true),
            s => Err(conflict(id, s, "only a running sandbox can be paused")),
        }
    }

    /// Thaw a paused sandbox.
    pub fn resume(&self, id: &str) -> Result<()> {
        let live = self.get(id)?;
        match state_of(&live) {
            RuntimeState::Paused => live.cgroup.set_frozen(false),
            s => Err(conflict(id, s, "only a paused sandbox can be resumed")),
        }
    }

    /// A client for the sandbox's guest API.
    pub fn guest(&self, id: &str) -> Result<GuestClient> {
        let live = self.get(id)?;
        Ok(GuestClient::new(
            self.dir(id).join("guest.sock"),
            live.record.token.clone(),
        ))
    }

    /// Kill everything in the sandbox and remove its cgroup and files. Idempotent; works whether
    /// the engine holds the sandbox, only its directory is left, or only its cgroup is.
    pub fn destroy(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        let live = self.lock().remove(id);
        let cgroup = self.hierarchy.group(&self.cgroup_parent, id);
        if let Some(live) = &live {
            // PID 1 dying takes the whole pid namespace with it; the cgroup sweep below catches
            // anything that raced.
            // SAFETY: signalling our own sandbox's PID 1 through its pidfd.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    live.pidfd.as_raw_fd(),
                    libc::SIGKILL,
                    0,
                    0,
                )
            };
        }
        cgroup.kill_all()?;
        if let Some(live) = &live {
            launch::reap(&live.pidfd);
        }
        cgroup.remove()?;
        if let Some(hook) = self.network_hook() {
            hook.teardown(id)?;
        }
        let dir = self.dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io {
                context: format!("remove {}", dir.display()),
                source: e,
            }),
        }
    }

    /// Find sandboxes left by an earlier host process: reattach the running ones, clean the rest
    /// (dead PID 1, missing state, cgroups without a directory). Also reaps our dead children.
    pub fn recover(&self) -> Result<RecoverReport> {
        let mut report = RecoverReport::default();
        let entries = fs::read_dir(&self.sandboxes_dir)
            .ctx(|| format!("read {}", self.sandboxes_dir.display()))?;
        let mut on_disk = Vec::new();
        for e in entries.flatten() {
            let Ok(id) = e.file_name().into_string() else {
                continue;
            };
            if validate_id(&id).is_err() {
                continue;
            }
            on_disk.push(id.clone());
            if let Some(live) = self.lock().get(&id).cloned() {
                if state_of(&live) == RuntimeState::Dead {
                    launch::reap(&live.pidfd);
                }
                continue;
            }
            let reattached = SandboxRecord::load(&e.path()).and_then(|rec| {
                if state::start_time(rec.pid) != Some(rec.start_time) {
                    return None;
                }
                let pidfd = pidfd_open(rec.pid)?;
                let cgroup = self.hierarchy.group(&self.cgroup_parent, &rec.id);
                Some(Live {
                    record: rec,
                    pidfd,
                    cgroup,
                })
            });
            match reattached {
                Some(live) => {
                    self.lock().insert(id.clone(), Arc::new(live));
                    report.running.push(id);
                }
                None => match self.destroy(&id) {
                    Ok(()) => report.cleaned.push(id),
                    // One stuck leftover must not keep the rest (or the server) from starting.
                    Err(e) => {
                        tracing::warn!(id = %id, error = %e, "cannot clean up a dead sandbox")
                    }
                },
            }
        }
        for id in self.hierarchy.children(&self.cgroup_parent) {
            if !on_disk.contains(&id) && validate_id(&id).is_ok() {
                match self.destroy(&id) {
                    Ok(()) => report.cleaned.push(id),
                    Err(e) => {
                        tracing::warn!(id = %id, error = %e, "cannot clean up a leftover cgroup")
                    }
                }
            }
        }
        Ok(report)
    }
}

/// Paths the child creates or mounts on before `pivot_root`, while a symlink would still resolve
/// against the host's root. A template must not have a symlink (or anything but a directory, or
/// a file for the guest binary) at any of them: refuse it rather than follow it.
fn check_mount_points(tpl: &crate::template::Resolved) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let mut paths: Vec<String> = [".hutch", ".hutch/hutch", "proc", "dev", "sys", "tmp"]
        .map(String::from)
        .to_vec();
    for t in tpl.host_binds.iter().chain(&tpl.host_overlays) {
        paths.push(t.trim_start_matches('/').to_string());
    }
    for rel in &paths {
        // The topmost layer that has the path decides what the merged rootfs shows there.
        for layer in &tpl.layers {
            let Ok(meta) = fs::symlink_metadata(layer.join(rel)) else {
                continue;
            };
            let ft = meta.file_type();
            let whiteout = ft.is_char_device() && {
                use std::os::unix::fs::MetadataExt;
                meta.rdev() == 0
            };
            let ok = whiteout || ft.is_dir() || (rel == ".hutch/hutch" && ft.is_file());
            if !ok {
                return Err(Error::Invalid {
                    field: "template",
                    message: format!(
                        "template has a symlink or special file at /{rel}, where Hutch mounts"
                    ),
                });
            }
            break;
        }
    }
    Ok(())
}

/// `HUTCH_NETNS_POOL` (number of ready network namespaces, 0 = none) or the default.
fn netns_pool_size() -> usize {
    std::env::var("HUTCH_NETNS_POOL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(NETNS_POOL_SIZE)
}

fn cgroup_parent_for(data: &Path) -> String {
    let canonical = fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf());
    if canonical == Path::new(DEFAULT_DATA_DIR) {
        return "hutch".into();
    }
    use sha2::Digest;
    let hash = sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    format!("hutch-{}", &hex::encode(hash)[..12])
}

fn conflict(id: &str, s: RuntimeState, message: &str) -> Error {
    let state = match s {
        RuntimeState::Running => "running",
        RuntimeState::Paused => "paused",
        RuntimeState::Dead => "dead",
    };
    Error::State {
        id: id.into(),
        state: state.into(),
        message: message.into(),
    }
}

fn info_of(live: &Live) -> SandboxInfo {
    SandboxInfo {
        id: live.record.id.clone(),
        template: live.record.template.clone(),
        pid: live.record.pid,
        state: state_of(live),
        created_at: live.record.created_at,
    }
}

fn state_of(live: &Live) -> RuntimeState {
    let mut pfd = libc::pollfd {
        fd: live.pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polling one pidfd we own; readable means the process exited.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    if n > 0 {
        return RuntimeState::Dead;
    }
    if live.cgroup.is_frozen() {
        RuntimeState::Paused
    } else {
        RuntimeState::Running
    }
}

/// Write `files` into a fresh (empty, ours) upper directory: no symlinks can be in the way.
fn seed_files(upper: &Path, files: &[SeedFile]) -> Result<()> {
    for f in files {
        let rel = f.path.strip_prefix("/").unwrap_or(&f.path);
        let dest = upper.join(rel);
        if let Some(parent) = dest.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .ctx(|| format!("create {}", parent.display()))?;
        }
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(f.mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&dest)
            .ctx(|| format!("create {}", dest.display()))?;
        out.write_all(&f.contents)
            .ctx(|| format!("write {}", dest.display()))?;
    }
    Ok(())
}

fn validate(spec: &SandboxSpec) -> Result<()> {
    validate_id(&spec.id)?;
    for f in &spec.files {
        let ok = f.path.is_absolute()
            && f.path
                .components()
                .skip(1)
                .all(|c| matches!(c, std::path::Component::Normal(_)))
            && f.path.components().count() > 1;
        if !ok {
            return Err(Error::Invalid {
                field: "files",
                message: format!("{} is not a clean absolute path", f.path.display()),
            });
        }
    }
    if let Some(c) = spec.cpus
        && !(c.is_finite() && c > 0.0)
    {
        return Err(Error::Invalid {
            field: "cpus",
            message: "must be a positive number".into(),
        });
    }
    if spec.memory_mb == Some(0) {
        return Err(Error::Invalid {
            field: "memory_mb",
            message: "must be positive".into(),
        });
    }
    if spec.pids == Some(0) {
        return Err(Error::Invalid {
            field: "pids",
            message: "must be positive".into(),
        });
    }
    Ok(())
}

fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            field: "id",
            message: format!("invalid sandbox id {id:?}"),
        })
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

fn high_dup(fd: RawFd) -> Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on an fd we own; the result is a fresh fd owned below.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100) };
    if n < 0 {
        return Err(Error::Io {
            context: "dup fd".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn vec_of(fds: [OwnedFd; 3], go: OwnedFd) -> Vec<OwnedFd> {
    let mut v: Vec<OwnedFd> = fds.into_iter().collect();
    v.push(go);
    v
}

fn memfd_with(data: &[u8]) -> Result<OwnedFd> {
    let name = CString::new("hutch-guest-config").map_err(|_| Error::Guest("memfd name".into()))?;
    let fd = nix::sys::memfd::memfd_create(&name, nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)?;
    let mut f = fs::File::from(fd);
    f.write_all(data).ctx(|| "write guest config".into())?;
    // The guest shares this file description: start it reading at the beginning.
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0))
        .ctx(|| "rewind guest config".into())?;
    Ok(OwnedFd::from(f))
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fresh fd.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
