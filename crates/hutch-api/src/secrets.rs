//! Team secrets: values the egress gateway injects into requests so agents never hold them.
//! Responses carry metadata only; a value goes in (create, rotate) and never comes back out.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Longest secret value, in bytes.
pub const MAX_SECRET_VALUE_BYTES: usize = 64 * 1024;
/// Longest secret name, in characters.
pub const MAX_SECRET_NAME_LEN: usize = 128;
/// Longest description, in bytes.
pub const MAX_SECRET_DESCRIPTION_BYTES: usize = 1024;

/// Whether `name` is a valid secret name: 1-128 of `A-Z a-z 0-9 _ . -`, starting with a letter,
/// a digit or `_` (so it never reads as a flag or a relative path).
pub fn is_valid_secret_name(name: &str) -> bool {
    let ok_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_SECRET_NAME_LEN
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes.iter().all(|&b| ok_char(b))
}

/// A secret's metadata (the value is never returned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Secret {
    /// Name, unique within the team.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Domains the value may be injected into by the egress gateway (exact or
    /// `*.example.com`). Empty: the secret cannot be bound to any sandbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    pub created_at: DateTime<Utc>,
    /// When the value or the description last changed.
    pub updated_at: DateTime<Utc>,
}

/// `POST /v1/secrets`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecret {
    /// `[A-Za-z0-9_.-]`, 1-128 characters, not starting with `.` or `-`.
    pub name: String,
    /// The secret value (1 byte to 64 KiB). Write-only.
    #[schema(write_only)]
    pub value: String,
    /// Up to 1 KiB of free text. Must not contain the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Domains the value may be sent to (exact or `*.example.com`, at most 32). A sandbox's
    /// credential binding must name one of them: whoever can edit a sandbox's network cannot
    /// send the value anywhere else (e.g. to a server that echoes it back).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// `PUT /v1/secrets/{name}`: rotate the value.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSecret {
    /// The new value (1 byte to 64 KiB). Write-only.
    #[schema(write_only)]
    pub value: String,
    /// A new description (`""` clears it); omitted keeps the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New allowed hosts; omitted keeps the current ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
}

// Hand-written so a value can never reach a log line through `{:?}`.
impl fmt::Debug for CreateSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateSecret")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .field("description", &self.description)
            .field("hosts", &self.hosts)
            .finish()
    }
}

impl fmt::Debug for UpdateSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateSecret")
            .field("value", &"<redacted>")
            .field("description", &self.description)
            .field("hosts", &self.hosts)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["OPENAI_API_KEY", "a", "_x", "gh.token-2", &"a".repeat(128)] {
            assert!(is_valid_secret_name(ok), "{ok}");
        }
        for bad in ["", ".x", "-x", "a b", "a/b", "é", &"a".repeat(129), ".."] {
            assert!(!is_valid_secret_name(bad), "{bad}");
        }
    }

    #[test]
    fn debug_redacts_values() {
        let c = CreateSecret {
            name: "N".into(),
            value: "hunter2".into(),
            description: None,
            hosts: Vec::new(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let u = UpdateSecret {
            value: "hunter2".into(),
            description: None,
            hosts: None,
        };
        assert!(!format!("{u:?}").contains("hunter2"));
    }
}
