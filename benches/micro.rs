//! Micro-benchmarks of the per-event work, one event at a time: parsing a line (Flipt, and
//! `auto` on an Unleash line), rendering the body (Flipt's default and a Slack-style template),
//! signing it (Flipt's HMAC, Standard Webhooks) and gzipping it (one body, a batch of 100); and
//! what every attempt costs besides (its line in the attempt log, its count in the last hour).
//! `cargo bench --bench micro`.

use criterion::{Criterion, criterion_group, criterion_main};
use flagtail::config::{Secret, SignatureScheme};
use flagtail::event::{Format, parse_line};
use flagtail::record::{Record, SourceInfo};
use flagtail::sink::render::{Limits, Renderer};
use flagtail::sink::sign::Signer;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

const FLIPT: &str = r#"{"version":"0.2","type":"flag","action":"updated","status":"success","metadata":{"actor":{"authentication":"token","email":"dev7@example.com","ip":"10.0.0.7","name":"Dev"}},"payload":{"description":"benchmark flag","enabled":true,"key":"flag-7","name":"Flag 7","namespace_key":"default"},"timestamp":"2026-11-23T06:00:07Z"}"#;
const UNLEASH: &str = r#"{"id":41,"type":"feature-environment-enabled","createdBy":"admin","createdByUserId":1,"createdAt":"2026-11-23T06:00:07.000Z","featureName":"flag-7","project":"default","environment":"production","data":null,"preData":null,"tags":[]}"#;
const SLACK: &str = r#"{"text": "{{ type }}/{{ action }} {{ payload.key }} by {{ metadata.actor.email | default(value="someone") }}"}"#;

fn record(line: &str, format: Format) -> Arc<Record> {
    let info = Arc::new(SourceInfo {
        name: "bench".into(),
        format,
    });
    let event = parse_line(format, line).expect("a valid line");
    Arc::new(Record::new(info, 0, "bench-0".into(), event))
}

fn limits() -> Limits {
    Limits {
        max_body_bytes: 1 << 20,
        time: Duration::from_secs(10),
        parallel: 1,
    }
}

fn benches(c: &mut Criterion) {
    c.bench_function("parse flipt", |b| {
        b.iter(|| parse_line(Format::Flipt, black_box(FLIPT)))
    });
    c.bench_function("parse auto (unleash)", |b| {
        b.iter(|| parse_line(Format::Auto, black_box(UNLEASH)))
    });
    let one = [record(FLIPT, Format::Flipt)];
    let default = Renderer::new("d", None, "application/json", false, limits()).unwrap();
    c.bench_function("render default body", |b| {
        b.iter(|| default.render(black_box(&one)))
    });
    let template = Renderer::new("t", Some(SLACK), "application/json", false, limits()).unwrap();
    c.bench_function("render template (slack)", |b| {
        b.iter(|| template.render(black_box(&one)))
    });
    let body = default.render(&one).unwrap();
    let flipt = Signer::new(
        SignatureScheme::Flipt,
        &[Secret::new("bench-secret".into())],
    )
    .unwrap();
    c.bench_function("sign flipt", |b| {
        b.iter(|| flipt.headers(black_box(&body), "bench-0", 1_763_877_600))
    });
    let sw = Signer::new(
        SignatureScheme::StandardWebhooks,
        &[Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into())],
    )
    .unwrap();
    c.bench_function("sign standard-webhooks", |b| {
        b.iter(|| sw.headers(black_box(&body), "bench-0", 1_763_877_600))
    });
    // `compression: gzip`: one event's body, and a batch of 100 (distinct keys).
    let mut gz = flagtail::delivery::http::gzip::Gzip::default();
    c.bench_function("gzip one body", |b| {
        b.iter(|| gz.compress(black_box(&body)).map(<[u8]>::len))
    });
    let hundred: Vec<Arc<Record>> = (0..100)
        .map(|i| {
            record(
                &FLIPT.replace("flag-7", &format!("flag-{i}")),
                Format::Flipt,
            )
        })
        .collect();
    let batch = default.render(&hundred).unwrap();
    c.bench_function("gzip a batch of 100", |b| {
        b.iter(|| gz.compress(black_box(&batch)).map(<[u8]>::len))
    });
    let one = gz.compress(&body).unwrap().len();
    let many = gz.compress(&batch).unwrap().len();
    eprintln!(
        "gzip sizes: one body {} -> {one} bytes, a batch of 100 {} -> {many} bytes",
        body.len(),
        batch.len()
    );
}

/// One attempt put on record as a delivery does: its line built and appended to the attempt log
/// (a real file in a temporary state dir, `attempts.keep` 1000, so the files alternate), and its
/// count in the sink's last hour. A delivered attempt waits in memory (one `write` a 32 KiB); a
/// failed one ("record an attempt") is written at once.
fn attempt_record(c: &mut Criterion) {
    use flagtail::attempt_log::{self, AttemptLine};
    let dir = tempfile::tempdir().unwrap();
    attempt_log::configure(dir.path(), 1000);
    let state = flagtail::status::sink("bench");
    let line = |status, error| AttemptLine {
        time: attempt_log::Time::Now,
        sink: "bench",
        key: "flipt-d0baa19c5c6c33cb-1584",
        event: "flag:updated",
        attempt: 1,
        status: Some(status),
        error,
        duration_ms: 3,
    };
    c.bench_function("record a delivered attempt", |b| {
        b.iter(|| {
            attempt_log::record(&line(204, None));
            state.delivered(1);
        })
    });
    let refused = "POST https://audit.example.com/***: 500 Internal Server Error";
    c.bench_function("record an attempt", |b| {
        b.iter(|| {
            attempt_log::record(&line(500, Some(refused)));
            state.attempt_lost();
        })
    });
}

criterion_group!(micro, benches, attempt_record);
criterion_main!(micro);
