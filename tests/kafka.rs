//! The Kafka sink against a real Kafka-compatible broker (tansu), read back with kafka-python:
//! every event with its key, value and headers, signed; Flipt's protobuf decoded with Flipt's own
//! `event.proto`; nothing lost across `kill -9` and a broker outage (copies only under one
//! `Idempotency-Key`); `check --connect`; an unknown topic dead-lettered; SASL PLAIN and SCRAM
//! logins answered by an independent SCRAM implementation.

mod support;

use support::kafka::{Kept, Tansu, flipt_proto};
use support::*;

/// A Kafka sink `bus` on `broker`'s forwarder, writing to `topic`.
fn kafka_sink(broker: &Tansu, topic: &str, extra: &str) -> String {
    let mut sink = format!(
        "  - name: bus\n    type: kafka\n    bootstrap_servers: [\"{}\"]\n    topic: {topic}\n",
        broker.bootstrap()
    );
    for (key, value) in [
        ("initial_backoff", "50ms"),
        ("max_backoff_duration", "1m"),
        ("timeout", "2s"),
    ] {
        if !extra.contains(&format!("    {key}:")) {
            sink.push_str(&format!("    {key}: {value}\n"));
        }
    }
    sink + extra
}

/// The flag key in a record's Flipt webhook body.
fn flag_of(r: &Kept) -> String {
    key_of(&r.value())
}

