//! Starting a sandbox's PID 1: `clone` into new namespaces, build the filesystem, harden, and
//! exec the static `hutch` binary as `hutch guest`.
//!
//! The child runs in a copy of a multi-threaded process, so between `clone` and `exec` it only
//! makes syscalls on data the parent prepared ([`ChildPlan`]); no allocation, no locks. Any failing
//! step is reported to the parent over the status pipe and the child exits: the sandbox does not
//! start half-hardened (fail closed).

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use libc::{c_int, c_void};

use crate::error::{Error, Result};
use crate::mounts::{Op, Step};

/// Capabilities the sandbox keeps: Docker's default set without `CAP_MKNOD` (Hutch creates the
/// only device nodes a sandbox gets, so it never needs to make one).
pub(crate) const KEPT_CAPS: &[u32] = &[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    13, // CAP_NET_RAW
    18, // CAP_SYS_CHROOT
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

/// The status pipe, where the child reports a failed step and the guest reports ready.
pub(crate) const STATUS_FD: RawFd = 4;

/// Everything the child needs, prepared by the parent.
pub(crate) struct ChildPlan {
    pub steps: Vec<Step>,
    pub hostname: CString,
    pub seccomp: Vec<seccompiler::BpfProgram>,
    /// Absolute path of the guest binary inside the new root.
    pub exe_path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// Fds moved to 3, 4, 5 in the child (listener, status pipe, config).
    pub fds: [RawFd; 3],
    pub go_fd: RawFd,
    /// Fds for the guest's stdin, stdout and stderr (never the host process's own: a sandbox
    /// must not hold the server's terminal or log pipe open).
    pub stdio: [RawFd; 3],
    /// A ready network namespace to join (from the pool), or -1 for a fresh one from `clone`.
    pub netns_fd: RawFd,
    /// RLIMIT_NOFILE for the sandbox (computed by [`nofile_limit`]).
    pub nofile: libc::rlimit,
}

/// 65536 open files, or the host's hard limit when that is lower (raising it needs
/// CAP_SYS_RESOURCE, which the host process may not have).
pub(crate) fn nofile_limit() -> libc::rlimit {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct on our stack.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) };
    let n = cur.rlim_max.min(65536);
    libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    }
}

/// A started PID 1.
pub(crate) struct Launched {
    pub pid: i32,
    pub pidfd: OwnedFd,
}

/// Status byte the guest writes when it is serving.
pub(crate) const READY: u8 = b'R';
const FAILED: u8 = b'E';
const STACK_SIZE: usize = 256 * 1024;

/// Step names that are not mount-plan steps (reported with these indexes past the plan).
const EXTRA_STEPS: &[&str] = &[
    "set hostname",
    "bring up loopback",
    "set rlimits",
    "drop capability bounding set",
    "set capabilities",
    "set no_new_privs",
    "install seccomp filter",
    "exec guest",
    "prepare fds",
    "join network namespace",
];

/// Clone the child. `before_start(pid)` runs in the parent (cgroup creation and placement,
/// network setup) while the child builds its filesystem, which it then stops at
/// [`Op::EnterCgroup`] to wait for; nothing of the sandbox runs before `before_start` is done.
/// Returns once the guest reports ready.
pub(crate) fn launch(
    plan: &ChildPlan,
    go_write: OwnedFd,
    status_read: OwnedFd,
    child_side: Vec<OwnedFd>,
    ready_timeout: Duration,
    before_start: impl FnOnce(i32) -> Result<()>,
) -> Result<Launched> {
    let started = Instant::now();
    let mut stack = vec![0u8; STACK_SIZE];
    let mut flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_PIDFD;
    if plan.netns_fd < 0 {
        flags |= libc::CLONE_NEWNET;
    }
    let mut pidfd: c_int = -1;
    // SAFETY: the stack is a live, exclusively owned buffer and we pass its top (stacks grow down
    // on x86_64). The child runs `child_main` on a copy-on-write copy of our memory and only reads
    // `plan`. CLONE_PIDFD stores the pidfd through the `parent_tid` pointer, which is valid.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(STACK_SIZE);
        let top = top.sub(top as usize % 16);
        libc::clone(
            child_main,
            top as *mut c_void,
            flags | libc::SIGCHLD,
            plan as *const ChildPlan as *mut c_void,
            &mut pidfd as *mut c_int,
        )
    };
    if pid < 0 {
        return Err(Error::Setup {
            step: "clone".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    // Our copies of the child's fds must close, or a dying child would never show as EOF.
    drop(child_side);
    let cloned = started.elapsed();
    // SAFETY: the kernel just gave us this pidfd and nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let launched = Launched { pid, pidfd };
    let kill = |l: &Launched| {
        // SAFETY: signalling our own child through its pidfd.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                l.pidfd.as_raw_fd(),
                libc::SIGKILL,
                0,
                0,
            )
        };
        reap(&l.pidfd);
    };
    if let Err(e) = before_start(pid) {
        kill(&launched);
        return Err(e);
    }
    let mut go = std::fs::File::from(go_write);
    if let Err(e) = std::io::Write::write_all(&mut go, b"G") {
        // The child is gone already; its own report says why.
        let reported = wait_status(status_read, Duration::from_secs(1), &plan.steps);
        kill(&launched);
        return Err(match reported {
            Err(err @ Error::Setup { .. }) => err,
            _ => Error::Setup {
                step: "start child".into(),
                source: e,
            },
        });
    }
    drop(go);
    let released = started.elapsed();
    let status = wait_status(status_read, ready_timeout, &plan.steps);
    tracing::debug!(pid, ?cloned, ?released, ready = ?started.elapsed(), "sandbox launch");
    match status {
        Ok(()) => Ok(launched),
        Err(e) => {
            kill(&launched);
            Err(e)
        }
    }
}

