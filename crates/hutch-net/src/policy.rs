//! The egress policy: which destinations a sandbox may reach, and the per-sandbox store the DNS
//! filter and the gateway read on every new query, connection and request (so updates apply
//! immediately, without touching open connections).

use crate::dlp::{Action, Scanner, Secret};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// One allowlist rule. Exactly one of `domain` and `cidr` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Name reported in decisions and 403s; defaults to `rules[<index>]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `api.example.com` (exactly that name), `*.example.com` (any name below it, not the
    /// name itself) or `*` (any domain name; never an IP literal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Explicit addresses: the only way to allow IP-literal destinations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<IpNet>,
    /// Allowed ports; empty means 80 and 443.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Allowed HTTP methods (upper case); empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Allowed path prefixes; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// A sandbox's egress policy: an allowlist. No rules, no egress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The rules; a request is allowed if any rule allows it.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Domain patterns (like rules' `domain`) whose TLS the gateway passes through unread
    /// instead of intercepting (pinned certificates, client certificates). Their traffic gets
    /// no method/path checks, DLP or credential injection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passthrough: Vec<String>,
}

/// What a destination looks like to the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A (lower-cased, validated) domain name.
    Name(String),
    /// An IP literal (including forms like `2130706433` or `0x7f.1` that resolvers treat as
    /// addresses: those never match, as they are not valid names either).
    Ip(IpAddr),
}

impl Host {
    /// Classify a host as written in a Host header, SNI, CONNECT target or DNS query.
    pub fn parse(raw: &str) -> Result<Host, String> {
        let h = raw.trim_end_matches('.');
        let unbracketed = h
            .strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .unwrap_or(h);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        let h = h.to_ascii_lowercase();
        if h.is_empty() || h.len() > 253 {
            return Err(format!("invalid host name {raw:?}"));
        }
        for label in h.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(format!("invalid host name {raw:?}"));
            }
        }
        // The last label of a real name is never numeric: `1.2.3` or `0x7f` is an address.
        let last = h.rsplit('.').next().unwrap_or("");
        if last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x") {
            return Err(format!("numeric host {raw:?} is an IP literal in disguise"));
        }
        Ok(Host::Name(h))
    }
}

/// A request (or connection) to check. `method` and `path` are `None` when the gateway cannot
/// see them (TLS passthrough, CONNECT).
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The destination.
    pub host: &'a Host,
    /// The destination port.
    pub port: u16,
    /// HTTP method, if visible.
    pub method: Option<&'a str>,
    /// URL path, if visible.
    pub path: Option<&'a str>,
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the named rule.
    Allow {
        /// The rule's id.
        rule: String,
    },
    /// Refused.
    Deny {
        /// Why, for the 403 body, the log and the agent.
        reason: String,
    },
}

impl Decision {
    /// Whether the decision allows.
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

impl Rule {
    fn name(&self, index: usize) -> String {
        self.id.clone().unwrap_or_else(|| format!("rules[{index}]"))
    }

    /// Whether this rule's destination part (domain or CIDR) matches `host`.
    fn matches_host(&self, host: &Host) -> bool {
        match (host, &self.domain, &self.cidr) {
            (Host::Name(n), Some(d), _) => domain_matches(d, n),
            (Host::Ip(ip), _, Some(net)) => net.contains(ip),
            _ => false,
        }
    }

    fn port_ok(&self, port: u16) -> bool {
        if self.ports.is_empty() {
            port == 80 || port == 443
        } else {
            self.ports.contains(&port)
        }
    }
}

/// Whether `pattern` is a valid domain pattern: `*`, `*.suffix` or an exact name.
fn valid_pattern(pattern: &str) -> bool {
    let bare = pattern.strip_prefix("*.").unwrap_or(pattern);
    pattern == "*" || matches!(Host::parse(bare), Ok(Host::Name(_)))
}

/// `pattern` (`*`, `*.suffix` or an exact name) against a lower-case name.
pub fn domain_matches(pattern: &str, name: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            name.len() > suffix.len() + 1
                && name.ends_with(&suffix)
                && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
        }
        None => name == pattern,
    }
}

