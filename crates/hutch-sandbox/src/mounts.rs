//! The sandbox's filesystem plan: every mount, node and link the child makes, computed in the
//! parent so the child (which runs between `clone` and `exec` in a copy of a multi-threaded
//! process) only issues syscalls on ready-made C strings and never allocates.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libc::c_ulong;

use crate::error::{Error, Result};

/// One step of the plan.
pub(crate) enum Op {
    Mount {
        src: CString,
        target: CString,
        fstype: CString,
        flags: c_ulong,
        data: Option<CString>,
        /// Skip the step when the target does not exist (masks of optional kernel files).
        optional: bool,
    },
    /// Create a directory; an existing one is fine.
    Mkdir {
        path: CString,
        mode: u32,
    },
    Mknod {
        path: CString,
        mode: u32,
        dev: u64,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    /// Create an empty file (a bind-mount target); an existing one is fine.
    Touch {
        path: CString,
    },
    /// Wait for the host's "go" (it has put us in our cgroup), then unshare the cgroup namespace.
    EnterCgroup,
    /// `pivot_root(".", ".")` in the new root, then detach the old root.
    PivotRoot {
        new_root: CString,
    },
}

/// A plan step with a name for error reports.
pub(crate) struct Step {
    pub name: &'static str,
    pub op: Op,
}

/// What the filesystem plan needs to know.
pub(crate) struct FsSpec<'a> {
    pub rootfs: &'a Path,
    /// Template layers, topmost first.
    pub layers: &'a [std::path::PathBuf],
    pub upper: &'a Path,
    pub work: &'a Path,
    /// Host directories overlaid at the same path (lower = host dir, upper/work per sandbox).
    /// Host directories bind-mounted read-only at the same path (before the overlays, so an
    /// overlay can sit inside one: the `base` template binds `/usr` and overlays `/usr/local`).
    pub host_binds: &'a [String],
    pub host_overlays: &'a [HostOverlay],
    pub cgroup_v2: bool,
    /// Host path of the static `hutch` binary, bind-mounted read-only at [`GUEST_PATH`].
    /// (A path, not an fd: bind sources and exec must come from the child's own mount namespace.)
    pub guest_exe: &'a Path,
}

/// Where the guest binary appears inside every sandbox.
pub const GUEST_PATH: &str = "/.hutch/hutch";

/// A host directory shown in the sandbox through its own copy-on-write overlay.
pub(crate) struct HostOverlay {
    pub source: std::path::PathBuf,
    pub target: String,
    pub upper: std::path::PathBuf,
    pub work: std::path::PathBuf,
}

/// Files runc masks by default (bind-mounted over with `/dev/null`).
const MASKED_FILES: &[&str] = &[
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/sysrq-trigger",
];
/// Directories runc masks by default (a read-only empty tmpfs on top).
const MASKED_DIRS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// Paths runc makes read-only.
const READONLY: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"];

const NOSUID: c_ulong = libc::MS_NOSUID;
const NODEV: c_ulong = libc::MS_NODEV;
const NOEXEC: c_ulong = libc::MS_NOEXEC;

