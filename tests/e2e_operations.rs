//! End-to-end operations: two replicas under leader election, failover, graceful shutdown,
//! readiness, metrics, and the RBAC rules of deploy/ against every call the controller made.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use iothub_dynreg::controller::resources::ClusterCredentials;
use iothub_dynreg::controller::resources::{
    ClusterCredentialsReference, DeletionPolicy, ManagementPolicy, RegistrationMode,
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::e2e::{ControllerProcess, Harness, SECRET_KEY, registration};

/// The harness adds the Lease's namespace (the controller's, per deploy/) and a name per test.
const ELECTION: [&str; 4] = [
    "--leader-election",
    "--leader-election-lease-duration",
    "3s",
    "--resync-interval",
];

fn leads(controller: &ControllerProcess) -> usize {
    controller
        .stderr()
        .matches("leading: starting to reconcile")
        .count()
}

async fn metric(controller: &ControllerProcess, line_start: &str) -> Option<f64> {
    let (_, body) = controller.ops("/metrics").await?;
    body.lines()
        .find(|line| line.starts_with(line_start))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_reconciles_the_other_takes_over_and_sigterm_releases_the_lease() {
    let Some(harness) = Harness::with_credentials(
        "generate: {count: 20, region: ap-guangzhou, prefix: LEAD}",
        |_| {},
    )
    .await
    else {
        return;
    };
    let mut args: Vec<&str> = ELECTION.to_vec();
    args.push("10m");
    let first = harness.spawn_controller(&args);
    harness
        .wait_for(
            "a leader",
            Duration::from_secs(20),
            Some(&first),
            || async { (leads(&first) == 1).then_some(()) },
        )
        .await;
    let second = harness.spawn_controller(&args);
    harness
        .wait_for(
            "the second replica to stand by",
            Duration::from_secs(20),
            Some(&second),
            || async {
                match second.ops("/readyz").await {
                    Some((200, body)) if body.contains("standing by") => Some(()),
                    _ => None,
                }
            },
        )
        .await;
    for index in 0..10 {
        harness
            .create_registration(
                &format!("a{index}"),
                &format!("LEAD{index:06}"),
                RegistrationMode::AutoCreate,
                9,
            )
            .await;
    }
    harness
        .wait_all_ready(10, Duration::from_secs(30), &first)
        .await;
    assert_eq!(leads(&second), 0, "the stand-by reconciled");
    assert!(
        !second.stderr().contains("reconciled reason"),
        "the stand-by reconciled"
    );
    assert_eq!(
        harness
            .cloud_calls("UpdateProductDynamicRegister", "Success")
            .await,
        10
    );
    let (status, body) = first.ops("/readyz").await.unwrap();
    assert_eq!(status, 200, "{body}\n{}", first.stderr());
    assert_probes_answer_while_scrapers_hold_the_metrics_endpoint(&first).await;
    assert_eq!(metric(&first, "iothub_dynreg_leader ").await, Some(1.0));
    assert_eq!(metric(&second, "iothub_dynreg_leader ").await, Some(0.0));
    let (_, sample) = first.ops("/metrics").await.unwrap();
    println!("--- /metrics of the leader after 10 resources ---\n{sample}--- end ---");
    assert_eq!(
        metric(&first, "iothub_dynreg_resources{reason=\"InSync\"}").await,
        Some(10.0)
    );
    assert!(sample.contains("iothub_dynreg_cloud_calls_total{service=\"iotcloud\",action=\"UpdateProductDynamicRegister\",code=\"Success\"} 10"));
    assert!(!sample.contains(SECRET_KEY));

    // The leader dies without releasing: the stand-by takes over once the Lease expires.
    first.signal(libc::SIGKILL);
    let killed = Instant::now();
    harness
        .wait_for(
            "the stand-by to take over",
            Duration::from_secs(15),
            Some(&second),
            || async { (leads(&second) == 1).then_some(()) },
        )
        .await;
    let takeover = killed.elapsed();
    println!("failover after SIGKILL of the leader: {takeover:?} (lease 3 s)");
    assert!(
        takeover <= Duration::from_secs(3 + 1 + 2),
        "takeover took {takeover:?}"
    );
    drop(first);
    for index in 10..20 {
        harness
            .create_registration(
                &format!("a{index}"),
                &format!("LEAD{index:06}"),
                RegistrationMode::AutoCreate,
                9,
            )
            .await;
    }
    harness
        .wait_all_ready(20, Duration::from_secs(30), &second)
        .await;
    assert_eq!(
        harness
            .cloud_calls("UpdateProductDynamicRegister", "Success")
            .await,
        20,
        "no duplicate updates"
    );

    // SIGTERM: finishes, releases the Lease, exits 0.
    let mut second = second;
    let stopping = Instant::now();
    second.signal(libc::SIGTERM);
    let status = second
        .wait_exit(Duration::from_secs(10))
        .expect("running 10 s after SIGTERM");
    println!("SIGTERM → {status} in {:?}", stopping.elapsed());
    assert!(status.success());
    let (lease_namespace, lease_name) = harness.lease();
    let leases: Api<Lease> = Api::namespaced(harness.client.clone(), lease_namespace);
    let lease = leases.get(lease_name).await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity,
        None,
        "the Lease was not released"
    );
    assert!(second.stderr().contains("released the Lease"));
    harness.assert_no_secrets_logged(&second).await;
}

/// (group, resource, verb) triples a set of RBAC rules allows.
fn allowed(rules: &[Value]) -> BTreeSet<(String, String, String)> {
    let mut triples = BTreeSet::new();
    for rule in rules {
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    triples.insert((
                        group.as_str().unwrap().to_owned(),
                        resource.as_str().unwrap().to_owned(),
                        verb.as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
    }
    triples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_rules_cover_every_call_and_grant_nothing_unused() {
    let Some(harness) = Harness::with_credentials(
        "products: [{productId: RBAC000001, region: ap-guangzhou}]",
        |_| {},
    )
    .await
    else {
        return;
    };
    let mut args: Vec<&str> = ELECTION.to_vec();
    args.push("2s");
    let mut controller = harness.spawn_controller(&args);
    let mut resource = registration("rbac", "RBAC000001", RegistrationMode::AutoCreate, 5);
    resource.spec.deletion_policy = DeletionPolicy::Disable;
    harness.create(resource).await;
    harness
        .wait_reason("rbac", "InSync", Duration::from_secs(30), &controller)
        .await;
    harness
        .registrations()
        .patch(
            "rbac",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"registerLimit": 6, "secretName": "rbac-renamed"}})),
        )
        .await
        .unwrap();
    harness
        .wait_reason("rbac", "InSync", Duration::from_secs(20), &controller)
        .await;
    // The Secret under the former name is deleted.
    harness
        .wait_for(
            "the renamed Secret's predecessor to go",
            Duration::from_secs(20),
            Some(&controller),
            || async {
                harness
                    .secrets()
                    .get_opt("rbac-product-secret")
                    .await
                    .unwrap()
                    .is_none()
                    .then_some(())
            },
        )
        .await;
    // Credentials declared by the platform team: read from their Secret, their status written.
    let declared: ClusterCredentials = serde_json::from_value(json!({
        "apiVersion": "iothub.dynreg.io/v1alpha1",
        "kind": "ClusterCredentials",
        "metadata": {"name": format!("rbac-{}", harness.namespace)},
        "spec": {
            "secretRef": {"namespace": harness.namespace, "name": "tencent-credentials"},
            "namespaces": [harness.namespace],
        }
    }))
    .unwrap();
    let cluster_credentials: Api<ClusterCredentials> = Api::all(harness.client.clone());
    cluster_credentials
        .create(&PostParams::default(), &declared)
        .await
        .unwrap();
    let mut by_cluster = registration(
        "rbac-cluster",
        "RBAC000001",
        RegistrationMode::AutoCreate,
        6,
    );
    by_cluster.spec.credentials_secret_ref = None;
    by_cluster.spec.management_policy = ManagementPolicy::ObserveOnly;
    by_cluster.spec.cluster_credentials_ref = Some(ClusterCredentialsReference {
        name: declared.name_any(),
    });
    harness.create(by_cluster).await;
    harness
        .wait_reason(
            "rbac-cluster",
            "Observed",
            Duration::from_secs(20),
            &controller,
        )
        .await;
    harness
        .wait_for(
            "the ClusterCredentials status",
            Duration::from_secs(10),
            Some(&controller),
            || async {
                let found = cluster_credentials.get(&declared.name_any()).await.ok()?;
                let ready = found
                    .status?
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == "Ready")?;
                (ready.status == "True").then_some(())
            },
        )
        .await;
    harness
        .registrations()
        .delete("rbac", &DeleteParams::default())
        .await
        .unwrap();
    harness
        .wait_for(
            "deletion",
            Duration::from_secs(20),
            Some(&controller),
            || async {
                harness
                    .registrations()
                    .get_opt("rbac")
                    .await
                    .unwrap()
                    .is_none()
                    .then_some(())
            },
        )
        .await;
    controller.signal(libc::SIGTERM);
    controller
        .wait_exit(Duration::from_secs(10))
        .expect("exit after SIGTERM");

    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac.yaml")).unwrap();
    let documents: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|document| {
            serde_json::to_value(
                <serde_yaml::Value as serde::Deserialize>::deserialize(document).unwrap(),
            )
            .unwrap()
        })
        .collect();
    let rules_of = |kind: &str| -> Vec<Value> {
        documents
            .iter()
            .filter(|d| d["kind"] == kind)
            .flat_map(|d| d["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let cluster_wide = allowed(&rules_of("ClusterRole"));
    let in_own_namespace = allowed(&rules_of("Role"));

    // The API server enforced deploy/'s rules on every call (the scenario above converged);
    // its audit log shows what was called and that nothing was refused.
    let requests = harness.controller_requests();
    let refused: Vec<_> = requests.iter().filter(|r| r.code == 403).collect();
    assert!(refused.is_empty(), "refused by RBAC: {refused:?}");
    let mut used = BTreeSet::new();
    for request in requests {
        let triple = (request.group, request.resource, request.verb);
        assert!(
            cluster_wide.contains(&triple) || in_own_namespace.contains(&triple),
            "allowed by no rule of deploy/rbac.yaml: {triple:?}"
        );
        used.insert(triple);
    }
    println!("calls made: {used:?}");
    // Least privilege: every rule is used, except one that no request shows.
    let not_exercised: BTreeSet<(String, String, String)> = [
        // Checked by the OwnerReferencesPermissionEnforcement admission plugin (enabled in the
        // test's API server) when a Secret with blockOwnerDeletion is created; not a call.
        (
            "iothub.dynreg.io",
            "dynamicregistrations/finalizers",
            "update",
        ),
    ]
    .into_iter()
    .map(|(g, r, v)| (g.to_owned(), r.to_owned(), v.to_owned()))
    .collect();
    for granted in cluster_wide.union(&in_own_namespace) {
        assert!(
            used.contains(granted) || not_exercised.contains(granted),
            "granted but never used: {granted:?}"
        );
    }
}

/// Clients that open every connection the metrics endpoint serves (64) and send nothing: the
/// kubelet's probes, on their own address, still answer at once.
async fn assert_probes_answer_while_scrapers_hold_the_metrics_endpoint(
    controller: &support::e2e::ControllerProcess,
) {
    let metrics_addr = controller.ops_url.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..80 {
        held.push(tokio::net::TcpStream::connect(&metrics_addr).await.unwrap());
    }
    let started = Instant::now();
    for path in ["/healthz", "/readyz"] {
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            reqwest::get(format!("{}{path}", controller.probes_url)),
        )
        .await
        .unwrap_or_else(|_| panic!("{path} waited behind the scrapers"))
        .unwrap();
        assert_eq!(answer.status(), 200, "{path}");
    }
    println!(
        "probes answered in {:?} with the metrics endpoint held",
        started.elapsed()
    );
    drop(held);
}

/// A Lease held by another replica, renewed at `renewed` by that replica's clock.
fn foreign_lease(name: &str, holder: &str, renewed: k8s_openapi::jiff::Timestamp) -> Lease {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 3,
            "acquireTime": MicroTime(renewed),
            "renewTime": MicroTime(renewed),
        }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_follows_what_the_stand_by_saw_not_the_holders_clock() {
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    use kube::api::PostParams;
    let Some(harness) = Harness::with_credentials(
        "generate: {count: 1, region: ap-guangzhou, prefix: SKEW}",
        |_| {},
    )
    .await
    else {
        return;
    };
    let (lease_namespace, lease_name) = harness.lease();
    let leases: Api<Lease> = Api::namespaced(harness.client.clone(), lease_namespace);
    let hour = SignedDuration::from_hours(1);

    // A holder whose clock runs an hour ahead died: its renewTime lies in the future. A stand-by
    // that trusted it would wait an hour; it must take over a lease duration after it last saw
    // the record change.
    let ahead = format!("{lease_name}-ahead");
    let lease = foreign_lease(&ahead, "replica-on-a-fast-clock", Timestamp::now() + hour);
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut args: Vec<&str> = ELECTION.to_vec();
    args.extend(["10m", "--leader-election-lease-name", &ahead]);
    let started = Instant::now();
    let first = harness.spawn_controller(&args);
    harness
        .wait_for(
            "the Lease of a dead holder with a fast clock to be taken",
            Duration::from_secs(10),
            Some(&first),
            || async { (leads(&first) == 1).then_some(()) },
        )
        .await;
    let takeover = started.elapsed();
    println!("took the Lease of a dead holder whose clock is an hour ahead after {takeover:?}");
    assert!(
        takeover >= Duration::from_secs(3),
        "took it before a lease duration: {takeover:?}"
    );

    // A live holder whose clock runs an hour behind keeps renewing: its renewTime lies an hour
    // in the past at every renewal. A stand-by that trusted it would take over at once.
    let behind = format!("{lease_name}-behind");
    let lease = foreign_lease(&behind, "replica-on-a-slow-clock", Timestamp::now() - hour);
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let renewing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let renewer = tokio::spawn({
        let (leases, behind, renewing) = (leases.clone(), behind.clone(), renewing.clone());
        async move {
            while renewing.load(std::sync::atomic::Ordering::SeqCst) {
                let renewed = Timestamp::now() - hour;
                let patch = json!({"spec": {"renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(renewed)}});
                let _ = leases
                    .patch(&behind, &PatchParams::default(), &Patch::Merge(patch))
                    .await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    let mut args: Vec<&str> = ELECTION.to_vec();
    args.extend(["10m", "--leader-election-lease-name", &behind]);
    let second = harness.spawn_controller(&args);
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        leads(&second),
        0,
        "took the Lease of a live holder with a slow clock"
    );
    renewing.store(false, std::sync::atomic::Ordering::SeqCst);
    renewer.await.unwrap();
    let stopped = Instant::now();
    harness
        .wait_for(
            "the Lease to be taken once its holder stopped renewing",
            Duration::from_secs(10),
            Some(&second),
            || async { (leads(&second) == 1).then_some(()) },
        )
        .await;
    println!(
        "took the Lease of a holder with a slow clock {:?} after it stopped renewing",
        stopped.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_backlog_keeps_the_lease_until_the_last_call() {
    let Some(harness) = Harness::with_credentials(
        "generate: {count: 100, region: ap-guangzhou, prefix: DRAIN}",
        |config| config.rate_limit_per_second = 20,
    )
    .await
    else {
        return;
    };
    let mut args: Vec<&str> = ELECTION.to_vec();
    args.push("10m");
    let mut first = harness.spawn_controller(&args);
    harness
        .wait_for(
            "a leader",
            Duration::from_secs(20),
            Some(&first),
            || async { (leads(&first) == 1).then_some(()) },
        )
        .await;
    let second = harness.spawn_controller(&args);
    let creations = (0..100).map(|index| {
        let harness = &harness;
        async move {
            harness
                .create_registration(
                    &format!("d{index:03}"),
                    &format!("DRAIN{index:05}"),
                    RegistrationMode::AutoCreate,
                    7,
                )
                .await
        }
    });
    futures::future::join_all(creations).await;
    // A backlog of about 5 s at 20 updates/s: stop the leader a second into it.
    harness
        .wait_for(
            "the backlog to start",
            Duration::from_secs(30),
            Some(&first),
            || async { (harness.ready_names().await.len() >= 10).then_some(()) },
        )
        .await;
    first.signal(libc::SIGTERM);
    let status = first
        .wait_exit(Duration::from_secs(30))
        .expect("exit after SIGTERM");
    assert!(status.success());
    harness
        .wait_all_ready(100, Duration::from_secs(60), &second)
        .await;
    let stats = harness.emulator_get("stats").await;
    println!(
        "handover during a backlog: peaks {} RequestLimitExceeded {}",
        stats["peakCallsPerSecondByAction"], stats["requestLimitExceeded"]
    );
    assert_eq!(
        stats["requestLimitExceeded"], 0,
        "two leaders called the cloud"
    );
    let peak = stats["peakCallsPerSecondByAction"]["UpdateProductDynamicRegister"]
        .as_u64()
        .unwrap();
    assert!(peak <= 20, "{peak} updates in one second");
    let log = first.stderr();
    assert!(log.contains("released the Lease"));
    assert!(
        !log.contains("lost the Lease"),
        "the leader lost the Lease while draining"
    );
}

/// A `Disable` deletion through a total cloud outage and a leader failover: held with a clear
/// status and few calls while the cloud is down, whoever leads; once it is back, the stand-by
/// that took over disables the product with exactly one successful update, and the resource
/// goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disable_deletion_survives_a_total_outage_and_a_failover() {
    let products = "products: [{productId: OUTAGE0001, region: ap-guangzhou}]";
    let Some(harness) = Harness::with_credentials(products, |_| {}).await else {
        return;
    };
    let mut args = ELECTION.to_vec();
    args.push("30s");
    let first = harness.spawn_controller(&args);
    harness
        .wait_for(
            "a leader",
            Duration::from_secs(15),
            Some(&first),
            || async { (leads(&first) == 1).then_some(()) },
        )
        .await;
    let second = harness.spawn_controller(&args);
    let mut disable = registration("outage", "OUTAGE0001", RegistrationMode::AutoCreate, 10);
    disable.spec.deletion_policy = DeletionPolicy::Disable;
    harness.create(disable).await;
    harness
        .wait_reason("outage", "InSync", Duration::from_secs(20), &first)
        .await;

    // The cloud answers nothing but 503.
    harness
        .emulator_send(reqwest::Method::PUT, "faults", json!({"http503Rate": 1.0}))
        .await;
    harness
        .emulator_send(reqwest::Method::POST, "stats/reset", json!({}))
        .await;
    harness
        .registrations()
        .delete("outage", &DeleteParams::default())
        .await
        .unwrap();
    let message = harness
        .wait_for(
            "the deletion to say it waits for the cloud",
            Duration::from_secs(20),
            Some(&first),
            || async {
                let resource = harness.registrations().get("outage").await.ok()?;
                let ready = resource.condition("Ready")?;
                let reconciling = resource.condition("Reconciling")?;
                (ready.reason == "Deleting" && reconciling.status == "True")
                    .then(|| ready.message.clone())
            },
        )
        .await;
    assert!(
        message.contains("HTTP 503") || message.contains("503"),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    let calls_before_failover = harness.emulator_get("stats").await["totalCalls"]
        .as_u64()
        .unwrap();

    // The leader dies; the stand-by takes over while the cloud is still down.
    let mut first = first;
    first.signal(libc::SIGKILL);
    let _ = first.wait_exit(Duration::from_secs(5));
    harness
        .wait_for(
            "the stand-by to take over",
            Duration::from_secs(15),
            Some(&second),
            || async { (leads(&second) == 1).then_some(()) },
        )
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let calls_in_outage = harness.emulator_get("stats").await["totalCalls"]
        .as_u64()
        .unwrap();
    let resource = harness.registrations().get("outage").await.unwrap();
    assert_eq!(resource.condition("Ready").unwrap().reason, "Deleting");
    assert!(
        resource
            .condition("Stalled")
            .is_none_or(|c| c.status != "True"),
        "an outage stalled the deletion"
    );

    // The cloud is back: one successful update disables the product, and the resource goes.
    harness
        .emulator_send(reqwest::Method::PUT, "faults", json!({}))
        .await;
    harness
        .emulator_send(reqwest::Method::POST, "stats/reset", json!({}))
        .await;
    let restored = Instant::now();
    harness
        .wait_for(
            "the resource to go",
            Duration::from_secs(60),
            Some(&second),
            || async {
                harness
                    .registrations()
                    .get_opt("outage")
                    .await
                    .ok()?
                    .is_none()
                    .then_some(())
            },
        )
        .await;
    println!(
        "outage: {calls_before_failover} calls in ~10 s before the failover, {} in ~8 s after; \
         deleted {:.1} s after the cloud came back",
        calls_in_outage - calls_before_failover,
        restored.elapsed().as_secs_f64()
    );
    assert_eq!(harness.cloud_product("OUTAGE0001").await["registerType"], 0);
    assert_eq!(
        harness
            .cloud_calls("UpdateProductDynamicRegister", "Success")
            .await,
        1,
        "exactly one successful update disables the product"
    );
    assert!(
        calls_in_outage <= 30,
        "{calls_in_outage} calls into a dead cloud in ~20 s: not backing off"
    );
    harness.assert_no_secrets_logged(&second).await;
}
