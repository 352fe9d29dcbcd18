//! Flipt's webhook templates (Go `text/template`) translated into Tera, for `--flipt-config`.
//!
//! Only what Flipt's documentation shows is translated: `{{ .Type }}`, `{{ .Action }}`,
//! `{{ .Status }}`, `{{ .Version }}`, `{{ .Timestamp }}`, `{{ .Metadata.Actor.KEY }}`,
//! `{{ .Payload.KEY… }}`, `{{ toJson .X }}`, comments, and the `{{-`/`-}}` trim markers. Values
//! under `metadata` and `payload` print as Go prints them (the `goField` filter: `1e+06`, `<nil>`,
//! `map[k:v]`, `<no value>` for a missing key). Anything else (`if`, `range`, pipelines,
//! variables, other functions) is refused with the construct named, so a template never runs
//! with a meaning other than the one it had in Flipt.

/// Why a Go template could not be translated.
#[derive(Debug, PartialEq, Eq)]
pub struct Untranslatable {
    /// The construct, as a user would look for it in the template (`range`, `printf`, `|`).
    pub construct: String,
    /// Why, and what is translated instead.
    pub reason: String,
}

/// The fields of Flipt's audit event as a Go template sees them, and their Tera names.
const FIELDS: [(&str, &str); 7] = [
    ("Version", "version"),
    ("Type", "type"),
    ("Action", "action"),
    ("Status", "status"),
    ("Timestamp", "timestamp"),
    ("Metadata", "metadata"),
    ("Payload", "payload"),
];

/// Go's `text/template` keywords, which open or close control structures.
const KEYWORDS: [&str; 11] = [
    "if", "else", "end", "range", "with", "define", "template", "block", "break", "continue", "nil",
];

/// Translates a Go template body into a Tera template with the same output.
pub fn translate(go: &str) -> Result<String, Untranslatable> {
    let mut out = String::new();
    let mut rest = go;
    let mut trim_next = false;
    loop {
        let (text, action) = match rest.find("{{") {
            Some(at) => (&rest[..at], Some(&rest[at + 2..])),
            None => (rest, None),
        };
        let mut text = if trim_next {
            text.trim_start_matches(GO_SPACE)
        } else {
            text
        };
        let Some(after_open) = action else {
            push_text(&mut out, text)?;
            return Ok(out);
        };
        let (trim_left, inner) = match after_open.strip_prefix('-') {
            Some(tail) if tail.starts_with(GO_SPACE) => (true, tail),
            _ => (false, after_open),
        };
        if trim_left {
            text = text.trim_end_matches(GO_SPACE);
        }
        push_text(&mut out, text)?;
        // A comment runs to `*/`, and may hold `}}`; the action then closes right after it.
        let from = match inner.trim_start_matches(GO_SPACE).strip_prefix("/*") {
            Some(comment) => match comment.find("*/") {
                Some(end) => inner.len() - comment.len() + end + 2,
                None => {
                    return Err(Untranslatable {
                        construct: "/*".into(),
                        reason: "a comment is opened and never closed".into(),
                    });
                }
            },
            None => 0,
        };
        let close = inner[from..]
            .find("}}")
            .map(|at| from + at)
            .ok_or_else(|| Untranslatable {
                construct: "{{".into(),
                reason: "an action is opened and never closed".into(),
            })?;
        let mut body = &inner[..close];
        rest = &inner[close + 2..];
        trim_next = false;
        if let Some(head) = body.strip_suffix('-')
            && head.ends_with(GO_SPACE)
        {
            body = head;
            trim_next = true;
        }
        out.push_str(&action_to_tera(body.trim_matches(GO_SPACE))?);
    }
}

/// The characters Go's trim markers remove.
const GO_SPACE: [char; 4] = [' ', '\t', '\r', '\n'];

/// Appends literal text, protected from Tera where it holds what Tera would read as markup.
fn push_text(out: &mut String, text: &str) -> Result<(), Untranslatable> {
    if text.is_empty() {
        return Ok(());
    }
    let markup = ["{{", "{%", "{#"].iter().any(|m| text.contains(m))
        || text.ends_with('{')
        || (text.starts_with(['{', '%', '#']) && out.ends_with('{'));
    if !markup {
        out.push_str(text);
    } else if text.contains("endraw") {
        return Err(Untranslatable {
            construct: "endraw".into(),
            reason: "the text has Tera markup and the word endraw, which cannot be kept as text"
                .into(),
        });
    } else {
        out.push_str("{% raw %}");
        out.push_str(text);
        out.push_str("{% endraw %}");
    }
    Ok(())
}

