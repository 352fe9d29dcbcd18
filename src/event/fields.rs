//! One pass over a line: its top-level fields, each kept as the JSON text it was written as.
//!
//! Every format reads a line through [`Fields`]: the line is tokenised once, nested values are
//! validated but not built, and `format: auto` decides on the keys it finds before the vendor's
//! mapping reads the few fields it needs. A line that is not a JSON object, or names a field
//! twice, is not an event.

use super::Rejection;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// The top-level fields of one JSON object, in the order written.
pub struct Fields<'a> {
    /// The line they were read from.
    line: &'a str,
    entries: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> Fields<'a> {
    /// Reads the top level of `line`.
    pub fn parse(line: &'a str) -> Result<Fields<'a>, Rejection> {
        let Entries(entries) = serde_json::from_str(line).map_err(|e| json_rejection(&e))?;
        let fields = Fields { line, entries };
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

    /// The text of field `key`, if present.
    pub fn raw(&self, key: &str) -> Option<&'a RawValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// Whether field `key` is present.
    pub fn has(&self, key: &str) -> bool {
        self.raw(key).is_some()
    }

    /// Whether field `key` is a string containing `needle`.
    pub fn str_contains(&self, key: &str, needle: char) -> bool {
        self.get::<Cow<str>>(key)
            .ok()
            .flatten()
            .is_some_and(|s| s.contains(needle))
    }

    /// Field `key` read as `T`; `None` when absent or `null`.
    pub fn get<T: Deserialize<'a>>(&self, key: &str) -> Result<Option<T>, Rejection> {
        match self.raw(key) {
            None => Ok(None),
            Some(raw) if raw.get() == "null" => Ok(None),
            Some(raw) => read(key, raw).map(Some),
        }
    }

    /// Field `key` read as `T`; an error naming it when absent.
    pub fn require<T: Deserialize<'a>>(&self, key: &str) -> Result<T, Rejection> {
        match self.raw(key) {
            None => Err(Rejection::NotAnEvent(format!("missing field {key:?}"))),
            Some(raw) => read(key, raw),
        }
    }

    /// Every field, in the order written.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &'a RawValue)> {
        self.entries.iter().map(|(k, v)| (k.as_ref(), *v))
    }
}

/// Reads one field's text as `T`, naming the field when it has the wrong shape.
fn read<'a, T: Deserialize<'a>>(key: &str, raw: &'a RawValue) -> Result<T, Rejection> {
    // Strings are borrowed from the line when they have no escapes.
    let mut de = serde_json::Deserializer::from_str(raw.get());
    T::deserialize(&mut de).map_err(|e| Rejection::NotAnEvent(format!("field {key:?}: {e}")))
}

/// Tells "not JSON at all" from "JSON, but not the shape of an event".
pub fn json_rejection(e: &serde_json::Error) -> Rejection {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => Rejection::NotAnEvent(e.to_string()),
        _ => Rejection::NotJson(e.to_string()),
    }
}

/// A key, borrowed from the line unless it has escapes.
#[derive(serde::Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

/// The top-level fields of a JSON object, as [`Fields`] reads them.
struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Entries<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    entries.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_once_and_kept_as_text() {
        let f = Fields::parse(r#"{"a": 1.50, "b\u0041": {"x": [1, 2]}, "c": null}"#).unwrap();
        assert_eq!(f.raw("a").unwrap().get(), "1.50");
        assert_eq!(f.raw("bA").unwrap().get(), r#"{"x": [1, 2]}"#);
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
    }
}
