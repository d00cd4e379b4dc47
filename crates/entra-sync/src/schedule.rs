//! When a connection's next scheduled run is due: a pure function of the schedule and a time, plus
//! the deterministic jitter that spreads connections sharing one schedule. The loop that sleeps
//! until then is in `serve`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::config::Schedule;

/// The most a connection's runs are shifted to spread connections that share a schedule.
const MAX_JITTER: Duration = Duration::from_secs(60);

impl Schedule {
    /// The first run time strictly after `after`, or `None` for a cron expression that never
    /// matches (such as the 30th of February), which validation cannot see.
    ///
    /// Interval runs fall on a fixed grid: multiples of the interval counted from midnight UTC of
    /// 1970-01-01 plus `start_at`. So `every 2h` with `start_at = "01:00"` runs at 01:00, 03:00, ...
    /// every day, and an interval that does not divide a day keeps its period across midnight
    /// instead of restarting at `start_at`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every {
                seconds,
                start_at_minutes,
            } => {
                let interval = i64::try_from(*seconds).ok()?;
                let anchor = i64::from(start_at_minutes.unwrap_or(0)) * 60;
                // Whole seconds: a fractional `after` rounds down, and the next grid point is
                // still strictly later.
                let periods = (after.timestamp() - anchor).div_euclid(interval) + 1;
                DateTime::from_timestamp(anchor.checked_add(periods.checked_mul(interval)?)?, 0)
            }
            Schedule::Cron(expression) => croner::Cron::from_str(expression)
                .ok()?
                .find_next_occurrence(&after, false)
                .ok(),
        }
    }

    /// The time between the run after `after` and the one following it: the interval, or for a
    /// cron expression the gap it has at that point.
    pub fn period_after(&self, after: DateTime<Utc>) -> Option<Duration> {
        let next = self.next_after(after)?;
        let following = self.next_after(next)?;
        (following - next).to_std().ok()
    }
}

/// How far a connection's runs are shifted when other connections share its schedule: a stable
/// hash of the name, so the spread is the same after a restart, of at most a tenth of the period
/// and at most a minute.
pub fn jitter(connection: &str, period: Duration) -> Duration {
    let max_ms = (period / 10).min(MAX_JITTER).as_millis() as u64;
    if max_ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(fnv1a(connection.as_bytes()) % (max_ms + 1))
}

/// FNV-1a: stable across Rust versions and platforms, unlike `std`'s `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The jittered time of a run due at `due`.
pub fn jittered(due: DateTime<Utc>, jitter: Duration) -> DateTime<Utc> {
    due + TimeDelta::from_std(jitter).unwrap_or(TimeDelta::zero())
}

