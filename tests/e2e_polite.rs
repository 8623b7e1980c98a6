//! A polite Kubernetes client, on the real API server with Priority and Fairness on: the
//! controller never sends faster than `--kube-api-qps` allows (counted from the audit log), and
//! when APF turns its requests away (429) it retries them after the server's `Retry-After`
//! and every verdict still lands in the status.
//!
//! Its own test binary: the second test gives a ServiceAccount of its own a FlowSchema, and
//! nothing else of the shared control plane should meet it.

mod support;

use std::time::Duration;

use iothub_dynreg::controller::resources::RegistrationMode;
use iothub_dynreg::emulator::EmulatorConfig;
use support::control_plane::AuditedRequest;
use support::e2e::{ControllerProcess, Harness};

/// `count` products the cloud holds with registration off, for resources that turn it on.
fn products(prefix: &str, count: usize) -> String {
    let mut yaml = String::from("products:\n");
    for index in 0..count {
        yaml.push_str(&format!(
            "  - {{productId: {prefix}{index:05}, region: ap-guangzhou, registerType: 0}}\n"
        ));
    }
    yaml
}

async fn create_resources(harness: &Harness, prefix: &str, count: usize) {
    for index in 0..count {
        let name = format!("r{index}");
        let product = format!("{prefix}{index:05}");
        harness
            .create_registration(&name, &product, RegistrationMode::AutoCreate, 10)
            .await;
    }
}

