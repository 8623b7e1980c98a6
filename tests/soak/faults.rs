//! What goes wrong: the cloud failing or throttling, credentials broken or refused, replicas
//! killed, the API server restarted, compacted or frozen. A fault that lasts a few seconds
//! ends in [`Soak::end_faults_when_due`].

use std::time::{Duration, Instant};

use iothub_dynreg::controller::resources::ClusterCredentials;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions};
use rand::Rng;
use serde_json::json;

use super::{
    BrokenCredentials, CREDENTIALS, CredentialsOutage, KEYS, PRODUCTS, Soak, TOKENS, product_id,
};

/// The kinds of step that are faults; every other kind is an operation.
pub const KINDS: [&str; 11] = [
    "cloud faults",
    "throttling burst",
    "credentials broken",
    "credentials deleted",
    "STS refusal",
    "ClusterCredentials deleted",
    "leader SIGKILL",
    "leader SIGTERM",
    "etcd compaction",
    "network stall",
    "API server restart",
];

impl Soak {
    pub async fn cloud_faults(&mut self) {
        let seconds = self.rng.random_range(1..=4);
        let faults = json!({
            "latencyMs": self.rng.random_range(0..300),
            "internalErrorRate": 0.3,
            "http503Rate": 0.1,
            "dropRate": 0.05,
            "lostAnswerRate": 0.05,
        });
        self.harness
            .emulator_send(reqwest::Method::PUT, "faults", faults)
            .await;
        self.faults_until = Some(Instant::now() + Duration::from_secs(seconds));
        self.note("cloud faults", format!("cloud faults for {seconds} s"));
    }

