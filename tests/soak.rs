//! Chaos soak: a seeded random history of operations and faults against the real controller (two
//! replicas under leader election), the real API server and the emulator, with invariants checked
//! all along and after a quiet period. A violation prints the seed and the history; the same seed
//! replays the same sequence of operations and faults (how many fit in the duration depends on
//! the clock).
//!
//! `cargo test --test soak` runs three seeds of 40 s each (CI); for a long run:
//! `cargo test --test soak -- --duration 30m --seed 7`.
//!
//! Operations: create, change (type, limit), delete resources; suspend and resume; switch
//! `managementPolicy`; rename `secretName`, also to a Secret a person owns; ask for a reconcile;
//! console edits of products; a person editing or deleting a published Secret.
//! Faults: cloud errors (InternalError, 503, dropped connections) and slow answers for a few
//! seconds; throttling bursts (`RequestLimitExceeded` answered whatever the rate); the
//! credentials Secret broken for a few seconds (a wrong key), then restored; the leader
//! SIGKILLed or SIGTERMed (and started again); kube-apiserver restarted; etcd compacted; the
//! API server frozen (SIGSTOP) for a few seconds, as a network stall.
//! Invariants, besides convergence: the cloud's limit per second, no `RequestLimitExceeded`
//! beyond those injected, no write to a product only observed or suspended, a person's Secrets
//! never changed, SIGTERM exits 0, no secret logged, replica memory under a bound.
//! Not yet: shards, namespace deletion, STS refusals.

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use iothub_dynreg::controller::resources::{
    DynamicRegistration, ManagementPolicy, RegistrationMode,
};
use kube::api::{DeleteParams, Patch, PatchParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::e2e::{ControllerProcess, Harness, registration};

/// Products in the emulator; each live resource manages one of its own (no conflicts).
const PRODUCTS: usize = 48;
/// The cloud's limit per (SecretId, action), as the emulator enforces it.
const LIMIT: u64 = 20;
/// After the faults stop: how long every resource may take to converge.
const CONVERGENCE_BOUND: Duration = Duration::from_secs(60);
/// The most resident memory a replica may hold (it holds about 30 MiB for this fleet).
const MEMORY_BOUND_KIB: u64 = 160 * 1024;
/// Secrets a person makes at most (then resources name those again).
const PERSON_SECRETS: usize = 12;
/// The credentials Secret of the harness.
const CREDENTIALS: &str = "tencent-credentials";

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
    let duration = value("--duration").map_or(Duration::from_secs(40), |text| {
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
    product: String,
    mode: RegistrationMode,
    limit: i64,
    observe_only: bool,
    suspended: bool,
    /// Observe-only or suspended since its creation, never managed: its product is never written.
    never_managed: bool,
    /// Its secretName names a person's Secret: it must say SecretConflict and leave it alone.
    secret_taken: bool,
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
    /// Products given up by a deleted resource.
    free_products: Vec<String>,
    next_name: usize,
    replicas: Vec<ControllerProcess>,
    /// Logs of replicas that were stopped, for the secret check at the end.
    stopped_logs: Vec<String>,
    faults_until: Option<Instant>,
    /// When the broken credentials Secret gets its key back.
    credentials_restored_at: Option<Instant>,
    /// `RequestLimitExceeded` answers scripted into the emulator: the only ones allowed.
    throttles_injected: u64,
    /// Secrets a person made, with the value they hold: never changed by the controller.
    person_secrets: BTreeMap<String, String>,
    /// The most resident memory seen of any replica, KiB.
    peak_rss_kib: u64,
    counts: BTreeMap<&'static str, usize>,
    checks: usize,
}

/// A broken invariant, with what led to it.
struct Violation(String);

type Checked = Result<(), Violation>;

fn product_id(index: usize) -> String {
    format!("SOAK{index:06}")
}

fn products_yaml() -> String {
    let mut yaml = String::from("products:\n");
    for index in 0..PRODUCTS {
        let id = product_id(index);
        yaml.push_str(&format!(
            "  - {{productId: {id}, region: ap-guangzhou, registerType: 0}}\n"
        ));
    }
    yaml
}

impl Soak {
    async fn start(seed: u64) -> Option<Self> {
        let harness = Harness::with_credentials(&products_yaml(), |config| {
            config.rate_limit_per_second = LIMIT as u32;
        })
        .await?;
        let mut soak = Self {
            harness,
            rng: StdRng::seed_from_u64(seed),
            history: Vec::new(),
            live: BTreeMap::new(),
            deleted: Vec::new(),
            fresh_products: (0..PRODUCTS).map(product_id).collect(),
            free_products: Vec::new(),
            next_name: 0,
            replicas: Vec::new(),
            stopped_logs: Vec::new(),
            faults_until: None,
            credentials_restored_at: None,
            throttles_injected: 0,
            person_secrets: BTreeMap::new(),
            peak_rss_kib: 0,
            counts: BTreeMap::new(),
            checks: 0,
        };
        for _ in 0..2 {
            let replica = soak.spawn_replica();
            soak.replicas.push(replica);
        }
        Some(soak)
    }

    fn spawn_replica(&self) -> ControllerProcess {
        self.harness.spawn_controller(&[
            "--leader-election",
            "--leader-election-lease-duration",
            "3s",
            "--resync-interval",
            "5s",
            "--observe-interval",
            "1s",
            "--stalled-retry-interval",
            "5s",
        ])
    }

    fn note(&mut self, kind: &'static str, what: String) {
        *self.counts.entry(kind).or_default() += 1;
        self.history.push(what);
    }

    /// One operation or fault, drawn at random (per mille).
    async fn step(&mut self) {
        let roll = self.rng.random_range(0..1000);
        let names: Vec<String> = self.live.keys().cloned().collect();
        let some_name =
            (!names.is_empty()).then(|| names[self.rng.random_range(0..names.len())].clone());
        match (roll, some_name) {
            (0..240, _) => self.create().await,
            (240..390, Some(name)) => self.change(&name).await,
            (390..460, Some(name)) => self.toggle_suspend(&name).await,
            (460..530, Some(name)) => self.toggle_observe_only(&name).await,
            (530..580, Some(name)) => self.rename_secret(&name).await,
            (580..630, Some(name)) => self.request_reconcile(&name).await,
            (630..720, Some(name)) => self.delete(&name).await,
            (720..790, _) => self.console_edit().await,
            (790..820, Some(name)) => self.edit_published_secret(&name).await,
            (820..850, Some(name)) => self.delete_published_secret(&name).await,
            (850..860, Some(name)) => self.take_persons_secret(&name).await,
            // Faults: the slow ones (a restart, a stall, a replica's exit) are the rarest, so
            // that a long run still makes a few operations a second.
            (860..900, _) => self.cloud_faults().await,
            (900..930, _) => self.throttling_burst().await,
            (930..955, _) => self.break_credentials().await,
            (955..962, _) => self.stop_leader(libc::SIGKILL).await,
            (962..969, _) => self.stop_leader(libc::SIGTERM).await,
            (969..984, _) => self.compact_etcd().await,
            (984..992, _) => self.stall_network(),
            (992..996, _) => self.restart_apiserver().await,
            _ => self.create().await,
        }
    }

    async fn create(&mut self) {
        let fresh = self.free_products.is_empty()
            || (!self.fresh_products.is_empty() && self.rng.random_bool(0.5));
        let pool = if fresh {
            &mut self.fresh_products
        } else {
            &mut self.free_products
        };
        if pool.is_empty() {
            return;
        }
        let at = self.rng.random_range(0..pool.len());
        let product = pool.swap_remove(at);
        let name = format!("r{}", self.next_name);
        self.next_name += 1;
        let mode = self.random_mode();
        let limit = self.rng.random_range(1..=1000);
        let observe_only = self.rng.random_bool(0.2);
        let suspended = self.rng.random_bool(0.1);
        let mut resource = registration(&name, &product, mode, limit);
        if observe_only {
            resource.spec.management_policy = ManagementPolicy::ObserveOnly;
        }
        resource.spec.suspend = suspended;
        self.harness.create(resource).await;
        let declared = Declared {
            product: product.clone(),
            mode,
            limit,
            observe_only,
            suspended,
            never_managed: (observe_only || suspended) && fresh,
            secret_taken: false,
        };
        self.note("create", format!("create {name} {declared:?}"));
        self.live.insert(name, declared);
    }

    fn random_mode(&mut self) -> RegistrationMode {
        [RegistrationMode::PreCreate, RegistrationMode::AutoCreate][self.rng.random_range(0..2)]
    }

    async fn patch(&self, name: &str, patch: Value) {
        let api = self.harness.registrations();
        let _ = api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await;
    }

    async fn change(&mut self, name: &str) {
        let mode = self.random_mode();
        let limit = self.rng.random_range(1..=1000);
        let register_type = serde_json::to_value(mode).unwrap();
        self.patch(
            name,
            json!({"spec": {"registerType": register_type, "registerLimit": limit}}),
        )
        .await;
        let declared = self.live.get_mut(name).unwrap();
        declared.mode = mode;
        declared.limit = limit;
        self.note("change", format!("change {name} to {mode:?} {limit}"));
    }

    async fn toggle_suspend(&mut self, name: &str) {
        let suspended = !self.live[name].suspended;
        self.patch(name, json!({"spec": {"suspend": suspended}}))
            .await;
        let declared = self.live.get_mut(name).unwrap();
        declared.suspended = suspended;
        declared.never_managed &= suspended || declared.observe_only;
        self.note("suspend", format!("suspend {name} = {suspended}"));
    }

    async fn toggle_observe_only(&mut self, name: &str) {
        let observe_only = !self.live[name].observe_only;
        let policy = if observe_only { "ObserveOnly" } else { "Full" };
        self.patch(name, json!({"spec": {"managementPolicy": policy}}))
            .await;
        let declared = self.live.get_mut(name).unwrap();
        declared.observe_only = observe_only;
        declared.never_managed &= observe_only || declared.suspended;
        self.note(
            "management policy",
            format!("managementPolicy {name} = {policy}"),
        );
    }

    async fn rename_secret(&mut self, name: &str) {
        let secret = format!("{name}-s{}", self.rng.random_range(0..1000));
        self.patch(name, json!({"spec": {"secretName": secret}}))
            .await;
        self.live.get_mut(name).unwrap().secret_taken = false;
        self.note("secret name", format!("secretName {name} = {secret}"));
    }

    /// The Secret `name` publishes to now, as the API server holds the resource.
    async fn published_secret_of(&self, name: &str) -> Option<String> {
        let resource = self.harness.registrations().get_opt(name).await.ok()??;
        Some(resource.published_secret_name())
    }

    /// A person overwrites the ProductSecret in a published Secret: the controller restores it.
    async fn edit_published_secret(&mut self, name: &str) {
        if self.live[name].secret_taken {
            return;
        }
        let Some(secret) = self.published_secret_of(name).await else {
            return;
        };
        let tampered = json!({"stringData": {"productSecret": "edited-by-a-person"}});
        let edited = self
            .harness
            .secrets()
            .patch(&secret, &PatchParams::default(), &Patch::Merge(tampered))
            .await;
        if edited.is_ok() {
            self.note(
                "person edits a published Secret",
                format!("person edits Secret {secret} of {name}"),
            );
        }
    }

    /// A person deletes a published Secret: the controller writes it again.
    async fn delete_published_secret(&mut self, name: &str) {
        if self.live[name].secret_taken {
            return;
        }
        let Some(secret) = self.published_secret_of(name).await else {
            return;
        };
        if self
            .harness
            .secrets()
            .delete(&secret, &DeleteParams::default())
            .await
            .is_ok()
        {
            self.note(
                "person deletes a published Secret",
                format!("person deletes Secret {secret} of {name}"),
            );
        }
    }

    /// A person makes a Secret of their own, and a resource names it as its secretName: the
    /// resource says SecretConflict, and the person's Secret is never changed.
    async fn take_persons_secret(&mut self, name: &str) {
        if self.person_secrets.len() >= PERSON_SECRETS {
            let names: Vec<String> = self.person_secrets.keys().cloned().collect();
            let secret = names[self.rng.random_range(0..names.len())].clone();
            self.patch(name, json!({"spec": {"secretName": secret}}))
                .await;
            self.live.get_mut(name).unwrap().secret_taken = true;
            let what = format!("secretName {name} = {secret} (a person's)");
            self.note("secretName of a person's Secret", what);
            return;
        }
        let secret = format!("person-{}", self.person_secrets.len());
        let value = format!("a person's value {}", self.rng.random_range(0..u32::MAX));
        let object: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
            "metadata": {"name": secret},
            "stringData": {"note": value},
        }))
        .unwrap();
        if self
            .harness
            .secrets()
            .create(&Default::default(), &object)
            .await
            .is_err()
        {
            return;
        }
        self.person_secrets.insert(secret.clone(), value);
        self.patch(name, json!({"spec": {"secretName": secret}}))
            .await;
        self.live.get_mut(name).unwrap().secret_taken = true;
        self.note(
            "secretName of a person's Secret",
            format!("secretName {name} = {secret} (a person's)"),
        );
    }

    async fn request_reconcile(&mut self, name: &str) {
        let now = format!("{}", self.rng.random_range(0..u32::MAX));
        let annotation =
            json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": now}}});
        self.patch(name, annotation).await;
        self.note("reconcile request", format!("reconcile request {name}"));
    }

    async fn delete(&mut self, name: &str) {
        let api = self.harness.registrations();
        let _ = api.delete(name, &DeleteParams::default()).await;
        let declared = self.live.remove(name).unwrap();
        self.free_products.push(declared.product);
        self.deleted.push(name.to_owned());
        self.note("delete", format!("delete {name}"));
    }

    async fn console_edit(&mut self) {
        let product = product_id(self.rng.random_range(0..PRODUCTS));
        let limit = self.rng.random_range(1..=1000);
        let path = format!("products/{product}");
        let edit = json!({"registerLimit": limit});
        self.harness
            .emulator_send(reqwest::Method::PATCH, &path, edit)
            .await;
        self.note(
            "console edit",
            format!("console edit {product} limit {limit}"),
        );
    }

    async fn cloud_faults(&mut self) {
        let seconds = self.rng.random_range(1..=4);
        let faults = json!({
            "latencyMs": self.rng.random_range(0..300),
            "internalErrorRate": 0.3,
            "http503Rate": 0.1,
            "dropRate": 0.05,
        });
        self.harness
            .emulator_send(reqwest::Method::PUT, "faults", faults)
            .await;
        self.faults_until = Some(Instant::now() + Duration::from_secs(seconds));
        self.note("cloud faults", format!("cloud faults for {seconds} s"));
    }

    /// The cloud throttles a product's next calls whatever their rate (other clients share the
    /// account's quota): answers the controller must retry without exceeding the limit itself.
    async fn throttling_burst(&mut self) {
        let product = product_id(self.rng.random_range(0..PRODUCTS));
        let times: u64 = self.rng.random_range(1..=5);
        let script = json!({"code": "RequestLimitExceeded", "times": times});
        let path = format!("products/{product}/errors");
        self.harness
            .emulator_send(reqwest::Method::PUT, &path, script)
            .await;
        self.throttles_injected += times;
        self.note(
            "throttling burst",
            format!("throttling burst: {product} x{times}"),
        );
    }

    /// The credentials Secret gets a wrong key for a few seconds (a rotation gone wrong).
    async fn break_credentials(&mut self) {
        if self.credentials_restored_at.is_some() {
            return;
        }
        self.harness
            .set_credentials_key(CREDENTIALS, "a-broken-key")
            .await;
        let seconds = self.rng.random_range(2..=6);
        self.credentials_restored_at = Some(Instant::now() + Duration::from_secs(seconds));
        self.note(
            "credentials broken",
            format!("credentials broken for {seconds} s"),
        );
    }

    async fn compact_etcd(&mut self) {
        let revision = self.harness.plane.compact_etcd().await;
        self.note(
            "etcd compaction",
            format!("etcd compacted at revision {revision}"),
        );
    }

    /// The API server stops answering for a few seconds (SIGSTOP), connections left open.
    fn stall_network(&mut self) {
        let millis = self.rng.random_range(500..=2500);
        let plane = self.harness.plane;
        plane.freeze_apiserver(true);
        // Thawed whatever happens to the step that follows.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            plane.freeze_apiserver(false);
        });
        self.note(
            "network stall",
            format!("API server frozen for {millis} ms"),
        );
    }

    async fn restart_apiserver(&mut self) {
        let outage = Duration::from_millis(self.rng.random_range(200..=2000));
        self.harness.plane.restart_apiserver(outage).await;
        self.note(
            "API server restart",
            format!("API server restarted, down {outage:?}"),
        );
    }

    async fn restore_credentials_when_due(&mut self, now: bool) {
        if self
            .credentials_restored_at
            .is_some_and(|at| now || Instant::now() >= at)
        {
            let key = support::e2e::SECRET_KEY;
            self.harness.set_credentials_key(CREDENTIALS, key).await;
            self.credentials_restored_at = None;
            self.history.push("credentials restored".to_owned());
        }
    }

    async fn clear_faults_when_due(&mut self, now: bool) {
        if self
            .faults_until
            .is_some_and(|until| now || Instant::now() >= until)
        {
            self.harness
                .emulator_send(reqwest::Method::PUT, "faults", json!({}))
                .await;
            self.faults_until = None;
            self.history.push("cloud faults cleared".to_owned());
        }
    }

    async fn leader_index(&self) -> Option<usize> {
        for (index, replica) in self.replicas.iter().enumerate() {
            if let Some((_, metrics)) = replica.ops("/metrics").await
                && metrics.lines().any(|line| line == "iothub_dynreg_leader 1")
            {
                return Some(index);
            }
        }
        None
    }

    async fn stop_leader(&mut self, signal: libc::c_int) {
        let Some(index) = self.leader_index().await else {
            return;
        };
        let mut replica = self.replicas.swap_remove(index);
        replica.signal(signal);
        let exited = replica.wait_exit(Duration::from_secs(30));
        self.stopped_logs.push(replica.stderr());
        let kind = if signal == libc::SIGKILL {
            "leader SIGKILL"
        } else {
            "leader SIGTERM"
        };
        self.note(kind, format!("{kind} (exited: {exited:?})"));
        if signal == libc::SIGTERM && !exited.is_some_and(|status| status.success()) {
            self.history
                .push(format!("VIOLATION: SIGTERM exit {exited:?}"));
        }
        let replacement = self.spawn_replica();
        self.replicas.push(replacement);
    }

    /// What must hold at every moment.
    async fn check_always(&mut self) -> Checked {
        self.checks += 1;
        let stats = self.harness.emulator_get("stats").await;
        let throttled = stats["requestLimitExceeded"].as_u64().unwrap_or(0);
        if throttled > self.throttles_injected {
            return Err(Violation(format!(
                "{throttled} RequestLimitExceeded answers, {} injected",
                self.throttles_injected
            )));
        }
        self.check_memory()?;
        self.check_person_secrets().await?;
        for peak in stats["peaks"].as_array().into_iter().flatten() {
            let calls = peak["peakCallsPerSecond"].as_u64().unwrap_or(0);
            if calls > LIMIT {
                return Err(Violation(format!("{calls} calls in one second: {peak}")));
            }
        }
        let products = self.harness.emulator_get("products").await;
        for declared in self.live.values().filter(|d| d.never_managed) {
            let product = products
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["productId"] == declared.product.as_str());
            let updates = product.map_or(0, |p| p["updates"].as_u64().unwrap_or(0));
            if updates > 0 {
                return Err(Violation(format!(
                    "{} written {updates} times, only observed or suspended since its resource was made",
                    declared.product
                )));
            }
        }
        if let Some(line) = self
            .history
            .iter()
            .find(|line| line.starts_with("VIOLATION"))
        {
            return Err(Violation(line.clone()));
        }
        Ok(())
    }

    /// Every replica's resident memory stays under the bound.
    fn check_memory(&mut self) -> Checked {
        for replica in &self.replicas {
            let status = std::fs::read_to_string(format!("/proc/{}/status", replica.pid()));
            let rss = status.ok().and_then(|status| {
                let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            });
            self.peak_rss_kib = self.peak_rss_kib.max(rss.unwrap_or(0));
        }
        if self.peak_rss_kib > MEMORY_BOUND_KIB {
            return Err(Violation(format!(
                "a replica holds {} KiB (bound {MEMORY_BOUND_KIB})",
                self.peak_rss_kib
            )));
        }
        Ok(())
    }

    /// A person's Secrets are never changed, deleted or taken (no owner added).
    async fn check_person_secrets(&self) -> Checked {
        for (name, value) in &self.person_secrets {
            let Ok(found) = self.harness.secrets().get_opt(name).await else {
                continue; // The API server is down or frozen: checked next time.
            };
            let secret =
                found.ok_or_else(|| Violation(format!("a person's Secret {name} was deleted")))?;
            let data = support::e2e::secret_data(&secret);
            if data.get("note") != Some(value) || data.len() != 1 {
                return Err(Violation(format!(
                    "a person's Secret {name} was changed: keys {:?}",
                    data.keys()
                )));
            }
            if secret
                .metadata
                .owner_references
                .is_some_and(|owners| !owners.is_empty())
            {
                return Err(Violation(format!(
                    "a person's Secret {name} was given an owner"
                )));
            }
        }
        Ok(())
    }

    /// What must hold once faults stopped and the quiet period passed.
    async fn check_converged(&mut self) -> Checked {
        let deadline = Instant::now() + CONVERGENCE_BOUND;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.converged().await {
                Ok(()) => return Ok(()),
                Err(Violation(why)) => last = why,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(Violation(format!(
            "not converged within {CONVERGENCE_BOUND:?}: {last}"
        )))
    }

    async fn converged(&mut self) -> Checked {
        self.check_always().await?;
        let api = self.harness.registrations();
        let listed = api
            .list(&Default::default())
            .await
            .map_err(|e| Violation(e.to_string()))?;
        let products = self.harness.emulator_get("products").await;
        let product = |id: &str| {
            products
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["productId"] == id)
                .cloned()
                .unwrap_or(Value::Null)
        };
        let by_name: BTreeMap<String, &DynamicRegistration> = listed
            .items
            .iter()
            .map(|r| (r.metadata.name.clone().unwrap_or_default(), r))
            .collect();
        for name in &self.deleted {
            if by_name.contains_key(name) && !self.live.contains_key(name) {
                return Err(Violation(format!(
                    "{name} deleted but still there (finalizers?)"
                )));
            }
        }
        for (name, declared) in &self.live {
            let resource = by_name
                .get(name)
                .ok_or_else(|| Violation(format!("{name} is gone")))?;
            let status = resource.status.as_ref();
            if status.and_then(|s| s.observed_generation) != resource.metadata.generation {
                return Err(Violation(format!("{name}: status not current")));
            }
            if declared.suspended {
                continue;
            }
            if declared.secret_taken {
                let reason = resource.condition("Ready").map(|c| c.reason.clone());
                if reason.as_deref() != Some("SecretConflict") {
                    return Err(Violation(format!(
                        "{name} names a person's Secret but says {reason:?}"
                    )));
                }
                continue;
            }
            let cloud = product(&declared.product);
            let ready = resource
                .condition("Ready")
                .is_some_and(|c| c.status == "True");
            if !ready {
                return Err(Violation(format!("{name} not Ready")));
            }
            if !declared.observe_only {
                let wanted_type = serde_json::to_value(declared.mode).unwrap();
                let types = [("PreCreate", 1), ("AutoCreate", 2)];
                let wanted_type = types
                    .iter()
                    .find(|(mode, _)| wanted_type == *mode)
                    .map(|(_, number)| *number);
                if cloud["registerType"].as_i64() != wanted_type
                    || cloud["registerLimit"].as_i64() != Some(declared.limit)
                {
                    return Err(Violation(format!(
                        "{name}: cloud {cloud} differs from {declared:?}"
                    )));
                }
            }
            let secret_name = resource.published_secret_name();
            let secret = self
                .harness
                .secrets()
                .get_opt(&secret_name)
                .await
                .map_err(|e| Violation(e.to_string()))?;
            let cloud_secret = cloud["productSecret"].as_str().unwrap_or("");
            if !cloud_secret.is_empty() {
                let data = secret
                    .as_ref()
                    .map(support::e2e::secret_data)
                    .unwrap_or_default();
                if !data.values().any(|value| value == cloud_secret) {
                    return Err(Violation(format!(
                        "{name}: Secret {secret_name} lacks the ProductSecret"
                    )));
                }
            }
        }
        Ok(())
    }

    async fn finish(&mut self) -> Checked {
        for replica in &self.replicas {
            self.harness.assert_no_secrets_logged(replica).await;
        }
        for log in &self.stopped_logs {
            if log.contains(support::e2e::SECRET_KEY) {
                return Err(Violation("SecretKey in a stopped replica's log".to_owned()));
            }
        }
        Ok(())
    }
}

