//! What the runs going on right now have done so far, per connection: the admin UI polls it to
//! show a sync's progress (pages read, actions applied, an estimate of the time left) while the
//! run itself only reports `ProgressEvent`s.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::sync::ProgressEvent;

/// The runs in progress, shared between the `Runner` that feeds them and the pages that read them.
#[derive(Clone, Default)]
pub struct LiveRuns {
    runs: Arc<Mutex<BTreeMap<String, LiveRun>>>,
}

/// One run in progress.
#[derive(Debug, Clone)]
struct LiveRun {
    started: Instant,
    started_at: DateTime<Utc>,
    users: u64,
    groups: u64,
    pages: u64,
    /// Set once the plan is ready: the actions to apply, and when applying began.
    applying: Option<(u64, Instant)>,
    applied: u64,
}

/// A run's progress as a page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LiveProgress {
    pub started_at: DateTime<Utc>,
    pub elapsed_seconds: u64,
    /// `reading` while Graph pages arrive, `applying` once the plan is ready.
    pub phase: &'static str,
    pub users_read: u64,
    pub groups_read: u64,
    pub pages_read: u64,
    pub actions_total: Option<u64>,
    pub actions_applied: u64,
    /// Seconds left, when there is enough to go on.
    pub seconds_left: Option<u64>,
}

impl LiveRuns {
    /// Starts tracking a run of `connection`, replacing whatever an earlier run left.
    pub fn begin(&self, connection: &str, now: DateTime<Utc>) {
        let run = LiveRun {
            started: Instant::now(),
            started_at: now,
            users: 0,
            groups: 0,
            pages: 0,
            applying: None,
            applied: 0,
        };
        self.lock().insert(connection.to_owned(), run);
    }

    /// Records one progress event of the connection's run.
    pub fn report(&self, connection: &str, event: ProgressEvent) {
        let mut runs = self.lock();
        let Some(run) = runs.get_mut(connection) else {
            return;
        };
        match event {
            ProgressEvent::Fetched { users, groups, pages } => {
                run.users = users;
                run.groups = groups;
                run.pages = pages;
            }
            ProgressEvent::Planned { actions } => run.applying = Some((actions, Instant::now())),
            ProgressEvent::Applied { done, .. } => run.applied = done,
        }
    }

    /// Stops tracking the connection's run: it has ended and the history has its result.
    pub fn end(&self, connection: &str) {
        self.lock().remove(connection);
    }

    /// The progress of the connection's run, if one is going. `expected_users` (what the last
    /// good read found) lets the reading phase estimate its time left.
    pub fn progress(&self, connection: &str, expected_users: Option<u64>) -> Option<LiveProgress> {
        let runs = self.lock();
        let run = runs.get(connection)?;
        let elapsed = run.started.elapsed();
        let (phase, seconds_left) = match run.applying {
            None => (
                "reading",
                expected_users.and_then(|expected| estimate(elapsed, run.users, expected)),
            ),
            Some((total, since)) => ("applying", estimate(since.elapsed(), run.applied, total)),
        };
        Some(LiveProgress {
            started_at: run.started_at,
            elapsed_seconds: elapsed.as_secs(),
            phase,
            users_read: run.users,
            groups_read: run.groups,
            pages_read: run.pages,
            actions_total: run.applying.map(|(total, _)| total),
            actions_applied: run.applied,
            seconds_left,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, LiveRun>> {
        // The map holds plain counters: one a panicking thread left half-written is still usable.
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The time left at the rate so far: `done` of `total` took `elapsed`. Nothing before the first
/// unit of work, since a rate of zero says nothing.
fn estimate(elapsed: Duration, done: u64, total: u64) -> Option<u64> {
    if done == 0 || total == 0 {
        return None;
    }
    let left = total.saturating_sub(done);
    Some((elapsed.as_secs_f64() * left as f64 / done as f64).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_follows_the_rate_so_far() {
        let ten = Duration::from_secs(10);
        assert_eq!(estimate(ten, 0, 100), None);
        assert_eq!(estimate(ten, 50, 0), None);
        assert_eq!(estimate(ten, 25, 100), Some(30));
        assert_eq!(estimate(ten, 100, 100), Some(0));
        assert_eq!(estimate(ten, 120, 100), Some(0));
    }

    #[test]
    fn a_run_is_tracked_from_begin_to_end() {
        let live = LiveRuns::default();
        assert!(live.progress("contoso", None).is_none());
        live.begin("contoso", crate::clock::now());
        live.report(
            "contoso",
            ProgressEvent::Fetched {
                users: 999,
                groups: 4,
                pages: 2,
            },
        );
        let reading = live.progress("contoso", Some(2_000)).expect("a run");
        assert_eq!(
            (reading.phase, reading.users_read, reading.pages_read),
            ("reading", 999, 2)
        );
        live.report("contoso", ProgressEvent::Planned { actions: 40 });
        live.report("contoso", ProgressEvent::Applied { done: 10, total: 40 });
        let applying = live.progress("contoso", None).expect("a run");
        assert_eq!(
            (applying.phase, applying.actions_total, applying.actions_applied),
            ("applying", Some(40), 10)
        );
        live.end("contoso");
        assert!(live.progress("contoso", None).is_none());
    }
}
