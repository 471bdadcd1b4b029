//! The secrets key: 32 bytes from `HUTCH_SECRETS_KEY` or `<data_dir>/secrets.key`, and the
//! purpose-bound subkeys derived from it with HKDF-SHA256.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::Error;

/// Environment variable holding the key (32 bytes as 64 hex digits or base64).
pub const KEY_ENV: &str = "HUTCH_SECRETS_KEY";
/// Name of the key file in the data directory, used when [`KEY_ENV`] is not set.
pub const KEY_FILE: &str = "secrets.key";

/// HKDF salt: fixed, so one master key always yields the same subkeys; labels separate uses.
const HKDF_SALT: &[u8] = b"hutch secrets key derivation v1";

/// 32 bytes of key material. Never printed: `{:?}` shows `SecretsKey(..)`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretsKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(..)")
    }
}

impl SecretsKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretsKey(Zeroizing::new(bytes))
    }

    /// A new random key (from the OS).
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, bytes.as_mut());
        SecretsKey(bytes)
    }

    /// Parses 32 bytes written as 64 hex digits or as base64 (standard or URL-safe alphabet,
    /// with or without padding). Surrounding whitespace is ignored. Errors never quote the text.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        let decoded: Option<Zeroizing<Vec<u8>>> =
            if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                hex::decode(text).ok().map(Zeroizing::new)
            } else {
                use base64::engine::general_purpose::{
                    STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
                };
                [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                    .iter()
                    .find_map(|engine| engine.decode(text).ok())
                    .map(Zeroizing::new)
            };
        let Some(decoded) = decoded else {
            return Err(bad_key("is neither 64 hex digits nor base64"));
        };
        let bytes: [u8; 32] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| bad_key(&format!("is {} bytes, not 32", decoded.len())))?;
        Ok(SecretsKey::from_bytes(bytes))
    }

    /// The key as 64 lowercase hex digits (the key file's format).
    fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0.as_ref()))
    }

    /// A 32-byte subkey for one purpose, named by `label` (HKDF-SHA256, fixed salt, `label` as
    /// info). Different labels give independent keys; use one label per kind of data, e.g.
    /// `"hutch/gateway/ca-key/v1"`.
    pub fn derive(&self, label: &str) -> Result<Zeroizing<[u8; 32]>, Error> {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), self.0.as_ref());
        let mut out = Zeroizing::new([0u8; 32]);
        hk.expand(label.as_bytes(), out.as_mut())
            .map_err(|_| Error::Crypto("key derivation failed".into()))?;
        Ok(out)
    }
}

fn bad_key(why: &str) -> Error {
    Error::Config {
        message: format!("{KEY_ENV} {why} (it must hold 32 bytes as 64 hex digits or base64)"),
    }
}

/// Where the key in use came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// [`KEY_ENV`] (or an explicit configuration value).
    Configured,
    /// An existing key file.
    File(PathBuf),
    /// A key file created by this start.
    Created(PathBuf),
}

/// The key to use: `configured` when given, else `<data_dir>/secrets.key`. A missing file is
/// created (32 random bytes, hex, 0600) only when `may_create` (no encrypted secrets exist yet:
/// a fresh key could not decrypt them). Fails closed on a file readable or writable by group or
/// others, a file that is not a regular file, or content that is not exactly 32 bytes.
pub fn load_or_create(
    data_dir: &Path,
    configured: Option<&SecretsKey>,
    may_create: bool,
) -> Result<(SecretsKey, KeySource), Error> {
    if let Some(key) = configured {
        return Ok((key.clone(), KeySource::Configured));
    }
    let path = data_dir.join(KEY_FILE);
    match std::fs::symlink_metadata(&path) {
        Ok(_) => read_key_file(&path).map(|k| (k, KeySource::File(path))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !may_create {
                return Err(Error::Config {
                    message: format!(
                        "{} is missing but the database holds encrypted secrets: restore the file \
                         or set {KEY_ENV} to the key they were written with",
                        path.display()
                    ),
                });
            }
            let key = SecretsKey::generate();
            let mut text = key.to_hex();
            text.push('\n');
            crate::auth::write_private(&path, text.as_bytes())?;
            Ok((key, KeySource::Created(path)))
        }
        Err(e) => Err(Error::io(format!("reading {}", path.display()))(e)),
    }
}

