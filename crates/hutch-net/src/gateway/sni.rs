//! Reading a TLS ClientHello far enough to learn the server name (SNI), without terminating
//! TLS: the bytes read are replayed to the upstream afterwards.

use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest ClientHello accepted (records may be split; post-quantum key shares are big).
const MAX_HELLO: usize = 64 * 1024;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;

/// What the ClientHello says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The server name, if any.
    pub sni: Option<String>,
    /// Whether it carries Encrypted Client Hello (whose real target the gateway cannot see).
    pub ech: bool,
}

/// Parse outcome on a prefix of the stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parse {
    /// Need more bytes.
    Incomplete,
    /// Not a TLS ClientHello.
    Invalid(&'static str),
    /// Done.
    Hello(Hello),
}

/// Parse TLS records at the start of `buf` as one ClientHello.
pub(crate) fn parse(buf: &[u8]) -> Parse {
    // Reassemble the handshake message from consecutive handshake records.
    let mut hs = Vec::new();
    let mut off = 0;
    loop {
        if buf.len() < off + 5 {
            return Parse::Incomplete;
        }
        if buf[off] != 0x16 {
            return Parse::Invalid("not a TLS handshake record");
        }
        if buf[off + 1] != 3 {
            return Parse::Invalid("not TLS");
        }
        let len = usize::from(u16::from_be_bytes([buf[off + 3], buf[off + 4]]));
        if len == 0 || len > 16384 + 256 {
            return Parse::Invalid("bad TLS record length");
        }
        if buf.len() < off + 5 + len {
            return Parse::Incomplete;
        }
        hs.extend_from_slice(&buf[off + 5..off + 5 + len]);
        off += 5 + len;
        if hs.len() >= 4 {
            if hs[0] != 1 {
                return Parse::Invalid("first handshake message is not a ClientHello");
            }
            let need =
                4 + ((usize::from(hs[1]) << 16) | (usize::from(hs[2]) << 8) | usize::from(hs[3]));
            if need > MAX_HELLO {
                return Parse::Invalid("ClientHello too large");
            }
            if hs.len() >= need {
                return match client_hello(&hs[4..need]) {
                    Some(h) => Parse::Hello(h),
                    None => Parse::Invalid("malformed ClientHello"),
                };
            }
        }
    }
}

/// A byte cursor returning `None` past the end.
struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

fn client_hello(body: &[u8]) -> Option<Hello> {
    let mut c = Cur(body);
    c.take(2 + 32)?; // version, random
    c.vec8()?; // session id
    c.vec16()?; // cipher suites
    c.vec8()?; // compression methods
    let mut hello = Hello {
        sni: None,
        ech: false,
    };
    if c.0.is_empty() {
        return Some(hello);
    }
    let mut exts = Cur(c.vec16()?);
    while !exts.0.is_empty() {
        let kind = exts.u16()? as u16;
        let data = exts.vec16()?;
        match kind {
            EXT_SERVER_NAME => {
                if hello.sni.is_some() {
                    return None; // duplicate extension
                }
                let mut list = Cur(Cur(data).vec16()?);
                let mut names = Vec::new();
                while !list.0.is_empty() {
                    let name_type = list.u8()?;
                    let name = list.vec16()?;
                    if name_type == 0 {
                        names.push(std::str::from_utf8(name).ok()?.to_string());
                    }
                }
                if names.len() != 1 {
                    return None; // zero or several host names: ambiguous
                }
                hello.sni = names.pop();
            }
            EXT_ENCRYPTED_CLIENT_HELLO => hello.ech = true,
            _ => {}
        }
    }
    Some(hello)
}

/// Read from `stream` until a whole ClientHello is in; returns the bytes read (to replay
/// upstream) and what it says.
pub(crate) async fn read_client_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> io::Result<(Vec<u8>, Hello)> {
    let mut buf = Vec::with_capacity(2048);
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match parse(&buf) {
                Parse::Hello(h) => return Ok(h),
                Parse::Invalid(why) => return Err(io::Error::new(io::ErrorKind::InvalidData, why)),
                Parse::Incomplete => {}
            }
            if buf.len() > MAX_HELLO + 1024 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "ClientHello too large",
                ));
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before ClientHello",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let hello = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no ClientHello in time"))??;
    Ok((buf, hello))
}

/// Build a minimal ClientHello record (tests and benchmarks): `sni`, optional ECH marker,
/// split into records of at most `record` bytes.
pub fn build_client_hello(sni: Option<&str>, ech: bool, record: usize) -> Vec<u8> {
    let mut exts = Vec::new();
    if let Some(name) = sni {
        let mut list = vec![0u8];
        list.extend_from_slice(&(name.len() as u16).to_be_bytes());
        list.extend_from_slice(name.as_bytes());
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        exts.extend_from_slice(&EXT_SERVER_NAME.to_be_bytes());
        exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
        exts.extend_from_slice(&data);
    }
    if ech {
        exts.extend_from_slice(&EXT_ENCRYPTED_CLIENT_HELLO.to_be_bytes());
        exts.extend_from_slice(&4u16.to_be_bytes());
        exts.extend_from_slice(&[0, 1, 2, 3]);
    }
    // A padding extension makes the hello realistically large.
    exts.extend_from_slice(&21u16.to_be_bytes());
    exts.extend_from_slice(&300u16.to_be_bytes());
    exts.extend_from_slice(&[0u8; 300]);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01]);
    body.extend_from_slice(&[1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![1u8];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut out = Vec::new();
    for chunk in hs.chunks(record.max(1)) {
        out.extend_from_slice(&[0x16, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sni_whole_and_split() {
        for record in [16384, 100, 7] {
            let h = build_client_hello(Some("api.example.com"), false, record);
            assert_eq!(
                parse(&h),
                Parse::Hello(Hello {
                    sni: Some("api.example.com".into()),
                    ech: false
                }),
                "record {record}"
            );
            for cut in [0, 3, 5, h.len() / 2, h.len() - 1] {
                assert_eq!(parse(&h[..cut]), Parse::Incomplete, "cut {cut}");
            }
        }
    }

    #[test]
    fn no_sni_ech_and_garbage() {
        let h = build_client_hello(None, false, 16384);
        assert_eq!(
            parse(&h),
            Parse::Hello(Hello {
                sni: None,
                ech: false
            })
        );
        let h = build_client_hello(Some("public.example"), true, 16384);
        assert_eq!(
            parse(&h),
            Parse::Hello(Hello {
                sni: Some("public.example".into()),
                ech: true
            })
        );
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Parse::Invalid(_)
        ));
        assert!(matches!(
            parse(&[0x16, 3, 1, 0, 4, 2, 0, 0, 0]),
            Parse::Invalid(_)
        ));
    }

    #[tokio::test]
    async fn reads_from_a_stream() {
        let h = build_client_hello(Some("a.test"), false, 50);
        let mut data = h.clone();
        data.extend_from_slice(b"after");
        let mut r = &data[..];
        let (bytes, hello) = read_client_hello(&mut r, Duration::from_secs(1))
            .await
            .expect("hello");
        assert_eq!(hello.sni.as_deref(), Some("a.test"));
        assert!(bytes.starts_with(&h));
        let mut short = &h[..10];
        assert!(
            read_client_hello(&mut short, Duration::from_secs(1))
                .await
                .is_err()
        );
    }
}
