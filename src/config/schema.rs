//! The config's JSON Schema (`flagtail config-schema`), made from the same types that read the
//! config, so an editor checks a config as it is typed with the parser's rules: each source and
//! sink kind with only its own keys (`additionalProperties: false`), defaults, and what each key is.
//!
//! The derived parts come from the types' doc comments and serde attributes; this module writes
//! the schemas of the value types that read text their own way (sizes, durations, modes, URLs)
//! and joins each kind's keys with the keys every source or sink takes. Draft-07, which the YAML
//! language server and most editors read.

use super::file::ConfigFile;
use super::kafka::KafkaSink;
use super::policy::{Rate, RetryOn, Schedule};
use super::secret::{OneOrMany, Secret, SecretUrl};
use super::sink::{
    FileSink, NatsSink, NatsUrls, SinkCommon, SinkSection, SinkType, StdoutSink, WebhookSink,
    WebhookUrl,
};
use super::source::{FileSource, HttpSource, SocketSource, SourceSection};
use super::values::{
    Address, ByteSize, Connections, Count, Delay, FileMode, Name, Positive, UrlPath,
};
use crate::event::Format;
use crate::event::pattern::{EventPattern, Matches};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// The JSON Schema of a flagtail config file, pretty-printed.
pub fn config_schema() -> String {
    let generator = SchemaSettings::draft07().into_generator();
    let mut schema = generator.into_root_schema_for::<ConfigFile>();
    schema.insert("title".into(), "flagtail config".into());
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

/// A schema written out, for the value types below.
macro_rules! text_schema {
    ($ty:ty, $name:literal, $schema:tt) => {
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

/// A text that `${VAR}` substitution fills in, where a number is expected.
const SUBSTITUTED: &str = "^.*\\$\\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\\}.*$";

text_schema!(Secret, "Secret", {
    "type": "string",
    "description": "A secret: never printed (shown as ***). Often `${VAR}` or read from a file."
});
text_schema!(SecretUrl, "Url", {
    "type": "string",
    "description": "A URL; user info and path are never printed."
});
text_schema!(Name, "Name", {
    "type": "string",
    "pattern": "^[a-z0-9_-]+$",
    "description": "A name: lower-case letters, digits, `_` and `-`."
});
text_schema!(ByteSize, "ByteSize", {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": "^\\s*[0-9]+\\s*(B|KiB|MiB|GiB|KB|MB|GB)?\\s*$"},
        {"type": "string", "pattern": SUBSTITUTED}
    ],
    "description": "A size in bytes, optionally with a unit: `256MiB`, `64KiB`, `1GB`."
});
text_schema!(FileMode, "FileMode", {
    "anyOf": [
        {"type": "integer", "minimum": 0, "maximum": 777},
        {"type": "string", "pattern": "^\\s*[0-7]{1,4}\\s*$"}
    ],
    "description": "Unix permission bits in octal, such as \"0600\"."
});
text_schema!(Count, "Count", {
    "anyOf": [
        {"type": "integer", "minimum": 1, "maximum": 4294967295u64},
        {"type": "string", "pattern": SUBSTITUTED}
    ]
});
text_schema!(Positive, "Positive", {
    "anyOf": [
        {"type": "integer", "minimum": 1},
        {"type": "string", "pattern": SUBSTITUTED}
    ]
});
text_schema!(Connections, "Connections", {
    "anyOf": [
        {"type": "integer", "minimum": 1},
        {"type": "string", "pattern": SUBSTITUTED}
    ]
});
text_schema!(Delay, "Delay", {
    "type": "string",
    "description": "A duration of at least 1ms: `500ms`, `2s`, `1m`."
});
text_schema!(Address, "Address", {
    "type": "string",
    "description": "A listening address, IP:PORT, such as `127.0.0.1:8686`."
});
text_schema!(UrlPath, "UrlPath", {
    "type": "string",
    "pattern": "^/",
    "description": "A URL path, starting with /."
});
text_schema!(EventPattern, "EventPattern", {
    "type": "string",
    "pattern": "^[^:]+:[^:]+$",
    "description": "`type:action`, each a name or `*`: `flag:*`, `*:deleted`."
});
text_schema!(Matches, "Matches", {
    "type": "object",
    "additionalProperties": {
        "anyOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "minItems": 1}
        ]
    },
    "description": "Dotted paths into the event (`payload.key`), each with a glob or a list of globs."
});
text_schema!(Rate, "Rate", {
    "type": "string",
    "pattern": "^\\s*[0-9]+\\s*/\\s*\\S+\\s*$",
    "description": "Requests per period: `1/s`, `100/m`, `5/10s`."
});
text_schema!(RetryOn, "RetryOn", {
    "type": "array",
    "items": {
        "anyOf": [
            {"type": "integer", "minimum": 100, "maximum": 599},
            {"type": "string", "pattern": "^\\s*([1-5][0-9][0-9]|[1-5][xX][xX])\\s*$"}
        ]
    },
    "description": "Statuses and classes tried again: `[408, 429, 5xx]`."
});
text_schema!(Schedule, "Schedule", {
    "type": "array",
    "items": {"type": "string"},
    "minItems": 1,
    "description": "Delays between attempts: `[1s, 10s, 1m]`."
});
text_schema!(super::reach::ProxySetting, "Proxy", {
    "type": "string",
    "description": "`http://[user:password@]host[:port]`, or `none` to go direct."
});
text_schema!(Format, "Format", {
    "type": "string",
    "enum": ["auto", "flipt", "unleash", "abtasty", "launchdarkly"]
});

/// A duration, `humantime` style, for `Duration` fields (`#[schemars(with = "Duration")]`).
pub struct Duration;
text_schema!(Duration, "Duration", {
    "type": "string",
    "description": "A duration: `0s`, `500ms`, `15s`, `5m`, `1h`."
});

/// A whole number, or a text `${VAR}` fills in with one.
pub struct Whole;
text_schema!(Whole, "Whole", {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": SUBSTITUTED}
    ]
});