impl fmt::Display for Schedule {
    /// The schedule as the config file writes it, with the start time when there is one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Every {
                seconds,
                start_at_minutes,
            } => {
                let (number, unit) = [(86_400, "d"), (3_600, "h"), (60, "m")]
                    .into_iter()
                    .find(|(unit, _)| seconds % unit == 0)
                    .map_or((*seconds, "s"), |(unit, name)| (seconds / unit, name));
                write!(f, "every {number}{unit}")?;
                if let Some(minutes) = start_at_minutes {
                    write!(f, " from {:02}:{:02}", minutes / 60, minutes % 60)?;
                }
                Ok(())
            }
            Schedule::Cron(expression) => f.write_str(expression),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap_or_else(|error| panic!("{text}: {error}"))
            .with_timezone(&Utc)
    }

    fn every(seconds: u64, start_at_minutes: Option<u32>) -> Schedule {
        Schedule::Every {
            seconds,
            start_at_minutes,
        }
    }

    #[test]
    fn next_after() {
        for (schedule, after, expected) in [
            // Intervals aligned to the epoch.
            (
                every(3600, None),
                "2026-11-22T08:47:12Z",
                Some("2026-11-22T09:00:00Z"),
            ),
            (
                every(3600, None),
                "2026-11-22T09:00:00Z",
                Some("2026-11-22T10:00:00Z"),
            ),
            (
                every(3600, None),
                "2026-11-22T08:59:59.999Z",
                Some("2026-11-22T09:00:00Z"),
            ),
            (
                every(2, None),
                "2026-11-22T08:47:13.500Z",
                Some("2026-11-22T08:47:14Z"),
            ),
            (
                every(1800, None),
                "2026-11-22T23:45:00Z",
                Some("2026-11-23T00:00:00Z"),
            ),
            // Aligned to the start time.
            (
                every(7200, Some(60)),
                "2026-11-22T08:47:12Z",
                Some("2026-11-22T09:00:00Z"),
            ),
            (
                every(7200, Some(60)),
                "2026-11-22T00:30:00Z",
                Some("2026-11-22T01:00:00Z"),
            ),
            (
                every(86_400, Some(120)),
                "2026-11-22T02:00:00Z",
                Some("2026-11-23T02:00:00Z"),
            ),
            (
                every(86_400, Some(120)),
                "2026-11-22T01:59:00Z",
                Some("2026-11-22T02:00:00Z"),
            ),
            (
                every(3600, Some(15)),
                "2026-11-22T08:47:12Z",
                Some("2026-11-22T09:15:00Z"),
            ),
            // An interval that does not divide a day keeps its period across midnight.
            // (2026-11-23T00:00Z is on the 5 h grid, so 2026-11-22's first run is at 04:00.)
            (
                every(5 * 3600, None),
                "2026-11-22T00:00:00Z",
                Some("2026-11-22T04:00:00Z"),
            ),
            (
                every(5 * 3600, None),
                "2026-11-22T23:00:00Z",
                Some("2026-11-23T00:00:00Z"),
            ),
            // Before the epoch still lands on the grid.
            (
                every(3600, None),
                "1969-12-31T22:30:00Z",
                Some("1969-12-31T23:00:00Z"),
            ),
            // Cron.
            (
                Schedule::Cron("*/15 * * * *".into()),
                "2026-11-22T08:47:12Z",
                Some("2026-11-22T09:00:00Z"),
            ),
            (
                Schedule::Cron("0 2 * * *".into()),
                "2026-11-22T02:00:00Z",
                Some("2026-11-23T02:00:00Z"),
            ),
            (
                Schedule::Cron("30 6 * * 1".into()),
                "2026-11-22T08:47:12Z",
                Some("2026-11-23T06:30:00Z"),
            ),
            (Schedule::Cron("0 0 30 2 *".into()), "2026-11-22T08:47:12Z", None),
        ] {
            assert_eq!(
                schedule.next_after(at(after)),
                expected.map(at),
                "{schedule} after {after}"
            );
        }
    }

    #[test]
    fn period_after() {
        assert_eq!(
            every(7200, Some(60)).period_after(at("2026-11-22T08:47:12Z")),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(
            Schedule::Cron("0 2,8 * * *".into()).period_after(at("2026-11-22T01:00:00Z")),
            Some(Duration::from_secs(6 * 3600))
        );
    }

    #[test]
    fn jitter_is_stable_and_bounded() {
        for (period, bound) in [
            (Duration::from_secs(2), Duration::from_millis(200)),
            (Duration::from_secs(300), Duration::from_secs(30)),
            (Duration::from_secs(3600), Duration::from_secs(60)),
            (Duration::from_secs(86_400), Duration::from_secs(60)),
        ] {
            for name in ["contoso", "fabrikam", "northwind", ""] {
                let jitter = jitter(name, period);
                assert!(jitter <= bound, "{name} {period:?}: {jitter:?}");
                assert_eq!(jitter, super::jitter(name, period), "stable");
            }
        }
        assert_eq!(jitter("contoso", Duration::from_millis(5)), Duration::ZERO);
        let spread: std::collections::BTreeSet<Duration> = ["a", "b", "c", "d", "e"]
            .into_iter()
            .map(|name| jitter(name, Duration::from_secs(3600)))
            .collect();
        assert!(spread.len() > 1, "names spread: {spread:?}");
    }

    #[test]
    fn display_writes_the_config_form() {
        assert_eq!(every(3600, None).to_string(), "every 1h");
        assert_eq!(every(90, None).to_string(), "every 90s");
        assert_eq!(every(1800, Some(150)).to_string(), "every 30m from 02:30");
        assert_eq!(every(172_800, None).to_string(), "every 2d");
        assert_eq!(Schedule::Cron("*/5 * * * *".into()).to_string(), "*/5 * * * *");
    }
}
