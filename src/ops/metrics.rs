//! Prometheus metrics. Labels are bounded: actions, error codes, results and reasons, never an
//! object name, never a secret.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::cloud::client::CallObserver;
use crate::cloud::{Action, Service};
use crate::ops::kube_client::RequestObserver;

/// Counts the resources in view at each scrape.
pub type Census = Box<dyn Fn() -> Tally + Send + Sync>;

/// What a [`Census`] counts.
#[derive(Debug, Default)]
pub struct Tally {
    /// The reason of every resource's Ready condition (`Unknown` before the first verdict).
    pub reasons: Vec<String>,
    /// How long ago the least recently observed Ready resource read the cloud; `None` when none
    /// is Ready.
    pub oldest_ready_observation: Option<Duration>,
    /// Reconciles waiting for a permit, by admission queue (a digest of credentials source and
    /// region); queues without any left out.
    pub waiting: Vec<(String, usize)>,
    /// Sets of credentials in backoff after the cloud refused them.
    pub credentials_backing_off: usize,
}

/// Queues shown by name in `reconciles_waiting`; the rest are summed under `queue="other"`, so
/// that many tenants cannot grow the label set.
const QUEUES_SHOWN: usize = 16;

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    service: &'static str,
    action: &'static str,
}

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionCodeLabel {
    service: &'static str,
    action: &'static str,
    code: String,
}

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: &'static str,
    revision: &'static str,
}

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbCodeLabel {
    verb: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabel {
    what: &'static str,
}

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

impl ActionLabel {
    fn of((service, action): (Service, Action)) -> Self {
        Self {
            service: service.name(),
            action: action.as_str(),
        }
    }
}

fn latency_histogram() -> Histogram {
    // 5 ms … ~40 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// One metric as registered: what the reference page of the documentation lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricDescription {
    /// Its full name as served (a counter's with `_total`).
    pub name: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// Its help text.
    pub help: String,
    /// The names of its labels, in their order; none for a metric without labels.
    pub labels: Vec<String>,
}

/// What a metric type says of its labels, for [`MetricDescription::labels`].
trait Labelled {
    fn label_names() -> Vec<String> {
        Vec::new()
    }
}

impl<N, A> Labelled for Counter<N, A> {}
impl<N, A> Labelled for Gauge<N, A> {}
impl Labelled for Histogram {}

impl<L, M, C> Labelled for Family<L, M, C>
where
    L: EncodeLabelSet + Default + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync,
    L: 'static,
{
    /// The names as the label set encodes them: a scratch family with one series of the label
    /// set's default values, rendered, read back. Never out of step with the derive.
    fn label_names() -> Vec<String> {
        let scratch = Family::<L, Counter>::default();
        scratch.get_or_create(&L::default()).inc();
        let mut registry = Registry::default();
        registry.register("scratch", "", scratch);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        let labels = text
            .lines()
            .find_map(|line| line.strip_prefix("scratch_total{"))
            .and_then(|line| line.split_once('}'))
            .map_or("", |(labels, _)| labels);
        // The default values hold no comma: "", 0.
        labels
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(name, _)| name.to_owned())
            .collect()
    }
}

/// A registry that remembers what it registers, in order.
struct Registering {
    registry: Registry,
    described: Vec<MetricDescription>,
}

impl Registering {
    fn register<M: Metric + Labelled>(&mut self, name: &str, help: &str, metric: M) {
        let kind = match metric.metric_type() {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            _ => "unknown",
        };
        let suffix = if kind == "counter" { "_total" } else { "" };
        self.described.push(MetricDescription {
            name: format!("iothub_dynreg_{name}{suffix}"),
            kind,
            help: help.to_owned(),
            labels: M::label_names(),
        });
        self.registry.register(name, help, metric);
    }
}

