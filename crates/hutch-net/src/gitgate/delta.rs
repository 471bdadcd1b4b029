//! Git's delta format: source and target sizes, then copy (from the base) and insert (new
//! bytes) instructions.

use crate::{Error, Result};

fn bad(reason: impl Into<String>) -> Error {
    Error::GitPush(reason.into())
}

/// One delta instruction.
enum Op<'a> {
    /// Bytes `offset..offset + len` of the base.
    Copy { offset: usize, len: usize },
    /// New bytes.
    Insert(&'a [u8]),
}

/// A parsed delta header and its instructions.
struct Delta<'a> {
    source: usize,
    target: usize,
    ops: &'a [u8],
}

impl<'a> Delta<'a> {
    fn parse(data: &'a [u8]) -> Result<Delta<'a>> {
        let mut pos = 0;
        let source = varint(data, &mut pos)?;
        let target = varint(data, &mut pos)?;
        Ok(Delta {
            source,
            target,
            ops: &data[pos..],
        })
    }

    /// Walk the instructions, checking each against the sizes; `f` sees each one.
    fn walk(&self, mut f: impl FnMut(Op<'a>)) -> Result<()> {
        let ops = self.ops;
        let mut pos = 0;
        let mut produced: usize = 0;
        while pos < ops.len() {
            let cmd = ops[pos];
            pos += 1;
            let op = if cmd & 0x80 != 0 {
                let mut offset = 0usize;
                for i in 0..4 {
                    if cmd & (1 << i) != 0 {
                        offset |= usize::from(*ops.get(pos).ok_or_else(truncated)?) << (8 * i);
                        pos += 1;
                    }
                }
                let mut len = 0usize;
                for i in 0..3 {
                    if cmd & (0x10 << i) != 0 {
                        len |= usize::from(*ops.get(pos).ok_or_else(truncated)?) << (8 * i);
                        pos += 1;
                    }
                }
                if len == 0 {
                    len = 0x10000;
                }
                if offset.checked_add(len).is_none_or(|end| end > self.source) {
                    return Err(bad("delta copies beyond its base"));
                }
                produced += len;
                Op::Copy { offset, len }
            } else if cmd != 0 {
                let bytes = ops.get(pos..pos + usize::from(cmd)).ok_or_else(truncated)?;
                pos += usize::from(cmd);
                produced += bytes.len();
                Op::Insert(bytes)
            } else {
                return Err(bad("reserved delta instruction"));
            };
            if produced > self.target {
                return Err(bad("delta produces more than its target size"));
            }
            f(op);
        }
        if produced != self.target {
            return Err(bad("delta produces less than its target size"));
        }
        Ok(())
    }
}

fn truncated() -> Error {
    bad("delta is truncated")
}

/// The target size a delta announces (checked against the limits before applying it).
pub(crate) fn target_size(delta: &[u8]) -> Result<usize> {
    Delta::parse(delta).map(|d| d.target)
}

/// Apply `delta` to `base`.
pub(crate) fn apply(base: &[u8], delta: &[u8]) -> Result<Vec<u8>> {
    let d = Delta::parse(delta)?;
    if d.source != base.len() {
        return Err(bad("delta base has the wrong size"));
    }
    let mut out = Vec::with_capacity(d.target);
    d.walk(|op| match op {
        // `walk` checked the range against `source`, which is `base.len()`.
        Op::Copy { offset, len } => out.extend_from_slice(&base[offset..offset + len]),
        Op::Insert(bytes) => out.extend_from_slice(bytes),
    })?;
    Ok(out)
}

/// The bytes a delta inserts (what it adds to a base the pack does not hold), concatenated
/// so that a run git split into several inserts is scanned whole.
pub(crate) fn inserted(delta: &[u8]) -> Result<Vec<u8>> {
    let d = Delta::parse(delta)?;
    let mut out = Vec::new();
    d.walk(|op| {
        if let Op::Insert(bytes) = op {
            out.extend_from_slice(bytes);
        }
    })?;
    Ok(out)
}

/// A size: little-endian base-128.
fn varint(data: &[u8], pos: &mut usize) -> Result<usize> {
    let mut value = 0usize;
    let mut shift = 0;
    loop {
        let b = *data.get(*pos).ok_or_else(truncated)?;
        *pos += 1;
        if shift > 56 {
            return Err(bad("delta size overflows"));
        }
        value |= usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_and_inserted() {
        let base = b"hello world";
        // source 11, target 15: copy "hello ", insert "big ", copy "world".
        let mut d = vec![11, 15];
        d.extend([0x80 | 0x10, 6]); // copy offset 0 (no offset bytes), len 6
        d.push(4);
        d.extend(b"big ");
        d.extend([0x80 | 0x01 | 0x10, 6, 5]); // copy offset 6, len 5
        assert_eq!(apply(base, &d).expect("apply"), b"hello big world");
        assert_eq!(inserted(&d).expect("inserted"), b"big ");
        assert_eq!(target_size(&d).expect("size"), 15);
    }

    #[test]
    fn bad_deltas_are_refused() {
        let base = b"hello world";
        for d in [
            vec![11, 5, 0x80 | 0x01 | 0x10, 8, 5], // copy past the base
            vec![11, 5, 0],                        // reserved
            vec![11, 5, 3, b'a', b'b', b'c'],      // short of target
            vec![11, 2, 3, b'a', b'b', b'c'],      // past target
            vec![11, 3, 4, b'a'],                  // truncated insert
            vec![11],                              // truncated header
            vec![11, 3, 0x80 | 0x01 | 0x02],       // truncated copy
        ] {
            assert!(apply(base, &d).is_err(), "{d:?}");
        }
        // Wrong base size.
        assert!(apply(b"hello", &[11, 1, 1, b'x']).is_err());
    }
}
