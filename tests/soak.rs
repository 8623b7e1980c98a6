//! Chaos soak: a seeded random history of operations and faults against the real controller,
//! the real API server and the emulator, with invariants checked all along and after a quiet
//! period. A violation prints the seed and the history; the same seed replays the same sequence
//! of operations and faults (how many fit in the duration depends on the clock).
//!
//! `cargo test --test soak` runs three seeds of 30 s each (CI); for a long run:
//! `cargo test --test soak -- --duration 30m --seed 7`.
//!
//! The controller runs as two shards split by label (`--watch-label-selector`), sharing one
//! key at half the cloud's limit each: the unlabelled shard with two replicas under leader
//! election, `shard-2` with one; every replica watches the whole cluster. Resources live in
//! the harness's namespace and in team namespaces made and deleted along the way; some use the
//! credentials Secret of their namespace, some a ClusterCredentials whose web identity token
//! STS exchanges for credentials that last a minute.
//!
//! Operations (`operations.rs`): create, change (type, limit), delete resources; suspend and
//! resume; switch `managementPolicy`; rename `secretName`, also to a Secret a person owns;
//! change `secretTemplate`, `deletionPolicy` and `secretRetention`; ask for a reconcile; move a
//! resource to the other shard; console edits of products; a person
//! editing or deleting a published Secret; the credentials Secret rotated to the account's
//! other key; the web identity token rotated; team namespaces made and deleted with their
//! resources.
//! Faults (`faults.rs`): cloud errors (InternalError, 503, dropped connections, answers lost
//! after the call was made, as in a timeout) and slow answers
//! for a few seconds; throttling bursts (`RequestLimitExceeded` answered whatever the rate); the
//! credentials Secret given a wrong key or deleted for a few seconds, then restored; the
//! ClusterCredentials deleted and applied again; STS refusing the web identity token for a few
//! seconds; the leader of a shard SIGKILLed or SIGTERMed (and a
//! replica started again); kube-apiserver restarted; etcd compacted; the API server frozen
//! (SIGSTOP) for a few seconds, as a network stall.
//! Invariants (`invariants.rs`), besides convergence: the cloud's limit per second, no
//! `RequestLimitExceeded` beyond those injected, no temporary credentials used after they
//! expired, no write to a product only observed or suspended, a person's Secrets never changed,
//! SIGTERM exits 0, no secret logged, replica memory under a bound; once faults stop, every
//! resource converged, every product of a resource deleted with `Disable` disabled, every
//! Secret of one deleted with `Retain` kept (and owned by nobody), no secret in any Event or
//! status; at the end every namespace deleted, the run's own too, finishes deleting.

mod support;

#[path = "soak/faults.rs"]
mod faults;
#[path = "soak/invariants.rs"]
mod invariants;
#[path = "soak/operations.rs"]
mod operations;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use iothub_dynreg::controller::resources::{ClusterCredentials, RegistrationMode};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use support::e2e::{ControllerProcess, Harness, SECRET_ID, SECRET_KEY};

use invariants::Violation;

/// Products in the emulator; each live resource manages one of its own (no conflicts).
const PRODUCTS: usize = 48;
/// The cloud's limit per (SecretId, action), as the emulator enforces it; each shard takes half.
const LIMIT: u64 = 20;
/// After the faults stop: how long every resource may take to converge, and every namespace
/// deleted along the way to go.
const CONVERGENCE_BOUND: Duration = Duration::from_secs(60);
/// How long the run's namespaces may take to go once deleted at its end. Longer: the namespace
/// controller retries a namespace whose content is still going with a growing backoff, so it
/// may look again well after our finalizers came off (up to 35 s in short runs).
const NAMESPACES_GONE_BOUND: Duration = Duration::from_secs(120);
/// The most resident memory a replica may hold (it holds about 45 MiB for this fleet).
const MEMORY_BOUND_KIB: u64 = 160 * 1024;
/// Secrets a person makes at most (then resources name those again).
const PERSON_SECRETS: usize = 12;
/// Team namespaces live at once at most.
const TEAMS: usize = 3;
/// The credentials Secret of every namespace.
const CREDENTIALS: &str = "tencent-credentials";
/// The label of the second shard; resources without it belong to the first.
const SHARD_KEY: &str = "sharding.iothub.dynreg.io/key";
/// The label of every namespace of a run; the ClusterCredentials grants them.
const RUN_LABEL: &str = "soak.iothub.dynreg.io/run";
/// The CAM role of the web identity, and the provider vouching for its two tokens.
const ROLE: &str = "qcs::cam::uin/100000000001:roleName/soak";
const PROVIDER: &str = "tke-oidc-soak";
const TOKENS: [&str; 2] = ["eyJ.soak-token-one.sig", "eyJ.soak-token-two.sig"];
/// The two keys of the cloud account: the credentials Secret is rotated from one to the other.
const KEYS: [(&str, &str); 2] = [
    (SECRET_ID, SECRET_KEY),
    ("AKIDsoakROTATED00002", "soak-ROTATED-key-never-logged-7c2e"),
];
/// How long STS's credentials last (two hours by default): renewed every half minute.
const TEMPORARY_CREDENTIALS_SECONDS: i64 = 60;