/// The controller's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    descriptions: Vec<MetricDescription>,
    reconciles: Family<ResultLabel, Counter>,
    reconcile_duration: Histogram,
    cloud_calls: Family<ActionCodeLabel, Counter>,
    cloud_latency: Family<ActionLabel, Histogram, fn() -> Histogram>,
    limiter_wait: Family<ActionLabel, Histogram, fn() -> Histogram>,
    entries_skipped: Family<ActionLabel, Counter>,
    drift_corrected: Counter,
    kube_requests: Family<VerbCodeLabel, Counter>,
    kube_client_wait: Histogram,
    resources: Family<ReasonLabel, Gauge>,
    oldest_observation: Gauge<f64, AtomicU64>,
    waiting: Family<QueueLabel, Gauge>,
    credentials_backing_off: Gauge,
    resident_memory: Gauge,
    census: Mutex<Option<Census>>,
    leader: Gauge,
    leader_transitions: Counter,
    secrets_written: Counter,
    protection_refused: Family<RefusedLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `iothub_dynreg` prefix.
    #[expect(
        clippy::too_many_lines,
        reason = "one registration per metric, with its help text, in the order /metrics lists them"
    )]
    pub fn new() -> Self {
        let mut registry = Registering {
            registry: Registry::with_prefix("iothub_dynreg"),
            described: Vec::new(),
        };
        let build_info = Family::<BuildLabel, Gauge>::default();
        registry.register(
            "build_info",
            "Always 1: the controller's version and the git revision it was built from (IOTHUB_DYNREG_REVISION at build time, else unknown)",
            build_info.clone(),
        );
        build_info
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION"),
                revision: option_env!("IOTHUB_DYNREG_REVISION").unwrap_or("unknown"),
            })
            .set(1);
        let reconciles = Family::<ResultLabel, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by result: settled, retrying (transient failure), stalled (needs a person), error (Kubernetes API failure)",
            reconciles.clone(),
        );
        let reconcile_duration = latency_histogram();
        registry.register(
            "reconcile_duration_seconds",
            "Duration of a reconcile, cloud calls and rate-limiter waits included",
            reconcile_duration.clone(),
        );
        let cloud_calls = Family::<ActionCodeLabel, Counter>::default();
        registry.register(
            "cloud_calls",
            "Cloud API calls (attempts) by action and result code (Success or the error code)",
            cloud_calls.clone(),
        );
        let cloud_latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "cloud_call_duration_seconds",
            "Latency of one cloud API attempt, by action",
            cloud_latency.clone(),
        );
        let limiter_wait = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "rate_limiter_wait_seconds",
            "Time a cloud call waited for a token of the client-side rate limiter, by action",
            limiter_wait.clone(),
        );
        let entries_skipped = Family::<ActionLabel, Counter>::default();
        registry.register(
            "cloud_entries_skipped",
            "Entries of a cloud answer that could not be read and were left out, the rest kept (a DescribeProducts product with an unknown RegisterType, a negative limit or null properties: its resource reads it alone with DescribeProduct)",
            entries_skipped.clone(),
        );
        let drift_corrected = Counter::default();
        registry.register(
            "drift_corrected",
            "UpdateProductDynamicRegister calls that made a product match its spec (first setup, spec changes and drift from console edits)",
            drift_corrected.clone(),
        );
        let kube_requests = Family::<VerbCodeLabel, Counter>::default();
        registry.register(
            "kube_requests",
            "Kubernetes API requests (attempts, retries included) by verb and HTTP status code (0: no answer); 429 is the API server's Priority and Fairness turning requests away",
            kube_requests.clone(),
        );
        let kube_client_wait = latency_histogram();
        registry.register(
            "kube_client_wait_seconds",
            "Time a Kubernetes API request waited for the client-side rate limit (--kube-api-qps)",
            kube_client_wait.clone(),
        );
        let resources = Family::<ReasonLabel, Gauge>::default();
        registry.register(
            "resources",
            "DynamicRegistrations by the reason of their Ready condition",
            resources.clone(),
        );
        let oldest_observation = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "oldest_ready_observation_age_seconds",
            "Seconds since the least recently checked Ready resource read the cloud (0 when none is Ready): a resync that finds nothing new writes nothing, so this shows that checking goes on",
            oldest_observation.clone(),
        );
        let waiting = Family::<QueueLabel, Gauge>::default();
        registry.register(
            "reconciles_waiting",
            "Reconciles waiting for a permit in their admission queue (one per credentials source and region, named by a digest; the 16 longest by name, the rest as other)",
            waiting.clone(),
        );
        let credentials_backing_off = Gauge::default();
        registry.register(
            "credentials_backing_off",
            "Sets of credentials the cloud refused (AuthFailure), in backoff: not used until they change or --stalled-retry-interval",
            credentials_backing_off.clone(),
        );
        let resident_memory = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "The controller's resident memory (VmRSS of /proc/self/status) at the scrape",
            resident_memory.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease (or runs without leader election)",
            leader.clone(),
        );
        let leader_transitions = Counter::default();
        registry.register(
            "leader_transitions",
            "Times this replica became the leader",
            leader_transitions.clone(),
        );
        let secrets_written = Counter::default();
        registry.register(
            "secrets_written",
            "Published Secrets written (created, rewritten or re-created)",
            secrets_written.clone(),
        );
        let protection_refused = Family::<RefusedLabel, Gauge>::default();
        registry.register(
            "protection_refused",
            "What the credentials-protection sweep is refused by the API server (401, 403, 422…: RBAC, an admission policy), tried again after a wait that doubles up to 10 min: what=secrets, credentials Secrets whose in-use finalizer it may not read or take off; what=census, 1 while a shard's listing of Secrets is refused",
            protection_refused.clone(),
        );
        for what in ["secrets", "census"] {
            protection_refused
                .get_or_create(&RefusedLabel { what })
                .set(0);
        }
        Self {
            registry: registry.registry,
            descriptions: registry.described,
            reconciles,
            reconcile_duration,
            cloud_calls,
            cloud_latency,
            limiter_wait,
            entries_skipped,
            drift_corrected,
            kube_requests,
            kube_client_wait,
            resources,
            oldest_observation,
            waiting,
            credentials_backing_off,
            resident_memory,
            census: Mutex::new(None),
            leader,
            leader_transitions,
            secrets_written,
            protection_refused,
        }
    }

    /// Counts a reconcile by its result (`settled`, `retrying`, `stalled`, `error`) and its
    /// duration.
    pub fn reconciled(&self, result: &'static str, duration: Duration) {
        self.reconciles.get_or_create(&ResultLabel { result }).inc();
        self.reconcile_duration.observe(duration.as_secs_f64());
    }

    /// Counts an update that corrected drift.
    pub fn drift_corrected(&self) {
        self.drift_corrected.inc();
    }

    /// Whether this replica leads; becoming the leader counts as a transition.
    pub fn set_leader(&self, leading: bool) {
        let was = self.leader.set(i64::from(leading));
        if leading && was == 0 {
            self.leader_transitions.inc();
        }
    }

    /// Counts a published Secret written.
    pub fn secret_written(&self) {
        self.secrets_written.inc();
    }

    /// What the protection sweep is refused now: how many Secrets, and whether the census.
    pub fn set_protection_refused(&self, secrets: usize, census: bool) {
        let gauge = |what| {
            self.protection_refused
                .get_or_create(&RefusedLabel { what })
        };
        gauge("secrets").set(i64::try_from(secrets).unwrap_or(i64::MAX));
        gauge("census").set(i64::from(census));
    }

    /// Where the `resources` gauge is counted from, while the controller watches (`None` when it
    /// stops).
    pub fn set_census(&self, census: Option<Census>) {
        *self.census.lock().unwrap_or_else(|e| e.into_inner()) = census;
    }

    /// Recounts resources by Ready reason and the oldest observation, just before a scrape.
    fn count_resources(&self) {
        let census = self.census.lock().unwrap_or_else(|e| e.into_inner());
        let tally = census.as_ref().map(|census| census()).unwrap_or_default();
        let mut counts = std::collections::BTreeMap::<String, i64>::new();
        for reason in tally.reasons {
            *counts.entry(reason).or_default() += 1;
        }
        let oldest = tally.oldest_ready_observation.unwrap_or_default();
        self.oldest_observation.set(oldest.as_secs_f64());
        self.credentials_backing_off
            .set(i64::try_from(tally.credentials_backing_off).unwrap_or(i64::MAX));
        self.waiting.clear();
        for (queue, count) in shown_queues(tally.waiting) {
            self.waiting
                .get_or_create(&QueueLabel { queue })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        self.resources.clear();
        for (reason, count) in counts {
            self.resources
                .get_or_create(&ReasonLabel { reason })
                .set(count);
        }
    }

    /// Every metric, in the order `/metrics` lists them.
    pub fn descriptions(&self) -> &[MetricDescription] {
        &self.descriptions
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.count_resources();
        if let Some(bytes) = resident_bytes() {
            self.resident_memory
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The process's resident memory, from Linux's /proc (elsewhere: none).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The [`QUEUES_SHOWN`] queues with the most waiting, and the rest summed as `other` (always
/// there, 0 when there is no rest: the metric exists before any queue does).
fn shown_queues(mut waiting: Vec<(String, usize)>) -> Vec<(String, usize)> {
    waiting.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let rest = waiting.split_off(QUEUES_SHOWN.min(waiting.len()));
    waiting.push(("other".to_owned(), rest.iter().map(|(_, n)| n).sum()));
    waiting
}

/// The OpenMetrics exposition in Prometheus's classic text format (0.0.4): a counter's HELP and
/// TYPE name it with its `_total` as its samples do, and there is no `# EOF`.
pub fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let comment = ["# HELP ", "# TYPE "]
            .into_iter()
            .find(|prefix| line.starts_with(prefix));
        match comment {
            Some(prefix) => {
                let rest = &line[prefix.len()..];
                let name = rest.split(' ').next().unwrap_or("");
                text.push_str(prefix);
                text.push_str(name);
                if counters.contains(name) {
                    text.push_str("_total");
                }
                text.push_str(&rest[name.len()..]);
            }
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

impl CallObserver for Metrics {
    fn call_finished(
        &self,
        api: (Service, Action),
        code: &str,
        latency: Duration,
        waited: Duration,
    ) {
        let labels = ActionLabel::of(api);
        self.cloud_calls
            .get_or_create(&ActionCodeLabel {
                service: labels.service,
                action: labels.action,
                code: code.to_owned(),
            })
            .inc();
        self.cloud_latency
            .get_or_create(&labels)
            .observe(latency.as_secs_f64());
        self.limiter_wait
            .get_or_create(&labels)
            .observe(waited.as_secs_f64());
    }

    fn entry_skipped(&self, api: (Service, Action)) {
        self.entries_skipped
            .get_or_create(&ActionLabel::of(api))
            .inc();
    }
}

impl RequestObserver for Metrics {
    fn request_finished(&self, verb: &'static str, code: u16, waited: Duration) {
        self.kube_requests
            .get_or_create(&VerbCodeLabel { verb, code })
            .inc();
        self.kube_client_wait.observe(waited.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_description_names_the_labels_its_series_carry() {
        let metrics = Metrics::new();
        let labels = |name: &str| {
            metrics
                .descriptions()
                .iter()
                .find(|metric| metric.name == name)
                .map(|metric| metric.labels.clone())
                .unwrap_or_else(|| panic!("{name} not described"))
        };
        assert_eq!(labels("iothub_dynreg_build_info"), ["version", "revision"]);
        assert_eq!(
            labels("iothub_dynreg_cloud_calls_total"),
            ["service", "action", "code"]
        );
        assert_eq!(
            labels("iothub_dynreg_kube_requests_total"),
            ["verb", "code"]
        );
        assert_eq!(labels("iothub_dynreg_protection_refused"), ["what"]);
        assert!(labels("iothub_dynreg_reconcile_duration_seconds").is_empty());
        assert!(labels("iothub_dynreg_leader").is_empty());
    }

    #[test]
    fn renders_prometheus_text_with_bounded_labels() {
        let metrics = Metrics::new();
        metrics.reconciled("settled", Duration::from_millis(30));
        metrics.reconciled("error", Duration::from_millis(3));
        metrics.set_census(Some(Box::new(|| Tally {
            reasons: vec![
                "InSync".to_owned(),
                "InSync".to_owned(),
                "Drifted".to_owned(),
            ],
            oldest_ready_observation: Some(Duration::from_millis(1500)),
            waiting: (0..20).map(|i| (format!("queue{i:02}"), i + 1)).collect(),
            credentials_backing_off: 2,
        })));
        metrics.call_finished(
            (Service::IotHub, Action::UpdateProductDynamicRegister),
            "Success",
            Duration::from_millis(12),
            Duration::from_millis(50),
        );
        metrics.drift_corrected();
        metrics.secret_written();
        metrics.set_leader(true);
        metrics.set_leader(false);
        metrics.set_leader(true);
        metrics.set_leader(true);
        let text = metrics.render();
        for expected in [
            "iothub_dynreg_reconciles_total{result=\"settled\"} 1",
            "iothub_dynreg_reconciles_total{result=\"error\"} 1",
            "iothub_dynreg_cloud_calls_total{service=\"iotcloud\",action=\"UpdateProductDynamicRegister\",code=\"Success\"} 1",
            "iothub_dynreg_cloud_call_duration_seconds_count{service=\"iotcloud\",action=\"UpdateProductDynamicRegister\"} 1",
            "iothub_dynreg_rate_limiter_wait_seconds_sum{service=\"iotcloud\",action=\"UpdateProductDynamicRegister\"} 0.05",
            "iothub_dynreg_drift_corrected_total 1",
            "iothub_dynreg_leader 1",
            "iothub_dynreg_resources{reason=\"InSync\"} 2",
            "iothub_dynreg_resources{reason=\"Drifted\"} 1",
            "iothub_dynreg_oldest_ready_observation_age_seconds 1.5",
            "# HELP iothub_dynreg_reconcile_duration_seconds",
            "iothub_dynreg_credentials_backing_off 2",
            "iothub_dynreg_leader_transitions_total 2",
            "iothub_dynreg_secrets_written_total 1",
            // The 16 longest queues by name, the other four (1 + 2 + 3 + 4 waiting) summed.
            "iothub_dynreg_reconciles_waiting{queue=\"queue19\"} 20",
            "iothub_dynreg_reconciles_waiting{queue=\"queue04\"} 5",
            "iothub_dynreg_reconciles_waiting{queue=\"other\"} 10",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        let queues = text.matches("iothub_dynreg_reconciles_waiting{").count();
        assert_eq!(queues, QUEUES_SHOWN + 1);
        assert!(text.contains("iothub_dynreg_build_info{version=\""));
        let resident = text
            .lines()
            .find_map(|line| line.strip_prefix("iothub_dynreg_process_resident_memory_bytes "))
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap();
        assert!(resident > 1 << 20, "{resident} bytes resident");
    }

    #[test]
    fn the_classic_text_names_counters_with_their_total() {
        let metrics = Metrics::new();
        metrics.reconciled("settled", Duration::from_millis(30));
        let classic = classic_text(&metrics.render());
        assert!(classic.contains("# HELP iothub_dynreg_reconciles_total Reconciles by result"));
        assert!(classic.contains("# TYPE iothub_dynreg_reconciles_total counter\n"));
        assert!(classic.contains("iothub_dynreg_reconciles_total{result=\"settled\"} 1\n"));
        // Gauges and histograms keep their names.
        assert!(classic.contains("# TYPE iothub_dynreg_leader gauge\n"));
        assert!(classic.contains("# TYPE iothub_dynreg_reconcile_duration_seconds histogram\n"));
        assert!(!classic.contains("# EOF"));
    }
}
