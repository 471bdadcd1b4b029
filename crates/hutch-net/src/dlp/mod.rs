//! DLP: find secrets in bytes on their way out of a sandbox.
//!
//! One Aho-Corasick pass finds every rule prefix (`ghp_`, `AKIA`, `password`, ...) and every encoded form of every registered secret value. A rule's regex
//! only runs, anchored and on a bounded window, where one of its prefixes occurs, so the cost
//! is the one automaton pass plus a little per candidate (see `examples/dlp_bench.rs`).
//!
//! Findings name the rule and the offset, never the matched text.

mod encode;
mod rules;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, Input, MatchKind};
use regex::bytes::Regex;
use std::collections::HashMap;
use std::fmt;

pub use encode::Encoding;
pub use rules::{Action, Rule, builtin_rules, keyword_variants};

use crate::{Error, Result};

/// Most patterns per automaton pass (Teddy's limit).
const PASS_PATTERNS: usize = 64;
/// Most rule prefixes per pass: rule prefixes are common in text, and Teddy's "slim" variant
/// (up to 32 patterns) is about twice as fast as its "fat" one on frequent candidates.
const RULE_PASS_PATTERNS: usize = 32;
/// Longest span a rule's regex may match (bounds the per-candidate work).
const MAX_WINDOW: usize = 8192;
/// Shortest registered secret value accepted: shorter ones would match by chance.
pub const MIN_SECRET_LEN: usize = 6;
/// Registered secrets longer than this are matched by their first this-many bytes (a multiple
/// of 3, so base64 of the prefix is a prefix of base64 of the whole).
pub const MAX_SECRET_SCAN: usize = 192;

/// A secret registered with Hutch whose value must not leave a sandbox (except where injected
/// by the gateway). `Debug` never prints the value.
#[derive(Clone)]
pub struct Secret {
    /// The secret's name; findings report it as `secret:<name>`.
    pub name: String,
    /// The value.
    pub value: Vec<u8>,
    /// Action on a match.
    pub action: Action,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .field("action", &self.action)
            .finish()
    }
}

/// One match. Holds no part of the matched text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The rule's id, or `secret:<name>` for a registered secret.
    pub rule_id: String,
    /// The rule's action.
    pub action: Action,
    /// Byte offset of the match in the scanned input.
    pub offset: usize,
    /// Length of the match in bytes (to redact it).
    pub len: usize,
    /// For registered secrets, how the value was encoded.
    pub encoding: Option<Encoding>,
}

/// What an automaton pattern stands for.
#[derive(Clone, Copy)]
enum Target {
    /// Candidate start of a rule (index into `Scanner::rules`; lower wins).
    Rule(usize),
    /// An encoded value of a secret (index into `Scanner::secrets`), `len` bytes long.
    Secret {
        secret: usize,
        len: usize,
        encoding: Encoding,
    },
}

/// One automaton over some of the patterns.
struct Pass {
    ac: AhoCorasick,
    /// Per pattern of `ac`: what it stands for.
    targets: Vec<Vec<Target>>,
}

struct CompiledRule {
    id: String,
    action: Action,
    regex: Regex,
    has_group: bool,
    min_entropy: Option<f64>,
    require_digit: bool,
    word_boundary: bool,
}

/// The scanner: immutable, cheap to share (`Send + Sync`), build once per rule set.
pub struct Scanner {
    passes: Vec<Pass>,
    rules: Vec<CompiledRule>,
    secrets: Vec<(String, Action)>,
}

