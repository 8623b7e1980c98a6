//! The `DynamicRegistration` custom resource (`iothub.dynreg.io/v1alpha1`) and its status.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cloud::{RegisterType, Service};

/// Field manager of every write, and value of the `app.kubernetes.io/managed-by` label.
pub const MANAGER: &str = "iothub-dynreg";
/// The annotation asking for a reconcile now (Flux's convention): any new value will do.
pub const REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";
/// Finalizer added while `deletionPolicy: Disable` needs to act before the resource goes.
pub const FINALIZER: &str = "iothub.dynreg.io/disable-registration";

/// Declares the dynamic-registration settings of one Tencent Cloud IoT product (IoT Hub, IoT
/// Explorer or IoT Video: spec.service), and asks for its ProductSecret to be published as a
/// Secret in the same namespace.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "iothub.dynreg.io",
    version = "v1alpha1",
    kind = "DynamicRegistration",
    plural = "dynamicregistrations",
    shortname = "dynreg",
    namespaced,
    status = "DynamicRegistrationStatus",
    derive = "PartialEq",
    doc = "DynamicRegistration keeps the dynamic-registration settings (RegisterType, RegisterLimit) of a Tencent Cloud IoT Hub product equal to its spec, and publishes the product's ProductSecret as a Secret.",
    printcolumn = r#"{"name": "Product", "type": "string", "jsonPath": ".spec.productId"}"#,
    printcolumn = r#"{"name": "Region", "type": "string", "jsonPath": ".spec.region"}"#,
    printcolumn = r#"{"name": "Type", "type": "string", "description": "RegisterType wanted (spec)", "jsonPath": ".spec.registerType"}"#,
    printcolumn = r#"{"name": "Limit", "type": "integer", "description": "RegisterLimit wanted (spec)", "jsonPath": ".spec.registerLimit"}"#,
    printcolumn = r#"{"name": "Cloud-Type", "type": "string", "description": "RegisterType the cloud last reported", "jsonPath": ".status.cloud.registerType"}"#,
    printcolumn = r#"{"name": "Cloud-Limit", "type": "integer", "description": "RegisterLimit the cloud last reported", "jsonPath": ".status.cloud.registerLimit"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name": "Service", "type": "string", "priority": 1, "description": "The product's IoT service", "jsonPath": ".spec.service"}"#,
    printcolumn = r#"{"name": "Secret", "type": "string", "priority": 1, "description": "Secret holding the ProductSecret", "jsonPath": ".status.secretName"}"#,
    printcolumn = r#"{"name": "Synced", "type": "date", "priority": 1, "description": "When the status last changed on a read of the cloud", "jsonPath": ".status.lastSyncTime"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!(has(self.managementPolicy) && self.managementPolicy == 'ObserveOnly' && has(self.deletionPolicy) && self.deletionPolicy == 'Disable')").message("deletionPolicy Disable writes to the cloud, which managementPolicy ObserveOnly never does: use deletionPolicy Orphan, or managementPolicy Full"),
    validation = Rule::new("(has(self.managementPolicy) && self.managementPolicy == 'ObserveOnly') || (has(self.registerType) && has(self.registerLimit))").message("registerType and registerLimit are required unless managementPolicy is ObserveOnly"),
    validation = Rule::new("!(has(self.credentialsSecretRef) && has(self.clusterCredentialsRef))").message("credentialsSecretRef and clusterCredentialsRef are mutually exclusive: name one")
)]
pub struct DynamicRegistrationSpec {
    /// The Tencent Cloud IoT service the product belongs to: IoTHub (default: IoT Hub, API
    /// iotcloud), IoTExplorer (IoT Explorer, iotexplorer) or IoTVideo (IoT Video, iotvideo).
    /// Cannot be changed: a product of another service is another product.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("service is immutable: create another DynamicRegistration to manage a product of another service"))]
    pub service: ProductService,

