//! A small pool of ready network namespaces (loopback up), refilled by a background thread.
//!
//! Creating a network namespace is the most expensive part of `clone` (about 0.35 ms here, more
//! under load, against tens of µs for the other namespaces). Taking a ready one moves that cost
//! off the create path; the child joins it with `setns`. When the pool is empty (a burst of
//! creates), the child gets a fresh one from `clone` as before.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, Weak};

struct Inner {
    ready: Mutex<Vec<OwnedFd>>,
    wake: Condvar,
    want: usize,
}

/// The pool. Dropping it stops the filler thread.
pub(crate) struct NetnsPool {
    inner: Arc<Inner>,
}

impl NetnsPool {
    /// Start a pool that keeps `want` namespaces ready. Returns None (no pool: every sandbox
    /// gets its namespace from `clone`) if the filler thread cannot start.
    pub fn start(want: usize) -> Option<NetnsPool> {
        let inner = Arc::new(Inner {
            ready: Mutex::new(Vec::with_capacity(want)),
            wake: Condvar::new(),
            want,
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("hutch-netns".into())
            .stack_size(64 * 1024)
            .spawn(move || fill(weak))
            .ok()?;
        Some(NetnsPool { inner })
    }

    /// A ready namespace, if one is available.
    pub fn take(&self) -> Option<OwnedFd> {
        let fd = self
            .inner
            .ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        self.inner.wake.notify_one();
        fd
    }
}

impl Drop for NetnsPool {
    fn drop(&mut self) {
        self.inner.wake.notify_all();
    }
}

/// The filler: this thread moves itself into each new namespace it makes (a thread may do that
/// on its own) and keeps only the fds.
fn fill(pool: Weak<Inner>) {
    loop {
        let Some(inner) = pool.upgrade() else { return };
        let mut ready = inner.ready.lock().unwrap_or_else(|p| p.into_inner());
        while ready.len() >= inner.want {
            // Wake up now and then to notice the pool was dropped.
            let (guard, _) = inner
                .wake
                .wait_timeout(ready, std::time::Duration::from_secs(1))
                .unwrap_or_else(|p| p.into_inner());
            ready = guard;
            if Arc::strong_count(&inner) == 1 {
                return;
            }
        }
        drop(ready);
        match new_netns() {
            Ok(fd) => inner
                .ready
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(fd),
            Err(e) => {
                tracing::warn!(error = %e, "cannot pre-create network namespaces; creating them inline");
                return;
            }
        }
    }
}

fn new_netns() -> std::io::Result<OwnedFd> {
    // SAFETY: unshare/open/socket/ioctl on this thread only; the fd is owned below.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = libc::open(
            c"/proc/thread-self/ns/net".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        if !crate::launch::loopback_up() {
            return Err(std::io::Error::last_os_error());
        }
        Ok(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn pool_hands_out_distinct_namespaces() {
        let pool = NetnsPool::start(2).expect("pool");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < 3 && std::time::Instant::now() < deadline {
            match pool.take() {
                Some(fd) => got.push(fd),
                None => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
        assert_eq!(got.len(), 3);
        let inode = |fd: &OwnedFd| {
            std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd())).map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino()
            })
        };
        let mine = std::fs::metadata("/proc/self/ns/net").map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.ino()
        });
        let inodes: Vec<u64> = got.iter().map(|f| inode(f).unwrap()).collect();
        assert!(
            inodes
                .iter()
                .all(|i| Some(*i) != mine.as_ref().ok().copied())
        );
        assert_ne!(inodes[0], inodes[1]);
        assert_ne!(inodes[1], inodes[2]);
    }
}
