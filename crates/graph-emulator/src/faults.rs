//! Injected faults (`POST /_emulator/faults`): 429, 503, 504, a 410 delta reset, a truncated body
//! and a replayed page, on a share of Graph requests (deterministic from the seed) or the next N.

use axum::http::StatusCode;
use axum::response::Response;

use crate::generate::Rng;
use crate::server::Request;

/// The faults a test can script.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FaultKind {
    /// 429 TooManyRequests with `Retry-After`.
    Throttle,
    /// 503 with `Retry-After`.
    ServiceUnavailable,
    /// 504.
    GatewayTimeout,
    /// 410 Gone with a `Location` to start a full round again (delta requests only).
    DeltaReset,
    /// A 200 whose body stops half-way.
    TruncatedBody,
    /// The previous body served on the same path, again (a replayed delta page).
    ReplayPage,
    /// A 200 page with no objects whose nextLink is the request itself ("there are more pages …
    /// even if the current response contains an empty result", GRAPH.md §3.1).
    EmptyPage,
}

impl FaultKind {
    /// Faults answered instead of the request (the others alter a served response).
    pub(crate) fn replaces_response(self) -> bool {
        !matches!(self, FaultKind::TruncatedBody | FaultKind::ReplayPage)
    }
}

/// The response of an error fault: 429, 503, 504 or the 410 delta reset.
pub(crate) fn respond(
    request: &Request<'_>,
    fired: Fired,
    segments: &[String],
    path_and_query: &str,
) -> Response {
    let collection = segments.first().map(String::as_str).unwrap_or("users");
    match fired.kind {
        FaultKind::Throttle => crate::server::throttled(request, fired.retry_after.unwrap_or(2.0)),
        FaultKind::ServiceUnavailable => {
            let mut response = request.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "serviceNotAvailable",
                "The service is temporarily unavailable. Please retry after the period specified in the Retry-After header.",
            );
            let wait = crate::throttle::format_seconds(fired.retry_after.unwrap_or(1.0));
            crate::server::insert_header(&mut response, "retry-after", &wait);
            response
        }
        FaultKind::GatewayTimeout => {
            let mut response = request.error(
                StatusCode::GATEWAY_TIMEOUT,
                "gatewayTimeout",
                "The gateway did not receive a timely response from the upstream server.",
            );
            if let Some(wait) = fired.retry_after {
                crate::server::insert_header(
                    &mut response,
                    "retry-after",
                    &crate::throttle::format_seconds(wait),
                );
            }
            response
        }
        FaultKind::EmptyPage => {
            let body = serde_json::json!({
                "@odata.context": format!("{}/v1.0/$metadata#{collection}", request.state.url),
                "@odata.nextLink": format!("{}{path_and_query}", request.state.url),
                "value": [],
            });
            crate::json::response(StatusCode::OK, body.to_string().into_bytes())
        }
        FaultKind::DeltaReset | FaultKind::TruncatedBody | FaultKind::ReplayPage => {
            let mut response = request.error(
                StatusCode::GONE,
                "resyncRequired",
                "The delta token is no longer valid, and the app must reset the sync state.",
            );
            // The documented reset: a Location with an empty $deltatoken, i.e. the initial query.
            let location = format!(
                "{}/v1.0/{collection}/delta?{}$deltatoken=",
                request.state.url,
                crate::delta::initial_query(request)
            );
            crate::server::insert_header(&mut response, "location", &location);
            response
        }
    }
}

/// One scripted fault: fires on Graph requests whose path and query contain `path_contains`,
/// with probability `share` (1 when absent), at most `count` times (unbounded when absent).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultSpec {
    pub(crate) kind: FaultKind,
    pub(crate) share: Option<f64>,
    pub(crate) count: Option<u32>,
    pub(crate) retry_after: Option<f64>,
    pub(crate) path_contains: Option<String>,
}

/// A fault that fired on a request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fired {
    pub(crate) kind: FaultKind,
    pub(crate) retry_after: Option<f64>,
}

pub(crate) struct Faults {
    rules: Vec<(FaultSpec, Option<u32>)>,
    rng: Rng,
}

impl Faults {
    pub(crate) fn new(seed: u64) -> Faults {
        Faults {
            rules: Vec::new(),
            rng: Rng::new(seed ^ 0xfa17_fa17),
        }
    }

    pub(crate) fn add(&mut self, spec: FaultSpec) {
        let remaining = spec.count;
        self.rules.push((spec, remaining));
    }

    pub(crate) fn clear(&mut self) {
        self.rules.clear();
    }

    /// The first rule that fires on this request, if any.
    pub(crate) fn pick(&mut self, path_and_query: &str, is_delta: bool) -> Option<Fired> {
        for (spec, remaining) in &mut self.rules {
            if spec.kind == FaultKind::DeltaReset && !is_delta {
                continue;
            }
            if spec
                .path_contains
                .as_deref()
                .is_some_and(|needle| !path_and_query.contains(needle))
            {
                continue;
            }
            if *remaining == Some(0) {
                continue;
            }
            if let Some(share) = spec.share
                && !self.rng.chance(share)
            {
                continue;
            }
            if let Some(left) = remaining {
                *left -= 1;
            }
            return Some(Fired {
                kind: spec.kind,
                retry_after: spec.retry_after,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_faults_fire_the_next_n_matching_requests() {
        let mut faults = Faults::new(1);
        faults.add(FaultSpec {
            kind: FaultKind::Throttle,
            share: None,
            count: Some(2),
            retry_after: Some(1.5),
            path_contains: Some("/users".to_owned()),
        });
        assert!(faults.pick("/v1.0/groups", false).is_none());
        assert!(faults.pick("/v1.0/users", false).is_some());
        assert!(faults.pick("/v1.0/users", false).is_some());
        assert!(faults.pick("/v1.0/users", false).is_none());
    }
}
