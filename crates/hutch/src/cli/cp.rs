//! `hutch cp`: copy files and directories between the host and a sandbox, streaming.
//!
//! Semantics follow `docker cp`: copying a file or directory onto an existing directory puts it
//! inside (`b/a`); onto a missing path creates it under that name; a source ending in `/.` copies
//! a directory's contents. Directories travel as tar streams, files as raw bytes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use hutch_api::files::{FileInfo, FileKind};
use reqwest::Method;
use tokio::io::AsyncWriteExt;

use super::client::{Client, is_not_found, seg};
use super::pipe::{ChannelReader, tar_dir};
use super::{ConnArgs, write_stdout};

/// `hutch cp`.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  hutch cp ./src sb-123:/work      # puts ./src at /work/src\n  \
                        hutch cp sb-123:/work/out.txt .  # fetches a file\n  \
                        hutch cp sb-123:/etc/hosts -     # prints a file to stdout"
)]
pub struct CpArgs {
    /// Source: a local path or `ID:/path` in a sandbox.
    pub src: String,
    /// Destination: a local path (`-` = stdout, files only) or `ID:/path` in a sandbox.
    pub dst: String,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A path on this host.
    Local(PathBuf),
    /// An absolute path in a sandbox.
    Remote {
        /// Sandbox id.
        id: String,
        /// Absolute path.
        path: String,
    },
}

/// Parse `ID:/path` (a sandbox path) or a local path. Paths starting with `/`, `.` or `~`, and
/// anything whose part before the first `:` holds a `/`, are local.
pub fn parse_location(s: &str) -> anyhow::Result<Location> {
    if s.is_empty() {
        bail!("empty path");
    }
    if s.starts_with(['/', '.', '~']) {
        return Ok(Location::Local(PathBuf::from(s)));
    }
    match s.split_once(':') {
        Some((id, path)) if !id.is_empty() && !id.contains('/') => {
            if !path.starts_with('/') {
                bail!("sandbox paths must be absolute: {s:?} (like {id}:/root/{path})");
            }
            Ok(Location::Remote {
                id: id.to_owned(),
                path: path.to_owned(),
            })
        }
        _ => Ok(Location::Local(PathBuf::from(s))),
    }
}

/// Split a source path into (path to fetch, its base name, whether only its contents are
/// copied). `dir/.` copies the contents; `/` has no name and copies its contents.
pub fn source_parts(path: &str) -> (String, Option<String>, bool) {
    let contents = path.ends_with("/.") || path == ".";
    let trimmed = path.trim_end_matches("/.").trim_end_matches('/');
    let trimmed = if trimmed.is_empty() && path.starts_with('/') {
        "/"
    } else {
        trimmed
    };
    let name = trimmed
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .map(str::to_owned);
    let contents = contents || name.is_none();
    (trimmed.to_owned(), name, contents)
}

/// Join a remote directory and a name.
pub fn remote_join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// `hutch cp SRC DST`.
pub async fn cp(args: CpArgs) -> anyhow::Result<()> {
    let src = parse_location(&args.src)?;
    let dst = if args.dst == "-" {
        Location::Local(PathBuf::from("-"))
    } else {
        parse_location(&args.dst)?
    };
    let client = args.conn.client()?;
    match (src, dst) {
        (Location::Local(s), Location::Remote { id, path }) => {
            upload(&client, &s, &id, &path).await
        }
        (Location::Remote { id, path }, Location::Local(d)) => {
            download(&client, &id, &path, &d).await
        }
        (Location::Local(_), Location::Local(_)) => {
            bail!("one side of the copy must be a sandbox path (ID:/path)")
        }
        (Location::Remote { .. }, Location::Remote { .. }) => {
            bail!("copying between two sandbox paths is not supported; copy through the host")
        }
    }
}

fn files_path(id: &str, rest: &str) -> String {
    format!("/v1/sandboxes/{}/files{rest}", seg(id))
}

