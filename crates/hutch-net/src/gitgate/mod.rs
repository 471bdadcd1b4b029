//! The git gate: checks a `git push` over smart HTTP for secrets before it reaches upstream.
//!
//! A push is one `POST …/git-receive-pack` whose body is a pkt-line command list (ref
//! updates, capabilities) and a packfile of zlib-compressed objects, so the generic body scan
//! sees nothing of the content. The gate reads the pack (bounded by [`Limits`]), resolves the
//! deltas whose base is in the pack and scans with the DLP [`Scanner`]:
//!
//! - every blob, commit and tag, whole (deltas resolved against bases in the pack);
//! - the entry names of every tree;
//! - for a delta against an object upstream already has (push packs are "thin"), the bytes
//!   the delta inserts: copies only repeat what upstream holds.
//!
//! Findings name the file where the pack's trees say which one it is, else the object id,
//! never the secret. Anything the gate cannot read (malformed, truncated, oversize, signed or
//! SHA-256 pushes) is refused: nothing is forwarded unchecked.
//!
//! **Limit:** a thin delta could be crafted to split a secret between bytes it copies from
//! upstream's version and bytes it inserts; only the inserted part is visible here.

mod commands;
mod delta;
mod gate;
mod pack;
mod tree;

#[cfg(test)]
mod tests;

pub use commands::{PushCommands, RESULT_CONTENT_TYPE, RefUpdate, rejection};
pub(crate) use gate::check;
pub use gate::{REQUEST_CONTENT_TYPE, is_push};

use crate::dlp::{Action, Scanner};
use crate::{Error, Result};
use pack::{Base, Budget, Entry};
use sha1::{Digest, Sha1};
use std::collections::{HashMap, HashSet};
use std::fmt;
use tree::TreeEntry;

/// A SHA-1 object id.
type Oid = [u8; 20];

/// Digits of an object id shown in messages (as `git log --oneline` would, with margin).
const SHORT_ID: usize = 12;
/// Findings listed in a refusal; the rest are counted.
const LISTED_FINDINGS: usize = 5;

/// Bounds on the work and memory one push may take. Past any of them the push is refused.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most objects in the packfile.
    pub max_objects: usize,
    /// Largest inflated object (or delta result), in bytes.
    pub max_object_size: usize,
    /// Most inflated bytes in total (objects, deltas and resolved deltas).
    pub max_total_inflated: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_objects: 500_000,
            max_object_size: 64 << 20,
            max_total_inflated: 256 << 20,
        }
    }
}

/// A git object type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A commit (metadata and message).
    Commit,
    /// A directory listing.
    Tree,
    /// File contents.
    Blob,
    /// An annotated tag.
    Tag,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Commit => "commit",
            Kind::Tree => "tree",
            Kind::Blob => "blob",
            Kind::Tag => "tag",
        })
    }
}

/// Where in a push a finding is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Place {
    /// The ref names or push options.
    Commands,
    /// A file's contents: its path when the pack's trees name it.
    File {
        /// The path in the pushed tree.
        path: Option<String>,
        /// The blob's id (hex).
        oid: String,
    },
    /// A commit or tag (message, author, ...) or a tree (entry names).
    Object {
        /// The object's type.
        kind: Kind,
        /// Its id (hex).
        oid: String,
    },
    /// Bytes a delta adds to an object upstream already has. Which file that is, only
    /// upstream's trees know: the pack names the new version, whose id needs the base.
    Change {
        /// Id of the base the delta applies to (hex): usually the file's previous version.
        base: String,
    },
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = |s: &str| s.chars().take(SHORT_ID).collect::<String>();
        match self {
            Place::Commands => f.write_str("the pushed ref names or push options"),
            Place::File {
                path: Some(path), ..
            } => write!(f, "file {path}"),
            Place::File { path: None, oid } => write!(f, "blob {}", short(oid)),
            Place::Object {
                kind: Kind::Tree,
                oid,
            } => write!(f, "the file names of tree {}", short(oid)),
            Place::Object { kind, oid } => write!(f, "{kind} {}", short(oid)),
            Place::Change { base } => write!(f, "a change to upstream object {}", short(base)),
        }
    }
}

/// One DLP finding in a push. Holds no part of the matched text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PushFinding {
    /// The DLP rule, or `secret:<name>` for a registered secret.
    pub rule_id: String,
    /// The rule's action.
    pub action: Action,
    /// Where it is.
    pub place: Place,
}

/// What the gate found in a push it could read.
#[derive(Debug, Clone)]
pub struct PushVerdict {
    /// The ref updates and capabilities.
    pub commands: PushCommands,
    /// Every finding, one per rule and place.
    pub findings: Vec<PushFinding>,
    /// Objects in the packfile.
    pub objects: usize,
    /// Deltas against objects the pack does not hold (only their inserted bytes were seen).
    pub thin_deltas: usize,
    /// Inflated bytes (objects and resolved deltas).
    pub inflated: usize,
}

