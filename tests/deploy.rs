//! deploy/ as an operator applies it: the Kubernetes manifests (through `kubectl kustomize`), their
//! config, probes and security settings; the systemd unit (through `systemd-analyze verify`).
//! The Prometheus alert rules (`promtool check rules`, `promtool test rules`), their
//! PrometheusRule twin, and the Grafana dashboard. Any tool missing skips its part with a printed
//! reason (CI installs them).

mod support;

use figment::providers::Format as _;
use serde_json::Value;
use support::*;

/// The environment the deployed config reads, as the Secret and the manifests give it.
const ENV: [(&str, &str); 6] = [
    ("AUDIT_WEBHOOK_URL", "https://audit.example.com/flipt"),
    (
        "AUDIT_SIGNING_SECRET",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ),
    (
        "SLACK_WEBHOOK_URL",
        "https://hooks.slack.com/services/T0/B0/x",
    ),
    ("FLAGTAIL_STATE_DIR", "/var/lib/flagtail"),
    ("FLIPT_AUDIT_LOG", "/var/log/flipt/audit.log"),
    ("INGEST_TOKEN", "ingest-token"),
];

#[test]
fn the_kubernetes_sidecar_probes_the_admin_port_its_config_sets_and_runs_locked_down() {
    // Beside Flipt (the audit log shared read-only) and beside Unleash (its webhooks on loopback).
    check_sidecar("deploy", Some("/var/log/flipt"));
    check_sidecar("deploy/unleash", None);
}

/// Renders the kustomization in `dir` and checks its flagtail sidecar; `shared_log`: where the
/// flag server's audit log is mounted read-only.
fn check_sidecar(dir: &str, shared_log: Option<&str>) {
    let parse = |doc: &str| {
        figment::Figment::from(figment::providers::Yaml::string(doc))
            .extract::<Value>()
            .unwrap()
    };
    let docs: Vec<Value> = match std::process::Command::new("kubectl")
        .args(["kustomize", dir])
        .output()
    {
        Ok(o) if o.status.success() => String::from_utf8(o.stdout)
            .unwrap()
            .split("\n---\n")
            .map(parse)
            .collect(),
        other => {
            // No kubectl: what kustomization.yaml says, read with a YAML parser.
            eprintln!("kubectl kustomize is not available ({other:?}); reading the files");
            let k = parse(&std::fs::read_to_string(format!("{dir}/kustomization.yaml")).unwrap());
            let mut docs: Vec<Value> = k["resources"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| {
                    let text =
                        std::fs::read_to_string(format!("{dir}/{}", r.as_str().unwrap())).unwrap();
                    text.split("\n---\n").map(parse).collect::<Vec<_>>()
                })
                .collect();
            let file = k["configMapGenerator"][0]["files"][0].as_str().unwrap();
            docs.push(serde_json::json!({
                "kind": "ConfigMap",
                "data": {file: std::fs::read_to_string(format!("{dir}/{file}")).unwrap()},
            }));
            docs
        }
    };
    let kind = |k: &'static str| docs.iter().filter(move |d| d["kind"] == k);
    // The ConfigMap's config passes `flagtail check` with the Deployment's environment.
    let config_map = kind("ConfigMap").next().expect("a ConfigMap");
    let config_text = config_map["data"]["flagtail.yaml"].as_str().unwrap();
    let s = Setup::new();
    let path = s.path("flagtail.yaml");
    std::fs::write(&path, config_text).unwrap();
    let deployment = kind("Deployment").next().expect("a Deployment");
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    let ft = containers
        .iter()
        .find(|c| c["name"] == "flagtail")
        .expect("the flagtail sidecar");
    let env: Vec<(String, String)> = ft["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut all_env: Vec<(&str, &str)> = ENV.to_vec();
    all_env.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let (code, resolved, err) =
        run_cmd_env(&["check", "--config", path.to_str().unwrap()], &all_env);
    assert_eq!(code, 0, "{err}");
    // The probes point at the port the config (with the manifest's environment) listens on.
    let resolved: Value = serde_json::from_str(&resolved).unwrap();
    let listen = resolved["admin"]["listen"].as_str().unwrap();
    let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        listen.starts_with("0.0.0.0:"),
        "the kubelet probes the pod's address: {listen}"
    );
    let named = |name: &str| {
        ft["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
    };
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &ft[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        let probed = get["port"]
            .as_u64()
            .or_else(|| get["port"].as_str().and_then(named));
        assert_eq!(probed, Some(port), "{probe} probes the admin port");
    }
    let sc = &ft["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(ft["resources"]["limits"]["memory"].is_string());
    // The audit log is shared read-only; the state survives a container restart.
    let mounts = ft["volumeMounts"].as_array().unwrap();
    if let Some(log) = shared_log {
        assert!(
            mounts
                .iter()
                .any(|m| m["mountPath"] == log && m["readOnly"] == true)
        );
    }
    assert!(mounts.iter().any(|m| m["mountPath"] == "/var/lib/flagtail"));
    assert!(
        kind("PersistentVolumeClaim").next().is_some(),
        "{dir}: the state is on a PersistentVolumeClaim"
    );
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string("deploy/systemd/flagtail.service").unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    let s = Setup::new();
    let path = s.path("flagtail.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/flagtail", bin())).unwrap();
    match std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
    {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stderr).into_owned()
                + &String::from_utf8_lossy(&o.stdout);
            assert!(o.status.success(), "{text}");
            // Warnings about this machine (no systemd running) are not the unit's.
            assert!(!text.contains("flagtail.service:"), "{text}");
        }
        Err(e) => eprintln!("skipped: systemd-analyze is not available here ({e})"),
    }
}

