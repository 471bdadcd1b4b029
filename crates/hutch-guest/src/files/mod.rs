//! Files: read, write, list, stat, mkdir, move, remove; archives and watches in submodules.

pub mod archive;
pub mod watch;

use std::fs::Metadata;
use std::io::SeekFrom;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use http::{HeaderValue, StatusCode, header};
use hutch_api::files::{FileInfo, FileKind, FileList, MakeDir, MoveFile};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use crate::error::GuestError;
use crate::extract::{ApiJson, ApiQuery};

/// Largest accepted upload.
pub const UPLOAD_LIMIT: u64 = 1024 * 1024 * 1024;
/// Most entries a listing returns.
pub const LIST_LIMIT: usize = 10_000;
/// Deepest listing.
pub const MAX_DEPTH: u32 = 10;

/// Validate an absolute path (422 `path` otherwise).
pub fn abs_path(p: &str, field: &str) -> Result<PathBuf, GuestError> {
    if p.is_empty() {
        return Err(GuestError::invalid(field, format!("{field} is required")));
    }
    if !p.starts_with('/') {
        return Err(GuestError::invalid(
            field,
            format!("{field} must be absolute: {p}"),
        ));
    }
    if p.contains('\0') {
        return Err(GuestError::invalid(
            field,
            format!("{field} contains a NUL byte"),
        ));
    }
    Ok(PathBuf::from(p))
}

/// Describe a file from its (l)stat metadata.
pub fn file_info(path: &Path, meta: &Metadata) -> FileInfo {
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    let modified =
        DateTime::<Utc>::from_timestamp(meta.mtime(), meta.mtime_nsec() as u32).unwrap_or_default();
    FileInfo {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into()),
        path: path.to_string_lossy().into_owned(),
        kind,
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        modified,
        link_target: ft
            .is_symlink()
            .then(|| {
                std::fs::read_link(path)
                    .ok()
                    .map(|t| t.to_string_lossy().into_owned())
            })
            .flatten(),
    }
}

async fn lstat_info(path: &Path) -> Result<FileInfo, GuestError> {
    let meta = tokio::fs::symlink_metadata(path)
        .await
        .map_err(|e| GuestError::from_fs(e, &path.to_string_lossy()))?;
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || file_info(&p, &meta))
        .await
        .map_err(|e| GuestError::Internal(e.to_string()))
}

/// Query naming one path.
#[derive(Debug, Default, Deserialize)]
pub struct PathQuery {
    /// Absolute path.
    #[serde(default)]
    pub path: String,
}

/// Query of `GET /files`.
#[derive(Debug, Default, Deserialize)]
pub struct ReadQuery {
    /// Absolute path.
    #[serde(default)]
    pub path: String,
    /// First byte to return.
    #[serde(default)]
    pub offset: u64,
    /// Most bytes to return (default: to the end).
    pub length: Option<u64>,
}

/// `GET /files`: stream a file's bytes (optionally a range).
pub async fn read(ApiQuery(q): ApiQuery<ReadQuery>) -> Result<Response, GuestError> {
    let path = abs_path(&q.path, "path")?;
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| GuestError::from_fs(e, &q.path))?;
    let meta = file
        .metadata()
        .await
        .map_err(|e| GuestError::from_fs(e, &q.path))?;
    if meta.is_dir() {
        return Err(GuestError::invalid(
            "path",
            format!("is a directory: {}", q.path),
        ));
    }
    let size = meta.len();
    let start = q.offset.min(size);
    let len = q.length.map_or(size - start, |l| l.min(size - start));
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(|e| GuestError::from_fs(e, &q.path))?;
    }
    let stream = ReaderStream::with_capacity(file.take(len), 64 * 1024);
    let mut resp = (StatusCode::OK, Body::from_stream(stream)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Ok(resp)
}

/// Query of `PUT /files`.
#[derive(Debug, Default, Deserialize)]
pub struct WriteQuery {
    /// Absolute path.
    #[serde(default)]
    pub path: String,
    /// Octal permission bits (`644`, `0755`).
    pub mode: Option<String>,
}

/// Parse an octal mode string.
pub fn parse_mode(s: &str) -> Result<u32, GuestError> {
    let t = s.trim();
    let t = t.strip_prefix("0o").unwrap_or(t);
    match u32::from_str_radix(t, 8) {
        Ok(m) if !t.is_empty() && m <= 0o7777 => Ok(m),
        _ => Err(GuestError::invalid(
            "mode",
            format!("invalid octal mode: {s}"),
        )),
    }
}

