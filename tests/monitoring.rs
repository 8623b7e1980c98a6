//! What a platform team installs to run the controller on call: the alerts
//! (`charts/iothub-dynreg/files/alerts.yaml`) pass `promtool check rules` and their unit tests
//! (`tests/monitoring/alerts-test.yaml`: each fires on its failure, none on a healthy fleet),
//! each links its runbook page of the documentation site, every query of the Grafana dashboard
//! (`charts/iothub-dynreg/files/dashboard.json`) parses, and the controller's real `/metrics`
//! passes `promtool check metrics` and holds every metric the alerts and the dashboard name.
//!
//! promtool comes from Debian's `prometheus` package (`.ci/run` installs it); without it the tests
//! say so and pass, except under CI.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use iothub_dynreg::controller::resources::RegistrationMode;
use support::control_plane::read_yaml;
use support::e2e::Harness;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Whether promtool runs here.
fn promtool_present() -> bool {
    match Command::new("promtool").arg("--version").output() {
        Ok(output) if output.status.success() => true,
        _ => {
            let missing = "promtool (Debian's prometheus package)";
            support::skip::missing_program(&support::skip::current_test(), missing);
            false
        }
    }
}

/// promtool with `args` (and `input` on its standard input): its output, or why it failed.
fn promtool(args: &[&str], input: Option<&str>) -> Result<String, String> {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(ROOT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.unwrap_or("").as_bytes()).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// The PromQL of every panel of the dashboard, its variables given values.
fn dashboard_queries() -> Vec<String> {
    let path = Path::new(ROOT).join("charts/iothub-dynreg/files/dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            queries.push(expr.replace("$__rate_interval", "5m").replace("$job", ".*"));
        }
    }
    queries
}

/// The iothub_dynreg_* metric names an expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("iothub_dynreg_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

fn alert_names() -> Vec<String> {
    let rules = read_yaml(&Path::new(ROOT).join("charts/iothub-dynreg/files/alerts.yaml")).unwrap();
    rules[0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap())
        .filter_map(|rule| rule["alert"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn the_alerts_pass_promtool_and_their_unit_tests() {
    if !promtool_present() {
        return;
    }
    let checked = promtool(
        &["check", "rules", "charts/iothub-dynreg/files/alerts.yaml"],
        None,
    );
    let checked = checked.unwrap_or_else(|e| panic!("promtool check rules: {e}"));
    assert!(checked.contains("SUCCESS: 8 rules found"), "{checked}");
    let tested = promtool(
        &["test", "rules", "tests/monitoring/alerts-test.yaml"],
        None,
    );
    let tested = tested.unwrap_or_else(|e| panic!("promtool test rules: {e}"));
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert is tested both ways: firing on its failure, silent on the healthy fleet.
    let tests =
        std::fs::read_to_string(Path::new(ROOT).join("tests/monitoring/alerts-test.yaml")).unwrap();
    for alert in alert_names() {
        let mentions = tests.matches(&format!("alertname: {alert}")).count();
        assert!(mentions >= 2, "{alert} is tested {mentions} times");
    }
}

#[test]
fn every_query_of_the_dashboard_parses() {
    if !promtool_present() {
        return;
    }
    let queries = dashboard_queries();
    assert!(queries.len() >= 14, "{} queries", queries.len());
    // promtool parses PromQL where it checks rules: each query as a recording rule.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (index, query) in queries.iter().enumerate() {
        let query = serde_json::to_string(query).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:query_{index}\n        expr: {query}\n"
        ));
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let file = dir.join(format!("dashboard-rules-{}.yaml", std::process::id()));
    std::fs::write(&file, rules).unwrap();
    let checked = promtool(&["check", "rules", file.to_str().unwrap()], None);
    let _ = std::fs::remove_file(&file);
    let checked = checked.unwrap_or_else(|e| panic!("a dashboard query does not parse: {e}"));
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{checked}"
    );
}

