//! The `check` command's wiring: where the credentials come from (the environment as for `run`,
//! a file, a Secret or ClusterCredentials in the cluster, or the built-in emulator), what is
//! checked (products and regions named, or those of manifests), and how the report is printed.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::{Request, report};
use crate::cloud::limit::RateLimits;
use crate::cloud::web_identity::{WebIdentity, WebIdentityCredentials};
use crate::cloud::{ClientConfig, CloudClient, Credentials, Endpoint, Service};
use crate::controller::credentials;
use crate::controller::decision::problem_verdict;
use crate::controller::resources::{ClusterCredentials, ProductService};
use crate::preview::command::{emulator, from_file};
use crate::preview::manifests;

/// The region checked when neither `--region` nor a manifest names one.
pub const DEFAULT_REGION: &str = "ap-guangzhou";

/// What is checked against.
#[derive(Clone, Debug)]
// Made once per command: the size of a variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Target {
    /// The IoT Hub API at `endpoint`, with credentials from `source`.
    Cloud {
        source: Source,
        endpoint: Endpoint,
        /// The STS endpoint (`None`: the one of the endpoint's site).
        sts_endpoint: Option<Endpoint>,
    },
    /// The built-in emulator, from this seed (the example seed when `None`), its first account.
    Emulator(Option<PathBuf>),
}

/// Where the credentials to check come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// `TENCENTCLOUD_SECRET_ID`/`_SECRET_KEY`/`_SESSION_TOKEN`, else TKE's web identity, as
    /// `run` reads them.
    Environment,
    /// A file holding what the credentials Secret holds.
    File(PathBuf),
    /// A credentials Secret in the cluster of the current kubeconfig.
    Secret { namespace: String, name: String },
    /// ClusterCredentials in the cluster of the current kubeconfig.
    ClusterCredentials(String),
}

/// How the report is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Lines for a terminal.
    Text,
    /// Stable JSON, for CI.
    Json,
}

/// Everything the command needs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The cloud and credentials, or the emulator.
    pub target: Target,
    /// The client's limits.
    pub rate_limits: RateLimits,
    /// `--region`: regions to list.
    pub regions: Vec<String>,
    /// `--product`: products to read in each region.
    pub products: Vec<String>,
    /// `-f`: manifests whose products and regions are checked.
    pub manifests: Vec<PathBuf>,
    /// `--write-back`.
    pub write_back: bool,
    /// How to print.
    pub output: Output,
}

/// Runs the check and prints it; the exit status, or why there is no check.
pub async fn run(options: Options) -> Result<u8, String> {
    let request = request(&options)?;
    // The emulator is kept alive until the check is made.
    let (client, credentials, source, _emulator) = match &options.target {
        Target::Emulator(seed) => {
            let (endpoint, credentials, running) = emulator::start(seed.as_deref()).await?;
            let client = client_for(&options, endpoint.clone(), endpoint)?;
            let source = match seed {
                Some(path) => format!("emulator, seed {}", path.display()),
                None => "emulator, example seed".to_owned(),
            };
            (client, credentials, source, Some(running))
        }
        Target::Cloud {
            source,
            endpoint,
            sts_endpoint,
        } => {
            let sts = sts_endpoint.clone();
            let sts = sts.unwrap_or_else(|| endpoint.matching_sts());
            let client = client_for(&options, endpoint.clone(), sts)?;
            let (credentials, source) = resolve(source, &client).await?;
            (client, credentials, source, None)
        }
    };
    let checked = super::check(&client, &credentials, &request).await;
    match options.output {
        Output::Text => print!("{}", report::text(&checked, &source)),
        Output::Json => println!("{:#}", report::json(&checked, &source)),
    }
    Ok(checked.exit_code())
}

fn client_for(
    options: &Options,
    endpoint: Endpoint,
    sts_endpoint: Endpoint,
) -> Result<CloudClient, String> {
    CloudClient::new(ClientConfig {
        endpoint,
        sts_endpoint,
        rate_limits: options.rate_limits.clone(),
        ..ClientConfig::default()
    })
    .map_err(|error| error.to_string())
}