struct Options {
    duration: Duration,
    seeds: Vec<u64>,
}

fn options() -> Options {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        let at = arguments.iter().position(|a| a == flag)?;
        arguments.get(at + 1).cloned()
    };
    let duration = value("--duration").map_or(Duration::from_secs(30), |text| {
        let (number, unit) = text.split_at(text.trim_end_matches(char::is_alphabetic).len());
        let number: u64 = number.parse().expect("--duration: a number and s, m or h");
        Duration::from_secs(
            number
                * match unit {
                    "m" => 60,
                    "h" => 3600,
                    _ => 1,
                },
        )
    });
    let seeds = match value("--seed") {
        Some(seed) => vec![seed.parse().expect("--seed: a number")],
        None => vec![1, 2, 3],
    };
    Options { duration, seeds }
}

/// What the test believes a live resource declares.
#[derive(Clone, Debug)]
struct Declared {
    namespace: String,
    product: String,
    mode: RegistrationMode,
    limit: i64,
    observe_only: bool,
    suspended: bool,
    /// Observe-only or suspended since its creation, never managed: its product is never written.
    never_managed: bool,
    /// Its secretName names a person's Secret: it must say SecretConflict and leave it alone.
    secret_taken: bool,
    /// It uses the ClusterCredentials (web identity), not its namespace's credentials Secret.
    web_identity: bool,
    /// Labelled for the second shard.
    second_shard: bool,
    /// Which of [`operations::TEMPLATES`] shapes its Secret (`None`: no template).
    template: Option<usize>,
    /// `deletionPolicy: Disable`.
    disable_on_delete: bool,
    /// `secretRetention: Retain`.
    retain_secret: bool,
}

/// One of the two shards the controller runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shard {
    /// Resources without the shard label: two replicas.
    Main,
    /// Resources labelled `shard-2`: one replica.
    Second,
}

impl Shard {
    fn selector(self) -> String {
        match self {
            Shard::Main => format!("--watch-label-selector=!{SHARD_KEY}"),
            Shard::Second => format!("--watch-label-selector={SHARD_KEY}=shard-2"),
        }
    }
}

struct Replica {
    shard: Shard,
    process: ControllerProcess,
    /// What its metrics said at the last check.
    last_seen: Option<invariants::Sample>,
}

/// A resource deleted and perhaps not gone yet.
struct Going {
    namespace: String,
    name: String,
    product: String,
    /// Its deletion switches registration off: once it is gone, the product is disabled.
    disables: bool,
}

/// How a credentials Secret is broken.
#[derive(Clone, Copy, Debug)]
enum CredentialsOutage {
    WrongKey,
    Deleted,
}

/// A credentials Secret broken now: how, in which namespace, until when.
struct BrokenCredentials {
    outage: CredentialsOutage,
    namespace: String,
    back: Instant,
}

struct Soak {
    harness: Harness,
    rng: StdRng,
    history: Vec<String>,
    live: BTreeMap<String, Declared>,
    deleted: Vec<String>,
    /// Products no resource has named yet: only these can show that an observe-only resource
    /// never wrote (a former resource's write may still land on a product given up).
    fresh_products: Vec<String>,
    /// Products given up by a resource that is gone.
    free_products: Vec<String>,
    /// Resources deleted, until they are gone: their products go to no other resource before
    /// (two claimants of one product would be a conflict, which the soak does not study).
    going: Vec<Going>,
    next_name: usize,
    replicas: Vec<Replica>,
    /// Logs of replicas that were stopped, for the secret check at the end.
    stopped_logs: Vec<String>,
    faults_until: Option<Instant>,
    /// A credentials Secret is broken, until it is restored.
    credentials_outage: Option<BrokenCredentials>,
    /// The web identity token file holds a token STS refuses, until then.
    token_refused_until: Option<Instant>,
    /// Which of [`TOKENS`] the token file holds when not refused.
    token: usize,
    /// Which of [`KEYS`] the harness namespace's credentials Secret holds when not broken.
    key: usize,
    /// The ClusterCredentials is deleted until then.
    cluster_credentials_back_at: Option<Instant>,
    /// `RequestLimitExceeded` answers scripted into the emulator: the only ones allowed.
    throttles_injected: u64,
    /// Secrets a person made, with the value they hold: never changed by the controller.
    person_secrets: BTreeMap<String, String>,
    /// Team namespaces live now.
    teams: Vec<String>,
    next_team: usize,
    /// Namespaces deleted: each must finish deleting.
    deleted_namespaces: Vec<String>,
    /// Secrets (namespace, name) of resources deleted with `secretRetention: Retain`: they must
    /// stay, with no owner, as long as their namespace.
    retained: Vec<(String, String)>,
    /// The most resident memory seen of any replica, KiB.
    peak_rss_kib: u64,
    counts: BTreeMap<&'static str, usize>,
    /// The kind of the last operation or fault noted.
    last_kind: Option<&'static str>,
    /// Time spent in steps of each kind, and in the checks after them.
    time_in: BTreeMap<&'static str, Duration>,
    checks: usize,
}

