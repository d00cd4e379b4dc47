//! The one place that reads the wall clock. Everything else takes time as a parameter, so tests
//! control it (clippy.toml bans `Utc::now` elsewhere).

use chrono::{DateTime, Utc};

/// The current time.
#[allow(clippy::disallowed_methods)]
pub fn now() -> DateTime<Utc> {
    Utc::now()
}
