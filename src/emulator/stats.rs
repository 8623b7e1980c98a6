//! Call counts, the per-(SecretId, service, action) rate limit, and the peak rate seen. An
//! action is named as on the wire for IoT Hub and STS, and `service:Action` for IoT Explorer
//! and IoT Video, whose actions have the same names ([`label`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::cloud::Service;
use crate::cloud::wire::Action;

const WINDOW: Duration = Duration::from_secs(1);

/// How the stats name an action: `DescribeProduct`, `iotexplorer:ModifyProductDynamicRegister`.
pub fn label(service: Service, action: Action) -> String {
    match service {
        Service::IotHub | Service::Sts => action.as_str().to_owned(),
        _ => format!("{service}:{action}"),
    }
}

/// What the emulator has seen since start or the last reset.
#[derive(Debug, Default)]
pub struct Stats {
    calls: BTreeMap<String, BTreeMap<String, u64>>,
    windows: HashMap<(String, Service, Action), CallWindow>,
}

/// Calls of one (SecretId, action) within the last second.
#[derive(Debug, Default)]
struct CallWindow {
    /// Every authenticated call, to measure the peak.
    arrivals: VecDeque<Instant>,
    /// Calls let through, to enforce the limit (refused calls do not use up the quota).
    accepted: VecDeque<Instant>,
    peak: usize,
}

fn forget_older_than_a_second(calls: &mut VecDeque<Instant>, now: Instant) {
    while calls
        .front()
        .is_some_and(|&at| now.duration_since(at) >= WINDOW)
    {
        calls.pop_front();
    }
}

/// One row of the peak table.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Peak {
    /// The key.
    pub secret_id: String,
    /// The action.
    pub action: String,
    /// Most calls seen in any one-second window.
    pub peak_calls_per_second: usize,
}

/// The JSON of `GET /_emulator/stats`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsReport {
    /// Calls by action, then by result (`Success` or the error code).
    pub calls: BTreeMap<String, BTreeMap<String, u64>>,
    /// All calls.
    pub total_calls: u64,
    /// `RequestLimitExceeded` answers.
    pub request_limit_exceeded: u64,
    /// Peak calls per second for each (SecretId, action).
    pub peaks: Vec<Peak>,
    /// The highest peak per action, over all keys.
    pub peak_calls_per_second_by_action: BTreeMap<String, usize>,
    /// The limit enforced, per (SecretId, action).
    pub rate_limit_per_second: u32,
}

impl Stats {
    /// Records an authenticated call and says whether it is within `per_second`.
    pub fn admit(
        &mut self,
        secret_id: &str,
        (service, action): (Service, Action),
        per_second: u32,
        now: Instant,
    ) -> bool {
        let window = self
            .windows
            .entry((secret_id.to_owned(), service, action))
            .or_default();
        forget_older_than_a_second(&mut window.arrivals, now);
        forget_older_than_a_second(&mut window.accepted, now);
        window.arrivals.push_back(now);
        window.peak = window.peak.max(window.arrivals.len());
        if window.accepted.len() >= per_second as usize {
            return false;
        }
        window.accepted.push_back(now);
        true
    }

    /// Counts a call's result.
    pub fn record(&mut self, action: &str, result: &str) {
        *self
            .calls
            .entry(action.to_owned())
            .or_default()
            .entry(result.to_owned())
            .or_default() += 1;
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        *self = Stats::default();
    }

    /// The report served at `/_emulator/stats`.
    pub fn report(&self, rate_limit_per_second: u32) -> StatsReport {
        let mut peaks: Vec<Peak> = self
            .windows
            .iter()
            .map(|((secret_id, service, action), window)| Peak {
                secret_id: secret_id.clone(),
                action: label(*service, *action),
                peak_calls_per_second: window.peak,
            })
            .collect();
        peaks.sort_by(|a, b| (&a.secret_id, &a.action).cmp(&(&b.secret_id, &b.action)));
        let mut by_action = BTreeMap::new();
        for peak in &peaks {
            let best = by_action.entry(peak.action.clone()).or_insert(0);
            *best = peak.peak_calls_per_second.max(*best);
        }
        StatsReport {
            total_calls: self
                .calls
                .values()
                .flat_map(|results| results.values())
                .sum(),
            request_limit_exceeded: self
                .calls
                .values()
                .filter_map(|results| results.get("RequestLimitExceeded"))
                .sum(),
            calls: self.calls.clone(),
            peaks,
            peak_calls_per_second_by_action: by_action,
            rate_limit_per_second,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn enforces_the_limit_over_a_sliding_second() {
        let mut stats = Stats::default();
        let start = Instant::now();
        let admitted = (0..25)
            .filter(|_| {
                stats.admit(
                    "AKID",
                    (Service::IotHub, Action::DescribeProduct),
                    20,
                    start,
                )
            })
            .count();
        assert_eq!(admitted, 20);
        // Another action and another key have their own quota.
        assert!(stats.admit(
            "AKID",
            (Service::IotHub, Action::DescribeProducts),
            20,
            start
        ));
        assert!(stats.admit(
            "AKID2",
            (Service::IotHub, Action::DescribeProduct),
            20,
            start
        ));
        // The same action of two services: two quotas.
        let explorer = (Service::IotExplorer, Action::DescribeProductDynamicRegister);
        let video = (Service::IotVideo, Action::DescribeProductDynamicRegister);
        let both = (0..25)
            .filter(|_| stats.admit("AKID", explorer, 20, start))
            .count()
            + (0..25)
                .filter(|_| stats.admit("AKID", video, 20, start))
                .count();
        assert_eq!(both, 40);
        // Still within the same second.
        assert!(!stats.admit(
            "AKID",
            (Service::IotHub, Action::DescribeProduct),
            20,
            start + Duration::from_millis(999)
        ));
        // A second later the quota is back.
        assert!(stats.admit(
            "AKID",
            (Service::IotHub, Action::DescribeProduct),
            20,
            start + Duration::from_secs(1)
        ));

        let report = stats.report(20);
        assert_eq!(
            report.peak_calls_per_second_by_action["DescribeProduct"],
            26
        );
        assert_eq!(report.rate_limit_per_second, 20);
    }

    #[test]
    fn counts_results() {
        let mut stats = Stats::default();
        stats.record("DescribeProduct", "Success");
        stats.record("DescribeProduct", "RequestLimitExceeded");
        stats.record("UpdateProductDynamicRegister", "Success");
        let report = stats.report(20);
        assert_eq!(report.total_calls, 3);
        assert_eq!(report.request_limit_exceeded, 1);
        assert_eq!(report.calls["DescribeProduct"]["Success"], 1);
    }
}
