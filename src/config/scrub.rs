//! The one secret scrubber for anything a receiver says: [`Scrubber`].
//!
//! A receiver's words (an error body, a NATS server's error) may quote what flagtail sent it: a
//! receiver that echoes the request's headers quotes the `Authorization` value, the URL's user
//! info as Basic auth, a token. Each sink builds one scrubber from every secret value it sends,
//! in every form it sends it, and every text a receiver supplied goes through it before it is
//! logged, put in a dead letter or shown (`/status.json`, the status page, `flagtail status`).
//!
//! Each value is masked in the forms a receiver may echo it in: as written; JSON-escaped (with
//! and without `\/`, and with `<`, `>`, `&` and every non-ASCII character as `\uXXXX`, as Go
//! and Python write them); percent-encoded (hex in upper or lower case, `/` encoded or left as
//! Python's `quote` leaves it); Basic user info's base64 padded or not, standard or URL-safe. A
//! value of [`MIN_ANYWHERE`] bytes or more is masked
//! wherever it occurs, overlapping occurrences included; a shorter one (a 1-character header value)
//! only where it stands as a whole word, so that it does not turn every `a` of a message into
//! `***` (a value that short is no secret anyway). Every byte an occurrence covers is masked:
//! `***` stands for each run of covered bytes.
//!
//! What it does not do: find a secret the receiver changed (upper-cased, cut, re-encoded
//! otherwise).

use base64::Engine;
use std::fmt;

/// Values this long (in bytes) are masked anywhere; shorter ones only as whole words.
pub const MIN_ANYWHERE: usize = 8;

/// What a masked secret becomes.
const MASK: &str = "***";

/// Masks a sink's secret values in text a receiver supplied.
#[derive(Clone, Default)]
pub struct Scrubber {
    /// Every form of every value, longest first, without repeats.
    values: Vec<String>,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scrubber({} values)", self.values.len())
    }
}

impl Scrubber {
    /// Masks `value` (a token, a password, a signing secret) in every form it may be echoed in.
    pub fn add(&mut self, value: &str) {
        if value.is_empty() {
            return;
        }
        let quoted = serde_json::to_string(value).unwrap_or_default();
        let json = quoted
            .get(1..quoted.len().saturating_sub(1))
            .unwrap_or_default()
            .to_string();
        let percent =
            percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let forms = [
            value.to_string(),
            json.replace('/', "\\/"),
            json_escaped_as_go(&json),
            json,
            lower_hex(&percent),
            percent,
            percent_encoding::utf8_percent_encode(value, QUOTE).to_string(),
            lower_hex(&percent_encoding::utf8_percent_encode(value, QUOTE).to_string()),
            url::form_urlencoded::byte_serialize(value.as_bytes()).collect(),
        ];
        for form in forms {
            if !form.is_empty() && !self.values.contains(&form) {
                self.values.push(form);
            }
        }
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    /// Masks a header value sent as configured: the whole value and, for `SCHEME CREDENTIALS`
    /// (`Bearer TOKEN`), the credentials; for `Basic`, also the user and password they encode.
    pub fn add_header_value(&mut self, value: &str) {
        self.add(value.trim());
        let Some((scheme, credentials)) = value.trim().split_once(' ') else {
            return;
        };
        let credentials = credentials.trim();
        if !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return;
        }
        self.add(credentials);
        if scheme.eq_ignore_ascii_case("basic")
            && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials)
            && let Ok(text) = String::from_utf8(decoded)
            && let Some((user, password)) = text.split_once(':')
        {
            self.add_user_info(user, password);
        }
    }

    /// Masks user info sent as Basic auth: `user:password`, its base64 (the header's value), and
    /// the password; the user too when there is no password (then it is a token).
    pub fn add_user_info(&mut self, user: &str, password: &str) {
        let pair = format!("{user}:{password}");
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            self.add(&engine.encode(&pair));
        }
        self.add(&pair);
        match password.is_empty() {
            true => self.add(user),
            false => self.add(password),
        }
    }

    /// `text` with every secret value masked.
    pub fn scrub(&self, text: &str) -> String {
        let mut covered: Vec<(usize, usize)> = Vec::new();
        for value in &self.values {
            let finder = memchr::memmem::Finder::new(value.as_bytes());
            let mut from = 0;
            while let Some(at) = finder.find(&text.as_bytes()[from..]).map(|i| from + i) {
                let end = at + value.len();
                if value.len() >= MIN_ANYWHERE || whole_word(text, at, end) {
                    covered.push((at, end));
                }
                // The next occurrence may overlap this one: look from its next character.
                from = at + text[at..].chars().next().map_or(1, char::len_utf8);
            }
        }
        covered.sort_unstable();
        // Runs of covered bytes, overlapping or touching ones joined.
        let mut runs: Vec<(usize, usize)> = Vec::with_capacity(covered.len());
        for (start, end) in covered {
            match runs.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => runs.push((start, end)),
            }
        }
        let mut out = String::with_capacity(text.len());
        let mut done = 0;
        for (start, end) in runs {
            out.push_str(&text[done..start]);
            out.push_str(MASK);
            done = end;
        }
        out.push_str(&text[done..]);
        out
    }

    /// The first `max_chars` characters of `text` with every secret value masked: masked before it
    /// is cut, so a secret across the cut leaves no piece of itself.
    pub fn quote(&self, text: &str, max_chars: usize) -> String {
        self.scrub(text).chars().take(max_chars).collect()
    }
}