/// Removes a temporary file unless disarmed.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// `PUT /files`: atomically replace a file with the request body.
pub async fn write(
    ApiQuery(q): ApiQuery<WriteQuery>,
    headers: http::HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<FileInfo>), GuestError> {
    let path = abs_path(&q.path, "path")?;
    let mode = q.mode.as_deref().map(parse_mode).transpose()?;
    let too_large = || GuestError::PayloadTooLarge(format!("upload exceeds {UPLOAD_LIMIT} bytes"));
    if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|l| l > UPLOAD_LIMIT)
    {
        return Err(too_large());
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(GuestError::invalid("path", "path must name a file"));
    };
    let existing = tokio::fs::metadata(&path).await.ok();
    if existing.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(GuestError::invalid(
            "path",
            format!("is a directory: {}", q.path),
        ));
    }
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(|e| GuestError::from_fs(e, &parent.to_string_lossy()))?;
    let tmp = parent.join(format!(
        ".{}.hutch-{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let mode = mode
        .or(existing.map(|m| m.permissions().mode() & 0o7777))
        .unwrap_or(0o644);
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .await
        .map_err(|e| GuestError::from_fs(e, &parent.to_string_lossy()))?;
    let mut guard = TempGuard(Some(tmp.clone()));
    let mut total = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| GuestError::BadRequest(format!("failed to read body: {e}")))?;
        total += chunk.len() as u64;
        if total > UPLOAD_LIMIT {
            return Err(too_large());
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| GuestError::from_fs(e, &q.path))?;
    }
    file.flush().await?;
    file.sync_all()
        .await
        .map_err(|e| GuestError::from_fs(e, &q.path))?;
    drop(file);
    tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .await
        .map_err(|e| GuestError::from_fs(e, &q.path))?;
    tokio::fs::rename(&tmp, &path)
        .await
        .map_err(|e| GuestError::from_fs(e, &q.path))?;
    guard.0 = None;
    Ok((StatusCode::CREATED, Json(lstat_info(&path).await?)))
}

/// Query of `GET /files/list`.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// Absolute directory path.
    #[serde(default)]
    pub path: String,
    /// How deep to descend (1..=10, default 1).
    pub depth: Option<u32>,
}

/// `GET /files/list`.
pub async fn list(ApiQuery(q): ApiQuery<ListQuery>) -> Result<Json<FileList>, GuestError> {
    let path = abs_path(&q.path, "path")?;
    let depth = q.depth.unwrap_or(1);
    if !(1..=MAX_DEPTH).contains(&depth) {
        return Err(GuestError::invalid(
            "depth",
            format!("depth must be 1..={MAX_DEPTH}"),
        ));
    }
    require_dir(&path, &q.path).await?;
    let p = path.clone();
    let (entries, truncated) = tokio::task::spawn_blocking(move || walk(&p, depth, LIST_LIMIT))
        .await
        .map_err(|e| GuestError::Internal(e.to_string()))?
        .map_err(|e| GuestError::from_fs(e, &q.path))?;
    Ok(Json(FileList {
        path: q.path,
        entries,
        truncated,
    }))
}

/// List `dir` down to `depth` levels (no symlink following), at most `limit` entries.
pub fn walk(dir: &Path, depth: u32, limit: usize) -> std::io::Result<(Vec<FileInfo>, bool)> {
    let mut out = Vec::new();
    let truncated = walk_into(dir, depth, limit, &mut out, true)?;
    Ok((out, truncated))
}

