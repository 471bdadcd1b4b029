//! Templates: a name for an ordered list of read-only layer directories, plus host directories
//! shown copy-on-write (the offline `base` template overlays the host's `/usr`).
//!
//! Layout: `<data>/templates/<name>/template.json` and `<data>/templates/<name>/rootfs/`.

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::state::SandboxRecord;

/// The name of the default template.
pub const BASE: &str = "base";
/// Bumped when the `base` skeleton changes, so existing installs rebuild it.
const BASE_VERSION: u32 = 2;

/// A template as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TemplateInfo {
    pub name: String,
    /// Bytes in the template's own layers (host directories it maps, like `base`'s `/usr`, are
    /// shared with the host and not counted).
    pub size_bytes: u64,
    pub created_at: DateTime<Utc>,
}

/// `template.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// Layer directories relative to the template directory, topmost first.
    pub layers: Vec<String>,
    /// Host directories overlaid (copy-on-write) at the same path in the sandbox.
    #[serde(default)]
    pub host_overlays: Vec<String>,
    /// Host directories bind-mounted read-only at the same path.
    #[serde(default)]
    pub host_binds: Vec<String>,
    #[serde(default)]
    pub base_version: u32,
    #[serde(default)]
    pub size_bytes: u64,
}

/// A resolved template: absolute layer paths.
pub(crate) struct Resolved {
    pub layers: Vec<PathBuf>,
    pub host_binds: Vec<String>,
    pub host_overlays: Vec<String>,
}

/// The template directory.
pub struct TemplateStore {
    dir: PathBuf,
    sandboxes_dir: PathBuf,
}

impl TemplateStore {
    pub(crate) fn new(dir: PathBuf, sandboxes_dir: PathBuf) -> Result<Self> {
        fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
        Ok(TemplateStore { dir, sandboxes_dir })
    }

    /// Whether a template exists.
    pub fn exists(&self, name: &str) -> bool {
        valid_name(name).is_ok() && self.dir.join(name).join("template.json").exists()
    }

    pub(crate) fn manifest(&self, name: &str) -> Result<Manifest> {
        valid_name(name).map_err(|_| Error::TemplateNotFound(name.to_string()))?;
        let data = fs::read(self.dir.join(name).join("template.json"))
            .map_err(|_| Error::TemplateNotFound(name.to_string()))?;
        serde_json::from_slice(&data).map_err(|e| Error::Io {
            context: format!("template {name} manifest"),
            source: io::Error::other(e),
        })
    }

    pub(crate) fn resolve(&self, name: &str) -> Result<Resolved> {
        let m = self.manifest(name)?;
        let base = self.dir.join(name);
        Ok(Resolved {
            layers: m.layers.iter().map(|l| base.join(l)).collect(),
            host_overlays: m.host_overlays,
            host_binds: m.host_binds,
        })
    }

