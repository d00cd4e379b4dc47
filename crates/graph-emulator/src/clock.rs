//! The emulator's clock: real time plus an offset that `/_emulator/clock` moves forward, so tests can
//! expire delta tokens, access tokens and soft-deleted users without waiting.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub(crate) struct Clock {
    started: Instant,
    started_unix: i64,
    offset_secs: AtomicI64,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        let started_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs() as i64)
            .unwrap_or(0);
        Clock {
            started: Instant::now(),
            started_unix,
            offset_secs: AtomicI64::new(0),
        }
    }

    /// Emulated Unix time in seconds.
    pub(crate) fn now(&self) -> i64 {
        self.started_unix + self.started.elapsed().as_secs() as i64 + self.offset_secs.load(Ordering::Relaxed)
    }

    pub(crate) fn advance(&self, seconds: i64) {
        self.offset_secs.fetch_add(seconds, Ordering::Relaxed);
    }

    /// Real milliseconds since start, for the request log (unaffected by `advance`).
    pub(crate) fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// `2026-11-22T08:09:16Z`, the Graph `DateTimeOffset` form.
pub(crate) fn iso(unix: i64) -> String {
    let (date, time) = split(unix);
    format!("{date}T{time}Z")
}

/// `2026-11-22 08:09:16Z`, the form of the token endpoint's `timestamp`.
pub(crate) fn token_timestamp(unix: i64) -> String {
    let (date, time) = split(unix);
    format!("{date} {time}Z")
}

/// Reads the `iso` form back (fixtures and control API input).
pub(crate) fn parse_iso(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() < 19 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[10] != b'T' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    // Howard Hinnant's days_from_civil.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

fn split(unix: i64) -> (String, String) {
    let days = unix.div_euclid(86_400);
    let seconds = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!(
            "{:02}:{:02}:{:02}",
            seconds / 3600,
            seconds % 3600 / 60,
            seconds % 60
        ),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_known_instants() {
        assert_eq!(super::iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::iso(1_586_292_771), "2020-04-07T20:52:51Z");
        assert_eq!(super::token_timestamp(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(super::parse_iso("2020-04-07T20:52:51Z"), Some(1_586_292_771));
        assert_eq!(super::parse_iso("2000-02-29T00:00:00Z"), Some(951_782_400));
    }
}