/// Reap our child through its pidfd (no-op when it is not ours or still running).
pub(crate) fn reap(pidfd: &OwnedFd) {
    // SAFETY: waitid on a pidfd we own, with a zeroed siginfo buffer the kernel fills.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        );
    }
}

fn wait_status(status: OwnedFd, timeout: Duration, steps: &[Step]) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut file = std::fs::File::from(status);
    let mut buf = [0u8; 9];
    let mut got = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Guest("guest did not become ready in time".into()));
        }
        let mut pfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as c_int) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::Setup {
                step: "wait for guest".into(),
                source: e,
            });
        }
        if n == 0 {
            continue;
        }
        let r = file.read(&mut buf[got..]).map_err(|e| Error::Setup {
            step: "wait for guest".into(),
            source: e,
        })?;
        if r == 0 {
            return Err(Error::Guest(
                "sandbox init exited before the guest was ready".into(),
            ));
        }
        got += r;
        if buf[0] == READY {
            return Ok(());
        }
        if buf[0] == FAILED && got >= 9 {
            let idx = u32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            let errno = i32::from_le_bytes([buf[5], buf[6], buf[7], buf[8]]);
            let name = steps
                .get(idx)
                .map(|s| s.name)
                .or_else(|| EXTRA_STEPS.get(idx.wrapping_sub(steps.len())).copied())
                .unwrap_or("unknown step");
            return Err(Error::Setup {
                step: name.into(),
                source: std::io::Error::from_raw_os_error(errno),
            });
        }
        if buf[0] != FAILED {
            return Err(Error::Guest(
                "unexpected status byte from sandbox init".into(),
            ));
        }
    }
}

/// Report a failed step and exit. Async-signal-safe.
fn fail(idx: usize) -> ! {
    // SAFETY: errno location read, one write(2) of a stack buffer, then _exit.
    unsafe {
        let errno = *libc::__errno_location();
        let mut msg = [0u8; 9];
        msg[0] = FAILED;
        msg[1..5].copy_from_slice(&(idx as u32).to_le_bytes());
        msg[5..9].copy_from_slice(&errno.to_le_bytes());
        libc::write(STATUS_FD, msg.as_ptr() as *const c_void, msg.len());
        libc::_exit(127)
    }
}

extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `&ChildPlan`, valid in our copy of its memory.
    let plan = unsafe { &*(arg as *const ChildPlan) };
    // SAFETY: everything below is raw syscalls on data prepared by the parent.
    unsafe { child(plan) }
}