impl Policy {
    /// Check the rules: a problem with a rule is reported, not ignored.
    pub fn validate(&self) -> Result<(), String> {
        for (i, r) in self.rules.iter().enumerate() {
            let name = r.name(i);
            match (&r.domain, &r.cidr) {
                (Some(d), None) => {
                    if !valid_pattern(d) {
                        return Err(format!("{name}: invalid domain {d:?}"));
                    }
                }
                (None, Some(_)) => {}
                _ => return Err(format!("{name}: needs exactly one of domain and cidr")),
            }
            if r.paths.iter().any(|p| !p.starts_with('/')) {
                return Err(format!("{name}: paths must start with '/'"));
            }
        }
        if let Some(bad) = self.passthrough.iter().find(|p| !valid_pattern(p)) {
            return Err(format!("passthrough: invalid domain {bad:?}"));
        }
        Ok(())
    }

    /// Whether TLS to `name` is passed through unread (a `passthrough` pattern matches).
    pub fn passes_through(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.passthrough.iter().any(|p| domain_matches(p, &name))
    }

    /// Whether DNS may answer for `name`: some domain rule covers it (ports aside).
    pub fn allows_name(&self, name: &str) -> Option<String> {
        let host = Host::parse(name).ok()?;
        if !matches!(host, Host::Name(_)) {
            return None;
        }
        self.rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches_host(&host))
            .map(|(i, r)| r.name(i))
    }

    /// Check a request against the rules.
    pub fn check(&self, req: &Request<'_>) -> Decision {
        self.decide(req, false)
    }

    /// Check a connection whose requests will each be checked later (intercepted TLS):
    /// destination and port only; method and path restrictions wait for the requests.
    pub fn check_connection(&self, host: &Host, port: u16) -> Decision {
        let req = Request {
            host,
            port,
            method: None,
            path: None,
        };
        self.decide(&req, true)
    }

    fn decide(&self, req: &Request<'_>, destination_only: bool) -> Decision {
        let mut near_miss: Option<String> = None;
        for (i, r) in self.rules.iter().enumerate() {
            if !r.matches_host(req.host) {
                continue;
            }
            let name = r.name(i);
            if !r.port_ok(req.port) {
                near_miss.get_or_insert(format!("port {} not allowed by rule {name}", req.port));
                continue;
            }
            if destination_only {
                return Decision::Allow { rule: name };
            }
            if !r.methods.is_empty() {
                match req.method {
                    Some(m) if r.methods.iter().any(|x| x.eq_ignore_ascii_case(m)) => {}
                    Some(m) => {
                        near_miss.get_or_insert(format!("method {m} not allowed by rule {name}"));
                        continue;
                    }
                    None => {
                        near_miss.get_or_insert(format!(
                            "rule {name} restricts methods, which needs TLS interception"
                        ));
                        continue;
                    }
                }
            }
            if !r.paths.is_empty() {
                match req.path {
                    // Upstreams normalise `/v1/../admin` (or `%2e%2e`, `%2f`, `\`) to a path
                    // the prefix never saw: a path they could read differently matches nothing.
                    Some(p) if ambiguous_path(p) => {
                        near_miss.get_or_insert(format!(
                            "ambiguous path (dot segments or encoded slashes) not allowed by rule {name}"
                        ));
                        continue;
                    }
                    Some(p) if r.paths.iter().any(|x| p.starts_with(x.as_str())) => {}
                    Some(_) => {
                        near_miss.get_or_insert(format!("path not allowed by rule {name}"));
                        continue;
                    }
                    None => {
                        near_miss.get_or_insert(format!(
                            "rule {name} restricts paths, which needs TLS interception"
                        ));
                        continue;
                    }
                }
            }
            return Decision::Allow { rule: name };
        }
        let reason = near_miss.unwrap_or_else(|| match req.host {
            Host::Name(n) => format!("host {n} is not in the sandbox's allowlist"),
            Host::Ip(ip) => {
                format!("IP literal {ip} is not allowed (only explicit CIDR rules allow addresses)")
            }
        });
        Decision::Deny { reason }
    }
}

/// Whether an upstream could read `path` (a raw request path) as another path than it says: a
/// `.` or `..` segment (also `%2e`-encoded, in any case, or with `;params` as some servers
/// strip them), an encoded slash (`%2f`) or backslash (`%5c`), or a raw backslash. Prefix
/// checks on such a path prove nothing, so path rules and path-scoped injections refuse it.
pub fn ambiguous_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    if lower.contains('\\') || lower.contains("%2f") || lower.contains("%5c") {
        return true;
    }
    lower.split('/').any(|segment| {
        let segment = segment.split(';').next().unwrap_or("").replace("%2e", ".");
        segment == "." || segment == ".."
    })
}

