//! Property tests (run in CI with a bounded case count, `PROPTEST_CASES`): arbitrary bytes through
//! line splitting and event parsing in every format never panic, and the splitter accounts for
//! every byte exactly once, compaction gives the bytes it always gave, and a line is JSON exactly
//! when serde_json says it is.

use flagtail::event::{Format, gojson, parse_line};
use flagtail::source::lines::{LineSplitter, Piece};
use proptest::prelude::*;
use serde::de::IgnoredAny;

/// Bytes that look like log lines often enough to reach the parsers' deeper paths.
fn loggy_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(br#"{"version":"0.2","type":"flag","action":"created","metadata":{},"payload":null,"timestamp":"t"}"#.to_vec()),
        Just(br#"{"version": "0.2", "type": "segment", "action": "deleted", "status": "denied", "metadata": {"actor":{"ip":"<&>"}}, "payload": {"a":[1,2.5e3,"\u2028"]}, "timestamp": "t"}"#.to_vec()),
        proptest::collection::vec(any::<u8>(), 0..40),
        "[ -~]{0,30}".prop_map(String::into_bytes),
    ];
    proptest::collection::vec(piece, 0..30).prop_map(|v| v.concat())
}

/// Splits `input` fed in chunks of the given sizes; returns every piece as (start, end, kind, text).
fn split(input: &[u8], chunks: &[usize], max: usize) -> Vec<(u64, u64, bool, Vec<u8>)> {
    let mut s = LineSplitter::new(0, max);
    let mut out = Vec::new();
    let mut at = 0;
    let mut sizes = chunks.iter().cycle();
    while at < input.len() {
        let n = (*sizes.next().unwrap()).clamp(1, input.len() - at);
        s.push(&input[at..at + n]);
        at += n;
        while let Some(p) = s.next_piece() {
            out.push(match p {
                Piece::Line { start, end, text } => (start, end, true, text.to_vec()),
                Piece::TooLong {
                    start,
                    end,
                    len,
                    prefix,
                } => {
                    assert!(len > max as u64);
                    assert!(prefix.len() <= flagtail::source::lines::TOO_LONG_PREFIX);
                    (start, end, false, prefix.to_vec())
                }
            });
        }
    }
    out
}

