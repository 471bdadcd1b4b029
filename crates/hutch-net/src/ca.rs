//! The per-installation certificate authority the gateway intercepts TLS with: sandboxes
//! trust its certificate, and the gateway mints a certificate for each host they reach.
//!
//! On disk (created on first use): `ca.crt` (PEM, 0644: it goes into every sandbox's trust
//! store) and `ca.key.enc` (the PKCS#8 private key encrypted with AES-256-GCM under the
//! operator's 32-byte key, 0600). A key file that does not decrypt is an error, never a reason
//! to make a new CA.
//!
//! Leaf certificates all share one key pair made at start (only a signature per host, so
//! minting takes well under a millisecond) and are cached per host.

use crate::error::IoContext;
use crate::{Error, Result};
use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// File name of the CA certificate.
pub const CERT_FILE: &str = "ca.crt";
/// File name of the encrypted CA key.
pub const KEY_FILE: &str = "ca.key.enc";
/// Leaf certificates kept at most.
pub const LEAF_CACHE: usize = 1024;

/// Start of the encrypted key file (format and version).
const KEY_MAGIC: &[u8; 8] = b"HUTCHCA1";
/// Binds the ciphertext to its purpose.
const KEY_AAD: &[u8] = b"hutch ca.key.enc v1";
const NONCE_LEN: usize = 12;
/// CA validity.
const CA_DAYS: i64 = 3650;
/// Leaf validity; leaves are re-minted after half of it.
const LEAF_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Clock skew allowed for in the leaves' start of validity.
const BACKDATE: Duration = Duration::from_secs(3600);

/// The certificate authority. Share it in an `Arc`.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    /// The key pair of every leaf, and its rustls form.
    leaf_key: KeyPair,
    leaf_signer: Arc<dyn rustls::sign::SigningKey>,
    cache: Mutex<LeafCache>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct LeafCache {
    map: HashMap<String, (Arc<CertifiedKey>, Instant)>,
    /// Insertion order, oldest first, for eviction.
    order: VecDeque<String>,
}

fn ca_err(message: impl Into<String>) -> Error {
    Error::Ca(message.into())
}

impl Ca {
    /// Load the CA from `dir`, or create it there if it does not exist yet. `key` encrypts the
    /// private key at rest; a different key than the one it was created with is an error.
    pub fn load_or_create(dir: &Path, key: &[u8; 32]) -> Result<Ca> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                let pem = std::fs::read_to_string(&cert_path)
                    .ctx(|| format!("read {}", cert_path.display()))?;
                let sealed =
                    std::fs::read(&key_path).ctx(|| format!("read {}", key_path.display()))?;
                let pkcs8 = open_key(&sealed, key)?;
                Ca::from_parts(pem, &pkcs8)
            }
            (true, false) => Err(ca_err(format!(
                "{} exists without {}: restore the key file or remove both to make a new CA \
                 (sandboxes must then trust the new certificate)",
                cert_path.display(),
                key_path.display()
            ))),
            // A key without a certificate is a creation cut short: the CA was never handed
            // out, so it is made anew.
            (false, _) => Ca::create(dir, key),
        }
    }

    fn create(dir: &Path, key: &[u8; 32]) -> Result<Ca> {
        std::fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| ca_err(format!("generate CA key: {e}")))?;
        let mut id = [0u8; 4];
        OsRng.fill_bytes(&mut id);
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("Hutch sandbox CA {}", hex::encode(id)),
        );
        dn.push(DnType::OrganizationName, "Hutch");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + time::Duration::days(CA_DAYS);
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&ca_key)
            .map_err(|e| ca_err(format!("self-sign CA: {e}")))?;
        let pem = cert.pem();
        let sealed = seal_key(ca_key.serialized_der(), key)?;
        // Key first: a certificate on disk always has its key next to it.
        write_file(&dir.join(KEY_FILE), &sealed, 0o600)?;
        write_file(&dir.join(CERT_FILE), pem.as_bytes(), 0o644)?;
        tracing::info!(dir = %dir.display(), "created the sandbox CA");
        Ca::from_parts(pem, ca_key.serialized_der())
    }

    fn from_parts(pem: String, pkcs8: &[u8]) -> Result<Ca> {
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .map_err(|e| ca_err(format!("{CERT_FILE} is not a PEM certificate: {e}")))?;
        let cert_der: CertificateDer<'static> = der;
        let ca_key = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(pkcs8.to_vec()),
            &PKCS_ECDSA_P256_SHA256,
        )
        .map_err(|e| ca_err(format!("CA key: {e}")))?;
        // The certificate carries the key's public half (in its SubjectPublicKeyInfo).
        let public = ca_key.public_key_raw();
        if !cert_der.windows(public.len()).any(|w| w == public) {
            return Err(ca_err(format!("{KEY_FILE} does not belong to {CERT_FILE}")));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, ca_key)
            .map_err(|e| ca_err(format!("{CERT_FILE}: {e}")))?;
        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| ca_err(format!("generate leaf key: {e}")))?;
        let leaf_signer = rustls::crypto::ring::sign::any_ecdsa_type(&PrivateKeyDer::Pkcs8(
            PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
        ))
        .map_err(|e| ca_err(format!("leaf key: {e}")))?;
        Ok(Ca {
            cert_pem: pem,
            cert_der,
            issuer,
            leaf_key,
            leaf_signer,
            cache: Mutex::new(LeafCache::default()),
        })
    }

    /// The CA certificate, PEM: what sandboxes must trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The certificate and key for `host` (a DNS name), from the cache or freshly minted.
    pub fn leaf(&self, host: &str) -> Result<Arc<CertifiedKey>> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let fresh = LEAF_VALIDITY / 2;
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((leaf, at)) = cache.map.get(&host)
                && at.elapsed() < fresh
            {
                return Ok(leaf.clone());
            }
        }
        let leaf = Arc::new(self.mint(&host)?);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache
            .map
            .insert(host.clone(), (leaf.clone(), Instant::now()))
            .is_none()
        {
            cache.order.push_back(host);
        }
        while cache.map.len() > LEAF_CACHE {
            match cache.order.pop_front() {
                Some(old) => {
                    cache.map.remove(&old);
                }
                None => break,
            }
        }
        Ok(leaf)
    }

    /// Mint a certificate for `host` (no cache).
    pub fn mint(&self, host: &str) -> Result<CertifiedKey> {
        let name = rcgen::string::Ia5String::try_from(host)
            .map_err(|e| ca_err(format!("cannot certify {host:?}: {e}")))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::DnsName(name)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + LEAF_VALIDITY;
        // Leaves share a key: the serial must still differ between them.
        params.serial_number = Some(random_serial());
        let cert = params
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(|e| ca_err(format!("mint certificate for {host}: {e}")))?;
        Ok(CertifiedKey::new(
            vec![cert.der().clone()],
            self.leaf_signer.clone(),
        ))
    }
}

