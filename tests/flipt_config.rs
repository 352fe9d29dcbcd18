//! `--flipt-config`: flagtail started from a Flipt `config.yml`, its Go templates translated, alone
//! and added to a flagtail config; templates it cannot translate refused by name.

mod support;

use support::*;

/// A Flipt config following `log` with a templated webhook to `url`, and Flipt's other sections
/// (which flagtail leaves alone).
fn flipt_config(s: &Setup, webhook: &str) -> std::path::PathBuf {
    let text = format!(
        r#"log:
  level: INFO
server:
  http_port: 8080
db:
  url: file:/var/opt/flipt/flipt.db
audit:
  buffer:
    capacity: 2
    flush_period: 2m
  events:
    - "flag:created"
  sinks:
    log:
      enabled: true
      file: {log}
      encoding: console
    webhook:
      enabled: true
      max_backoff_duration: 3s
{webhook}"#,
        log = s.log().display()
    );
    let path = s.path("config.yml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_from_a_flipt_config_with_a_templated_webhook() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let config = flipt_config(
        &s,
        &format!(
            r#"      templates:
        - url: {}
          headers:
            Content-Type: application/json
            Authorization: "${{SLACK_AUTH}}"
            X-Note: "not ${{SLACK_AUTH}}: Flipt fills only a whole ${{VAR}} value"
          body: |-
            {{"text": "{{{{ .Type }}}} {{{{ .Action }}}} {{{{ .Payload.key }}}} by {{{{ .Metadata.Actor.email }}}} ({{{{ .Payload.nope }}}}) for ${{{{ .Payload.price }}}}, {{{{ .Payload.big }}}} {{{{ .Payload.tags }}}}", "flag": {{{{ toJson .Payload }}}}, "at": "{{{{ .Timestamp }}}}", "v": "{{{{ .Version }}}}", "s": "{{{{ .Status }}}}"}}
"#,
            rx.url("/slack")
        ),
    );
    append(
        &s.log(),
        concat!(
            r#"{"version": "0.2", "type": "flag", "action": "created", "status": "success", "metadata": {"actor":{"email":"dev@example.com"}}, "payload": {"key":"dark-mode","name":"A<B & C","rollout":1.50,"price":12,"big":1000000,"tags":["a","b"]}, "timestamp": "2026-11-23T06:00:00Z"}"#,
            "\n",
            r#"{"version": "0.2", "type": "flag", "action": "updated", "status": "success", "metadata": {"actor":{"email":"dev@example.com"}}, "payload": {"key":"dark-mode"}, "timestamp": "2026-11-23T06:00:01Z"}"#,
            "\n",
            r#"{"version": "0.2", "type": "flag", "action": "created", "status": "success", "metadata": {}, "payload": {"key":"light-mode"}, "timestamp": "2026-11-23T06:00:02Z"}"#,
            "\n",
        ),
    );
    let state = s.state();
    let mut ft = Flagtail::start_args(
        &["--flipt-config", config.to_str().unwrap()],
        s.dir.path(),
        &[
            ("SLACK_AUTH", "Bearer xoxb-1"),
            ("FLAGTAIL_STATE_DIR", state.to_str().unwrap()),
            ("FLAGTAIL_ADMIN__LISTEN", ""),
        ],
    );
    let got = rx.wait_delivered(2).await;
    assert!(ft.terminate().await.success(), "{}", ft.stderr());
    // What Flipt's Go template would have sent: text/template prints strings as they are, a
    // missing key as `<no value>` (an event without an actor too), numbers as float64 (`1e+06`),
    // lists as `[a b]`; `${` that is not a whole `${VAR}` value stays text; and toJson is Go's
    // json.Marshal (keys sorted, `<>&` escaped).
    assert_eq!(
        got[0].text(),
        r#"{"text": "flag created dark-mode by dev@example.com (<no value>) for $12, 1e+06 [a b]", "flag": {"big":1000000,"key":"dark-mode","name":"A\u003cB \u0026 C","price":12,"rollout":1.5,"tags":["a","b"]}, "at": "2026-11-23T06:00:00Z", "v": "0.2", "s": "success"}"#
    );
    assert!(
        got[1]
            .text()
            .starts_with(r#"{"text": "flag created light-mode by <no value> "#)
    );
    assert_eq!(got[0].path, "/slack");
    assert_eq!(got[0].header("authorization"), "Bearer xoxb-1");
    assert_eq!(
        got[0].header("x-note"),
        "not ${SLACK_AUTH}: Flipt fills only a whole ${VAR} value"
    );
    assert_eq!(got[0].header("content-type"), "application/json");
    assert_eq!(
        rx.delivered().len(),
        2,
        "audit.events keeps flag:created only"
    );
}

#[test]
fn a_go_template_with_range_is_refused_naming_the_template_and_the_construct() {
    let s = Setup::new();
    let config = flipt_config(
        &s,
        r#"      templates:
        - url: http://127.0.0.1:9/ok
          body: '{"type": "{{ .Type }}"}'
        - url: http://127.0.0.1:9/items
          body: '{"items": [{{ range .Payload.items }}"{{ . }}"{{ end }}]}'
"#,
    );
    let (code, _, err) = run_cmd(&["check", "--flipt-config", config.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("audit.sinks.webhook.templates.1.body (flipt-template-2)")
            && err.contains("\"range\""),
        "{err}"
    );
    assert!(
        !err.contains("flipt-template-1"),
        "the first one translates: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipt_config_adds_its_signed_webhook_to_a_flagtail_config() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let flipt = flipt_config(&s, &format!("      url: {}\n", rx.url("/flipt")));
    let archive = s.path("archive.jsonl");
    let own = s.path("flagtail.yaml");
    std::fs::write(
        &own,
        format!(
            "state_dir: {}\nadmin: {{listen: \"\"}}\nsinks:\n  - name: archive\n    type: file\n    path: {}\n",
            s.state().display(),
            archive.display()
        ),
    )
    .unwrap();
    s.write_lines(0..4, Encoding::Console);
    let mut ft = Flagtail::start_args(
        &[
            "--config",
            own.to_str().unwrap(),
            "--flipt-config",
            flipt.to_str().unwrap(),
        ],
        s.dir.path(),
        // Flipt's own environment override of its config, as a Flipt deployment sets it.
        &[("FLIPT_AUDIT_SINKS_WEBHOOK_SIGNING_SECRET", "flipt-s3cret")],
    );
    let got = rx.wait_delivered(2).await;
    let archived = eventually(|| match std::fs::read_to_string(&archive) {
        Ok(t) if t.lines().count() == 4 => Ok(t),
        other => Err(format!("{other:?}")),
    })
    .await;
    assert!(ft.terminate().await.success(), "{}", ft.stderr());
    // flag-0 and flag-3 are the created ones (audit.events: flag:created).
    for (r, i) in got.iter().zip([0, 3]) {
        let body = flipt_line(i, Encoding::Console).1;
        assert_eq!(r.text(), body, "Flipt's webhook body, byte for byte");
        assert_eq!(
            r.header("x-flipt-webhook-signature"),
            flipt_signature("flipt-s3cret", &body)
        );
    }
    assert_eq!(rx.delivered().len(), 2);
    assert_eq!(
        archived.lines().count(),
        4,
        "flagtail's own sink takes every event"
    );
    let (code, out, err) = run_cmd_env(
        &[
            "check",
            "--config",
            own.to_str().unwrap(),
            "--flipt-config",
            flipt.to_str().unwrap(),
        ],
        &[("FLIPT_AUDIT_SINKS_WEBHOOK_SIGNING_SECRET", "flipt-s3cret")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"flipt-webhook\"") && out.contains("\"flipt-log\""),
        "{out}"
    );
    assert!(!out.contains("flipt-s3cret") && !err.contains("flipt-s3cret"));
}

#[test]
fn problems_in_a_flipt_config_name_the_keys_written_there() {
    let s = Setup::new();
    let check = |args: &[&str]| {
        let (code, _, err) = run_cmd(&[&["check"], args].concat());
        assert_eq!(code, 2, "{err}");
        err
    };
    // A file that does not parse is an error, never "no audit section".
    let broken = s.path("broken.yml");
    std::fs::write(&broken, "audit:\n  sinks: [unclosed\n").unwrap();
    let err = check(&["--flipt-config", broken.to_str().unwrap()]);
    assert!(err.contains("broken.yml"), "{err}");
    // An events pattern is Flipt's `audit.events`, once, not a key of each sink.
    let config = flipt_config(&s, "      url: http://127.0.0.1:9/hook\n");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"flag:created\"", "\"bogus\"")
        .replace("max_backoff_duration: 3s", "max_backoff_duration: soon");
    std::fs::write(&config, text).unwrap();
    let err = check(&["--flipt-config", config.to_str().unwrap()]);
    assert!(err.contains("audit.events.0 (flipt-webhook)"), "{err}");
    assert!(
        err.contains("audit.sinks.webhook.max_backoff_duration (flipt-webhook)"),
        "{err}"
    );
    assert!(!err.contains("sinks.0"), "{err}");
    // A name flagtail gives a Flipt section, taken by the user's own config.
    let config = flipt_config(&s, "      url: http://127.0.0.1:9/hook\n");
    let own = s.path("flagtail.yaml");
    std::fs::write(&own, "sinks:\n  - name: flipt-webhook\n    type: stdout\n").unwrap();
    let err = check(&[
        "--config",
        own.to_str().unwrap(),
        "--flipt-config",
        config.to_str().unwrap(),
    ]);
    assert!(
        err.contains("sinks.0.name: \"flipt-webhook\" is the name flagtail gives"),
        "{err}"
    );
    assert_eq!(
        err.matches("flipt-webhook").count(),
        1,
        "reported once: {err}"
    );
}
