//! How a Flipt webhook template (Go `text/template`) prints a field, for templates translated from
//! `--flipt-config`: the `goField` filter (`{{ payload | goField(path="a.b") }}`).
//!
//! Flipt decodes the payload from JSON, so every value is what `encoding/json` makes (float64,
//! string, bool, nil, slices, maps) and prints with `fmt`'s `%v`: numbers in the shortest form,
//! switching to an exponent below 1e-4 and from 1e6 up (`1e+06`), `<nil>`, `[a b]`,
//! `map[k:v]` with keys sorted. A key that is not there prints `<no value>`; with `json=true` the
//! value is written as Flipt's `toJson` writes it (`null` when it is not there).

use serde_json::Value;

/// The value at `path` (keys separated by `.`, none for `value` itself), if there is one.
pub fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.')
        .filter(|k| !k.is_empty())
        .try_fold(value, |at, key| at.get(key))
}

/// The value at `path` under `value`, printed as Go prints it; `<no value>` when it is not there.
pub fn field(value: &Value, path: &str) -> String {
    let mut out = String::new();
    match lookup(value, path) {
        Some(at) => print(at, &mut out),
        None => out.push_str("<no value>"),
    }
    out
}

/// `fmt`'s `%v` of a value `encoding/json` decoded.
pub fn print(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&float(n.as_f64().unwrap_or(f64::NAN))),
        Value::String(s) => out.push_str(s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                print(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push_str("map[");
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(key);
                out.push(':');
                print(&map[key], out);
            }
            out.push(']');
        }
    }
}

/// A float64 as `%v` prints it: `strconv.FormatFloat(f, 'g', -1, 64)`.
fn float(f: f64) -> String {
    if !f.is_finite() {
        return if f.is_nan() {
            "NaN".into()
        } else if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    // Rust's `{:e}` gives the shortest digits that read back as `f`, as Go's does.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{dot}{rest}e{esign}{:02}", exp.abs());
    }
    let point = exp + 1;
    if point <= 0 {
        return format!("{sign}0.{}{digits}", "0".repeat((-point) as usize));
    }
    let point = point as usize;
    if digits.len() <= point {
        format!("{sign}{digits}{}", "0".repeat(point - digits.len()))
    } else {
        format!("{sign}{}.{}", &digits[..point], &digits[point..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_print_as_go_prints_them() {
        for (f, go) in [
            (0.0, "0"),
            (1.0, "1"),
            (1.5, "1.5"),
            (-2.25, "-2.25"),
            (1500.0, "1500"),
            (999999.0, "999999"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (1e21, "1e+21"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.000012, "1.2e-05"),
            (123.456, "123.456"),
        ] {
            assert_eq!(float(f), go, "{f}");
        }
    }

    #[test]
    fn values_and_missing_keys() {
        let v = json!({"a": {"b": [1, "x", null, true]}, "m": {"z": 1, "a": {"k": 2.5}}});
        assert_eq!(field(&v, "a.b"), "[1 x <nil> true]");
        assert_eq!(field(&v, "m"), "map[a:map[k:2.5] z:1]");
        assert_eq!(field(&v, "a.nope"), "<no value>");
        assert_eq!(field(&v, "a.nope.deeper"), "<no value>");
        assert_eq!(field(&Value::Null, "key"), "<no value>");
        assert_eq!(field(&json!({"actor": {}}), "actor.email"), "<no value>");
    }
}
