//! Plumbing between blocking code (tar, stdin) and async streams, without buffering whole files.

use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use futures::Stream;
use tokio::sync::mpsc;

/// Size of the chunks moved through the pipes.
pub const CHUNK: usize = 64 * 1024;

/// A blocking writer whose bytes come out of an async stream (see [`byte_channel`]).
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
}

impl ChannelWriter {
    fn push(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    /// Flush what is buffered and end the stream.
    pub fn finish(mut self) -> io::Result<()> {
        self.push()
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.push()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.push()
    }
}

/// A blocking writer and the async stream of what is written to it.
pub fn byte_channel() -> (
    ChannelWriter,
    impl Stream<Item = io::Result<Bytes>> + Send + 'static,
) {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(8);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        ChannelWriter {
            tx,
            buf: BytesMut::with_capacity(CHUNK),
        },
        stream,
    )
}

/// A blocking reader fed by async code through a channel of chunks.
pub struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl ChannelReader {
    /// A reader and the sender that feeds it; dropping the sender ends the data.
    pub fn new() -> (mpsc::Sender<io::Result<Bytes>>, Self) {
        let (tx, rx) = mpsc::channel(8);
        (
            tx,
            ChannelReader {
                rx,
                cur: Bytes::new(),
            },
        )
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

/// Tar `dir`'s contents (entries named `./…`, symlinks kept as links, sockets skipped with a
/// warning) on a blocking thread, returning the archive as a stream. A failure ends the stream
/// with an error.
pub fn tar_dir(dir: PathBuf) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let (writer, stream) = byte_channel();
    let err_tx = writer.tx.clone();
    tokio::task::spawn_blocking(move || {
        let mut builder = tar::Builder::new(writer);
        builder.follow_symlinks(false);
        let res = builder
            .append_dir(".", &dir)
            .and_then(|()| append_tree(&mut builder, &dir, Path::new(".")))
            .and_then(|()| builder.into_inner());
        let res = match res {
            Ok(w) => w.finish(),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("cannot archive {}: {e}", dir.display()),
            )),
        };
        if let Err(e) = res {
            // The builder is gone by now: what it wrote went first, the error ends the stream.
            let _ = err_tx.blocking_send(Err(e));
        }
    });
    stream
}

/// Append everything under `root/rel` (depth first, sorted by name) as `rel/…`.
fn append_tree<W: Write>(builder: &mut tar::Builder<W>, root: &Path, rel: &Path) -> io::Result<()> {
    let mut entries = std::fs::read_dir(root.join(rel))?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = rel.join(entry.file_name());
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            builder.append_dir(&name, &path)?;
            append_tree(builder, root, &name)?;
        } else if kind.is_socket() {
            let shown = root.join(name.strip_prefix(".").unwrap_or(&name));
            eprintln!("hutch: skipping socket {}", shown.display());
        } else {
            builder.append_path_with_name(&path, &name)?;
        }
    }
    Ok(())
}

/// Read stdin on a dedicated thread (a blocking read must not hold up the runtime's shutdown).
/// The channel closes at end of input.
pub fn spawn_stdin_reader() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(16);
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = io::stdin().lock();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.blocking_send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the stdin reader");
    }
    rx
}

/// Append `data` to `carry` and take out the longest valid UTF-8 text; an incomplete sequence at
/// the end stays in `carry`, invalid bytes become U+FFFD.
pub fn utf8_chunk(carry: &mut Vec<u8>, data: &[u8]) -> String {
    carry.extend_from_slice(data);
    let mut out = String::new();
    loop {
        match std::str::from_utf8(carry) {
            Ok(s) => {
                out.push_str(s);
                carry.clear();
                return out;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                out.push_str(&String::from_utf8_lossy(&carry[..valid]));
                match e.error_len() {
                    None => {
                        carry.drain(..valid);
                        return out;
                    }
                    Some(n) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        carry.drain(..valid + n);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn utf8_chunks() {
        let mut carry = Vec::new();
        let e = "é".as_bytes();
        assert_eq!(utf8_chunk(&mut carry, b"ab"), "ab");
        assert_eq!(utf8_chunk(&mut carry, &[b'x', e[0]]), "x");
        assert_eq!(carry, vec![e[0]]);
        assert_eq!(utf8_chunk(&mut carry, &[e[1], b'y']), "éy");
        assert!(carry.is_empty());
        assert_eq!(utf8_chunk(&mut carry, &[0xff, b'z']), "\u{FFFD}z");
    }

    #[tokio::test]
    async fn tar_round_trip_through_channels() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("sub")).unwrap();
        std::fs::write(src.path().join("sub/a.txt"), "hello").unwrap();
        let big = vec![7u8; 300 * 1024];
        std::fs::write(src.path().join("big.bin"), &big).unwrap();
        std::os::unix::fs::symlink("sub/a.txt", src.path().join("link")).unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(src.path().join("sub/sock")).unwrap();

        let mut stream = Box::pin(tar_dir(src.path().to_owned()));
        let (tx, reader) = ChannelReader::new();
        let dst = tempfile::tempdir().unwrap();
        let target = dst.path().to_owned();
        let unpack = tokio::task::spawn_blocking(move || {
            let mut ar = tar::Archive::new(reader);
            for entry in ar.entries()? {
                entry?.unpack_in(&target)?;
            }
            Ok::<_, io::Error>(())
        });
        while let Some(chunk) = stream.next().await {
            tx.send(chunk).await.unwrap();
        }
        drop(tx);
        unpack.await.unwrap().unwrap();
        assert_eq!(
            std::fs::read_to_string(dst.path().join("sub/a.txt")).unwrap(),
            "hello"
        );
        assert_eq!(std::fs::read(dst.path().join("big.bin")).unwrap(), big);
        assert!(
            std::fs::symlink_metadata(dst.path().join("link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(!dst.path().join("sub/sock").exists());
    }
}
