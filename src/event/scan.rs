//! A strict JSON scanner for one line: where each top-level field's value starts and ends,
//! checked against the JSON grammar (RFC 8259, as serde_json accepts it, at any depth) without
//! building anything.
//!
//! It also notes, for each value, whether its text is already what [`super::gojson::compact`]
//! would write (no whitespace between tokens, nothing inside a string that Go escapes), so an
//! event can keep those bytes as they are instead of compacting them again.

use super::gojson::GO_ESCAPES;
use std::borrow::Cow;
use std::fmt;

/// One scanned value (or key).
#[derive(Debug, Clone, Copy)]
pub struct Value<'a> {
    /// The value's JSON text, from its first byte to its last.
    pub text: &'a str,
    /// No whitespace between tokens and no `<`, `>`, `&` or U+2028/U+2029 inside a string:
    /// compaction would copy the text unchanged.
    pub compact: bool,
    /// A string written with escapes (`\n`, `\u00e9`): its contents are not its text.
    pub escaped: bool,
}

impl<'a> Value<'a> {
    /// The contents of a string value without escapes, borrowed from the line.
    pub fn plain_str(&self) -> Option<&'a str> {
        if self.escaped {
            return None;
        }
        self.text.strip_prefix('"')?.strip_suffix('"')
    }
}

/// Why a line is not the JSON object an event is.
#[derive(Debug)]
pub enum Malformed {
    /// Not JSON at all.
    Syntax(SyntaxError),
    /// Valid JSON, but not an object.
    NotAnObject,
}

/// Where a line stops being JSON, and why.
#[derive(Debug)]
pub struct SyntaxError {
    pub reason: &'static str,
    /// Byte offset in the line.
    pub at: usize,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at column {}", self.reason, self.at + 1)
    }
}

impl From<SyntaxError> for Malformed {
    fn from(e: SyntaxError) -> Malformed {
        Malformed::Syntax(e)
    }
}

/// Scans `line` as one JSON object, appending its fields in the order written: each key's
/// contents (borrowed unless written with escapes) and its value.
pub fn object<'a>(
    line: &'a str,
    fields: &mut Vec<(Cow<'a, str>, Value<'a>)>,
) -> Result<(), Malformed> {
    let mut s = Scanner::new(line);
    s.object(fields).map_err(|reason| match reason {
        NOT_AN_OBJECT => Malformed::NotAnObject,
        reason => Malformed::Syntax(SyntaxError { reason, at: s.at }),
    })
}

/// Why the scan stopped (the scanner is left where it did).
type Reason = &'static str;

/// Not a [`SyntaxError`]: the line is JSON, but not an object.
const NOT_AN_OBJECT: Reason = "not an object";

/// A cursor over the line's bytes.
struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    /// Cleared by whitespace or a byte Go escapes, since the current top-level value began.
    compact: bool,
    /// Set by an escape, since the current top-level key or value began.
    escaped: bool,
}

/// The open arrays and objects around the scanner, one bit each (set for an object), so any
/// depth is scanned without recursion and the usual few levels without allocating.
#[derive(Default)]
struct Nesting {
    depth: usize,
    first: u64,
    deeper: Vec<u64>,
}

impl Nesting {
    fn push(&mut self, object: bool) {
        let (word, bit) = (self.depth / 64, 1u64 << (self.depth % 64));
        let slot = if word == 0 {
            &mut self.first
        } else {
            if self.deeper.len() < word {
                self.deeper.resize(word, 0);
            }
            &mut self.deeper[word - 1]
        };
        if object {
            *slot |= bit;
        } else {
            *slot &= !bit;
        }
        self.depth += 1;
    }

    /// Whether the innermost open value is an object; `None` at the top.
    fn innermost(&self) -> Option<bool> {
        let d = self.depth.checked_sub(1)?;
        let word = match d / 64 {
            0 => self.first,
            w => *self.deeper.get(w - 1)?,
        };
        Some(word & (1u64 << (d % 64)) != 0)
    }

    fn pop(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }
}

/// What a byte inside a string is to the scanner.
const ORDINARY: u8 = 0;
const QUOTE: u8 = 1;
const BACKSLASH: u8 = 2;
const CONTROL: u8 = 3;
/// One of [`GO_ESCAPES`] (0xE2 also starts other characters, which only costs a compaction that
/// changes nothing).
const GO_ESCAPED: u8 = 4;

const IN_STRING: [u8; 256] = {
    let mut t = [ORDINARY; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = CONTROL;
        b += 1;
    }
    t[b'"' as usize] = QUOTE;
    t[b'\\' as usize] = BACKSLASH;
    let mut i = 0;
    while i < GO_ESCAPES.len() {
        t[GO_ESCAPES[i] as usize] = GO_ESCAPED;
        i += 1;
    }
    t
};

