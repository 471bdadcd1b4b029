//! Random identifiers.

use rand::Rng;
use rand::distributions::Alphanumeric;

const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// `prefix` + `n` random lowercase alphanumerics.
pub fn lower_id(prefix: &str, n: usize) -> String {
    let mut rng = rand::thread_rng();
    let mut s = String::with_capacity(prefix.len() + n);
    s.push_str(prefix);
    for _ in 0..n {
        s.push(char::from(LOWER_ALNUM[rng.gen_range(0..LOWER_ALNUM.len())]));
    }
    s
}

/// A sandbox id: `sb-` + 12 lowercase alphanumerics.
pub fn sandbox_id() -> String {
    lower_id("sb-", 12)
}

/// A team id: `team-` + 12 lowercase alphanumerics.
pub fn team_id() -> String {
    lower_id("team-", 12)
}

/// An API key id: `key-` + 12 lowercase alphanumerics.
pub fn key_id() -> String {
    lower_id("key-", 12)
}

/// A random base62 string of `n` characters (from the OS-seeded CSPRNG).
pub fn base62(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// Whether `s` looks like a sandbox id.
pub fn is_sandbox_id(s: &str) -> bool {
    s.strip_prefix("sb-")
        .is_some_and(|r| r.len() == 12 && r.bytes().all(|b| LOWER_ALNUM.contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let id = sandbox_id();
        assert!(is_sandbox_id(&id), "{id}");
        assert!(!is_sandbox_id("sb-ABC"));
        assert_eq!(base62(43).len(), 43);
        assert_ne!(sandbox_id(), sandbox_id());
    }
}
