//! The shipped Grafana dashboard (`deploy/grafana/cairn.json`) and
//! Prometheus rules (`deploy/prometheus/alerts.yml`) only name metrics a
//! running server exports, and the rule file has the shape Prometheus
//! loads; plus the metric families of issue 6 with their labels.

use crate::helpers::{TestApp, spawn_app_with};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn deploy_file(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Metric names (`cairn_*`, `process_*`) a PromQL expression reads:
/// identifiers outside quoted label values.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut chars = expr.chars().peekable();
    let mut in_quote: Option<char> = None;
    let mut ident = String::new();
    let flush = |ident: &mut String, into: &mut BTreeSet<String>| {
        if ident.starts_with("cairn_") || ident.starts_with("process_") {
            into.insert(ident.clone());
        }
        ident.clear();
    };
    while let Some(c) = chars.next() {
        if let Some(q) = in_quote {
            if c == '\\' {
                chars.next();
            } else if c == q {
                in_quote = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            ident.push(c);
            continue;
        }
        flush(&mut ident, into);
        if c == '"' || c == '\'' || c == '`' {
            in_quote = Some(c);
        }
    }
    flush(&mut ident, into);
}

/// Every string under an `expr`, `query` or `definition` key, at any depth.
fn dashboard_queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_queries(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

#[derive(Debug, Default)]
struct Rule {
    alert: String,
    expr: String,
    for_: String,
    severity: String,
    summary: String,
}

/// A strict reader of the rule file's layout (two-space indents):
/// `groups:` → `- name:` + `rules:` → `- alert:` with `expr: |` (a block),
/// `for:`, `labels:` (`severity:`) and `annotations:` (`summary:`).
fn parse_rules(text: &str) -> Vec<(String, Vec<Rule>)> {
    let mut groups: Vec<(String, Vec<Rule>)> = Vec::new();
    let mut saw_groups = false;
    let mut section = "";
    let mut in_expr = false;
    for (n, raw) in text.lines().enumerate() {
        let n = n + 1;
        assert!(!raw.contains('\t'), "line {n}: tab in YAML");
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if in_expr {
            if indent >= 10 {
                let rule = groups.last_mut().and_then(|g| g.1.last_mut()).unwrap();
                rule.expr.push_str(trimmed);
                rule.expr.push('\n');
                continue;
            }
            in_expr = false;
        }
        let value = |key: &str| {
            trimmed
                .strip_prefix(key)
                .map(|v| v.trim().trim_matches('"'))
        };
        match indent {
            0 => {
                assert_eq!(trimmed, "groups:", "line {n}: the top level is `groups:`");
                saw_groups = true;
            }
            2 => {
                let name =
                    value("- name:").unwrap_or_else(|| panic!("line {n}: `- name:` expected"));
                assert!(!name.is_empty(), "line {n}: empty group name");
                groups.push((name.to_owned(), Vec::new()));
            }
            4 => assert_eq!(trimmed, "rules:", "line {n}: `rules:` expected"),
            6 => {
                let alert =
                    value("- alert:").unwrap_or_else(|| panic!("line {n}: `- alert:` expected"));
                let group = groups
                    .last_mut()
                    .unwrap_or_else(|| panic!("line {n}: rule outside a group"));
                group.1.push(Rule {
                    alert: alert.to_owned(),
                    ..Rule::default()
                });
                section = "";
            }
            8 => {
                let rule = groups
                    .last_mut()
                    .and_then(|g| g.1.last_mut())
                    .unwrap_or_else(|| panic!("line {n}: key outside a rule"));
                if let Some(v) = value("expr:") {
                    assert_eq!(v, "|", "line {n}: expressions are block scalars");
                    in_expr = true;
                } else if let Some(v) = value("for:") {
                    rule.for_ = v.to_owned();
                } else if trimmed == "labels:" || trimmed == "annotations:" {
                    section = if trimmed == "labels:" {
                        "labels"
                    } else {
                        "annotations"
                    };
                } else {
                    panic!("line {n}: unexpected rule key {trimmed:?}");
                }
            }
            10 => {
                let rule = groups.last_mut().and_then(|g| g.1.last_mut()).unwrap();
                match (section, trimmed.split_once(':')) {
                    ("labels", Some(("severity", v))) => rule.severity = v.trim().to_owned(),
                    ("annotations", Some(("summary", v))) => {
                        rule.summary = v.trim().trim_matches('"').to_owned()
                    }
                    ("labels" | "annotations", Some(_)) => {}
                    _ => panic!("line {n}: unexpected {trimmed:?}"),
                }
            }
            _ => panic!("line {n}: unexpected indentation {indent}"),
        }
    }
    assert!(saw_groups, "no `groups:`");
    groups
}

fn is_duration(s: &str) -> bool {
    let digits = s.trim_end_matches(['s', 'm', 'h', 'd']);
    !digits.is_empty() && digits.len() == s.len() - 1 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The sample names of a Prometheus text exposition.
fn exported(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// A server with a sink, one receiver and one event, its relay having
/// published; its `/metrics`.
async fn busy_app() -> (TestApp, String) {
    let app = spawn_app_with(|s| {
        s.sinks = vec![
            serde_json::from_value(json!({"name": "mem", "kind": "memory"}))
                .expect("a memory sink config"),
        ];
    })
    .await;
    let (status, body) = app
        .post(
            "/api/v1/receivers",
            &json!({"name": "r", "type": "deploy-test", "version": "1",
                    "description": "d", "schema": {}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let rid = body["data"].as_str().unwrap().to_owned();
    let (status, body) = app
        .post(
            "/api/v1/events",
            &json!({"name": "n", "version": "1", "release": "r", "platform_id": "p",
                    "package": "k", "description": "d", "payload": {}, "success": true,
                    "event_receiver_id": rid}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, text) = app.get_text("/metrics").await;
        assert_eq!(status, 200);
        if text.contains("cairn_outbox_lag_seconds{") && text.contains("cairn_sink_cursor{") {
            return (app, text);
        }
        assert!(
            Instant::now() < deadline,
            "the relay never published:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_name_is_exported() {
    let dashboard: Value =
        serde_json::from_str(&deploy_file("grafana/cairn.json")).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "cairn-overview");
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() > 10));
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    let mut named = BTreeSet::new();
    for q in &queries {
        metric_names(q, &mut named);
    }
    let from_dashboard = named.len();
    assert!(from_dashboard >= 15, "{named:?}");

    let groups = parse_rules(&deploy_file("prometheus/alerts.yml"));
    let mut alerts = BTreeSet::new();
    for (group, rules) in &groups {
        assert!(!rules.is_empty(), "group {group} has no rules");
        for r in rules {
            assert!(alerts.insert(r.alert.clone()), "alert {} twice", r.alert);
            assert!(
                r.alert.starts_with("Cairn") && r.alert.bytes().all(|b| b.is_ascii_alphanumeric()),
                "alert name {:?}",
                r.alert
            );
            assert!(!r.expr.trim().is_empty(), "{}: no expr", r.alert);
            assert!(is_duration(&r.for_), "{}: for {:?}", r.alert, r.for_);
            assert!(
                ["critical", "warning", "info"].contains(&r.severity.as_str()),
                "{}: severity {:?}",
                r.alert,
                r.severity
            );
            assert!(!r.summary.is_empty(), "{}: no summary", r.alert);
            let before = named.len();
            let mut mine = BTreeSet::new();
            metric_names(&r.expr, &mut mine);
            assert!(!mine.is_empty(), "{}: names no metric", r.alert);
            named.extend(mine);
            let _ = before;
        }
    }
    assert!(alerts.len() >= 10, "{alerts:?}");

    let (_app, scrape) = busy_app().await;
    let have = exported(&scrape);
    let missing: Vec<&String> = named.iter().filter(|n| !have.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "named in deploy/ but not exported: {missing:?}\nexported: {have:?}"
    );
}

#[test]
fn the_metric_name_scan_reads_promql() {
    let mut got = BTreeSet::new();
    metric_names(
        r#"histogram_quantile(0.99, sum by (le) (rate(cairn_x_bucket{route!~"cairn_not_me"}[5m]))) / process_y"#,
        &mut got,
    );
    assert_eq!(
        got.into_iter().collect::<Vec<_>>(),
        vec!["cairn_x_bucket".to_owned(), "process_y".to_owned()]
    );
}

/// The families of issue 6 exist on a fresh server with bounded labels:
/// auth failures by reason, ingest by receiver type and outcome, pool and
/// process gauges.
#[tokio::test]
async fn issue_6_metric_families_have_bounded_labels() {
    let (app, _) = busy_app().await;
    // An unknown key: one more invalid_credentials failure.
    let res = crate::helpers::new_client()
        .get(format!("{}/api/v1/events", app.address))
        .header("authorization", "Bearer not-a-key")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let (_, scrape) = app.get_text("/metrics").await;
    for reason in [
        "missing_credentials",
        "malformed_header",
        "invalid_credentials",
        "forbidden",
        "login_failed",
    ] {
        assert!(
            scrape.contains(&format!("cairn_auth_failures_total{{reason=\"{reason}\"}}")),
            "{reason}\n{scrape}"
        );
    }
    let invalid = scrape
        .lines()
        .find(|l| l.starts_with("cairn_auth_failures_total{reason=\"invalid_credentials\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(invalid >= 1.0, "{scrape}");
    // The bound on receiver types is per process, and this suite's other
    // apps create receivers of many types: ours has its own label unless
    // the bound was reached first (the bound itself is unit-tested).
    assert!(
        scrape.contains(
            "cairn_events_ingested_total{receiver_type=\"deploy-test\",outcome=\"accepted\"}"
        ) || scrape
            .contains("cairn_events_ingested_total{receiver_type=\"other\",outcome=\"accepted\"}"),
        "{scrape}"
    );
    let store = if crate::SUITE_STORE == "postgres" {
        "postgres"
    } else {
        "sqlite"
    };
    for line in [
        format!("cairn_db_pool_connections{{store=\"{store}\",state=\"idle\"}}"),
        format!("cairn_db_pool_connections{{store=\"{store}\",state=\"in_use\"}}"),
        format!("cairn_db_pool_max_connections{{store=\"{store}\"}}"),
        format!("cairn_store_write_queue_depth{{store=\"{store}\"}}"),
        "process_resident_memory_bytes ".to_owned(),
        "process_cpu_seconds_total ".to_owned(),
        "process_open_fds ".to_owned(),
        "process_threads ".to_owned(),
        "process_start_time_seconds ".to_owned(),
    ] {
        assert!(scrape.contains(&line), "{line}\n{scrape}");
    }
    // No raw path or id is ever a label value.
    for l in scrape.lines().filter(|l| l.starts_with("cairn_http_")) {
        assert!(!l.contains("/api/v1/events/01"), "raw path in {l}");
    }
}