/// Address ranges the gateway never connects to unless the operator allows them: private,
/// loopback, link-local (incl. cloud metadata `169.254.169.254`), CGNAT (incl. `100.100.100.200`),
/// multicast, reserved, unique-local and NAT64.
pub fn is_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || v4.is_documentation()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (18..20).contains(&o[1]))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_special(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x64 && s[1] == 0xff9b)
                || (s[0] == 0x2001 && s[1] == 0xdb8)
        }
    }
}

/// Maps a peer address to the sandbox it belongs to (the gateway and DNS identify sandboxes by
/// source address; reverse-path filtering on the host side stops spoofing).
pub trait SandboxLookup: Send + Sync {
    /// The sandbox id owning `peer`, if any.
    fn sandbox_for(&self, peer: IpAddr) -> Option<String>;
}

impl SandboxLookup for crate::netns::NetworkManager {
    fn sandbox_for(&self, peer: IpAddr) -> Option<String> {
        match peer {
            IpAddr::V4(v4) => self.by_address(v4).map(|n| n.id),
            IpAddr::V6(_) => None,
        }
    }
}

/// A fixed peer → sandbox map (tests, single-sandbox setups).
#[derive(Debug, Default, Clone)]
pub struct StaticLookup(pub HashMap<IpAddr, String>);

impl SandboxLookup for StaticLookup {
    fn sandbox_for(&self, peer: IpAddr) -> Option<String> {
        self.0.get(&peer).cloned()
    }
}

/// A credential the gateway adds to a sandbox's requests: the sandbox only ever holds
/// `placeholder`; requests to `domain` (under `path_prefix`) get header `header` set to
/// `value`. `Debug` shows no value.
#[derive(Clone)]
pub struct Injection {
    /// The secret's name (what refusals name).
    pub secret: String,
    /// `api.example.com` (exactly) or `*.example.com` (any name below it).
    pub domain: String,
    /// Only requests whose path starts with this (`None`: any path).
    pub path_prefix: Option<String>,
    /// The header set on matching requests (replacing what the sandbox sent in it).
    pub header: http::HeaderName,
    /// The whole header value, with the real secret (`Bearer sk-...`).
    pub value: String,
    /// The raw secret.
    pub real: String,
    /// What the sandbox holds instead of the secret.
    pub placeholder: String,
}

impl std::fmt::Debug for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injection")
            .field("secret", &self.secret)
            .field("domain", &self.domain)
            .field("path_prefix", &self.path_prefix)
            .field("header", &self.header)
            .field("value", &"<redacted>")
            .field("real", &"<redacted>")
            .field("placeholder", &"<redacted>")
            .finish()
    }
}

impl Injection {
    /// Whether a request to `host` (lower case) with `path` gets this credential. With a
    /// `path_prefix`, an [`ambiguous_path`] never matches (upstream may normalise it out of
    /// the prefix), so the placeholder stays and the request is refused as exfiltration.
    pub fn matches(&self, host: &str, path: &str) -> bool {
        domain_matches(&self.domain, host)
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| !ambiguous_path(path) && path.starts_with(p))
    }

    /// Whether TLS to `host` may carry this credential (so must be intercepted).
    pub fn matches_host(&self, host: &str) -> bool {
        domain_matches(&self.domain, host)
    }

    fn validate(&self) -> Result<(), String> {
        let name = &self.secret;
        if self.domain == "*" || !valid_pattern(&self.domain) {
            return Err(format!(
                "{name}: invalid domain {:?} (an exact name or *.suffix)",
                self.domain
            ));
        }
        if self
            .path_prefix
            .as_deref()
            .is_some_and(|p| !p.starts_with('/'))
        {
            return Err(format!("{name}: path_prefix must start with '/'"));
        }
        if http::HeaderValue::from_str(&self.value).is_err() {
            return Err(format!(
                "{name}: the header value is not a valid header value"
            ));
        }
        if self.placeholder == self.real || !self.value.contains(&self.real) {
            return Err(format!(
                "{name}: the value must hold the real secret, and the placeholder differ from it"
            ));
        }
        Ok(())
    }
}

/// A sandbox's injections, with a scanner for their real values and placeholders (which may
/// only travel in the injected header of a matching request).
pub struct Injections {
    /// The injections.
    pub list: Vec<Injection>,
    /// Finds the real values and placeholders (raw, base64, URL and hex encoded).
    pub scanner: Scanner,
}

impl std::fmt::Debug for Injections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injections")
            .field("list", &self.list)
            .finish_non_exhaustive()
    }
}