/// Stat a sandbox path; `None` when it does not exist.
async fn remote_stat(client: &Client, id: &str, path: &str) -> anyhow::Result<Option<FileInfo>> {
    match client
        .get_json::<FileInfo>(&files_path(id, "/stat"), &[("path", path.to_owned())])
        .await
    {
        Ok(info) => Ok(Some(info)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn upload(client: &Client, src: &Path, id: &str, dst: &str) -> anyhow::Result<()> {
    let src_str = src.to_string_lossy();
    let (fetch, name, contents) = source_parts(&src_str);
    let meta = tokio::fs::metadata(&fetch)
        .await
        .with_context(|| format!("cannot read {}", src.display()))?;
    let target = remote_stat(client, id, dst).await?;
    let dst_is_dir = target.as_ref().is_some_and(|t| t.kind == FileKind::Dir);
    if meta.is_dir() {
        let under = match (&target, &name) {
            (Some(t), _) if t.kind != FileKind::Dir => {
                bail!("cannot copy a directory onto the file {dst}")
            }
            (Some(_), Some(name)) if !contents => remote_join(dst, name),
            _ => dst.to_owned(),
        };
        let body = reqwest::Body::wrap_stream(tar_dir(PathBuf::from(&fetch)));
        let rb = client
            .request(Method::PUT, &files_path(id, "/archive"))
            .query(&[("path", under.as_str())])
            .header(http::header::CONTENT_TYPE, "application/x-tar")
            .body(body);
        client.send(rb).await?;
        return Ok(());
    }
    if !meta.is_file() {
        bail!("{} is not a regular file or directory", src.display());
    }
    let target_path = match &name {
        Some(name) if dst_is_dir => remote_join(dst, name),
        _ if target.is_none() && dst.ends_with('/') => {
            bail!("directory {dst} does not exist in sandbox {id}")
        }
        _ => dst.to_owned(),
    };
    let file = tokio::fs::File::open(&fetch)
        .await
        .with_context(|| format!("cannot open {}", src.display()))?;
    let body =
        reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024));
    let mode = format!("{:o}", meta.permissions().mode() & 0o7777);
    let rb = client
        .request(Method::PUT, &files_path(id, ""))
        .query(&[("path", target_path.as_str()), ("mode", mode.as_str())])
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .header(http::header::CONTENT_LENGTH, meta.len())
        .body(body);
    client.send(rb).await?;
    Ok(())
}

async fn download(client: &Client, id: &str, src: &str, dst: &Path) -> anyhow::Result<()> {
    let (fetch, name, contents) = source_parts(src);
    let Some(info) = remote_stat(client, id, &fetch).await? else {
        bail!("{src} does not exist in sandbox {id}");
    };
    let to_stdout = dst.as_os_str() == "-";
    let local = match tokio::fs::metadata(dst).await {
        _ if to_stdout => None,
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dst.display())),
    };
    if info.kind == FileKind::Dir {
        if to_stdout {
            bail!("{src} is a directory: cannot print it to stdout");
        }
        let target = match (&local, &name) {
            (Some(m), _) if !m.is_dir() => {
                bail!("cannot copy a directory onto the file {}", dst.display())
            }
            (Some(_), Some(name)) if !contents => dst.join(name),
            _ => dst.to_owned(),
        };
        tokio::fs::create_dir_all(&target)
            .await
            .with_context(|| format!("cannot create {}", target.display()))?;
        return download_dir(client, id, &fetch, target).await;
    }
    let resp = client
        .send(
            client
                .request(Method::GET, &files_path(id, ""))
                .query(&[("path", fetch.as_str())]),
        )
        .await?;
    let mut body = resp.bytes_stream();
    if to_stdout {
        while let Some(chunk) = body.next().await {
            write_stdout(&chunk.context("the download broke")?)?;
        }
        return Ok(());
    }
    let dst_str = dst.to_string_lossy();
    let target = match (&local, &name) {
        (Some(m), Some(name)) if m.is_dir() => dst.join(name),
        (None, _) if dst_str.ends_with('/') => bail!("directory {} does not exist", dst.display()),
        _ => dst.to_owned(),
    };
    let mut file = tokio::fs::File::create(&target)
        .await
        .with_context(|| format!("cannot create {}", target.display()))?;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the download broke")?;
        file.write_all(&chunk)
            .await
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    file.flush().await?;
    drop(file);
    // Plain rwx bits only: a sandbox must not plant setuid/setgid files on the host.
    let mode = info.mode & 0o777;
    if mode != 0 {
        tokio::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).await?;
    }
    Ok(())
}

