//! What must hold: after every step, once the faults stopped, and at the end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use iothub_dynreg::controller::resources::{ClusterCredentials, DynamicRegistration};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::Value;

use super::operations::{PERSON_LABEL, TEMPLATES};
use super::support;
use super::{KEYS, LIMIT, MEMORY_BOUND_KIB, NAMESPACES_GONE_BOUND, Shard, Soak, TOKENS};

/// A broken invariant, with what led to it.
pub struct Violation(pub String);

pub type Checked = Result<(), Violation>;

/// What a replica's metrics say: whether it leads its shard, and its cloud calls so far.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    leading: bool,
    calls: u64,
}

impl Sample {
    fn of(metrics: &str) -> Self {
        let calls = metrics
            .lines()
            .filter(|line| line.starts_with("iothub_dynreg_cloud_calls_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        Self {
            leading: metrics.lines().any(|line| line == "iothub_dynreg_leader 1"),
            calls: calls as u64,
        }
    }
}

/// Deleted resources looked up after each step, to free their products once they are gone.
const RECLAIMED_PER_CHECK: usize = 3;

/// What STS's temporary credentials are answered with once they have expired.
const EXPIRED_CREDENTIALS: &str = "AuthFailure.TokenFailure";

impl Soak {
    /// What must hold at every moment.
    pub async fn check_always(&mut self) -> Checked {
        self.checks += 1;
        let stats = self.harness.emulator_get("stats").await;
        let throttled = stats["requestLimitExceeded"].as_u64().unwrap_or(0);
        if throttled > self.throttles_injected {
            return Err(Violation(format!(
                "{throttled} RequestLimitExceeded answers, {} injected",
                self.throttles_injected
            )));
        }
        for peak in stats["peaks"].as_array().into_iter().flatten() {
            let calls = peak["peakCallsPerSecond"].as_u64().unwrap_or(0);
            if calls > LIMIT {
                return Err(Violation(format!("{calls} calls in one second: {peak}")));
            }
        }
        let calls = stats["calls"].as_object().into_iter().flatten();
        for (action, results) in calls {
            if let Some(expired) = results[EXPIRED_CREDENTIALS].as_u64() {
                return Err(Violation(format!(
                    "{action} sent {expired} times with temporary credentials that had expired"
                )));
            }
        }
        self.check_memory()?;
        self.check_one_caller_per_shard().await?;
        self.check_person_secrets().await?;
        let products = self.harness.emulator_get("products").await;
        self.check_never_managed_unwritten(&products)?;
        self.reclaim_products(RECLAIMED_PER_CHECK).await?;
        if let Some(line) = self
            .history
            .iter()
            .find(|line| line.starts_with("VIOLATION"))
        {
            return Err(Violation(line.clone()));
        }
        Ok(())
    }

    /// No product whose resource only observed or was suspended since it was made is written.
    fn check_never_managed_unwritten(&self, products: &Value) -> Checked {
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
        Ok(())
    }

    /// Only the leader of a shard calls the cloud: a replica that did not lead at the last check
    /// and does not now made no call in between (a leadership is seconds long, checks a fraction of
    /// a second apart), and no shard has two leaders.
    async fn check_one_caller_per_shard(&mut self) -> Checked {
        let mut leaders = Vec::new();
        for replica in &mut self.replicas {
            let Some((_, metrics)) = replica.process.ops("/metrics").await else {
                replica.last_seen = None; // Starting, or busy: compared from its next answer.
                continue;
            };
            let now = Sample::of(&metrics);
            if let Some(before) = replica.last_seen
                && !before.leading
                && !now.leading
                && now.calls > before.calls
            {
                return Err(Violation(format!(
                    "a replica of {:?} made {} cloud calls without leading its shard",
                    replica.shard,
                    now.calls - before.calls
                )));
            }
            if now.leading {
                leaders.push(replica.shard);
            }
            replica.last_seen = Some(now);
        }
        for shard in [Shard::Main, Shard::Second] {
            if leaders.iter().filter(|leader| **leader == shard).count() > 1 {
                return Err(Violation(format!("two leaders of {shard:?} at once")));
            }
        }
        Ok(())
    }

