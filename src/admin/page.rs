//! The status page at `/`: a [`Snapshot`] as one small HTML page, rendered on the server (no
//! script, no external asset), that reloads itself every few seconds. Every text from outside
//! (paths, reasons) is escaped.

use super::snapshot::{SinkStatus, Snapshot, SourceStatus, Waiting};
use std::fmt::Write;

/// Seconds between reloads of the page.
const REFRESH: u32 = 5;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}\
table{border-collapse:collapse}th,td{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}\
td.n{text-align:right;font-variant-numeric:tabular-nums}.bad{color:#b00}.ok{color:#070}.warn{color:#a60}small{color:#666}\
tr.sink-retrying{background:#fff6e0}tr.sink-down{background:#fde8e8}tr.sink-down td:first-child,tr.sink-retrying td:first-child{font-weight:600}\
svg.chart{display:block}svg .d{fill:#2a9d3a}svg .f{fill:#e0a000}svg .x{fill:#c62828}svg .l{fill:#3b6fd1}svg .axis{stroke:#bbb;stroke-width:1}";

pub fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"{REFRESH}\">\
         <title>flagtail</title><style>{STYLE}</style></head><body>\
         <h1>flagtail {}</h1><p id=\"state\"><strong class=\"{}\">{}</strong> · {} · {} · up {} <small>(since {})</small></p>",
        escape(&s.version),
        match s.state.as_str() {
            "ok" => "ok",
            "degraded" => "warn",
            _ => "bad",
        },
        escape(&s.state),
        state(s.healthy, "healthy", "unhealthy"),
        state(s.ready, "ready", "not ready"),
        humantime::format_duration(std::time::Duration::from_secs(s.uptime_seconds)),
        escape(&s.started),
    );
    if let Some(dead) = &s.dead {
        let _ = write!(out, "<p class=\"bad\">{}</p>", escape(dead));
    }
    if !s.waiting_for.is_empty() {
        let _ = write!(
            out,
            "<p class=\"bad\">waiting for sources to open: {}</p>",
            escape(&s.waiting_for.join(", "))
        );
    }
    out.push_str(
        "<h2>Sources</h2><table id=\"sources\"><tr><th>source</th><th>kind</th><th>path or address</th>\
         <th>position</th><th>lag (bytes)</th><th>journal (bytes)</th><th>lines read</th><th>rejected</th><th>last rejected</th><th>lag, last hour</th></tr>",
    );
    for src in &s.sources {
        source_row(&mut out, src);
    }
    out.push_str(
        "</table><h2>Sinks</h2><table id=\"sinks\"><tr><th>sink</th><th>state</th><th>backlog</th><th>kind</th><th>target</th><th>delivered</th>\
         <th>filtered</th><th>retries</th><th>dead-lettered</th><th>dead letters waiting</th><th>backoff</th><th>last error</th>\
         <th>last hour <small>(delivered ▲ · failed attempts, dead-lettered ▼)</small></th></tr>",
    );
    for sink in &s.sinks {
        sink_row(&mut out, sink);
    }
    out.push_str("</table>");
    for sink in s.sinks.iter().filter(|k| !k.failed_attempts.is_empty()) {
        failed_attempts(&mut out, sink);
    }
    let _ = writeln!(
        out,
        "<p><small>Reloads every {REFRESH} s. Data: <a href=\"status.json\">status.json</a> · \
         <a href=\"metrics\">metrics</a></small></p></body></html>"
    );
    out
}

/// One row of the sources' table.
fn source_row(out: &mut String, src: &SourceStatus) {
    let _ = write!(
        out,
        "<tr><td>{}</td><td>{}</td><td>{}</td>{}{}{}<td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
        escape(&src.name),
        escape(&src.kind),
        escape(&src.address),
        number(src.position),
        number(src.lag_bytes),
        number(src.journal_bytes),
        src.lines_read,
        src.rejected,
        noted(src.last_rejected.as_ref()),
        super::chart::lag(&src.name, &src.history),
    );
}

/// One row of the sinks' table, marked with the sink's state (its class, and the state's colour).
fn sink_row(out: &mut String, sink: &SinkStatus) {
    let colour = match sink.state.as_str() {
        "up" => "ok",
        "retrying" => "warn",
        _ => "bad",
    };
    let since = sink
        .since
        .as_ref()
        .map(|t| format!("{} <small>since {}</small>", failing_for(t), escape(t)))
        .unwrap_or_default();
    let waiting = if sink.dead_letters_waiting > 0 {
        " bad"
    } else {
        ""
    };
    let _ = write!(
        out,
        "<tr class=\"sink-{}\"><td>{}</td><td class=\"{colour}\">{}{since}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
         <td class=\"n\">{}</td><td class=\"n{waiting}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        escape(&sink.state),
        escape(&sink.name),
        escape(&sink.state),
        sink.backlog_events,
        escape(&sink.kind),
        escape(&sink.target),
        sink.delivered,
        sink.filtered,
        sink.retries,
        sink.dead_lettered,
        sink.dead_letters_waiting,
        sink.backoff
            .as_ref()
            .map(Waiting::to_string)
            .unwrap_or_default(),
        noted(sink.last_error.as_ref()),
        super::chart::sink(&sink.name, &sink.history),
    );
}

/// A sink's last failed attempts, newest first, from the attempt log.
fn failed_attempts(out: &mut String, sink: &SinkStatus) {
    let _ = write!(
        out,
        "<h2>Failed attempts of {0} <small>(the last {1}; all with <code>flagtail attempts --sink {0} --failed</code>)</small></h2>\
         <table class=\"attempts\" id=\"attempts-{0}\"><tr><th>time</th><th>event</th><th>attempt</th><th>status</th><th>took</th><th>error</th><th>id</th></tr>",
        escape(&sink.name),
        super::snapshot::FAILED_SHOWN,
    );
    for a in &sink.failed_attempts {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{} ms</td><td class=\"bad\">{}</td><td><small>{}</small></td></tr>",
            escape(&a.time),
            escape(&a.event),
            a.attempt,
            a.status.map_or("–".into(), |s| s.to_string()),
            a.duration_ms,
            escape(a.error.as_deref().unwrap_or_default()),
            escape(&a.key),
        );
    }
    out.push_str("</table>");
}

/// ` for 3m 10s` since `time` (RFC 3339), to the second; nothing if it cannot be read.
fn failing_for(time: &str) -> String {
    humantime::parse_rfc3339_weak(time)
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map(|d| {
            let d = std::time::Duration::from_secs(d.as_secs());
            format!(" for {}", humantime::format_duration(d))
        })
        .unwrap_or_default()
}

/// A note and its time, or nothing.
fn noted(n: Option<&super::snapshot::Noted>) -> String {
    n.map(|n| format!("{} <small>{}</small>", escape(&n.reason), escape(&n.time)))
        .unwrap_or_default()
}

fn state(good: bool, yes: &str, no: &str) -> String {
    match good {
        true => format!("<span class=\"ok\">{yes}</span>"),
        false => format!("<span class=\"bad\">{no}</span>"),
    }
}

fn number(n: Option<u64>) -> String {
    match n {
        Some(n) => format!("<td class=\"n\">{n}</td>"),
        None => "<td class=\"n\">–</td>".into(),
    }
}

/// `text` escaped for HTML, with the escaper templates use.
pub(super) fn escape(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    let _ = tera::escape_html(text, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn text_from_outside_is_escaped() {
        assert_eq!(
            super::escape("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }
}
