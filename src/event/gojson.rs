//! JSON written the way Go's `encoding/json` writes it, so bodies match Flipt's webhook byte for byte.
//!
//! Go escapes `<`, `>`, `&`, U+2028 and U+2029 inside strings (`\u003c` ...), which serde_json does
//! not. Two tools here: [`compact`] rewrites JSON *text* (keeping key order and number spelling, as
//! SPEC §1.2 asks for `metadata` and `payload`), and [`GoFormatter`] makes serde_json serialize values
//! with Go's escaping (for strings we build and for the `toJson` template filter).

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter};
use std::io;

/// Appends `json` (valid JSON text) compacted and Go-escaped: whitespace between tokens is dropped,
/// and inside strings `<` `>` `&` U+2028 U+2029 become `\u003c` `\u003e` `\u0026` `\u2028` `\u2029`.
/// Existing escapes are kept as written.
///
/// Runs of bytes that stay as they are are copied whole; text is only cut where a byte is dropped
/// or replaced, always before an ASCII byte or the first byte of U+2028/U+2029, so every piece is
/// whole characters.
pub fn compact(json: &str, out: &mut String) {
    let bytes = json.as_bytes();
    out.reserve(bytes.len());
    let mut in_string = false;
    // The start of the run not yet copied.
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !in_string {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => {
                    out.push_str(&json[run..i]);
                    run = i + 1;
                }
                b'"' => in_string = true,
                _ => {}
            }
            i += 1;
            continue;
        }
        if !STRING_STOPS[b as usize] {
            i += 1;
            continue;
        }
        let escaped: &str = match b {
            // An escape is kept as written; the byte after `\` never ends the string.
            b'\\' => {
                i += 2;
                continue;
            }
            b'"' => {
                in_string = false;
                i += 1;
                continue;
            }
            b'<' => "\\u003c",
            b'>' => "\\u003e",
            b'&' => "\\u0026",
            _ => match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(0x80), Some(0xA8)) => "\\u2028",
                (Some(0x80), Some(0xA9)) => "\\u2029",
                _ => {
                    i += 1;
                    continue;
                }
            },
        };
        out.push_str(&json[run..i]);
        out.push_str(escaped);
        i += if b == 0xE2 { 3 } else { 1 };
        run = i;
    }
    out.push_str(json.get(run..).unwrap_or_default());
}

/// Bytes inside a string that Go writes otherwise: `<`, `>`, `&`, and 0xE2, the first byte of
/// U+2028 and U+2029 (the two after it tell). The one list [`compact`], [`write_str`] and the
/// line scanner go by.
pub const GO_ESCAPES: [u8; 4] = [b'<', b'>', b'&', 0xE2];

/// Bytes inside a string that [`compact`] must look at: `\\`, `"` and [`GO_ESCAPES`].
const STRING_STOPS: [bool; 256] = {
    let mut t = [false; 256];
    t[b'\\' as usize] = true;
    t[b'"' as usize] = true;
    let mut i = 0;
    while i < GO_ESCAPES.len() {
        t[GO_ESCAPES[i] as usize] = true;
        i += 1;
    }
    t
};

/// serde_json's compact output with Go's HTML-safe string escaping.
#[derive(Debug, Default, Clone, Copy)]
pub struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let esc: &[u8] = match c {
                '<' => b"\\u003c",
                '>' => b"\\u003e",
                '&' => b"\\u0026",
                '\u{2028}' => b"\\u2028",
                '\u{2029}' => b"\\u2029",
                _ => continue,
            };
            w.write_all(&fragment.as_bytes()[start..i])?;
            w.write_all(esc)?;
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        CompactFormatter.write_f64(w, value)
    }
}

/// Serializes `value` as Go's `json.Marshal` would (compact, HTML-safe escapes).
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    value.serialize(&mut ser)?;
    Ok(out)
}

/// Appends `s` as a Go-escaped JSON string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    // Printable ASCII with nothing to escape (a version, a type, a timestamp) goes as it is.
    let plain =
        |b: &u8| matches!(b, b' '..=b'~') && !matches!(b, b'"' | b'\\') && !GO_ESCAPES.contains(b);
    if s.as_bytes().iter().all(plain) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, GoFormatter);
    // Writing a &str into a Vec cannot fail.
    let _ = s.serialize(&mut ser);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compacted(s: &str) -> String {
        let mut out = String::new();
        compact(s, &mut out);
        out
    }

    #[test]
    fn compact_keeps_order_and_numbers_and_escapes_html() {
        assert_eq!(
            compacted("{\"z\": 1.50, \"a\" : [ 1e3, true ],\n \"s\": \"a <b> & c \\\" \\u003c\"}"),
            r#"{"z":1.50,"a":[1e3,true],"s":"a \u003cb\u003e \u0026 c \" \u003c"}"#
        );
        assert_eq!(
            compacted("\"line\u{2028}sep\u{2029}\""),
            r#""line\u2028sep\u2029""#
        );
        assert_eq!(compacted(r#""back\\slash" "#), r#""back\\slash""#);
    }

    #[test]
    fn formatter_escapes_like_go() {
        let v = serde_json::json!({"b": "x<y>&z\u{2028}", "a": 1});
        assert_eq!(
            String::from_utf8(to_vec(&v).unwrap()).unwrap(),
            r#"{"a":1,"b":"x\u003cy\u003e\u0026z\u2028"}"#
        );
        for (text, want) in [
            ("tab\there", r#""tab\there""#),
            ("2026-11-23T06:00:07Z", r#""2026-11-23T06:00:07Z""#),
            ("a\"b\\c<d>&", r#""a\"b\\c\u003cd\u003e\u0026""#),
            ("é\u{2028}", r#""é\u2028""#),
            ("", r#""""#),
        ] {
            let mut out = Vec::new();
            write_str(&mut out, text);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }
}
