//! The built-in secret patterns.
//!
//! Several patterns follow gitleaks' rules (MIT-licensed, <https://github.com/gitleaks/gitleaks>),
//! reshaped so that every rule starts with a literal prefix: the scanner finds prefixes with
//! one Aho-Corasick pass and only runs a rule's regex, anchored, where its prefix occurs.

use serde::{Deserialize, Serialize};

/// What to do when a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Refuse the request.
    Block,
    /// Let the request through and record the finding.
    Log,
}

/// A secret pattern.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rule {
    /// Stable identifier reported in findings (e.g. `github-pat`).
    pub id: String,
    /// Action on a match.
    pub action: Action,
    /// Literals (matched exactly) one of which starts every match.
    pub prefixes: Vec<String>,
    /// A regex (byte-oriented) matched anchored where a prefix starts. If it has a capture
    /// group 1, the checks below apply to that group, else to the whole match.
    pub pattern: String,
    /// Minimum Shannon entropy (bits per byte) of the checked part.
    #[serde(default)]
    pub min_entropy: Option<f64>,
    /// The checked part must contain an ASCII digit.
    #[serde(default)]
    pub require_digit: bool,
    /// The match must not start or end inside a word (`[A-Za-z0-9_]` on either side).
    #[serde(default = "yes")]
    pub word_boundary: bool,
}

fn yes() -> bool {
    true
}

impl Rule {
    /// A rule with the default checks (word boundaries on, no entropy or digit checks).
    pub fn new(id: &str, action: Action, prefixes: &[&str], pattern: &str) -> Rule {
        Rule {
            id: id.to_string(),
            action,
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            pattern: pattern.to_string(),
            min_entropy: None,
            require_digit: false,
            word_boundary: true,
        }
    }

    /// Require a minimum Shannon entropy of the checked part.
    pub fn entropy(mut self, bits: f64) -> Rule {
        self.min_entropy = Some(bits);
        self
    }

    /// Require an ASCII digit in the checked part.
    pub fn digit(mut self) -> Rule {
        self.require_digit = true;
        self
    }

    /// Allow the match to start or end inside a word.
    pub fn no_boundary(mut self) -> Rule {
        self.word_boundary = false;
        self
    }

    /// The same rule with another action.
    pub fn with_action(mut self, action: Action) -> Rule {
        self.action = action;
        self
    }
}

/// Keywords that introduce a secret in `key = value` style text (the `generic-secret` rule),
/// lower case with `_` between words; [`keyword_variants`] spells them as code does.
const GENERIC_KEYWORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "access_key",
    "auth",
    "credential",
    "private_key",
];

/// Prefixes of the `generic-secret` keywords (`passw` covers `password` and `passwd`): each
/// spelling is one automaton pattern, so fewer keep the scan fast.
const GENERIC_STEMS: &[&str] = &[
    "passw",
    "secret",
    "token",
    "api_key",
    "access_key",
    "auth",
    "credential",
    "private_key",
];

/// The spellings of a keyword as prefixes: `api_key` gives `api_key`, `API_KEY`, `Api_Key`,
/// `api-key`, `API-KEY`, `Api-Key`, `apikey`, `APIKEY`, `ApiKey`, `apiKey`. (Matching exact
/// spellings keeps the automaton case-sensitive, which is what makes it fast.)
pub fn keyword_variants(keyword: &str) -> Vec<String> {
    fn title(w: &str) -> String {
        let mut c = w.chars();
        c.next()
            .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
            .unwrap_or_default()
    }
    let words: Vec<&str> = keyword.split('_').collect();
    let mut out = Vec::new();
    for sep in ["_", "-", ""] {
        out.push(words.join(sep).to_ascii_lowercase());
        out.push(words.join(sep).to_ascii_uppercase());
        out.push(words.iter().map(|w| title(w)).collect::<Vec<_>>().join(sep));
    }
    let camel: String = words
        .iter()
        .enumerate()
        .map(|(i, w)| if i == 0 { w.to_string() } else { title(w) })
        .collect();
    out.push(camel);
    out.sort();
    out.dedup();
    out
}