fn product_id(index: usize) -> String {
    format!("SOAK{index:06}")
}

fn emulator_seed() -> String {
    let mut yaml = String::from("accounts:\n");
    for (id, key) in KEYS {
        yaml.push_str(&format!("  - {{secretId: {id}, secretKey: {key}}}\n"));
    }
    yaml.push_str("products:\n");
    for index in 0..PRODUCTS {
        let id = product_id(index);
        yaml.push_str(&format!(
            "  - {{productId: {id}, region: ap-guangzhou, registerType: 0}}\n"
        ));
    }
    let [one, two] = TOKENS;
    yaml.push_str(&format!(
        "roles:\n  - {{roleArn: '{ROLE}', providerId: {PROVIDER}, tokens: ['{one}', '{two}']}}\n"
    ));
    yaml
}

impl Soak {
    async fn start(seed: u64) -> Option<Self> {
        let harness = Harness::start_seeded(&emulator_seed(), |config| {
            config.rate_limit_per_second = LIMIT as u32;
            config.temporary_credentials_lifetime_seconds = Some(TEMPORARY_CREDENTIALS_SECONDS);
        })
        .await?;
        harness.create_credentials(CREDENTIALS, SECRET_KEY).await;
        let mut soak = Self {
            harness,
            rng: StdRng::seed_from_u64(seed),
            history: Vec::new(),
            live: BTreeMap::new(),
            deleted: Vec::new(),
            fresh_products: (0..PRODUCTS).map(product_id).collect(),
            free_products: Vec::new(),
            going: Vec::new(),
            next_name: 0,
            replicas: Vec::new(),
            stopped_logs: Vec::new(),
            faults_until: None,
            credentials_outage: None,
            token_refused_until: None,
            token: 0,
            key: 0,
            cluster_credentials_back_at: None,
            throttles_injected: 0,
            person_secrets: BTreeMap::new(),
            teams: Vec::new(),
            next_team: 0,
            deleted_namespaces: Vec::new(),
            retained: Vec::new(),
            peak_rss_kib: 0,
            counts: BTreeMap::new(),
            last_kind: None,
            time_in: BTreeMap::new(),
            checks: 0,
        };
        soak.label_namespace().await;
        soak.write_token(TOKENS[0]);
        soak.declare_cluster_credentials().await;
        for shard in [Shard::Main, Shard::Main, Shard::Second] {
            let replica = soak.spawn_replica(shard);
            soak.replicas.push(replica);
        }
        Some(soak)
    }

    /// Marks the harness's namespace as one of this run's, for the ClusterCredentials.
    async fn label_namespace(&self) {
        let main = &self.harness.namespace;
        let labels = json!({"metadata": {"labels": {RUN_LABEL: main}}});
        Api::<Namespace>::all(self.harness.client.clone())
            .patch(main, &PatchParams::default(), &Patch::Merge(labels))
            .await
            .unwrap();
    }

    fn cluster_credentials_name(&self) -> String {
        format!("{}-web", self.harness.namespace)
    }

    fn token_file(&self) -> PathBuf {
        self.harness.dir.join("web-identity-token")
    }

    /// Replaces the token file at once, as the kubelet does (never half written).
    fn write_token(&self, token: &str) {
        let file = self.token_file();
        let next = file.with_extension("next");
        std::fs::write(&next, token).unwrap();
        std::fs::rename(&next, &file).unwrap();
    }

