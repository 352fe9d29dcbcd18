//! The status page's small charts of the last hour, as inline SVG drawn on the server: one bar
//! per minute, oldest at the left. A sink's delivered events rise above the line and its failed
//! attempts and dead letters hang below it, each half on its own scale (a few failures among
//! thousands of deliveries still show); a source's lag is one bar per minute it was looked at.

use crate::history::{LagMinute, Minute, SinkMinute};
use std::fmt::Write;

/// Width of one minute's bar, and the chart's width and height, in pixels.
const BAR: u64 = 3;
const WIDTH: u64 = BAR * crate::history::MINUTES;
const HEIGHT: u64 = 36;

/// A sink's hour: delivered up (green), failed attempts and dead letters down (amber, red).
pub fn sink(name: &str, hour: &[Minute<SinkMinute>]) -> String {
    let half = HEIGHT / 2;
    let top = hour.iter().map(|m| m.counts.delivered).max().unwrap_or(0);
    let bottom = hour
        .iter()
        .map(|m| m.counts.failed + m.counts.dead_lettered)
        .max()
        .unwrap_or(0);
    let sum = |f: fn(&SinkMinute) -> u64| hour.iter().map(|m| f(&m.counts)).sum::<u64>();
    let title = format!(
        "{name}, last hour: {} delivered, {} failed attempts, {} dead-lettered",
        sum(|m| m.delivered),
        sum(|m| m.failed),
        sum(|m| m.dead_lettered),
    );
    let mut out = open("sink-chart", &title);
    for (i, m) in hour.iter().enumerate() {
        let x = i as u64 * BAR;
        let up = scaled(m.counts.delivered, top, half);
        bar(&mut out, "d", x, half - up, up);
        let failed = scaled(m.counts.failed, bottom, half);
        let dead = scaled(m.counts.dead_lettered, bottom, half);
        bar(&mut out, "f", x, half, failed);
        bar(&mut out, "x", x, half + failed, dead.min(half - failed));
    }
    let _ = write!(
        out,
        "<line x1=\"0\" y1=\"{half}\" x2=\"{WIDTH}\" y2=\"{half}\" class=\"axis\"/></svg>"
    );
    out
}

/// A source's hour of lag (blue), on the scale of its largest.
pub fn lag(name: &str, hour: &[Minute<LagMinute>]) -> String {
    let most = hour
        .iter()
        .filter_map(|m| m.counts.lag_bytes)
        .max()
        .unwrap_or(0);
    let now = hour.last().and_then(|m| m.counts.lag_bytes);
    let title = format!(
        "{name}, last hour: lag at most {most} bytes{}",
        now.map(|n| format!(", {n} this minute"))
            .unwrap_or_default()
    );
    let mut out = open("lag-chart", &title);
    for (i, m) in hour.iter().enumerate() {
        let h = scaled(m.counts.lag_bytes.unwrap_or(0), most, HEIGHT);
        bar(&mut out, "l", i as u64 * BAR, HEIGHT - h, h);
    }
    let _ = write!(
        out,
        "<line x1=\"0\" y1=\"{HEIGHT}\" x2=\"{WIDTH}\" y2=\"{HEIGHT}\" class=\"axis\"/></svg>"
    );
    out
}

/// The chart's opening, titled (the title is its tooltip and what a screen reader says).
fn open(class: &str, title: &str) -> String {
    let title = super::page::escape(title);
    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        "<svg class=\"chart {class}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{title}\"><title>{title}</title>"
    );
    out
}

/// `n` of `most` as pixels of `room`: at least one for anything above zero.
fn scaled(n: u64, most: u64, room: u64) -> u64 {
    match (n, most) {
        (0, _) | (_, 0) => 0,
        _ => (n.saturating_mul(room) / most).clamp(1, room),
    }
}

fn bar(out: &mut String, class: &str, x: u64, y: u64, h: u64) {
    if h > 0 {
        let w = BAR - 1;
        let _ = write!(
            out,
            "<rect class=\"{class}\" x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\"/>"
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::history::{Minute, SinkMinute};

    #[test]
    fn failures_show_below_the_line_however_many_were_delivered() {
        let mut hour: Vec<_> = (0..60)
            .map(|_| Minute {
                time: String::new(),
                counts: SinkMinute::default(),
            })
            .collect();
        hour[58].counts.delivered = 100_000;
        hour[59].counts.failed = 1;
        hour[59].counts.dead_lettered = 1;
        let svg = super::sink("a<b", &hour);
        assert!(
            svg.contains("a&lt;b, last hour: 100000 delivered, 1 failed attempts, 1 dead-lettered")
        );
        assert!(svg.contains("<rect class=\"d\" x=\"174\" y=\"0\" width=\"2\" height=\"18\"/>"));
        assert!(svg.contains("<rect class=\"f\" x=\"177\" y=\"18\" width=\"2\" height=\"9\"/>"));
        assert!(svg.contains("<rect class=\"x\" x=\"177\" y=\"27\" width=\"2\" height=\"9\"/>"));
        assert_eq!(svg.matches("<rect").count(), 3);
    }
}
