//! Request bodies sent with a `Content-Encoding`: which codings the HTTP source takes (`gzip`,
//! `x-gzip`, `deflate`, `identity`), and decoding them with the decoded size held to a bound.
//!
//! `deflate` is the zlib format (RFC 9110 §8.4.1.2); a raw deflate stream, which some senders
//! write instead, is taken too. Several codings are undone last first, at most [`MAX_CODINGS`].
//! It does not read the body from the connection nor answer the request.

use bytes::Bytes;
use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use http::HeaderMap;
use std::io::Read;

/// Codings one body may carry, stacked; more are refused (each one costs a pass over the body).
pub const MAX_CODINGS: usize = 3;

/// A content coding the source can undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Deflate,
}

/// The codings of a request's body, in the order they were applied.
#[derive(Debug, Default, Clone)]
pub struct Codings(Vec<Coding>);

/// Why a body cannot be decoded.
#[derive(Debug)]
pub enum DecodeError {
    /// The decoded body is over the bound.
    TooLarge,
    /// The bytes are not what the coding says (the reason).
    Corrupt(String),
}

impl Codings {
    /// The codings `Content-Encoding` names, or the first one that is not taken (its name, as
    /// sent, cut to 64 bytes).
    pub fn of(headers: &HeaderMap) -> Result<Codings, String> {
        let mut codings = Vec::new();
        for value in headers.get_all(http::header::CONTENT_ENCODING) {
            let text = value.to_str().map_err(|_| "(not text)".to_string())?;
            for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                codings.push(match name.to_ascii_lowercase().as_str() {
                    "gzip" | "x-gzip" => Coding::Gzip,
                    "deflate" => Coding::Deflate,
                    "identity" => continue,
                    _ => return Err(name.chars().take(64).collect()),
                });
            }
        }
        if codings.len() > MAX_CODINGS {
            return Err(format!("{} codings stacked", codings.len()));
        }
        Ok(Codings(codings))
    }

    /// Whether the body is sent as is.
    pub fn is_identity(&self) -> bool {
        self.0.is_empty()
    }

    /// `body` with every coding undone, last applied first; at most `max` bytes at every step.
    pub fn decode(&self, body: Bytes, max: usize) -> Result<Bytes, DecodeError> {
        let mut data = body;
        for coding in self.0.iter().rev() {
            data = match coding {
                Coding::Gzip => bounded(MultiGzDecoder::new(&data[..]), max, "gzip")?,
                Coding::Deflate if is_zlib(&data) => {
                    bounded(ZlibDecoder::new(&data[..]), max, "deflate")?
                }
                Coding::Deflate => bounded(DeflateDecoder::new(&data[..]), max, "deflate")?,
            };
        }
        Ok(data)
    }
}

/// Whether `data` opens with a zlib header (RFC 1950: method 8, check bits).
fn is_zlib(data: &[u8]) -> bool {
    matches!(data, [cmf, flg, ..] if cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0)
}

/// Everything `reader` yields, if that is at most `max` bytes (reading stops one byte past it).
fn bounded(reader: impl Read, max: usize, coding: &str) -> Result<Bytes, DecodeError> {
    let mut out = Vec::new();
    reader
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Corrupt(format!("the {coding} body does not decode: {e}")))?;
    if out.len() > max {
        return Err(DecodeError::TooLarge);
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use std::io::Write;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_ENCODING, value.parse().unwrap());
        h
    }

    fn gzip(data: &[u8]) -> Bytes {
        let mut w = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
        w.write_all(data).unwrap();
        w.finish().unwrap().into()
    }

    #[test]
    fn codings_are_named_or_refused_by_name() {
        assert!(Codings::of(&HeaderMap::new()).unwrap().is_identity());
        assert!(Codings::of(&headers("identity")).unwrap().is_identity());
        assert_eq!(Codings::of(&headers("GZip, deflate")).unwrap().0.len(), 2);
        assert_eq!(Codings::of(&headers("gzip, br")).unwrap_err(), "br");
        assert!(Codings::of(&headers("gzip,gzip,gzip,gzip")).is_err());
    }

    #[test]
    fn bodies_decode_within_the_bound() {
        let text = b"{\"a\":1}".repeat(100);
        let gz = gzip(&text);
        let codings = Codings(vec![Coding::Gzip]);
        assert_eq!(codings.decode(gz.clone(), 700).unwrap(), &text[..]);
        assert!(matches!(
            codings.decode(gz, 699),
            Err(DecodeError::TooLarge)
        ));
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(&text).unwrap();
        let z = Bytes::from(z.finish().unwrap());
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
        raw.write_all(&text).unwrap();
        let raw = Bytes::from(raw.finish().unwrap());
        let deflate = Codings(vec![Coding::Deflate]);
        assert_eq!(deflate.decode(z, 700).unwrap(), &text[..]);
        assert_eq!(deflate.decode(raw, 700).unwrap(), &text[..]);
        assert!(matches!(
            codings.decode(Bytes::from_static(b"not gzip"), 700),
            Err(DecodeError::Corrupt(_))
        ));
    }
}
