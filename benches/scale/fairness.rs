//! Fairness across accounts: team A's bulk import and team B's few resources in one controller,
//! each team with its own cloud account and quota, at the cloud's real limit of 20 requests/s.
//! Three cases in one run: A alone, B alone, A and B together (everything created before the
//! controller starts). Together, B must converge at its own rate, not behind A's backlog.

use std::time::{Duration, Instant};

use iothub_dynreg::controller::resources::{
    DynamicRegistration, DynamicRegistrationSpec, RegistrationMode,
};
use iothub_dynreg::emulator::{EmulatorConfig, RunningEmulator, Seed};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use super::{ApiKind, Cluster, is_ready, start_controller, stats, track};

/// The cloud's own limit, per account and action.
pub const LIMIT: u32 = 20;

const TEAMS: [Team; 2] = [
    Team {
        name: "team-a",
        secret_id: "AKIDfairnessTEAMA001",
        secret_key: "fairness-team-a-key",
        prefix: "FA",
    },
    Team {
        name: "team-b",
        secret_id: "AKIDfairnessTEAMB002",
        secret_key: "fairness-team-b-key",
        prefix: "FB",
    },
];

struct Team {
    name: &'static str,
    secret_id: &'static str,
    secret_key: &'static str,
    prefix: &'static str,
}

/// What one case measured.
pub struct Case {
    pub label: &'static str,
    pub counts: [usize; 2],
    /// When each team's resources were all Ready, from the controller's start.
    pub ready: [Option<Duration>; 2],
    /// Each team's peak Update calls in one second.
    pub peak_updates: [u64; 2],
    pub throttled: u64,
}

/// A alone, B alone, then both.
pub async fn run(kind: ApiKind, a: usize, b: usize) -> Vec<Case> {
    vec![
        case(kind, "A alone", [a, 0]).await,
        case(kind, "B alone", [0, b]).await,
        case(kind, "A + B together", [a, b]).await,
    ]
}

fn seed(counts: [usize; 2]) -> Seed {
    let mut yaml = String::from("accounts:\n");
    for team in &TEAMS {
        yaml.push_str(&format!(
            "- {{secretId: {}, secretKey: {}, account: {}}}\n",
            team.secret_id, team.secret_key, team.name
        ));
    }
    yaml.push_str("products:\n");
    for (team, &count) in TEAMS.iter().zip(&counts) {
        for index in 0..count {
            yaml.push_str(&format!(
                "- {{productId: {}, region: ap-guangzhou, account: {}}}\n",
                product_id(team, index),
                team.name
            ));
        }
    }
    Seed::from_yaml(&yaml).unwrap()
}

fn product_id(team: &Team, index: usize) -> String {
    format!("{}{index:08}", team.prefix)
}

fn resource(team: &Team, index: usize) -> DynamicRegistration {
    let spec = DynamicRegistrationSpec::new(
        product_id(team, index),
        "ap-guangzhou",
        RegistrationMode::AutoCreate,
        1000,
    );
    DynamicRegistration::new(
        &format!("{}-{index:05}", team.name),
        spec.with_credentials(team.name),
    )
}

async fn case(kind: ApiKind, label: &'static str, counts: [usize; 2]) -> Case {
    let namespace = format!("fair-{}-{}", counts[0], counts[1]);
    let cluster = Cluster::start(kind, &namespace).await;
    let mut config = EmulatorConfig::new(seed(counts));
    config.rate_limit_per_second = LIMIT;
    let emulator = RunningEmulator::start(config).await.unwrap();
    let dir = std::env::temp_dir().join(format!(
        "iothub-dynreg-fairness-{}-{namespace}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = cluster.write_kubeconfig(&dir);
    let client = cluster.client().await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &namespace);
    let registrations: Api<DynamicRegistration> = Api::namespaced(client, &namespace);
    for team in &TEAMS {
        let credentials = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": team.name},
            "stringData": {"secretId": team.secret_id, "secretKey": team.secret_key}
        }))
        .unwrap();
        secrets
            .create(&PostParams::default(), &credentials)
            .await
            .unwrap();
    }
    // A's resources first, then B's: B's arrive behind A's whole backlog.
    let all: Vec<DynamicRegistration> = TEAMS
        .iter()
        .zip(counts)
        .flat_map(|(team, count)| (0..count).map(move |index| resource(team, index)))
        .collect();
    for chunk in all.chunks(100) {
        let creations = chunk.iter().map(|resource| {
            let registrations = registrations.clone();
            async move {
                registrations
                    .create(&PostParams::default(), resource)
                    .await
                    .unwrap()
            }
        });
        futures::future::join_all(creations).await;
    }
    let store = track(registrations);

    eprintln!("fairness, {label}: A {}, B {}…", counts[0], counts[1]);
    let started = Instant::now();
    let (mut controller, _) = start_controller(&kubeconfig, &emulator.endpoint(), &namespace, &[]);
    let mut ready = [None; 2];
    while ready
        .iter()
        .zip(counts)
        .any(|(at, count)| at.is_none() && count > 0)
    {
        let resources = store.state();
        for (slot, (team, count)) in ready.iter_mut().zip(TEAMS.iter().zip(counts)) {
            let done = resources
                .iter()
                .filter(|r| r.name_any().starts_with(team.name) && is_ready(r))
                .count();
            if slot.is_none() && count > 0 && done == count {
                *slot = Some(started.elapsed());
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(1200),
            "fairness, {label}: not converged after 20 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = controller.kill();
    let _ = controller.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let stats = stats(&emulator).await;
    Case {
        label,
        counts,
        ready,
        peak_updates: TEAMS.map(|team| peak_updates(&stats, team.secret_id)),
        throttled: stats["requestLimitExceeded"].as_u64().unwrap_or(0),
    }
}

fn peak_updates(stats: &Value, secret_id: &str) -> u64 {
    stats["peaks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|peak| {
            peak["secretId"] == secret_id && peak["action"] == "UpdateProductDynamicRegister"
        })
        .filter_map(|peak| peak["peakCallsPerSecond"].as_u64())
        .max()
        .unwrap_or(0)
}

/// The table, each number against its ideal.
pub fn print(cases: &[Case]) {
    println!();
    println!(
        "Fairness: two accounts, {LIMIT} requests/s each (the cloud's limit), everything created before the controller starts"
    );
    println!(
        "| case | A | B | A all Ready | A ideal A/{LIMIT} | A ratio (target ≤ 1.06) | B all Ready | B ideal B/{LIMIT} | B bound 1.2 × B/{LIMIT} + 2 s | peak Update/s A, B (limit {LIMIT}) | RequestLimitExceeded |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for case in cases {
        let ideal = |count: usize| Duration::from_secs_f64(count as f64 / f64::from(LIMIT));
        let seconds = |at: Option<Duration>| {
            at.map_or("-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
        };
        let [a, b] = case.counts;
        let a_ratio = case.ready[0].map_or("-".to_owned(), |at| {
            format!("{:.3}", at.as_secs_f64() / ideal(a).as_secs_f64())
        });
        let b_bound = (b > 0).then(|| ideal(b).mul_f64(1.2) + Duration::from_secs(2));
        println!(
            "| {} | {a} | {b} | {} | {} | {a_ratio} | {} | {} | {} | {}, {} | {} |",
            case.label,
            seconds(case.ready[0]),
            seconds((a > 0).then(|| ideal(a))),
            seconds(case.ready[1]),
            seconds((b > 0).then(|| ideal(b))),
            seconds(b_bound),
            case.peak_updates[0],
            case.peak_updates[1],
            case.throttled,
        );
    }
}