impl JsonSchema for WebhookUrl {
    fn schema_name() -> Cow<'static, str> {
        "WebhookUrl".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let url = generator.subschema_for::<SecretUrl>();
        json_schema!({
            "anyOf": [url, {"type": "array", "items": url, "minItems": 1, "maxItems": 1}],
            "description": "The receiver's http:// or https:// URL."
        })
    }
}

impl JsonSchema for NatsUrls {
    fn schema_name() -> Cow<'static, str> {
        "NatsUrls".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let url = generator.subschema_for::<SecretUrl>();
        json_schema!({
            "anyOf": [url, {"type": "array", "items": url, "minItems": 1}],
            "description": "One or more nats:// or tls:// servers."
        })
    }
}

impl<T: JsonSchema> JsonSchema for OneOrMany<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("OneOrMany_{}", T::schema_name()).into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let one = generator.subschema_for::<T>();
        json_schema!({
            "anyOf": [one, {"type": "array", "items": one}],
        })
    }
}

/// The keys of a struct's schema, and those it requires.
fn properties(schema: &Schema) -> (Map<String, Value>, Vec<Value>) {
    let keys = schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let required = schema
        .get("required")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    (keys, required)
}

/// One kind's schema: the keys every kind takes, its own, and what tells the kind.
fn kind_schema(
    common: &Schema,
    own: &Schema,
    tell: (&str, Value),
    description: Option<&Value>,
) -> Value {
    let (mut keys, mut required) = properties(common);
    let (own_keys, own_required) = properties(own);
    keys.extend(own_keys);
    required.extend(own_required);
    keys.insert(tell.0.into(), tell.1);
    let mut schema = Map::new();
    schema.insert("type".into(), "object".into());
    if let Some(text) = description {
        schema.insert("description".into(), text.clone());
    }
    schema.insert("properties".into(), Value::Object(keys));
    schema.insert("required".into(), Value::Array(required));
    schema.insert("additionalProperties".into(), false.into());
    Value::Object(schema)
}

/// The keys of `name` (required) with the schema of its type.
fn named(generator: &mut SchemaGenerator) -> Schema {
    let name = generator.subschema_for::<Name>();
    json_schema!({
        "properties": {"name": name},
        "required": ["name"]
    })
}

/// Joins two schemas' keys (`a`'s first).
fn joined(a: &Schema, b: &Schema) -> Schema {
    let (mut keys, mut required) = properties(a);
    let (more, more_required) = properties(b);
    keys.extend(more);
    required.extend(more_required);
    json_schema!({"properties": keys, "required": required})
}

impl JsonSchema for SourceSection {
    fn schema_name() -> Cow<'static, str> {
        "Source".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let format = generator.subschema_for::<Format>();
        let common = joined(
            &named(generator),
            &json_schema!({"properties": {"format": format}}),
        );
        let kinds = [
            ("file", FileSource::json_schema(generator)),
            ("socket", SocketSource::json_schema(generator)),
            ("http", HttpSource::json_schema(generator)),
        ];
        let one_of: Vec<Value> = kinds
            .iter()
            .map(|(key, own)| {
                // The kind is told by its key, which its own schema requires.
                let (own_keys, _) = properties(own);
                let tell = own_keys.get(*key).cloned().unwrap_or(Value::Bool(true));
                kind_schema(&common, own, (key, tell), own.get("description"))
            })
            .collect();
        json_schema!({
            "description": "A source: one of `file`, `socket` or `http`, with that kind's keys.",
            "oneOf": one_of
        })
    }
}

impl JsonSchema for SinkSection {
    fn schema_name() -> Cow<'static, str> {
        "Sink".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let common = joined(&named(generator), &SinkCommon::json_schema(generator));
        let kinds = [
            (SinkType::Webhook, WebhookSink::json_schema(generator)),
            (SinkType::Stdout, StdoutSink::json_schema(generator)),
            (SinkType::File, FileSink::json_schema(generator)),
            (SinkType::Nats, NatsSink::json_schema(generator)),
            (SinkType::Kafka, KafkaSink::json_schema(generator)),
        ];
        let one_of: Vec<Value> = kinds
            .iter()
            .map(|(kind, own)| {
                let tell = serde_json::json!({"const": kind.as_str()});
                let mut schema = kind_schema(&common, own, ("type", tell), own.get("description"));
                // `type` may be left out for a webhook, the default.
                if *kind != SinkType::Webhook
                    && let Some(required) = schema.get_mut("required").and_then(Value::as_array_mut)
                {
                    required.push("type".into());
                }
                schema
            })
            .collect();
        json_schema!({
            "description": "A sink: its `type` (default `webhook`), the keys every sink takes, and that kind's keys.",
            "oneOf": one_of
        })
    }
}