    /// The platform team's ClusterCredentials: TKE's web identity, granted to this run's
    /// namespaces by label.
    async fn declare_cluster_credentials(&self) {
        let name = self.cluster_credentials_name();
        let object = json!({
            "apiVersion": "iothub.dynreg.io/v1alpha1",
            "kind": "ClusterCredentials",
            "metadata": {"name": name},
            "spec": {
                "webIdentity": {
                    "roleArn": ROLE,
                    "providerId": PROVIDER,
                    "region": "ap-guangzhou",
                    "tokenFile": self.token_file().display().to_string(),
                },
                "namespaceSelector": {"matchLabels": {RUN_LABEL: self.harness.namespace}},
            },
        });
        Api::<ClusterCredentials>::all(self.harness.client.clone())
            .patch(
                &name,
                &PatchParams::apply("platform-team").force(),
                &Patch::Apply(&object),
            )
            .await
            .unwrap();
    }

    fn spawn_replica(&self, shard: Shard) -> Replica {
        let selector = shard.selector();
        let half = LIMIT / 2;
        let rate_limit = format!(
            "--rate-limit=DescribeProduct={half},DescribeProducts={half},UpdateProductDynamicRegister={half}"
        );
        let process = self.harness.spawn_controller_cluster_wide(&[
            &selector,
            &rate_limit,
            "--leader-election",
            "--leader-election-lease-duration",
            "3s",
            "--resync-interval",
            "5s",
            "--observe-interval",
            "1s",
            "--stalled-retry-interval",
            "5s",
        ]);
        Replica {
            shard,
            process,
            last_seen: None,
        }
    }

    fn registrations_in(
        &self,
        namespace: &str,
    ) -> Api<iothub_dynreg::controller::resources::DynamicRegistration> {
        Api::namespaced(self.harness.client.clone(), namespace)
    }

    fn secrets_in(&self, namespace: &str) -> Api<Secret> {
        Api::namespaced(self.harness.client.clone(), namespace)
    }

    /// Gives `namespace` the credentials Secret with this key: made if missing, else its key
    /// replaced.
    async fn put_credentials(&self, namespace: &str, (secret_id, secret_key): (&str, &str)) {
        let secrets = self.secrets_in(namespace);
        let key = json!({"stringData": {"secretId": secret_id, "secretKey": secret_key}});
        let patched = secrets
            .patch(CREDENTIALS, &PatchParams::default(), &Patch::Merge(&key))
            .await;
        if patched.is_err() {
            let mut secret = key;
            secret["metadata"] = json!({"name": CREDENTIALS, "namespace": namespace});
            let secret: Secret = serde_json::from_value(secret).unwrap();
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .unwrap_or_else(|e| panic!("credentials Secret in {namespace}: {e}"));
        }
    }

    fn note(&mut self, kind: &'static str, what: String) {
        *self.counts.entry(kind).or_default() += 1;
        self.last_kind = Some(kind);
        self.history.push(what);
    }

    /// One operation or fault, drawn at random (per mille).
    async fn step(&mut self) {
        let roll = self.rng.random_range(0..1000);
        let names: Vec<String> = self.live.keys().cloned().collect();
        let some_name =
            (!names.is_empty()).then(|| names[self.rng.random_range(0..names.len())].clone());
        match (roll, some_name) {
            (0..200, _) => self.create().await,
            (200..330, Some(name)) => self.change(&name).await,
            (330..390, Some(name)) => self.toggle_suspend(&name).await,
            (390..450, Some(name)) => self.toggle_observe_only(&name).await,
            (450..490, Some(name)) => self.rename_secret(&name).await,
            (490..540, Some(name)) => self.request_reconcile(&name).await,
            (540..620, Some(name)) => self.delete(&name).await,
            (620..680, _) => self.console_edit().await,
            (680..705, Some(name)) => self.edit_published_secret(&name).await,
            (705..730, Some(name)) => self.delete_published_secret(&name).await,
            (730..740, Some(name)) => self.take_persons_secret(&name).await,
            (740..760, Some(name)) => self.move_to_other_shard(&name).await,
            (760..770, Some(name)) => self.change_template(&name).await,
            (770..780, Some(name)) => self.toggle_deletion_policy(&name).await,
            (780..790, Some(name)) => self.toggle_secret_retention(&name).await,
            (790..800, _) => self.rotate_token(),
            (800..805, _) => self.rotate_key().await,
            (805..815, _) => self.create_team_namespace().await,
            (815..821, _) => self.delete_team_namespace().await,
            // Faults: the slow ones (a restart, a stall, a replica's exit) are the rarest, so
            // that a long run still makes several operations a second.
            (821..846, _) => self.cloud_faults().await,
            (846..866, _) => self.throttling_burst().await,
            (866..876, _) => self.break_credentials(CredentialsOutage::WrongKey).await,
            // Often skipped: only a Secret no deletion needs may go.
            (876..891, _) => self.break_credentials(CredentialsOutage::Deleted).await,
            (891..903, _) => self.refuse_token(),
            (903..907, _) => self.delete_cluster_credentials().await,
            (907..911, _) => self.stop_leader(libc::SIGKILL).await,
            (911..915, _) => self.stop_leader(libc::SIGTERM).await,
            (915..925, _) => self.compact_etcd().await,
            (925..930, _) => self.stall_network(),
            (930..934, _) => self.restart_apiserver().await,
            (_, Some(name)) => self.change(&name).await,
            (_, None) => self.create().await,
        }
    }