fn walk_into(
    dir: &Path,
    depth: u32,
    limit: usize,
    out: &mut Vec<FileInfo>,
    top: bool,
) -> std::io::Result<bool> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        // Unreadable subdirectories are listed but not descended into.
        Err(_) if !top => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut names: Vec<_> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
    names.sort();
    for p in names {
        if out.len() >= limit {
            return Ok(true);
        }
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        out.push(file_info(&p, &meta));
        if depth > 1 && meta.is_dir() && walk_into(&p, depth - 1, limit, out, false)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `GET /files/stat`.
pub async fn stat(ApiQuery(q): ApiQuery<PathQuery>) -> Result<Json<FileInfo>, GuestError> {
    let path = abs_path(&q.path, "path")?;
    Ok(Json(lstat_info(&path).await?))
}

/// `POST /files/mkdir`: `mkdir -p`.
pub async fn mkdir(
    ApiJson(req): ApiJson<MakeDir>,
) -> Result<(StatusCode, Json<FileInfo>), GuestError> {
    let path = abs_path(&req.path, "path")?;
    if req.mode.is_some_and(|m| m > 0o7777) {
        return Err(GuestError::invalid("mode", "mode must be at most 0o7777"));
    }
    if let Ok(meta) = tokio::fs::symlink_metadata(&path).await
        && !meta.is_dir()
    {
        return Err(GuestError::AlreadyExists(format!(
            "exists and is not a directory: {}",
            req.path
        )));
    }
    tokio::fs::create_dir_all(&path)
        .await
        .map_err(|e| GuestError::from_fs(e, &req.path))?;
    if let Some(m) = req.mode {
        tokio::fs::set_permissions(&path, std::fs::Permissions::from_mode(m))
            .await
            .map_err(|e| GuestError::from_fs(e, &req.path))?;
    }
    Ok((StatusCode::CREATED, Json(lstat_info(&path).await?)))
}

/// `POST /files/move`.
pub async fn rename(ApiJson(req): ApiJson<MoveFile>) -> Result<Json<FileInfo>, GuestError> {
    let from = abs_path(&req.from, "from")?;
    let to = abs_path(&req.to, "to")?;
    let src = tokio::fs::symlink_metadata(&from)
        .await
        .map_err(|e| GuestError::from_fs(e, &req.from))?;
    if tokio::fs::symlink_metadata(&to).await.is_ok() && !req.overwrite {
        return Err(GuestError::AlreadyExists(format!(
            "target exists: {}",
            req.to
        )));
    }
    if let Some(parent) = to.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| GuestError::from_fs(e, &req.to))?;
    }
    match tokio::fs::rename(&from, &to).await {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) && src.is_file() => {
            tokio::fs::copy(&from, &to)
                .await
                .map_err(|e| GuestError::from_fs(e, &req.to))?;
            tokio::fs::remove_file(&from)
                .await
                .map_err(|e| GuestError::from_fs(e, &req.from))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
            return Err(GuestError::Conflict(format!(
                "target is a non-empty directory: {}",
                req.to
            )));
        }
        Err(e) => return Err(GuestError::from_fs(e, &req.to)),
    }
    Ok(Json(lstat_info(&to).await?))
}

/// Query of `DELETE /files`.
#[derive(Debug, Default, Deserialize)]
pub struct RemoveQuery {
    /// Absolute path.
    #[serde(default)]
    pub path: String,
    /// Remove directories with their contents.
    #[serde(default)]
    pub recursive: bool,
}

/// `DELETE /files`.
pub async fn remove(ApiQuery(q): ApiQuery<RemoveQuery>) -> Result<StatusCode, GuestError> {
    let path = abs_path(&q.path, "path")?;
    if path
        .components()
        .all(|c| matches!(c, std::path::Component::RootDir))
    {
        return Err(GuestError::invalid("path", "refusing to remove /"));
    }
    let meta = tokio::fs::symlink_metadata(&path)
        .await
        .map_err(|e| GuestError::from_fs(e, &q.path))?;
    let res = if meta.is_dir() {
        if q.recursive {
            tokio::fs::remove_dir_all(&path).await
        } else {
            tokio::fs::remove_dir(&path).await
        }
    } else {
        tokio::fs::remove_file(&path).await
    };
    res.map_err(|e| GuestError::from_fs(e, &q.path))?;
    Ok(StatusCode::NO_CONTENT)
}

/// The path must name an existing directory (404 if missing, 422 if something else).
pub(super) async fn require_dir(path: &std::path::Path, shown: &str) -> Result<(), GuestError> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| GuestError::from_fs(e, shown))?;
    if !meta.is_dir() {
        return Err(GuestError::invalid(
            "path",
            format!("not a directory: {shown}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("644").unwrap(), 0o644);
        assert_eq!(parse_mode("0755").unwrap(), 0o755);
        assert!(parse_mode("9").is_err());
        assert!(parse_mode("").is_err());
        assert!(parse_mode("77777").is_err());
    }

    #[test]
    fn paths() {
        assert!(abs_path("/a", "path").is_ok());
        assert!(abs_path("a", "path").is_err());
        assert!(abs_path("", "path").is_err());
    }

    #[test]
    fn walks_with_depth_and_limit() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b/c")).unwrap();
        std::fs::write(d.path().join("a/f"), "x").unwrap();
        let (e, t) = walk(d.path(), 1, 100).unwrap();
        assert_eq!((e.len(), t), (1, false));
        let (e, _) = walk(d.path(), 3, 100).unwrap();
        assert_eq!(e.len(), 4);
        let (e, t) = walk(d.path(), 10, 2).unwrap();
        assert_eq!((e.len(), t), (2, true));
    }
}