/// Fetch `GET …/files/archive?path=SRC` and unpack it under `target` as it arrives.
async fn download_dir(client: &Client, id: &str, src: &str, target: PathBuf) -> anyhow::Result<()> {
    let resp = client
        .send(
            client
                .request(Method::GET, &files_path(id, "/archive"))
                .query(&[("path", src)]),
        )
        .await?;
    let (tx, reader) = ChannelReader::new();
    let unpack = tokio::task::spawn_blocking(move || unpack_tar(reader, &target));
    let mut body = resp.bytes_stream();
    let mut broke = None;
    while let Some(chunk) = body.next().await {
        let item = chunk.map_err(|e| std::io::Error::other(format!("the download broke: {e}")));
        let failed = item.is_err();
        if tx.send(item).await.is_err() {
            break; // The unpacker stopped; its error says why.
        }
        if failed {
            broke = Some(());
            break;
        }
    }
    drop(tx);
    unpack
        .await
        .context("the unpacker crashed")?
        .context("cannot unpack the archive")?;
    if broke.is_some() {
        bail!("the download broke");
    }
    Ok(())
}

/// Unpack a tar stream under `dir`, refusing entries that would escape it.
pub fn unpack_tar<R: std::io::Read>(reader: R, dir: &Path) -> std::io::Result<u64> {
    let mut archive = tar::Archive::new(reader);
    // Plain rwx bits only: a sandbox must not plant setuid/setgid files on the host.
    archive.set_preserve_permissions(false);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let mut n = 0;
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.unpack_in(dir)? {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(id: &str, path: &str) -> Location {
        Location::Remote {
            id: id.into(),
            path: path.into(),
        }
    }

    #[test]
    fn locations() {
        assert_eq!(
            parse_location("sb-1:/root/a").unwrap(),
            remote("sb-1", "/root/a")
        );
        assert_eq!(parse_location("sb-1:/").unwrap(), remote("sb-1", "/"));
        assert_eq!(parse_location("sb-1:/a:b").unwrap(), remote("sb-1", "/a:b"));
        assert_eq!(
            parse_location("./x:y").unwrap(),
            Location::Local("./x:y".into())
        );
        assert_eq!(
            parse_location("/tmp/a:b").unwrap(),
            Location::Local("/tmp/a:b".into())
        );
        assert_eq!(
            parse_location("dir/x:y").unwrap(),
            Location::Local("dir/x:y".into())
        );
        assert_eq!(
            parse_location("file.txt").unwrap(),
            Location::Local("file.txt".into())
        );
        assert_eq!(
            parse_location(":/x").unwrap(),
            Location::Local(":/x".into())
        );
        assert!(parse_location("sb-1:relative").is_err());
        assert!(parse_location("sb-1:").is_err());
        assert!(parse_location("").is_err());
    }

    #[test]
    fn sources() {
        assert_eq!(
            source_parts("/a/b"),
            ("/a/b".into(), Some("b".into()), false)
        );
        assert_eq!(
            source_parts("/a/b/"),
            ("/a/b".into(), Some("b".into()), false)
        );
        assert_eq!(
            source_parts("/a/b/."),
            ("/a/b".into(), Some("b".into()), true)
        );
        assert_eq!(source_parts("/"), ("/".into(), None, true));
        assert_eq!(
            source_parts("dir"),
            ("dir".into(), Some("dir".into()), false)
        );
        assert_eq!(source_parts("."), (".".into(), None, true));
        assert_eq!(
            source_parts("../x"),
            ("../x".into(), Some("x".into()), false)
        );
    }

    #[test]
    fn joins() {
        assert_eq!(remote_join("/root", "a"), "/root/a");
        assert_eq!(remote_join("/", "a"), "/a");
        assert_eq!(remote_join("/x/", "a"), "/x/a");
    }
}
