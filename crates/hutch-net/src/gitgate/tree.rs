//! Tree objects: their entries, and the paths of the blobs they name.

use super::Oid;
use crate::{Error, Result};
use regex::bytes::Regex;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TreeEntry {
    /// The mode, e.g. `0o100644`.
    pub mode: u32,
    /// The name (one path component).
    pub name: String,
    /// The object it names.
    pub oid: Oid,
}

impl TreeEntry {
    /// A directory (a tree object).
    pub(crate) fn is_tree(&self) -> bool {
        self.mode & 0o170000 == 0o040000
    }

    /// A file or symlink (a blob object).
    pub(crate) fn is_blob(&self) -> bool {
        matches!(self.mode & 0o170000, 0o100000 | 0o120000)
    }
}

/// Parse a whole tree object: `<octal mode> <name>\0<20-byte id>`, repeated.
pub(crate) fn parse(data: &[u8]) -> Result<Vec<TreeEntry>> {
    let bad = || Error::GitPush("malformed tree object".into());
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let mode = std::str::from_utf8(&rest[..sp])
            .ok()
            .filter(|m| !m.is_empty() && m.len() <= 7)
            .and_then(|m| u32::from_str_radix(m, 8).ok())
            .ok_or_else(bad)?;
        rest = &rest[sp + 1..];
        let nul = rest.iter().position(|&b| b == 0).ok_or_else(bad)?;
        if nul == 0 {
            return Err(bad());
        }
        let name = String::from_utf8_lossy(&rest[..nul]).into_owned();
        let oid: Oid = rest
            .get(nul + 1..nul + 21)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(bad)?;
        rest = &rest[nul + 21..];
        out.push(TreeEntry { mode, name, oid });
    }
    Ok(out)
}

/// Whole entries found in the bytes a tree delta inserts (best effort: an entry whose name
/// the delta copies from the base is not seen).
pub(crate) fn entries_in(inserted: &[u8]) -> Vec<TreeEntry> {
    static ENTRY: LazyLock<Option<Regex>> = LazyLock::new(|| {
        Regex::new(r"(?s-u)(100644|100755|120000|40000|160000) ([^\x00/]{1,255})\x00(.{20})").ok()
    });
    let Some(re) = ENTRY.as_ref() else {
        return Vec::new();
    };
    re.captures_iter(inserted)
        .filter_map(|c| {
            let mode =
                u32::from_str_radix(std::str::from_utf8(c.get(1)?.as_bytes()).ok()?, 8).ok()?;
            let name = String::from_utf8_lossy(c.get(2)?.as_bytes()).into_owned();
            let oid = c.get(3)?.as_bytes().try_into().ok()?;
            Some(TreeEntry { mode, name, oid })
        })
        .collect()
}

/// Paths of the blobs named by `trees`, walking down from `roots` (the trees of the pushed
/// commits). Trees not reached from a root still name their blobs, as `…/<name>`. Each tree
/// is walked once, so a crafted pack cannot make the walk blow up.
pub(crate) fn blob_paths(
    trees: &HashMap<Oid, Vec<TreeEntry>>,
    roots: &[Oid],
) -> HashMap<Oid, String> {
    let mut paths: HashMap<Oid, String> = HashMap::new();
    let mut seen: HashSet<Oid> = HashSet::new();
    let mut stack: Vec<(Oid, String)> = roots.iter().rev().map(|r| (*r, String::new())).collect();
    let mut walk = |stack: &mut Vec<(Oid, String)>, paths: &mut HashMap<Oid, String>| {
        while let Some((oid, prefix)) = stack.pop() {
            if !seen.insert(oid) {
                continue;
            }
            let Some(entries) = trees.get(&oid) else {
                continue;
            };
            // Reversed so that the stack yields entries in tree order.
            for e in entries.iter().rev() {
                let path = format!("{prefix}{}", e.name);
                if e.is_tree() {
                    stack.push((e.oid, format!("{path}/")));
                } else if e.is_blob() {
                    paths.entry(e.oid).or_insert(path);
                }
            }
        }
    };
    walk(&mut stack, &mut paths);
    let mut orphans: Vec<&Oid> = trees.keys().collect();
    orphans.sort();
    for oid in orphans {
        stack.push((*oid, "…/".to_string()));
        walk(&mut stack, &mut paths);
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(mode: &str, name: &str, oid: u8) -> Vec<u8> {
        let mut v = format!("{mode} {name}\0").into_bytes();
        v.extend([oid; 20]);
        v
    }

    #[test]
    fn parse_and_paths() {
        let root = [entry("100644", "a.txt", 1), entry("40000", "src", 2)].concat();
        let src = [entry("100755", "run.sh", 3), entry("160000", "sub", 4)].concat();
        let parsed = parse(&root).expect("root");
        assert_eq!(parsed.len(), 2);
        assert!(parsed[1].is_tree());
        let trees: HashMap<Oid, Vec<TreeEntry>> = [
            ([9; 20], parsed),
            ([2; 20], parse(&src).expect("src")),
            (
                [7; 20],
                parse(&entry("100644", "lost.txt", 5)).expect("orphan"),
            ),
        ]
        .into_iter()
        .collect();
        let p = blob_paths(&trees, &[[9; 20]]);
        assert_eq!(p[&[1; 20]], "a.txt");
        assert_eq!(p[&[3; 20]], "src/run.sh");
        assert_eq!(p[&[5; 20]], "…/lost.txt");
        assert!(!p.contains_key(&[4; 20]), "submodules are not blobs");
    }

    #[test]
    fn malformed_trees_are_refused() {
        for t in [
            b"100644 a.txt\0short".to_vec(),
            b"100644 a.txt".to_vec(),
            b"abc a\0xxxxxxxxxxxxxxxxxxxx".to_vec(),
            b"100644 \0xxxxxxxxxxxxxxxxxxxx".to_vec(),
        ] {
            assert!(parse(&t).is_err(), "{t:?}");
        }
    }

    #[test]
    fn entries_in_inserted_bytes() {
        let mut ins = b"garbage".to_vec();
        ins.extend(entry("100644", "secret.env", 6));
        ins.extend(b"tail");
        let e = entries_in(&ins);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].name, "secret.env");
        assert_eq!(e[0].oid, [6; 20]);
    }
}
