//! Request bodies: Flipt's webhook body by default (SPEC §1.2), or a sink's Tera template.
//!
//! Template context (SPEC §2): the event's fields at top level, `event` (the same object),
//! `source` (`{name, format, line}`), and for batching sinks `events` (the list). The `toJson`
//! filter writes a value as Go's `json.Marshal` would, as Flipt's templates do; `goField` prints a
//! field as a Flipt template translated from Go would ([`super::gofmt`]). A template that
//! fails to render, renders invalid JSON under a JSON content type, renders more than
//! `max_body_bytes`, or runs past its time limit is a delivery error of that event (it is
//! dead-lettered), never a crash or a hang: templates run off the async threads
//! ([`Renderer::render_bounded`]) and write into a bounded buffer that also stops them at the time
//! limit. A render that writes nothing for ever (nested loops with no output) cannot be stopped
//! from outside: it is given up on and its thread runs until the loop ends, holding one of the
//! sink's `concurrency` render slots, so such renders cannot take more threads than that.

use crate::event::gojson;
use crate::record::Record;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tera::{Context, Kwargs, State, Tera, TeraResult, Value};
use tokio::sync::Semaphore;

/// Bounds on the work of one template render.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body a template may write.
    pub max_body_bytes: usize,
    /// How long one render may take.
    pub time: Duration,
    /// Renders of this sink's template that may run at once (given-up ones included).
    pub parallel: usize,
}

/// Why a body could not be made.
#[derive(Debug, Clone)]
pub struct RenderError {
    /// Safe to log: never quotes the rendered body.
    pub reason: String,
    /// The start of the rendered body, for the dead-letter file (0600) only.
    pub excerpt: Option<String>,
}

impl RenderError {
    fn new(reason: impl Into<String>) -> RenderError {
        RenderError {
            reason: reason.into(),
            excerpt: None,
        }
    }
}

/// How a sink's body is made.
pub struct Renderer {
    template: Option<Tera>,
    /// Whether rendered bodies must be valid JSON (a JSON content type).
    check_json: bool,
    /// Whether one request carries a list of events.
    batched: bool,
    limits: Limits,
    /// One permit per template render running, held until its thread is done even if the render
    /// was given up on, so runaway templates cannot take more than `limits.parallel` threads. Shared
    /// by every renderer of the same sink name, so reloads do not add more.
    running: Arc<Semaphore>,
}

const TEMPLATE: &str = "body";

impl Renderer {
    /// Compiles `body` if given. The error names the template's line.
    pub fn new(
        sink: &str,
        body: Option<&str>,
        content_type: &str,
        batched: bool,
        limits: Limits,
    ) -> Result<Renderer, String> {
        let template = match body {
            None => None,
            Some(text) => {
                let mut tera = Tera::new();
                tera.autoescape_on(Vec::<&str>::new());
                tera.register_filter("toJson", to_json);
                tera.register_filter("goField", go_field);
                tera.add_raw_template(TEMPLATE, text)
                    .map_err(|e| describe(&e))?;
                Some(tera)
            }
        };
        let check_json = content_type.to_ascii_lowercase().contains("json");
        Ok(Renderer {
            template,
            check_json,
            batched,
            limits,
            running: render_slots(sink, limits.parallel),
        })
    }

    /// The body for `records`, with templates rendered on a blocking thread within the limits.
    /// The default body is made in place: it is a concatenation and cannot run away.
    pub async fn render_bounded(
        self: &Arc<Self>,
        records: &[Arc<Record>],
    ) -> Result<Vec<u8>, RenderError> {
        if self.template.is_none() {
            return Ok(flipt_body(records, self.batched));
        }
        self.bounded(records, self.limits.time, |me, records| me.render(records))
            .await
            .and_then(|r| r)
    }

