//! The OCI image as a cluster runs it: built by `scripts/build-image.sh` (`.ci/run` builds it
//! before the tests), loaded into podman and run with the Deployment's security context
//! (read-only root filesystem, uid 65532, every capability dropped, no privilege escalation)
//! against the test kube-apiserver and the emulator. It reconciles a resource, answers its
//! probes, and exits 0 on SIGTERM within the grace period.
//!
//! Containers run with podman on runc and vfs storage, on the host's network (crun fails on
//! this host's cgroups); podman's storage lives under target/tmp, its run root in a fresh short
//! directory under /tmp (podman refuses a run root longer than 50 characters, and a checkout's
//! target/ may lie deep), both removed after. Without the image or podman the test says so and
//! passes, except under CI (`CI` set), where it fails.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use iothub_dynreg::controller::resources::RegistrationMode;
use support::e2e::Harness;
use support::ports::unused_port;

const IMAGE: &str = "localhost/iothub-dynreg:0.1.0";
/// The Deployment's terminationGracePeriodSeconds.
const GRACE: Duration = Duration::from_secs(30);

/// podman with this test's storage, runtime and configuration.
struct Podman {
    /// Storage and configuration.
    state: PathBuf,
    /// The run root: short, whatever the checkout's path.
    run_root: PathBuf,
}

/// The longest run root podman takes.
const MAX_RUN_ROOT: usize = 50;

impl Podman {
    fn new() -> Option<Self> {
        let found = Command::new("podman").arg("--version").output().ok()?;
        found.status.success().then_some(())?;
        let state = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/tmp")
            .join(format!("podman-{}", std::process::id()));
        std::fs::create_dir_all(&state).unwrap();
        // The host's rlimits are not the container's to set.
        std::fs::write(
            state.join("containers.conf"),
            "[containers]\ndefault_ulimits = []\n",
        )
        .unwrap();
        let run_root = PathBuf::from(format!("/tmp/iothub-dynreg-podman-{}", std::process::id()));
        assert!(
            run_root.as_os_str().len() <= MAX_RUN_ROOT,
            "{}",
            run_root.display()
        );
        std::fs::create_dir_all(&run_root).unwrap();
        Some(Self { state, run_root })
    }

    /// `podman` with this test's storage, run root, runtime and configuration.
    fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command
            .env("CONTAINERS_CONF", self.state.join("containers.conf"))
            .args(["--runtime", "runc", "--storage-driver", "vfs", "--root"])
            .arg(self.state.join("root"))
            .arg("--runroot")
            .arg(&self.run_root);
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        let output = self.command().args(args).output().expect("run podman");
        assert!(
            output.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn text(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.run(args).stdout)
            .trim()
            .to_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.command().args(["rm", "--all", "--force"]).output();
        let _ = self.command().args(["system", "reset", "--force"]).output();
        let _ = std::fs::remove_dir_all(&self.state);
        let _ = std::fs::remove_dir_all(&self.run_root);
    }
}

fn image_archive() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/image/iothub-dynreg.oci.tar")
}

/// podman, and the image built: without podman (a program) the test is skipped; without the
/// image (which scripts/test.sh builds first) it fails.
fn prerequisites() -> Option<Podman> {
    let Some(podman) = Podman::new() else {
        let test = support::skip::current_test();
        support::skip::missing_program(&test, "podman (and runc)");
        return None;
    };
    let archive = image_archive();
    assert!(
        archive.exists(),
        "{} is not built: run scripts/build-image.sh (scripts/test.sh does)",
        archive.display()
    );
    Some(podman)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_hardened_reconciles_answers_its_probes_and_stops_on_sigterm() {
    let Some(podman) = prerequisites() else {
        return;
    };
    let Some(harness) = Harness::with_credentials(
        "products: [{productId: IMAGE00001, region: ap-guangzhou}]",
        |_| {},
    )
    .await
    else {
        return;
    };
    podman.run(&["load", "--quiet", "-i", path(&image_archive())]);
    let labels = podman.text(&["image", "inspect", "--format", "{{json .Labels}}", IMAGE]);
    let labels: serde_json::Value = serde_json::from_str(&labels).unwrap();
    for label in ["source", "version", "revision", "created"] {
        let key = format!("org.opencontainers.image.{label}");
        assert!(labels[&key].is_string(), "no {key}: {labels}");
    }
    assert_eq!(labels["org.opencontainers.image.version"], "0.1.0");
    // No shell, no package manager: the binary is the only program.
    let shell = podman
        .command()
        .args([
            "run",
            "--rm",
            "--entrypoint",
            "/bin/sh",
            IMAGE,
            "-c",
            "true",
        ])
        .output()
        .unwrap();
    assert!(!shell.status.success(), "the image has a shell");

    let (metrics, probes) = (unused_port().unwrap(), unused_port().unwrap());
    let kubeconfig = format!(
        "{}:/etc/iothub-dynreg/kubeconfig:ro",
        path(&harness.kubeconfig)
    );
    let endpoint = harness.emulator.endpoint();
    let (metrics_addr, health_addr) = (
        format!("--metrics-addr=127.0.0.1:{metrics}"),
        format!("--health-addr=127.0.0.1:{probes}"),
    );
    let container = podman.text(&[
        "run",
        "--detach",
        "--network=host",
        "--read-only",
        "--user=65532:65532",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "--volume",
        &kubeconfig,
        "--env=KUBECONFIG=/etc/iothub-dynreg/kubeconfig",
        IMAGE,
        "run",
        "--endpoint",
        &endpoint,
        "--insecure-loopback-endpoint",
        "--watch-namespace",
        &harness.namespace,
        &metrics_addr,
        &health_addr,
    ]);
    let logs = || podman.text(&["logs", &container]);

    harness
        .create_registration("boxed", "IMAGE00001", RegistrationMode::AutoCreate, 30)
        .await;
    let in_sync = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some((_, reason)) = harness.ready_reason("boxed").await
                && reason == "InSync"
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        in_sync.is_ok(),
        "not InSync in 60 s; the container's log:\n{}",
        logs()
    );
    assert_eq!(
        harness.cloud_product("IMAGE00001").await["registerLimit"],
        30
    );
    for probe in ["/healthz", "/readyz"] {
        let answer = reqwest::get(format!("http://127.0.0.1:{probes}{probe}"))
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{probe}");
    }
    let scraped = reqwest::get(format!("http://127.0.0.1:{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(scraped.contains("iothub_dynreg_reconciles_total"));

    // SIGTERM, as the kubelet stops a pod: in-flight work finishes, the process exits 0.
    let asked = Instant::now();
    podman.run(&["stop", "--time", &GRACE.as_secs().to_string(), &container]);
    let stopped = asked.elapsed();
    let code = podman.text(&["inspect", "--format", "{{.State.ExitCode}}", &container]);
    println!("stopped {stopped:?} after SIGTERM, exit code {code}");
    assert_eq!(code, "0", "the container's log:\n{}", logs());
    assert!(stopped < GRACE, "took {stopped:?}");
    let log = logs();
    assert!(
        !log.contains(support::e2e::SECRET_KEY),
        "the log holds the key"
    );
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}
