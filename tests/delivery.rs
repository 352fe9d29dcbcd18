//! The main path, end to end: the real binary tails a real file and POSTs to a real receiver.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_of_both_encodings_arrives_once_in_order() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let mut expected = Vec::new();
    let mut text = String::new();
    for i in 0..60 {
        let (line, body) = flipt_line(
            i,
            if i % 2 == 0 {
                Encoding::Console
            } else {
                Encoding::Json
            },
        );
        text.push_str(&line);
        expected.push(body);
    }
    // The first half is there at start-up, the second half is appended while running.
    let half = text.len() / 2;
    let cut = text[..half].rfind('\n').unwrap() + 1;
    append(&s.log(), &text[..cut]);
    let mut ft =
        Flagtail::start(&s.config(&webhook_sink(&rx.url("/hook"), "    concurrency: 1\n")));
    let n_first = text[..cut].lines().count();
    rx.wait_delivered(n_first).await;
    append(&s.log(), &text[cut..]);
    let got = rx.wait_delivered(60).await;
    assert!(ft.terminate().await.success());
    let bodies: Vec<String> = got.iter().map(Received::text).collect();
    assert_eq!(
        bodies, expected,
        "every event once, in file order, as Flipt's webhook body"
    );
    assert!(
        got.iter()
            .all(|r| r.path == "/hook" && r.header("content-type") == "application/json")
    );
    assert!(got[0].header("user-agent").starts_with("flagtail/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_body_and_flipt_signature_are_byte_compatible() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    // Console encoding, nested keys sorted, HTML characters and a U+2028 unescaped as Flipt writes them.
    append(
        &s.log(),
        "{\"version\": \"0.2\", \"type\": \"flag\", \"action\": \"updated\", \"status\": \"success\", \"metadata\": {\"actor\":{\"email\":\"a&b@example.com\",\"name\":\"Zoë\"}}, \"payload\": {\"description\":\"<b>bold</b>\u{2028}\",\"enabled\":true,\"key\":\"k\",\"rollout\":12.5}, \"timestamp\": \"2026-11-23T06:00:00Z\"}\n",
    );
    // Derived by hand: compact, key order version,type,action,metadata,payload,timestamp,status,
    // with Go's escapes for < > & and U+2028.
    let expected = r#"{"version":"0.2","type":"flag","action":"updated","metadata":{"actor":{"email":"a\u0026b@example.com","name":"Zoë"}},"payload":{"description":"\u003cb\u003ebold\u003c/b\u003e\u2028","enabled":true,"key":"k","rollout":12.5},"timestamp":"2026-11-23T06:00:00Z","status":"success"}"#;
    // Second sink: a fixed body, the SPEC's check value for the signature.
    let check_body = r#"{"version":"","type":"flag","action":"create","metadata":{},"payload":null,"timestamp":"","status":""}"#;
    let sinks = format!(
        "{}    signing_secret: s3crET\n  - name: check\n    url: {}\n    signing_secret: s3crET\n    body: '{check_body}'\n",
        webhook_sink(&rx.url("/default"), ""),
        rx.url("/check")
    );
    let mut ft = Flagtail::start(&s.config(&sinks));
    let got = rx.wait_delivered(2).await;
    ft.terminate().await;
    let default = got.iter().find(|r| r.path == "/default").unwrap();
    assert_eq!(default.text(), expected);
    assert_eq!(
        default.header("x-flipt-webhook-signature"),
        flipt_signature("s3crET", expected)
    );
    let check = got.iter().find(|r| r.path == "/check").unwrap();
    assert_eq!(check.text(), check_body);
    assert_eq!(
        check.header("x-flipt-webhook-signature"),
        "6bc16d7434cbd746abfd25e3350a3f43fba04883b7f0b83f09bbc373116f84b0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_signature_verifies_with_the_crate() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    s.write_lines(0..3, Encoding::Console);
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let sinks = webhook_sink(
        &rx.url("/sw"),
        "    signature: standard-webhooks\n    signing_secret: \"${SW_SECRET}\"\n",
    );
    let mut ft = Flagtail::start_env(&s.config(&sinks), &[("SW_SECRET", secret)]);
    let got = rx.wait_delivered(3).await;
    ft.terminate().await;
    let wh = standardwebhooks::Webhook::new(secret).unwrap();
    for r in &got {
        wh.verify(&r.body, &r.headers)
            .unwrap_or_else(|e| panic!("{e}: {:?}", r.headers));
        assert_eq!(
            r.header("webhook-id"),
            format!("msg_{}", r.header("idempotency-key"))
        );
    }
    let wrong = standardwebhooks::Webhook::new("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
    assert!(wrong.verify(&got[0].body, &got[0].headers).is_err());
    assert!(
        !ft.stderr().contains("MfKQ9r8G"),
        "the secret must not be logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_where_it_stopped() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let config = s.config(&webhook_sink(&rx.url("/"), ""));
    s.write_lines(0..5, Encoding::Json);
    let mut ft = Flagtail::start(&config);
    rx.wait_delivered(5).await;
    assert!(ft.terminate().await.success());
    s.write_lines(5..10, Encoding::Json);
    let mut ft = Flagtail::start(&config);
    let got = rx.wait_delivered(10).await;
    ft.terminate().await;
    let keys: Vec<String> = got.iter().map(|r| key_of(&r.body)).collect();
    assert_eq!(
        keys,
        (0..10).map(|i| format!("flag-{i}")).collect::<Vec<_>>(),
        "no duplicate, no gap"
    );
    let checkpoint: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.state().join("checkpoints.json")).unwrap())
            .unwrap();
    assert_eq!(
        checkpoint["sources"]["flipt"]["file"]["offset"],
        std::fs::metadata(s.log()).unwrap().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_and_rename_rotation_lose_no_line() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let mut ft = Flagtail::start(&s.config(&webhook_sink(&rx.url("/"), "")));
    let mut n = 0;
    let mut write = |count: usize| {
        s.write_lines(n..n + count, Encoding::Console);
        n += count;
    };
    write(10);
    rx.wait_delivered(10).await;
    // copytruncate: copy, then truncate in place, then the writer goes on in the same file.
    std::fs::copy(s.log(), s.path("audit.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(s.log())
        .unwrap()
        .set_len(0)
        .unwrap();
    write(10);
    rx.wait_delivered(20).await;
    // rename-and-recreate: the old file gets two more lines after the rename, then the writer moves on.
    std::fs::rename(s.log(), s.path("audit.log.2")).unwrap();
    for i in 0..2 {
        append(
            &s.path("audit.log.2"),
            &flipt_line(1000 + i, Encoding::Json).0,
        );
    }
    write(10);
    let got = rx.wait_delivered(32).await;
    ft.terminate().await;
    let keys = counts(got.iter().map(|r| key_of(&r.body)));
    for i in (0..30).chain(1000..1002) {
        assert_eq!(
            keys.get(&format!("flag-{i}")),
            Some(&1),
            "flag-{i} once; got {keys:?}"
        );
    }
    assert_eq!(got.len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_works_only_when_ca_file_names_the_test_ca() {
    let ca = test_ca();
    let rx = Receiver::start_with(Some(ca.server.clone())).await;
    let s = Setup::new();
    append(&s.log(), &flipt_line(1, Encoding::Json).0);
    let ca_path = s.path("ca.pem");
    std::fs::write(&ca_path, &ca.ca_pem).unwrap();
    // Without ca_file the certificate is not trusted: nothing arrives, the sink goes down saying
    // why, and the event waits in its backlog (a certificate can be fixed; it is not refused).
    let no_ca = webhook_sink(&rx.url("/tls"), "    max_backoff_duration: 300ms\n");
    let mut ft = Flagtail::start(&s.config(&no_ca));
    ft.wait_log("sink is down").await;
    ft.terminate().await;
    assert!(rx.delivered().is_empty());
    assert!(dead_reasons(&s, "hook").is_empty());
    let down = ft.stderr();
    let down = down.lines().find(|l| l.contains("sink is down")).unwrap();
    assert!(down.to_lowercase().contains("certificate"), "{down}");
    // With it, the same receiver is trusted: the waiting event goes first, and one connection
    // carries every event in turn (the receiver's session tickets do not make it look unusable).
    for i in 2..12 {
        append(&s.log(), &flipt_line(i, Encoding::Json).0);
    }
    let with_ca = webhook_sink(
        &rx.url("/tls"),
        &format!("    ca_file: {}\n    concurrency: 1\n", ca_path.display()),
    );
    let before = rx.connections();
    let mut ft = Flagtail::start(&s.config(&with_ca));
    let got = rx.wait_delivered(11).await;
    ft.terminate().await;
    let keys: Vec<String> = got.iter().map(|r| key_of(&r.body)).collect();
    assert_eq!(keys, flag_keys(1..12).collect::<Vec<_>>());
    assert_eq!(rx.connections() - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_template_events_filter_and_file_sink() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    s.write_lines(0..6, Encoding::Console);
    append(
        &s.log(),
        "{\"version\":\"0.2\",\"type\":\"segment\",\"action\":\"created\",\"metadata\":{},\"payload\":{\"key\":\"beta\"},\"timestamp\":\"t\"}\n",
    );
    let out = s.path("events.jsonl");
    let sinks = format!(
        "  - name: slack\n    url: {}\n    events: [\"flag:created\"]\n    body: |\n      {{\"text\": \"{{{{ type }}}}/{{{{ action }}}} {{{{ payload.key }}}} by {{{{ metadata.actor.email | default(value=\"someone\") }}}}\"}}\n  - name: archive\n    type: file\n    path: {}\n    events: [\"segment:*\"]\n",
        rx.url("/slack"),
        out.display()
    );
    let mut ft = Flagtail::start(&s.config(&sinks));
    let got = rx.wait_delivered(2).await;
    ft.wait_log("flagtail started").await;
    ft.terminate().await;
    let texts: Vec<String> = got.iter().map(Received::text).collect();
    assert_eq!(
        texts,
        [
            "{\"text\": \"flag/created flag-0 by dev0@example.com\"}\n",
            "{\"text\": \"flag/created flag-3 by dev3@example.com\"}\n"
        ]
    );
    let archived = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        archived,
        "{\"version\":\"0.2\",\"type\":\"segment\",\"action\":\"created\",\"metadata\":{},\"payload\":{\"key\":\"beta\"},\"timestamp\":\"t\",\"status\":\"\"}\n"
    );
}

#[test]
fn check_accepts_the_examples_and_names_a_typo() {
    let mut seen = 0;
    let dir = |d: &str| std::fs::read_dir(format!("{}/{d}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    for entry in dir("examples").chain(dir("deploy")) {
        let path = entry.unwrap().path();
        let is_config = path.extension().is_some_and(|e| e == "yaml" || e == "toml");
        if is_config && !path.ends_with("kustomization.yaml") {
            let env = [
                (
                    "SLACK_WEBHOOK_URL",
                    "https://hooks.slack.com/services/T0/B0/x",
                ),
                ("AUDIT_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
                ("AUDIT_WEBHOOK_URL", "https://audit.example.com/flipt"),
                ("AUDIT_SIGNING_SECRET", "s3cr3t"),
                ("FLAGTAIL_STATE_DIR", "/var/lib/flagtail"),
                ("FLIPT_AUDIT_LOG", "/var/log/flipt/audit.log"),
                (
                    "TEAMS_WEBHOOK_URL",
                    "https://example.logic.azure.com/workflows/x",
                ),
                (
                    "DISCORD_WEBHOOK_URL",
                    "https://discord.com/api/webhooks/1/x",
                ),
                ("GITHUB_TOKEN", "ghp_x"),
                ("RECEIVER_URL", "https://hooks.example.com/flags"),
                ("NEW_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
                ("OLD_SECRET", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"),
                (
                    "HEC_URL",
                    "https://splunk.example.com:8088/services/collector/event",
                ),
                ("HEC_TOKEN", "hec-token"),
            ];
            let (code, out, err) =
                run_cmd_env(&["check", "--config", path.to_str().unwrap()], &env);
            assert_eq!(code, 0, "{}: {err}", path.display());
            assert!(out.contains("\"sinks\""));
            // Every sink's body renders from the bundled Flipt log: no template error, valid JSON
            // where the content type says JSON.
            let resolved: serde_json::Value = serde_json::from_str(&out).unwrap();
            for sink in resolved["sinks"].as_array().unwrap() {
                let name = sink["name"].as_str().unwrap();
                let (code, lines, err) = run_cmd_env(
                    &[
                        "render",
                        "--config",
                        path.to_str().unwrap(),
                        "--sink",
                        name,
                        "--input",
                        "examples/flipt-audit.log",
                    ],
                    &env,
                );
                assert_eq!(code, 0, "{} {name}: {err}", path.display());
                // The bundled log has a line that is not JSON on purpose; any other rejection is
                // the template's.
                let render_errors: Vec<&str> = lines
                    .lines()
                    .filter(|l| l.contains("\"rejected\"") && !l.contains("not JSON"))
                    .collect();
                assert!(
                    render_errors.is_empty(),
                    "{} sink {name}: {render_errors:?}",
                    path.display()
                );
            }
            seen += 1;
        }
    }
    assert!(seen >= 8, "examples/*.yaml and deploy/flagtail.yaml");
    let s = Setup::new();
    let config = s.config("  - name: hook\n    url: http://127.0.0.1:9/\n    signing_secret: topsecret\n    max_backoff_duratoin: 5s\n");
    let (code, _, err) = run_cmd(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("sinks.0") && err.contains("max_backoff_duratoin"),
        "{err}"
    );
    assert!(!err.contains("topsecret"));
    let config = s.config("  - name: hook\n    url: http://127.0.0.1:9/\n    signing_secret: topsecret\n    headers: {Authorization: \"Bearer tok123\"}\n    body: '{{ type '\n");
    let (code, out, err) = run_cmd(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("sinks.0.body"), "{err}");
    // The daemon refuses the same config the same way, before it starts anything.
    let (code, _, err) = run_cmd(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 2, "bad config exits 2: {err}");
    assert!(
        err.contains("sinks.0.body") && !err.contains("topsecret"),
        "{err}"
    );
    // The body's framing and the connection are flagtail's: a configured Content-Length would
    // break the request.
    let config = s.config("  - name: hook\n    url: http://127.0.0.1:9/\n    headers: {Content-Length: \"12\", Transfer-Encoding: chunked, Connection: close}\n");
    let (code, _, err) = run_cmd(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("sinks.0.headers")
            && err.contains("content-length is set by flagtail")
            && err.contains("transfer-encoding is set by flagtail")
            && err.contains("connection is set by flagtail"),
        "{err}"
    );
    let config = s.config("  - name: hook\n    url: http://127.0.0.1:9/\n    signing_secret: topsecret\n    headers: {Authorization: \"Bearer tok123\"}\n");
    let (code, out, _) = run_cmd(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        !out.contains("topsecret") && !out.contains("tok123") && out.contains("***"),
        "{out}"
    );
}

#[test]
fn render_prints_each_request_as_it_would_be_sent() {
    let s = Setup::new();
    let config = s.config("  - name: hook\n    url: http://127.0.0.1:9/in\n    signing_secret: s3crET\n    events: [\"flag:created\"]\n");
    let input = s.path("input.log");
    let (created, body) = flipt_line(0, Encoding::Console);
    let (updated, _) = flipt_line(1, Encoding::Json);
    std::fs::write(&input, format!("{created}{updated}not json\n")).unwrap();
    let (code, out, err) = run_cmd(&[
        "render",
        "--config",
        config.to_str().unwrap(),
        "--sink",
        "hook",
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(
        out.lines()
            .next()
            .unwrap()
            .starts_with(r#"{"method":"POST","url":"http://127.0.0.1:9/in","headers":{"#)
    );
    assert_eq!(lines[0]["body"], body);
    assert_eq!(
        lines[0]["headers"]["x-flipt-webhook-signature"],
        flipt_signature("s3crET", &body)
    );
    assert!(
        lines[1]["skipped"]
            .as_str()
            .unwrap()
            .contains("flag:updated")
    );
    assert!(lines[2]["rejected"].as_str().unwrap().contains("not JSON"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_from_end_waits_for_a_partial_last_line_and_reads_crlf() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    s.write_lines(0..3, Encoding::Json);
    // An unfinished line at start-up: `read_from: end` starts after the last complete line.
    let (half_line, _) = flipt_line(3, Encoding::Json);
    let (head, tail) = half_line.split_at(40);
    append(&s.log(), head);
    let config = s
        .config(&webhook_sink(&rx.url("/"), ""))
        .to_str()
        .unwrap()
        .to_string();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("format: flipt", "format: flipt\n    read_from: end");
    std::fs::write(&config, text).unwrap();
    let mut ft = Flagtail::start(std::path::Path::new(&config));
    ft.wait_log("following file").await;
    // The rest of that line arrives, ending in CRLF; then a line written in two pieces.
    append(&s.log(), &tail.replace('\n', "\r\n"));
    let (line, _) = flipt_line(4, Encoding::Console);
    append(&s.log(), &line[..100]);
    append(&s.log(), &line[100..]);
    let got = rx.wait_delivered(2).await;
    ft.terminate().await;
    assert_eq!(
        got.iter().map(|r| key_of(&r.body)).collect::<Vec<_>>(),
        ["flag-3", "flag-4"],
        "old lines skipped, the partial one completed"
    );
    assert_eq!(got.len(), 2);
    assert!(s.state_lines("rejected/flipt.jsonl").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_the_sources_filter() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let (a, b) = (s.path("a.log"), s.path("b.log"));
    append(&a, &flipt_line(1, Encoding::Json).0);
    append(&b, &flipt_line(2, Encoding::Json).0);
    let config = s.path("flagtail.yaml");
    std::fs::write(
        &config,
        format!(
            "state_dir: {}\nadmin: {{listen: \"\"}}\nsources:\n  - {{name: a, file: {}}}\n  - {{name: b, file: {}}}\nsinks:\n  - name: only-a\n    url: {}\n    sources: [a]\n    headers: {{X-Env: prod, Authorization: \"Bearer ${{HOOK_TOKEN}}\"}}\n    content_type: application/cloudevents+json\n  - name: all\n    url: {}\n",
            s.state().display(),
            a.display(),
            b.display(),
            rx.url("/only-a"),
            rx.url("/all")
        ),
    )
    .unwrap();
    let mut ft = Flagtail::start_env(&config, &[("HOOK_TOKEN", "t0k3n")]);
    let got = rx.wait_delivered(3).await;
    ft.terminate().await;
    let only_a: Vec<&Received> = got.iter().filter(|r| r.path == "/only-a").collect();
    assert_eq!(only_a.len(), 1);
    assert_eq!(key_of(&only_a[0].body), "flag-1");
    assert_eq!(only_a[0].header("x-env"), "prod");
    assert_eq!(only_a[0].header("authorization"), "Bearer t0k3n");
    assert_eq!(
        only_a[0].header("content-type"),
        "application/cloudevents+json"
    );
    let mut all: Vec<String> = got
        .iter()
        .filter(|r| r.path == "/all")
        .map(|r| key_of(&r.body))
        .collect();
    all.sort();
    assert_eq!(all, ["flag-1", "flag-2"]);
    assert!(only_a[0].header("idempotency-key").starts_with("a-"));
    assert!(!ft.stderr().contains("t0k3n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_checkpoint_from_the_previous_release_is_migrated() {
    use std::os::unix::fs::MetadataExt;
    let rx = Receiver::start().await;
    let s = Setup::new();
    s.write_lines(0..5, Encoding::Json);
    // What the previous release saved after delivering three lines.
    let text = std::fs::read_to_string(s.log()).unwrap();
    let first_len = text.find('\n').unwrap() + 1;
    let offset: usize = text.split_inclusive('\n').take(3).map(str::len).sum();
    let digest = ring::digest::digest(&ring::digest::SHA256, &text.as_bytes()[..first_len]);
    let hash: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let m = std::fs::metadata(s.log()).unwrap();
    std::fs::create_dir_all(s.state()).unwrap();
    std::fs::write(
        s.state().join("checkpoints.json"),
        format!(
            r#"{{"version": "1", "sources": {{"flipt": {{"path": "{}", "dev": {}, "inode": {}, "fingerprint": {{"len": {first_len}, "hash": "{hash}"}}, "offset": {offset}}}}}}}"#,
            s.log().display(),
            m.dev(),
            m.ino()
        ),
    )
    .unwrap();
    let mut ft = Flagtail::start(&s.config(&webhook_sink(&rx.url("/"), "")));
    let got = rx.wait_delivered(2).await;
    assert!(ft.terminate().await.success());
    let keys: Vec<String> = got.iter().map(|r| key_of(&r.body)).collect();
    assert_eq!(
        keys,
        ["flag-3", "flag-4"],
        "resumed at the version-1 position"
    );
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.state().join("checkpoints.json")).unwrap())
            .unwrap();
    assert_eq!(saved["version"], "2");
    assert_eq!(saved["sources"]["flipt"]["file"]["offset"], m.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_reads_a_file_mixing_flipt_unleash_launchdarkly_and_ab_tasty() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    std::fs::copy("tests/fixtures/mixed-vendors.jsonl", s.log()).unwrap();
    let text = std::fs::read_to_string(s.config(&webhook_sink(&rx.url("/"), ""))).unwrap();
    let config = s.path("flagtail.yaml");
    std::fs::write(&config, text.replace("format: flipt", "format: auto")).unwrap();
    let mut ft = Flagtail::start(&config);
    let got = rx.wait_delivered(4).await;
    let rejected = eventually(|| match s.state_lines("rejected/flipt.jsonl") {
        r if r.len() == 1 => Ok(r),
        r => Err(format!("{} rejected", r.len())),
    })
    .await;
    assert!(ft.terminate().await.success());
    let bodies: Vec<String> = got.iter().map(|r| r.text()).collect();
    assert_eq!(
        bodies,
        [
            r#"{"version":"0.2","type":"flag","action":"created","metadata":{"actor":{"email":"dev@example.com"}},"payload":{"key":"dark-mode","namespace_key":"default"},"timestamp":"2026-11-23T06:00:00Z","status":"success"}"#,
            r#"{"version":"0.2","type":"flag","action":"updated","metadata":{"actor":{"email":"admin@example.com"}},"payload":{"enabled":true,"environment":"production","key":"checkout-v2","namespace_key":"default"},"timestamp":"2026-11-23T06:00:01.000Z","status":"success"}"#,
            r#"{"version":"0.2","type":"flag","action":"updated","metadata":{"actor":{"email":"ariel@acme.com","name":"Ariel Flores"}},"payload":{"enabled":true,"environment":"production","key":"new-ui","name":"New UI","namespace_key":"default"},"timestamp":"2016-08-26T20:38:58.774Z","status":"success"}"#,
            r#"{"version":"0.2","type":"flag","action":"created","metadata":{"actor":{"email":"ops@acme.io"}},"payload":{"account_id":"acc-1","environment":"env-prod","environment_id":"env-prod","flag_key":"btnColor","flag_type":"string","key":"btnColor"},"timestamp":"2026-11-23T06:00:03+00:00","status":"success"}"#,
        ]
    );
    assert_eq!(
        rx.delivered().len(),
        4,
        "the favourite is unmapped: skipped"
    );
    assert!(
        rejected[0]["detail"]
            .as_str()
            .unwrap()
            .contains("unknown shape"),
        "{}",
        rejected[0]
    );
    assert!(
        ft.stderr().contains("not mapped"),
        "unmapped events are logged at debug"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_one_log_line_with_the_url_masked_status_and_attempts() {
    let rx = Receiver::start().await;
    // Two answers worth another try, then a refusal that is final.
    rx.script(vec![
        Reply::Status(503),
        Reply::Status(503),
        Reply::Status(422),
    ]);
    let s = Setup::new();
    s.write_lines(0..3, Encoding::Json);
    // One request of three events; the URL's path and query are secret.
    let sink = webhook_sink(
        &rx.url("/hooks/T0KEN-PATH?sig=s3cret"),
        "    batch: {max_events: 3, linger: 5s}\n    retry_schedule: [10ms, 10ms]\n",
    );
    let mut ft = Flagtail::start(&s.config(&sink));
    wait_dead_letters(&s, "hook", 3).await;
    ft.wait_log("dead-lettered").await;
    assert!(ft.terminate().await.success());
    // The batch waited in the backlog as one group: every attempt carried its first key.
    let keys: Vec<String> = rx
        .attempts()
        .iter()
        .map(|r| r.header("idempotency-key").to_string())
        .collect();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    let log = ft.stderr();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("dead-lettered"))
        .collect();
    assert_eq!(failures.len(), 1, "one line for one delivery:\n{log}");
    for want in [
        "sink=hook",
        "url=http://127.0.0.1:",
        "/***",
        "status=422",
        "attempts=3",
        "events=3",
        "not in retry_on",
    ] {
        assert!(failures[0].contains(want), "{want} not in {}", failures[0]);
    }
    assert!(!log.contains("T0KEN") && !log.contains("s3cret"), "{log}");
    let retries: Vec<&str> = log.lines().filter(|l| l.contains("will retry")).collect();
    assert_eq!(retries.len(), 2, "{log}");
    assert!(
        retries.iter().all(|l| l.contains(" DEBUG ")),
        "retries are logged at debug:\n{log}"
    );
}