    /// One rendering per record (a NATS subject or body each), all on one blocking thread within
    /// the limits (the default body in place); `Err` if the job as a whole could not run or finish.
    pub async fn render_each_bounded(
        self: &Arc<Self>,
        records: &[Arc<Record>],
    ) -> Result<Vec<Result<Vec<u8>, RenderError>>, RenderError> {
        if self.template.is_none() {
            let one = |r| Ok(flipt_body(std::slice::from_ref(r), self.batched));
            return Ok(records.iter().map(one).collect());
        }
        // Each render has the sink's time limit (its output is cut at the deadline): the job,
        // that many.
        let n = u32::try_from(records.len().max(1)).unwrap_or(u32::MAX);
        self.bounded(
            records,
            self.limits.time.saturating_mul(n),
            |me, records| {
                records
                    .iter()
                    .map(|r| me.render(std::slice::from_ref(r)))
                    .collect()
            },
        )
        .await
    }

    /// Runs `job` on a blocking thread, holding one of the sink's render permits, given up after
    /// the sink's timeout.
    async fn bounded<T: Send + 'static>(
        self: &Arc<Self>,
        records: &[Arc<Record>],
        time: Duration,
        job: impl FnOnce(&Renderer, &[Arc<Record>]) -> T + Send + 'static,
    ) -> Result<T, RenderError> {
        let shown = humantime::format_duration(time);
        let permit = tokio::time::timeout(time, self.running.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
                RenderError::new(format!(
                    "template: earlier renders are still running past their time limit ({shown}); not started"
                ))
            })?;
        let (me, records) = (self.clone(), records.to_vec());
        let job = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job(&me, &records)
        });
        match tokio::time::timeout(time, job).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(e)) => Err(RenderError::new(format!(
                "template: the render failed: {e}"
            ))),
            Err(_) => Err(RenderError::new(format!(
                "template: did not finish within {shown} (the sink's timeout); given up"
            ))),
        }
    }

    /// The body for `records` (one record unless the sink batches), on this thread.
    pub fn render(&self, records: &[Arc<Record>]) -> Result<Vec<u8>, RenderError> {
        let Some(tera) = &self.template else {
            return Ok(flipt_body(records, self.batched));
        };
        let ctx = self.context(records)?;
        let mut out = Bounded {
            buf: Vec::new(),
            max: self.limits.max_body_bytes,
            deadline: Instant::now() + self.limits.time,
            exceeded: None,
        };
        if let Err(e) = tera.render_to(TEMPLATE, &ctx, &mut out) {
            return Err(RenderError::new(match out.exceeded {
                Some(Exceeded::Size) => format!(
                    "template: the body is over max_body_bytes ({})",
                    self.limits.max_body_bytes
                ),
                Some(Exceeded::Time) => format!(
                    "template: did not finish within {} (the sink's timeout)",
                    humantime::format_duration(self.limits.time)
                ),
                None => format!("template: {}", describe(&e)),
            }));
        }
        let body = out.buf;
        if self.check_json
            && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body)
        {
            return Err(RenderError {
                reason: format!("rendered body is not valid JSON ({e})"),
                excerpt: Some(clip(&String::from_utf8_lossy(&body))),
            });
        }
        Ok(body)
    }

    /// The template context of `records`. Values a template could only see as `null` (numbers out
    /// of range, nesting too deep) are errors, never a silent `null`.
    fn context(&self, records: &[Arc<Record>]) -> Result<Context, RenderError> {
        let mut ctx = Context::new();
        let unusable = |what: &str, e: String| {
            RenderError::new(format!(
                "template: the {what} cannot be given to a template: {e}"
            ))
        };
        if self.batched {
            let events = records
                .iter()
                .map(|r| r.event.to_value())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| unusable("event", e))?;
            ctx.insert("events", &events);
        } else if let Some(r) = records.first() {
            let event = r.event.to_value().map_err(|e| unusable("event", e))?;
            if let serde_json::Value::Object(fields) = &event {
                for (k, v) in fields {
                    ctx.insert(k.clone(), v);
                }
            }
            ctx.insert("event", &event);
            let line: serde_json::Value = serde_json::from_str(r.line())
                .map_err(|e| unusable("source line", e.to_string()))?;
            ctx.insert(
                "source",
                &serde_json::json!({"name": &*r.source.name, "format": r.source.format.as_str(), "line": line}),
            );
        }
        Ok(ctx)
    }
}