impl PushVerdict {
    /// Whether a finding blocks the push.
    pub fn blocked(&self) -> bool {
        self.findings.iter().any(|f| f.action == Action::Block)
    }

    /// Why the push is refused (rules and places, never the secret); `None` if it is not.
    pub fn reason(&self) -> Option<String> {
        let places = self.blocking_places();
        if places.is_empty() {
            return None;
        }
        let mut parts: Vec<String> = places
            .iter()
            .take(LISTED_FINDINGS)
            .map(|(place, rules)| {
                let s = if rules.len() > 1 { "s" } else { "" };
                format!("DLP rule{s} {} in {place}", rules.join(", "))
            })
            .collect();
        if places.len() > LISTED_FINDINGS {
            parts.push(format!("{} more", places.len() - LISTED_FINDINGS));
        }
        Some(format!("secret found: {}", parts.join("; ")))
    }

    /// Each place holding a blocking finding, with its rules, in the order found.
    pub fn blocking_places(&self) -> Vec<(&Place, Vec<&str>)> {
        let mut out: Vec<(&Place, Vec<&str>)> = Vec::new();
        for f in self.findings.iter().filter(|f| f.action == Action::Block) {
            match out.iter_mut().find(|(p, _)| *p == &f.place) {
                Some((_, rules)) => rules.push(&f.rule_id),
                None => out.push((&f.place, vec![&f.rule_id])),
            }
        }
        out
    }
}

fn bad(reason: impl Into<String>) -> Error {
    Error::GitPush(reason.into())
}

/// An object after delta resolution.
struct Object {
    /// Type; `None` for a delta whose base is not in the pack.
    kind: Option<Kind>,
    /// Id, once resolved.
    oid: Option<Oid>,
    /// Contents once resolved; delta instructions until then.
    data: Vec<u8>,
    base: Option<Base>,
}

/// Read and scan the receive-pack request `body`. `Err` when the push cannot be checked
/// (refuse it); otherwise the findings.
pub fn inspect_push(body: &[u8], scanner: &Scanner, limits: &Limits) -> Result<PushVerdict> {
    let commands = PushCommands::parse(body)?;
    let mut found = Found::new(scanner);
    found.scan(&body[..commands.pack_offset], || Place::Commands);
    let pack = &body[commands.pack_offset..];
    if pack.is_empty() {
        if !commands.deletes_only() {
            return Err(bad("push updates refs but carries no packfile"));
        }
        return Ok(PushVerdict {
            commands,
            findings: found.findings,
            objects: 0,
            thin_deltas: 0,
            inflated: 0,
        });
    }
    let mut budget = Budget::new(limits.max_total_inflated);
    let entries = pack::read(pack, limits, &mut budget)?;
    let count = entries.len();
    let objects = resolve(entries, limits, &mut budget)?;

    // Trees and commits first: they name the files.
    let mut trees: HashMap<Oid, Vec<TreeEntry>> = HashMap::new();
    let mut roots: Vec<Oid> = Vec::new();
    let mut inserted: Vec<Option<Vec<u8>>> = Vec::with_capacity(objects.len());
    let mut partial: Vec<TreeEntry> = Vec::new();
    for o in &objects {
        match (o.kind, o.oid) {
            (Some(Kind::Tree), Some(oid)) => {
                trees.insert(oid, tree::parse(&o.data)?);
            }
            (Some(Kind::Commit), Some(_)) => roots.extend(commit_tree(&o.data)),
            _ => {}
        }
        inserted.push(if o.kind.is_none() {
            let bytes = delta::inserted(&o.data)?;
            partial.extend(tree::entries_in(&bytes));
            Some(bytes)
        } else {
            None
        });
    }
    let mut paths = tree::blob_paths(&trees, &roots);
    for e in partial.iter().filter(|e| e.is_blob()) {
        paths
            .entry(e.oid)
            .or_insert_with(|| format!("…/{}", e.name));
    }
    let thin = objects.iter().filter(|o| o.kind.is_none()).count();
    let shown = |path: Option<&String>| -> Option<String> {
        // A path holding a secret is not repeated in the refusal.
        path.filter(|p| scanner.scan(p.as_bytes()).is_empty())
            .cloned()
    };

    for (o, ins) in objects.iter().zip(&inserted) {
        match (o.kind, o.oid, ins) {
            (Some(Kind::Tree), Some(oid), _) => {
                let names: Vec<u8> = trees
                    .get(&oid)
                    .map(|entries| {
                        entries
                            .iter()
                            .flat_map(|e| e.name.bytes().chain([b'\n']))
                            .collect()
                    })
                    .unwrap_or_default();
                found.scan(&names, || Place::Object {
                    kind: Kind::Tree,
                    oid: hex::encode(oid),
                });
            }
            (Some(Kind::Blob), Some(oid), _) => found.scan(&o.data, || Place::File {
                path: shown(paths.get(&oid)),
                oid: hex::encode(oid),
            }),
            (Some(kind), Some(oid), _) => found.scan(&o.data, || Place::Object {
                kind,
                oid: hex::encode(oid),
            }),
            (None, _, Some(bytes)) => found.scan(bytes, || Place::Change {
                base: base_id(o.base, &objects),
            }),
            _ => return Err(bad("internal: object neither resolved nor a delta")),
        }
    }
    Ok(PushVerdict {
        commands,
        findings: found.findings,
        objects: count,
        thin_deltas: thin,
        inflated: budget.used(),
    })
}

