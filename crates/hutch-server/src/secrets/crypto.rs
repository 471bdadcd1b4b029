//! AES-256-GCM sealing with a random 96-bit nonce per message.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use crate::error::Error;

/// Length of a nonce in bytes.
pub const NONCE_LEN: usize = 12;

/// A sealed message: the nonce it was sealed with and the ciphertext (tag appended).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Random per message; store it next to the ciphertext.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the 16-byte authentication tag.
    pub ciphertext: Vec<u8>,
}

fn cipher(key: &[u8; 32]) -> Result<Aes256Gcm, Error> {
    Aes256Gcm::new_from_slice(key).map_err(|_| Error::Crypto("invalid key length".into()))
}

/// Encrypts `plaintext` under `key`, binding `aad` (associated data that must be presented again
/// to decrypt, e.g. who the value belongs to).
pub fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Result<Sealed, Error> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let ciphertext = cipher(key)?
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| Error::Crypto("encryption failed".into()))?;
    let mut out = [0u8; NONCE_LEN];
    out.copy_from_slice(nonce.as_slice());
    Ok(Sealed {
        nonce: out,
        ciphertext,
    })
}

/// Decrypts and authenticates. Any mismatch (key, nonce, associated data, a flipped bit) is an
/// error, never garbage.
pub fn open(
    key: &[u8; 32],
    nonce: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    if nonce.len() != NONCE_LEN {
        return Err(Error::Crypto("malformed nonce".into()));
    }
    cipher(key)?
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| Error::Crypto("decryption failed: wrong key or altered data".into()))
}

/// The associated data of a team secret: a version tag, then the team id and the name, each
/// length-prefixed so no two (team, name) pairs encode alike.
pub fn secret_aad(team_id: &str, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + team_id.len() + name.len());
    aad.extend_from_slice(b"hutch-secret-v1\0");
    for part in [team_id, name] {
        aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = [7u8; 32];
        let aad = secret_aad("team-a", "N");
        let a = seal(&key, &aad, b"hunter2").unwrap();
        let b = seal(&key, &aad, b"hunter2").unwrap();
        assert_ne!(a.nonce, b.nonce, "fresh nonce per message");
        assert_ne!(a.ciphertext, b.ciphertext);
        assert_eq!(
            open(&key, &a.nonce, &aad, &a.ciphertext)
                .unwrap()
                .as_slice(),
            b"hunter2"
        );
        assert!(open(&[8u8; 32], &a.nonce, &aad, &a.ciphertext).is_err());
        assert!(open(&key, &b.nonce, &aad, &a.ciphertext).is_err());
        assert!(open(&key, &a.nonce, &secret_aad("team-b", "N"), &a.ciphertext).is_err());
        assert!(open(&key, &a.nonce, &secret_aad("team-a", "M"), &a.ciphertext).is_err());
        assert!(open(&key, &a.nonce[..8], &aad, &a.ciphertext).is_err());
        let mut flipped = a.ciphertext.clone();
        flipped[0] ^= 1;
        assert!(open(&key, &a.nonce, &aad, &flipped).is_err());
        // Length prefixes: moving characters between team and name changes the data.
        assert_ne!(secret_aad("ab", "c"), secret_aad("a", "bc"));
    }
}
