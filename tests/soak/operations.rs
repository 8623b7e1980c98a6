//! What people and tools do: resources made, changed and deleted, Secrets edited, tokens
//! rotated, namespaces made and deleted.

use iothub_dynreg::controller::resources::{
    ClusterCredentialsReference, DeletionPolicy, FINALIZER, ManagementPolicy, RegistrationMode,
    SecretRetention,
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use rand::Rng;
use serde_json::{Value, json};

use super::support::e2e::registration;
use super::{
    Declared, Going, KEYS, PERSON_SECRETS, PRODUCTS, RUN_LABEL, SHARD_KEY, Soak, TEAMS, TOKENS,
    product_id,
};

/// What a deletion owes: registration switched off, a Secret kept.
#[derive(Default)]
pub struct Owed {
    disables: bool,
    retained: Option<(String, String)>,
}

/// The label of a person's Secrets, to read them all at once.
pub const PERSON_LABEL: &str = "soak.iothub.dynreg.io/person";

/// Shapes of the published Secret: a key, its template, and the text the key holds before
/// the ProductSecret.
pub const TEMPLATES: [(&str, &str, &str); 2] = [
    ("PRODUCT_SECRET", "{{ productSecret }}", ""),
    (
        "device.env",
        "PRODUCT_SECRET={{ productSecret }}",
        "PRODUCT_SECRET=",
    ),
];

impl Soak {
    pub async fn create(&mut self) {
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
        let namespace = match self.teams.len() {
            0 => self.harness.namespace.clone(),
            teams if self.rng.random_bool(0.3) => {
                self.teams[self.rng.random_range(0..teams)].clone()
            }
            _ => self.harness.namespace.clone(),
        };
        let mode = self.random_mode();
        let limit = self.rng.random_range(1..=1000);
        let observe_only = self.rng.random_bool(0.2);
        let suspended = self.rng.random_bool(0.1);
        let web_identity = self.rng.random_bool(0.25);
        let second_shard = self.rng.random_bool(0.3);
        // The API server refuses Disable with ObserveOnly.
        let disable_on_delete = !observe_only && self.rng.random_bool(0.2);
        let retain_secret = self.rng.random_bool(0.2);
        let mut resource = registration(&name, &product, mode, limit);
        if disable_on_delete {
            resource.spec.deletion_policy = DeletionPolicy::Disable;
        }
        if retain_secret {
            resource.spec.secret_retention = SecretRetention::Retain;
        }
        resource.metadata.namespace = Some(namespace.clone());
        if observe_only {
            resource.spec.management_policy = ManagementPolicy::ObserveOnly;
        }
        resource.spec.suspend = suspended;
        if web_identity {
            resource.spec.credentials_secret_ref = None;
            resource.spec.cluster_credentials_ref = Some(ClusterCredentialsReference {
                name: self.cluster_credentials_name(),
            });
        }
        if second_shard {
            resource.metadata.labels = Some([(SHARD_KEY.to_owned(), "shard-2".to_owned())].into());
        }
        self.registrations_in(&namespace)
            .create(&PostParams::default(), &resource)
            .await
            .unwrap_or_else(|e| panic!("create {namespace}/{name}: {e}"));
        let declared = Declared {
            namespace,
            product: product.clone(),
            mode,
            limit,
            observe_only,
            suspended,
            never_managed: (observe_only || suspended) && fresh,
            secret_taken: false,
            web_identity,
            second_shard,
            template: None,
            disable_on_delete,
            retain_secret,
        };
        self.note("create", format!("create {name} {declared:?}"));
        self.live.insert(name, declared);
    }

    fn random_mode(&mut self) -> RegistrationMode {
        [RegistrationMode::PreCreate, RegistrationMode::AutoCreate][self.rng.random_range(0..2)]
    }

    /// A merge patch of the live resource `name`, wherever it lives; whether the API server took
    /// it (its CEL rules refuse some combinations, e.g. `Disable` with `ObserveOnly`).
    async fn patch(&mut self, name: &str, patch: Value) -> bool {
        let api = self.registrations_in(&self.live[name].namespace);
        let patched = api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        if let Err(error) = &patched {
            self.history
                .push(format!("refused: {name} {patch}: {error}"));
        }
        patched.is_ok()
    }

    pub async fn change(&mut self, name: &str) {
        let mode = self.random_mode();
        let limit = self.rng.random_range(1..=1000);
        let register_type = serde_json::to_value(mode).unwrap();
        if !self
            .patch(
                name,
                json!({"spec": {"registerType": register_type, "registerLimit": limit}}),
            )
            .await
        {
            return;
        }
        let declared = self.live.get_mut(name).unwrap();
        declared.mode = mode;
        declared.limit = limit;
        self.note("change", format!("change {name} to {mode:?} {limit}"));
    }

    pub async fn toggle_suspend(&mut self, name: &str) {
        let suspended = !self.live[name].suspended;
        if !self
            .patch(name, json!({"spec": {"suspend": suspended}}))
            .await
        {
            return;
        }
        let declared = self.live.get_mut(name).unwrap();
        declared.suspended = suspended;
        declared.never_managed &= suspended || declared.observe_only;
        self.note("suspend", format!("suspend {name} = {suspended}"));
    }

    pub async fn toggle_observe_only(&mut self, name: &str) {
        let observe_only = !self.live[name].observe_only;
        let policy = if observe_only { "ObserveOnly" } else { "Full" };
        if !self
            .patch(name, json!({"spec": {"managementPolicy": policy}}))
            .await
        {
            return;
        }
        let declared = self.live.get_mut(name).unwrap();
        declared.observe_only = observe_only;
        declared.never_managed &= observe_only || declared.suspended;
        self.note(
            "management policy",
            format!("managementPolicy {name} = {policy}"),
        );
    }

    pub async fn rename_secret(&mut self, name: &str) {
        let secret = format!("{name}-s{}", self.rng.random_range(0..1000));
        if !self
            .patch(name, json!({"spec": {"secretName": secret}}))
            .await
        {
            return;
        }
        self.live.get_mut(name).unwrap().secret_taken = false;
        self.note("secret name", format!("secretName {name} = {secret}"));
    }

    /// The published Secret gets another shape (or none): one key of [`TEMPLATES`], the others
    /// removed (a merge patch merges maps).
    pub async fn change_template(&mut self, name: &str) {
        let template = self.rng.random_range(0..=TEMPLATES.len());
        let template = (template < TEMPLATES.len()).then_some(template);
        let shape = match template {
            None => Value::Null,
            Some(chosen) => {
                let data: serde_json::Map<String, Value> = TEMPLATES
                    .iter()
                    .enumerate()
                    .map(|(index, (key, text, _))| {
                        let value = if index == chosen {
                            json!(text)
                        } else {
                            Value::Null
                        };
                        ((*key).to_owned(), value)
                    })
                    .collect();
                json!({"data": data})
            }
        };
        if !self
            .patch(name, json!({"spec": {"secretTemplate": shape}}))
            .await
        {
            return;
        }
        self.live.get_mut(name).unwrap().template = template;
        self.note(
            "secret template",
            format!("secretTemplate {name} = {template:?}"),
        );
    }

    /// The resource leaves its shard for the other: the label moves, and the other shard's
    /// leader takes it over.
    pub async fn move_to_other_shard(&mut self, name: &str) {
        let second_shard = !self.live[name].second_shard;
        let label = if second_shard {
            json!("shard-2")
        } else {
            Value::Null
        };
        if !self
            .patch(name, json!({"metadata": {"labels": {SHARD_KEY: label}}}))
            .await
        {
            return;
        }
        self.live.get_mut(name).unwrap().second_shard = second_shard;
        let shard = if second_shard { "shard-2" } else { "main" };
        self.note("shard move", format!("{name} moved to shard {shard}"));
    }

    /// The Secret `name` publishes to now, as the API server holds the resource.
    async fn published_secret_of(&self, name: &str) -> Option<String> {
        let api = self.registrations_in(&self.live[name].namespace);
        let resource = api.get_opt(name).await.ok()??;
        Some(resource.published_secret_name())
    }

    /// A person overwrites the ProductSecret in a published Secret: the controller restores it.
    pub async fn edit_published_secret(&mut self, name: &str) {
        if self.live[name].secret_taken {
            return;
        }
        let Some(secret) = self.published_secret_of(name).await else {
            return;
        };
        let tampered = json!({"stringData": {"productSecret": "edited-by-a-person"}});
        let edited = self
            .secrets_in(&self.live[name].namespace)
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
    pub async fn delete_published_secret(&mut self, name: &str) {
        if self.live[name].secret_taken {
            return;
        }
        let Some(secret) = self.published_secret_of(name).await else {
            return;
        };
        let secrets = self.secrets_in(&self.live[name].namespace);
        if secrets
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
    /// resource says SecretConflict, and the person's Secret is never changed. (People's
    /// Secrets are in the harness's namespace, so only its resources take them.)
    pub async fn take_persons_secret(&mut self, name: &str) {
        if self.live[name].namespace != self.harness.namespace {
            return;
        }
        if self.person_secrets.len() >= PERSON_SECRETS {
            let names: Vec<String> = self.person_secrets.keys().cloned().collect();
            let secret = names[self.rng.random_range(0..names.len())].clone();
            if !self
                .patch(name, json!({"spec": {"secretName": secret}}))
                .await
            {
                return;
            }
            self.live.get_mut(name).unwrap().secret_taken = true;
            let what = format!("secretName {name} = {secret} (a person's)");
            self.note("secretName of a person's Secret", what);
            return;
        }
        let secret = format!("person-{}", self.person_secrets.len());
        let value = format!("a person's value {}", self.rng.random_range(0..u32::MAX));
        let object: Secret = serde_json::from_value(json!({
            "metadata": {"name": secret, "labels": {PERSON_LABEL: "true"}},
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
        if !self
            .patch(name, json!({"spec": {"secretName": secret}}))
            .await
        {
            return;
        }
        self.live.get_mut(name).unwrap().secret_taken = true;
        self.note(
            "secretName of a person's Secret",
            format!("secretName {name} = {secret} (a person's)"),
        );
    }

    pub async fn request_reconcile(&mut self, name: &str) {
        let now = format!("{}", self.rng.random_range(0..u32::MAX));
        let annotation =
            json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": now}}});
        if !self.patch(name, annotation).await {
            return;
        }
        self.note("reconcile request", format!("reconcile request {name}"));
    }

    pub async fn toggle_deletion_policy(&mut self, name: &str) {
        let disable = !self.live[name].disable_on_delete;
        let policy = if disable { "Disable" } else { "Orphan" };
        if !self
            .patch(name, json!({"spec": {"deletionPolicy": policy}}))
            .await
        {
            return;
        }
        self.live.get_mut(name).unwrap().disable_on_delete = disable;
        self.note(
            "deletion policy",
            format!("deletionPolicy {name} = {policy}"),
        );
    }

    pub async fn toggle_secret_retention(&mut self, name: &str) {
        let retain = !self.live[name].retain_secret;
        let retention = if retain { "Retain" } else { "Delete" };
        if !self
            .patch(name, json!({"spec": {"secretRetention": retention}}))
            .await
        {
            return;
        }
        self.live.get_mut(name).unwrap().retain_secret = retain;
        self.note(
            "secret retention",
            format!("secretRetention {name} = {retention}"),
        );
    }

    pub async fn delete(&mut self, name: &str) {
        let api = self.registrations_in(&self.live[name].namespace);
        let owed = self.owed_by_deletion(name, false).await;
        if api.delete(name, &DeleteParams::default()).await.is_err() {
            return;
        }
        self.forget(name, owed);
        self.note("delete", format!("delete {name}"));
    }

    /// What deleting `name` now owes, as the API server holds it: with our finalizer on (the
    /// controller saw the spec ask for it), `Disable` of a managed, unsuspended resource turns
    /// registration off, and `Retain` keeps the published Secret (unless the namespace goes
    /// too). Without the finalizer the deletion is immediate and owes nothing.
    pub async fn owed_by_deletion(&mut self, name: &str, with_namespace: bool) -> Owed {
        let declared = &self.live[name];
        let api = self.registrations_in(&declared.namespace);
        let Ok(Some(resource)) = api.get_opt(name).await else {
            return Owed::default();
        };
        let finalized = resource.finalizers().iter().any(|f| f == FINALIZER);
        let spec = &resource.spec;
        let disables = finalized
            && spec.deletion_policy == DeletionPolicy::Disable
            && spec.management_policy == ManagementPolicy::Full
            && !spec.suspend;
        let mut retained = None;
        let retains = spec.secret_retention == SecretRetention::Retain;
        if finalized && retains && !with_namespace && !declared.secret_taken {
            let secret = resource.published_secret_name();
            let secrets = self.secrets_in(&declared.namespace);
            if let Ok(Some(_)) = secrets.get_opt(&secret).await {
                retained = Some((declared.namespace.clone(), secret));
            }
        }
        Owed { disables, retained }
    }

    /// A resource deleted (alone or with its namespace): its product is free once it is gone
    /// (see `reclaim_products`).
    pub fn forget(&mut self, name: &str, owed: Owed) {
        let declared = self.live.remove(name).unwrap();
        self.going.push(Going {
            namespace: declared.namespace,
            name: name.to_owned(),
            product: declared.product,
            disables: owed.disables,
        });
        self.retained.extend(owed.retained);
        self.deleted.push(name.to_owned());
    }

    pub async fn console_edit(&mut self) {
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

    /// TKE rotates the service account token on disk: the provider vouches for both.
    pub fn rotate_token(&mut self) {
        if self.token_refused_until.is_some() {
            return;
        }
        self.token = 1 - self.token;
        self.write_token(TOKENS[self.token]);
        self.note("token rotation", "web identity token rotated".to_owned());
    }

    /// The account's owner rotates the key: the credentials Secret gets the account's other
    /// key (both valid).
    pub async fn rotate_key(&mut self) {
        if self.credentials_outage.is_some() {
            return;
        }
        self.key = 1 - self.key;
        let namespace = self.harness.namespace.clone();
        self.put_credentials(&namespace, KEYS[self.key]).await;
        let (id, _) = KEYS[self.key];
        self.note(
            "key rotation",
            format!("credentials Secret rotated to {id}"),
        );
    }

    /// A team gets a namespace of this run, with its credentials Secret.
    pub async fn create_team_namespace(&mut self) {
        if self.teams.len() >= TEAMS {
            return;
        }
        let name = format!("{}-t{}", self.harness.namespace, self.next_team);
        self.next_team += 1;
        let namespace: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {RUN_LABEL: self.harness.namespace}},
        }))
        .unwrap();
        Api::<Namespace>::all(self.harness.client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        self.put_credentials(&name, KEYS[0]).await;
        self.note("namespace created", format!("namespace {name} created"));
        self.teams.push(name);
    }

    /// A team's namespace is deleted with everything in it: it must finish deleting.
    pub async fn delete_team_namespace(&mut self) {
        if self.teams.is_empty() {
            return;
        }
        let name = self
            .teams
            .swap_remove(self.rng.random_range(0..self.teams.len()));
        // Its deletions could not switch registration off without its credentials (they would
        // wait, as they should, and the namespace with them): not while they are out.
        if let Some(broken) = &self.credentials_outage
            && broken.namespace == name
        {
            self.teams.push(name);
            return;
        }
        let inside: Vec<String> = self
            .live
            .iter()
            .filter(|(_, declared)| declared.namespace == name)
            .map(|(resource, _)| resource.clone())
            .collect();
        let mut owed = Vec::new();
        for resource in &inside {
            owed.push(self.owed_by_deletion(resource, true).await);
        }
        let deleted = Api::<Namespace>::all(self.harness.client.clone())
            .delete(&name, &DeleteParams::default())
            .await;
        if deleted.is_err() {
            self.teams.push(name);
            return;
        }
        for (resource, owed) in inside.iter().zip(owed) {
            self.forget(resource, owed);
        }
        // Secrets kept by earlier deletions go with the namespace.
        self.retained.retain(|(namespace, _)| *namespace != name);
        let what = format!("namespace {name} deleted with {inside:?}");
        self.note("namespace deleted", what);
        self.deleted_namespaces.push(name);
    }
}