/// Findings, one per rule and place.
struct Found<'a> {
    scanner: &'a Scanner,
    findings: Vec<PushFinding>,
    seen: HashSet<(String, Place)>,
}

impl<'a> Found<'a> {
    fn new(scanner: &'a Scanner) -> Found<'a> {
        Found {
            scanner,
            findings: Vec::new(),
            seen: HashSet::new(),
        }
    }

    /// Scan `data`; `place` is only computed when something is found.
    fn scan(&mut self, data: &[u8], place: impl FnOnce() -> Place) {
        let hits = self.scanner.scan_decoding(data);
        if hits.is_empty() {
            return;
        }
        let place = place();
        for h in hits {
            if self.seen.insert((h.rule_id.clone(), place.clone())) {
                self.findings.push(PushFinding {
                    rule_id: h.rule_id,
                    action: h.action,
                    place: place.clone(),
                });
            }
        }
    }
}

/// Resolve every delta whose base is in the pack (breadth first from the whole objects, so
/// chains cost no recursion); deltas on bases the pack lacks stay as they are.
fn resolve(entries: Vec<Entry>, limits: &Limits, budget: &mut Budget) -> Result<Vec<Object>> {
    let mut objects: Vec<Object> = entries
        .into_iter()
        .map(|e| Object {
            kind: e.kind,
            oid: None,
            data: e.data,
            base: e.base,
        })
        .collect();
    let mut by_index: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut by_id: HashMap<Oid, Vec<usize>> = HashMap::new();
    for (i, o) in objects.iter().enumerate() {
        match o.base {
            Some(Base::Index(b)) => by_index.entry(b).or_default().push(i),
            Some(Base::Id(id)) => by_id.entry(id).or_default().push(i),
            None => {}
        }
    }
    let mut queue: Vec<usize> = (0..objects.len())
        .filter(|&i| objects[i].kind.is_some())
        .collect();
    while let Some(i) = queue.pop() {
        let Some(kind) = objects[i].kind else {
            continue;
        };
        let oid = object_id(kind, &objects[i].data);
        objects[i].oid = Some(oid);
        let mut children = by_index.remove(&i).unwrap_or_default();
        children.extend(by_id.remove(&oid).unwrap_or_default());
        for c in children {
            if objects[c].kind.is_some() {
                continue;
            }
            let size = delta::target_size(&objects[c].data)?;
            if size > limits.max_object_size {
                return Err(bad(format!(
                    "a delta of {size} bytes is over the {} byte limit",
                    limits.max_object_size
                )));
            }
            budget.take(size)?;
            let data = delta::apply(&objects[i].data, &objects[c].data)?;
            objects[c].data = data;
            objects[c].kind = Some(kind);
            queue.push(c);
        }
    }
    Ok(objects)
}

/// Git's object id: SHA-1 of `<type> <size>\0<contents>`.
fn object_id(kind: Kind, data: &[u8]) -> Oid {
    let mut h = Sha1::new();
    h.update(format!("{kind} {}\0", data.len()).as_bytes());
    h.update(data);
    h.finalize().into()
}

/// The root tree a commit names.
fn commit_tree(data: &[u8]) -> Option<Oid> {
    let hex_id = data.strip_prefix(b"tree ")?.get(..40)?;
    let mut oid = [0u8; 20];
    hex::decode_to_slice(hex_id, &mut oid).ok()?;
    Some(oid)
}

/// Id of an unresolved delta's base (hex): upstream's object, or the first id down its chain.
fn base_id(base: Option<Base>, objects: &[Object]) -> String {
    let mut base = base;
    // An unresolved OFS_DELTA's base is itself unresolved; follow the chain to the id.
    for _ in 0..objects.len() {
        match base {
            Some(Base::Id(id)) => return hex::encode(id),
            Some(Base::Index(i)) => base = objects.get(i).and_then(|o| o.base),
            None => break,
        }
    }
    "unknown".to_string()
}