async fn soak(seed: u64, duration: Duration) -> Result<String, String> {
    let Some(mut soak) = Soak::start(seed).await else {
        return Ok("SKIPPED: no control plane".to_owned());
    };
    let started = Instant::now();
    let result: Checked = async {
        while started.elapsed() < duration {
            soak.step().await;
            soak.clear_faults_when_due(false).await;
            soak.restore_credentials_when_due(false).await;
            soak.check_always().await?;
            let pause = soak.rng.random_range(5..100);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        soak.clear_faults_when_due(true).await;
        soak.restore_credentials_when_due(true).await;
        soak.history.push("quiet: faults stopped".to_owned());
        soak.check_converged().await?;
        soak.finish().await
    }
    .await;
    let mut report = format!("seed {seed}, {:?}: ", started.elapsed());
    for (kind, count) in &soak.counts {
        let _ = write!(report, "{kind} {count}, ");
    }
    let _ = write!(
        report,
        "{} invariant checks, peak replica RSS {:.1} MiB",
        soak.checks,
        soak.peak_rss_kib as f64 / 1024.0
    );
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
    let mut failed = false;
    for seed in &options.seeds {
        match runtime.block_on(soak(*seed, options.duration)) {
            Ok(report) => println!("soak ok: {report}"),
            Err(violation) => {
                eprintln!("{violation}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