unsafe fn child(plan: &ChildPlan) -> c_int {
    let extra = |i: usize| plan.steps.len() + i;
    // SAFETY (whole function): only syscalls on pointers into `plan` or on our own stack.
    unsafe {
        // Put our fds at 3/4/5. dup2 clears close-on-exec on the copy; sources are >= 100.
        for (i, fd) in plan.fds.iter().enumerate() {
            if libc::dup2(*fd, 3 + i as c_int) < 0 {
                // The status fd may not be in place yet; nothing to report through.
                libc::_exit(126);
            }
        }
        for (i, fd) in plan.stdio.iter().enumerate() {
            if libc::dup2(*fd, i as c_int) < 0 {
                fail(extra(8));
            }
        }
        // Everything else we inherited closes on exec (sockets, database files of the host process).
        if libc::syscall(
            libc::SYS_close_range,
            6u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) < 0
        {
            fail(extra(8));
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        if plan.netns_fd >= 0 && libc::setns(plan.netns_fd, libc::CLONE_NEWNET) < 0 {
            fail(extra(9));
        }
        libc::umask(0);
        for (i, step) in plan.steps.iter().enumerate() {
            let ok = match step.op {
                Op::EnterCgroup => {
                    wait_for_go(plan.go_fd) && libc::unshare(libc::CLONE_NEWCGROUP) == 0
                }
                _ => run_op(&step.op),
            };
            if !ok {
                fail(i);
            }
        }
        libc::umask(0o022);
        let h = plan.hostname.as_bytes();
        if libc::sethostname(h.as_ptr() as *const libc::c_char, h.len()) < 0 {
            fail(extra(0));
        }
        if !loopback_up() {
            fail(extra(1));
        }
        let core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &plan.nofile) < 0
            || libc::setrlimit(libc::RLIMIT_CORE, &core) < 0
        {
            fail(extra(2));
        }
        // Bounding set first (needs CAP_SETPCAP, which capset may remove).
        for cap in 0..64u32 {
            if KEPT_CAPS.contains(&cap) {
                continue;
            }
            if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) < 0 {
                if *libc::__errno_location() == libc::EINVAL {
                    break; // past the kernel's last capability
                }
                fail(extra(3));
            }
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
        let mut lo = 0u32;
        let mut hi = 0u32;
        for cap in KEPT_CAPS {
            if *cap < 32 {
                lo |= 1 << cap;
            } else {
                hi |= 1 << (cap - 32);
            }
        }
        #[repr(C)]
        struct CapHeader {
            version: u32,
            pid: c_int,
        }
        #[repr(C)]
        struct CapData {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let header = CapHeader {
            version: 0x2008_0522,
            pid: 0,
        };
        let data = [
            CapData {
                effective: lo,
                permitted: lo,
                inheritable: 0,
            },
            CapData {
                effective: hi,
                permitted: hi,
                inheritable: 0,
            },
        ];
        if libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) < 0 {
            fail(extra(4));
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            fail(extra(5));
        }
        for prog in &plan.seccomp {
            let fprog = libc::sock_fprog {
                len: prog.len() as libc::c_ushort,
                filter: prog.as_ptr() as *mut libc::sock_filter,
            };
            if libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &fprog as *const libc::sock_fprog,
            ) < 0
            {
                fail(extra(6));
            }
        }
        let mut argv = [std::ptr::null::<libc::c_char>(); 16];
        for (i, a) in plan.argv.iter().take(15).enumerate() {
            argv[i] = a.as_ptr();
        }
        let mut envp = [std::ptr::null::<libc::c_char>(); 16];
        for (i, e) in plan.envp.iter().take(15).enumerate() {
            envp[i] = e.as_ptr();
        }
        libc::execve(plan.exe_path.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail(extra(7))
    }
}

/// Block until the parent writes its go byte. False if it went away instead.
unsafe fn wait_for_go(fd: c_int) -> bool {
    let mut b = 0u8;
    // SAFETY: read(2) into one byte on our stack.
    unsafe {
        loop {
            let r = libc::read(fd, &mut b as *mut u8 as *mut c_void, 1);
            if r == 1 {
                return true;
            }
            if r < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            return false;
        }
    }
}

/// Run one plan step. Returns false (errno set) on failure.
unsafe fn run_op(op: &Op) -> bool {
    // SAFETY: all pointers come from CStrings owned by the plan.
    unsafe {
        match op {
            Op::Mount {
                src,
                target,
                fstype,
                flags,
                data,
                optional,
            } => {
                let data_ptr = data
                    .as_ref()
                    .map_or(std::ptr::null(), |d| d.as_ptr() as *const c_void);
                let fs = if fstype.is_empty() {
                    std::ptr::null()
                } else {
                    fstype.as_ptr()
                };
                let src = if src.is_empty() {
                    std::ptr::null()
                } else {
                    src.as_ptr()
                };
                let r = libc::mount(src, target.as_ptr(), fs, *flags, data_ptr);
                r == 0 || (*optional && *libc::__errno_location() == libc::ENOENT)
            }
            Op::Mkdir { path, mode } => {
                libc::mkdir(path.as_ptr(), *mode) == 0
                    // An existing directory inside a read-only bind answers EROFS.
                    || matches!(*libc::__errno_location(), libc::EEXIST | libc::EROFS)
            }
            Op::Mknod { path, mode, dev } => {
                libc::mknod(path.as_ptr(), libc::S_IFCHR | *mode, *dev) == 0
            }
            Op::Touch { path } => {
                let fd = libc::open(
                    path.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                    0o755,
                );
                fd >= 0 && libc::close(fd) == 0
            }
            Op::Symlink { target, link } => {
                libc::symlink(target.as_ptr(), link.as_ptr()) == 0
                    || *libc::__errno_location() == libc::EEXIST
            }
            Op::EnterCgroup => false,
            Op::PivotRoot { new_root } => {
                let dot = c".".as_ptr();
                libc::chdir(new_root.as_ptr()) == 0
                    && libc::syscall(libc::SYS_pivot_root, dot, dot) == 0
                    && libc::umount2(dot, libc::MNT_DETACH) == 0
                    && libc::chdir(c"/".as_ptr()) == 0
            }
        }
    }
}

/// Set IFF_UP on `lo` in the calling thread's network namespace.
pub(crate) unsafe fn loopback_up() -> bool {
    // SAFETY: a socket we close, and an ifreq on our stack.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return false;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let ok = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) == 0 && {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS, &req) == 0
        };
        libc::close(s);
        ok
    }
}
