//! Directory archives: `GET /files/archive` streams a tar, `PUT /files/archive` extracts one.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::{PathQuery, UPLOAD_LIMIT, abs_path};
use crate::error::GuestError;
use crate::extract::ApiQuery;

/// Result of an extraction.
#[derive(Debug, Clone, Serialize)]
pub struct Extracted {
    /// Entries written.
    pub entries: u64,
}

/// A `Write` that hands blocks to an async body through a bounded channel.
struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

const BLOCK: usize = 64 * 1024;

impl ChannelWriter {
    fn send_buf(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK)));
        self.tx
            .blocking_send(Ok(data))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= BLOCK {
            self.send_buf()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buf()
    }
}

/// Write a tar of everything under `dir` (entry names relative to it) into `w`.
pub fn write_tar<W: Write>(dir: &Path, w: W) -> std::io::Result<W> {
    let mut builder = tar::Builder::new(w);
    builder.follow_symlinks(false);
    builder.append_dir_all(".", dir)?;
    builder.into_inner()
}

/// `GET /files/archive?path=DIR`: stream a tar of the directory.
pub async fn download(ApiQuery(q): ApiQuery<PathQuery>) -> Result<Response, GuestError> {
    let dir = abs_path(&q.path, "path")?;
    super::require_dir(&dir, &q.path).await?;
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let writer = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(BLOCK),
        };
        let res = write_tar(&dir, writer).and_then(|mut w| w.flush());
        if let Err(e) = res
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            tracing::warn!(error = %e, dir = %dir.display(), "archive failed");
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) });
    let mut resp = (StatusCode::OK, Body::from_stream(stream)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(resp)
}

/// Extract a tar (or gzipped tar) from `r` under `dir`; entries escaping `dir` are skipped.
pub fn extract<R: Read>(r: R, dir: &Path) -> std::io::Result<u64> {
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let gz = r.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(r))
    } else {
        Box::new(r)
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let mut n = 0;
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.unpack_in(dir)? {
            n += 1;
        } else {
            tracing::warn!(path = ?entry.path().ok(), "skipped archive entry outside the target");
        }
    }
    // The archive ends at its first zero block; the sender may still be writing the second one
    // and record padding. Read them: answering before the request body is consumed makes the
    // connection close under the client's feet (seen as a failed upload, depending on timing).
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink())?;
    Ok(n)
}

/// `PUT /files/archive?path=DIR`: extract a tar body under the directory.
pub async fn upload(
    ApiQuery(q): ApiQuery<PathQuery>,
    body: Body,
) -> Result<(StatusCode, Json<Extracted>), GuestError> {
    let dir = abs_path(&q.path, "path")?;
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| GuestError::from_fs(e, &q.path))?;
    let too_large = Arc::new(AtomicBool::new(false));
    let flag = too_large.clone();
    let mut total = 0u64;
    let stream = body
        .into_data_stream()
        .map_err(std::io::Error::other)
        .map(move |chunk| {
            let chunk = chunk?;
            total += chunk.len() as u64;
            if total > UPLOAD_LIMIT {
                flag.store(true, Ordering::SeqCst);
                return Err(std::io::Error::other("upload too large"));
            }
            Ok(chunk)
        });
    let reader = SyncIoBridge::new(StreamReader::new(Box::pin(stream)));
    let target = dir.clone();
    let res = tokio::task::spawn_blocking(move || extract(reader, &target))
        .await
        .map_err(|e| GuestError::Internal(e.to_string()))?;
    match res {
        Ok(entries) => Ok((StatusCode::CREATED, Json(Extracted { entries }))),
        Err(_) if too_large.load(Ordering::SeqCst) => Err(GuestError::PayloadTooLarge(format!(
            "archive exceeds {UPLOAD_LIMIT} bytes"
        ))),
        Err(e) => Err(GuestError::BadRequest(format!(
            "cannot extract archive: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extract_reads_the_whole_body() {
        struct Counting<'a>(&'a [u8], usize);
        impl Read for Counting<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.read(buf)?;
                self.1 += n;
                Ok(n)
            }
        }
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("a.txt"), "hello").unwrap();
        let mut tar = write_tar(src.path(), Vec::new()).unwrap();
        // Zeros after the end-of-archive blocks (record padding), more than one buffer's worth.
        tar.extend_from_slice(&vec![0u8; 200 * 1024]);
        let dst = tempfile::tempdir().unwrap();
        let mut r = Counting(&tar, 0);
        extract(&mut r, dst.path()).unwrap();
        assert_eq!(r.1, tar.len());
    }

    #[test]
    fn round_trip_and_escape() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("sub")).unwrap();
        std::fs::write(src.path().join("sub/a.txt"), "hello").unwrap();
        std::os::unix::fs::symlink("sub/a.txt", src.path().join("link")).unwrap();
        let tar = write_tar(src.path(), Vec::new()).unwrap();
        let dst = tempfile::tempdir().unwrap();
        let n = extract(&tar[..], dst.path()).unwrap();
        assert!(n >= 3);
        assert_eq!(
            std::fs::read_to_string(dst.path().join("sub/a.txt")).unwrap(),
            "hello"
        );
        assert!(
            std::fs::symlink_metadata(dst.path().join("link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );

        // An entry with `..` must not escape.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        let name = b"../escape.txt";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, &b"bad"[..]).unwrap();
        let evil = b.into_inner().unwrap();
        let inner = dst.path().join("inner");
        std::fs::create_dir_all(&inner).unwrap();
        let n = extract(&evil[..], &inner).unwrap();
        assert_eq!(n, 0);
        assert!(!dst.path().join("escape.txt").exists());
    }

    #[test]
    fn gzip_detected() {
        use flate2::write::GzEncoder;
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("f"), "z").unwrap();
        let tar = write_tar(src.path(), Vec::new()).unwrap();
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&tar).unwrap();
        let gz = enc.finish().unwrap();
        let dst = tempfile::tempdir().unwrap();
        extract(&gz[..], dst.path()).unwrap();
        assert_eq!(std::fs::read_to_string(dst.path().join("f")).unwrap(), "z");
    }
}
