//! JSON batching (`POST /v1.0/$batch`, GRAPH.md §4.4): up to 20 GET requests in one call, each
//! through the same pipeline as a direct request (so one can be throttled on its own, with its
//! `Retry-After` in its own headers), `dependsOn` answered with 424 when a dependency failed.

use std::collections::{BTreeMap, HashMap};

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::server::{AppState, serve_graph};

/// "JSON batch requests are currently limited to 20 individual requests."
const MAX_REQUESTS: usize = 20;

#[derive(serde::Deserialize)]
struct Batch {
    requests: Vec<Item>,
}

#[derive(serde::Deserialize)]
struct Item {
    id: String,
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default, rename = "dependsOn")]
    depends_on: Vec<String>,
}

pub(crate) async fn serve(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Response {
    let now = state.clock.now();
    let request_id = state.request_id();
    let bad = |message: &str| {
        crate::json::graph_error(StatusCode::BAD_REQUEST, "BadRequest", message, now, &request_id)
    };
    if let Err(response) = state.issuer.check_bearer(headers, now, &request_id) {
        return response;
    }
    let Ok(batch) = serde_json::from_slice::<Batch>(body) else {
        return bad("Invalid batch payload format.");
    };
    if batch.requests.len() > MAX_REQUESTS {
        return bad(&format!(
            "The number of requests in a batch exceeded the limit of {MAX_REQUESTS}."
        ));
    }
    let mut statuses: HashMap<&str, u16> = HashMap::new();
    let mut responses = Vec::with_capacity(batch.requests.len());
    for item in &batch.requests {
        if statuses.contains_key(item.id.as_str()) {
            return bad(&format!("Request id '{}' appears more than once.", item.id));
        }
        if let Some(unknown) = item
            .depends_on
            .iter()
            .find(|dependency| !statuses.contains_key(dependency.as_str()))
        {
            return bad(&format!(
                "Request '{}' depends on '{unknown}', which comes before it in no request.",
                item.id
            ));
        }
        let failed_dependency = item
            .depends_on
            .iter()
            .any(|dependency| !(200..300).contains(&statuses[dependency.as_str()]));
        let (status, item_headers, body) = if failed_dependency {
            let body = json!({ "error": { "code": "FailedDependency", "message": "A request it depends on failed." } });
            (424, json!({ "content-type": "application/json" }), body)
        } else {
            answer(state, headers, item).await
        };
        statuses.insert(&item.id, status);
        responses.push(json!({ "id": item.id, "status": status, "headers": item_headers, "body": body }));
    }
    crate::json::response(
        StatusCode::OK,
        json!({ "responses": responses }).to_string().into_bytes(),
    )
}

/// One batched request: its status, headers and body as the batch response shows them.
async fn answer(state: &AppState, outer: &HeaderMap, item: &Item) -> (u16, Value, Value) {
    let error = |status: u16, code: &str, message: &str| {
        let body = json!({ "error": { "code": code, "message": message } });
        (status, json!({ "content-type": "application/json" }), body)
    };
    if item.url.starts_with("http://") || item.url.starts_with("https://") {
        return error(400, "BadRequest", "Batch request URLs must be relative.");
    }
    if !item.method.eq_ignore_ascii_case("GET") {
        return error(
            405,
            "Request_BadRequest",
            "The emulator batches Graph reads only.",
        );
    }
    let Ok(uri) = format!("/v1.0/{}", item.url.trim_start_matches('/')).parse::<Uri>() else {
        return error(400, "BadRequest", "The batch request URL is not valid.");
    };
    let mut headers = outer.clone();
    headers.remove(header::CONTENT_TYPE);
    headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &item.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value)) {
            headers.insert(name, value);
        }
    }
    let segments = crate::server::segments_of(&uri);
    let response = serve_graph(state, &Method::GET, &uri, &headers, &segments).await;
    item_parts(response).await
}

async fn item_parts(response: Response) -> (u16, Value, Value) {
    let status = response.status().as_u16();
    let mut headers = serde_json::Map::new();
    for name in [header::CONTENT_TYPE, header::RETRY_AFTER, header::LOCATION] {
        if let Some(value) = response
            .headers()
            .get(&name)
            .and_then(|value| value.to_str().ok())
        {
            headers.insert(name.as_str().to_owned(), json!(value));
        }
    }
    let is_json = headers
        .get("content-type")
        .and_then(Value::as_str)
        .is_some_and(|kind| kind.starts_with("application/json"));
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    // JSON bodies are embedded as JSON; anything else (a `$count`) as a string.
    let body = match serde_json::from_slice(&bytes) {
        Ok(json) if is_json => json,
        _ => json!(String::from_utf8_lossy(&bytes)),
    };
    (status, Value::Object(headers), body)
}
