//! Sandbox networking on the wire: the network spec (mode, allowlist, credential injection),
//! the egress log and access requests (approvals).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Network settings of a sandbox (`POST /v1/sandboxes` `network`, `PUT …/network`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// `none` (only loopback, the default) or `allowlist` (egress only through Hutch's gateway,
    /// to the destinations in `allow`).
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Allowed destinations. A string is a domain rule (`api.example.com`, `*.example.com`, or
    /// `*` for any public domain name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<AllowRule>,
    /// Secrets the gateway puts on the wire for specific hosts; the sandbox only sees placeholders.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<CredentialRule>,
    /// Domain patterns whose TLS is passed through without interception (no DLP, no
    /// method/path rules, no credential injection for them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passthrough: Vec<String>,
}

fn default_mode() -> String {
    "none".into()
}

impl Default for NetworkSpec {
    fn default() -> Self {
        NetworkSpec {
            mode: default_mode(),
            allow: Vec::new(),
            credentials: Vec::new(),
            passthrough: Vec::new(),
        }
    }
}

impl NetworkSpec {
    /// Whether the sandbox has a network interface (any mode but `none`).
    pub fn is_networked(&self) -> bool {
        self.mode != "none"
    }
}

/// One allowlist entry: a bare domain pattern or a full rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum AllowRule {
    /// A domain pattern with the default ports (80, 443).
    Domain(String),
    /// A full rule.
    Rule(AllowRuleSpec),
}

/// A full allowlist rule. Exactly one of `domain` and `cidr`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowRuleSpec {
    /// Name shown in decisions, logs and 403s (default `rules[<index>]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `api.example.com`, `*.example.com` (names below it) or `*` (any domain name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Explicit addresses (`203.0.113.0/24`): the only way to allow IP-literal destinations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// Allowed ports (default 80 and 443).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Allowed HTTP methods (default any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Allowed URL path prefixes (default any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

/// Binds a registered secret to a host: requests to `host` (and `path_prefix`) get header
/// `header` set to `template` with `{secret}` replaced by the secret's value. The sandbox gets
/// the placeholder in environment variable `env`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialRule {
    /// Name of a secret of the team (`/v1/secrets`).
    pub secret: String,
    /// Domain the credential is for (exact or `*.example.com`); must also be allowed.
    pub host: String,
    /// Only requests under this path prefix get the credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Header to set (default `Authorization`).
    #[serde(default = "default_header")]
    pub header: String,
    /// Header value; `{secret}` is replaced (default `Bearer {secret}`).
    #[serde(default = "default_template")]
    pub template: String,
    /// Environment variable that receives the placeholder (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// The placeholder the sandbox sees instead of the secret (set by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<String>,
}

fn default_header() -> String {
    "Authorization".into()
}

fn default_template() -> String {
    "Bearer {secret}".into()
}

/// One request (or connection, or DNS query) a sandbox made through the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EgressEntry {
    /// Position in the sandbox's log (the pagination cursor).
    pub seq: i64,
    pub sandbox_id: String,
    pub time: DateTime<Utc>,
    /// `http`, `https` (intercepted), `tls` (passed through), `connect` or `dns`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    pub host: String,
    pub port: u16,
    /// URL path with secrets redacted (never the query string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// `allow` or `deny`.
    pub decision: String,
    /// The rule that allowed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why it was denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// State of an access request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    Pending,
    Approved,
    Denied,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => ApprovalState::Pending,
            "approved" => ApprovalState::Approved,
            "denied" => ApprovalState::Denied,
            _ => return None,
        })
    }
}

/// A sandbox's request for more network access, for a human to decide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Approval {
    pub id: String,
    pub sandbox_id: String,
    /// Requested domain (exact or `*.example.com`).
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Requested ports (default 80 and 443).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Why the agent needs it.
    pub justification: String,
    pub state: ApprovalState,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    /// Operator's note on the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The rule added to the sandbox's allowlist when approved (possibly narrowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted: Option<AllowRuleSpec>,
}

/// What an agent sends to `http://hutch.internal/v1/access-requests`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    pub justification: String,
}

/// `POST /v1/approvals/{id}/approve`: optionally narrow what is granted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    /// Grant this domain instead (must be covered by the requested one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Grant only this path prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Grant only these methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `POST /v1/approvals/{id}/deny`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DenyRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `GET /v1/sandboxes/{id}/network`: the spec and the sandbox's link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NetworkInfo {
    pub network: NetworkSpec,
    /// The sandbox's address on `eth0` (networked sandboxes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The gateway: the sandbox's route, DNS server and proxy host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// `HTTP_PROXY` of the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
}