    /// ID of the product, as shown in the console of its service (e.g. ABCDE12345). Cannot be
    /// changed: to manage another product, create another DynamicRegistration.
    #[x_kube(
        validation = Rule::new("self.size() > 0").message("productId must not be empty"),
        validation = Rule::new("self == oldSelf").message("productId is immutable: create another DynamicRegistration to manage another product")
    )]
    #[schemars(length(max = 64))]
    pub product_id: String,

    /// Tencent Cloud region the product lives in, e.g. ap-guangzhou.
    #[x_kube(
        validation = Rule::new("self.size() > 0").message("region must not be empty (for example ap-guangzhou)"),
        validation = Rule::new("self.matches('^[a-z]+(-[a-z0-9]+)+$')").message("region must look like ap-guangzhou")
    )]
    #[schemars(length(max = 64))]
    pub region: String,

    /// How devices of the product may register themselves: Disabled (0, no dynamic
    /// registration), PreCreate (1, only devices created beforehand) or AutoCreate (2,
    /// registering creates the device). Required unless managementPolicy is ObserveOnly, where
    /// it only says what to compare the cloud with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_registration_mode")]
    pub register_type: Option<RegistrationMode>,

    /// The most devices that may register themselves (0 or more). The cloud may apply another
    /// value than the one asked; status.cloud shows what it applied. Required unless
    /// managementPolicy is ObserveOnly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("registerLimit must be 0 or more"))]
    pub register_limit: Option<i64>,

    /// Secret in this namespace holding the Tencent Cloud API credentials, with keys secretId,
    /// secretKey and, for temporary credentials, token. When absent, the controller's own
    /// credentials are used, if its administrator allowed them for this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,

    /// ClusterCredentials to use (cluster-scoped, declared by the platform team), if they select
    /// this namespace. Mutually exclusive with credentialsSecretRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_credentials_ref: Option<ClusterCredentialsReference>,

    /// Name of the Secret to publish the ProductSecret in (keys productId and productSecret).
    /// Defaults to <metadata.name>-product-secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.size() <= 253 && self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("secretName must be a valid Secret name: lower-case letters, digits, '-' and '.'"))]
    pub secret_name: Option<String>,

    /// Shapes the published Secret for its consumers: key names and extra keys rendered from
    /// templates, its type, labels and annotations. Without it: type Opaque, keys productId and
    /// productSecret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,

    /// Full (default) makes the cloud match the spec. ObserveOnly never writes to the cloud and
    /// only reports differences.
    #[serde(default)]
    pub management_policy: ManagementPolicy,

    /// What happens in the cloud when this resource is deleted: Orphan (default) leaves the
    /// product as it is; Disable sets its RegisterType to 0 first (not with ObserveOnly).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// What happens to the published Secret when this resource is deleted: Delete (default)
    /// lets it go with the resource; Retain keeps it (the controller removes its ownerReference
    /// first), so devices using the ProductSecret outlive the resource.
    #[serde(default)]
    pub secret_retention: SecretRetention,

    /// When true, the controller makes no cloud calls and no writes for this resource.
    #[serde(default)]
    pub suspend: bool,
}

impl DynamicRegistrationSpec {
    /// A spec for `product_id` in `region` with these settings; every optional field at its
    /// default (credentials of the controller, default Secret name, Full, Orphan, not
    /// suspended).
    pub fn new(
        product_id: impl Into<String>,
        region: impl Into<String>,
        register_type: RegistrationMode,
        register_limit: i64,
    ) -> Self {
        Self {
            service: ProductService::default(),
            product_id: product_id.into(),
            region: region.into(),
            register_type: Some(register_type),
            register_limit: Some(register_limit),
            credentials_secret_ref: None,
            cluster_credentials_ref: None,
            secret_name: None,
            secret_template: None,
            management_policy: ManagementPolicy::default(),
            deletion_policy: DeletionPolicy::default(),
            secret_retention: SecretRetention::default(),
            suspend: false,
        }
    }

    /// A spec that only observes `product_id` in `region` and publishes its ProductSecret.
    pub fn observe_only(product_id: impl Into<String>, region: impl Into<String>) -> Self {
        Self {
            register_type: None,
            register_limit: None,
            management_policy: ManagementPolicy::ObserveOnly,
            ..Self::new(product_id, region, RegistrationMode::Disabled, 0)
        }
    }

    /// The same spec, for a product of `service`.
    pub fn in_service(mut self, service: ProductService) -> Self {
        self.service = service;
        self
    }