/// Where the run of ordinary string bytes starting at `at` ends: sixteen bytes at a time where
/// the CPU compares sixteen at once, then eight at a time, then the last few one at a time.
#[inline(always)]
fn ordinary_run(bytes: &[u8], mut at: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    while let Some(chunk) = bytes.get(at..at + 16) {
        match sixteen_lookouts(chunk) {
            0 => at += 16,
            found => return at + found.trailing_zeros() as usize,
        }
    }
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        match lookouts(u64::from_le_bytes(word)) {
            0 => at += 8,
            found => return at + (found.trailing_zeros() / 8) as usize,
        }
    }
    while let Some(&b) = bytes.get(at) {
        if IN_STRING[b as usize] != ORDINARY {
            break;
        }
        at += 1;
    }
    at
}

/// The high bit of each of eight string bytes (the first in the low byte) that is not
/// [`ORDINARY`]: `"`, `\`, a control character, a byte Go escapes. Bits above the lowest set one
/// may be false alarms; the lowest is exact.
#[inline(always)]
fn lookouts(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |v: u64, n: u8| v.wrapping_sub(ONES * n as u64) & !v & HIGH;
    let equal = |c: u8| below(w ^ (ONES * c as u64), 1);
    let [lt, gt, amp, e2] = GO_ESCAPES;
    below(w, 0x20) | equal(b'"') | equal(b'\\') | equal(lt) | equal(gt) | equal(amp) | equal(e2)
}