impl fmt::Debug for Scanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scanner")
            .field("passes", &self.passes.len())
            .field(
                "rules",
                &self.rules.iter().map(|r| &r.id).collect::<Vec<_>>(),
            )
            .field(
                "secrets",
                &self.secrets.iter().map(|s| &s.0).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Scanner {
    /// Compile rules and registered secrets into a scanner.
    pub fn new(rules: Vec<Rule>, secrets: Vec<Secret>) -> Result<Scanner> {
        // Automaton patterns (exact bytes) and what each stands for.
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut own: Vec<Vec<Target>> = Vec::new();
        let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut slot = |key: &[u8]| -> usize {
            if let Some(&i) = index.get(key) {
                return i;
            }
            keys.push(key.to_vec());
            own.push(Vec::new());
            index.insert(key.to_vec(), keys.len() - 1);
            keys.len() - 1
        };
        let mut compiled = Vec::with_capacity(rules.len());
        let mut rule_slots: Vec<(usize, usize)> = Vec::new();
        // Rule prefixes take the first slots, secrets the rest.
        let mut rule_key_count = 0;
        for (ri, rule) in rules.into_iter().enumerate() {
            if rule.prefixes.is_empty() || rule.prefixes.iter().any(|p| p.is_empty()) {
                return Err(Error::Invalid {
                    field: "dlp rule",
                    message: format!("{}: needs non-empty prefixes", rule.id),
                });
            }
            let regex =
                Regex::new(&format!("^(?:{})", rule.pattern)).map_err(|e| Error::Invalid {
                    field: "dlp rule",
                    message: format!("{}: {e}", rule.id),
                })?;
            for p in &rule.prefixes {
                let at = slot(p.as_bytes());
                rule_key_count = rule_key_count.max(at + 1);
                rule_slots.push((at, ri));
            }
            compiled.push(CompiledRule {
                id: rule.id,
                action: rule.action,
                has_group: regex.captures_len() > 1,
                regex,
                min_entropy: rule.min_entropy,
                require_digit: rule.require_digit,
                word_boundary: rule.word_boundary,
            });
        }
        let mut secret_slots = Vec::new();
        let mut names = Vec::with_capacity(secrets.len());
        for (si, secret) in secrets.into_iter().enumerate() {
            if secret.value.len() < MIN_SECRET_LEN {
                return Err(Error::Invalid {
                    field: "secret",
                    message: format!(
                        "{}: value shorter than {MIN_SECRET_LEN} bytes cannot be scanned for",
                        secret.name
                    ),
                });
            }
            // Long values (keys files, certificates) are matched by their first bytes: a leak
            // of the whole carries them, and encodings of a 3-byte-aligned prefix are prefixes
            // of the encodings of the whole. Matching the whole of a 64 KiB value would make
            // the automaton (and its construction) enormous.
            let value = &secret.value[..secret.value.len().min(MAX_SECRET_SCAN)];
            for (bytes, encoding) in encode::variants(value) {
                secret_slots.push((
                    slot(&bytes),
                    Target::Secret {
                        secret: si,
                        len: bytes.len(),
                        encoding,
                    },
                ));
            }
            names.push((secret.name, secret.action));
        }
        // Secrets first: at one position they are checked before rules sharing the start.
        for (s, t) in secret_slots {
            own[s].push(t);
        }
        for (s, ri) in rule_slots {
            if !own[s]
                .iter()
                .any(|t| matches!(t, Target::Rule(r) if *r == ri))
            {
                own[s].push(Target::Rule(ri));
            }
        }
        // Teddy, the SIMD prefilter that makes a pass fast, takes at most 64 patterns: split
        // the patterns (rule prefixes first, then secrets) into passes of at most that many.
        // A pass reports the longest of its patterns at each position, so each pattern also
        // carries the targets of the patterns of its pass that are prefixes of it.
        let mut passes = Vec::new();
        let (rule_keys, secret_keys) = keys.split_at(rule_key_count);
        let chunks = rule_keys
            .chunks(RULE_PASS_PATTERNS)
            .chain(secret_keys.chunks(PASS_PATTERNS));
        for chunk in chunks {
            let local: HashMap<&[u8], usize> =
                chunk.iter().map(|k| (k.as_slice(), index[k])).collect();
            let mut targets: Vec<Vec<Target>> = Vec::with_capacity(chunk.len());
            for key in chunk {
                let mut list: Vec<Target> = Vec::new();
                for len in 1..=key.len() {
                    if let Some(&j) = local.get(&key[..len]) {
                        list.extend(own[j].iter().copied());
                    }
                }
                list.sort_by_key(|t| match t {
                    Target::Secret { .. } => (0, 0),
                    Target::Rule(r) => (1, *r),
                });
                targets.push(list);
            }
            let ac = AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .kind(Some(AhoCorasickKind::DFA))
                .build(chunk)
                .map_err(|e| Error::Invalid {
                    field: "dlp patterns",
                    message: e.to_string(),
                })?;
            passes.push(Pass { ac, targets });
        }
        Ok(Scanner {
            passes,
            rules: compiled,
            secrets: names,
        })
    }

    /// The built-in rules and the given secrets.
    pub fn with_builtin(secrets: Vec<Secret>) -> Result<Scanner> {
        Scanner::new(builtin_rules(), secrets)
    }

    /// Scan `hay`; findings are ordered by offset. Each rule reports a span once.
    pub fn scan(&self, hay: &[u8]) -> Vec<Finding> {
        let mut out = Vec::new();
        // Per rule: end of its last finding, so one secret is reported once even if it holds
        // its prefix several times (a JWT has `eyJ` in two parts).
        let mut covered = vec![0usize; self.rules.len()];
        for pass in &self.passes {
            self.scan_pass(pass, hay, &mut covered, &mut out);
        }
        if self.passes.len() > 1 {
            out.sort_by_key(|f| f.offset);
        }
        out
    }

    /// Run one pass, adding its findings to `out`.
    fn scan_pass(&self, pass: &Pass, hay: &[u8], covered: &mut [usize], out: &mut Vec<Finding>) {
        let mut pos = 0;
        // Leftmost-longest matches, restarting one byte after each match start: every start
        // position is seen, so a pattern starting inside another match is not missed.
        while let Some(m) = pass.ac.find(Input::new(hay).span(pos..hay.len())) {
            let start = m.start();
            pos = start + 1;
            let mut rule_hit = false;
            for target in &pass.targets[m.pattern().as_usize()] {
                match *target {
                    Target::Rule(ri) => {
                        if rule_hit || start < covered[ri] {
                            continue;
                        }
                        if let Some(len) = self.check_rule(&self.rules[ri], hay, start) {
                            covered[ri] = start + len;
                            rule_hit = true; // the first rule of a shared prefix wins
                            let rule = &self.rules[ri];
                            out.push(Finding {
                                rule_id: rule.id.clone(),
                                action: rule.action,
                                offset: start,
                                len,
                                encoding: None,
                            });
                        }
                    }
                    Target::Secret {
                        secret,
                        len,
                        encoding,
                    } => {
                        let (name, action) = &self.secrets[secret];
                        out.push(Finding {
                            rule_id: format!("secret:{name}"),
                            action: *action,
                            offset: start,
                            len,
                            encoding: Some(encoding),
                        });
                    }
                }
            }
            if pos >= hay.len() {
                break;
            }
        }
    }

    /// Scan `data` as is and, if it holds `%XX` escapes, percent-decoded too (a client may
    /// escape any byte, which no precomputed encoding of a secret covers). Findings in the
    /// decoded text have offsets into the decoded text.
    pub fn scan_decoding(&self, data: &[u8]) -> Vec<Finding> {
        let mut out = self.scan(data);
        if memchr_percent(data) {
            let decoded = percent_decode(data);
            for f in self.scan(&decoded) {
                if !out.iter().any(|o| o.rule_id == f.rule_id) {
                    out.push(f);
                }
            }
        }
        out
    }

    /// `text` with every finding replaced by `[REDACTED:<rule>]`: for logs.
    pub fn redact(&self, text: &str) -> String {
        let findings = self.scan(text.as_bytes());
        if findings.is_empty() {
            return text.to_string();
        }
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut pos = 0;
        for f in findings {
            if f.offset < pos {
                // Overlaps the previous redaction: extend it.
                pos = pos.max(f.offset + f.len);
                continue;
            }
            out.extend_from_slice(&bytes[pos..f.offset]);
            out.extend_from_slice(format!("[REDACTED:{}]", f.rule_id).as_bytes());
            pos = f.offset + f.len;
        }
        out.extend_from_slice(&bytes[pos.min(bytes.len())..]);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Whether any finding in `findings` blocks.
    pub fn blocks(findings: &[Finding]) -> bool {
        findings.iter().any(|f| f.action == Action::Block)
    }

    /// Check `rule` at `start`; the match length if it matches.
    fn check_rule(&self, rule: &CompiledRule, hay: &[u8], start: usize) -> Option<usize> {
        if rule.word_boundary && start > 0 && is_word(hay[start - 1]) {
            return None;
        }
        let window = &hay[start..hay.len().min(start + MAX_WINDOW)];
        // `find` first: most candidates fail, and it needs no capture slots.
        let m = rule.regex.find(window)?;
        let (len, checked) = if rule.has_group {
            let caps = rule.regex.captures(&window[..m.end()])?;
            let whole = caps.get(0)?;
            let part = caps.get(1).map_or(whole.as_bytes(), |g| g.as_bytes());
            (whole.end(), part)
        } else {
            (m.end(), &window[..m.end()])
        };
        if rule.word_boundary && hay.get(start + len).is_some_and(|&b| is_word(b)) {
            return None;
        }
        if rule.require_digit && !checked.iter().any(u8::is_ascii_digit) {
            return None;
        }
        if let Some(min) = rule.min_entropy
            && entropy(checked) < min
        {
            return None;
        }
        Some(len)
    }
}

fn memchr_percent(data: &[u8]) -> bool {
    data.contains(&b'%')
}

/// Decode `%XX` escapes (anything else, including malformed escapes, is kept as is).
pub fn percent_decode(data: &[u8]) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'%'
            && i + 2 < data.len()
            && let (Some(h), Some(l)) = (hex(data[i + 1]), hex(data[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Shannon entropy in bits per byte.
pub fn entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in data {
        counts[usize::from(b)] += 1;
    }
    let n = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests;