/// The render slots of sink `name`, the same for the life of the process (created with `parallel`
/// slots the first time; a reload that raises `concurrency` adds the difference).
fn render_slots(name: &str, parallel: usize) -> Arc<Semaphore> {
    type Slots = std::collections::HashMap<String, (Arc<Semaphore>, usize)>;
    static SLOTS: std::sync::OnceLock<std::sync::Mutex<Slots>> = std::sync::OnceLock::new();
    let mut slots = SLOTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let parallel = parallel.max(1);
    let (sem, size) = slots
        .entry(name.to_string())
        .or_insert_with(|| (Arc::new(Semaphore::new(parallel)), parallel));
    if parallel > *size {
        sem.add_permits(parallel - *size);
        *size = parallel;
    }
    sem.clone()
}

/// Which limit a render ran into.
#[derive(Debug, Clone, Copy)]
enum Exceeded {
    Size,
    Time,
}

/// The render's output: refuses to grow past `max` or to go on past `deadline`, which stops
/// Tera at its next write.
struct Bounded {
    buf: Vec<u8>,
    max: usize,
    deadline: Instant,
    exceeded: Option<Exceeded>,
}

impl io::Write for Bounded {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buf.len() + bytes.len() > self.max {
            self.exceeded = Some(Exceeded::Size);
            return Err(io::Error::other("over max_body_bytes"));
        }
        if Instant::now() > self.deadline {
            self.exceeded = Some(Exceeded::Time);
            return Err(io::Error::other("past the time limit"));
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Flipt's webhook body for one event, or a JSON array of them for a batch.
pub fn flipt_body(records: &[Arc<Record>], batched: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.iter().map(|r| r.line().len() + 16).sum());
    if batched {
        out.push(b'[');
    }
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        r.event.write_flipt_json(&mut out);
    }
    if batched {
        out.push(b']');
    }
    out
}

/// `{{ value | toJson }}`: Go-compatible JSON (keys sorted, `<>&` escaped).
fn to_json(value: Value, _: Kwargs, _: &State) -> TeraResult<Value> {
    let v = serde_json::to_value(&value).map_err(tera::Error::message)?;
    let bytes = gojson::to_vec(&v).map_err(tera::Error::message)?;
    Ok(Value::from(String::from_utf8_lossy(&bytes).into_owned()))
}

/// `{{ payload | goField(path="a.b") }}`: the field as a Flipt (Go) template prints it, `<no
/// value>` when missing; with `json=true`, as Flipt's `toJson` writes it (`null` when missing).
fn go_field(value: Value, kwargs: Kwargs, _: &State) -> TeraResult<Value> {
    let path: &str = kwargs.must_get("path")?;
    let json: bool = kwargs.get("json")?.unwrap_or(false);
    let v = serde_json::to_value(&value).map_err(tera::Error::message)?;
    if !json {
        return Ok(Value::from(super::gofmt::field(&v, path)));
    }
    let at = super::gofmt::lookup(&v, path).unwrap_or(&serde_json::Value::Null);
    let bytes = gojson::to_vec(at).map_err(tera::Error::message)?;
    Ok(Value::from(String::from_utf8_lossy(&bytes).into_owned()))
}

