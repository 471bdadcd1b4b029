//! Packfile reading: the header, each object's header and zlib stream, the trailing checksum.
//! Every size is checked against [`Limits`] before memory is spent on it.

use super::{Kind, Limits, Oid};
use crate::{Error, Result};
use flate2::{Decompress, FlushDecompress, Status};
use sha1::{Digest, Sha1};

fn bad(reason: impl Into<String>) -> Error {
    Error::GitPush(reason.into())
}

/// Where a delta's base is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Base {
    /// An earlier object of this pack (`OFS_DELTA`), by index.
    Index(usize),
    /// An object named by id (`REF_DELTA`): in this pack, or upstream's (a thin pack).
    Id(Oid),
}

/// One object as stored in the pack.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The object's type; `None` for a delta.
    pub kind: Option<Kind>,
    /// A delta's base.
    pub base: Option<Base>,
    /// The inflated data: the object, or the delta's instructions.
    pub data: Vec<u8>,
}

/// Counts inflated bytes against the push's total limit.
pub(crate) struct Budget {
    left: usize,
    limit: usize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Budget {
        Budget { left: limit, limit }
    }

    /// Take `n` bytes from the budget, or fail.
    pub(crate) fn take(&mut self, n: usize) -> Result<()> {
        self.left = self
            .left
            .checked_sub(n)
            .ok_or_else(|| bad(format!("push inflates to more than {} bytes", self.limit)))?;
        Ok(())
    }

    /// Bytes taken so far.
    pub(crate) fn used(&self) -> usize {
        self.limit - self.left
    }
}

/// Read a whole packfile (header, objects, SHA-1 trailer; nothing may follow).
pub(crate) fn read(pack: &[u8], limits: &Limits, budget: &mut Budget) -> Result<Vec<Entry>> {
    if pack.len() < 12 + 20 {
        return Err(bad("packfile is truncated"));
    }
    if &pack[..4] != b"PACK" {
        return Err(bad("no packfile after the commands"));
    }
    let version = u32::from_be_bytes([pack[4], pack[5], pack[6], pack[7]]);
    if version != 2 && version != 3 {
        return Err(bad(format!("packfile version {version} is not supported")));
    }
    let count = u32::from_be_bytes([pack[8], pack[9], pack[10], pack[11]]) as usize;
    if count > limits.max_objects {
        return Err(bad(format!(
            "push has {count} objects, more than the {} allowed",
            limits.max_objects
        )));
    }
    let body_end = pack.len() - 20;
    let sum: [u8; 20] = Sha1::digest(&pack[..body_end]).into();
    if sum[..] != pack[body_end..] {
        return Err(bad("packfile checksum mismatch (truncated or corrupt)"));
    }
    let data = &pack[..body_end];
    let mut entries: Vec<Entry> = Vec::with_capacity(count.min(1 << 16));
    // Start offset of each entry, for OFS_DELTA bases.
    let mut offsets: Vec<usize> = Vec::with_capacity(count.min(1 << 16));
    let mut pos = 12;
    for _ in 0..count {
        let start = pos;
        let (type_id, size) = object_header(data, &mut pos)?;
        let (kind, base) = match type_id {
            1 => (Some(Kind::Commit), None),
            2 => (Some(Kind::Tree), None),
            3 => (Some(Kind::Blob), None),
            4 => (Some(Kind::Tag), None),
            6 => {
                let back = ofs_distance(data, &mut pos)?;
                let target = start
                    .checked_sub(back)
                    .ok_or_else(|| bad("delta base before the packfile"))?;
                let index = offsets
                    .binary_search(&target)
                    .map_err(|_| bad("delta base is not an object of the pack"))?;
                (None, Some(Base::Index(index)))
            }
            7 => {
                let id: Oid = data
                    .get(pos..pos + 20)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| bad("packfile is truncated"))?;
                pos += 20;
                (None, Some(Base::Id(id)))
            }
            t => return Err(bad(format!("unknown object type {t} in packfile"))),
        };
        if size > limits.max_object_size {
            return Err(bad(format!(
                "an object of {size} bytes is over the {} byte limit",
                limits.max_object_size
            )));
        }
        budget.take(size)?;
        let (inflated, used) = inflate(&data[pos..], size)?;
        pos += used;
        offsets.push(start);
        entries.push(Entry {
            kind,
            base,
            data: inflated,
        });
    }
    if pos != data.len() {
        return Err(bad("unexpected data after the packfile's objects"));
    }
    Ok(entries)
}

/// An object header: type (3 bits) and inflated size (little-endian base-128).
fn object_header(data: &[u8], pos: &mut usize) -> Result<(u8, usize)> {
    let mut byte = next(data, pos)?;
    let type_id = (byte >> 4) & 7;
    let mut size = usize::from(byte & 0x0f);
    let mut shift = 4;
    while byte & 0x80 != 0 {
        byte = next(data, pos)?;
        if shift > 56 {
            return Err(bad("object size overflows"));
        }
        size |= usize::from(byte & 0x7f) << shift;
        shift += 7;
    }
    Ok((type_id, size))
}

/// The backwards distance of an `OFS_DELTA` base (big-endian base-128, each continuation
/// adding one, as git writes it).
fn ofs_distance(data: &[u8], pos: &mut usize) -> Result<usize> {
    let mut byte = next(data, pos)?;
    let mut dist = usize::from(byte & 0x7f);
    while byte & 0x80 != 0 {
        byte = next(data, pos)?;
        dist = dist
            .checked_add(1)
            .and_then(|d| d.checked_mul(128))
            .map(|d| d | usize::from(byte & 0x7f))
            .filter(|d| *d < 1 << 48)
            .ok_or_else(|| bad("delta base offset overflows"))?;
    }
    Ok(dist)
}

fn next(data: &[u8], pos: &mut usize) -> Result<u8> {
    let b = *data.get(*pos).ok_or_else(|| bad("packfile is truncated"))?;
    *pos += 1;
    Ok(b)
}

/// Inflate one zlib stream that must hold exactly `size` bytes; the data and the number of
/// compressed bytes it took.
fn inflate(input: &[u8], size: usize) -> Result<(Vec<u8>, usize)> {
    let mut z = Decompress::new(true);
    // One spare byte shows a stream longer than announced.
    let mut out = Vec::with_capacity(size + 1);
    loop {
        let in_before = z.total_in();
        let out_before = z.total_out();
        let consumed = usize::try_from(in_before).map_err(|_| bad("zlib stream too long"))?;
        let status = z
            .decompress_vec(&input[consumed..], &mut out, FlushDecompress::None)
            .map_err(|_| bad("corrupt zlib stream in packfile"))?;
        if out.len() > size {
            return Err(bad("object is larger than its header says"));
        }
        match status {
            Status::StreamEnd => break,
            Status::Ok | Status::BufError => {
                if z.total_in() == in_before && z.total_out() == out_before {
                    return Err(bad("packfile is truncated inside an object"));
                }
            }
        }
    }
    if out.len() != size {
        return Err(bad("object is smaller than its header says"));
    }
    let used = usize::try_from(z.total_in()).map_err(|_| bad("zlib stream too long"))?;
    Ok((out, used))
}