/// Build the plan.
pub(crate) fn plan(spec: &FsSpec<'_>) -> Result<Vec<Step>> {
    let root = spec.rootfs;
    let mut steps = Vec::with_capacity(64);
    let p = |rel: &str| cpath(&root.join(rel.trim_start_matches('/')));

    steps.push(step(
        "make / private",
        mount("", "/", "", libc::MS_REC | libc::MS_PRIVATE, None, false)?,
    ));
    let lower = spec
        .layers
        .iter()
        .map(|l| escape(l))
        .collect::<Vec<_>>()
        .join(":");
    let opts = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        escape(spec.upper),
        escape(spec.work)
    );
    if opts.len() >= 4000 {
        return Err(Error::Invalid {
            field: "template",
            message: "too many layers for one overlay mount".into(),
        });
    }
    // nodev: device nodes in an image are inert; the only usable ones are in Hutch's /dev.
    steps.push(step(
        "mount rootfs overlay",
        mount_c(c"overlay", cpath(root)?, c"overlay", NODEV, Some(&opts))?,
    ));
    for dir in ["proc", "dev", "sys", "tmp"] {
        steps.push(step(
            "create mount point",
            Op::Mkdir {
                path: p(dir)?,
                mode: 0o755,
            },
        ));
    }
    for target in spec.host_binds {
        steps.push(step(
            "create host bind mount point",
            Op::Mkdir {
                path: p(target)?,
                mode: 0o755,
            },
        ));
        steps.push(step(
            "bind host directory",
            mount_c(
                &cstr(target)?,
                p(target)?,
                c"",
                libc::MS_BIND | libc::MS_REC,
                None,
            )?,
        ));
        steps.push(step(
            "seal host directory",
            mount_c(
                c"none",
                p(target)?,
                c"",
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | NOSUID | NODEV,
                None,
            )?,
        ));
    }
    for ov in spec.host_overlays {
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            escape(&ov.source),
            escape(&ov.upper),
            escape(&ov.work)
        );
        steps.push(step(
            "create host overlay mount point",
            Op::Mkdir {
                path: p(&ov.target)?,
                mode: 0o755,
            },
        ));
        steps.push(step(
            "mount host overlay",
            mount_c(c"overlay", p(&ov.target)?, c"overlay", NODEV, Some(&opts))?,
        ));
    }
    steps.push(step(
        "create /.hutch",
        Op::Mkdir {
            path: p(".hutch")?,
            mode: 0o755,
        },
    ));
    steps.push(step(
        "create guest mount point",
        Op::Touch {
            path: p(GUEST_PATH)?,
        },
    ));
    steps.push(step(
        "bind guest binary",
        mount_c(
            &cpath(spec.guest_exe)?,
            p(GUEST_PATH)?,
            c"",
            libc::MS_BIND,
            None,
        )?,
    ));
    steps.push(step(
        "seal guest binary",
        mount_c(
            c"none",
            p(GUEST_PATH)?,
            c"",
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | NOSUID | NODEV,
            None,
        )?,
    ));
    steps.push(step(
        "mount /proc",
        mount_c(c"proc", p("proc")?, c"proc", NOSUID | NODEV | NOEXEC, None)?,
    ));
    steps.push(step(
        "mount /dev",
        mount_c(
            c"tmpfs",
            p("dev")?,
            c"tmpfs",
            NOSUID,
            Some("mode=755,size=65536k"),
        )?,
    ));
    for (name, minor) in [
        ("null", 3),
        ("zero", 5),
        ("full", 7),
        ("random", 8),
        ("urandom", 9),
    ] {
        steps.push(step(
            "create device node",
            Op::Mknod {
                path: p(&format!("dev/{name}"))?,
                mode: 0o666,
                dev: libc::makedev(1, minor),
            },
        ));
    }
    steps.push(step(
        "create device node",
        Op::Mknod {
            path: p("dev/tty")?,
            mode: 0o666,
            dev: libc::makedev(5, 0),
        },
    ));
    steps.push(step(
        "create /dev/pts",
        Op::Mkdir {
            path: p("dev/pts")?,
            mode: 0o755,
        },
    ));
    steps.push(step(
        "mount devpts",
        mount_c(
            c"devpts",
            p("dev/pts")?,
            c"devpts",
            NOSUID | NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        )?,
    ));
    steps.push(step(
        "create /dev/shm",
        Op::Mkdir {
            path: p("dev/shm")?,
            mode: 0o1777,
        },
    ));
    steps.push(step(
        "mount /dev/shm",
        mount_c(
            c"shm",
            p("dev/shm")?,
            c"tmpfs",
            NOSUID | NODEV | NOEXEC,
            Some("mode=1777,size=65536k"),
        )?,
    ));
    for (target, link) in [
        ("pts/ptmx", "dev/ptmx"),
        ("/proc/self/fd", "dev/fd"),
        ("/proc/self/fd/0", "dev/stdin"),
        ("/proc/self/fd/1", "dev/stdout"),
        ("/proc/self/fd/2", "dev/stderr"),
    ] {
        steps.push(step(
            "create /dev link",
            Op::Symlink {
                target: cstr(target)?,
                link: p(link)?,
            },
        ));
    }
    steps.push(step(
        "mount /sys",
        mount_c(
            c"sysfs",
            p("sys")?,
            c"sysfs",
            NOSUID | NODEV | NOEXEC | libc::MS_RDONLY,
            None,
        )?,
    ));
    steps.push(step(
        "mount /tmp",
        mount_c(
            c"tmpfs",
            p("tmp")?,
            c"tmpfs",
            NOSUID | NODEV,
            Some("mode=1777"),
        )?,
    ));
    steps.push(step(
        "pivot_root",
        Op::PivotRoot {
            new_root: cpath(root)?,
        },
    ));
    for f in MASKED_FILES {
        steps.push(step(
            "mask file",
            mount("/dev/null", f, "", libc::MS_BIND, None, true)?,
        ));
    }
    for d in MASKED_DIRS {
        steps.push(step(
            "mask directory",
            mount(
                "tmpfs",
                d,
                "tmpfs",
                libc::MS_RDONLY | NOSUID | NODEV | NOEXEC,
                Some("size=0"),
                true,
            )?,
        ));
    }
    for d in READONLY {
        steps.push(step(
            "bind read-only path",
            mount(d, d, "", libc::MS_BIND | libc::MS_REC, None, true)?,
        ));
        steps.push(step(
            "remount read-only path",
            mount(
                d,
                d,
                "",
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | NOSUID | NODEV | NOEXEC,
                None,
                true,
            )?,
        ));
    }
    // Everything above runs while the host process sets up the cgroup (overlapping the two);
    // from here on the child is in its cgroup and makes it the root of a new cgroup namespace.
    steps.push(step("wait for cgroup", Op::EnterCgroup));
    // The sandbox's own cgroup (the cgroup namespace makes it the root), read-only, so the guest
    // can report usage and programs can see their limits.
    let ro = NOSUID | NODEV | NOEXEC | libc::MS_RDONLY;
    if spec.cgroup_v2 {
        steps.push(step(
            "mount cgroup2",
            mount_c(c"cgroup", cstr("/sys/fs/cgroup")?, c"cgroup2", ro, None)?,
        ));
    } else {
        steps.push(step(
            "mount cgroup tmpfs",
            mount_c(
                c"tmpfs",
                cstr("/sys/fs/cgroup")?,
                c"tmpfs",
                NOSUID | NODEV | NOEXEC,
                Some("mode=755"),
            )?,
        ));
        for ctl in ["memory", "cpuacct", "pids"] {
            steps.push(step(
                "create cgroup dir",
                Op::Mkdir {
                    path: cstr(&format!("/sys/fs/cgroup/{ctl}"))?,
                    mode: 0o755,
                },
            ));
            steps.push(step(
                "mount cgroup",
                mount_c(
                    c"cgroup",
                    cstr(&format!("/sys/fs/cgroup/{ctl}"))?,
                    c"cgroup",
                    ro,
                    Some(ctl),
                )?,
            ));
        }
        steps.push(step(
            "seal cgroup tmpfs",
            mount_c(
                c"tmpfs",
                cstr("/sys/fs/cgroup")?,
                c"",
                libc::MS_REMOUNT | libc::MS_BIND | ro,
                None,
            )?,
        ));
    }
    Ok(steps)
}

fn step(name: &'static str, op: Op) -> Step {
    Step { name, op }
}

fn mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: c_ulong,
    data: Option<&str>,
    optional: bool,
) -> Result<Op> {
    Ok(Op::Mount {
        src: cstr(src)?,
        target: cstr(target)?,
        fstype: cstr(fstype)?,
        flags,
        data: data.map(cstr).transpose()?,
        optional,
    })
}

fn mount_c(
    src: &std::ffi::CStr,
    target: CString,
    fstype: &std::ffi::CStr,
    flags: c_ulong,
    data: Option<&str>,
) -> Result<Op> {
    Ok(Op::Mount {
        src: src.into(),
        target,
        fstype: fstype.into(),
        flags,
        data: data.map(cstr).transpose()?,
        optional: false,
    })
}

/// Overlay options separate paths with `:` and `,`: escape them.
fn escape(p: &Path) -> String {
    p.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace(':', "\\:")
        .replace(',', "\\,")
}

pub(crate) fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Invalid {
        field: "path",
        message: format!("{s:?} contains a NUL byte"),
    })
}

pub(crate) fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Invalid {
        field: "path",
        message: format!("{} contains a NUL byte", p.display()),
    })
}