/// Hutch's built-in rules, all with action [`Action::Block`]. Where two rules share a prefix
/// the first one listed wins (e.g. `anthropic-api-key` before `openai-api-key`).
pub fn builtin_rules() -> Vec<Rule> {
    use Action::Block;
    let generic = format!(
        r"(?i)(?:{})[a-z0-9_.\-]{{0,24}}[\x22'`]?\s{{0,4}}(?::=|=>|=|:)\s{{0,4}}[\x22'`]?([A-Za-z0-9+/_.~=\-]{{16,200}})(?:[\x22'`\s,;&)\]}}]|$)",
        GENERIC_KEYWORDS
            .iter()
            .map(|k| k.replace('_', "[_\\-]?"))
            .collect::<Vec<_>>()
            .join("|")
    );
    let keywords: Vec<String> = GENERIC_STEMS
        .iter()
        .flat_map(|k| keyword_variants(k))
        .collect();
    let keywords: Vec<&str> = keywords.iter().map(String::as_str).collect();
    vec![
        Rule::new(
            "aws-access-key-id",
            Block,
            &["AKIA", "ASIA", "ABIA", "ACCA", "A3T"],
            r"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}",
        ),
        Rule::new("github-pat", Block, &["ghp_"], r"ghp_[A-Za-z0-9]{36}"),
        Rule::new("github-oauth", Block, &["gho_"], r"gho_[A-Za-z0-9]{36}"),
        Rule::new(
            "github-app-token",
            Block,
            &["ghs_", "ghu_"],
            r"gh[su]_[A-Za-z0-9]{36}",
        ),
        Rule::new(
            "github-refresh-token",
            Block,
            &["ghr_"],
            r"ghr_[A-Za-z0-9]{36,76}",
        ),
        Rule::new(
            "github-fine-grained-pat",
            Block,
            &["github_pat_"],
            r"github_pat_[A-Za-z0-9_]{82}",
        ),
        Rule::new(
            "gitlab-pat",
            Block,
            &["glpat-"],
            r"glpat-[A-Za-z0-9_\-]{20,}",
        ),
        Rule::new(
            "slack-token",
            Block,
            &["xox"],
            r"xox[baprs]-[A-Za-z0-9\-]{10,}",
        )
        .digit(),
        Rule::new(
            "stripe-secret-key",
            Block,
            &["sk_live_", "rk_live_"],
            r"[sr]k_live_[A-Za-z0-9]{20,}",
        ),
        Rule::new(
            "anthropic-api-key",
            Block,
            &["sk-"],
            r"sk-ant-[a-z]{2,8}[0-9]{0,2}-[A-Za-z0-9_\-]{32,}",
        ),
        Rule::new(
            "openai-api-key",
            Block,
            &["sk-"],
            r"sk-(?:proj-|svcacct-|admin-|None-)?([A-Za-z0-9_\-]{32,})",
        )
        .entropy(3.5)
        .digit(),
        Rule::new(
            "google-api-key",
            Block,
            &["AIza"],
            r"AIza[0-9A-Za-z_\-]{35}",
        ),
        Rule::new(
            "private-key",
            Block,
            &["-----BEGIN"],
            r"-----BEGIN[ A-Z0-9_\-]{0,64}PRIVATE KEY(?: BLOCK)?-----",
        )
        .no_boundary(),
        Rule::new(
            "jwt",
            Block,
            &["eyJ"],
            r"eyJ[A-Za-z0-9_\-]{10,}={0,2}\.eyJ[A-Za-z0-9_\-]{10,}={0,2}\.[A-Za-z0-9_\-]{10,}={0,2}",
        ),
        Rule::new("generic-secret", Block, &keywords, &generic)
            .entropy(3.5)
            .digit()
            .no_boundary(),
    ]
}