    /// The same spec, using the credentials Secret `name`.
    pub fn with_credentials(mut self, name: impl Into<String>) -> Self {
        self.credentials_secret_ref = Some(SecretReference { name: name.into() });
        self
    }
}

/// The schema of an optional RegistrationMode: its three names (schemars would list `null`
/// among them, which `kubectl explain` would show as a fourth choice).
fn optional_registration_mode(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": ["Disabled", "PreCreate", "AutoCreate"],
        "nullable": true
    })
}

/// Dynamic-registration type, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RegistrationMode {
    Disabled,
    PreCreate,
    AutoCreate,
}

impl From<RegistrationMode> for RegisterType {
    fn from(mode: RegistrationMode) -> Self {
        match mode {
            RegistrationMode::Disabled => RegisterType::Disabled,
            RegistrationMode::PreCreate => RegisterType::PreCreate,
            RegistrationMode::AutoCreate => RegisterType::AutoCreate,
        }
    }
}

impl From<RegisterType> for RegistrationMode {
    fn from(kind: RegisterType) -> Self {
        match kind {
            RegisterType::Disabled => RegistrationMode::Disabled,
            RegisterType::PreCreate => RegistrationMode::PreCreate,
            RegisterType::AutoCreate => RegistrationMode::AutoCreate,
        }
    }
}

/// A Secret in the resource's own namespace.
#[derive(KubeSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretReference {
    /// Name of the Secret.
    #[x_kube(
        validation = Rule::new("self.size() > 0").message("credentialsSecretRef.name must not be empty"),
        validation = Rule::new("self.size() <= 253 && self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("credentialsSecretRef.name must be a valid Secret name: lower-case letters, digits, '-' and '.'")
    )]
    pub name: String,
}

/// Names a ClusterCredentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
pub struct ClusterCredentialsReference {
    /// Name of the ClusterCredentials.
    #[x_kube(validation = Rule::new("self.size() > 0").message("clusterCredentialsRef.name must not be empty"))]
    pub name: String,
}

/// The IoT service of a product, as a resource names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ProductService {
    /// IoT Hub (`iotcloud`): `DescribeProduct(s)`, `UpdateProductDynamicRegister`.
    #[default]
    IoTHub,
    /// IoT Explorer (`iotexplorer`): `Describe`/`ModifyProductDynamicRegister`.
    IoTExplorer,
    /// IoT Video (`iotvideo`): `Describe`/`ModifyProductDynamicRegister`.
    IoTVideo,
}

impl ProductService {
    /// The cloud service this names.
    pub fn cloud(self) -> Service {
        match self {
            ProductService::IoTHub => Service::IotHub,
            ProductService::IoTExplorer => Service::IotExplorer,
            ProductService::IoTVideo => Service::IotVideo,
        }
    }
}

/// Whether the controller may write to the cloud.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ManagementPolicy {
    #[default]
    Full,
    ObserveOnly,
}

/// The published Secret's shape.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// The Secret's type (default Opaque). A Secret's type cannot change: changing it re-creates
    /// the published Secret.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("self.size() > 0 && self.size() <= 253").message("secretTemplate.type must not be empty"),
        validation = Rule::new("!(self in ['kubernetes.io/service-account-token', 'bootstrap.kubernetes.io/token'])").message("secretTemplate.type kubernetes.io/service-account-token and bootstrap.kubernetes.io/token are refused: Kubernetes fills in or trusts Secrets of those types; use Opaque or a type of your own")
    )]
    pub type_: Option<String>,

    /// Labels and annotations added to the published Secret (app.kubernetes.io/managed-by is
    /// always set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<SecretTemplateMetadata>,

    /// The Secret's keys, each rendered from a template (minijinja, Jinja2 syntax) that may use
    /// productId, productSecret, region, registerType and registerLimit, e.g. PRODUCT_SECRET:
    /// "{{ productSecret }}", or config.json: "{{ {'productId': productId, 'secret':
    /// productSecret} | tojson }}". Default: productId and productSecret. At most 64 keys, each
    /// template at most 8 KiB; rendered, the data may hold at most 1 MiB in all (what a Secret
    /// holds).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 8192}))]
    #[x_kube(validation = Rule::new("self.all(k, k.size() <= 253 && k.matches('^[-._a-zA-Z0-9]+$'))").message("secretTemplate.data keys must be valid Secret keys: letters, digits, '-', '_' and '.'"))]
    pub data: BTreeMap<String, String>,
}