/// Per-sandbox policies, read on every query, connection and request.
pub struct PolicyStore {
    policies: RwLock<HashMap<String, Arc<Policy>>>,
    injections: RwLock<HashMap<String, Arc<Injections>>>,
    lookup: Arc<dyn SandboxLookup>,
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore").finish_non_exhaustive()
    }
}

impl PolicyStore {
    /// An empty store (every sandbox denied) using `lookup` to identify peers.
    pub fn new(lookup: Arc<dyn SandboxLookup>) -> PolicyStore {
        PolicyStore {
            policies: RwLock::new(HashMap::new()),
            injections: RwLock::new(HashMap::new()),
            lookup,
        }
    }

    /// Set (replace) a sandbox's policy; applies to the next query, connection and request.
    pub fn set(&self, sandbox: &str, policy: Policy) -> crate::Result<()> {
        policy.validate().map_err(|message| crate::Error::Invalid {
            field: "network policy",
            message,
        })?;
        self.policies
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sandbox.to_string(), Arc::new(policy));
        Ok(())
    }

    /// Forget a sandbox's policy and injections (its traffic is then denied).
    pub fn remove(&self, sandbox: &str) {
        self.policies
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sandbox);
        self.injections
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sandbox);
    }

    /// Set (replace) a sandbox's credential injections; applies to the next request. An
    /// invalid injection (or a value under [`crate::dlp::MIN_SECRET_LEN`] bytes, which could
    /// not be scanned for) fails the whole call and leaves the previous set in place.
    pub fn set_injections(&self, sandbox: &str, list: Vec<Injection>) -> crate::Result<()> {
        let mut map = self.injections.write().unwrap_or_else(|p| p.into_inner());
        if list.is_empty() {
            map.remove(sandbox);
            return Ok(());
        }
        for inj in &list {
            inj.validate().map_err(|message| crate::Error::Invalid {
                field: "injection",
                message,
            })?;
        }
        let secrets = list
            .iter()
            .flat_map(|inj| {
                [&inj.real, &inj.placeholder].map(|v| Secret {
                    name: inj.secret.clone(),
                    value: v.as_bytes().to_vec(),
                    action: Action::Block,
                })
            })
            .collect();
        let scanner = Scanner::new(Vec::new(), secrets)?;
        map.insert(sandbox.to_string(), Arc::new(Injections { list, scanner }));
        Ok(())
    }

    /// A sandbox's injections.
    pub fn injections(&self, sandbox: &str) -> Option<Arc<Injections>> {
        self.injections
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(sandbox)
            .cloned()
    }

    /// A sandbox's policy.
    pub fn get(&self, sandbox: &str) -> Option<Arc<Policy>> {
        self.policies
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(sandbox)
            .cloned()
    }

    /// The sandbox behind `peer`, if any.
    pub fn sandbox_for(&self, peer: IpAddr) -> Option<String> {
        self.lookup.sandbox_for(peer)
    }

    /// The sandbox behind `peer` and its policy (an empty policy if none was set).
    pub fn for_peer(&self, peer: IpAddr) -> Option<(String, Arc<Policy>)> {
        let id = self.lookup.sandbox_for(peer)?;
        let policy = self.get(&id).unwrap_or_default();
        Some((id, policy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> Policy {
        let p: Policy = serde_json::from_str(json).expect("policy json");
        p.validate().expect("valid");
        p
    }

    fn check(
        p: &Policy,
        host: &str,
        port: u16,
        method: Option<&str>,
        path: Option<&str>,
    ) -> Decision {
        let host = Host::parse(host).expect("host");
        p.check(&Request {
            host: &host,
            port,
            method,
            path,
        })
    }

    #[test]
    fn domains_and_wildcards() {
        let p = policy(
            r#"{"rules":[{"id":"a","domain":"allowed.com"},{"id":"w","domain":"*.example.com"}]}"#,
        );
        assert!(check(&p, "allowed.com", 443, None, None).allowed());
        assert!(check(&p, "ALLOWED.com.", 80, None, None).allowed());
        assert!(!check(&p, "data.allowed.com", 443, None, None).allowed());
        assert!(!check(&p, "allowed.com.evil.net", 443, None, None).allowed());
        assert!(check(&p, "api.example.com", 443, None, None).allowed());
        assert!(check(&p, "a.b.example.com", 443, None, None).allowed());
        assert!(!check(&p, "example.com", 443, None, None).allowed());
        assert!(!check(&p, "badexample.com", 443, None, None).allowed());
        assert!(
            !check(&p, "allowed.com", 22, None, None).allowed(),
            "default ports are 80 and 443"
        );
        assert_eq!(p.allows_name("x.example.com"), Some("w".into()));
        assert_eq!(p.allows_name("data.allowed.com"), None);
    }

    #[test]
    fn ports_methods_paths() {
        let p = policy(
            r#"{"rules":[{"id":"api","domain":"api.test","ports":[8443],"methods":["GET","POST"],"paths":["/v1/"]}]}"#,
        );
        assert_eq!(
            check(&p, "api.test", 8443, Some("POST"), Some("/v1/x")),
            Decision::Allow { rule: "api".into() }
        );
        let deny = |d: Decision| match d {
            Decision::Deny { reason } => reason,
            d => panic!("allowed: {d:?}"),
        };
        assert!(deny(check(&p, "api.test", 443, Some("GET"), Some("/v1/"))).contains("port 443"));
        assert!(
            deny(check(&p, "api.test", 8443, Some("DELETE"), Some("/v1/")))
                .contains("method DELETE")
        );
        assert!(deny(check(&p, "api.test", 8443, Some("GET"), Some("/v2/"))).contains("path"));
        assert!(deny(check(&p, "api.test", 8443, None, None)).contains("interception"));
        assert!(
            deny(check(&p, "other.test", 8443, None, None))
                .contains("not in the sandbox's allowlist")
        );
    }

    #[test]
    fn ambiguous_paths() {
        for p in [
            "/repos/myorg/../../otherorg/x",
            "/repos/myorg/..",
            "/repos/myorg/./x",
            "/repos/myorg/%2e%2e/otherorg",
            "/repos/myorg/%2E%2E/otherorg",
            "/repos/myorg/.%2e/otherorg",
            "/repos/myorg/%2E./otherorg",
            "/repos/myorg/%2e/x",
            "/repos/myorg/..;jsessionid=1/otherorg",
            "/repos/myorg%2f..%2fotherorg",
            "/repos/myorg/x%2Fy",
            "/repos/myorg\\..\\otherorg",
            "/repos/myorg/%5c..%5cotherorg",
        ] {
            assert!(ambiguous_path(p), "{p}");
        }
        for p in [
            "/",
            "/repos/myorg/x",
            "/repos/myorg/...",
            "/repos/myorg/..x/.y",
            "/repos/myorg/file.tar.gz",
            "/repos/myorg/%2e%2ex",
            "/a//b",
        ] {
            assert!(!ambiguous_path(p), "{p}");
        }
    }

    #[test]
    fn path_rules_refuse_dot_segments_and_encoded_slashes() {
        let p = policy(
            r#"{"rules":[{"id":"gh","domain":"api.test","paths":["/repos/myorg/"]},{"id":"any","domain":"free.test"}]}"#,
        );
        assert!(check(&p, "api.test", 443, Some("GET"), Some("/repos/myorg/x")).allowed());
        for path in [
            "/repos/myorg/../../otherorg/x",
            "/repos/myorg/%2e%2e/%2E%2E/otherorg/x",
            "/repos/myorg/..%2f..%2fotherorg/x",
            "/repos/myorg/..\\..\\otherorg/x",
        ] {
            match check(&p, "api.test", 443, Some("GET"), Some(path)) {
                Decision::Deny { reason } => assert!(
                    reason.contains(
                        "ambiguous path (dot segments or encoded slashes) not allowed by rule gh"
                    ),
                    "{path}: {reason}"
                ),
                d => panic!("{path} allowed: {d:?}"),
            }
        }
        // A rule without paths does not care how the path reads.
        assert!(check(&p, "free.test", 443, Some("GET"), Some("/a/../b")).allowed());
    }

    #[test]
    fn ip_literals_need_cidr_rules() {
        let p =
            policy(r#"{"rules":[{"domain":"*"},{"id":"lan","cidr":"192.0.2.0/24","ports":[80]}]}"#);
        assert!(check(&p, "anything.example", 443, None, None).allowed());
        assert!(!check(&p, "198.51.100.7", 443, None, None).allowed());
        assert!(check(&p, "192.0.2.9", 80, None, None).allowed());
        assert!(!check(&p, "[::1]", 80, None, None).allowed());
        for disguised in ["2130706433", "0x7f.1", "127.1"] {
            assert!(Host::parse(disguised).is_err(), "{disguised}");
        }
        assert_eq!(p.allows_name("1.2.3.4"), None);
    }

    #[test]
    fn special_ranges() {
        for ip in [
            "10.1.2.3",
            "127.0.0.1",
            "169.254.169.254",
            "100.100.100.200",
            "192.168.1.1",
            "172.16.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(is_special(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(!is_special(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn invalid_policies() {
        for bad in [
            r#"{"rules":[{"domain":"a.com","cidr":"10.0.0.0/8"}]}"#,
            r#"{"rules":[{}]}"#,
            r#"{"rules":[{"domain":"bad domain"}]}"#,
            r#"{"rules":[{"domain":"a.com","paths":["v1"]}]}"#,
        ] {
            let p: Policy = serde_json::from_str(bad).expect("json");
            assert!(p.validate().is_err(), "{bad}");
        }
    }

    fn injection(domain: &str, real: &str, placeholder: &str) -> Injection {
        Injection {
            secret: "tok".into(),
            domain: domain.into(),
            path_prefix: Some("/v1/".into()),
            header: http::header::AUTHORIZATION,
            value: format!("Bearer {real}"),
            real: real.into(),
            placeholder: placeholder.into(),
        }
    }

    #[test]
    fn injections_validate_match_and_hide_values() {
        let store = PolicyStore::new(Arc::new(StaticLookup::default()));
        let good = injection("*.api.test", "real-Secret-123", "placeholder-456");
        assert!(good.matches("x.api.test", "/v1/chat"));
        assert!(!good.matches("x.api.test", "/v2/chat"));
        assert!(!good.matches("api.test", "/v1/chat"));
        // Upstream would normalise these out of /v1/: no credential for them.
        for path in ["/v1/../v2/chat", "/v1/%2e%2e/v2/chat", "/v1/..%2Fv2/chat"] {
            assert!(!good.matches("x.api.test", path), "{path}");
        }
        let shown = format!("{good:?}");
        assert!(!shown.contains("real-Secret") && !shown.contains("placeholder-456"));
        store.set_injections("sb", vec![good]).expect("valid");
        let inj = store.injections("sb").expect("set");
        assert!(!inj.scanner.scan(b"x real-Secret-123 y").is_empty());
        assert!(
            !inj.scanner.scan(b"cGxhY2Vob2xkZXItNDU2").is_empty(),
            "base64"
        );
        for bad in [
            injection("*", "real-Secret-123", "placeholder-456"),
            injection("bad domain", "real-Secret-123", "placeholder-456"),
            injection("api.test", "short", "placeholder-456"),
            injection("api.test", "same-value-1", "same-value-1"),
        ] {
            assert!(store.set_injections("sb", vec![bad]).is_err());
        }
        // A failed update keeps the previous set; remove() clears it.
        assert!(store.injections("sb").is_some());
        store.remove("sb");
        assert!(store.injections("sb").is_none());
    }

    #[test]
    fn passthrough_patterns() {
        let p = policy(r#"{"rules":[],"passthrough":["pinned.test","*.bank.test"]}"#);
        assert!(p.passes_through("PINNED.test."));
        assert!(p.passes_through("www.bank.test"));
        assert!(!p.passes_through("bank.test"));
        let bad: Policy = serde_json::from_str(r#"{"passthrough":["not a name"]}"#).expect("json");
        assert!(bad.validate().is_err());
        assert_eq!(
            serde_json::to_string(&Policy::default()).expect("json"),
            r#"{"rules":[]}"#
        );
    }

    #[test]
    fn store_updates_apply_immediately() {
        let peer: IpAddr = "10.9.9.2".parse().expect("ip");
        let lookup = StaticLookup([(peer, "sb1".to_string())].into_iter().collect());
        let store = PolicyStore::new(Arc::new(lookup));
        let (id, p) = store.for_peer(peer).expect("known peer");
        assert_eq!(id, "sb1");
        assert!(p.rules.is_empty());
        store
            .set("sb1", policy(r#"{"rules":[{"domain":"a.test"}]}"#))
            .expect("set");
        assert_eq!(store.for_peer(peer).map(|(_, p)| p.rules.len()), Some(1));
        assert!(store.for_peer("10.9.9.3".parse().expect("ip")).is_none());
        assert!(
            store
                .set(
                    "sb1",
                    Policy {
                        rules: vec![Rule::default()],
                        ..Policy::default()
                    }
                )
                .is_err()
        );
    }
}