    fn spent(&mut self, on: &'static str, since: Instant) {
        *self.time_in.entry(on).or_default() += since.elapsed();
    }

    /// Operations and faults made, in all.
    fn totals(&self) -> (usize, usize) {
        let faults: usize = faults::KINDS
            .iter()
            .filter_map(|kind| self.counts.get(kind))
            .sum();
        (self.counts.values().sum::<usize>() - faults, faults)
    }

    async fn report(&self, seed: u64, elapsed: Duration) -> String {
        let (operations, faults) = self.totals();
        let mut report =
            format!("seed {seed}, {elapsed:?}: {operations} operations, {faults} faults (");
        for (kind, count) in &self.counts {
            let _ = write!(report, "{kind} {count}, ");
        }
        let renewals = self
            .harness
            .cloud_calls("AssumeRoleWithWebIdentity", "Success")
            .await;
        let _ = write!(
            report,
            "), {renewals} temporary credentials issued, {} invariant checks, peak replica RSS {:.1} MiB",
            self.checks,
            self.peak_rss_kib as f64 / 1024.0
        );
        // Where the run's time went, to see what holds the number of operations down.
        let mut costliest: Vec<_> = self.time_in.iter().collect();
        costliest.sort_by_key(|(_, spent)| std::cmp::Reverse(**spent));
        report.push_str("; time spent in ");
        for (kind, spent) in costliest.into_iter().take(6) {
            let _ = write!(report, "{kind} {spent:.0?}, ");
        }
        report
    }
}

async fn soak(seed: u64, duration: Duration) -> Result<String, String> {
    let Some(mut soak) = Soak::start(seed).await else {
        return Ok("SKIPPED: no control plane".to_owned());
    };
    let started = Instant::now();
    let (mut converged_after, mut namespaces_gone_after) = (None, None);
    let result: invariants::Checked = async {
        while started.elapsed() < duration {
            let step = Instant::now();
            soak.step().await;
            let kind = soak.last_kind.take().unwrap_or("nothing done");
            soak.spent(kind, step);
            let checks = Instant::now();
            soak.end_faults_when_due(false).await;
            soak.check_always().await?;
            soak.spent("checks", checks);
            let pause = soak.rng.random_range(5..50);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        soak.end_faults_when_due(true).await;
        soak.history.push("quiet: faults stopped".to_owned());
        let quiet = Instant::now();
        soak.check_converged(CONVERGENCE_BOUND).await?;
        converged_after = Some(quiet.elapsed());
        soak.check_nothing_secret_shown().await?;
        let deleting = Instant::now();
        soak.delete_every_namespace().await?;
        namespaces_gone_after = Some(deleting.elapsed());
        soak.finish().await
    }
    .await;
    let mut report = soak.report(seed, started.elapsed()).await;
    if let (Some(converged), Some(gone)) = (converged_after, namespaces_gone_after) {
        let _ = write!(
            report,
            "; converged {converged:.1?} after the faults stopped, every namespace gone {gone:.1?} after its deletion"
        );
    }
    match result {
        Ok(()) => Ok(report),
        Err(Violation(why)) => {
            let history = soak.history.join("\n  ");
            Err(format!(
                "VIOLATION with seed {seed}: {why}\n{report}\nhistory:\n  {history}\nreplay: cargo test --test soak -- --seed {seed} --duration {}s",
                duration.as_secs()
            ))
        }
    }
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for seed in &options.seeds {
        match runtime.block_on(soak(*seed, options.duration)) {
            Ok(report) => println!("soak ok: {report}"),
            Err(violation) => {
                // The next seed would meet what this one left behind (its namespaces, with
                // resources of the same products): stop here.
                eprintln!("{violation}");
                std::process::exit(1);
            }
        }
    }
}
