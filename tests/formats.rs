//! Every vendor's events, from fixtures written after the vendors' public payload documentation:
//! each line of `tests/fixtures/formats/FORMAT.jsonl` against the line of `FORMAT.expected` (the
//! Flipt webhook body it becomes, or `unmapped`), read with its format and with `auto`; then the
//! real binary reading each fixture file with that format and delivering to a real receiver.
//!
//! `FLAGTAIL_BLESS=1 cargo test --test formats` rewrites the `.expected` files from what the code
//! does now; review the diff line by line against SPEC §1.3 before committing it.

mod support;

use flagtail::event::{Format, Rejection, parse_line};
use std::collections::BTreeSet;
use std::path::PathBuf;
use support::*;

const FORMATS: [(&str, Format); 4] = [
    ("flipt", Format::Flipt),
    ("unleash", Format::Unleash),
    ("abtasty", Format::Abtasty),
    ("launchdarkly", Format::Launchdarkly),
];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from("tests/fixtures/formats").join(name)
}

/// The Flipt webhook body `line` becomes, `None` when it is unmapped (skipped).
fn body_of(format: Format, line: &str) -> Result<Option<String>, Rejection> {
    match parse_line(format, line) {
        Ok(e) => {
            let mut out = Vec::new();
            e.write_flipt_json(&mut out);
            Ok(Some(String::from_utf8(out).unwrap()))
        }
        Err(Rejection::Unmapped(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The expected body of each input line, or `None` for a line that is unmapped (skipped).
fn expected(format: &str) -> Vec<Option<String>> {
    let inputs = std::fs::read_to_string(fixture(&format!("{format}.jsonl"))).unwrap();
    let path = fixture(&format!("{format}.expected"));
    if std::env::var_os("FLAGTAIL_BLESS").is_some() {
        let f = FORMATS.iter().find(|(n, _)| *n == format).unwrap().1;
        let text: String = inputs
            .lines()
            .map(|l| match body_of(f, l) {
                Ok(Some(body)) => body + "\n",
                Ok(None) => "unmapped\n".into(),
                Err(e) => panic!("{format}: fixture line is not an event: {e}: {l}"),
            })
            .collect();
        std::fs::write(&path, text).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let out: Vec<Option<String>> = text
        .lines()
        .map(|l| (l != "unmapped").then(|| l.to_string()))
        .collect();
    assert_eq!(
        out.len(),
        inputs.lines().count(),
        "{format}: one expectation per line"
    );
    out
}

#[test]
fn every_fixture_line_maps_to_its_expected_body_with_its_format_and_with_auto() {
    for (name, format) in FORMATS {
        let inputs = std::fs::read_to_string(fixture(&format!("{name}.jsonl"))).unwrap();
        for (i, (line, want)) in inputs.lines().zip(expected(name)).enumerate() {
            for f in [format, Format::Auto] {
                let got = body_of(f, line).unwrap_or_else(|e| panic!("{name} line {}: {e}", i + 1));
                assert_eq!(got, want, "{name} line {} read as {}", i + 1, f.as_str());
            }
        }
    }
}

/// The `type:action` pairs a fixture's expected bodies cover.
fn families(format: &str) -> BTreeSet<String> {
    expected(format)
        .into_iter()
        .flatten()
        .map(|b| {
            let v: serde_json::Value = serde_json::from_str(&b).unwrap();
            format!(
                "{}:{}",
                v["type"].as_str().unwrap(),
                v["action"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn every_mapped_family_has_a_fixture() {
    let want = |pairs: &[&str]| pairs.iter().map(|p| p.to_string()).collect::<BTreeSet<_>>();
    let all = |kinds: &[&str]| {
        kinds
            .iter()
            .flat_map(|k| ["created", "updated", "deleted"].map(|a| format!("{k}:{a}")))
            .collect::<BTreeSet<_>>()
    };
    // SPEC §1.3, one row per family; every action the mapping can produce for that family.
    let unleash = all(&["flag", "rollout", "change_request", "access"])
        .into_iter()
        .chain(want(&[
            "variant:updated",
            "tag:created",
            "tag:deleted",
            "segment:created",
            "segment:deleted",
            "namespace:created",
            "environment:updated",
            "token:created",
            "token:deleted",
        ]))
        .collect::<BTreeSet<_>>();
    assert_eq!(families("unleash"), unleash);
    let ab = want(&[
        "flag:created",
        "flag:updated",
        "flag:deleted",
        "environment:updated",
    ])
    .into_iter()
    .chain(all(&["access"]))
    .collect::<BTreeSet<_>>();
    assert_eq!(families("abtasty"), ab);
    assert_eq!(
        families("launchdarkly"),
        all(&["flag", "segment", "namespace", "environment"])
            .into_iter()
            .filter(|f| f != "namespace:deleted"
                && f != "segment:updated"
                && f != "environment:updated")
            .collect::<BTreeSet<_>>()
    );
    assert!(families("flipt").len() >= 10);
}

#[test]
fn every_documented_ab_tasty_event_name_has_a_fixture_in_both_spellings() {
    let inputs = std::fs::read_to_string(fixture("abtasty.jsonl")).unwrap();
    let names: BTreeSet<String> = inputs
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["event"].as_str().unwrap().to_string()
        })
        .collect();
    for name in [
        // Flagship
        "Feature.active",
        "Feature.paused",
        "Feature.status",
        "Flag.new",
        "Flag.deleted",
        "Environment.synchronize",
        // Feature Experimentation & Rollouts
        "Flag created",
        "Flag removed",
        "Campaign.status.changed",
        "Project access granted to user",
        "Project edit role granted to user",
        "Project access removed",
        "Account access granted to user",
        "Account edit role granted to user",
        "Account access removed",
    ] {
        assert!(names.contains(name), "no fixture for {name:?}");
    }
}

/// Runs the binary on one fixture file read with `format`, delivering to a receiver, and checks
/// the bodies received, in order, are the expected ones (unmapped lines skipped, none rejected).
async fn delivers_its_fixture(name: &str) {
    let rx = Receiver::start().await;
    let s = Setup::new();
    std::fs::copy(fixture(&format!("{name}.jsonl")), s.log()).unwrap();
    let text = std::fs::read_to_string(s.config(&webhook_sink(&rx.url("/"), ""))).unwrap();
    let config = s.path("flagtail.yaml");
    std::fs::write(
        &config,
        text.replace("format: flipt", &format!("format: {name}")),
    )
    .unwrap();
    let want: Vec<String> = expected(name).into_iter().flatten().collect();
    let mut ft = Flagtail::start(&config);
    let got = rx.wait_delivered(want.len()).await;
    assert!(ft.terminate().await.success());
    let bodies: Vec<String> = got.iter().map(|r| r.text()).collect();
    assert_eq!(bodies, want, "{name}");
    assert_eq!(rx.delivered().len(), want.len(), "{name}: nothing more");
    assert!(
        s.state_lines("rejected/flipt.jsonl").is_empty(),
        "{name}: no fixture line is rejected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reads_flipt_lines() {
    delivers_its_fixture("flipt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reads_unleash_events() {
    delivers_its_fixture("unleash").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reads_ab_tasty_webhooks() {
    delivers_its_fixture("abtasty").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reads_launchdarkly_entries() {
    delivers_its_fixture("launchdarkly").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_see_the_vendor_object_as_source_line() {
    let rx = Receiver::start().await;
    let s = Setup::new();
    append(
        &s.log(),
        concat!(
            r#"{"id":2,"type":"feature-updated","createdBy":"admin@example.com","createdByUserId":1,"createdAt":"2026-11-23T06:02:00.000Z","data":{"description":"faster"},"preData":{"description":"new"},"featureName":"checkout-v2","project":"default"}"#,
            "\n",
            r#"{"_id":"a1","date":1763877600000,"kind":"flag","name":"New UI","accesses":[{"action":"updateOn","resource":"proj/default:env/production:flag/new-ui"}],"previousVersion":{"on":false},"currentVersion":{"on":true}}"#,
            "\n",
        ),
    );
    let body = r#"{"what": "{{ type }}/{{ action }} {{ payload.key }}", "change": "{% if source.line.preData is defined %}{{ source.line.preData.description }} -> {{ source.line.data.description }}{% else %}{{ source.line.previousVersion.on }} -> {{ source.line.currentVersion.on }}{% endif %}", "format": "{{ source.format }}"}"#;
    let text = std::fs::read_to_string(s.config(&webhook_sink(
        &rx.url("/"),
        &format!("    body: '{body}'\n"),
    )))
    .unwrap();
    let config = s.path("flagtail.yaml");
    std::fs::write(&config, text.replace("format: flipt", "format: auto")).unwrap();
    let mut ft = Flagtail::start(&config);
    let got = rx.wait_delivered(2).await;
    assert!(ft.terminate().await.success(), "{}", ft.stderr());
    assert_eq!(
        got[0].text(),
        r#"{"what": "flag/updated checkout-v2", "change": "new -> faster", "format": "auto"}"#
    );
    assert_eq!(
        got[1].text(),
        r#"{"what": "flag/updated new-ui", "change": "false -> true", "format": "auto"}"#
    );
}

#[test]
fn the_documented_config_of_each_vendor_passes_check() {
    let readme = std::fs::read_to_string("docs/vendors.md").unwrap();
    let s = Setup::new();
    let env = [
        ("INGEST_TOKEN", "tok-123"),
        ("AUDIT_WEBHOOK_URL", "https://audit.example.com/flags"),
        ("FLAGTAIL_SECRET", "s3cr3t"),
        ("LD_WEBHOOK_SECRET", "ld-s3cr3t"),
        (
            "SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T0/B0/x",
        ),
    ];
    for vendor in ["Flipt", "Unleash", "AB Tasty", "LaunchDarkly"] {
        let heading = format!("\n## Use with {vendor}\n");
        let at = readme
            .find(&heading)
            .unwrap_or_else(|| panic!("docs/vendors.md has no {heading:?}"));
        let section = &readme[at + heading.len()..];
        let section = &section[..section.find("\n## ").unwrap_or(section.len())];
        let start = section.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
        let block = &section[start..start + section[start..].find("```").unwrap()];
        let path = s.path(&format!("{}.yaml", vendor.replace(' ', "")));
        std::fs::write(&path, block).unwrap();
        let flag = if vendor == "Flipt" {
            "--flipt-config"
        } else {
            "--config"
        };
        let (code, out, err) = run_cmd_env(&["check", flag, path.to_str().unwrap()], &env);
        assert_eq!(code, 0, "{vendor}: {err}");
        assert!(out.contains("\"sinks\""), "{vendor}: {out}");
        let table = section.matches("\n| ").count();
        assert!(table >= 5, "{vendor}: the section has its mapping table");
    }
}
