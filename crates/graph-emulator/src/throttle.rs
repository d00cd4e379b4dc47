//! The identity-and-access resource-unit model of GRAPH.md §4.3: a token bucket per app and tenant
//! sized by tenant size, request costs by path, and the headers Graph sends with them.

use std::time::Instant;

use crate::query::Query;

/// Resource units a request costs: the base cost of its path, −1 with `$select`, +1 with `$expand`,
/// −1 with `$top` under 20, never below 1.
pub(crate) fn cost(segments: &[String], query: &Query) -> u32 {
    let base: i32 = match segments {
        [collection] if collection == "users" => 2,
        [collection] if collection == "subscribedSkus" => 3,
        [collection, _, members, ..] if collection == "groups" && members == "members" => 3,
        [collection, _, members, ..] if collection == "groups" && members == "transitiveMembers" => 5,
        [collection, _, member_of, ..] if collection == "users" && member_of == "memberOf" => 2,
        _ => 1,
    };
    let mut cost = base;
    if query.select.is_some() {
        cost -= 1;
    }
    if query.expand.is_some() {
        cost += 1;
    }
    if query
        .top
        .as_deref()
        .and_then(|top| top.parse::<u32>().ok())
        .is_some_and(|top| top < 20)
    {
        cost -= 1;
    }
    cost.max(1) as u32
}

/// The app+tenant budget: 3,500, 5,000 or 8,000 RU per 10 seconds for a small (under 50 users),
/// medium (up to 500) or large tenant.
pub(crate) fn budget_for(users: usize) -> f64 {
    match users {
        0..50 => 3500.0,
        50..=500 => 5000.0,
        _ => 8000.0,
    }
}

const WINDOW_SECS: f64 = 10.0;

/// A token bucket refilled continuously at `capacity` per 10 s. Real time, not the emulated clock:
/// advancing the clock must not hand out budget.
pub(crate) struct Bucket {
    capacity: f64,
    available: f64,
    refilled_at: Instant,
}

/// The outcome of charging a request.
pub(crate) enum Charge {
    /// Served; the share of the budget in use after it (1.0 = exhausted).
    Served { used: f64 },
    /// Throttled; retry after this many seconds.
    Throttled { retry_after: f64 },
}

impl Bucket {
    pub(crate) fn new(capacity: f64) -> Bucket {
        Bucket {
            capacity,
            available: capacity,
            refilled_at: Instant::now(),
        }
    }

    pub(crate) fn charge(&mut self, cost: u32) -> Charge {
        let now = Instant::now();
        let rate = self.capacity / WINDOW_SECS;
        let elapsed = now.duration_since(self.refilled_at).as_secs_f64();
        self.available = (self.available + elapsed * rate).min(self.capacity);
        self.refilled_at = now;
        let cost = f64::from(cost);
        if self.available >= cost {
            self.available -= cost;
            Charge::Served {
                used: 1.0 - self.available / self.capacity,
            }
        } else {
            // Rounded up to the millisecond so that a client waiting exactly this long is served.
            let retry_after = ((cost - self.available) / rate * 1000.0).ceil() / 1000.0;
            Charge::Throttled {
                retry_after: retry_after.max(0.001),
            }
        }
    }
}

/// A `Retry-After` value: fractional seconds without trailing zeros ("2.128", "1.5", "3").
pub(crate) fn format_seconds(seconds: f64) -> String {
    let text = format!("{seconds:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(path: &str) -> Vec<String> {
        path.split('/').map(str::to_owned).collect()
    }

    #[test]
    fn costs_follow_the_documented_table() {
        let select = Query::parse(Some("$select=id"));
        let plain = Query::parse(None);
        assert_eq!(cost(&segments("users"), &plain), 2);
        assert_eq!(cost(&segments("users"), &select), 1);
        assert_eq!(cost(&segments("groups/g/members"), &select), 2);
        assert_eq!(cost(&segments("groups/g/transitiveMembers"), &plain), 5);
        assert_eq!(cost(&segments("users/delta"), &select), 1);
        assert_eq!(cost(&segments("groups"), &Query::parse(Some("$top=5"))), 1);
    }

    #[test]
    fn an_exhausted_bucket_names_the_wait() {
        let mut bucket = Bucket::new(10.0);
        assert!(matches!(bucket.charge(10), Charge::Served { .. }));
        match bucket.charge(5) {
            Charge::Throttled { retry_after } => assert!(retry_after > 4.0 && retry_after <= 5.001),
            Charge::Served { .. } => panic!("an empty bucket serves nothing"),
        }
        assert_eq!(format_seconds(2.128), "2.128");
        assert_eq!(format_seconds(1.5), "1.5");
        assert_eq!(format_seconds(3.0), "3");
    }
}