/// `promtool ARGS` run in deploy/prometheus: whether it passed, and what it said.
fn promtool(promtool: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(promtool)
        .args(args)
        .current_dir("deploy/prometheus")
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests_and_the_prometheusrule_carries_them() {
    let rules = yaml_file("deploy/prometheus/flagtail-rules.yaml");
    let wrapped = yaml_file("deploy/kubernetes/flagtail-prometheusrule.yaml");
    assert_eq!(wrapped["kind"], "PrometheusRule");
    assert_eq!(
        wrapped["spec"]["groups"], rules["groups"],
        "the PrometheusRule has drifted from the rules file"
    );
    let alerts: Vec<&str> = rules["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    for want in [
        "FlagtailDown",
        "FlagtailAbsent",
        "FlagtailSinkDown",
        "FlagtailDeadLettersWaiting",
        "FlagtailSourceNotReading",
        "FlagtailSourceLagGrowing",
    ] {
        assert!(alerts.contains(&want), "{want} not in {alerts:?}");
    }
    let Some(bin) = tool(&["promtool"], "prometheus") else {
        return;
    };
    let (ok, said) = promtool(bin, &["check", "rules", "flagtail-rules.yaml"]);
    assert!(ok && said.contains("SUCCESS: 6 rules found"), "{said}");
    let (ok, said) = promtool(bin, &["test", "rules", "flagtail-rules.test.yaml"]);
    assert!(ok && said.contains("SUCCESS"), "{said}");
    // Each alert has a unit test that expects it to fire.
    let tests = std::fs::read_to_string("deploy/prometheus/flagtail-rules.test.yaml").unwrap();
    for alert in alerts {
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - "
            )),
            "no test fires {alert}"
        );
    }
}

#[test]
fn the_dashboard_is_grafana_json_whose_every_panel_queries_flagtail() {
    let text = std::fs::read_to_string("deploy/grafana/flagtail.json").unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dashboard["uid"], "flagtail");
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    for p in panels {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{p}");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            assert!(
                expr.contains("flagtail_") && expr.contains("instance=~\"$instance\""),
                "{expr}"
            );
        }
    }
    // Served by a real daemon: checked in tests/admin.rs, which scrapes one with every family.
    assert!(
        deployed_metric_names().len() >= 12,
        "{:?}",
        deployed_metric_names()
    );
}