/// Labels and annotations of the published Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
pub struct SecretTemplateMetadata {
    /// Labels to add (at most 32). Keys in the kubernetes.io and k8s.io domains are reserved
    /// for Kubernetes and refused, except the recommended app.kubernetes.io labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 63}))]
    #[x_kube(validation = Rule::new(RESERVED_KEYS_RULE).message("secretTemplate.metadata.labels: keys in the kubernetes.io and k8s.io domains are reserved for Kubernetes (app.kubernetes.io is allowed)"))]
    pub labels: BTreeMap<String, String>,
    /// Annotations to add (at most 32, each value at most 4 KiB). Keys in the kubernetes.io and
    /// k8s.io domains are reserved for Kubernetes and refused, except app.kubernetes.io.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    #[x_kube(validation = Rule::new(RESERVED_KEYS_RULE).message("secretTemplate.metadata.annotations: keys in the kubernetes.io and k8s.io domains are reserved for Kubernetes (app.kubernetes.io is allowed)"))]
    pub annotations: BTreeMap<String, String>,
}

/// The CEL rule a template's label and annotation keys meet: none in the domains Kubernetes
/// reserves (`decision::template::is_reserved_key` is the same rule, for objects stored before
/// it and for `plan`).
const RESERVED_KEYS_RULE: &str = "self.all(k, !k.matches('(?i)^([^/]*\\\\.)?(kubernetes|k8s)\\\\.io/') || k.matches('(?i)^app\\\\.kubernetes\\\\.io/'))";

/// What deleting the resource does to the published Secret.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SecretRetention {
    #[default]
    Delete,
    Retain,
}

/// What deleting the resource does in the cloud.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Orphan,
    Disable,
}

/// Observed state, in kstatus conventions (Ready, Reconciling, Stalled).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DynamicRegistrationStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready: the product matches the spec and the Secret is published. Reconciling: work is
    /// under way or being retried. Stalled: a person must act (see the reason and message).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The settings the cloud last reported for the product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<CloudSettings>,

    /// The Secret holding the ProductSecret, once published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,

    /// When this status last changed after a successful read of the cloud. A resync that finds
    /// nothing new writes nothing, so this is not the time of the last check: the metric
    /// iothub_dynreg_oldest_ready_observation_age_seconds tells that checking goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,

    /// When the cloud state this status was last changed on was read (a snapshot of all products
    /// of the same credentials and region, at most --observe-interval old). Like lastSyncTime it
    /// does not move while nothing changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observation_time: Option<Time>,

    /// RequestId of the last cloud call, for Tencent Cloud support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request_id: Option<String>,

    /// The value of the reconcile.fluxcd.io/requestedAt annotation last handled: setting the
    /// annotation to a new value (as `flux reconcile` or `kubectl annotate --overwrite` do)
    /// reconciles at once with a fresh read of the cloud, and this echoes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

/// Dynamic-registration settings as the cloud reported them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudSettings {
    /// RegisterType in force.
    pub register_type: RegistrationMode,
    /// RegisterLimit in force.
    pub register_limit: i64,
}

impl DynamicRegistration {
    /// The Secret to publish to: spec.secretName or `<name>-product-secret`.
    pub fn published_secret_name(&self) -> String {
        match &self.spec.secret_name {
            Some(name) => name.clone(),
            None => format!(
                "{}-product-secret",
                self.metadata.name.as_deref().unwrap_or_default()
            ),
        }
    }

    /// The reconcile request not handled yet (the annotation's value), if any.
    pub fn pending_reconcile_request(&self) -> Option<&str> {
        let requested = self.metadata.annotations.as_ref()?.get(REQUESTED_AT)?;
        let handled = self
            .status
            .as_ref()
            .and_then(|status| status.last_handled_reconcile_at.as_ref());
        (handled != Some(requested)).then_some(requested.as_str())
    }

