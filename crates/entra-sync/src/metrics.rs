//! The service's Prometheus metrics, counted as runs end and written in the text exposition
//! format by hand: five series do not justify a metrics framework and its HTTP listener.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::sync::RunSummary;

/// Upper bounds of the run duration histogram, in seconds: from a no-change delta run (tens of
/// milliseconds) to a first full read of a large tenant (tens of minutes).
const DURATION_BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0, 1800.0];

/// Run counts that are not actions applied to the directory.
const NOT_ACTIONS: [&str; 3] = ["unchanged", "skipped", "conflicts"];

/// Counters of the runs this process made; they start at zero with the process, as Prometheus
/// expects of counters.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Series>,
}

#[derive(Debug, Default)]
struct Series {
    /// By (connection, status).
    runs: BTreeMap<(String, String), u64>,
    /// By (connection, kind): the run counts of applied runs, such as `created`.
    actions: BTreeMap<(String, String), u64>,
    graph_requests: BTreeMap<String, u64>,
    durations: BTreeMap<String, Histogram>,
    last_success: BTreeMap<String, f64>,
}

#[derive(Debug, Default)]
struct Histogram {
    /// Observations at or below each bound of `DURATION_BUCKETS`.
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    /// Counts a finished run.
    pub fn record_run(&self, summary: &RunSummary, finished_at: DateTime<Utc>) {
        self.record(summary, Some(finished_at));
    }

    /// Counts a one-user or one-group run like a run, except that it is not the connection's
    /// last successful run: that series tells whether the whole tenant is in step.
    pub fn record_one_object_run(&self, summary: &RunSummary) {
        self.record(summary, None);
    }