/// What Python's `quote()` leaves as it is (letters, digits, `_.-~` and `/`): percent-encoded
/// otherwise.
const QUOTE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~')
    .remove(b'/');

/// A JSON string's inside as Go's `encoding/json` (and Python's `json.dumps`) writes it: `<`, `>`,
/// `&` and every character past ASCII as `\uXXXX`.
fn json_escaped_as_go(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if matches!(c, '<' | '>' | '&') || !c.is_ascii() {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `encoded` with the hex digits of each `%XX` in lower case (.NET's `UrlEncode` writes them so).
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut hex_left = 0;
    for c in encoded.chars() {
        if hex_left > 0 {
            out.push(c.to_ascii_lowercase());
            hex_left -= 1;
        } else {
            hex_left = if c == '%' { 2 } else { 0 };
            out.push(c);
        }
    }
    out
}

/// Whether `text[start..end]` stands alone: no letter, digit or `_` right before or after it.
fn whole_word(text: &str, start: usize, end: usize) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    !text[..start].chars().next_back().is_some_and(word)
        && !text[end..].chars().next().is_some_and(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubber(values: &[&str]) -> Scrubber {
        let mut s = Scrubber::default();
        for v in values {
            s.add(v);
        }
        s
    }

    #[test]
    fn values_are_masked_in_every_form_they_are_echoed_in() {
        let s = scrubber(&["s3cr/et\"tok+en"]);
        for echo in [
            r#"got s3cr/et"tok+en"#,
            r#"{"x":"s3cr\/et\"tok+en"}"#,
            r#"{"x":"s3cr/et\"tok+en"}"#,
            "q=s3cr%2Fet%22tok%2Ben",
            "q=s3cr%2Fet%22tok%2Ben&",
        ] {
            let out = s.scrub(echo);
            assert!(
                !out.contains("tok") && out.contains("***"),
                "{echo} -> {out}"
            );
        }
    }

    #[test]
    fn values_are_masked_as_go_python_and_dotnet_echo_them_too() {
        let mut s = scrubber(&["p&ss/w\u{e4}rd+long"]);
        s.add_user_info("bot", "p&ss/w\u{e4}rd+long");
        let pair = "bot:p&ss/w\u{e4}rd+long";
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        for echo in [
            r#"{"pw":"p\u0026ss/w\u00e4rd+long"}"#.to_string(),
            "pw=p%26ss%2fw%c3%a4rd%2blong".to_string(),
            "pw=p%26ss/w%C3%A4rd%2Blong".to_string(),
            format!("auth {}", STANDARD_NO_PAD.encode(pair)),
            format!("auth {}", URL_SAFE_NO_PAD.encode(pair)),
        ] {
            let out = s.scrub(&echo);
            assert!(
                out.contains("***") && !out.contains("long"),
                "{echo} -> {out}"
            );
        }
    }

    #[test]
    fn basic_auth_and_bearer_values_are_masked_with_their_parts() {
        let mut s = Scrubber::default();
        s.add_header_value("Bearer abcdefgh1234");
        s.add_user_info("bot", "pa55word-long");
        let basic = base64::engine::general_purpose::STANDARD.encode("bot:pa55word-long");
        let text = format!(
            "authorization: Basic {basic}; token abcdefgh1234; user bot:pa55word-long; pw pa55word-long"
        );
        let out = s.scrub(&text);
        for piece in [basic.as_str(), "abcdefgh1234", "pa55word"] {
            assert!(!out.contains(piece), "{out}");
        }
        assert!(
            out.contains("user ***;"),
            "the user alone is no secret: {out}"
        );
        let mut h = Scrubber::default();
        h.add_header_value(&format!("Basic {basic}"));
        assert_eq!(h.scrub("pa55word-long"), "***");
    }

    #[test]
    fn overlapping_and_neighbouring_occurrences_leave_nothing_between_them() {
        let s = scrubber(&["abcdefgh", "efghijkl"]);
        assert_eq!(s.scrub("x abcdefghijkl y"), "x *** y");
        assert_eq!(s.scrub("abcdefghabcdefgh"), "***");
        let r = scrubber(&["aaaaaaaa"]);
        assert_eq!(r.scrub("aaaaaaaaaaa!"), "***!");
    }

    #[test]
    fn short_values_are_masked_only_as_whole_words() {
        let s = scrubber(&["x", "hunter2"]);
        assert_eq!(
            s.scrub("max x: hunter2, hunter22"),
            "max ***: ***, hunter22"
        );
        assert_eq!(s.scrub("é x é"), "é *** é");
    }

    #[test]
    fn a_quote_is_masked_before_it_is_cut() {
        let s = scrubber(&["0123456789abcdef"]);
        let text = format!("{}0123456789abcdef", "y".repeat(10));
        assert_eq!(s.quote(&text, 14), "yyyyyyyyyy***");
        assert_eq!(s.quote("ünïcödé", 3), "ünï");
    }
}