/// Compaction as it was first written, a byte at a time: the run-copying one must give the same
/// bytes for any text, JSON or not.
fn compact_bytewise(json: &str) -> Vec<u8> {
    let (bytes, mut out, mut in_string, mut i) = (json.as_bytes(), Vec::new(), false, 0);
    while i < bytes.len() {
        let b = bytes[i];
        if !in_string {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => {}
                b'"' => {
                    in_string = true;
                    out.push(b);
                }
                _ => out.push(b),
            }
            i += 1;
            continue;
        }
        match b {
            b'\\' => {
                out.extend_from_slice(&bytes[i..(i + 2).min(bytes.len())]);
                i += 2;
                continue;
            }
            b'"' => {
                in_string = false;
                out.push(b);
            }
            b'<' => out.extend_from_slice(b"\\u003c"),
            b'>' => out.extend_from_slice(b"\\u003e"),
            b'&' => out.extend_from_slice(b"\\u0026"),
            0xE2 if bytes.get(i + 1) == Some(&0x80)
                && matches!(bytes.get(i + 2), Some(0xA8 | 0xA9)) =>
            {
                out.extend_from_slice(if bytes[i + 2] == 0xA8 {
                    b"\\u2028"
                } else {
                    b"\\u2029"
                });
                i += 3;
                continue;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    out
}

/// Text near JSON strings: quotes, escapes, the characters Go escapes, multi-byte UTF-8 and
/// whitespace, in any order.
fn stringy_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just("\\\"".to_string()),
        Just("\\u2028".to_string()),
        Just("\u{2028}".to_string()),
        Just("\u{2029}".to_string()),
        Just("\\\u{2028}".to_string()),
        Just("\u{e2}".to_string()),
        Just("<&>".to_string()),
        Just(" \t\r\n".to_string()),
        Just("é€😀".to_string()),
        "\\PC{0,8}",
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn compaction_copies_runs_to_the_same_bytes(text in stringy_text()) {
        let mut out = String::new();
        gojson::compact(&text, &mut out);
        prop_assert_eq!(out.as_bytes(), &compact_bytewise(&text)[..]);
    }

    #[test]
    fn splitter_accounts_for_every_byte(input in loggy_bytes(), chunks in proptest::collection::vec(1usize..300, 1..8), max in 1usize..200) {
        let pieces = split(&input, &chunks, max);
        let complete = input.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) as u64;
        let mut expect = 0u64;
        for (start, end, is_line, text) in &pieces {
            prop_assert_eq!(*start, expect, "pieces are contiguous");
            prop_assert!(end > start);
            prop_assert_eq!(input[(*end - 1) as usize], b'\n');
            let raw = &input[*start as usize..(*end - 1) as usize];
            if *is_line {
                prop_assert!(text.len() <= max);
                let stripped = raw.strip_suffix(b"\r").unwrap_or(raw);
                prop_assert_eq!(text.as_slice(), stripped);
            } else {
                prop_assert!(raw.starts_with(text));
            }
            expect = *end;
        }
        prop_assert_eq!(expect, complete, "everything up to the last newline came out, nothing after it");
    }

    #[test]
    fn parsing_never_panics_in_any_format(input in loggy_bytes()) {
        for line in input.split(|b| *b == b'\n') {
            if let Ok(text) = std::str::from_utf8(line) {
                for format in [Format::Auto, Format::Flipt] {
                    if let Ok(event) = parse_line(format, text) {
                        let mut body = Vec::new();
                        event.write_flipt_json(&mut body);
                        prop_assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok(), "the webhook body is JSON");
                    }
                }
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        for format in [Format::Auto, Format::Flipt] {
            let _ = parse_line(format, &text);
        }
    }

    #[test]
    fn lines_are_json_exactly_when_serde_json_says_so(line in jsonish()) {
        let serde_says = serde_json::from_str::<IgnoredAny>(&line).is_ok();
        let tag = parse_line(Format::Flipt, &line).err().map(|e| e.tag());
        prop_assert_eq!(tag != Some("not_json"), serde_says, "{:?}: {:?}", line, tag);
    }

    #[test]
    fn nested_values_are_checked_and_kept_compacted(value in jsonish()) {
        let line = format!(r#"{{"version":"0.2","type":"flag","action":"created","metadata":{{}},"payload":{value},"timestamp":"t"}}"#);
        let parsed = parse_line(Format::Flipt, &line);
        prop_assert_eq!(parsed.is_ok(), serde_json::from_str::<IgnoredAny>(&line).is_ok(), "{:?}", line);
        if let (Ok(event), true) = (parsed, serde_json::from_str::<IgnoredAny>(&value).is_ok()) {
            let mut compacted = String::new();
            gojson::compact(&value, &mut compacted);
            prop_assert_eq!(event.payload(), compacted.as_str());
        }
    }

    #[test]
    fn go_compaction_keeps_the_value(value in json_value()) {
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        let mut text = String::new();
        gojson::compact(&pretty, &mut text);
        let unescaped = text.contains(['<', '>', '&', '\u{2028}', '\u{2029}']);
        prop_assert!(!unescaped, "Go escapes these");
        prop_assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), value.clone());
        prop_assert_eq!(String::from_utf8(gojson::to_vec(&value).unwrap()).unwrap(), text, "same bytes as Go's Marshal of the value");
    }
}

/// Text that is JSON often enough, and JSON broken in every way otherwise: values written
/// compact or pretty, stray tokens, bad numbers, escapes and literals, and raw characters Go
/// escapes. (Lone surrogates are left out: serde_json's `IgnoredAny` takes them in keys, which
/// an event's keys never did.)
fn jsonish() -> impl Strategy<Value = String> {
    let tokens = [
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\n",
        "\"",
        "\\",
        "\"a\"",
        "\"\\u12\"",
        "\"\\x\"",
        "\"\\u00e9\\n\"",
        "01",
        "1.",
        "-",
        "1e",
        "-0.5E+3",
        "0",
        "tru",
        "null",
        "\"\t\"",
        "\"\u{2028}<\"",
        "\u{e9}",
        "\"é€漢字\u{2029}abcdefgh<\"",
    ];
    let piece = prop_oneof![
        4 => json_value().prop_map(|v| serde_json::to_string(&v).unwrap()),
        2 => json_value().prop_map(|v| serde_json::to_string_pretty(&v).unwrap()),
        3 => proptest::sample::select(tokens.to_vec()).prop_map(str::to_string),
    ];
    proptest::collection::vec(piece, 1..5).prop_map(|v| v.concat())
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i32>().prop_map(|n| serde_json::json!(n)),
        "[a-z<>&\u{2028} \"\\\\]{0,12}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map("[a-z<&]{1,5}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
