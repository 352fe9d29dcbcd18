//! `flagtail config-schema`: the JSON Schema editors check configs with. Every config shipped in
//! `examples/` and `deploy/` validates against it, and configs the parser refuses for a key of the
//! wrong kind are refused by the schema too. The validator is Python's `jsonschema` (Draft 7), an
//! implementation independent of the schemars that made it.

mod support;

use std::path::{Path, PathBuf};
use support::*;

/// Every flagtail config in the repository: the examples and the deploy manifests' configs.
fn shipped_configs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut configs = Vec::new();
    for dir in ["examples", "deploy", "deploy/unleash"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let yaml = path.extension().is_some_and(|e| e == "yaml");
            if yaml && text.contains("\nsinks:") && text.contains("\nsources:") {
                configs.push(path);
            }
        }
    }
    configs.sort();
    configs
}

/// Validates each of `configs` (YAML files) against `schema`; one line per file: `PATH: ok` or
/// `PATH: ERRORS` (each error's key path and message).
fn validate(schema: &Path, configs: &[PathBuf]) -> String {
    let script = r#"
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft7Validator.check_schema(schema)
validator = jsonschema.Draft7Validator(schema)
for path in sys.argv[2:]:
    errors = sorted(validator.iter_errors(yaml.safe_load(open(path))), key=lambda e: list(e.path))
    said = "; ".join(".".join(map(str, e.path)) + " " + e.message[:160] for e in errors)
    print(path + ": " + (said or "ok"))
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(schema)
        .args(configs)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the validator failed (needs PyPI jsonschema and pyyaml): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn schema_file(dir: &Path) -> PathBuf {
    let (code, out, err) = run_cmd(&["config-schema"]);
    assert_eq!(code, 0, "{err}");
    let path = dir.join("flagtail.schema.json");
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn every_shipped_config_validates_against_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let schema = schema_file(dir.path());
    let configs = shipped_configs();
    assert!(configs.len() >= 9, "{configs:?}");
    let report = validate(&schema, &configs);
    for line in report.lines() {
        assert!(line.ends_with(": ok"), "{report}");
    }
    assert_eq!(report.lines().count(), configs.len(), "{report}");
}

#[test]
fn keys_of_another_kind_are_refused_by_the_schema_as_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let schema = schema_file(dir.path());
    let cases = [
        (
            "- {name: a, http: \"127.0.0.1:8686\", socket_mode: \"0600\"}",
            "- {name: o, type: stdout}",
            "sources.0.socket_mode: only socket sources use it",
        ),
        (
            "- {name: a, file: /x}",
            "- {name: o, type: nats, url: \"nats://a\", subject: s, retry_on: [404]}",
            "sinks.0.retry_on: only webhook sinks use it",
        ),
        (
            "- {name: a, file: /x}",
            "- {name: o, type: file}",
            "sinks.0.path: a file sink needs a path",
        ),
        (
            "- {name: a, file: /x}",
            "- {name: o, url: \"https://h/\", concurency: 2}",
            "sinks.0.concurency: unknown key `concurency`; a webhook sink takes",
        ),
    ];
    let mut paths = Vec::new();
    for (i, (sources, sinks, refused)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case{i}.yaml"));
        std::fs::write(&path, format!("sources:\n  {sources}\nsinks:\n  {sinks}\n")).unwrap();
        let (code, _, err) = run_cmd(&["check", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(refused), "{refused}: {err}");
        paths.push(path);
    }
    let report = validate(&schema, &paths);
    assert_eq!(report.lines().count(), cases.len(), "{report}");
    for line in report.lines() {
        assert!(
            !line.ends_with(": ok"),
            "the schema took what check refuses: {report}"
        );
    }
}