/// One bit per byte of `chunk` (sixteen of them, the first in the low bit) that is not
/// [`ORDINARY`], exactly: SSE2, which every x86-64 CPU has.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn sixteen_lookouts(chunk: &[u8]) -> u32 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    assert_eq!(chunk.len(), 16);
    // SAFETY: SSE2 is part of every x86-64 CPU (the baseline rustc compiles for), and the one
    // load reads the sixteen bytes of `chunk` (unaligned loads may start anywhere).
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>());
        let equal = |c: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8));
        // A byte below 0x20 is its own minimum with 0x1F.
        let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1F)), v);
        let [lt, gt, amp, e2] = GO_ESCAPES;
        let escaped = _mm_or_si128(
            _mm_or_si128(equal(lt), equal(gt)),
            _mm_or_si128(equal(amp), equal(e2)),
        );
        let quoting = _mm_or_si128(_mm_or_si128(equal(b'"'), equal(b'\\')), control);
        _mm_movemask_epi8(_mm_or_si128(quoting, escaped)) as u32
    }
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Scanner<'a> {
        Scanner {
            text,
            bytes: text.as_bytes(),
            at: 0,
            compact: true,
            escaped: false,
        }
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// The top-level object, as [`object`] describes it.
    fn object(&mut self, fields: &mut Vec<(Cow<'a, str>, Value<'a>)>) -> Result<(), Reason> {
        self.whitespace();
        match self.peek() {
            Some(b'{') => self.at += 1,
            None => return Err("EOF while parsing a value"),
            Some(_) => {
                self.value()?;
                self.whitespace();
                return Err(match self.peek() {
                    None => NOT_AN_OBJECT,
                    Some(_) => "trailing characters",
                });
            }
        }
        self.whitespace();
        if self.peek() == Some(b'}') {
            self.at += 1;
        } else {
            loop {
                let start = self.at;
                self.escaped = false;
                self.key_string()?;
                let key = match self.escaped {
                    // Between the quotes.
                    false => {
                        Cow::Borrowed(self.text.get(start + 1..self.at - 1).unwrap_or_default())
                    }
                    true => self
                        .text
                        .get(start..self.at)
                        .and_then(|text| serde_json::from_str::<String>(text).ok())
                        .map(Cow::Owned)
                        .ok_or("key is not valid Unicode")?,
                };
                self.colon()?;
                self.whitespace();
                let start = self.at;
                (self.compact, self.escaped) = (true, false);
                self.value()?;
                fields.push((
                    key,
                    Value {
                        // Both ends are next to ASCII bytes, so on character boundaries.
                        text: self.text.get(start..self.at).unwrap_or_default(),
                        compact: self.compact,
                        escaped: self.escaped,
                    },
                ));
                self.whitespace();
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        self.whitespace();
                    }
                    Some(b'}') => {
                        self.at += 1;
                        break;
                    }
                    None => return Err("EOF while parsing an object"),
                    Some(_) => return Err("expected `,` or `}`"),
                }
            }
        }
        self.whitespace();
        match self.peek() {
            None => Ok(()),
            Some(_) => Err("trailing characters"),
        }
    }

    #[inline(always)]
    fn whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.at += 1;
            self.compact = false;
        }
    }

    /// An object's key and the `:` after it; the scanner is at the key.
    #[inline(always)]
    fn key(&mut self) -> Result<(), Reason> {
        self.key_string()?;
        self.colon()
    }

    /// An object's key; the scanner is at it.
    #[inline(always)]
    fn key_string(&mut self) -> Result<(), Reason> {
        match self.peek() {
            Some(b'"') => self.string(),
            None => Err("EOF while parsing an object"),
            Some(_) => Err("key must be a string"),
        }
    }

    /// The `:` after a key, and the whitespace before it.
    #[inline(always)]
    fn colon(&mut self) -> Result<(), Reason> {
        self.whitespace();
        match self.peek() {
            Some(b':') => {
                self.at += 1;
                Ok(())
            }
            None => Err("EOF while parsing an object"),
            Some(_) => Err("expected `:`"),
        }
    }

    /// One value, nested ones included; the scanner is at its first byte.
    fn value(&mut self) -> Result<(), Reason> {
        let mut nesting = Nesting::default();
        loop {
            // A value starts here.
            match self.peek() {
                Some(open @ (b'{' | b'[')) => {
                    let object = open == b'{';
                    self.at += 1;
                    self.whitespace();
                    if self.peek() == Some(if object { b'}' } else { b']' }) {
                        self.at += 1;
                    } else {
                        nesting.push(object);
                        if object {
                            self.key()?;
                            self.whitespace();
                        }
                        continue;
                    }
                }
                Some(b'"') => self.string()?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                None => return Err("EOF while parsing a value"),
                Some(_) => return Err("expected value"),
            }
            // A value ended: close what it ends, up to the next one.
            loop {
                let Some(object) = nesting.innermost() else {
                    return Ok(());
                };
                self.whitespace();
                match (self.peek(), object) {
                    (Some(b','), _) => {
                        self.at += 1;
                        self.whitespace();
                        if object {
                            self.key()?;
                            self.whitespace();
                        }
                        break;
                    }
                    (Some(b']'), false) | (Some(b'}'), true) => {
                        self.at += 1;
                        nesting.pop();
                    }
                    (None, false) => return Err("EOF while parsing a list"),
                    (None, true) => return Err("EOF while parsing an object"),
                    (Some(_), false) => return Err("expected `,` or `]`"),
                    (Some(_), true) => return Err("expected `,` or `}`"),
                }
            }
        }
    }

    /// A string; the scanner is at its opening quote.
    #[inline(always)]
    fn string(&mut self) -> Result<(), Reason> {
        self.at += 1;
        loop {
            self.at = ordinary_run(self.bytes, self.at);
            let Some(b) = self.peek() else {
                return Err("EOF while parsing a string");
            };
            match IN_STRING[b as usize] {
                QUOTE => {
                    self.at += 1;
                    return Ok(());
                }
                BACKSLASH => self.escape()?,
                CONTROL => {
                    return Err("control character (\\u0000-\\u001F) found while parsing a string");
                }
                _ => {
                    self.compact = false;
                    self.at += 1;
                }
            }
        }
    }

    /// One escape; the scanner is at its backslash.
    #[cold]
    fn escape(&mut self) -> Result<(), Reason> {
        self.escaped = true;
        self.at += 1;
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.at += 1;
                Ok(())
            }
            Some(b'u') => {
                self.at += 1;
                for _ in 0..4 {
                    match self.peek() {
                        Some(h) if h.is_ascii_hexdigit() => self.at += 1,
                        None => return Err("EOF while parsing a string"),
                        Some(_) => return Err("invalid escape"),
                    }
                }
                Ok(())
            }
            None => Err("EOF while parsing a string"),
            Some(_) => Err("invalid escape"),
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`; the scanner is at its first byte.
    fn number(&mut self) -> Result<(), Reason> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.at += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err("invalid number");
                }
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err("invalid number"),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Result<(), Reason> {
        match self.peek() {
            Some(b'0'..=b'9') => {
                self.digits();
                Ok(())
            }
            _ => Err("invalid number"),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Reason> {
        for &expected in word {
            match self.peek() {
                Some(b) if b == expected => self.at += 1,
                None => return Err("EOF while parsing a value"),
                Some(_) => return Err("expected ident"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(line: &str) -> Result<Vec<(String, String, bool)>, String> {
        let mut out = Vec::new();
        object(line, &mut out).map_err(|e| match e {
            Malformed::Syntax(e) => e.to_string(),
            Malformed::NotAnObject => "not an object".into(),
        })?;
        Ok(out
            .into_iter()
            .map(|(k, v)| (format!("{k:?}"), v.text.to_string(), v.compact))
            .collect())
    }

    #[test]
    fn values_are_found_whole_and_flagged_compact() {
        let got =
            fields(r#" { "a" : 1.5e-3 , "b":{"x":[1,{"y":null}],"z":"<"}, "c":{"k": true}} "#)
                .unwrap();
        assert_eq!(
            got,
            [
                (r#""a""#.into(), "1.5e-3".into(), true),
                (
                    r#""b""#.into(),
                    r#"{"x":[1,{"y":null}],"z":"<"}"#.into(),
                    false
                ),
                (r#""c""#.into(), r#"{"k": true}"#.into(), false),
            ]
        );
        assert_eq!(fields("{}").unwrap(), []);
    }

    #[test]
    fn bad_json_is_named_with_its_column() {
        for (line, want) in [
            ("", "EOF while parsing a value at column 1"),
            ("{", "EOF while parsing an object at column 2"),
            (r#"{"a" 1}"#, "expected `:` at column 6"),
            (r#"{"a":01}"#, "invalid number at column 7"),
            (r#"{"a":1.}"#, "invalid number at column 8"),
            (r#"{"a":[1 2]}"#, "expected `,` or `]` at column 9"),
            (r#"{"a":{"b":1]}"#, "expected `,` or `}` at column 12"),
            (r#"{"a":"\x"}"#, "invalid escape at column 8"),
            (r#"{"a":"\u12g4"}"#, "invalid escape at column 11"),
            (
                "{\"a\":\"\t\"}",
                "control character (\\u0000-\\u001F) found while parsing a string at column 7",
            ),
            (r#"{"a":tru}"#, "expected ident at column 9"),
            (r#"{"a":1} x"#, "trailing characters at column 9"),
            (r#"{1:2}"#, "key must be a string at column 2"),
        ] {
            assert_eq!(fields(line).unwrap_err(), want, "{line}");
        }
        assert_eq!(fields("[1, 2] ").unwrap_err(), "not an object");
        assert_eq!(
            fields("[1, 2] x").unwrap_err(),
            "trailing characters at column 8"
        );
    }

    #[test]
    fn sixteen_and_eight_bytes_at_a_time_see_every_byte_that_matters() {
        for b in 0..=255u8 {
            for pos in 0..8 {
                let mut word = [b'a'; 8];
                word[pos] = b;
                let matters = IN_STRING[b as usize] != ORDINARY;
                let found = lookouts(u64::from_le_bytes(word));
                assert_eq!(found != 0, matters, "{b:#x} at {pos}");
                if matters {
                    assert_eq!(found.trailing_zeros() / 8, pos as u32, "{b:#x} at {pos}");
                }
                word[7] = b'"';
                let found = lookouts(u64::from_le_bytes(word));
                assert_eq!(
                    found.trailing_zeros() / 8,
                    if matters { pos as u32 } else { 7 }
                );
            }
        }
        #[cfg(target_arch = "x86_64")]
        for b in 0..=255u8 {
            for pos in 0..16 {
                let mut chunk = [b'a'; 16];
                chunk[pos] = b;
                let matters = IN_STRING[b as usize] != ORDINARY;
                let found = sixteen_lookouts(&chunk);
                assert_eq!(found, if matters { 1 << pos } else { 0 }, "{b:#x} at {pos}");
            }
        }
        let line = "{\"a\":\"0123456789abcdef<0123456789\\\"012345\\u00e9\",\"b\":\"\u{2028}\"}";
        let got = fields(line).unwrap();
        assert_eq!(got.len(), 2);
        assert!(!got[0].2, "< seen after 16 ordinary bytes");
        assert!(!got[1].2, "U+2028 seen");
    }

    #[test]
    fn any_depth_is_scanned_without_recursion() {
        let deep = 100_000;
        let line = format!(r#"{{"a":{}1{}}}"#, "[".repeat(deep), "]".repeat(deep));
        assert_eq!(fields(&line).unwrap().len(), 1);
        let mixed = format!(
            r#"{{"a":{}1{}}}"#,
            r#"[{"k":"#.repeat(100),
            "}]".repeat(100)
        );
        assert_eq!(fields(&mixed).unwrap().len(), 1);
        let unbalanced = format!(r#"{{"a":{}1{}]}}"#, "[".repeat(200), "]".repeat(198));
        assert!(fields(&unbalanced).unwrap_err().contains("expected"));
    }
}