/// One action (the text between `{{` and `}}`, trim markers removed) as Tera.
fn action_to_tera(action: &str) -> Result<String, Untranslatable> {
    if action.starts_with("/*") && action.ends_with("*/") {
        return Ok(String::new());
    }
    let refuse = |construct: &str, reason: &str| {
        Err(Untranslatable {
            construct: construct.to_string(),
            reason: reason.to_string(),
        })
    };
    if action.contains('|') {
        return refuse("|", "pipelines are not translated");
    }
    if action.contains(['"', '`', '\'']) {
        return refuse(action, "literals are not translated");
    }
    if action.contains(['(', ')']) {
        return refuse(action, "parenthesised calls are not translated");
    }
    let words: Vec<&str> = action.split_whitespace().collect();
    match words.as_slice() {
        [path] if path.starts_with('.') => Ok(match field(path)? {
            Field::Text(name) => format!("{{{{ {name} }}}}"),
            Field::Under(base, path) => format!("{{{{ {base} | goField(path=\"{path}\") }}}}"),
        }),
        ["toJson", path] if path.starts_with('.') => Ok(match field(path)? {
            Field::Text(name) => format!("{{{{ {name} | toJson }}}}"),
            Field::Under(base, path) => {
                format!("{{{{ {base} | goField(path=\"{path}\", json=true) }}}}")
            }
        }),
        [first, ..] if KEYWORDS.contains(first) => refuse(
            first,
            "control structures are not translated; only {{ .Field }}, {{ .Metadata.Actor.KEY }}, {{ .Payload.KEY }} and {{ toJson .X }} are",
        ),
        [first, ..] if first.starts_with('$') => refuse(first, "variables are not translated"),
        [first, ..] if first.chars().all(|c| c.is_alphanumeric() || c == '_') => {
            refuse(first, "functions other than toJson are not translated")
        }
        [] => refuse("{{}}", "an empty action"),
        _ => refuse(action, "not a field or toJson of a field"),
    }
}

/// A field of Flipt's event, as Tera reads it.
enum Field {
    /// One of the event's text fields (`type`), printed as it is.
    Text(&'static str),
    /// A value under `metadata` or `payload` at a dotted path (`actor.email`; empty for the map
    /// itself), printed by the `goField` filter as Go prints it.
    Under(&'static str, String),
}

/// A field path (`.Payload.key`) of Flipt's audit event.
fn field(path: &str) -> Result<Field, Untranslatable> {
    let refuse = |reason: String| Untranslatable {
        construct: path.to_string(),
        reason,
    };
    let parts: Vec<&str> = path[1..].split('.').collect();
    let ident = |s: &&str| {
        !s.is_empty()
            && s.chars().all(|c| c.is_alphanumeric() || c == '_')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    };
    if path == "." {
        return Err(refuse(
            "the whole event has no translation; use its fields".into(),
        ));
    }
    if !parts.iter().all(ident) {
        return Err(refuse("not a field path".into()));
    }
    let (first, keys) = parts.split_first().unwrap_or((&"", &[]));
    let Some((_, name)) = FIELDS.iter().find(|(go, _)| go == first) else {
        return Err(refuse(format!(
            "the event has no field {first}; it has Version, Type, Action, Status, Timestamp, Metadata and Payload"
        )));
    };
    match (*name, keys) {
        ("metadata", ["Actor", rest @ ..]) if rest.len() <= 1 => {
            let path = ["actor"].iter().chain(rest).copied().collect::<Vec<_>>();
            Ok(Field::Under("metadata", path.join(".")))
        }
        ("metadata", _) => Err(refuse(
            "Metadata has only Actor, whose keys are text (.Metadata.Actor.email)".into(),
        )),
        ("payload", keys) => Ok(Field::Under("payload", keys.join("."))),
        (name, []) => Ok(Field::Text(name)),
        (_, _) => Err(refuse(format!("{first} is text and has no fields"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_constructs_translate() {
        assert_eq!(
            translate(r#"{"type": "{{ .Type }}", "who": "{{.Metadata.Actor.email}}", "p": {{ toJson .Payload }}}"#)
                .unwrap(),
            r#"{"type": "{{ type }}", "who": "{{ metadata | goField(path="actor.email") }}", "p": {{ payload | goField(path="", json=true) }}}"#
        );
        assert_eq!(
            translate("{{ .Payload.a.b }} {{ .Payload }} {{ toJson .Action }}").unwrap(),
            r#"{{ payload | goField(path="a.b") }} {{ payload | goField(path="") }} {{ action | toJson }}"#
        );
    }

    #[test]
    fn trim_markers_and_comments_are_applied_here() {
        assert_eq!(
            translate("[ \n {{- .Action -}} \n ]{{/* a }} b */}}{{- /* x */ -}} !").unwrap(),
            "[{{ action }}]!"
        );
    }

    #[test]
    fn text_that_tera_would_read_as_markup_stays_text() {
        let t = translate("{# x {% y {{ .Type }}").unwrap();
        assert!(t.starts_with("{% raw %}{# x {% y {% endraw %}"), "{t}");
    }

    #[test]
    fn everything_else_is_refused_by_name() {
        let construct = |go: &str| translate(go).unwrap_err().construct;
        assert_eq!(construct("{{ range .Payload.items }}x{{ end }}"), "range");
        assert_eq!(construct("{{ if .Payload.enabled }}on{{ end }}"), "if");
        assert_eq!(construct("{{ .Type | printf \"%s\" }}"), "|");
        assert_eq!(construct("{{ printf .Type }}"), "printf");
        assert_eq!(construct("{{ $x := .Type }}"), "$x");
        assert_eq!(construct("{{ .Metadata }}"), ".Metadata");
        assert_eq!(construct("{{/*/}}"), "/*");
        assert_eq!(construct("{{ .Nope }}"), ".Nope");
        assert_eq!(construct("{{ .Type.x }}"), ".Type.x");
        assert_eq!(construct("{{ .Type "), "{{");
    }
}
