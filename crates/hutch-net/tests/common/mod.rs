//! Helpers shared by the namespace tests.

#![allow(dead_code)]

use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hutch_net::netns::host_ifname;

/// A process in its own network namespace; killed (and its host link removed) on drop.
pub struct FakeSandbox {
    child: Child,
    ifname: String,
}

impl FakeSandbox {
    pub fn start(id: &str) -> FakeSandbox {
        let child = Command::new("unshare")
            .args(["--net", "sleep", "120"])
            .spawn()
            .expect("unshare");
        let me = std::fs::read_link("/proc/self/ns/net").expect("own netns");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ns = std::fs::read_link(format!("/proc/{}/ns/net", child.id()));
            if matches!(&ns, Ok(ns) if *ns != me) {
                break;
            }
            assert!(Instant::now() < deadline, "child never entered a new netns");
            std::thread::sleep(Duration::from_millis(2));
        }
        FakeSandbox {
            child,
            ifname: host_ifname(id),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Run a command inside the namespace; its stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("nsenter")
            .arg("-t")
            .arg(self.pid().to_string())
            .arg("-n")
            .args(args)
            .output()
            .expect("nsenter");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run `f` on a thread inside the sandbox's network namespace.
    pub fn inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = std::fs::File::open(format!("/proc/{}/ns/net", self.pid())).expect("open netns");
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: joins a namespace on this scoped thread only.
                assert_eq!(
                    unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                    0,
                    "setns"
                );
                f()
            })
            .join()
            .expect("sandbox thread")
        })
    }
}

impl Drop for FakeSandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.ifname])
            .stderr(Stdio::null())
            .status();
    }
}