/// The most requests the API server received within any one second.
fn busiest_second(requests: &[AuditedRequest]) -> usize {
    let mut times: Vec<_> = requests.iter().map(|r| r.received).collect();
    times.sort();
    let second = jiff::SignedDuration::from_secs(1);
    (0..times.len())
        .map(|first| {
            times[first..]
                .iter()
                .take_while(|&&t| t.duration_since(times[first]) < second)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// The paced requests: not the watches (one long request each, never paced) nor the Lease.
fn paced(requests: Vec<AuditedRequest>) -> Vec<AuditedRequest> {
    requests
        .into_iter()
        .filter(|r| r.verb != "watch" && r.resource != "leases")
        .collect()
}

async fn metric_sum(controller: &ControllerProcess, prefix: &str) -> f64 {
    let (_, body) = controller.ops("/metrics").await.expect("/metrics answers");
    body.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_never_outrun_the_client_side_rate() {
    const COUNT: usize = 20;
    let Some(harness) = Harness::with_credentials(&products("PACE", COUNT), |_| {}).await else {
        return;
    };
    create_resources(&harness, "PACE", COUNT).await;
    let controller = harness.spawn_controller(&["--kube-api-qps", "4", "--kube-api-burst", "4"]);
    harness
        .wait_all_ready(COUNT, Duration::from_secs(60), &controller)
        .await;
    let requests = paced(harness.controller_requests());
    let busiest = busiest_second(&requests);
    println!(
        "{} requests while converging {COUNT} resources; busiest second: {busiest}",
        requests.len()
    );
    // A burst of 4, then 4 a second: at most 8 in any second (one more for the network's
    // jitter between the sending and the server's clock).
    assert!(busiest <= 9, "{busiest} requests within one second");
    let waited = metric_sum(&controller, "iothub_dynreg_kube_client_wait_seconds_sum").await;
    assert!(waited > 0.0, "no request waited for the limit");
    harness.assert_no_secrets_logged(&controller).await;
}

/// Priority and Fairness objects that give the ServiceAccount `account` of `namespace` a
/// priority level of its own, one seat wide, that rejects what it cannot seat at once.
fn tight_flow_control(namespace: &str, account: &str) -> String {
    format!(
        r#"apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: PriorityLevelConfiguration
metadata: {{name: iothub-dynreg-tight}}
spec:
  type: Limited
  limited:
    nominalConcurrencyShares: 1
    lendablePercent: 0
    borrowingLimitPercent: 0
    limitResponse: {{type: Reject}}
---
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata: {{name: iothub-dynreg-tight}}
spec:
  matchingPrecedence: 500
  priorityLevelConfiguration: {{name: iothub-dynreg-tight}}
  distinguisherMethod: {{type: ByUser}}
  rules:
    - subjects:
        - kind: ServiceAccount
          serviceAccount: {{name: {account}, namespace: {namespace}}}
      resourceRules:
        - verbs: ["*"]
          apiGroups: ["*"]
          resources: ["*"]
          namespaces: ["*"]
          clusterScope: true
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_turned_away_by_priority_and_fairness_are_retried_and_no_verdict_is_lost() {
    const COUNT: usize = 100;
    // A cloud that answers as fast as asked: the start's burst then meets the API server at once.
    let fast = |config: &mut EmulatorConfig| config.rate_limit_per_second = 10_000;
    let Some(harness) = Harness::with_credentials(&products("BUSY", COUNT), fast).await else {
        return;
    };
    let namespace = harness.namespace.clone();
    let account = "squeezed";
    harness.kubectl(&["create", "serviceaccount", account]);
    let binding = format!("{namespace}-{account}");
    let subject = format!("--serviceaccount={namespace}:{account}");
    harness.kubectl(&[
        "create",
        "clusterrolebinding",
        &binding,
        "--clusterrole=iothub-dynreg",
        &subject,
    ]);
    let flow_control = harness.dir.join("flow-control.yaml");
    std::fs::write(&flow_control, tight_flow_control(&namespace, account)).unwrap();
    let flow_control = flow_control.to_string_lossy().into_owned();
    harness.kubectl(&["apply", "-f", &flow_control]);
    let token = harness
        .kubectl(&["create", "token", account, "--duration=1h"])
        .unwrap();
    let user = format!("system:serviceaccount:{namespace}:{account}");
    let kubeconfig = harness.dir.join("squeezed.kubeconfig");
    harness
        .plane
        .write_kubeconfig(&kubeconfig, &user, token.trim());

    create_resources(&harness, "BUSY", COUNT).await;
    // The client's defaults: the start's burst meets a priority level of one seat.
    let unlimited =
        "DescribeProduct=10000,DescribeProducts=10000,UpdateProductDynamicRegister=10000";
    let started = std::time::Instant::now();
    let controller = harness.spawn_controller_as(&kubeconfig, &["--rate-limit", unlimited]);
    harness
        .wait_all_ready(COUNT, Duration::from_secs(120), &controller)
        .await;
    let converged = started.elapsed();

    let requests = harness.plane.requests_of(&user);
    let rejected = requests.iter().filter(|r| r.code == 429).count();
    let counted = metric_sum(&controller, "iothub_dynreg_kube_requests_total{verb=").await;
    let counted_429 = {
        let (_, body) = controller.ops("/metrics").await.unwrap();
        body.lines()
            .filter(|line| {
                line.starts_with("iothub_dynreg_kube_requests_total{")
                    && line.contains("code=\"429\"")
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    println!(
        "all Ready after {converged:.1?}; {} requests audited, {rejected} answered 429; the controller counted {counted} attempts, {counted_429} of them 429",
        requests.len()
    );
    assert!(
        rejected > 0,
        "APF turned nothing away: the test proves nothing"
    );
    assert!(counted_429 > 0.0, "the controller's metric shows no 429");

    // Every update's verdict reached the status: each resource names the request that set it,
    // and the cloud was asked once per product (no verdict lost and made again).
    let updates = harness
        .cloud_calls("UpdateProductDynamicRegister", "Success")
        .await;
    assert_eq!(updates, COUNT as u64);
    for resource in harness
        .registrations()
        .list(&Default::default())
        .await
        .unwrap()
    {
        let status = resource.status.expect("a status");
        assert!(
            status
                .last_request_id
                .as_deref()
                .is_some_and(|id| !id.is_empty()),
            "{:?} lost the request id of its update",
            resource.metadata.name
        );
    }
    harness.assert_no_secrets_logged(&controller).await;
    harness.kubectl(&["delete", "-f", &flow_control]);
    harness.kubectl(&["delete", "clusterrolebinding", &binding]);
}