    /// The cloud throttles a product's next calls whatever their rate (other clients share the
    /// account's quota): answers the controller must retry without exceeding the limit itself.
    pub async fn throttling_burst(&mut self) {
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

    /// The harness namespace's credentials Secret gets a wrong key (a rotation gone wrong), or
    /// the credentials Secret of one of the run's namespaces is deleted, for a few seconds.
    pub async fn break_credentials(&mut self, outage: CredentialsOutage) {
        if self.credentials_outage.is_some() {
            return;
        }
        let namespace = match outage {
            CredentialsOutage::WrongKey => {
                let (id, _) = KEYS[self.key];
                let namespace = self.harness.namespace.clone();
                self.put_credentials(&namespace, (id, "a-broken-key")).await;
                namespace
            }
            CredentialsOutage::Deleted => {
                let Some(namespace) = self.delete_unprotected_credentials().await else {
                    return;
                };
                namespace
            }
        };
        let seconds = self.rng.random_range(2..=6);
        let back = Instant::now() + Duration::from_secs(seconds);
        let (kind, what) = match outage {
            CredentialsOutage::WrongKey => ("credentials broken", "given a wrong key"),
            CredentialsOutage::Deleted => ("credentials deleted", "deleted"),
        };
        self.note(
            kind,
            format!("credentials Secret in {namespace} {what} for {seconds} s"),
        );
        self.credentials_outage = Some(BrokenCredentials {
            outage,
            namespace,
            back,
        });
    }

    /// Deletes the credentials Secret of one of the run's namespaces (tried from a random one
    /// on) that no deletion needs: one that does carries the controller's in-use finalizer and
    /// would stay, terminating, until that deletion is done (e2e_deletion tests that story).
    /// The precondition makes sure the finalizer did not come on since it was read.
    async fn delete_unprotected_credentials(&mut self) -> Option<String> {
        let mut namespaces = vec![self.harness.namespace.clone()];
        namespaces.extend(self.teams.iter().cloned());
        let first = self.rng.random_range(0..namespaces.len());
        namespaces.rotate_left(first);
        for namespace in namespaces {
            let secrets = self.secrets_in(&namespace);
            let Ok(Some(secret)) = secrets.get_opt(CREDENTIALS).await else {
                continue;
            };
            if !secret.finalizers().is_empty() {
                continue;
            }
            let unchanged = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: secret.metadata.resource_version.clone(),
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            if secrets.delete(CREDENTIALS, &unchanged).await.is_ok() {
                return Some(namespace);
            }
        }
        None
    }

    /// STS refuses the web identity for a few seconds: the token file holds a token the
    /// provider does not vouch for.
    pub fn refuse_token(&mut self) {
        if self.token_refused_until.is_some() {
            return;
        }
        self.write_token("eyJ.not-vouched-for.sig");
        let seconds = self.rng.random_range(2..=6);
        self.token_refused_until = Some(Instant::now() + Duration::from_secs(seconds));
        self.note(
            "STS refusal",
            format!("web identity token refused for {seconds} s"),
        );
    }

    /// The platform team deletes the ClusterCredentials by mistake and applies it again a few
    /// seconds later.
    pub async fn delete_cluster_credentials(&mut self) {
        if self.cluster_credentials_back_at.is_some() {
            return;
        }
        let declared = Api::<ClusterCredentials>::all(self.harness.client.clone());
        let name = self.cluster_credentials_name();
        if declared
            .delete(&name, &DeleteParams::default())
            .await
            .is_err()
        {
            return;
        }
        let seconds = self.rng.random_range(2..=6);
        self.cluster_credentials_back_at = Some(Instant::now() + Duration::from_secs(seconds));
        self.note(
            "ClusterCredentials deleted",
            format!("ClusterCredentials deleted for {seconds} s"),
        );
    }

    pub async fn compact_etcd(&mut self) {
        let revision = self.harness.plane.compact_etcd().await;
        self.note(
            "etcd compaction",
            format!("etcd compacted at revision {revision}"),
        );
    }

    /// The API server stops answering for a few seconds (SIGSTOP), connections left open.
    pub fn stall_network(&mut self) {
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

    pub async fn restart_apiserver(&mut self) {
        let outage = Duration::from_millis(self.rng.random_range(200..=2000));
        self.harness.plane.restart_apiserver(outage).await;
        self.note(
            "API server restart",
            format!("API server restarted, down {outage:?}"),
        );
    }

    /// Indexes of the replicas leading their shard now.
    async fn leaders(&self) -> Vec<usize> {
        let mut leaders = Vec::new();
        for (index, replica) in self.replicas.iter().enumerate() {
            if let Some((_, metrics)) = replica.process.ops("/metrics").await
                && metrics.lines().any(|line| line == "iothub_dynreg_leader 1")
            {
                leaders.push(index);
            }
        }
        leaders
    }

    /// The leader of a shard is killed or told to stop; a new replica of its shard starts.
    pub async fn stop_leader(&mut self, signal: libc::c_int) {
        let leaders = self.leaders().await;
        if leaders.is_empty() {
            return;
        }
        let index = leaders[self.rng.random_range(0..leaders.len())];
        let mut replica = self.replicas.swap_remove(index);
        replica.process.signal(signal);
        let exited = replica.process.wait_exit(Duration::from_secs(30));
        self.stopped_logs.push(replica.process.stderr());
        let kind = if signal == libc::SIGKILL {
            "leader SIGKILL"
        } else {
            "leader SIGTERM"
        };
        let shard = replica.shard;
        self.note(kind, format!("{kind} of {shard:?} (exited: {exited:?})"));
        if signal == libc::SIGTERM && !exited.is_some_and(|status| status.success()) {
            self.history
                .push(format!("VIOLATION: SIGTERM exit {exited:?}"));
        }
        let replacement = self.spawn_replica(shard);
        self.replicas.push(replacement);
    }

    /// Ends the faults whose time is up (all of them when `now`).
    pub async fn end_faults_when_due(&mut self, now: bool) {
        let due = |at: Instant| now || Instant::now() >= at;
        if self.faults_until.is_some_and(due) {
            self.harness
                .emulator_send(reqwest::Method::PUT, "faults", json!({}))
                .await;
            self.faults_until = None;
            self.history.push("cloud faults cleared".to_owned());
        }
        if let Some(broken) = self.credentials_outage.take_if(|broken| due(broken.back)) {
            // Team namespaces hold the first key; the harness's is rotated between both.
            let namespace = broken.namespace;
            if namespace == self.harness.namespace {
                self.put_credentials(&namespace, KEYS[self.key]).await;
            } else {
                self.put_credentials(&namespace, KEYS[0]).await;
            }
            self.history.push(format!(
                "credentials Secret in {namespace} restored after {:?}",
                broken.outage
            ));
        }
        if self.cluster_credentials_back_at.is_some_and(due) {
            self.declare_cluster_credentials().await;
            self.cluster_credentials_back_at = None;
            self.history
                .push("ClusterCredentials applied again".to_owned());
        }
        if self.token_refused_until.is_some_and(due) {
            self.write_token(TOKENS[self.token]);
            self.token_refused_until = None;
            self.history
                .push("web identity token trusted again".to_owned());
        }
    }
}