/// The regions and products to check: those named, and those of the manifests.
fn request(options: &Options) -> Result<Request, String> {
    let mut regions = options.regions.clone();
    let mut products = Vec::new();
    if !options.manifests.is_empty() {
        let inputs = manifests::read(&options.manifests, &mut std::io::stdin().lock())
            .map_err(|error| error.to_string())?;
        for manifest in &inputs.manifests {
            let field = |name: &str| manifest.object.pointer(name).and_then(|v| v.as_str());
            // An unknown service is the schema's to refuse (plan says so); IoT Hub here.
            let service = field("/spec/service")
                .and_then(|name| serde_json::from_value::<ProductService>(name.into()).ok())
                .unwrap_or_default()
                .cloud();
            if let (Some(product), Some(region)) = (field("/spec/productId"), field("/spec/region"))
            {
                products.push((service, region.to_owned(), product.to_owned()));
                regions.push(region.to_owned());
            }
        }
    }
    if regions.is_empty() {
        regions.push(DEFAULT_REGION.to_owned());
    }
    regions.sort();
    regions.dedup();
    for product in &options.products {
        for region in &options.regions {
            products.push((Service::IotHub, region.clone(), product.clone()));
        }
        if options.regions.is_empty() {
            products.push((Service::IotHub, DEFAULT_REGION.to_owned(), product.clone()));
        }
    }
    products.sort();
    products.dedup();
    Ok(Request {
        regions,
        products,
        write_back: options.write_back,
    })
}

/// The credentials `source` names, and how the report names the source.
async fn resolve(source: &Source, client: &CloudClient) -> Result<(Credentials, String), String> {
    match source {
        Source::Environment => from_environment(client).await,
        Source::File(path) => Ok((from_file(path)?, format!("file {}", path.display()))),
        Source::Secret { namespace, name } => {
            let credentials = from_secret(namespace, name).await?;
            Ok((credentials, format!("Secret {namespace}/{name}")))
        }
        Source::ClusterCredentials(name) => {
            let credentials = from_cluster_credentials(name, client).await?;
            Ok((credentials, format!("ClusterCredentials {name}")))
        }
    }
}

/// The keys of the environment, else the temporary credentials of TKE's web identity.
async fn from_environment(client: &CloudClient) -> Result<(Credentials, String), String> {
    let environment = |name: &str| std::env::var(name).ok();
    if let Some(keys) = credentials::default::from_environment(environment) {
        return Ok((keys, "environment".to_owned()));
    }
    let Some(identity) = WebIdentity::from_tke_environment(environment)? else {
        return Err("no credentials: set TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY (and TENCENTCLOUD_SESSION_TOKEN for temporary ones) or TKE_ROLE_ARN and its companions, pass --credentials-file, --secret or --cluster-credentials, or check against the built-in emulator with --emulator".to_owned());
    };
    let role = identity.role_arn.clone();
    Ok((
        exchange(identity, client).await?,
        format!("web identity, role {role}"),
    ))
}

/// Temporary credentials for a web identity, from STS.
async fn exchange(identity: WebIdentity, client: &CloudClient) -> Result<Credentials, String> {
    WebIdentityCredentials::new(identity, client.clone())
        .credentials()
        .await
        .map_err(|failure| {
            format!(
                "STS gave no credentials for the web identity: {}",
                failure.message
            )
        })
}

/// The credentials Secret `namespace/name`, read through the current kubeconfig.
async fn from_secret(namespace: &str, name: &str) -> Result<Credentials, String> {
    let client = kube_client().await?;
    let secret = Api::<Secret>::namespaced(client, namespace)
        .get(name)
        .await
        .map_err(|error| format!("cannot read Secret {namespace}/{name}: {error}"))?;
    credentials::secret::from_secret_data(name, secret.data.as_ref())
        .map_err(|problem| problem_verdict(&problem).message)
}

/// The credentials ClusterCredentials `name` declare: their Secret, or their web identity
/// (whose token file must be readable here, as in the controller's pod).
async fn from_cluster_credentials(name: &str, client: &CloudClient) -> Result<Credentials, String> {
    let kube = kube_client().await?;
    let declared = Api::<ClusterCredentials>::all(kube)
        .get(name)
        .await
        .map_err(|error| format!("cannot read ClusterCredentials {name}: {error}"))?;
    if let Some(secret) = &declared.spec.secret_ref {
        return from_secret(&secret.namespace, &secret.name).await;
    }
    let Some(source) = &declared.spec.web_identity else {
        return Err(format!(
            "ClusterCredentials {name} name neither secretRef nor webIdentity"
        ));
    };
    let identity =
        credentials::cluster::web_identity(source, |variable| std::env::var(variable).ok())
            .map_err(|detail| format!("ClusterCredentials {name}: {detail}"))?;
    exchange(identity, client).await
}

async fn kube_client() -> Result<kube::Client, String> {
    kube::Client::try_default().await.map_err(|error| {
        format!("cannot reach the Kubernetes API (kubeconfig or in-cluster config): {error}")
    })
}