    fn record(&self, summary: &RunSummary, finished_at: Option<DateTime<Utc>>) {
        let mut series = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let connection = &summary.connection;
        *series
            .runs
            .entry((connection.clone(), summary.status.to_owned()))
            .or_default() += 1;
        *series.graph_requests.entry(connection.clone()).or_default() += summary.graph_requests;
        let seconds = summary.duration_ms as f64 / 1000.0;
        let histogram = series.durations.entry(connection.clone()).or_default();
        for (bucket, bound) in histogram.buckets.iter_mut().zip(DURATION_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
        if summary.status != "succeeded" {
            return;
        }
        if let Some(finished_at) = finished_at {
            series
                .last_success
                .insert(connection.clone(), finished_at.timestamp_millis() as f64 / 1000.0);
        }
        series.count_actions(summary);
    }

    /// Counts the actions of an approved plan: applied now, by the run a guard stopped.
    pub fn record_approval(&self, summary: &RunSummary) {
        let mut series = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        series.count_actions(summary);
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let series = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut out = String::new();
        header(
            &mut out,
            "entra_sync_runs_total",
            "counter",
            "Sync runs by connection and status.",
        );
        for ((connection, status), value) in &series.runs {
            let _ = writeln!(
                out,
                "entra_sync_runs_total{{connection=\"{}\",status=\"{}\"}} {value}",
                escape(connection),
                escape(status)
            );
        }
        header(
            &mut out,
            "entra_sync_actions_total",
            "counter",
            "Directory changes applied by connection and kind.",
        );
        for ((connection, kind), value) in &series.actions {
            let _ = writeln!(
                out,
                "entra_sync_actions_total{{connection=\"{}\",kind=\"{}\"}} {value}",
                escape(connection),
                escape(kind)
            );
        }
        header(
            &mut out,
            "entra_sync_graph_requests_total",
            "counter",
            "Microsoft Graph requests (token requests included) by connection.",
        );
        for (connection, value) in &series.graph_requests {
            let _ = writeln!(
                out,
                "entra_sync_graph_requests_total{{connection=\"{}\"}} {value}",
                escape(connection)
            );
        }
        header(
            &mut out,
            "entra_sync_run_duration_seconds",
            "histogram",
            "Duration of sync runs by connection.",
        );
        for (connection, histogram) in &series.durations {
            let connection = escape(connection);
            for (bound, value) in DURATION_BUCKETS.iter().zip(histogram.buckets) {
                let _ = writeln!(
                    out,
                    "entra_sync_run_duration_seconds_bucket{{connection=\"{connection}\",le=\"{bound}\"}} {value}"
                );
            }
            let _ = writeln!(
                out,
                "entra_sync_run_duration_seconds_bucket{{connection=\"{connection}\",le=\"+Inf\"}} {}",
                histogram.count
            );
            let _ = writeln!(
                out,
                "entra_sync_run_duration_seconds_sum{{connection=\"{connection}\"}} {}",
                histogram.sum
            );
            let _ = writeln!(
                out,
                "entra_sync_run_duration_seconds_count{{connection=\"{connection}\"}} {}",
                histogram.count
            );
        }
        header(
            &mut out,
            "entra_sync_last_success_timestamp_seconds",
            "gauge",
            "Unix time at which the last successful run of a connection ended.",
        );
        for (connection, value) in &series.last_success {
            let _ = writeln!(
                out,
                "entra_sync_last_success_timestamp_seconds{{connection=\"{}\"}} {value}",
                escape(connection)
            );
        }
        out
    }
}

impl Series {
    fn count_actions(&mut self, summary: &RunSummary) {
        let counts = serde_json::to_value(&summary.counts).unwrap_or_default();
        for (kind, value) in counts.as_object().into_iter().flatten() {
            let value = value.as_u64().unwrap_or(0);
            if value > 0 && !NOT_ACTIONS.contains(&kind.as_str()) {
                *self
                    .actions
                    .entry((summary.connection.clone(), kind.clone()))
                    .or_default() += value;
            }
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a label value as the exposition format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use entra_sync_core::plan::PlanCounts;

    use super::*;

    fn summary(connection: &str, status: &'static str, created: usize, duration_ms: u64) -> RunSummary {
        RunSummary {
            status,
            counts: PlanCounts {
                created,
                unchanged: 4,
                ..PlanCounts::default()
            },
            graph_requests: 3,
            duration_ms,
            ..RunSummary::begun(1, connection, "full")
        }
    }

    #[test]
    fn renders_every_series() {
        let metrics = Metrics::default();
        let end = DateTime::from_timestamp(1_700_000_000, 500_000_000).unwrap_or_default();
        metrics.record_run(&summary("contoso", "succeeded", 5, 500), end);
        metrics.record_run(&summary("contoso", "failed", 9, 3_000), end);
        metrics.record_run(&summary("a\"b", "dry_run", 2, 10), end);
        let text = metrics.render();
        for line in [
            "entra_sync_runs_total{connection=\"contoso\",status=\"succeeded\"} 1",
            "entra_sync_runs_total{connection=\"contoso\",status=\"failed\"} 1",
            "entra_sync_runs_total{connection=\"a\\\"b\",status=\"dry_run\"} 1",
            "entra_sync_actions_total{connection=\"contoso\",kind=\"created\"} 5",
            "entra_sync_graph_requests_total{connection=\"contoso\"} 6",
            "entra_sync_run_duration_seconds_bucket{connection=\"contoso\",le=\"0.25\"} 0",
            "entra_sync_run_duration_seconds_bucket{connection=\"contoso\",le=\"0.5\"} 1",
            "entra_sync_run_duration_seconds_bucket{connection=\"contoso\",le=\"5\"} 2",
            "entra_sync_run_duration_seconds_bucket{connection=\"contoso\",le=\"+Inf\"} 2",
            "entra_sync_run_duration_seconds_sum{connection=\"contoso\"} 3.5",
            "entra_sync_run_duration_seconds_count{connection=\"contoso\"} 2",
            "entra_sync_last_success_timestamp_seconds{connection=\"contoso\"} 1700000000.5",
            "# TYPE entra_sync_run_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|got| got == line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("kind=\"unchanged\""), "{text}");
        assert!(
            !text.contains("connection=\"a\\\"b\",kind"),
            "dry runs apply nothing"
        );
        assert!(
            !text.contains("last_success_timestamp_seconds{connection=\"a"),
            "{text}"
        );
    }
}
