//! Sandbox lifecycle through the engine with the real guest: create, exec, pause/resume,
//! limits, destroy leaving nothing behind, and reattaching after a host-process restart.

mod engine_common;

use std::fs;
use std::path::Path;

use engine_common::{engine, spec};
use hutch_sandbox::{Engine, EngineConfig, Error, RuntimeState};

fn mount_count() -> usize {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count()
}

fn cgroup_children(parent: &str) -> Vec<String> {
    let mut out = Vec::new();
    for root in [
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup",
    ] {
        let dir = Path::new(root).join(parent);
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.file_type().unwrap().is_dir() {
                    out.push(e.path().display().to_string());
                }
            }
        }
    }
    out
}

#[test]
fn create_exec_destroy() {
    let t = engine();
    let info = t.engine.create(&spec("life-1")).unwrap();
    assert_eq!(info.state, RuntimeState::Running);
    // PID 1 holds none of the host process's stdio.
    for n in 0..3 {
        let target = fs::read_link(format!("/proc/{}/fd/{n}", info.pid)).unwrap();
        assert_eq!(target, Path::new("/dev/null"));
    }
    let r = t.sh("life-1", "echo hello; hostname; id -u; cat /proc/1/cmdline | tr '\\0' ' '; echo; python3 -c 'print(6*7)'");
    assert_eq!(r.exit_code, Some(0), "{r:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "hello");
    assert_eq!(lines[1], "life-1");
    assert_eq!(lines[2], "0");
    assert!(lines[3].contains("guest"), "{}", lines[3]);
    assert_eq!(lines[4], "42");
    // Files written inside land in the sandbox's own upper layer, not the template or host.
    let r = t.sh(
        "life-1",
        "echo data > /etc/new-file && echo x > /usr/local/new-usr-file && cat /etc/new-file",
    );
    assert_eq!(r.stdout, "data\n");
    assert!(!Path::new("/usr/local/new-usr-file").exists());
    t.engine.destroy("life-1").unwrap();
    t.engine.destroy("life-1").unwrap(); // idempotent
    assert!(matches!(t.engine.info("life-1"), Err(Error::NotFound(_))));
}

#[test]
fn duplicate_id_and_unknown_template_are_refused() {
    let t = engine();
    t.engine.create(&spec("dup-1")).unwrap();
    assert!(matches!(
        t.engine.create(&spec("dup-1")),
        Err(Error::State { .. })
    ));
    let mut s = spec("dup-2");
    s.template = "nope".into();
    assert!(matches!(
        t.engine.create(&s),
        Err(Error::TemplateNotFound(_))
    ));
    assert!(matches!(
        t.engine.create(&spec("Bad/Id")),
        Err(Error::Invalid { .. })
    ));
}

#[test]
fn env_is_passed_to_processes() {
    let t = engine();
    let mut s = spec("env-1");
    s.env.insert("GREETING".into(), "hi there".into());
    t.engine.create(&s).unwrap();
    let r = t.sh("env-1", "echo \"$GREETING\"");
    assert_eq!(r.stdout, "hi there\n");
    // The guest's own config (token) is not in any process's environment.
    let r = t.sh("env-1", "cat /proc/1/environ | tr '\\0' '\\n'");
    assert!(!r.stdout.to_lowercase().contains("token"), "{}", r.stdout);
}

#[test]
fn pause_and_resume_keep_memory() {
    let t = engine();
    t.engine.create(&spec("pause-1")).unwrap();
    let guest = t.engine.guest("pause-1").unwrap();
    // A counter whose value lives only in the shell's memory; it is written to the sandbox's
    // upper layer, which the host can read while the sandbox is frozen.
    let req = hutch_api::process::StartProcess {
        command: Some("i=0; while true; do i=$((i+1)); echo $i > /root/count.tmp; mv /root/count.tmp /root/count; sleep 0.02; done".into()),
        ..Default::default()
    };
    let _: hutch_api::process::ProcessInfo =
        t.rt.block_on(guest.json(http::Method::POST, "/processes", Some(&req)))
            .unwrap();
    let file = t.data().join("sandboxes/pause-1/upper/root/count");
    let read = || {
        fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let wait_past = |floor: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(v) = read().filter(|v| *v > floor) {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "counter stuck at {floor}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    };
    wait_past(3);
    t.engine.pause("pause-1").unwrap();
    assert_eq!(
        t.engine.info("pause-1").unwrap().state,
        RuntimeState::Paused
    );
    assert!(matches!(
        t.engine.pause("pause-1"),
        Err(Error::State { .. })
    ));
    let frozen = read().unwrap();
    // Checking that nothing happens takes some waiting.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(read().unwrap(), frozen, "a paused sandbox made progress");
    t.engine.resume("pause-1").unwrap();
    assert!(matches!(
        t.engine.resume("pause-1"),
        Err(Error::State { .. })
    ));
    // It goes on from its old value: memory was kept.
    let after = wait_past(frozen);
    assert!(
        after > frozen && after < frozen + 1000,
        "{frozen} -> {after}"
    );
}

#[test]
fn limits_are_applied() {
    let t = engine();
    let mut s = spec("lim-1");
    s.memory_mb = Some(128);
    s.pids = Some(64);
    s.cpus = Some(0.5);
    t.engine.create(&s).unwrap();
    let st = t.engine.stats("lim-1").unwrap();
    assert_eq!(st.memory_limit_bytes, Some(128 * 1024 * 1024));
    assert!(st.pids >= 1);
    // The sandbox sees its own cgroup, read-only.
    let r = t.sh(
        "lim-1",
        "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max",
    );
    assert_eq!(r.stdout.trim(), "64");
    let r = t.sh(
        "lim-1",
        "echo 1000 > /sys/fs/cgroup/pids/pids.max || echo 1000 > /sys/fs/cgroup/pids.max",
    );
    assert_ne!(r.exit_code, Some(0));
}

#[test]
fn failed_setup_fails_closed_and_cleans_up() {
    let t = engine();
    // A template whose layer vanished: the overlay mount inside the child fails.
    let tar = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "etc/marker", &b""[..]).unwrap();
        b.into_inner().unwrap()
    };
    t.engine.templates().import_tar("broken", &tar[..]).unwrap();
    fs::remove_dir_all(t.data().join("templates/broken/rootfs")).unwrap();
    let mut s = spec("broken-1");
    s.template = "broken".into();
    let err = t.engine.create(&s).unwrap_err();
    assert!(matches!(err, Error::Setup { .. }), "{err:?}");
    assert!(err.to_string().contains("overlay"), "{err}");
    assert!(!t.data().join("sandboxes/broken-1").exists());
    assert!(cgroup_children(t.engine.cgroup_parent()).is_empty());
}

#[test]
fn many_cycles_leave_nothing_behind() {
    let t = engine();
    let mounts = mount_count();
    let n: usize = std::env::var("HUTCH_TEST_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    for i in 0..n {
        let id = format!("cyc-{i}");
        t.engine.create(&spec(&id)).unwrap();
        if i % 100 == 0 {
            assert_eq!(t.sh(&id, "echo ok").stdout, "ok\n");
        }
        t.engine.destroy(&id).unwrap();
    }
    assert_eq!(mount_count(), mounts, "host mount table changed");
    assert!(
        cgroup_children(t.engine.cgroup_parent()).is_empty(),
        "{:?}",
        cgroup_children(t.engine.cgroup_parent())
    );
    assert_eq!(fs::read_dir(t.data().join("sandboxes")).unwrap().count(), 0);
    assert!(t.engine.list().is_empty());
}

#[test]
fn restart_reattaches_running_and_cleans_dead() {
    let t = engine();
    t.engine.create(&spec("keep-1")).unwrap();
    t.engine.create(&spec("dead-1")).unwrap();
    let guest = t.engine.guest("keep-1").unwrap();
    let req = hutch_api::process::StartProcess {
        command: Some("sleep 1000".into()),
        tag: Some("bg".into()),
        ..Default::default()
    };
    let p: hutch_api::process::ProcessInfo =
        t.rt.block_on(guest.json(http::Method::POST, "/processes", Some(&req)))
            .unwrap();
    let dead_pid = t.engine.info("dead-1").unwrap().pid;

    // A second engine on the same data dir stands for the restarted host process.
    let again = Engine::new(EngineConfig {
        data_dir: t.data(),
        guest_exe: Some(engine_common::guest_exe()),
    })
    .unwrap();
    // SAFETY: killing the sandbox's PID 1 from outside, as a crash would.
    unsafe { libc::kill(dead_pid, libc::SIGKILL) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while Path::new(&format!("/proc/{dead_pid}/stat")).exists()
        && !fs::read_to_string(format!("/proc/{dead_pid}/stat"))
            .unwrap_or_default()
            .contains(") Z")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let report = again.recover().unwrap();
    assert_eq!(report.running, vec!["keep-1".to_string()]);
    assert_eq!(report.cleaned, vec!["dead-1".to_string()]);
    assert!(!t.data().join("sandboxes/dead-1").exists());
    let g2 = again.guest("keep-1").unwrap();
    let list: Vec<hutch_api::process::ProcessInfo> =
        t.rt.block_on(g2.json(http::Method::GET, "/processes", None::<&()>))
            .unwrap();
    assert!(
        list.iter()
            .any(|x| x.id == p.id && x.state == hutch_api::process::ProcessState::Running)
    );
    again.destroy("keep-1").unwrap();
}

#[test]
fn templates_with_symlinked_mount_points_are_refused() {
    let t = engine();
    // A template that points /.hutch at a host path: following it before pivot_root would
    // create a file on the host.
    let host_target = t.dir.path().join("pwn");
    let tar = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_link(&mut h, ".hutch", &host_target).unwrap();
        b.into_inner().unwrap()
    };
    t.engine.templates().import_tar("evil", &tar[..]).unwrap();
    let mut s = spec("evil-1");
    s.template = "evil".into();
    let err = t.engine.create(&s).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid {
                field: "template",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!host_target.exists(), "nothing was created on the host");
    assert!(!t.data().join("sandboxes/evil-1").exists());
}
