//! Prometheus metrics. Labels are bounded: actions, error codes, results and reasons, never an
//! object name, never a secret.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::cloud::Action;
use crate::cloud::client::CallObserver;
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
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionCodeLabel {
    action: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbCodeLabel {
    verb: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

fn latency_histogram() -> Histogram {
    // 5 ms … ~40 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// The controller's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabel, Counter>,
    reconcile_duration: Histogram,
    cloud_calls: Family<ActionCodeLabel, Counter>,
    cloud_latency: Family<ActionLabel, Histogram, fn() -> Histogram>,
    limiter_wait: Family<ActionLabel, Histogram, fn() -> Histogram>,
    drift_corrected: Counter,
    kube_requests: Family<VerbCodeLabel, Counter>,
    kube_client_wait: Histogram,
    resources: Family<ReasonLabel, Gauge>,
    oldest_observation: Gauge<f64, AtomicU64>,
    census: Mutex<Option<Census>>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `iothub_dynreg` prefix.
    // Length: one registration per metric, with its help text, in the order /metrics lists them.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("iothub_dynreg");
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
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease (or runs without leader election)",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_duration,
            cloud_calls,
            cloud_latency,
            limiter_wait,
            drift_corrected,
            kube_requests,
            kube_client_wait,
            resources,
            oldest_observation,
            census: Mutex::new(None),
            leader,
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

    /// Whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
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
        self.resources.clear();
        for (reason, count) in counts {
            self.resources
                .get_or_create(&ReasonLabel { reason })
                .set(count);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.count_resources();
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl CallObserver for Metrics {
    fn call_finished(&self, action: Action, code: &str, latency: Duration, waited: Duration) {
        let action = action.as_str();
        self.cloud_calls
            .get_or_create(&ActionCodeLabel {
                action,
                code: code.to_owned(),
            })
            .inc();
        self.cloud_latency
            .get_or_create(&ActionLabel { action })
            .observe(latency.as_secs_f64());
        self.limiter_wait
            .get_or_create(&ActionLabel { action })
            .observe(waited.as_secs_f64());
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
        })));
        metrics.call_finished(
            Action::UpdateProductDynamicRegister,
            "Success",
            Duration::from_millis(12),
            Duration::from_millis(50),
        );
        metrics.drift_corrected();
        metrics.set_leader(true);
        let text = metrics.render();
        for expected in [
            "iothub_dynreg_reconciles_total{result=\"settled\"} 1",
            "iothub_dynreg_reconciles_total{result=\"error\"} 1",
            "iothub_dynreg_cloud_calls_total{action=\"UpdateProductDynamicRegister\",code=\"Success\"} 1",
            "iothub_dynreg_cloud_call_duration_seconds_count{action=\"UpdateProductDynamicRegister\"} 1",
            "iothub_dynreg_rate_limiter_wait_seconds_sum{action=\"UpdateProductDynamicRegister\"} 0.05",
            "iothub_dynreg_drift_corrected_total 1",
            "iothub_dynreg_leader 1",
            "iothub_dynreg_resources{reason=\"InSync\"} 2",
            "iothub_dynreg_resources{reason=\"Drifted\"} 1",
            "iothub_dynreg_oldest_ready_observation_age_seconds 1.5",
            "# HELP iothub_dynreg_reconcile_duration_seconds",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }
}
