//! One pass over a line: its top-level fields, each kept as the JSON text it was written as.
//!
//! Every format reads a line through [`Fields`]: the line is tokenised once, nested values are
//! validated but not built, and `format: auto` decides on the keys it finds before the vendor's
//! mapping reads the few fields it needs. A line that is not a JSON object, or names a field
//! twice, is not an event.

use super::scan::{self, Malformed, Value};
use super::{Event, Parts, Rejection};
use bytestring::ByteString;
use serde::Deserialize;
use std::borrow::Cow;

/// The top-level fields of one JSON object, in the order written.
pub struct Fields<'a> {
    /// The line they were read from.
    line: &'a str,
    /// The same line, when an event made of these fields may share it instead of copying it.
    shared: Option<&'a ByteString>,
    entries: Vec<(Cow<'a, str>, Value<'a>)>,
}

impl<'a> Fields<'a> {
    /// Reads the top level of `line`.
    pub fn parse(line: &'a str) -> Result<Fields<'a>, Rejection> {
        Fields::scan(line, None)
    }

    /// Reads the top level of `line`, which events made of the fields then share.
    pub fn parse_shared(line: &'a ByteString) -> Result<Fields<'a>, Rejection> {
        Fields::scan(line, Some(line))
    }

    fn scan(line: &'a str, shared: Option<&'a ByteString>) -> Result<Fields<'a>, Rejection> {
        let mut entries = Vec::with_capacity(8);
        scan::object(line, &mut entries).map_err(|e| match e {
            Malformed::Syntax(e) => Rejection::NotJson(e.to_string()),
            Malformed::NotAnObject => Rejection::NotAnEvent("not a JSON object".into()),
        })?;
        let fields = Fields {
            line,
            shared,
            entries,
        };
        if let Some(key) = fields.repeated() {
            return Err(Rejection::NotAnEvent(format!(
                "field {key:?} is written twice"
            )));
        }
        Ok(fields)
    }

    /// A key written more than once, if any. Linear for the usual handful of fields; a line with
    /// many (a hostile one, up to `max_line_bytes` of keys) is checked through a set.
    fn repeated(&self) -> Option<&str> {
        const FEW: usize = 16;
        if self.entries.len() <= FEW {
            return self.entries.iter().enumerate().find_map(|(i, (key, _))| {
                self.entries[..i]
                    .iter()
                    .any(|(k, _)| k == key)
                    .then_some(key.as_ref())
            });
        }
        let mut seen = std::collections::HashSet::with_capacity(self.entries.len());
        self.entries
            .iter()
            .find_map(|(key, _)| (!seen.insert(key.as_ref())).then_some(key.as_ref()))
    }

    /// The line the fields were read from.
    pub fn line(&self) -> &'a str {
        self.line
    }

    /// The event made of `parts` (pieces of this line, or not), read from this line.
    pub fn event(&self, parts: Parts<'_>) -> Event {
        match self.shared {
            Some(line) => Event::read(line, parts),
            None => Event::new(self.line, parts),
        }
    }

