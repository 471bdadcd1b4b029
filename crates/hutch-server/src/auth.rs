//! API keys and the [`Caller`] extractor.
//!
//! A key is `hk_` + 43 base62 characters (≈256 bits) shown once. The store keeps only its
//! HMAC-SHA-256 under the server secret (`<data_dir>/server.secret`, 0600) and an 8-character
//! prefix for display. Every request looks the key up again, so a revocation applies at once.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::Utc;
use hmac::{Hmac, Mac};
use hutch_api::sandbox::{ApiKey, CreatedApiKey};
use hutch_store::{Store, StoredKey};
use sha2::Sha256;

use crate::error::{AppError, Error};
use crate::ids;
use crate::state::AppState;

/// Prefix of every API key.
pub const KEY_PREFIX: &str = "hk_";

/// The server secret that keys are hashed with.
#[derive(Clone)]
pub struct KeyHasher {
    secret: Vec<u8>,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(..)")
    }
}

impl KeyHasher {
    /// A hasher with an explicit secret.
    pub fn new(secret: Vec<u8>) -> Self {
        KeyHasher { secret }
    }

    /// Loads `<data_dir>/server.secret`, creating it (0600, 32 random bytes) when missing.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, Error> {
        let path = data_dir.join("server.secret");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let secret = hex::decode(text.trim()).map_err(|_| Error::Config {
                    message: format!("{} is not hex", path.display()),
                })?;
                if secret.len() < 16 {
                    return Err(Error::Config {
                        message: format!("{} is too short", path.display()),
                    });
                }
                Ok(KeyHasher { secret })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret: [u8; 32] = rand::random();
                write_private(&path, hex::encode(secret).as_bytes())?;
                Ok(KeyHasher {
                    secret: secret.to_vec(),
                })
            }
            Err(e) => Err(Error::io(format!("reading {}", path.display()))(e)),
        }
    }

    /// Hex HMAC-SHA-256 of a key.
    pub fn hash(&self, key: &str) -> String {
        // new_from_slice accepts any key length for HMAC.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.secret) else {
            return String::new();
        };
        mac.update(key.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// Writes a new file readable only by its owner (0600), replacing any previous one.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), Error> {
    let ctx = || format!("writing {}", path.display());
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(Error::io(ctx()))?;
    f.write_all(contents).map_err(Error::io(ctx()))?;
    f.sync_all().map_err(Error::io(ctx()))?;
    std::fs::rename(&tmp, path).map_err(Error::io(ctx()))?;
    Ok(())
}

/// Generates a new key string.
pub fn generate_key() -> String {
    format!("{KEY_PREFIX}{}", ids::base62(43))
}

/// Creates and stores a key; returns it with its secret (shown once).
pub async fn create_key(
    store: &dyn Store,
    hasher: &KeyHasher,
    team_id: &str,
    name: &str,
    admin: bool,
) -> Result<CreatedApiKey, hutch_store::Error> {
    let secret = generate_key();
    let meta = ApiKey {
        id: ids::key_id(),
        name: name.to_owned(),
        team_id: team_id.to_owned(),
        admin,
        prefix: secret.chars().take(8).collect(),
        created_at: Utc::now(),
        revoked_at: None,
    };
    store
        .create_key(&StoredKey {
            key: meta.clone(),
            hash: hasher.hash(&secret),
        })
        .await?;
    Ok(CreatedApiKey { meta, key: secret })
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Id of the key used.
    pub key_id: String,
    /// Team every object of the request belongs to.
    pub team_id: String,
    /// Whether the key may use admin routes.
    pub admin: bool,
}

/// An authenticated admin caller (non-admin → 403).
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

fn presented_key(parts: &Parts) -> Option<&str> {
    if let Some(v) = parts.headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?.trim();
        let (scheme, token) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    parts
        .headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if let Some(c) = parts.extensions.get::<Caller>() {
            return Ok(c.clone());
        }
        let Some(key) = presented_key(parts) else {
            return Err(AppError::unauthorized("an API key is required"));
        };
        if !key.starts_with(KEY_PREFIX) || key.len() > 256 {
            return Err(AppError::unauthorized("invalid API key"));
        }
        let hash = state.hasher().hash(key);
        let found = state.store().key_by_hash(&hash).await?;
        let Some(found) = found.filter(|k| k.revoked_at.is_none()) else {
            return Err(AppError::unauthorized("invalid API key"));
        };
        let caller = Caller {
            key_id: found.id,
            team_id: found.team_id,
            admin: found.admin,
        };
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if !caller.admin {
            return Err(AppError::forbidden("this route needs an admin API key"));
        }
        Ok(Admin(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_file_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = KeyHasher::load_or_create(dir.path()).unwrap();
        let b = KeyHasher::load_or_create(dir.path()).unwrap();
        assert_eq!(a.hash("hk_x"), b.hash("hk_x"));
        assert_ne!(a.hash("hk_x"), a.hash("hk_y"));
        let mode = std::fs::metadata(dir.path().join("server.secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let key = generate_key();
        assert!(key.starts_with("hk_") && key.len() == 46);
    }
}
