//! Sandbox addresses: one /30 per sandbox from a configurable pool, persisted so that a
//! restarted host process never hands out an address that a live sandbox still holds.

use crate::error::IoContext;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// An IPv4 pool such as `10.200.0.0/16`, carved into /30 blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    base: Ipv4Addr,
    prefix: u8,
}

impl Pool {
    /// Number of /30 blocks in the pool.
    pub fn blocks(&self) -> u32 {
        1u32 << (30 - u32::from(self.prefix))
    }

    /// `(gateway, sandbox)` addresses of block `index`: `.1` and `.2` of the /30.
    pub fn block(&self, index: u32) -> (Ipv4Addr, Ipv4Addr) {
        let net = u32::from(self.base) + index * 4;
        (Ipv4Addr::from(net + 1), Ipv4Addr::from(net + 2))
    }

    /// Whether `addr` is in the pool.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - u32::from(self.prefix));
        u32::from(addr) & mask == u32::from(self.base)
    }
}

impl Default for Pool {
    /// `10.200.0.0/16`.
    fn default() -> Pool {
        Pool {
            base: Ipv4Addr::new(10, 200, 0, 0),
            prefix: 16,
        }
    }
}

impl FromStr for Pool {
    type Err = Error;

    fn from_str(s: &str) -> Result<Pool> {
        let bad = |m: &str| Error::Invalid {
            field: "network pool",
            message: format!("{s}: {m}"),
        };
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| bad("expected ADDRESS/PREFIX"))?;
        let base: Ipv4Addr = addr.parse().map_err(|_| bad("bad IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("bad prefix length"))?;
        if !(8..=30).contains(&prefix) {
            return Err(bad("prefix length must be between 8 and 30"));
        }
        let mask = u32::MAX << (32 - u32::from(prefix));
        if u32::from(base) & !mask != 0 {
            return Err(bad("address has host bits set"));
        }
        Ok(Pool { base, prefix })
    }
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// One sandbox's allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Alloc {
    pub index: u32,
    pub ifname: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    pool: String,
    sandboxes: BTreeMap<String, Alloc>,
}

/// The allocation table and its file.
#[derive(Debug)]
pub(crate) struct Allocator {
    pool: Pool,
    path: PathBuf,
    sandboxes: BTreeMap<String, Alloc>,
}

impl Allocator {
    /// Load (or start) the table at `path` for `pool`.
    pub(crate) fn open(pool: Pool, path: &Path) -> Result<Allocator> {
        let sandboxes = match fs::read(path) {
            Ok(data) => {
                let file: File = serde_json::from_slice(&data).map_err(|e| Error::Invalid {
                    field: "network state",
                    message: format!("{}: {e}", path.display()),
                })?;
                if file.pool != pool.to_string() && !file.sandboxes.is_empty() {
                    return Err(Error::Invalid {
                        field: "network pool",
                        message: format!(
                            "{pool} differs from {} used by {} live sandbox(es)",
                            file.pool,
                            file.sandboxes.len()
                        ),
                    });
                }
                file.sandboxes
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(Error::Io {
                    context: format!("read {}", path.display()),
                    source: e,
                });
            }
        };
        Ok(Allocator {
            pool,
            path: path.to_path_buf(),
            sandboxes,
        })
    }

