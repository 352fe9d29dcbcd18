//! Checks that no single value can make: budgets that must fit together, names that must be
//! unique, `sources:` that must name a source; and the top-level sections' bounds.

use super::file::ConfigFile;
use super::source::SourceKind;
use std::collections::BTreeSet;

/// Every problem of the config that spans keys or items.
pub fn cross_checks(c: &ConfigFile) -> Vec<String> {
    let mut p = sections(c);
    names(c, &mut p);
    for (i, s) in c.sources.iter().enumerate() {
        if let SourceKind::Http(http) = &s.kind {
            // A body is journaled as its events, each ending in a newline: at most one byte more.
            let body = http.max_body_bytes.0;
            if body.saturating_add(1) > c.journal.max_bytes.0 {
                p.push(format!(
                    "sources.{i}.max_body_bytes: a body of {body} bytes is journaled as up to {} bytes, more than journal.max_bytes ({}); such a request could never be taken",
                    body.saturating_add(1),
                    c.journal.max_bytes.0
                ));
            }
        }
    }
    p
}

/// The top-level sections: their bounds, and the journal holding a whole line.
fn sections(c: &ConfigFile) -> Vec<String> {
    let mut p = Vec::new();
    if c.journal.max_bytes.0 < c.max_line_bytes.saturating_add(1) {
        p.push(format!(
            "journal.max_bytes: {} cannot hold one line of max_line_bytes ({}) and its newline",
            c.journal.max_bytes.0, c.max_line_bytes
        ));
    }
    if c.max_line_bytes == 0 {
        p.push("max_line_bytes: must be at least 1".into());
    }
    if c.rejected.max_bytes.0 < 1024 * 1024 {
        p.push(
            "rejected.max_bytes: must be at least 1MiB (a record keeps up to 64KiB of a line)"
                .into(),
        );
    }
    if c.attempts.keep > 1_000_000 {
        p.push(
            "attempts.keep: at most 1000000 (two files of that many lines each are kept per sink)"
                .into(),
        );
    }
    let summary = c.log.summary_interval;
    if !summary.is_zero() && summary < std::time::Duration::from_millis(100) {
        p.push("log.summary_interval: at least 100ms, or 0s to turn the summary off".into());
    }
    if !c.admin.listen.is_empty() && c.admin.listen.parse::<std::net::SocketAddr>().is_err() {
        p.push(format!(
            "admin.listen: {:?} is not an address like 127.0.0.1:9464 (or \"\")",
            c.admin.listen
        ));
    }
    if c.sources.is_empty() {
        p.push("sources: at least one source is needed".into());
    }
    if c.sinks.is_empty() {
        p.push("sinks: at least one sink is needed".into());
    }
    p
}

/// Names used once each, and every sink's `sources` naming a source.
fn names(c: &ConfigFile, p: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    for (i, s) in c.sources.iter().enumerate() {
        if !seen.insert(s.name.as_str()) {
            p.push(format!(
                "sources.{i}.name: source name {:?} is used twice",
                s.name.as_str()
            ));
        }
    }
    let sources = seen;
    let mut seen = BTreeSet::new();
    for (i, s) in c.sinks.iter().enumerate() {
        if !seen.insert(s.name.as_str()) {
            p.push(format!(
                "sinks.{i}.name: sink name {:?} is used twice",
                s.name.as_str()
            ));
        }
        for name in s.common.sources.iter().flatten() {
            if !sources.contains(name.as_str()) {
                p.push(format!(
                    "sinks.{i}.sources: there is no source named {:?}",
                    name.as_str()
                ));
            }
        }
    }
}
