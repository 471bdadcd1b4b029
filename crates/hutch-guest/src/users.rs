//! User resolution from the sandbox's own `/etc/passwd` and `/etc/group`.
//!
//! The binary is static, so NSS (`getpwnam`) is not available; the files are parsed directly.

use std::path::{Path, PathBuf};

use crate::error::GuestError;

/// A resolved user to run a process as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name (the numeric uid when the user has no passwd entry).
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (always including `gid`).
    pub groups: Vec<u32>,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
}

#[derive(Debug, Clone)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
    shell: String,
}

#[derive(Debug, Clone)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Reads users from an `/etc` directory.
#[derive(Debug, Clone)]
pub struct UserDb {
    etc: PathBuf,
}

impl Default for UserDb {
    fn default() -> Self {
        UserDb {
            etc: PathBuf::from("/etc"),
        }
    }
}

impl UserDb {
    /// A database reading `<etc>/passwd` and `<etc>/group`.
    pub fn new(etc: impl Into<PathBuf>) -> Self {
        UserDb { etc: etc.into() }
    }

    fn passwd(&self) -> Vec<PasswdEntry> {
        read_lines(&self.etc.join("passwd"))
            .iter()
            .filter_map(|l| parse_passwd_line(l))
            .collect()
    }

    fn group(&self) -> Vec<GroupEntry> {
        read_lines(&self.etc.join("group"))
            .iter()
            .filter_map(|l| parse_group_line(l))
            .collect()
    }

    /// Resolve a user spec: `name`, `name:group`, `uid` or `uid:gid` (`None` = root).
    pub fn resolve(&self, spec: Option<&str>) -> Result<User, GuestError> {
        let spec = spec
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or("root");
        let (user_part, group_part) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let passwd = self.passwd();
        let entry = if let Ok(uid) = user_part.parse::<u32>() {
            passwd
                .iter()
                .find(|e| e.uid == uid)
                .cloned()
                .or(Some(PasswdEntry {
                    name: uid.to_string(),
                    uid,
                    gid: 0,
                    home: if uid == 0 { "/root".into() } else { "/".into() },
                    shell: "/bin/sh".into(),
                }))
        } else {
            passwd
                .iter()
                .find(|e| e.name == user_part)
                .cloned()
                .or_else(|| {
                    (user_part == "root").then(|| PasswdEntry {
                        name: "root".into(),
                        uid: 0,
                        gid: 0,
                        home: "/root".into(),
                        shell: "/bin/sh".into(),
                    })
                })
        };
        let Some(entry) = entry else {
            return Err(GuestError::invalid(
                "user",
                format!("unknown user: {user_part}"),
            ));
        };
        let groups_db = self.group();
        let gid = match group_part {
            None => entry.gid,
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => groups_db
                    .iter()
                    .find(|e| e.name == g)
                    .map(|e| e.gid)
                    .ok_or_else(|| GuestError::invalid("user", format!("unknown group: {g}")))?,
            },
        };
        let mut groups = vec![gid];
        for g in &groups_db {
            if g.members.iter().any(|m| m == &entry.name) && !groups.contains(&g.gid) {
                groups.push(g.gid);
            }
        }
        Ok(User {
            name: entry.name,
            uid: entry.uid,
            gid,
            groups,
            home: entry.home,
            shell: if entry.shell.is_empty() {
                "/bin/sh".into()
            } else {
                entry.shell
            },
        })
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

fn parse_passwd_line(line: &str) -> Option<PasswdEntry> {
    if line.starts_with('#') {
        return None;
    }
    let f: Vec<&str> = line.split(':').collect();
    if f.len() < 7 {
        return None;
    }
    Some(PasswdEntry {
        name: f[0].to_string(),
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        home: f[5].to_string(),
        shell: f[6].to_string(),
    })
}

fn parse_group_line(line: &str) -> Option<GroupEntry> {
    if line.starts_with('#') {
        return None;
    }
    let f: Vec<&str> = line.split(':').collect();
    if f.len() < 4 {
        return None;
    }
    Some(GroupEntry {
        name: f[0].to_string(),
        gid: f[2].parse().ok()?,
        members: f[3]
            .split(',')
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, UserDb) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\n# comment\nalice:x:1000:1000:Alice:/home/alice:/bin/zsh\nbad line\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("group"),
            "root:x:0:\nalice:x:1000:\nwheel:x:10:alice,bob\ndocker:x:999:alice\n",
        )
        .unwrap();
        let db = UserDb::new(dir.path());
        (dir, db)
    }

    #[test]
    fn resolves_names_and_ids() {
        let (_d, db) = db();
        let root = db.resolve(None).unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        assert_eq!(root.shell, "/bin/bash");
        let a = db.resolve(Some("alice")).unwrap();
        assert_eq!((a.uid, a.gid), (1000, 1000));
        assert_eq!(a.groups, vec![1000, 10, 999]);
        assert_eq!(a.shell, "/bin/zsh");
        let n = db.resolve(Some("1000:10")).unwrap();
        assert_eq!((n.name.as_str(), n.uid, n.gid), ("alice", 1000, 10));
        let u = db.resolve(Some("4242")).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        let g = db.resolve(Some("alice:wheel")).unwrap();
        assert_eq!(g.gid, 10);
    }

    #[test]
    fn unknown_user_is_invalid() {
        let (_d, db) = db();
        let e = db.resolve(Some("mallory")).unwrap_err();
        assert!(matches!(e, GuestError::Invalid { ref field, .. } if field == "user"));
        let e = db.resolve(Some("alice:nogroup")).unwrap_err();
        assert!(matches!(e, GuestError::Invalid { .. }));
    }

    #[test]
    fn root_fallback_without_passwd() {
        let dir = tempfile::tempdir().unwrap();
        let db = UserDb::new(dir.path());
        assert_eq!(db.resolve(Some("root")).unwrap().uid, 0);
        assert!(db.resolve(Some("alice")).is_err());
    }
}
