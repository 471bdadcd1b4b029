//! The receive-pack request's command section (pkt-lines before the pack) and the
//! report-status answer git prints when a push is refused.

use crate::{Error, Result};

/// An all-zero object id: the old side of a created ref, the new side of a deleted one.
const ZERO_OID: &str = "0000000000000000000000000000000000000000";
/// Largest pkt-line (length prefix included), per git's protocol.
const MAX_PKT: usize = 65520;
/// Payload of one side-band packet: the pkt-line less its prefix and the band byte.
const SIDEBAND_64K_DATA: usize = MAX_PKT - 5;
/// The same for the old 1000-byte `side-band`.
const SIDEBAND_DATA: usize = 1000 - 5;

/// Content type of git's answer to a receive-pack request.
pub const RESULT_CONTENT_TYPE: &str = "application/x-git-receive-pack-result";

fn bad(reason: impl Into<String>) -> Error {
    Error::GitPush(reason.into())
}

/// One pkt-line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pkt<'a> {
    /// `0000`: end of a section.
    Flush,
    /// A data line.
    Data(&'a [u8]),
}

/// Reads pkt-lines from the start of a buffer.
pub(crate) struct PktReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> PktReader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> PktReader<'a> {
        PktReader { buf, pos: 0 }
    }

    /// The next pkt-line; an error at the end of the buffer or on a malformed length.
    pub(crate) fn next_pkt(&mut self) -> Result<Pkt<'a>> {
        let head = self
            .buf
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| bad("command list is truncated"))?;
        let len = std::str::from_utf8(head)
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
            .ok_or_else(|| bad("malformed pkt-line length"))?;
        match len {
            0 => {
                self.pos += 4;
                Ok(Pkt::Flush)
            }
            // Delim and response-end belong to protocol v2, which push does not use.
            1..=4 => Err(bad(format!("unexpected pkt-line of length {len}"))),
            _ if len > MAX_PKT => Err(bad("pkt-line too long")),
            _ => {
                let data = self
                    .buf
                    .get(self.pos + 4..self.pos + len)
                    .ok_or_else(|| bad("command list is truncated"))?;
                self.pos += len;
                Ok(Pkt::Data(data))
            }
        }
    }

    /// Offset of the first unread byte.
    pub(crate) fn offset(&self) -> usize {
        self.pos
    }
}

/// Append `data` as one pkt-line.
fn write_pkt(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:04x}", data.len() + 4).as_bytes());
    out.extend_from_slice(data);
}

/// One ref update of a push.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RefUpdate {
    /// The ref's current id upstream (all zeros: create).
    pub old: String,
    /// The id the ref should get (all zeros: delete).
    pub new: String,
    /// The ref, e.g. `refs/heads/main`.
    pub name: String,
}

impl RefUpdate {
    /// Whether this update deletes the ref (and so needs no objects).
    pub fn is_delete(&self) -> bool {
        self.new == ZERO_OID
    }
}

/// The command section of a receive-pack request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PushCommands {
    /// The ref updates, in request order.
    pub updates: Vec<RefUpdate>,
    /// Capabilities the client asked for (`report-status`, `side-band-64k`, ...).
    pub capabilities: Vec<String>,
    /// Push options (`git push -o`), if any.
    pub options: Vec<String>,
    /// Offset of the packfile in the body (the body's length when there is none).
    pub pack_offset: usize,
}

