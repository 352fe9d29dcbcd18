//! The NATS JetStream sink against a real `nats-server -js`: every event once and in order,
//! exactly once across `kill -9` (JetStream drops re-sends by `Nats-Msg-Id`), nothing lost while
//! the server is down, a subject without a stream dead-lettered then replayed, `check --connect`.

mod support;

use support::nats::{NatsServer, event_keys, message_key};
use support::*;

/// A NATS sink `bus` on `server`, publishing on `flipt.audit.TYPE.ACTION`.
fn nats_sink(server: &NatsServer, extra: &str) -> String {
    let mut sink = format!(
        "  - name: bus\n    type: nats\n    url: {}\n    subject: \"flipt.audit.{{{{ type }}}}.{{{{ action }}}}\"\n",
        server.url()
    );
    for (key, value) in [
        ("initial_backoff", "50ms"),
        ("max_backoff_duration", "1m"),
        ("timeout", "1s"),
    ] {
        if !extra.contains(&format!("    {key}:")) {
            sink.push_str(&format!("    {key}: {value}\n"));
        }
    }
    sink + extra
}

fn header(m: &async_nats::jetstream::message::StreamMessage, name: &str) -> String {
    m.headers
        .get(name)
        .map(|v| v.as_str().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_arrives_in_the_stream_once_and_in_order_signed() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    nats.add_stream("AUDIT", &["flipt.audit.>"]).await;
    let s = Setup::new();
    s.write_lines(0..60, Encoding::Json);
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let sink = nats_sink(
        &nats,
        &format!(
            "    concurrency: 1\n    signature: standard-webhooks\n    signing_secret: \"{secret}\"\n"
        ),
    );
    let mut ft = Flagtail::start(&s.config(&sink));
    let got = nats.wait_messages("AUDIT", 60).await;
    assert!(ft.terminate().await.success());
    let keys: Vec<String> = got.iter().map(message_key).collect();
    assert_eq!(
        keys,
        flag_keys(0..60).collect::<Vec<_>>(),
        "once each, in order"
    );
    let verifier = standardwebhooks::Webhook::new(secret).unwrap();
    for (i, m) in got.iter().enumerate() {
        let (_, body) = flipt_line(i, Encoding::Json);
        assert_eq!(m.payload, body.as_bytes(), "Flipt's webhook body");
        let action = ["created", "updated", "deleted"][i % 3];
        assert_eq!(m.subject.as_str(), format!("flipt.audit.flag.{action}"));
        assert_eq!(header(m, "Flagtail-Source"), "flipt");
        assert_eq!(
            header(m, "Nats-Msg-Id"),
            format!("bus:{}", header(m, "Idempotency-Key"))
        );
        assert!(
            header(m, "Idempotency-Key").starts_with("flipt-"),
            "{:?}",
            m.headers
        );
        // The signature, checked by an independent library.
        let mut headers = http::HeaderMap::new();
        for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            let canonical = name
                .split('-')
                .map(|p| p[..1].to_uppercase() + &p[1..])
                .collect::<Vec<_>>()
                .join("-");
            headers.insert(name, header(m, &canonical).parse().unwrap());
        }
        verifier
            .verify(&m.payload, &headers)
            .unwrap_or_else(|e| panic!("{e}: {:?}", m.headers));
    }
    let ids: std::collections::HashSet<String> =
        got.iter().map(|m| header(m, "Nats-Msg-Id")).collect();
    assert_eq!(ids.len(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_leaves_every_event_exactly_once() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    nats.add_stream("AUDIT", &["flipt.audit.>"]).await;
    let s = Setup::new();
    s.write_lines(0..3000, Encoding::Json);
    let config = s.config(&nats_sink(&nats, "    concurrency: 4\n"));
    let mut ft = Flagtail::start(&config);
    // Killed while publishing: some events are in the stream, their checkpoint maybe not.
    nats.wait_messages("AUDIT", 300).await;
    ft.kill_9().await;
    let before = nats.messages("AUDIT").await.len();
    assert!(before < 3000, "killed before the end ({before})");
    let mut ft = Flagtail::start(&config);
    nats.wait_messages("AUDIT", 3000).await;
    assert!(ft.terminate().await.success());
    // What was published before the kill but not yet checkpointed was sent again, and dropped
    // by JetStream as a duplicate of its Nats-Msg-Id.
    assert!(
        ft.stderr().contains("JetStream already had"),
        "some events were sent again"
    );
    let got = nats.messages("AUDIT").await;
    assert_eq!(got.len(), 3000);
    let keys = counts(got.iter().map(message_key));
    assert_eq!(keys.len(), 3000);
    assert!(keys.values().all(|n| *n == 1), "every event exactly once");
}

/// Where the checkpoint of source `flipt` stands (0 before the first save).
fn saved_offset(s: &Setup) -> u64 {
    std::fs::read(s.state().join("checkpoints.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|c| c["sources"]["flipt"]["file"]["offset"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_kill_9_mid_stream_then_restart_leaves_every_event_exactly_once() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    nats.add_stream("AUDIT", &["flipt.audit.>"]).await;
    let s = Setup::new();
    const N: usize = 20_000;
    // Groups of up to 100 events, four at once, of a log written as flagtail reads it (as Flipt
    // writes it): what is sent again after the kill is grouped otherwise than the first time.
    let extra = "    concurrency: 4\n    batch: {max_events: 100, linger: 5ms}\n";
    // One subject for all: a batch is cut where the subject changes.
    let config = s.config(&nats_sink(&nats, extra).replace(".{{ action }}", ""));
    let mut ft = Flagtail::start(&config);
    let log = s.log();
    let writer = std::thread::spawn(move || {
        let (mut at, mut seed) = (0, 7u64);
        while at < N {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = (1 + (seed >> 33) as usize % 30).min(N - at);
            let text: String = (at..at + n)
                .map(|i| flipt_line(i, Encoding::Json).0)
                .collect();
            append(&log, &text);
            at += n;
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    });
    nats.wait_count("AUDIT", 50).await;
    ft.kill_9().await;
    writer.join().unwrap();
    let end = std::fs::metadata(s.log()).unwrap().len();
    assert!(saved_offset(&s) < end, "killed before the end");
    let mut ft = Flagtail::start(&config);
    eventually(|| match saved_offset(&s) {
        at if at == end => Ok(()),
        at => Err(format!("checkpoint at {at} of {end}")),
    })
    .await;
    assert!(ft.terminate().await.success());
    let got = nats.messages("AUDIT").await;
    let keys = counts(got.iter().flat_map(event_keys));
    let twice: Vec<_> = keys.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(keys.len(), N, "every event in the stream");
    assert!(
        twice.is_empty(),
        "{} events more than once, e.g. {:?}",
        twice.len(),
        twice.iter().take(3).collect::<Vec<_>>()
    );
    assert!(
        ft.stderr().contains("JetStream already had"),
        "some events were sent again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_while_the_server_is_down_for_several_retries() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    nats.add_stream("AUDIT", &["flipt.audit.>"]).await;
    let s = Setup::new();
    s.write_lines(0..5, Encoding::Json);
    let config = s.config(&nats_sink(
        &nats,
        "    concurrency: 2\n    timeout: 500ms\n",
    ));
    let mut ft = Flagtail::start(&config);
    nats.wait_messages("AUDIT", 5).await;
    nats.stop();
    s.write_lines(5..25, Encoding::Json);
    // Several failed attempts while it is down.
    eventually(|| match ft.stderr().matches("will retry").count() {
        n if n >= 6 => Ok(()),
        n => Err(format!("{n} retries")),
    })
    .await;
    nats.start_again().await;
    let got = nats.wait_messages("AUDIT", 25).await;
    assert!(ft.terminate().await.success());
    let keys = counts(got.iter().map(message_key));
    assert_eq!(keys.len(), 25, "{keys:?}");
    assert!(s.state_lines("dead-letter/bus.jsonl").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_with_no_stream_is_dead_lettered_then_replayed_once_there_is_one() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let s = Setup::new();
    s.write_lines(0..3, Encoding::Json);
    let config = s.config(&nats_sink(&nats, ""));
    let mut ft = Flagtail::start(&config);
    let dead = wait_dead_letters(&s, "bus", 3).await;
    assert_eq!(dead, flag_keys(0..3).collect::<Vec<_>>());
    let letters = s.state_lines("dead-letter/bus.jsonl");
    let reason = &dead_reasons(&s, "bus")[0];
    assert!(
        reason.contains("no JetStream stream takes subject flipt.audit.flag.created"),
        "{reason}"
    );
    assert_eq!(
        letters[0]["attempts"], 1,
        "not retried: there is nothing to wait for"
    );
    assert_eq!(
        letters[0]["retryable"], true,
        "replayed by itself once the sink delivers"
    );
    assert!(ft.terminate().await.success());
    nats.add_stream("AUDIT", &["flipt.audit.>"]).await;
    let (code, out, err) = replay(&config, "bus");
    assert_eq!(code, 0, "{out}{err}");
    let got = nats.wait_messages("AUDIT", 3).await;
    assert_eq!(
        got.iter().map(message_key).collect::<Vec<_>>(),
        flag_keys(0..3).collect::<Vec<_>>()
    );
    assert!(s.state_lines("dead-letter/bus.jsonl").is_empty());
}

/// A message of sink `byaction` or `bytype` carries its one event's key, not a batch's.
fn has_its_events_own_id(m: &async_nats::jetstream::message::StreamMessage) {
    let key = header(m, "Idempotency-Key");
    assert!(key.starts_with("flipt-") && !key.contains('+'), "{key}");
    let sink = match m.subject.starts_with("flipt.audit.each.") {
        true => "byaction",
        false => "bytype",
    };
    assert_eq!(header(m, "Nats-Msg-Id"), format!("{sink}:{key}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_sinks_publish_each_event_as_its_own_message_and_bad_subjects_are_dead_lettered() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    nats.add_stream("AUDIT", &["flipt.audit.>"]).await;
    let s = Setup::new();
    s.write_lines(0..4, Encoding::Json);
    // `bytype` batches by two on one subject, `byaction` by four on a subject per event: either
    // way each event is a message of its own (an array of one, the shape of a batch), under its
    // own id; `spaced` renders a subject with a space.
    let sinks = nats_sink(
        &nats,
        "    batch: {max_events: 2, linger: 2s}\n    concurrency: 1\n",
    )
    .replace("name: bus", "name: bytype")
    .replace(".{{ action }}", "")
        + &nats_sink(
            &nats,
            "    batch: {max_events: 4, linger: 2s}\n    concurrency: 1\n",
        )
        .replace("name: bus", "name: byaction")
        .replace("flipt.audit.", "flipt.audit.each.")
        + "  - name: spaced\n    type: nats\n    url: "
        + &nats.url()
        + "\n    subject: \"flipt.audit.{{ payload.name }}\"\n";
    let mut ft = Flagtail::start(&s.config(&sinks));
    let got = nats.wait_messages("AUDIT", 8).await;
    let dead = wait_dead_letters(&s, "spaced", 4).await;
    assert_eq!(dead.len(), 4);
    assert!(ft.terminate().await.success());
    let reason = &dead_reasons(&s, "spaced")[0];
    assert!(reason.contains("whitespace"), "{reason}");
    let keys = |m: &async_nats::jetstream::message::StreamMessage| -> Vec<String> {
        let list: Vec<serde_json::Value> = serde_json::from_slice(&m.payload).unwrap();
        list.iter()
            .map(|e| e["payload"]["key"].as_str().unwrap().to_string())
            .collect()
    };
    let by_type: Vec<Vec<String>> = got
        .iter()
        .filter(|m| m.subject.as_str() == "flipt.audit.flag")
        .map(keys)
        .collect();
    assert_eq!(by_type, [["flag-0"], ["flag-1"], ["flag-2"], ["flag-3"]]);
    got.iter().for_each(has_its_events_own_id);
    let by_action: Vec<(String, Vec<String>)> = got
        .iter()
        .filter(|m| m.subject.starts_with("flipt.audit.each."))
        .map(|m| (m.subject.to_string(), keys(m)))
        .collect();
    let want: Vec<(String, Vec<String>)> = [
        ("created", "flag-0"),
        ("updated", "flag-1"),
        ("deleted", "flag-2"),
        ("created", "flag-3"),
    ]
    .iter()
    .map(|(action, key)| {
        (
            format!("flipt.audit.each.flag.{action}"),
            vec![key.to_string()],
        )
    })
    .collect();
    assert_eq!(by_action, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sinks_publishing_the_same_events_into_one_stream_each_get_theirs_in() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    nats.add_stream("AUDIT", &["flipt.audit.>"]).await;
    let s = Setup::new();
    s.write_lines(0..5, Encoding::Json);
    let sinks = nats_sink(&nats, "")
        + &nats_sink(&nats, "")
            .replace("name: bus", "name: prod")
            .replace("flipt.audit.", "flipt.audit.prod.");
    let mut ft = Flagtail::start(&s.config(&sinks));
    let got = nats.wait_messages("AUDIT", 10).await;
    assert!(ft.terminate().await.success());
    let prod = got
        .iter()
        .filter(|m| m.subject.starts_with("flipt.audit.prod."))
        .count();
    assert_eq!(
        (got.len(), prod),
        (10, 5),
        "neither sink's copy taken for a duplicate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_reaches_each_sink_and_sends_nothing() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    nats.add_stream("AUDIT", &["flipt.audit.>"]).await;
    let rx = Receiver::start().await;
    let s = Setup::new();
    let sinks = webhook_sink(&rx.url("/"), "") + &nats_sink(&nats, "");
    let config = s.config(&sinks);
    let (code, out, err) = run_cmd(&["check", "--connect", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("sink hook: connected"), "{err}");
    assert!(
        err.contains("sink bus: connected") && err.contains("stream AUDIT"),
        "{err}"
    );
    assert!(rx.attempts().is_empty(), "nothing sent");
    assert!(nats.messages("AUDIT").await.is_empty(), "nothing published");
    // No stream for the subject, and a receiver that is gone: both reported, exit 1.
    let other = s.path("other.yaml");
    let bad = nats_sink(&nats, "").replace("flipt.audit.", "elsewhere.")
        + &webhook_sink(&format!("http://127.0.0.1:{}/", free_port()), "")
            .replace("name: hook", "name: gone");
    std::fs::write(
        &other,
        std::fs::read_to_string(&config)
            .unwrap()
            .split("sinks:\n")
            .next()
            .unwrap()
            .to_string()
            + "sinks:\n"
            + &bad,
    )
    .unwrap();
    let (code, out, err) = run_cmd(&["check", "--connect", "--config", other.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("sink bus:") && err.contains("no JetStream stream"),
        "{err}"
    );
    assert!(err.contains("sink gone:"), "{err}");
    // Without --connect nothing is reached.
    let (code, _, err) = run_cmd(&["check", "--config", other.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}

/// Writes `text` to `name` in `files`' directory; its path.
fn written(files: &Setup, name: &str, text: &str) -> String {
    let path = files.path(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The test CA's certificate, and the server's certificate and key, written for nats-server.
fn server_files(files: &Setup, ca: &TestCa) -> (String, String, String) {
    (
        written(files, "ca.pem", &ca.ca_pem),
        written(files, "leaf.pem", &ca.leaf_pem),
        written(files, "key.pem", &ca.key_pem),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_verifies_clients_takes_cert_file_and_refuses_a_sink_without_one() {
    let files = Setup::new();
    let ca = test_ca();
    let (ca_file, leaf, key) = server_files(&files, &ca);
    let write = |name: &str, text: &str| written(&files, name, text);
    let (cert_file, cert_key) = (
        write("client.pem", &ca.client_pem),
        write("client-key.pem", &ca.client_key_pem),
    );
    let args = [
        "--tls",
        "--tlscert",
        &leaf,
        "--tlskey",
        &key,
        "--tlsverify",
        "--tlscacert",
        &ca_file,
    ];
    let access = support::nats::Access {
        ca_file: Some(ca_file.clone().into()),
        client_cert: Some((cert_file.clone().into(), cert_key.clone().into())),
        ..Default::default()
    };
    let Some(nats) = NatsServer::start_with(&args, access).await else {
        return;
    };
    nats.add_stream("AUDIT", &["flipt.audit.>"]).await;
    // With the certificate: in, over TLS although the URL says nats:// (a certificate given is
    // meant to be used).
    let s = Setup::new();
    s.write_lines(0..2, Encoding::Json);
    let extra =
        format!("    ca_file: {ca_file}\n    cert_file: {cert_file}\n    key_file: {cert_key}\n");
    let config = s.config(&nats_sink(&nats, &extra));
    let (code, out, err) = run_cmd(&["check", "--connect", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let mut ft = Flagtail::start(&config);
    let got = nats.wait_messages("AUDIT", 2).await;
    assert!(ft.terminate().await.success());
    let keys: Vec<String> = got.iter().map(message_key).collect();
    assert_eq!(keys, ["flag-0", "flag-1"]);
    // Without it the server refuses the handshake: `check --connect` says so, and the daemon's
    // sink goes down with its event waiting in the backlog, not dead-lettered.
    let s = Setup::new();
    s.write_lines(5..6, Encoding::Json);
    let extra =
        format!("    ca_file: {ca_file}\n    max_backoff_duration: 1s\n    timeout: 300ms\n");
    let config = s.config(&nats_sink(&nats, &extra));
    let (code, out, err) = run_cmd(&["check", "--connect", "--config", config.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}{err}");
    let mut ft = Flagtail::start(&config);
    ft.wait_log("sink is down").await;
    assert!(ft.terminate().await.success());
    assert!(dead_keys(&s, "bus").is_empty());
    assert_eq!(nats.count("AUDIT").await, 2);
    // A certificate without its key is refused when the config is read, naming the key.
    let extra = format!("    cert_file: {cert_file}\n");
    let config = s.config(&nats_sink(&nats, &extra));
    let (code, _, err) = run_cmd(&["check", "--config", config.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("sinks.0.key_file: cert_file needs its key_file"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_user_password_nkey_and_tls_with_ca_file_each_get_in() {
    let files = Setup::new();
    let ca = test_ca();
    let write = |name: &str, text: &str| written(&files, name, text);
    let (ca_file, leaf, key) = server_files(&files, &ca);
    let nkey = nkeys::KeyPair::new_user();
    let seed = nkey.seed().unwrap();
    let seed_file = write("user.nk", &format!("{seed}\n"));
    let nkey_conf = write(
        "nkey.conf",
        &format!(
            "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
            nkey.public_key()
        ),
    );
    let cases: Vec<(Vec<&str>, support::nats::Access, String, &str)> = vec![
        (
            vec!["--auth", "t0ken-Secret-9"],
            support::nats::Access {
                token: Some("t0ken-Secret-9".into()),
                ..Default::default()
            },
            "    token: \"${NATS_TOKEN}\"\n".into(),
            "nats",
        ),
        (
            vec!["--user", "flag", "--pass", "pAss-w0rd-7"],
            support::nats::Access {
                user: Some(("flag".into(), "pAss-w0rd-7".into())),
                ..Default::default()
            },
            "    user: flag\n    password: \"${NATS_PASSWORD}\"\n".into(),
            "nats",
        ),
        (
            vec!["-c", &nkey_conf],
            support::nats::Access {
                nkey_seed: Some(seed.clone()),
                ..Default::default()
            },
            format!("    nkey_seed_file: {seed_file}\n"),
            "nats",
        ),
        (
            vec!["--tls", "--tlscert", &leaf, "--tlskey", &key],
            support::nats::Access {
                ca_file: Some(ca_file.clone().into()),
                ..Default::default()
            },
            format!("    ca_file: {ca_file}\n"),
            "tls",
        ),
    ];
    let env = [
        ("NATS_TOKEN", "t0ken-Secret-9"),
        ("NATS_PASSWORD", "pAss-w0rd-7"),
    ];
    for (args, access, extra, scheme) in cases {
        let Some(nats) = NatsServer::start_with(&args, access).await else {
            return;
        };
        nats.add_stream("AUDIT", &["flipt.audit.>"]).await;
        let s = Setup::new();
        s.write_lines(0..2, Encoding::Json);
        let sink = nats_sink(&nats, &extra).replace("url: nats://", &format!("url: {scheme}://"));
        let mut ft = Flagtail::start_env(&s.config(&sink), &env);
        let got = nats.wait_messages("AUDIT", 2).await;
        assert!(ft.terminate().await.success());
        assert_eq!(
            got.iter().map(message_key).collect::<Vec<_>>(),
            ["flag-0", "flag-1"],
            "{args:?}"
        );
        let log = ft.stderr();
        for secret in ["t0ken-Secret-9", "pAss-w0rd-7", &seed] {
            assert!(!log.contains(secret), "a secret in the log:\n{log}");
        }
    }
    // Without the token nothing gets in: the sink goes down and the event waits in its backlog,
    // never lost (credentials can be fixed with a reload).
    let Some(nats) = NatsServer::start_with(
        &["--auth", "t0ken-Secret-9"],
        support::nats::Access {
            token: Some("t0ken-Secret-9".into()),
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    nats.add_stream("AUDIT", &["flipt.audit.>"]).await;
    let s = Setup::new();
    s.write_lines(0..1, Encoding::Json);
    let sink = nats_sink(&nats, "    max_backoff_duration: 1s\n    timeout: 300ms\n");
    let mut ft = Flagtail::start(&s.config(&sink));
    ft.wait_log("sink is down").await;
    assert!(ft.terminate().await.success());
    assert!(dead_keys(&s, "bus").is_empty());
    assert!(
        ft.stderr()
            .to_lowercase()
            .contains("authorization violation"),
        "{}",
        ft.stderr()
    );
    assert!(nats.messages("AUDIT").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_kept_while_the_server_was_away_go_out_once_it_is_back() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    nats.add_stream("AUDIT", &["flipt.audit.>"]).await;
    let s = Setup::new();
    let config = s.config(&nats_sink(
        &nats,
        "    max_backoff_duration: 3s\n    timeout: 300ms\n",
    ));
    let mut ft = Flagtail::start(&config);
    s.write_lines(0..1, Encoding::Json);
    nats.wait_messages("AUDIT", 1).await;
    nats.stop();
    s.write_lines(1..4, Encoding::Json);
    // Longer than max_backoff_duration: the sink is down, its events wait in its backlog.
    ft.wait_log("sink is down").await;
    assert!(dead_keys(&s, "bus").is_empty());
    nats.start_again().await;
    s.write_lines(4..5, Encoding::Json);
    let got = nats.wait_messages("AUDIT", 5).await;
    assert!(ft.terminate().await.success());
    let keys = counts(got.iter().map(message_key));
    assert_eq!(keys.len(), 5, "{keys:?}");
    assert!(dead_keys(&s, "bus").is_empty());
}

#[test]
fn unreadable_or_wrong_credential_files_are_config_errors_that_name_the_key() {
    let s = Setup::new();
    let junk = s.path("junk");
    std::fs::write(&junk, "n0t-a-seed-SECRETISH\n").unwrap();
    let base = "  - name: bus\n    type: nats\n    url: nats://127.0.0.1:4222\n    subject: a.b\n";
    for (extra, key) in [
        (
            format!("    nkey_seed_file: {}\n", junk.display()),
            "sinks.0.nkey_seed_file",
        ),
        (
            format!("    creds_file: {}\n", junk.display()),
            "sinks.0.creds_file",
        ),
        (
            "    creds_file: /nonexistent/x.creds\n".to_string(),
            "sinks.0.creds_file",
        ),
        (
            format!("    ca_file: {}\n", junk.display()),
            "sinks.0.ca_file",
        ),
        (
            "    subject: \"a.{{ nope\"\n".to_string(),
            "sinks.0.subject",
        ),
    ] {
        let sink = if extra.contains("subject:") {
            base.replace("    subject: a.b\n", &extra)
        } else {
            format!("{base}{extra}")
        };
        let (code, _, err) = run_cmd(&["check", "--config", s.config(&sink).to_str().unwrap()]);
        assert_eq!(code, 2, "{extra}: {err}");
        assert!(err.contains(key), "{extra}: {err}");
        assert!(
            !err.contains("SECRETISH"),
            "a file's content in an error: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_at_start_is_waited_for() {
    let Some(mut nats) = NatsServer::start().await else {
        return;
    };
    nats.add_stream("AUDIT", &["flipt.audit.>"]).await;
    nats.stop();
    let s = Setup::new();
    s.write_lines(0..5, Encoding::Json);
    let mut ft = Flagtail::start(&s.config(&nats_sink(&nats, "    timeout: 500ms\n")));
    eventually(|| match ft.stderr().matches("will retry").count() {
        n if n >= 2 => Ok(()),
        n => Err(format!("{n} retries")),
    })
    .await;
    nats.start_again().await;
    let got = nats.wait_messages("AUDIT", 5).await;
    assert!(ft.terminate().await.success());
    assert_eq!(
        got.iter().map(message_key).collect::<Vec<_>>(),
        flag_keys(0..5).collect::<Vec<_>>()
    );
    assert!(s.state_lines("dead-letter/bus.jsonl").is_empty());
}
