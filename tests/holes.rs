//! Loss, leak and hang holes that hostile testing found in the core, one test per class of fault.
//! Each runs the real binary against real files, a real receiver and real signals, and failed
//! before the fault was fixed at its root.

mod support;

use std::os::unix::fs::PermissionsExt;
use support::*;

// ---- lost events -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_while_stopped_reads_the_real_copy_then_follows_the_live_file() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let config = s.config(&webhook_sink(&rx.url("/"), ""));
    s.write_lines(0..5, Encoding::Console);
    let mut ft = Flagtail::start(&config);
    rx.wait_delivered(5).await;
    assert!(ft.terminate().await.success());

    // While stopped: an old backup (same first line, fewer lines), more lines, a copytruncate, and
    // new lines in the live file. The backup must not be taken for the rotated copy.
    std::fs::copy(s.log(), s.path("audit.log.bak")).unwrap();
    s.write_lines(5..10, Encoding::Console);
    std::fs::copy(s.log(), s.path("audit.log.1")).unwrap();
    std::fs::File::create(s.log()).unwrap();
    s.write_lines(10..15, Encoding::Console);

    let mut ft = Flagtail::start(&config);
    wait_keys(flag_keys(0..15), || delivered_keys(&rx)).await;
    // Still on the live file: what is written now arrives.
    s.write_lines(15..20, Encoding::Console);
    wait_keys(flag_keys(0..20), || delivered_keys(&rx)).await;
    // One more copytruncate while running, then a restart with lines written while stopped.
    std::fs::copy(s.log(), s.path("audit.log.1")).unwrap();
    std::fs::File::create(s.log()).unwrap();
    s.write_lines(20..25, Encoding::Console);
    wait_keys(flag_keys(0..25), || delivered_keys(&rx)).await;
    assert!(ft.terminate().await.success());
    s.write_lines(25..30, Encoding::Console);
    let mut ft = Flagtail::start(&config);
    wait_keys(flag_keys(0..30), || delivered_keys(&rx)).await;
    assert!(ft.terminate().await.success());
    let seen = counts(delivered_keys(&rx));
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(seen.len(), 30);
}