impl PushCommands {
    /// Parse the command section of a receive-pack request body.
    pub fn parse(body: &[u8]) -> Result<PushCommands> {
        let mut r = PktReader::new(body);
        let mut updates = Vec::new();
        let mut capabilities: Vec<String> = Vec::new();
        loop {
            let line = match r.next_pkt()? {
                Pkt::Flush => break,
                Pkt::Data(d) => d,
            };
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            if updates.is_empty() && line.starts_with(b"push-cert") {
                // A signed push covers the commands with a signature the gate cannot redo.
                return Err(bad("signed pushes (push-cert) are not supported"));
            }
            if updates.is_empty() && line.starts_with(b"shallow ") {
                continue;
            }
            let (cmd, caps) = match line.iter().position(|&b| b == 0) {
                Some(i) if updates.is_empty() => (&line[..i], Some(&line[i + 1..])),
                Some(_) => return Err(bad("capabilities after the first command")),
                None => (line, None),
            };
            if let Some(caps) = caps {
                let caps =
                    std::str::from_utf8(caps).map_err(|_| bad("capabilities are not text"))?;
                capabilities = caps.split_ascii_whitespace().map(str::to_string).collect();
            }
            updates.push(parse_update(cmd)?);
        }
        if updates.is_empty() {
            return Err(bad("push without commands"));
        }
        if let Some(format) = capabilities
            .iter()
            .find_map(|c| c.strip_prefix("object-format="))
            && format != "sha1"
        {
            return Err(bad(format!("object format {format} is not supported")));
        }
        let mut options = Vec::new();
        if capabilities.iter().any(|c| c == "push-options") {
            loop {
                match r.next_pkt()? {
                    Pkt::Flush => break,
                    Pkt::Data(d) => options.push(String::from_utf8_lossy(d).into_owned()),
                }
            }
        }
        Ok(PushCommands {
            updates,
            capabilities,
            options,
            pack_offset: r.offset(),
        })
    }

    fn has(&self, cap: &str) -> bool {
        self.capabilities.iter().any(|c| c == cap)
    }

    /// Whether every update is a delete (then no packfile follows).
    pub fn deletes_only(&self) -> bool {
        self.updates.iter().all(RefUpdate::is_delete)
    }

    /// Whether the client asked for per-ref status, which is how it shows a refusal.
    pub fn wants_report(&self) -> bool {
        self.has("report-status") || self.has("report-status-v2")
    }
}

fn parse_update(cmd: &[u8]) -> Result<RefUpdate> {
    let text = std::str::from_utf8(cmd).map_err(|_| bad("command is not text"))?;
    let mut parts = text.splitn(3, ' ');
    let (Some(old), Some(new), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("malformed command"));
    };
    let is_oid = |s: &str| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_oid(old) || !is_oid(new) || name.is_empty() {
        return Err(bad("malformed command"));
    }
    Ok(RefUpdate {
        old: old.to_string(),
        new: new.to_string(),
        name: name.to_string(),
    })
}

/// The answer refusing every ref of a push, so that `git push` prints
/// `! [remote rejected] <ref> (<reason>)` and `message` as `remote:` lines (when the client
/// asked for side-band). `unpack_error` reports a pack the gate could not read (git prints
/// `remote unpack failed: ...`); `None` reports `unpack ok`, as a refusing hook does. Returns
/// the content type and the body of a 200 response. Only meaningful when
/// [`PushCommands::wants_report`].
pub fn rejection(
    commands: &PushCommands,
    reason: &str,
    unpack_error: Option<&str>,
    message: &str,
) -> (&'static str, Vec<u8>) {
    let reason = one_line(reason);
    let mut report = Vec::new();
    match unpack_error {
        None => write_pkt(&mut report, b"unpack ok\n"),
        Some(e) => write_pkt(&mut report, format!("unpack {}\n", one_line(e)).as_bytes()),
    }
    for u in &commands.updates {
        // A ref name is at most a few hundred bytes; a pkt-line takes 65516.
        let line = format!("ng {} {}\n", one_line(&u.name), reason);
        write_pkt(&mut report, &line.as_bytes()[..line.len().min(MAX_PKT - 4)]);
    }
    report.extend_from_slice(b"0000");
    let chunk = if commands.has("side-band-64k") {
        SIDEBAND_64K_DATA
    } else if commands.has("side-band") {
        SIDEBAND_DATA
    } else {
        return (RESULT_CONTENT_TYPE, report);
    };
    let mut out = Vec::with_capacity(report.len() + message.len() + 64);
    // Band 2 is what git prints as `remote:` lines; band 1 carries the report.
    for line in message.lines() {
        write_band(
            &mut out,
            2,
            format!("{}\n", one_line(line)).as_bytes(),
            chunk,
        );
    }
    write_band(&mut out, 1, &report, chunk);
    out.extend_from_slice(b"0000");
    (RESULT_CONTENT_TYPE, out)
}