fn random_serial() -> SerialNumber {
    let mut serial = [0u8; 16];
    OsRng.fill_bytes(&mut serial);
    serial[0] &= 0x7f; // positive
    serial[0] |= 0x01; // and no leading zero byte to trim
    SerialNumber::from_slice(&serial)
}

/// `KEY_MAGIC || nonce || AES-256-GCM(pkcs8)`.
fn seal_key(pkcs8: &[u8], key: &[u8; 32]) -> Result<Vec<u8>> {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: pkcs8,
                aad: KEY_AAD,
            },
        )
        .map_err(|_| ca_err("encrypt CA key"))?;
    let mut out = Vec::with_capacity(KEY_MAGIC.len() + NONCE_LEN + sealed.len());
    out.extend_from_slice(KEY_MAGIC);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

fn open_key(data: &[u8], key: &[u8; 32]) -> Result<Vec<u8>> {
    let rest = data
        .strip_prefix(KEY_MAGIC.as_slice())
        .ok_or_else(|| ca_err(format!("{KEY_FILE} is not a Hutch CA key file")))?;
    if rest.len() <= NONCE_LEN {
        return Err(ca_err(format!("{KEY_FILE} is truncated")));
    }
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    Aes256Gcm::new(key.into())
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: KEY_AAD,
            },
        )
        .map_err(|_| {
            ca_err(format!(
                "{KEY_FILE} does not decrypt: wrong key, or the file is damaged"
            ))
        })
}

/// Write `data` to `path` with `mode`, atomically (temporary file, then rename).
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .ctx(|| format!("create {}", tmp.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .ctx(|| format!("write {}", tmp.display()))?;
    // The umask may have narrowed the mode (0644 for the certificate must stay readable).
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .ctx(|| format!("chmod {}", tmp.display()))?;
    std::fs::rename(&tmp, path).ctx(|| format!("rename to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn create_reload_wrong_key_and_leaves() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = [7u8; 32];
        let ca = Ca::load_or_create(dir.path(), &key).expect("create");
        let mode = |f: &str| {
            std::fs::metadata(dir.path().join(f))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(KEY_FILE), 0o600);
        assert_eq!(mode(CERT_FILE), 0o644);
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let again = Ca::load_or_create(dir.path(), &key).expect("reload");
        assert_eq!(again.cert_pem(), ca.cert_pem());
        let err = Ca::load_or_create(dir.path(), &[8u8; 32]).expect_err("wrong key");
        assert!(err.to_string().contains("does not decrypt"), "{err}");
        // Cached per host, distinct serials (shared key).
        let a = ca.leaf("a.test").expect("leaf");
        assert!(Arc::ptr_eq(&a, &ca.leaf("A.test.").expect("leaf")));
        let b = ca.leaf("b.test").expect("leaf");
        assert_ne!(a.cert[0], b.cert[0]);
        // Certificate without its key: refused, not replaced.
        std::fs::remove_file(dir.path().join(KEY_FILE)).expect("rm");
        assert!(Ca::load_or_create(dir.path(), &key).is_err());
    }

    #[test]
    fn cache_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::load_or_create(dir.path(), &[1u8; 32]).expect("create");
        for i in 0..LEAF_CACHE + 10 {
            ca.leaf(&format!("h{i}.test")).expect("leaf");
        }
        let cache = ca.cache.lock().expect("cache");
        assert_eq!(cache.map.len(), LEAF_CACHE);
        assert!(!cache.map.contains_key("h0.test"));
    }
}