/// A Tera error with its causes, on one line.
fn describe(e: &tera::Error) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out.replace('\n', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn clip(s: &str) -> String {
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Format, parse_line};
    use crate::record::SourceInfo;

    const LIMITS: Limits = Limits {
        max_body_bytes: 1 << 20,
        time: Duration::from_secs(10),
        parallel: 1,
    };

    fn record(line: &str) -> Arc<Record> {
        let info = Arc::new(SourceInfo {
            name: "flipt".into(),
            format: Format::Flipt,
        });
        Arc::new(Record::new(
            info,
            0,
            "k".into(),
            parse_line(Format::Flipt, line).unwrap(),
        ))
    }

    const LINE: &str = r#"{"version": "0.2", "type": "flag", "action": "created", "status": "success", "metadata": {"actor":{"email":"dev@x.io"}}, "payload": {"key":"new-ui","tags":["<a>"]}, "timestamp": "2026-11-23T06:00:00Z"}"#;

    #[test]
    fn slack_template_and_to_json() {
        let tpl = r#"{"text": "{{ type }}/{{ action }} {{ payload.key }} by {{ metadata.actor.email | default(value="someone") }} from {{ source.name }}", "p": {{ payload | toJson }}}"#;
        let r = Renderer::new("t", Some(tpl), "application/json", false, LIMITS).unwrap();
        let body = String::from_utf8(r.render(&[record(LINE)]).unwrap()).unwrap();
        assert_eq!(
            body,
            r#"{"text": "flag/created new-ui by dev@x.io from flipt", "p": {"key":"new-ui","tags":["\u003ca\u003e"]}}"#
        );
    }

    #[test]
    fn invalid_json_and_render_errors_are_errors() {
        let r = Renderer::new(
            "t",
            Some("{{ type }} not json"),
            "application/json",
            false,
            LIMITS,
        )
        .unwrap();
        assert!(
            r.render(&[record(LINE)])
                .unwrap_err()
                .reason
                .contains("not valid JSON")
        );
        let r = Renderer::new("t", Some("{{ type }} plain"), "text/plain", false, LIMITS).unwrap();
        assert_eq!(r.render(&[record(LINE)]).unwrap(), b"flag plain");
        let r = Renderer::new("t", Some("{{ nothere.x }}"), "text/plain", false, LIMITS).unwrap();
        assert!(r.render(&[record(LINE)]).is_err());
    }

    #[test]
    fn bodies_over_the_limit_and_unseeable_values_are_errors() {
        let limits = Limits {
            max_body_bytes: 10,
            ..LIMITS
        };
        let r = Renderer::new(
            "t",
            Some("{% for i in range(end=100) %}x{% endfor %}"),
            "text/plain",
            false,
            limits,
        )
        .unwrap();
        assert!(
            r.render(&[record(LINE)])
                .unwrap_err()
                .reason
                .contains("over max_body_bytes (10)")
        );
        let line = LINE.replace(r#""tags":["<a>"]"#, r#""n":1e999"#);
        let r = Renderer::new("t", Some("{{ type }}"), "text/plain", false, LIMITS).unwrap();
        assert!(
            r.render(&[record(&line)])
                .unwrap_err()
                .reason
                .contains("cannot be given to a template")
        );
    }

    #[test]
    fn bad_templates_name_the_line() {
        let err = Renderer::new(
            "t",
            Some("line one\n{{ type "),
            "application/json",
            false,
            LIMITS,
        )
        .err()
        .unwrap();
        assert!(err.contains('2'), "{err}");
    }

    #[test]
    fn batches_are_arrays_or_events_lists() {
        let recs = [record(LINE), record(LINE)];
        let body = String::from_utf8(
            Renderer::new("t", None, "application/json", true, LIMITS)
                .unwrap()
                .render(&recs)
                .unwrap(),
        )
        .unwrap();
        assert!(
            body.starts_with(r#"[{"version":"0.2""#) && body.ends_with(r#""status":"success"}]"#)
        );
        let r = Renderer::new(
            "t",
            Some("{{ events | length }}"),
            "text/plain",
            true,
            LIMITS,
        )
        .unwrap();
        assert_eq!(r.render(&recs).unwrap(), b"2");
    }
}
