//! Logging: tracing to stderr (stdout belongs to the `stdout` sink), as text or JSON, at the
//! configured level unless `RUST_LOG` says otherwise.
//!
//! Two guards keep logs safe to ship: every text event is one line (a multi-line error message has
//! its line breaks written as `\n`, so a log collector never splits one event into several), and
//! the HTTP and TLS libraries are held at `info` unless the filter names them, since their debug
//! and trace output describes connections and requests in more detail than is safe to ship.

use crate::config::LogFormat;
use std::io::{self, IsTerminal, Write};
use tracing_subscriber::EnvFilter;

/// Libraries whose debug output is kept out unless the filter names them.
const QUIET: &[&str] = &[
    "hyper",
    "hyper_util",
    "rustls",
    "h2",
    "tokio_rustls",
    // Logs every message's headers (signatures, configured header values) at trace.
    "async_nats",
];

/// Installs the global subscriber; later calls do nothing.
pub fn init(format: LogFormat, level: &str) {
    let wanted = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| EnvFilter::try_new(v).is_ok())
        .unwrap_or_else(|| level.to_string());
    let filter = EnvFilter::try_new(with_quiet_libraries(&wanted))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(io::stderr().is_terminal())
        .with_writer(|| OneLine(io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// `filter` plus `LIB=info` for each quiet library it does not name.
fn with_quiet_libraries(filter: &str) -> String {
    let mut out = filter.to_string();
    for lib in QUIET {
        let named = filter
            .split(',')
            .any(|d| d.trim().split(['=', '[']).next() == Some(lib));
        if !named {
            out.push_str(&format!(",{lib}=info"));
        }
    }
    out
}

/// Writes each formatted event as one line: line breaks inside it become `\n`.
struct OneLine<W: Write>(W);

impl<W: Write> Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        if !body.contains(&b'\n') {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut out = Vec::with_capacity(buf.len() + 8);
        for &b in body {
            match b {
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                _ => out.push(b),
            }
        }
        if body.len() < buf.len() {
            out.push(b'\n');
        }
        self.0.write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_is_one_line() {
        let mut out = OneLine(Vec::new());
        out.write_all(b"ERROR reload refused: config x:\n  a: bad\n  b: bad\n")
            .unwrap();
        out.write_all(b"INFO fine\n").unwrap();
        assert_eq!(
            String::from_utf8(out.0).unwrap(),
            "ERROR reload refused: config x:\\n  a: bad\\n  b: bad\nINFO fine\n"
        );
    }

    #[test]
    fn libraries_are_held_at_info_unless_named() {
        assert_eq!(
            with_quiet_libraries("debug,hyper=trace"),
            "debug,hyper=trace,hyper_util=info,rustls=info,h2=info,tokio_rustls=info,async_nats=info"
        );
    }
}