    /// Field `key` as scanned, if present.
    pub fn value(&self, key: &str) -> Option<Value<'a>> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// The JSON text of field `key`, if present.
    pub fn raw(&self, key: &str) -> Option<&'a str> {
        self.value(key).map(|v| v.text)
    }

    /// Whether field `key` is present.
    pub fn has(&self, key: &str) -> bool {
        self.raw(key).is_some()
    }

    /// Whether field `key` is a string containing `needle`.
    pub fn str_contains(&self, key: &str, needle: char) -> bool {
        self.str(key)
            .ok()
            .flatten()
            .is_some_and(|s| s.contains(needle))
    }

    /// String field `key`, borrowed from the line when written without escapes; `None` when
    /// absent or `null`.
    pub fn str(&self, key: &str) -> Result<Option<Cow<'a, str>>, Rejection> {
        match self.value(key).and_then(|v| v.plain_str()) {
            Some(s) => Ok(Some(Cow::Borrowed(s))),
            None => self.get(key),
        }
    }

    /// String field `key`; an error naming it when absent.
    pub fn require_str(&self, key: &str) -> Result<Cow<'a, str>, Rejection> {
        match self.require_value(key)?.plain_str() {
            Some(s) => Ok(Cow::Borrowed(s)),
            None => self.require(key),
        }
    }

    /// Field `key` read as `T`; `None` when absent or `null`.
    pub fn get<T: Deserialize<'a>>(&self, key: &str) -> Result<Option<T>, Rejection> {
        match self.raw(key) {
            None => Ok(None),
            Some("null") => Ok(None),
            Some(raw) => read(key, raw).map(Some),
        }
    }

    /// Field `key` read as `T`; an error naming it when absent.
    pub fn require<T: Deserialize<'a>>(&self, key: &str) -> Result<T, Rejection> {
        read(key, self.require_value(key)?.text)
    }

    /// Field `key` as scanned; an error naming it when absent.
    pub fn require_value(&self, key: &str) -> Result<Value<'a>, Rejection> {
        self.value(key)
            .ok_or_else(|| Rejection::NotAnEvent(format!("missing field {key:?}")))
    }

    /// Every field and its JSON text, in the order written.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &'a str)> {
        self.entries.iter().map(|(k, v)| (k.as_ref(), v.text))
    }
}

/// Reads one field's text as `T`, naming the field when it has the wrong shape.
fn read<'a, T: Deserialize<'a>>(key: &str, text: &'a str) -> Result<T, Rejection> {
    // Strings are borrowed from the line when they have no escapes.
    let mut de = serde_json::Deserializer::from_str(text);
    T::deserialize(&mut de).map_err(|e| Rejection::NotAnEvent(format!("field {key:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_once_and_kept_as_text() {
        let f = Fields::parse(r#"{"a": 1.50, "b\u0041": {"x": [1, 2]}, "c": null}"#).unwrap();
        assert_eq!(f.raw("a").unwrap(), "1.50");
        assert_eq!(f.raw("bA").unwrap(), r#"{"x": [1, 2]}"#);
        assert_eq!(f.get::<String>("c").unwrap(), None);
        assert!(
            f.require::<String>("d")
                .unwrap_err()
                .to_string()
                .contains("\"d\"")
        );
        assert!(
            f.require::<String>("a")
                .unwrap_err()
                .to_string()
                .contains("\"a\"")
        );
    }

    #[test]
    fn not_an_object_or_a_field_twice_is_not_an_event() {
        assert_eq!(Fields::parse("[1]").err().unwrap().tag(), "not_an_event");
        assert_eq!(Fields::parse("{").err().unwrap().tag(), "not_json");
        assert_eq!(
            Fields::parse(r#"{"a":1,"a":2}"#).err().unwrap().tag(),
            "not_an_event"
        );
        let many: Vec<String> = (0..40)
            .chain([7])
            .map(|i| format!("\"k{i}\":{i}"))
            .collect();
        let line = format!("{{{}}}", many.join(","));
        assert!(
            Fields::parse(&line)
                .err()
                .unwrap()
                .to_string()
                .contains("k7")
        );
        let line = line.replace("\"k7\":7}", "\"k40\":7}");
        assert!(Fields::parse(&line).is_ok());
        // Like serde_json's: a key must decode to text; a value only has to be well formed.
        let lone = r#"{"\ud800":1}"#;
        assert_eq!(Fields::parse(lone).err().unwrap().tag(), "not_json");
        let f = Fields::parse(r#"{"a":"\ud800","b\u00e9":"x\ny"}"#).unwrap();
        assert_eq!(f.raw("a"), Some(r#""\ud800""#));
        assert_eq!(f.str("bé").unwrap().as_deref(), Some("x\ny"));
    }
}