    pub(crate) fn pool(&self) -> Pool {
        self.pool
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Alloc> {
        self.sandboxes.get(id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &Alloc)> {
        self.sandboxes.iter()
    }

    /// Allocate the lowest free block for `id` (or return its existing one) and persist.
    #[cfg(test)]
    pub(crate) fn allocate(&mut self, id: &str, ifname: &str) -> Result<Alloc> {
        self.allocate_avoiding(id, ifname, &|_| false)
    }

    /// Like [`Allocator::allocate`], also skipping blocks for which `busy(index)` holds (e.g.
    /// addresses some other process already put on a host interface).
    pub(crate) fn allocate_avoiding(
        &mut self,
        id: &str,
        ifname: &str,
        busy: &dyn Fn(u32) -> bool,
    ) -> Result<Alloc> {
        if let Some(a) = self.sandboxes.get(id) {
            return Ok(a.clone());
        }
        if self.sandboxes.values().any(|a| a.ifname == ifname) {
            return Err(Error::Invalid {
                field: "sandbox id",
                message: format!("interface name {ifname} already in use"),
            });
        }
        let used: std::collections::BTreeSet<u32> =
            self.sandboxes.values().map(|a| a.index).collect();
        let mut index = 0u32;
        while index < self.pool.blocks() && (used.contains(&index) || busy(index)) {
            index += 1;
        }
        if index >= self.pool.blocks() {
            return Err(Error::PoolExhausted(self.pool.to_string()));
        }
        let alloc = Alloc {
            index,
            ifname: ifname.to_string(),
        };
        self.sandboxes.insert(id.to_string(), alloc.clone());
        if let Err(e) = self.save() {
            self.sandboxes.remove(id);
            return Err(e);
        }
        Ok(alloc)
    }

    /// Free `id`'s block and persist.
    pub(crate) fn release(&mut self, id: &str) -> Result<Option<Alloc>> {
        let old = self.sandboxes.remove(id);
        if old.is_some() {
            self.save()?;
        }
        Ok(old)
    }

    fn save(&self) -> Result<()> {
        let file = File {
            pool: self.pool.to_string(),
            sandboxes: self.sandboxes.clone(),
        };
        let data = serde_json::to_vec_pretty(&file).map_err(|e| Error::Invalid {
            field: "network state",
            message: e.to_string(),
        })?;
        let tmp = self.path.with_extension("tmp");
        fs::write(&tmp, data).ctx(|| format!("write {}", tmp.display()))?;
        fs::rename(&tmp, &self.path).ctx(|| format!("rename {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_blocks() {
        let p: Pool = "10.200.0.0/16".parse().expect("pool");
        assert_eq!(p.blocks(), 16384);
        assert_eq!(
            p.block(0),
            (Ipv4Addr::new(10, 200, 0, 1), Ipv4Addr::new(10, 200, 0, 2))
        );
        assert_eq!(
            p.block(65),
            (Ipv4Addr::new(10, 200, 1, 5), Ipv4Addr::new(10, 200, 1, 6))
        );
        assert!(p.contains(Ipv4Addr::new(10, 200, 255, 254)));
        assert!(!p.contains(Ipv4Addr::new(10, 201, 0, 1)));
        for bad in [
            "10.200.0.1/16",
            "10.200.0.0",
            "10.200.0.0/31",
            "x/16",
            "10.200.0.0/4",
        ] {
            assert!(bad.parse::<Pool>().is_err(), "{bad}");
        }
    }

    #[test]
    fn allocation_persists_and_reuses_lowest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("net.json");
        let pool: Pool = "10.250.0.0/29".parse().expect("pool");
        let mut a = Allocator::open(pool, &path).expect("open");
        assert_eq!(a.allocate("a", "hv-a").expect("a").index, 0);
        assert_eq!(a.allocate("b", "hv-b").expect("b").index, 1);
        assert_eq!(a.allocate("a", "hv-a").expect("a again").index, 0);
        assert!(matches!(
            a.allocate("c", "hv-c"),
            Err(Error::PoolExhausted(_))
        ));
        assert!(a.allocate("d", "hv-a").is_err(), "duplicate interface name");
        // A restart sees the same table.
        let mut b = Allocator::open(pool, &path).expect("reopen");
        assert_eq!(b.get("b").map(|x| x.index), Some(1));
        b.release("a").expect("release");
        assert_eq!(b.allocate("c", "hv-c").expect("c").index, 0);
        // Another pool with live allocations is refused.
        assert!(Allocator::open("10.251.0.0/16".parse().expect("pool"), &path).is_err());
    }
}