/// Unmounts a test tmpfs when dropped.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A tmpfs of `size` at `dir`, or why there cannot be one here.
fn small_tmpfs(dir: &std::path::Path, size: &str) -> Result<Mount, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root: cannot mount a tmpfs".into());
    }
    std::fs::create_dir_all(dir).unwrap();
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mount -t tmpfs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(Mount(dir.to_path_buf()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_never_leaves_a_torn_or_doubled_line_in_the_file_sink() {
    let s = Setup::new();
    let disk = s.path("small");
    let _mount = match small_tmpfs(&disk, "64k") {
        Ok(m) => m,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let out = disk.join("events.jsonl");
    // A line torn by a crash before this run: it must stay a line of its own.
    std::fs::write(&out, b"{\"torn\": tr").unwrap();
    // Fill the disk, then free one page: the first writes fit, then one is cut short.
    let filler = disk.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        while f.write_all(&[b'x'; 4096]).is_ok() {}
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(4096)).unwrap();
    }
    s.write_lines(0..60, Encoding::Json);
    let config = s.config(&format!(
        "  - name: archive\n    type: file\n    path: {}\n    concurrency: 4\n    initial_backoff: 50ms\n    max_backoff_duration: 60s\n",
        out.display()
    ));
    let mut ft = Flagtail::start(&config);
    ft.wait_log("will retry").await;
    std::fs::remove_file(&filler).unwrap();
    let lines = eventually(|| {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= 61 {
            Ok(lines)
        } else {
            Err(format!("{} lines in the output", lines.len()))
        }
    })
    .await;
    assert!(ft.terminate().await.success());
    assert_eq!(
        lines[0], "{\"torn\": tr",
        "the torn line is kept, on its own"
    );
    let keys: Vec<String> = lines[1..]
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("not a whole body ({e}): {l:?}"))["payload"]["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let seen = counts(keys);
    assert_eq!(seen.len(), 60, "every event is in the output");
    assert!(
        seen.values().all(|n| *n == 1),
        "a retried write wrote its group again: {seen:?}"
    );
    let log = ft.stderr();
    assert!(log.contains("No space left on device"), "{log}");
    assert!(
        !log.contains("torn by a crash"),
        "ENOSPC is not a crash: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_state_dir_exits_2_naming_the_first() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let config = s.config(&webhook_sink(&rx.url("/"), ""));
    s.write_lines(0..3, Encoding::Console);
    let mut first = Flagtail::start(&config);
    rx.wait_delivered(3).await;

    let mut second = Flagtail::start(&config);
    let status = second.wait().await;
    assert_eq!(status.code(), Some(2), "{}", second.stderr());
    assert!(
        second
            .stderr()
            .contains(&format!("another flagtail (pid {})", first.pid())),
        "{}",
        second.stderr()
    );
    // The one-shot commands work beside the running daemon.
    let cfg = config.to_str().unwrap();
    let log = s.log();
    let (code, out, err) = run_cmd(&[
        "render",
        "--config",
        cfg,
        "--sink",
        "hook",
        "--input",
        log.to_str().unwrap(),
    ]);
    assert_eq!((code, out.lines().count()), (0, 3), "{err}");
    let (code, _, err) = replay(&config, "hook");
    assert_eq!(code, 0, "{err}");

    s.write_lines(3..6, Encoding::Console);
    wait_keys(flag_keys(0..6), || delivered_keys(&rx)).await;
    // The first daemon's checkpoint is on disk past flag-2 (a kill before that save, as under
    // heavy I/O, rightly sends flag-0..2 again).
    let saved = || -> u64 {
        std::fs::read(s.state().join("checkpoints.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|c| c["sources"]["flipt"]["file"]["offset"].as_u64())
            .unwrap_or(0)
    };
    let three: u64 = (0..3)
        .map(|i| flipt_line(i, Encoding::Console).0.len() as u64)
        .sum();
    eventually(|| match saved() {
        at if at >= three => Ok(()),
        at => Err(format!("checkpoint at {at}, want {three}")),
    })
    .await;
    // kill -9 leaves no lock behind: the next daemon starts and goes on.
    first.kill_9().await;
    s.write_lines(6..8, Encoding::Console);
    let mut third = Flagtail::start(&config);
    wait_keys(flag_keys(0..8), || delivered_keys(&rx)).await;
    assert!(third.terminate().await.success(), "{}", third.stderr());
    let seen = counts(delivered_keys(&rx));
    assert!(
        flag_keys(0..3).all(|k| seen[&k] == 1),
        "only one daemon delivered: {seen:?}"
    );
}

/// A line whose payload keeps number spellings, key order, a number out of f64's range and nesting
/// past serde_json's recursion limit; and the body Flipt's webhook sends for it, derived by hand.
fn awkward_line() -> (String, String) {
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let payload = format!(
        r#"{{"z":1.50,"a":1e2,"big":12345678901234567890123,"inf":1e999,"deep":{deep},"key":"flag-0"}}"#
    );
    let spaced = payload.replace(',', ", ").replace("\":", "\": ");
    let line = format!(
        r#"{{"version": "0.2", "type": "flag", "action": "updated", "status": "success", "metadata": {{"actor":{{"email":"a@b.io"}}}}, "payload": {spaced}, "timestamp": "2026-11-23T06:00:00Z"}}"#
    );
    let body = format!(
        r#"{{"version":"0.2","type":"flag","action":"updated","metadata":{{"actor":{{"email":"a@b.io"}}}},"payload":{payload},"timestamp":"2026-11-23T06:00:00Z","status":"success"}}"#
    );
    (line + "\n", body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_sends_byte_for_byte_what_would_have_been_sent() {
    let rx = Receiver::start().await;
    rx.script(vec![Reply::Status(404)]);
    let s = Setup::new();
    let (line, body) = awkward_line();
    append(&s.log(), &line);
    let config = s.config(&webhook_sink(&rx.url("/"), "    signing_secret: s3crET\n"));
    let mut ft = Flagtail::start(&config);
    eventually(|| match s.state_lines("dead-letter/hook.jsonl").len() {
        1 => Ok(()),
        n => Err(format!("{n} dead letters")),
    })
    .await;
    assert!(ft.terminate().await.success());
    let first = rx.attempts().remove(0);
    assert_eq!(first.text(), body, "the daemon sends the source's bytes");

    let (code, out, err) = replay(&config, "hook");
    assert_eq!(code, 0, "{out}{err}");
    let replayed = rx.delivered().remove(0);
    assert_eq!(replayed.text(), body, "replay sends the same bytes");
    assert_eq!(
        replayed.header("idempotency-key"),
        first.header("idempotency-key")
    );
    assert_eq!(
        replayed.header("x-flipt-webhook-signature"),
        flipt_signature("s3crET", &body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_a_template_cannot_see_are_dead_lettered_never_null() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let (awkward, _) = awkward_line();
    append(&s.log(), &awkward);
    s.write_lines(1..2, Encoding::Console);
    let config = s.config(&webhook_sink(
        &rx.url("/"),
        "    body: '{\"type\": \"{{ type }}\", \"p\": {{ payload | toJson }}}'\n",
    ));
    let mut ft = Flagtail::start(&config);
    let got = rx.wait_delivered(1).await;
    let dead = eventually(|| match s.state_lines("dead-letter/hook.jsonl") {
        d if d.len() == 1 => Ok(d),
        d => Err(format!("{} dead letters", d.len())),
    })
    .await;
    assert!(ft.terminate().await.success());
    assert_eq!(got.len(), 1);
    assert!(
        got[0].text().contains("\"key\":\"flag-1\""),
        "{}",
        got[0].text()
    );
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(reason.contains("cannot be given to a template"), "{reason}");
    assert!(!rx.attempts().iter().any(|r| r.text().contains("null")));
}

// ---- leaked secrets ----------------------------------------------------------------------------

#[test]
fn config_errors_and_check_never_print_a_secret() {
    let s = Setup::new();
    let cfg = s.config(
        "  - name: numeric\n    url: http://127.0.0.1:9/\n    signing_secret: 12345678901\n    headers: {X-Api-Key: 98765432109}\n\
         \x20 - name: hash\n    url: \"https://user:p#ss-wOrd@hooks.example/x\"\n\
         \x20 - name: noscheme\n    url: hooks.example/services/T/B/SECRETTOKEN1\n",
    );
    let (code, out, err) = run_cmd(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    for key in [
        "sinks.0.signing_secret",
        "sinks.0.headers",
        "sinks.1.url",
        "sinks.2.url",
    ] {
        assert!(err.contains(key), "{key} is named: {err}");
    }
    for secret in ["12345678901", "98765432109", "ss-wOrd", "SECRETTOKEN1"] {
        assert!(
            !err.contains(secret) && !out.contains(secret),
            "{secret} leaked: {err}"
        );
    }

    let cfg = s.config(
        "  - name: backslash\n    url: 'https://hooks.example\\services\\SECRETTOKEN2'\n\
         \x20 - name: userinfo\n    url: \"https://bot:pa55w0rd@hooks.example/in\"\n\
         \x20 - name: body\n    url: http://127.0.0.1:9/\n    body: '{\"token\": \"${BODY_TOKEN}\", \"t\": \"{{ type }}\"}'\n",
    );
    let (code, out, err) = run_cmd_env(
        &["check", "--config", cfg.to_str().unwrap()],
        &[("BODY_TOKEN", "tok-in-body-123")],
    );
    assert_eq!(code, 0, "{err}");
    for secret in ["SECRETTOKEN2", "pa55w0rd", "bot:", "tok-in-body-123"] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} leaked: {out}"
        );
    }
    assert!(out.contains("${BODY_TOKEN}"), "{out}");
    assert!(out.contains("https://hooks.example/***"), "{out}");

    // A URL written with a literal password and a variable is still shown masked; a value from a
    // variable is never quoted by an error about it; a URL the request line cannot carry is an
    // error, never a sink left out.
    let cfg = s.config(
        "  - name: mixed\n    url: \"https://bot:hunter2@hooks.example/${HOOK_PATH}\"\n    concurrency: \"${WRONG_VAR}\"\n\
         \x20 - name: braces\n    url: \"https://{{host}}/hook\"\n",
    );
    let env = [
        ("HOOK_PATH", "T0/B0/tok-in-path-456"),
        ("WRONG_VAR", "tok-in-var-789"),
    ];
    let (code, out, err) = run_cmd_env(&["check", "--config", cfg.to_str().unwrap()], &env);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("sinks.0.concurrency") && err.contains("${WRONG_VAR}"),
        "{err}"
    );
    assert!(err.contains("sinks.1.url"), "{err}");
    for secret in ["hunter2", "tok-in-path-456", "tok-in-var-789"] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} leaked: {err}"
        );
    }
    let cfg = s.config(
        "  - name: mixed\n    url: \"https://bot:hunter2@hooks.example/${HOOK_PATH}\"\n    signing_secret: s3crET\n\
         \x20 - name: keyed\n    url: http://127.0.0.1:9/\n    headers: {X-Api-Key: k3y-v4lue}\n",
    );
    let (code, out, err) = run_cmd_env(&["check", "--config", cfg.to_str().unwrap()], &env);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("hunter2") && !out.contains("tok-in-path-456"),
        "{out}"
    );
    // `render` prints requests as they would be sent, but header values and user info as ***.
    let log = s.log();
    s.write_lines(0..1, Encoding::Console);
    for sink in ["mixed", "keyed"] {
        let (code, out, err) = run_cmd_env(
            &[
                "render",
                "--config",
                cfg.to_str().unwrap(),
                "--sink",
                sink,
                "--input",
                log.to_str().unwrap(),
            ],
            &env,
        );
        assert_eq!(code, 0, "{err}");
        for secret in ["hunter2", "Ym90Omh1bnRlcjI", "k3y-v4lue"] {
            assert!(!out.contains(secret), "{secret} in render output: {out}");
        }
        assert!(out.contains("\"***\""), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_user_info_is_sent_as_basic_auth_and_never_logged() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    s.write_lines(0..2, Encoding::Console);
    let url = format!("http://bot:pa55w0rd@127.0.0.1:{}/hook", rx.addr.port());
    let config = s.config(&format!(
        "{}  - name: broken\n    url: {}\n    body: '{{{{ payload.key }}}} is not json'\n",
        webhook_sink(&url, ""),
        rx.url("/broken")
    ));
    // Every target at debug, hyper's and rustls' included.
    let mut ft = Flagtail::start_env(&config, &[("RUST_LOG", "debug")]);
    let got = rx.wait_delivered(2).await;
    eventually(|| match s.state_lines("dead-letter/broken.jsonl").len() {
        2 => Ok(()),
        n => Err(format!("{n} dead letters")),
    })
    .await;
    assert!(ft.terminate().await.success());
    // base64("bot:pa55w0rd")
    assert_eq!(got[0].header("authorization"), "Basic Ym90OnBhNTV3MHJk");
    assert_eq!(got[0].path, "/hook");
    let log = ft.stderr();
    for secret in ["pa55w0rd", "bot:", "Ym90OnBhNTV3MHJk", "flag-0 is not json"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    // The dead-letter file (0600) may keep what was rendered, for the operator.
    let dead = s.state_lines("dead-letter/broken.jsonl");
    assert_eq!(dead[0]["body_excerpt"], "flag-0 is not json");
}

// ---- hangs -------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_template_is_given_up_on_and_sigterm_still_stops_the_daemon() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    s.write_lines(0..1, Encoding::Console);
    let loops = "{% for i in range(end=100000) %}{% for j in range(end=100000) %}";
    let config = s.config(&format!(
        "{}\
         \x20 - name: bloat\n    url: {}\n    max_body_bytes: 65536\n    body: '{loops}xxxxxxxxxxxxxxxx{{% endfor %}}{{% endfor %}}'\n",
        webhook_sink(
            &rx.url("/spin"),
            &format!("    timeout: 1s\n    body: '{loops}{{% endfor %}}{{% endfor %}}{{\"t\": 1}}'\n"),
        ),
        rx.url("/bloat")
    ));
    let mut ft = Flagtail::start(&config);
    let reasons = eventually(|| {
        let spin = s.state_lines("dead-letter/hook.jsonl");
        let bloat = s.state_lines("dead-letter/bloat.jsonl");
        match (spin.first(), bloat.first()) {
            (Some(a), Some(b)) => Ok((a["reason"].to_string(), b["reason"].to_string())),
            _ => Err("waiting for both dead letters".to_string()),
        }
    })
    .await;
    assert!(
        reasons.0.contains("did not finish within 1s"),
        "{}",
        reasons.0
    );
    assert!(
        reasons.1.contains("over max_body_bytes (65536)"),
        "{}",
        reasons.1
    );
    // The runaway render still spins on its thread: SIGTERM stops the daemon all the same.
    let status = ft.terminate().await;
    assert!(status.success(), "{}", ft.stderr());
    assert!(rx.attempts().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_regular_files_are_refused_and_never_block_or_spin() {
    let s = Setup::new();
    let config_for = |file: &str| {
        let text = format!(
            "state_dir: {}\nadmin: {{listen: \"\"}}\nsources:\n  - {{name: x, file: {file}}}\nsinks:\n  - {{name: out, type: stdout}}\n",
            s.state().display()
        );
        let path = s.path("other.yaml");
        std::fs::write(&path, text).unwrap();
        path
    };
    let mut ft = Flagtail::start(&config_for("/dev/zero"));
    assert_eq!(ft.wait().await.code(), Some(2));
    assert!(
        ft.stderr()
            .contains("sources.0.file: /dev/zero is a character device"),
        "{}",
        ft.stderr()
    );
    let fifo = s.path("audit.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let mut ft = Flagtail::start(&config_for(fifo.to_str().unwrap()));
    assert_eq!(ft.wait().await.code(), Some(2));
    assert!(ft.stderr().contains("is a FIFO"), "{}", ft.stderr());

    // While running: the path becomes a directory for a while, then a FIFO, then a file again.
    let rx = Receiver::start().await;
    s.write_lines(0..3, Encoding::Console);
    let mut ft = Flagtail::start(&s.config(&webhook_sink(&rx.url("/"), "")));
    rx.wait_delivered(3).await;
    std::fs::remove_file(s.log()).unwrap();
    std::fs::create_dir(s.log()).unwrap();
    ft.wait_log("is a directory, not a regular file").await;
    std::fs::remove_dir(s.log()).unwrap();
    assert!(
        std::process::Command::new("mkfifo")
            .arg(s.log())
            .status()
            .unwrap()
            .success()
    );
    ft.wait_log("is a FIFO, not a regular file").await;
    std::fs::remove_file(s.log()).unwrap();
    s.write_lines(3..6, Encoding::Console);
    wait_keys(flag_keys(0..6), || delivered_keys(&rx)).await;
    assert!(ft.terminate().await.success(), "{}", ft.stderr());
    let log = ft.stderr();
    assert!(
        log.matches("is a FIFO").count() < 10 && log.matches("is a directory").count() < 10,
        "no spinning: {log}"
    );
}

// ---- smaller faults ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_that_cannot_be_saved_at_shutdown_exit_1() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    s.write_lines(0..2, Encoding::Console);
    let mut ft = Flagtail::start(&s.config(&webhook_sink(&rx.url("/"), "")));
    rx.wait_delivered(2).await;
    // The temp file of the next save cannot be created.
    std::fs::create_dir_all(s.state().join("checkpoints.tmp")).unwrap();
    s.write_lines(2..4, Encoding::Console);
    rx.wait_delivered(4).await;
    let status = ft.terminate().await;
    assert_eq!(status.code(), Some(1), "{}", ft.stderr());
    let log = ft.stderr();
    assert!(log.contains("cannot save checkpoints at shutdown"), "{log}");
    assert!(!log.contains("checkpoints saved"), "{log}");
}

#[test]
fn check_reports_every_problem_and_a_zero_backoff() {
    let s = Setup::new();
    let cfg = s.config_with(
        "max_line_bytes: lots\n",
        "  - name: a\n    url: http://127.0.0.1:9/\n    retries: 3\n\
         \x20 - name: b\n    url: http://127.0.0.1:9/\n    events: [flag]\n\
         \x20 - name: c\n    url: http://127.0.0.1:9/\n    initial_backoff: 0s\n",
    );
    let (code, _, err) = run_cmd(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 2);
    for key in [
        "max_line_bytes",
        "sinks.0",
        "retries",
        "sinks.1.events",
        "sinks.2.initial_backoff: must be at least 1ms",
    ] {
        assert!(err.contains(key), "{key} missing:\n{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_line_error_is_one_log_line() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    let config = s.config(&webhook_sink(&rx.url("/"), ""));
    let mut ft = Flagtail::start(&config);
    ft.wait_log("flagtail started").await;
    s.config("  - name: a\n    url: nope\n  - name: b\n    type: carrier-pigeon\n");
    ft.signal("HUP");
    ft.wait_log("reload refused").await;
    assert!(ft.terminate().await.success());
    let log = ft.stderr();
    let refused = log.lines().find(|l| l.contains("reload refused")).unwrap();
    assert!(
        refused.contains("sinks.0.url") && refused.contains("sinks.1.type"),
        "both problems are on the event's line: {refused}"
    );
    for line in log.lines() {
        assert!(
            line.starts_with(|c: char| c.is_ascii_digit()),
            "every line is one event starting with its time: {line:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_fingerprint_length_in_checkpoints_is_refused_not_allocated() {
    let s = Setup::new();
    s.write_lines(0..1, Encoding::Console);
    std::fs::create_dir_all(s.state()).unwrap();
    std::fs::write(
        s.state().join("checkpoints.json"),
        format!(
            r#"{{"version": "1", "sources": {{"flipt": {{"path": "{}", "dev": 1, "inode": 2, "fingerprint": {{"len": 1000000000000000, "hash": "00000000000000000000000000000000"}}, "offset": 5}}}}}}"#,
            s.log().display()
        ),
    )
    .unwrap();
    let mut ft = Flagtail::start(&s.config("  - {name: out, type: stdout}\n"));
    let status = ft.wait().await;
    assert_eq!(status.code(), Some(1), "{}", ft.stderr());
    assert!(ft.stderr().contains("fingerprint len"), "{}", ft.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_output_files_are_private_unless_configured() {
    let s = Setup::new();
    s.write_lines(0..2, Encoding::Console);
    let (private, shared) = (s.path("private.jsonl"), s.path("shared.jsonl"));
    let mut ft = Flagtail::start(&s.config(&format!(
        "  - {{name: a, type: file, path: {}}}\n  - {{name: b, type: file, path: {}, mode: \"0640\"}}\n",
        private.display(),
        shared.display()
    )));
    eventually(|| {
        let done = |p: &std::path::Path| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .count()
                == 2
        };
        if done(&private) && done(&shared) && s.state().join("checkpoints.json").exists() {
            Ok(())
        } else {
            Err("waiting for both files and a checkpoint".to_string())
        }
    })
    .await;
    assert!(ft.terminate().await.success());
    let mode = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(s.state().join("checkpoints.json")), 0o600);
    assert_eq!(mode(s.state().join("lock")), 0o600);
    assert_eq!(mode(private), 0o600);
    assert_eq!(mode(shared), 0o640);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_cut_short_of_its_content_length_is_retried() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, mut keys) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            let cut = std::mem::take(&mut first);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: headers, then Content-Length bytes of body.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                    let field = |name: &str| {
                        head.lines()
                            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
                            .unwrap_or_default()
                    };
                    let len: usize = field("content-length").trim().parse().unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 4096];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + len);
                    tx.send(field("idempotency-key").trim().to_string())
                        .unwrap();
                    if cut {
                        let _ = conn
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
                            .await;
                        return;
                    }
                    let _ = conn
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .await;
                }
            });
        }
    });
    let s = Setup::new();
    s.write_lines(0..1, Encoding::Console);
    let mut ft =
        Flagtail::start(&s.config(&webhook_sink(&format!("http://127.0.0.1:{port}/"), "")));
    let first = tokio::time::timeout(PATIENCE, keys.recv())
        .await
        .unwrap()
        .unwrap();
    let again = tokio::time::timeout(PATIENCE, keys.recv())
        .await
        .expect("the cut-short answer is retried")
        .unwrap();
    assert_eq!(first, again, "the retry carries the same Idempotency-Key");
    ft.wait_log("the response was cut short").await;
    assert!(ft.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_sink_worker_stops_the_daemon_with_exit_1() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    s.write_lines(0..1, Encoding::Console);
    let mut ft = Flagtail::start_env(
        &s.config(&webhook_sink(&rx.url("/"), "")),
        &[("FLAGTAIL_TEST_FAULT", "sink-panic:hook")],
    );
    let status = ft.wait().await;
    assert_eq!(status.code(), Some(1), "{}", ft.stderr());
    assert!(
        ft.stderr().contains("sink hook panicked"),
        "{}",
        ft.stderr()
    );
}