    /// A regular file of template `name` at `rel` (e.g. `etc/ssl/certs/ca-certificates.crt`),
    /// from its topmost layer that has one. Symlinks are not followed (they would resolve against
    /// the host): a symlink there reads as absent.
    pub fn read_file(&self, name: &str, rel: &str) -> Result<Option<Vec<u8>>> {
        use std::os::unix::fs::OpenOptionsExt as _;
        // Files the server reads from a template are small (a CA bundle): cap what is read.
        const MAX: u64 = 8 << 20;
        let resolved = self.resolve(name)?;
        'layers: for layer in &resolved.layers {
            // No component may be a symlink: it would resolve against the host, not the
            // template's root.
            let mut dir = layer.clone();
            let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
            for part in &parts[..parts.len().saturating_sub(1)] {
                if *part == ".." || *part == "." {
                    return Ok(None);
                }
                dir.push(part);
                match fs::symlink_metadata(&dir) {
                    Ok(m) if m.file_type().is_dir() => {}
                    Ok(_) => return Ok(None),
                    Err(_) => continue 'layers,
                }
            }
            let path = layer.join(rel);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_file() && m.len() > MAX => return Ok(None),
                Ok(m) if m.file_type().is_file() => {
                    let mut f = fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&path)
                        .ctx(|| format!("open {}", path.display()))?;
                    let mut buf = Vec::new();
                    f.read_to_end(&mut buf)
                        .ctx(|| format!("read {}", path.display()))?;
                    return Ok(Some(buf));
                }
                Ok(_) => return Ok(None),
                Err(_) => continue,
            }
        }
        Ok(None)
    }

    /// All templates.
    pub fn list(&self) -> Result<Vec<TemplateInfo>> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.dir).ctx(|| format!("read {}", self.dir.display()))?;
        for e in rd.flatten() {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            if let Ok(m) = self.manifest(&name) {
                out.push(TemplateInfo {
                    name: m.name,
                    size_bytes: m.size_bytes,
                    created_at: m.created_at,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Sandboxes (by on-disk state) that use a template.
    pub fn in_use(&self, name: &str) -> usize {
        let Ok(rd) = fs::read_dir(&self.sandboxes_dir) else {
            return 0;
        };
        rd.flatten()
            .filter_map(|e| SandboxRecord::load(&e.path()))
            .filter(|r| r.template == name)
            .count()
    }

    /// Create (or rebuild, when outdated) the offline `base` template from the host's `/usr`.
    pub fn ensure_base(&self) -> Result<()> {
        if let Ok(m) = self.manifest(BASE) {
            if m.base_version == BASE_VERSION {
                return Ok(());
            }
            if self.in_use(BASE) > 0 {
                // Rebuilding under running sandboxes would pull their layers away; keep the old one.
                return Ok(());
            }
        }
        let tmp = self.tmp_dir()?;
        let rootfs = tmp.join("rootfs");
        build_base_skeleton(&rootfs)?;
        let manifest = Manifest {
            name: BASE.into(),
            created_at: Utc::now(),
            layers: vec!["rootfs".into()],
            // /usr read-only and shared with the host (warm caches: the first exec in a new
            // sandbox is faster), /usr/local writable per sandbox for pip/npm installs.
            host_binds: vec!["/usr".into()],
            host_overlays: vec!["/usr/local".into()],
            base_version: BASE_VERSION,
            // The host directories it maps are shared with the host, not counted (walking /usr
            // would add most of a second to every first start).
            size_bytes: dir_size(&rootfs),
        };
        self.install(&tmp, &manifest, true)?;
        Ok(())
    }

    /// Import a template from a `.tar` or `.tar.gz` stream (gzip detected by its magic bytes).
    pub fn import_tar(&self, name: &str, reader: impl Read) -> Result<TemplateInfo> {
        valid_name(name)?;
        if self.exists(name) {
            return Err(Error::TemplateExists(name.into()));
        }
        let tmp = self.tmp_dir()?;
        let rootfs = tmp.join("rootfs");
        let res = (|| {
            fs::create_dir(&rootfs).ctx(|| format!("create {}", rootfs.display()))?;
            let mut buf = BufReader::new(reader);
            let gz = buf
                .fill_buf()
                .ctx(|| "read template archive".into())?
                .starts_with(&[0x1f, 0x8b]);
            let reader: Box<dyn Read> = if gz {
                Box::new(flate2::read::GzDecoder::new(buf))
            } else {
                Box::new(buf)
            };
            let mut ar = tar::Archive::new(reader);
            ar.set_preserve_permissions(true);
            ar.set_preserve_ownerships(true);
            ar.set_unpack_xattrs(false);
            ar.set_overwrite(true);
            // unpack() refuses entries that would escape the destination.
            ar.unpack(&rootfs).map_err(|e| Error::Invalid {
                field: "archive",
                message: format!("cannot unpack: {}", chain(&e)),
            })
        })();
        if let Err(e) = res {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        self.finish_import(name, tmp, rootfs)
    }

    /// Import a template by copying a root filesystem directory.
    pub fn import_dir(&self, name: &str, src: &Path) -> Result<TemplateInfo> {
        valid_name(name)?;
        if self.exists(name) {
            return Err(Error::TemplateExists(name.into()));
        }
        if !src.is_dir() {
            return Err(Error::Invalid {
                field: "path",
                message: format!("{} is not a directory", src.display()),
            });
        }
        let tmp = self.tmp_dir()?;
        let rootfs = tmp.join("rootfs");
        if let Err(e) = copy_tree(src, &rootfs) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        self.finish_import(name, tmp, rootfs)
    }

    fn finish_import(&self, name: &str, tmp: PathBuf, rootfs: PathBuf) -> Result<TemplateInfo> {
        let manifest = Manifest {
            name: name.into(),
            created_at: Utc::now(),
            layers: vec!["rootfs".into()],
            host_overlays: Vec::new(),
            host_binds: Vec::new(),
            base_version: 0,
            size_bytes: dir_size(&rootfs),
        };
        self.install(&tmp, &manifest, false)?;
        Ok(TemplateInfo {
            name: name.into(),
            size_bytes: manifest.size_bytes,
            created_at: manifest.created_at,
        })
    }

    /// Delete a template. Refused while a sandbox uses it, and for `base`.
    pub fn delete(&self, name: &str) -> Result<()> {
        if !self.exists(name) {
            return Err(Error::TemplateNotFound(name.into()));
        }
        if name == BASE {
            return Err(Error::Invalid {
                field: "name",
                message: "the base template cannot be deleted".into(),
            });
        }
        let n = self.in_use(name);
        if n > 0 {
            return Err(Error::TemplateInUse(name.into(), n));
        }
        // Rename first so a half-deleted template is never visible under its name.
        let doomed = self.tmp_dir()?;
        fs::remove_dir(&doomed).ctx(|| "prepare delete".into())?;
        fs::rename(self.dir.join(name), &doomed).ctx(|| format!("delete template {name}"))?;
        fs::remove_dir_all(&doomed).ctx(|| format!("delete template {name}"))
    }

    fn tmp_dir(&self) -> Result<PathBuf> {
        let tmp = self
            .dir
            .join(format!(".tmp-{}", hex::encode(rand::random::<[u8; 6]>())));
        fs::create_dir(&tmp).ctx(|| format!("create {}", tmp.display()))?;
        Ok(tmp)
    }

    fn install(&self, tmp: &Path, manifest: &Manifest, replace: bool) -> Result<()> {
        let data = serde_json::to_vec_pretty(manifest)
            .map_err(io::Error::other)
            .ctx(|| "encode manifest".into())?;
        fs::write(tmp.join("template.json"), data).ctx(|| "write manifest".into())?;
        let dest = self.dir.join(&manifest.name);
        if replace && dest.exists() {
            let old = self.tmp_dir()?;
            fs::remove_dir(&old).ctx(|| "prepare replace".into())?;
            fs::rename(&dest, &old).ctx(|| "replace template".into())?;
            let _ = fs::remove_dir_all(&old);
        }
        fs::rename(tmp, &dest).map_err(|e| {
            let _ = fs::remove_dir_all(tmp);
            if e.kind() == io::ErrorKind::AlreadyExists || e.raw_os_error() == Some(libc::ENOTEMPTY)
            {
                Error::TemplateExists(manifest.name.clone())
            } else {
                Error::Io {
                    context: format!("install template {}", manifest.name),
                    source: e,
                }
            }
        })
    }
}

/// An error and its sources, `: `-separated (tar hides the useful part in the source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Template names: `[a-z0-9][a-z0-9._-]{0,62}`.
pub(crate) fn valid_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            field: "name",
            message: format!("invalid template name {name:?}: use [a-z0-9][a-z0-9._-]{{0,62}}"),
        })
    }
}

