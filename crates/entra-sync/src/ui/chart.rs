//! The history chart: created, updated and removed users per run, oldest on the left, as bar
//! geometry the template draws into an inline SVG (no JavaScript, no chart library).

use serde_json::{Value, json};

use crate::store::RunRecord;

/// Runs the chart shows at most: the latest ones.
const CHARTED_RUNS: usize = 40;
/// The drawing area in SVG units; the SVG scales to the page's width.
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 140.0;

/// The counts that make "removed": every rung of the deprovisioning ladder.
const REMOVED: &[&str] = &["disabled", "soft_deleted", "deleted", "purged"];

/// The series, each with its bars `{x, y, width, height, value, run}`, and the largest value.
pub(super) fn runs_chart(runs: &[RunRecord]) -> Value {
    let count = |run: &RunRecord, names: &[&str]| -> u64 {
        names
            .iter()
            .filter_map(|name| run.counts.as_ref()?.get(*name)?.as_u64())
            .sum()
    };
    // `runs` is newest first.
    let charted: Vec<(i64, [u64; 3])> = runs
        .iter()
        .filter(|run| run.counts.is_some())
        .take(CHARTED_RUNS)
        .map(|run| {
            (
                run.run_id,
                [
                    count(run, &["created"]),
                    count(run, &["updated"]),
                    count(run, REMOVED),
                ],
            )
        })
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let max = charted
        .iter()
        .flat_map(|(_, values)| values.iter().copied())
        .max()
        .unwrap_or(0);
    if charted.is_empty() || max == 0 {
        return json!({ "empty": true, "width": WIDTH, "height": HEIGHT });
    }
    let slot = WIDTH / charted.len() as f64;
    let bar = slot / 4.0;
    let series = [
        ("created", "Created"),
        ("updated", "Updated"),
        ("removed", "Removed"),
    ]
    .iter()
    .enumerate()
    .map(|(index, (name, label))| {
        let bars: Vec<Value> = charted
            .iter()
            .enumerate()
            .map(|(position, (run, values))| {
                let value = values[index];
                let height = HEIGHT * value as f64 / max as f64;
                json!({
                    "x": round(position as f64 * slot + bar * (index as f64 + 0.5)),
                    "y": round(HEIGHT - height),
                    "width": round(bar),
                    "height": round(height),
                    "value": value,
                    "run": run,
                })
            })
            .collect();
        json!({ "name": name, "label": label, "bars": bars })
    })
    .collect::<Vec<_>>();
    json!({ "empty": false, "width": WIDTH, "height": HEIGHT, "max": max, "series": series, "runs": charted.len() })
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: i64, counts: Value) -> RunRecord {
        RunRecord {
            run_id: id,
            connection: "contoso".into(),
            trigger: "manual".into(),
            subject: None,
            mode: "delta".into(),
            status: "succeeded".into(),
            started_at: "2026-12-01T10:00:00.000Z".into(),
            finished_at: None,
            counts: Some(counts),
            graph_requests: 3,
            duration_ms: Some(10),
            error: None,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn bars_scale_to_the_largest_count_oldest_first() {
        let runs = [
            run(
                2,
                json!({ "created": 0, "updated": 5, "disabled": 2, "soft_deleted": 3 }),
            ),
            run(1, json!({ "created": 10, "updated": 0 })),
        ];
        let chart = runs_chart(&runs);
        assert_eq!(chart["max"], 10);
        let created = &chart["series"][0]["bars"];
        assert_eq!(created[0]["run"], 1);
        assert_eq!(created[0]["height"], 140.0);
        let removed = &chart["series"][2]["bars"];
        assert_eq!(removed[1]["value"], 5);
        assert_eq!(removed[1]["height"], 70.0);
    }

    #[test]
    fn no_counts_no_chart() {
        assert_eq!(runs_chart(&[])["empty"], true);
        assert_eq!(runs_chart(&[run(1, json!({ "unchanged": 4 }))])["empty"], true);
    }
}
