//! The real control plane of the tests: it starts, serves the CRD, and its processes die with
//! the test binary, whether the binary ends, a test panics, or the binary is killed.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::control_plane::ControlPlane;
use support::ports;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_and_serves_the_crd() {
    let Some(plane) = ControlPlane::shared() else {
        return;
    };
    let client = plane.admin_client().await;
    let version = client.apiserver_version().await.unwrap();
    println!("kube-apiserver {}.{}", version.major, version.minor);
    let crds: kube::Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = kube::Api::all(client);
    crds.get("dynamicregistrations.iothub.dynreg.io")
        .await
        .unwrap();
}

/// Ports taken from the ephemeral range can be taken by any outgoing connection between the
/// test learning one and the process binding it (CI once saw kube-apiserver fail so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_come_from_outside_the_ephemeral_range_and_are_given_once() {
    let below = ports::ephemeral_start();
    let given: Vec<u16> = (0..50).map(|_| ports::unused_port().unwrap()).collect();
    let distinct: std::collections::HashSet<_> = given.iter().collect();
    assert_eq!(distinct.len(), given.len(), "a port given twice: {given:?}");
    assert!(given.iter().all(|port| *port < below), "{given:?}");
    let Some(plane) = ControlPlane::shared() else {
        return;
    };
    assert!(
        plane.api_port < below,
        "kube-apiserver on {}",
        plane.api_port
    );
}

/// The uid of an object of the flow-control API.
async fn uid_of(admin: &kube::Client, kind: &str, name: &str) -> String {
    let path = format!("/apis/flowcontrol.apiserver.k8s.io/v1/{kind}/{name}");
    let object: serde_json::Value = admin
        .request(http::Request::get(path).body(Vec::new()).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{kind}/{name}: {e}"));
    object["metadata"]["uid"].as_str().unwrap().to_owned()
}

/// API Priority and Fairness is on, as in real clusters, and the controller's requests are
/// classified where the defaults put a ServiceAccount: FlowSchema `service-accounts`, priority
/// level `workload-low` (the API server names both in headers of every answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_lands_in_the_default_flow_schema_for_service_accounts() {
    let Some(plane) = ControlPlane::shared() else {
        return;
    };
    let admin = plane.admin_client().await;
    let schema = uid_of(&admin, "flowschemas", "service-accounts").await;
    let level = uid_of(&admin, "prioritylevelconfigurations", "workload-low").await;

    let controller = plane.controller_client().await;
    let request =
        http::Request::get("/apis/iothub.dynreg.io/v1alpha1/dynamicregistrations?limit=1")
            .body(kube::client::Body::empty())
            .unwrap();
    let answer = controller.send(request).await.unwrap();
    assert_eq!(answer.status(), 200);
    let header = |name: &str| {
        let value = answer.headers().get(name);
        value.map(|value| value.to_str().unwrap().to_owned())
    };
    assert_eq!(header("X-Kubernetes-PF-FlowSchema-UID"), Some(schema));
    assert_eq!(header("X-Kubernetes-PF-PriorityLevel-UID"), Some(level));
}

const CHILD_MODE: &str = "E2E_CONTROL_PLANE_CHILD";

/// Run by `processes_die_with_the_test_binary` in a child test binary: starts a plane, prints
/// its process ids, then panics or waits to be killed.
#[test]
#[ignore = "run by processes_die_with_the_test_binary"]
fn child_holding_a_control_plane() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let Some(plane) = ControlPlane::shared() else {
        println!("skipped");
        return;
    };
    let pids: Vec<String> = plane.pids().iter().map(u32::to_string).collect();
    println!("pids {}", pids.join(" "));
    match mode.as_str() {
        "panic" => panic!("a test panics while the plane runs"),
        _ => std::thread::sleep(Duration::from_secs(600)),
    }
}

fn alive(pid: u32) -> bool {
    // The killed child's processes were re-parented to this process (a subreaper): reap them.
    // SAFETY: waitpid on a pid that is not our child fails harmlessly with ECHILD.
    unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG) };
    // A zombie is dead for our purpose: it holds no port and no memory.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

/// Starts this test binary as a child in `mode`; returns the plane's pids and the child.
fn child(mode: &str) -> Option<(Vec<u32>, std::process::Child)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_holding_a_control_plane",
            "--nocapture",
        ])
        .env(CHILD_MODE, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if line == "skipped" {
            let _ = child.wait();
            return None;
        }
        if let Some(list) = line.strip_prefix("pids ") {
            let pids = list.split(' ').map(|pid| pid.parse().unwrap()).collect();
            return Some((pids, child));
        }
    }
    let status = child.wait();
    panic!("the child test binary printed no pids ({status:?})");
}

fn assert_all_gone(pids: &[u32], how: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&pid| alive(pid)) {
        assert!(
            Instant::now() < deadline,
            "{how}: processes {pids:?} still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("{how}: etcd, kube-apiserver and kube-controller-manager {pids:?} gone");
}

#[test]
fn processes_die_with_the_test_binary() {
    // Orphans of the child binary come to this process, not to an init that may never reap.
    // SAFETY: prctl with these arguments only sets a flag on this process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    // A test panics: the binary ends with a failure, and takes its processes along.
    let Some((pids, mut panicking)) = child("panic") else {
        return;
    };
    assert_eq!(pids.len(), 3);
    assert!(pids.iter().all(|&pid| alive(pid)));
    let status = panicking.wait().unwrap();
    assert!(!status.success());
    assert_all_gone(&pids, "after a panic");

    // The binary is killed outright: no exit handler runs, the kernel's parent-death signal acts.
    let (pids, mut killed) = child("sleep").unwrap();
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert_all_gone(&pids, "after SIGKILL");
}