/// Host `/etc` entries the base template copies (when present): what the dynamic loader, python,
/// TLS clients and shells need. Never the host's users, keys or machine identity.
const ETC_COPY: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates.conf",
    "profile",
    "profile.d",
    "bash.bashrc",
    "inputrc",
    "terminfo",
    "localtime",
    "timezone",
    "mime.types",
    "python3",
    "python3.11",
    "debian_version",
    "environment",
    "shells",
    "login.defs",
    "gai.conf",
    "protocols",
    "services",
    "os-release",
    "magic",
    "magic.mime",
    "vim",
    "skel",
    "perl",
    "gitconfig",
];

fn build_base_skeleton(root: &Path) -> Result<()> {
    let mk = |rel: &str, mode: u32| -> Result<()> {
        let p = root.join(rel);
        fs::create_dir_all(&p).ctx(|| format!("create {}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .ctx(|| format!("chmod {}", p.display()))
    };
    mk("", 0o755)?;
    for d in [
        "usr",
        "dev",
        "proc",
        "sys",
        "run",
        "etc",
        "var/lib",
        "var/log",
        "var/cache",
        "mnt",
        "opt",
        "srv",
        "media",
        "home",
    ] {
        mk(d, 0o755)?;
    }
    mk("tmp", 0o1777)?;
    mk("var/tmp", 0o1777)?;
    mk("root", 0o700)?;
    mk("home/user", 0o755)?;
    std::os::unix::fs::chown(root.join("home/user"), Some(1000), Some(1000))
        .ctx(|| "chown /home/user".into())?;
    // Merged-/usr layout: the top-level program and library directories are links into /usr.
    for d in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        if Path::new("/usr").join(d).is_dir() {
            symlink(format!("usr/{d}"), root.join(d)).ctx(|| format!("link /{d}"))?;
        }
    }
    for rel in ETC_COPY {
        let src = Path::new("/etc").join(rel);
        if src.symlink_metadata().is_ok() {
            copy_tree(&src, &root.join("etc").join(rel))?;
        }
    }
    let etc = |name: &str, content: &str| -> Result<()> {
        let p = root.join("etc").join(name);
        fs::write(&p, content).ctx(|| format!("write {}", p.display()))
    };
    etc(
        "passwd",
        "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\nuser:x:1000:1000:user:/home/user:/bin/bash\n",
    )?;
    etc(
        "group",
        "root:x:0:\ndaemon:x:1:\ntty:x:5:\nusers:x:100:user\nuser:x:1000:\nnogroup:x:65534:\n",
    )?;
    etc(
        "hosts",
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    )?;
    etc(
        "resolv.conf",
        "# no network: Hutch manages DNS when the sandbox has a network policy\n",
    )?;
    etc(
        "nsswitch.conf",
        "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n",
    )?;
    Ok(())
}

/// Copy a file, symlink or directory tree, keeping modes, ownership and symlinks.
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(src).ctx(|| format!("stat {}", src.display()))?;
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent).ctx(|| format!("create {}", parent.display()))?;
    }
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(src).ctx(|| format!("readlink {}", src.display()))?;
        symlink(target, dst).ctx(|| format!("link {}", dst.display()))?;
        return Ok(());
    }
    if ft.is_dir() {
        fs::create_dir_all(dst).ctx(|| format!("create {}", dst.display()))?;
        for e in fs::read_dir(src).ctx(|| format!("read {}", src.display()))? {
            let e = e.ctx(|| format!("read {}", src.display()))?;
            copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
    } else if ft.is_file() {
        fs::copy(src, dst).ctx(|| format!("copy {}", src.display()))?;
    } else {
        // Devices, sockets, fifos: not part of a template.
        return Ok(());
    }
    use std::os::unix::fs::MetadataExt;
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .ctx(|| format!("chmod {}", dst.display()))?;
    std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()))
        .ctx(|| format!("chown {}", dst.display()))
}