/// Append `data` on side-band `band`, in packets of at most `chunk` bytes.
fn write_band(out: &mut Vec<u8>, band: u8, data: &[u8], chunk: usize) {
    for part in data.chunks(chunk) {
        let mut pkt = Vec::with_capacity(part.len() + 1);
        pkt.push(band);
        pkt.extend_from_slice(part);
        write_pkt(out, &pkt);
    }
}

/// `s` on one line of printable ASCII (git prints it in a terminal).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(1000)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(s: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        write_pkt(&mut v, s);
        v
    }

    #[test]
    fn commands_caps_options_and_pack_offset() {
        let a = "1".repeat(40);
        let b = "2".repeat(40);
        let mut body = pkt(format!(
            "{a} {b} refs/heads/main\0report-status side-band-64k push-options"
        )
        .as_bytes());
        body.extend(pkt(format!("{ZERO_OID} {b} refs/heads/x\n").as_bytes()));
        body.extend(b"0000");
        body.extend(pkt(b"ci.skip"));
        body.extend(b"0000PACK");
        let c = PushCommands::parse(&body).expect("parse");
        assert_eq!(c.updates.len(), 2);
        assert_eq!(c.updates[1].name, "refs/heads/x");
        assert_eq!(c.options, vec!["ci.skip".to_string()]);
        assert_eq!(&body[c.pack_offset..], b"PACK");
        assert!(c.wants_report());
        assert!(!c.deletes_only());
    }

    #[test]
    fn malformed_command_sections_are_refused() {
        let a = "1".repeat(40);
        for body in [
            b"".to_vec(),
            b"0000".to_vec(),
            b"00zz".to_vec(),
            b"0003".to_vec(),
            pkt(format!("{a} {a} refs/heads/main").as_bytes())[..20].to_vec(),
            pkt(format!("{a} {a} refs/heads/main").as_bytes()), // no flush
            [
                pkt(format!("{a} xx refs/heads/main").as_bytes()),
                b"0000".to_vec(),
            ]
            .concat(),
            [pkt(b"push-cert\0report-status"), b"0000".to_vec()].concat(),
            [
                pkt(format!("{a} {a} refs/heads/main\0object-format=sha256").as_bytes()),
                b"0000".to_vec(),
            ]
            .concat(),
        ] {
            assert!(PushCommands::parse(&body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn rejection_is_framed_for_the_client() {
        let a = "1".repeat(40);
        let body = [
            pkt(format!("{a} {a} refs/heads/main\0report-status-v2 side-band-64k").as_bytes()),
            b"0000".to_vec(),
        ]
        .concat();
        let c = PushCommands::parse(&body).expect("parse");
        let (ct, out) = rejection(&c, "secret found", None, "line one\nline two");
        assert_eq!(ct, RESULT_CONTENT_TYPE);
        let mut r = PktReader::new(&out);
        assert_eq!(r.next_pkt().expect("pkt"), Pkt::Data(b"\x02line one\n"));
        assert_eq!(r.next_pkt().expect("pkt"), Pkt::Data(b"\x02line two\n"));
        let Pkt::Data(report) = r.next_pkt().expect("pkt") else {
            panic!("no report")
        };
        assert_eq!(report[0], 1);
        let mut inner = PktReader::new(&report[1..]);
        assert_eq!(inner.next_pkt().expect("pkt"), Pkt::Data(b"unpack ok\n"));
        assert_eq!(
            inner.next_pkt().expect("pkt"),
            Pkt::Data(b"ng refs/heads/main secret found\n")
        );
        assert_eq!(inner.next_pkt().expect("pkt"), Pkt::Flush);
        assert_eq!(r.next_pkt().expect("pkt"), Pkt::Flush);
        assert_eq!(r.offset(), out.len());
    }
}