    /// Every replica's resident memory stays under the bound.
    fn check_memory(&mut self) -> Checked {
        for replica in &self.replicas {
            let pid = replica.process.pid();
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
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
        if self.person_secrets.is_empty() {
            return Ok(());
        }
        let selector = ListParams::default().labels(PERSON_LABEL);
        let Ok(listed) = self.harness.secrets().list(&selector).await else {
            return Ok(()); // The API server is down or frozen: checked next time.
        };
        let found: BTreeMap<String, &Secret> = listed
            .items
            .iter()
            .map(|secret| (secret.metadata.name.clone().unwrap_or_default(), secret))
            .collect();
        for (name, value) in &self.person_secrets {
            let secret = found
                .get(name)
                .ok_or_else(|| Violation(format!("a person's Secret {name} was deleted")))?;
            let data = support::e2e::secret_data(secret);
            if data.get("note") != Some(value) || data.len() != 1 {
                return Err(Violation(format!(
                    "a person's Secret {name} was changed: keys {:?}",
                    data.keys()
                )));
            }
            if secret
                .metadata
                .owner_references
                .as_ref()
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
    pub async fn check_converged(&mut self, bound: Duration) -> Checked {
        let deadline = Instant::now() + bound;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.converged().await {
                Ok(()) => return Ok(()),
                Err(Violation(why)) => last = why,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(Violation(format!("not converged within {bound:?}: {last}")))
    }

    async fn converged(&mut self) -> Checked {
        self.check_always().await?;
        let listed = Api::<DynamicRegistration>::all(self.harness.client.clone())
            .list(&Default::default())
            .await
            .map_err(|e| Violation(e.to_string()))?;
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
        let namespaces = Api::<Namespace>::all(self.harness.client.clone());
        for namespace in &self.deleted_namespaces {
            let found = namespaces
                .get_opt(namespace)
                .await
                .map_err(|e| Violation(e.to_string()))?;
            if let Some(found) = found {
                let left = self.left_in(namespace).await;
                let conditions = found.status.and_then(|status| status.conditions);
                let conditions: Vec<String> = conditions
                    .into_iter()
                    .flatten()
                    .filter(|c| c.status == "True")
                    .map(|c| format!("{}: {}", c.type_, c.message.unwrap_or_default()))
                    .collect();
                return Err(Violation(format!(
                    "namespace {namespace} deleted but still there: {conditions:?}; {left}"
                )));
            }
        }
        self.reclaim_products(usize::MAX).await?;
        self.deletions_done().await?;
        let products = self.harness.emulator_get("products").await;
        for name in self.live.keys() {
            let resource = by_name
                .get(name)
                .ok_or_else(|| Violation(format!("{name} is gone")))?;
            self.resource_converged(name, resource, &products).await?;
        }
        Ok(())
    }

    /// Frees the products of up to `most` deleted resources that are gone; a resource deleted
    /// with `Disable` that is gone must have left its product disabled (the controller takes
    /// its finalizer off only after the cloud said so). The cloud is read after the resources
    /// were seen gone: a picture taken before could predate the disabling call.
    pub async fn reclaim_products(&mut self, most: usize) -> Checked {
        let mut gone = Vec::new();
        let mut index = 0;
        while index < self.going.len() && gone.len() + index < most {
            let going = &self.going[index];
            let api = self.registrations_in(&going.namespace);
            match api.get_opt(&going.name).await {
                Ok(None) => gone.push(self.going.remove(index)),
                // Still going, or the API server is down: looked at again later.
                _ => index += 1,
            }
        }
        if gone.iter().any(|going| going.disables) {
            let products = self.harness.emulator_get("products").await;
            for going in gone.iter().filter(|going| going.disables) {
                let cloud = products
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["productId"] == going.product.as_str());
                let register_type = cloud.and_then(|p| p["registerType"].as_i64());
                if register_type != Some(0) {
                    return Err(Violation(format!(
                        "{} was deleted with deletionPolicy Disable and is gone, yet {} has registerType {register_type:?}",
                        going.name, going.product
                    )));
                }
            }
        }
        self.free_products
            .extend(gone.into_iter().map(|going| going.product));
        Ok(())
    }

    /// What deletions owed: Secrets of `Retain` resources still there and owned by nobody (the
    /// products of `Disable` ones: [`Soak::reclaim_products`]).
    async fn deletions_done(&self) -> Checked {
        for (namespace, name) in &self.retained {
            let secret = self
                .secrets_in(namespace)
                .get_opt(name)
                .await
                .map_err(|e| Violation(e.to_string()))?
                .ok_or_else(|| Violation(format!("retained Secret {namespace}/{name} is gone")))?;
            if !secret.owner_references().is_empty() {
                return Err(Violation(format!(
                    "retained Secret {namespace}/{name} still has an owner"
                )));
            }
        }
        Ok(())
    }

    /// What is left in a namespace being deleted: resources (their finalizers and Ready
    /// condition) and Secrets with finalizers.
    async fn left_in(&self, namespace: &str) -> String {
        let resources = self
            .registrations_in(namespace)
            .list(&Default::default())
            .await;
        let secrets = self.secrets_in(namespace).list(&Default::default()).await;
        let resources: Vec<String> = resources
            .map(|list| list.items)
            .unwrap_or_default()
            .iter()
            .map(|r| {
                let ready = r.condition("Ready").map(|c| (&c.reason, &c.message));
                format!("{} {:?} {ready:?}", r.name_any(), r.finalizers())
            })
            .collect();
        let secrets: Vec<String> = secrets
            .map(|list| list.items)
            .unwrap_or_default()
            .iter()
            .filter(|secret| !secret.finalizers().is_empty())
            .map(|secret| format!("{} {:?}", secret.name_any(), secret.finalizers()))
            .collect();
        format!("resources left {resources:?}, Secrets held {secrets:?}")
    }

    /// One live resource: status current, Ready (or SecretConflict), the cloud as declared,
    /// its Secret holding the cloud's ProductSecret.
    async fn resource_converged(
        &self,
        name: &str,
        resource: &DynamicRegistration,
        products: &Value,
    ) -> Checked {
        let declared = &self.live[name];
        let status = resource.status.as_ref();
        if status.and_then(|s| s.observed_generation) != resource.metadata.generation {
            return Err(Violation(format!("{name}: status not current")));
        }
        if declared.suspended {
            return Ok(());
        }
        let cloud = products
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["productId"] == declared.product.as_str())
            .cloned()
            .unwrap_or(Value::Null);
        let cloud_secret = cloud["productSecret"].as_str().unwrap_or("");
        // With no ProductSecret there is nothing to publish, so no conflict either.
        if declared.secret_taken && !cloud_secret.is_empty() {
            let reason = resource.condition("Ready").map(|c| c.reason.clone());
            if reason.as_deref() != Some("SecretConflict") {
                return Err(Violation(format!(
                    "{name} names a person's Secret but says {reason:?}"
                )));
            }
            return Ok(());
        }
        let ready = resource.condition("Ready");
        if ready.is_none_or(|c| c.status != "True") {
            let reason = ready.map(|c| (&c.reason, &c.message));
            let via = match declared.web_identity {
                true => "ClusterCredentials",
                false => "its credentials Secret",
            };
            return Err(Violation(format!(
                "{name} (via {via}) not Ready: {reason:?}"
            )));
        }
        if !declared.observe_only {
            let types = [("PreCreate", 1), ("AutoCreate", 2)];
            let wanted = serde_json::to_value(declared.mode).unwrap();
            let wanted_type = types
                .iter()
                .find(|(mode, _)| wanted == *mode)
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
            .secrets_in(&declared.namespace)
            .get_opt(&secret_name)
            .await
            .map_err(|e| Violation(e.to_string()))?;
        if !cloud_secret.is_empty() {
            let data = secret
                .as_ref()
                .map(support::e2e::secret_data)
                .unwrap_or_default();
            let shaped = match declared.template {
                None => cloud_secret.to_owned(),
                Some(template) => format!("{}{cloud_secret}", TEMPLATES[template].2),
            };
            if !data.values().any(|value| *value == shaped) {
                return Err(Violation(format!(
                    "{name}: Secret {secret_name} lacks the ProductSecret"
                )));
            }
        }
        Ok(())
    }

    /// Every namespace of the run is deleted, the harness's too, with the replicas running:
    /// each must finish deleting (no finalizer of ours left behind).
    pub async fn delete_every_namespace(&mut self) -> Checked {
        let names: Vec<String> = self.live.keys().cloned().collect();
        let mut owed = Vec::new();
        for name in &names {
            owed.push(self.owed_by_deletion(name, true).await);
        }
        let namespaces = Api::<Namespace>::all(self.harness.client.clone());
        let mut all = std::mem::take(&mut self.teams);
        all.push(self.harness.namespace.clone());
        for namespace in &all {
            namespaces
                .delete(namespace, &DeleteParams::default())
                .await
                .map_err(|e| Violation(format!("delete namespace {namespace}: {e}")))?;
        }
        for (name, owed) in names.iter().zip(owed) {
            self.forget(name, owed);
        }
        self.retained.clear();
        // A person's Secrets go with the namespace.
        self.person_secrets.clear();
        self.deleted_namespaces.extend(all);
        self.history
            .push("every namespace of the run deleted".to_owned());
        // The ClusterCredentials goes last: a deletion with `Disable` may still need it.
        self.check_converged(NAMESPACES_GONE_BOUND).await?;
        let _ = Api::<ClusterCredentials>::all(self.harness.client.clone())
            .delete(&self.cluster_credentials_name(), &DeleteParams::default())
            .await;
        Ok(())
    }

    /// No secret in any Event, any resource's status or any ClusterCredentials' status: no
    /// SecretKey, no web identity token, no ProductSecret.
    pub async fn check_nothing_secret_shown(&self) -> Checked {
        let client = &self.harness.client;
        let events = Api::<k8s_openapi::api::events::v1::Event>::all(client.clone());
        let events = events.list(&Default::default()).await;
        let resources = Api::<DynamicRegistration>::all(client.clone());
        let resources = resources.list(&Default::default()).await;
        let declared = Api::<ClusterCredentials>::all(client.clone());
        let declared = declared.list(&Default::default()).await;
        let (Ok(events), Ok(resources), Ok(declared)) = (events, resources, declared) else {
            return Err(Violation(
                "Events and statuses could not be read".to_owned(),
            ));
        };
        let shown = serde_json::to_string(&(
            &events.items,
            resources
                .items
                .iter()
                .map(|r| &r.status)
                .collect::<Vec<_>>(),
            declared.items.iter().map(|c| &c.status).collect::<Vec<_>>(),
        ))
        .unwrap();
        let products = self.harness.emulator_get("products").await;
        let product_secrets = products
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["productSecret"].as_str())
            .filter(|secret| !secret.is_empty());
        let mut secrets: Vec<&str> = KEYS.iter().map(|(_, key)| *key).collect();
        secrets.extend(TOKENS);
        if secrets
            .into_iter()
            .chain(product_secrets)
            .any(|secret| shown.contains(secret))
        {
            return Err(Violation("a secret in an Event or a status".to_owned()));
        }
        Ok(())
    }

    /// No secret in any replica's log, stopped ones included: no SecretKey, no web identity
    /// token (and, in the running ones, no ProductSecret).
    pub async fn finish(&mut self) -> Checked {
        for replica in &self.replicas {
            self.harness
                .assert_no_secrets_logged(&replica.process)
                .await;
        }
        let running = self.replicas.iter().map(|replica| replica.process.stderr());
        for log in running.chain(self.stopped_logs.iter().cloned()) {
            if KEYS.iter().any(|(_, key)| log.contains(key)) {
                return Err(Violation("SecretKey in a replica's log".to_owned()));
            }
            if TOKENS.iter().any(|token| log.contains(token)) {
                return Err(Violation(
                    "a web identity token in a replica's log".to_owned(),
                ));
            }
        }
        Ok(())
    }
}