    /// A person waits for the next reconcile: the spec changed since the last one, the resource
    /// is being deleted, or a reconcile was requested. (A new resource is not: a bulk import
    /// must not overtake a person's change.)
    pub fn awaited_by_person(&self) -> bool {
        let spec_changed = self.status.as_ref().is_some_and(|status| {
            status.observed_generation.is_some()
                && status.observed_generation < self.metadata.generation
        });
        spec_changed
            || self.metadata.deletion_timestamp.is_some()
            || self.pending_reconcile_request().is_some()
    }

    /// A condition of the current status, by type.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|condition| condition.type_ == type_)
    }
}

/// Whose quota a reconcile will spend, as far as the spec tells without reading anything: the
/// credentials it names (a Secret of its namespace, a ClusterCredentials, or the controller's
/// own) and its region. Reconciles queue per source (a backlog waits in its own queue) and the
/// cloud is read once per source.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CredentialsSource {
    credentials: NamedCredentials,
    region: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum NamedCredentials {
    /// A Secret in the resource's namespace: (namespace, name).
    Secret(String, String),
    /// A ClusterCredentials, by name.
    Cluster(String),
    /// The controller's own.
    Default,
}

impl CredentialsSource {
    /// A short stable name for metrics: the first 12 hex digits of a SHA-256 of the source,
    /// so that no namespace, Secret or ClusterCredentials name shows in clear.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let named = match &self.credentials {
            NamedCredentials::Secret(namespace, name) => format!("secret\0{namespace}\0{name}"),
            NamedCredentials::Cluster(name) => format!("cluster\0{name}"),
            NamedCredentials::Default => "default".to_owned(),
        };
        let digest = Sha256::digest(format!("{named}\0{}", self.region).as_bytes());
        hex::encode(&digest[..6])
    }
}

impl DynamicRegistration {
    /// The credentials source this resource names.
    pub fn credentials_source(&self) -> CredentialsSource {
        let spec = &self.spec;
        let credentials = match (&spec.cluster_credentials_ref, &spec.credentials_secret_ref) {
            (Some(cluster), _) => NamedCredentials::Cluster(cluster.name.clone()),
            (None, Some(secret)) => NamedCredentials::Secret(
                self.metadata.namespace.clone().unwrap_or_default(),
                secret.name.clone(),
            ),
            (None, None) => NamedCredentials::Default,
        };
        CredentialsSource {
            credentials,
            region: spec.region.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_secret_name_follows_the_resource_name() {
        let spec = DynamicRegistrationSpec::new(
            "ABCDE12345",
            "ap-guangzhou",
            RegistrationMode::AutoCreate,
            10,
        );
        let mut resource = DynamicRegistration::new("sensors", spec);
        assert_eq!(resource.published_secret_name(), "sensors-product-secret");
        resource.spec.secret_name = Some("custom".into());
        assert_eq!(resource.published_secret_name(), "custom");
    }

    #[test]
    fn sources_tell_credentials_namespaces_and_regions_apart() {
        let resource = |namespace: &str, credentials: &str, region: &str| {
            let spec = DynamicRegistrationSpec::new("P1", region, RegistrationMode::AutoCreate, 1)
                .with_credentials(credentials);
            let mut resource = DynamicRegistration::new("r", spec);
            resource.metadata.namespace = Some(namespace.to_owned());
            resource.credentials_source()
        };
        let a = resource("fleet", "a", "ap-guangzhou");
        assert_eq!(a, resource("fleet", "a", "ap-guangzhou"));
        assert_ne!(a, resource("fleet", "b", "ap-guangzhou"));
        assert_ne!(a, resource("other", "a", "ap-guangzhou"));
        assert_ne!(a, resource("fleet", "a", "ap-shanghai"));
    }

    #[test]
    fn crd_names_and_scope() {
        let crd = crate::controller::resources::definition();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("dynamicregistrations.iothub.dynreg.io")
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["dynreg".to_owned()]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<_> = version
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            [
                "Product",
                "Region",
                "Type",
                "Limit",
                "Cloud-Type",
                "Cloud-Limit",
                "Ready",
                "Reason",
                "Age",
                "Service",
                "Secret",
                "Synced"
            ]
        );
    }
}