/// How many distinct `Idempotency-Key`s `records` have.
fn distinct(records: &[Kept]) -> usize {
    let ids: std::collections::HashSet<&str> = records
        .iter()
        .map(|r| r.header("Idempotency-Key"))
        .collect();
    ids.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_a_record_keyed_by_type_with_its_headers_signed() {
    let Some(broker) = Tansu::start(&[]).await else {
        return;
    };
    broker.create_topic("audit", 3);
    let s = Setup::new();
    s.write_lines(0..30, Encoding::Json);
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let extra = format!("    signature: standard-webhooks\n    signing_secret: \"{secret}\"\n");
    let mut ft = Flagtail::start(&s.config(&kafka_sink(&broker, "audit", &extra)));
    broker.wait_records("audit", 30).await;
    assert!(ft.terminate().await.success());
    // Read with room for a copy: one would show.
    let got = broker.read("audit", 31, None);
    assert_eq!(got.len(), 30, "once each");
    let verifier = standardwebhooks::Webhook::new(secret).unwrap();
    let mut seen = Vec::new();
    for r in &got {
        let i: usize = flag_of(r)["flag-".len()..].parse().unwrap();
        let (_, body) = flipt_line(i, Encoding::Json);
        assert_eq!(r.value(), body.as_bytes(), "Flipt's webhook body");
        assert_eq!(r.key.as_deref(), Some("flag"), "key {{{{ type }}}}");
        assert_eq!(r.header("Flagtail-Source"), "flipt");
        assert_eq!(r.header("Content-Type"), "application/json");
        assert!(r.header("Idempotency-Key").starts_with("flipt-"), "{r:?}");
        let mut headers = http::HeaderMap::new();
        for (name, canonical) in [
            ("webhook-id", "Webhook-Id"),
            ("webhook-timestamp", "Webhook-Timestamp"),
            ("webhook-signature", "Webhook-Signature"),
        ] {
            headers.insert(name, r.header(canonical).parse().unwrap());
        }
        verifier
            .verify(&r.value(), &headers)
            .unwrap_or_else(|e| panic!("{e}: {r:?}"));
        seen.push(i);
    }
    // One key: one partition, in order.
    let partitions: std::collections::HashSet<i32> = got.iter().map(|r| r.partition).collect();
    assert_eq!(partitions.len(), 1, "one key, one partition");
    assert_eq!(seen, (0..30).collect::<Vec<_>>(), "in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_records_decode_with_flipts_own_event_proto() {
    let Some(broker) = Tansu::start(&[]).await else {
        return;
    };
    let proto = flipt_proto();
    assert!(
        proto.exists(),
        "{} (the schema of Flipt 1.61.1's flipt.audit.Event)",
        proto.display()
    );
    broker.create_topic("flipt-audit", 1);
    let s = Setup::new();
    s.write_lines(0..6, Encoding::Json);
    let extra = "    encoding: protobuf\n    key: \"{{ type }}-{{ action }}\"\n    signing_secret: s3cret\n";
    let config = s.config(&kafka_sink(&broker, "flipt-audit", extra));
    let mut ft = Flagtail::start(&config);
    broker.wait_records("flipt-audit", 6).await;
    assert!(ft.terminate().await.success());
    let got = broker.read("flipt-audit", 7, Some(&proto));
    assert_eq!(got.len(), 6, "once each");
    // `render` shows each record as it went: its key, the protobuf value, signed over it.
    let (code, out, err) = run_cmd(&[
        "render",
        "--config",
        config.to_str().unwrap(),
        "--sink",
        "bus",
        "--input",
        s.log().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let shown: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(shown.len(), 6);
    for (r, line) in got.iter().zip(&shown) {
        use base64::Engine;
        let value = base64::engine::general_purpose::STANDARD
            .decode(line["body_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(value, r.value(), "{line}");
        assert!(line.get("body").is_none(), "protobuf has no text: {line}");
        assert_eq!(line["key"].as_str(), r.key.as_deref());
        assert_eq!(line["url"], "kafka:flipt-audit");
        assert_eq!(line["headers"]["Flagtail-Source"], "flipt");
        assert_eq!(line["headers"]["Content-Type"], "application/protobuf");
        assert_eq!(
            line["headers"]["X-Flipt-Webhook-Signature"],
            flipt_signature("s3cret", &value),
            "signed over the value sent"
        );
        assert_eq!(
            r.header("X-Flipt-Webhook-Signature"),
            line["headers"]["X-Flipt-Webhook-Signature"]
        );
    }
    for (i, r) in got.iter().enumerate() {
        let e = r.event.as_ref().unwrap();
        let action = ["created", "updated", "deleted"][i % 3];
        assert_eq!(r.key.as_deref(), Some(format!("flag-{action}").as_str()));
        assert_eq!(r.header("Content-Type"), "application/protobuf");
        assert_eq!(e["version"], "0.2");
        assert_eq!(e["type"], "flag");
        assert_eq!(e["action"], action);
        assert_eq!(e["status"], "success");
        assert_eq!(e["metadata"]["actor"]["authentication"], "token");
        assert_eq!(
            e["metadata"]["actor"]["email"],
            format!("dev{i}@example.com")
        );
        assert_eq!(e["payload"]["key"], format!("flag-{i}"));
        assert_eq!(e["payload"]["enabled"], true);
        assert_eq!(e["payload"]["namespace_key"], "default");
        assert_eq!(e["timestamp"], format!("2026-11-23T06:00:{i:02}Z"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_a_3s_broker_outage_lose_nothing_and_copies_share_their_key() {
    let Some(broker) = Tansu::start(&[]).await else {
        return;
    };
    broker.create_topic("audit", 4);
    let s = Setup::new();
    s.write_lines(0..3000, Encoding::Json);
    // Paced (about 7 s for all), so the outage comes before the end.
    let extra = "    concurrency: 4\n    key: \"{{ payload.key }}\"\n    rate_limit: 400/s\n";
    let config = s.config(&kafka_sink(&broker, "audit", extra));
    let mut ft = Flagtail::start(&config);
    broker.wait_records("audit", 300).await;
    ft.kill_9().await;
    let mut ft = Flagtail::start(&config);
    // The broker away for 3 s (its records kept): deliveries wait and are tried again.
    let before = distinct(&broker.wait_records("audit", 1200).await);
    broker.forwarder.pause().await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    broker.forwarder.resume().await;
    assert!(before < 3000, "the outage came before the end ({before})");
    let got = eventually_async(|| async {
        let got = broker.read("audit", 1_000_000, None);
        match distinct(&got) {
            3000 => Ok(got),
            n => Err(format!("{n} of 3000 events in the topic")),
        }
    })
    .await;
    assert!(ft.terminate().await.success());
    // Every event, each under one Idempotency-Key; a copy is the same record again.
    let mut by_id: std::collections::HashMap<String, Vec<&Kept>> = Default::default();
    for r in &got {
        by_id
            .entry(r.header("Idempotency-Key").to_string())
            .or_default()
            .push(r);
    }
    assert_eq!(by_id.len(), 3000, "one Idempotency-Key per event");
    for copies in by_id.values() {
        let first = copies[0];
        for c in copies {
            assert_eq!(c.value(), first.value());
            assert_eq!(c.key, Some(flag_of(first)), "key {{{{ payload.key }}}}");
        }
    }
    let flags: std::collections::HashSet<String> = got.iter().map(flag_of).collect();
    assert_eq!(flags, flag_keys(0..3000).collect());
    eprintln!(
        "records {} for 3000 events ({} copies); {before} in the topic when the outage began",
        got.len(),
        got.len() - 3000
    );
    assert!(
        ft.stderr().contains("will retry"),
        "the outage was felt: {}",
        ft.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_finds_the_topic_and_an_unknown_topic_is_dead_lettered() {
    let Some(broker) = Tansu::start(&[]).await else {
        return;
    };
    broker.create_topic("audit", 1);
    let s = Setup::new();
    let config = s.config(&kafka_sink(&broker, "audit", ""));
    let (code, out, err) = run_cmd(&["check", "--connect", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("sink bus: connected") && err.contains("topic audit: 1 partition"),
        "{err}"
    );
    assert!(broker.read("audit", 1, None).is_empty(), "nothing sent");
    let other = s.config(&kafka_sink(&broker, "missing", ""));
    let (code, out, err) = run_cmd(&["check", "--connect", "--config", other.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("topic missing does not exist"), "{err}");
    // Delivering to it: dead-lettered, with the reason.
    s.write_lines(0..2, Encoding::Json);
    let mut ft = Flagtail::start(&other);
    let letters = eventually(|| match s.state_lines("dead-letter/bus.jsonl") {
        l if l.len() == 2 => Ok(l),
        l => Err(format!("{} dead letters", l.len())),
    })
    .await;
    assert!(ft.terminate().await.success());
    assert!(
        letters[0]
            .to_string()
            .contains("topic missing does not exist"),
        "{}",
        letters[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipt_configs_kafka_sink_delivers_protobuf_and_tracing_off_is_warned_once() {
    let Some(broker) = Tansu::start(&[]).await else {
        return;
    };
    broker.create_topic("flipt-audit", 2);
    let s = Setup::new();
    let config = s.path("config.yml");
    // The topic comes from Flipt's environment override, as it would for Flipt.
    std::fs::write(
        &config,
        format!(
            "tracing:\n  enabled: false\naudit:\n  sinks:\n    log:\n      enabled: true\n      file: {}\n    kafka:\n      enabled: true\n      topic: elsewhere\n      bootstrap_servers: [\"{}\"]\n",
            s.log().display(),
            broker.bootstrap()
        ),
    )
    .unwrap();
    s.write_lines(0..4, Encoding::Json);
    let state = s.state();
    let env = [
        ("FLIPT_AUDIT_SINKS_KAFKA_TOPIC", "flipt-audit"),
        ("FLAGTAIL_STATE_DIR", state.to_str().unwrap()),
        ("FLAGTAIL_ADMIN__LISTEN", ""),
    ];
    let (code, out, err) =
        run_cmd_env(&["check", "--flipt-config", config.to_str().unwrap()], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(err.matches("tracing.enabled is false").count(), 1, "{err}");
    assert!(err.contains("#6279"), "{err}");
    assert!(
        out.contains("\"flipt-kafka\"") && out.contains("protobuf"),
        "{out}"
    );
    let mut ft = Flagtail::start_args(
        &["--flipt-config", config.to_str().unwrap()],
        s.dir.path(),
        &env,
    );
    broker.wait_records("flipt-audit", 4).await;
    assert!(ft.terminate().await.success(), "{}", ft.stderr());
    assert_eq!(ft.stderr().matches("tracing.enabled is false").count(), 1);
    let got = broker.read("flipt-audit", 4, Some(&flipt_proto()));
    assert_eq!(got.len(), 4);
    for r in &got {
        assert_eq!(
            r.key.as_deref(),
            Some("flag"),
            "Flipt's key: the event type"
        );
        assert_eq!(r.event.as_ref().unwrap()["type"], "flag");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_reaches_the_broker_with_the_client_certificate_and_not_without() {
    let ca = test_ca();
    let Some(broker) = Tansu::start_with(&[], Some(ca.mutual.clone())).await else {
        return;
    };
    broker.create_topic("audit", 1);
    let s = Setup::new();
    let write = |name: &str, text: &str| {
        let path = s.path(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let tls = format!(
        "    ca_file: {}\n    cert_file: {}\n    key_file: {}\n",
        write("ca.pem", &ca.ca_pem),
        write("client.pem", &ca.client_pem),
        write("client.key", &ca.client_key_pem)
    );
    // Without the client certificate the handshake is refused: nothing is delivered.
    let config = s.config(&kafka_sink(
        &broker,
        "audit",
        &tls.lines()
            .take(1)
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    ));
    let (code, out, err) = run_cmd(&["check", "--connect", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    let config = s.config(&kafka_sink(&broker, "audit", &tls));
    let (code, out, err) = run_cmd(&["check", "--connect", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("metadata reached") && err.contains("topic audit"),
        "{err}"
    );
    assert!(!out.contains("PRIVATE KEY") && !err.contains("PRIVATE KEY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plain_and_scram_log_in_and_a_wrong_password_waits_in_the_backlog() {
    let password = "k4fka-Pa55 w0rd";
    let Some(broker) = Tansu::start_gated("flagtail", password).await else {
        return;
    };
    broker.create_topic("audit", 1);
    let env = [("KAFKA_PASSWORD", password)];
    let mut sent = 0;
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let s = Setup::new();
        s.write_lines(sent..sent + 3, Encoding::Json);
        sent += 3;
        let extra = format!(
            "    sasl: {{mechanism: {mechanism}, username: flagtail, password: \"${{KAFKA_PASSWORD}}\"}}\n"
        );
        let config = s.config(&kafka_sink(&broker, "audit", &extra));
        let (code, out, err) = run_cmd_env(
            &["check", "--connect", "--config", config.to_str().unwrap()],
            &env,
        );
        assert_eq!(code, 0, "{mechanism}: {out}{err}");
        assert!(err.contains("topic audit: 1 partition(s)"), "{err}");
        let mut ft = Flagtail::start_env(&config, &env);
        broker.wait_records("audit", sent).await;
        assert!(ft.terminate().await.success());
        let got = broker.read("audit", sent + 1, None);
        assert_eq!(got.len(), sent, "{mechanism}: once each");
        assert!(
            !ft.stderr().contains(password),
            "{mechanism}: the password in the log"
        );
        assert!(
            broker
                .logins()
                .contains(&format!("ok {mechanism} flagtail")),
            "{mechanism}: {:?}",
            broker.logins()
        );
    }
    // A wrong password: the login is refused, check says why, the daemon's sink goes down with
    // its event waiting in its backlog (a password is fixed with a reload), nothing dead-lettered.
    let s = Setup::new();
    s.write_lines(100..101, Encoding::Json);
    let extra = "    sasl: {mechanism: SCRAM-SHA-512, username: flagtail, password: \"${KAFKA_PASSWORD}\"}\n    max_backoff_duration: 1s\n";
    let config = s.config(&kafka_sink(&broker, "audit", extra));
    let wrong = [("KAFKA_PASSWORD", "not-the-Pa55word")];
    let (code, out, err) = run_cmd_env(
        &["check", "--connect", "--config", config.to_str().unwrap()],
        &wrong,
    );
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("SaslAuthenticationFailed"), "{err}");
    assert!(!format!("{out}{err}").contains("not-the-Pa55word"));
    let mut ft = Flagtail::start_env(&config, &wrong);
    ft.wait_log("sink is down").await;
    assert!(ft.terminate().await.success());
    assert!(
        ft.stderr().contains("SaslAuthenticationFailed"),
        "{}",
        ft.stderr()
    );
    assert!(!ft.stderr().contains("not-the-Pa55word"));
    assert!(dead_keys(&s, "bus").is_empty());
    assert!(
        broker
            .logins()
            .iter()
            .any(|l| l.starts_with("refused SCRAM-SHA-512 flagtail")),
        "{:?}",
        broker.logins()
    );
    assert_eq!(broker.read("audit", sent + 1, None).len(), sent);
}
