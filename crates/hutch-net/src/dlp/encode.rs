//! Encoded forms of a registered secret's value that the scanner also looks for.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// Shortest encoded fragment worth matching: shorter ones would match by chance.
const MIN_FRAGMENT: usize = 8;

/// How a secret appeared in the scanned bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The value itself.
    Raw,
    /// Base64 (standard or URL-safe alphabet, at any alignment inside a longer encoding).
    Base64,
    /// Percent-encoded (as in a URL or a form body).
    Url,
    /// Hexadecimal (lower or upper case).
    Hex,
}

/// Every byte string that, found in scanned text, reveals `value`.
pub(crate) fn variants(value: &[u8]) -> Vec<(Vec<u8>, Encoding)> {
    let mut out: Vec<(Vec<u8>, Encoding)> = vec![(value.to_vec(), Encoding::Raw)];
    // Base64 at the three alignments the value can have inside a longer encoded string
    // (e.g. `user:secret` in Basic auth): keep only the characters fully determined by the
    // value's own bits.
    for shift in 0..3usize {
        let mut buf = vec![0u8; shift];
        buf.extend_from_slice(value);
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let enc = engine.encode(&buf);
            let first = (8 * shift).div_ceil(6);
            let last = (8 * (shift + value.len())) / 6; // exclusive
            if last > first && last - first >= MIN_FRAGMENT {
                out.push((enc.as_bytes()[first..last].to_vec(), Encoding::Base64));
            }
        }
    }
    // Percent-encoding, upper- and lower-case hex digits.
    let upper = percent_encode(value, b"0123456789ABCDEF");
    let lower = percent_encode(value, b"0123456789abcdef");
    out.push((upper, Encoding::Url));
    out.push((lower, Encoding::Url));
    // Hex.
    out.push((hex::encode(value).into_bytes(), Encoding::Hex));
    out.push((hex::encode_upper(value).into_bytes(), Encoding::Hex));
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

/// Percent-encode everything but RFC 3986's unreserved characters.
fn percent_encode(value: &[u8], digits: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() * 3);
    for &b in value {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.push(b'%');
            out.push(digits[usize::from(b >> 4)]);
            out.push(digits[usize::from(b & 15)]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn base64_fragments_found_at_every_alignment() {
        let secret = b"s3cr3t-value-XYZ";
        let vs = variants(secret);
        for prefix in ["", "a", "ab", "abc", "user:"] {
            let mut plain = prefix.as_bytes().to_vec();
            plain.extend_from_slice(secret);
            plain.extend_from_slice(b"trailer");
            let enc = STANDARD.encode(&plain);
            assert!(
                vs.iter().any(|(v, e)| *e == Encoding::Base64
                    && enc.as_bytes().windows(v.len()).any(|w| w == v)),
                "prefix {prefix:?}: {enc}"
            );
        }
    }

    #[test]
    fn url_and_hex() {
        let vs = variants(b"a b/c+d=e");
        assert!(vs.iter().any(|(v, _)| v == b"a%20b%2Fc%2Bd%3De"));
        assert!(vs.iter().any(|(v, _)| v == b"a%20b%2fc%2bd%3de"));
        assert!(
            vs.iter()
                .any(|(v, _)| v == hex::encode("a b/c+d=e").as_bytes())
        );
    }
}