/// Every alert's `runbook_url` is its page of the documentation site: under mkdocs.yml's
/// `site_url`, a page that exists in the navigation and says what to do.
#[test]
fn every_alert_links_its_runbook_page() {
    let mkdocs = std::fs::read_to_string(Path::new(ROOT).join("mkdocs.yml")).unwrap();
    let site_url = mkdocs
        .lines()
        .find_map(|line| line.strip_prefix("site_url: "))
        .expect("mkdocs.yml has a site_url")
        .trim()
        .to_owned();
    let rules = read_yaml(&Path::new(ROOT).join("charts/iothub-dynreg/files/alerts.yaml")).unwrap();
    let alerts: Vec<&serde_json::Value> = rules[0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap())
        .filter(|rule| rule["alert"].is_string())
        .collect();
    assert_eq!(alerts.len(), 8);
    for rule in alerts {
        let alert = rule["alert"].as_str().unwrap();
        let url = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{alert} has no runbook_url"));
        let page = url
            .strip_prefix(&site_url)
            .unwrap_or_else(|| panic!("{alert}: {url} is not under the site's {site_url}"));
        assert_eq!(page, format!("operations/alerts/{alert}/"), "{alert}");
        let source = format!("operations/alerts/{alert}.md");
        let text = std::fs::read_to_string(Path::new(ROOT).join("docs").join(&source))
            .unwrap_or_else(|e| panic!("{alert}: docs/{source}: {e}"));
        assert!(text.starts_with(&format!("# {alert}\n")), "{source}");
        assert!(
            text.contains("**Do**"),
            "the runbook of {alert} says what to do"
        );
        assert!(
            mkdocs.contains(&source),
            "{source} is not in the site's navigation"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controllers_metrics_pass_promtool_check_metrics() {
    if !promtool_present() {
        return;
    }
    let products =
        "products:\n  - {productId: METRICS001, region: ap-guangzhou, registerType: 0}\n";
    let Some(harness) = Harness::with_credentials(products, |_| {}).await else {
        return;
    };
    let controller = harness.spawn_controller(&[]);
    harness
        .create_registration("metered", "METRICS001", RegistrationMode::AutoCreate, 10)
        .await;
    harness
        .wait_all_ready(1, Duration::from_secs(30), &controller)
        .await;
    let (status, metrics) = controller.ops("/metrics").await.expect("/metrics answers");
    assert_eq!(status, 200);
    for name in [
        "iothub_dynreg_build_info{",
        "iothub_dynreg_resources{reason=\"InSync\"} 1",
        "iothub_dynreg_kube_requests_total{verb=\"patch\",code=\"200\"}",
        "iothub_dynreg_cloud_calls_total{service=\"iotcloud\",action=\"UpdateProductDynamicRegister\",code=\"Success\"} 1",
    ] {
        assert!(metrics.contains(name), "no {name} in\n{metrics}");
    }
    let linted = promtool(&["check", "metrics"], Some(&metrics));
    let linted = linted.unwrap_or_else(|problems| panic!("promtool check metrics: {problems}"));
    assert!(linted.trim().is_empty(), "promtool check metrics: {linted}");

    // Every metric the alerts and the dashboard read is one the controller exports (a
    // histogram's series by its _bucket, _sum and _count).
    let families: Vec<(&str, &str)> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.split_once(' '))
        .collect();
    let exported = |name: &str| {
        families.iter().any(|(family, kind)| {
            *family == name
                || (*kind == "histogram"
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| name.strip_suffix(suffix) == Some(family)))
        })
    };
    let alerts =
        std::fs::read_to_string(Path::new(ROOT).join("charts/iothub-dynreg/files/alerts.yaml"))
            .unwrap();
    let read: Vec<String> = dashboard_queries()
        .iter()
        .chain(std::iter::once(&alerts))
        .flat_map(|text| metric_names(text))
        .collect();
    assert!(read.len() > 20);
    for name in read {
        assert!(exported(&name), "{name} is read but not exported");
    }
    harness.assert_no_secrets_logged(&controller).await;
}