/// Apparent size of a tree (regular files), best effort.
fn dir_size(p: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(p) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    if !meta.is_dir() {
        return 0;
    }
    fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("base").is_ok());
        assert!(valid_name("py-3.11_x").is_ok());
        for bad in ["", "Base", "-x", "../x", "a/b", &"a".repeat(64)] {
            assert!(valid_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tar_import_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = TemplateStore::new(dir.path().join("t"), dir.path().join("s")).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "bin/hello", &b"hello"[..]).unwrap();
        let data = b.into_inner().unwrap();
        let info = store.import_tar("mini", &data[..]).unwrap();
        assert_eq!(info.size_bytes, 5);
        assert!(matches!(
            store.import_tar("mini", &data[..]),
            Err(Error::TemplateExists(_))
        ));
        assert_eq!(store.list().unwrap().len(), 1);
        let r = store.resolve("mini").unwrap();
        assert_eq!(fs::read(r.layers[0].join("bin/hello")).unwrap(), b"hello");
        store.delete("mini").unwrap();
        assert!(!store.exists("mini"));
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn gzip_import_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let store = TemplateStore::new(dir.path().join("t"), dir.path().join("s")).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "etc/x", &b"x"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        store.import_tar("gz", &gz[..]).unwrap();
        assert!(
            store
                .import_tar("junk", &b"definitely not a tar archive, just text"[..])
                .is_err()
        );
        assert!(!store.exists("junk"));
    }
}