/// Reads and checks an existing key file.
pub fn read_key_file(path: &Path) -> Result<SecretsKey, Error> {
    let refuse = |why: String| Error::Config {
        message: format!("refusing to use {}: {why}", path.display()),
    };
    let link = std::fs::symlink_metadata(path)
        .map_err(Error::io(format!("reading {}", path.display())))?;
    if link.file_type().is_symlink() {
        return Err(refuse("it is a symbolic link".into()));
    }
    let mut file =
        std::fs::File::open(path).map_err(Error::io(format!("reading {}", path.display())))?;
    // Checked on the open file, so the checks and the read see the same inode.
    let meta = file
        .metadata()
        .map_err(Error::io(format!("reading {}", path.display())))?;
    if !meta.file_type().is_file() {
        return Err(refuse("it is not a regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(refuse(format!(
            "its mode {mode:04o} lets group or others access it (chmod 600 it)"
        )));
    }
    // A key file is 65 bytes; anything much larger is not one.
    if meta.len() > 1024 {
        return Err(refuse("it is not 32 bytes of key".into()));
    }
    let mut text = Zeroizing::new(String::new());
    file.read_to_string(&mut text)
        .map_err(|_| refuse("it is not text".into()))?;
    SecretsKey::parse(&text)
        .map_err(|_| refuse("it is not 32 bytes as 64 hex digits or base64".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_hex_and_base64() {
        let bytes: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        let want = SecretsKey::from_bytes(bytes);
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        for text in [hex::encode(bytes), hex::encode_upper(bytes), b64, b64url] {
            assert_eq!(SecretsKey::parse(&format!(" {text}\n")).unwrap(), want);
        }
        for bad in ["", "abc", &hex::encode([1u8; 31]), &hex::encode([1u8; 33])] {
            let e = SecretsKey::parse(bad).unwrap_err().to_string();
            assert!(e.contains(KEY_ENV), "{e}");
        }
        // The error never quotes the text.
        let e = SecretsKey::parse("not-a-key-zzzz").unwrap_err().to_string();
        assert!(!e.contains("zzzz"), "{e}");
        assert_eq!(format!("{want:?}"), "SecretsKey(..)");
    }

    #[test]
    fn derived_keys_are_independent_and_stable() {
        let k = SecretsKey::from_bytes([9; 32]);
        let a = k.derive("a").unwrap();
        assert_eq!(a, k.derive("a").unwrap());
        assert_ne!(a, k.derive("b").unwrap());
        assert_ne!(*a, [9; 32]);
        assert_ne!(a, SecretsKey::from_bytes([8; 32]).derive("a").unwrap());
    }

    #[test]
    fn key_file_is_created_private_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        assert!(load_or_create(dir.path(), None, false).is_err());
        assert!(!path.exists());
        let (k1, src) = load_or_create(dir.path(), None, true).unwrap();
        assert_eq!(src, KeySource::Created(path.clone()));
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 65);
        let (k2, src) = load_or_create(dir.path(), None, true).unwrap();
        assert_eq!(src, KeySource::File(path.clone()));
        assert_eq!(k1, k2);

        let configured = SecretsKey::from_bytes([1; 32]);
        let (k3, src) = load_or_create(dir.path(), Some(&configured), false).unwrap();
        assert_eq!((k3, src), (configured, KeySource::Configured));

        for mode in [0o640, 0o604, 0o644, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = load_or_create(dir.path(), None, true)
                .unwrap_err()
                .to_string();
            assert!(e.contains("mode"), "{e}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(load_or_create(dir.path(), None, true).is_ok());

        std::fs::remove_file(&path).unwrap();
        crate::auth::write_private(&path, hex::encode([1u8; 16]).as_bytes()).unwrap();
        let e = load_or_create(dir.path(), None, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("32 bytes"), "{e}");

        std::fs::remove_file(&path).unwrap();
        let real = dir.path().join("real.key");
        crate::auth::write_private(&real, hex::encode([1u8; 32]).as_bytes()).unwrap();
        std::os::unix::fs::symlink(&real, &path).unwrap();
        let e = load_or_create(dir.path(), None, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("symbolic link"), "{e}");
    }
}
