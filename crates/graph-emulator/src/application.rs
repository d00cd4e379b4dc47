//! The app registration, `GET /v1.0/applications(appId='…')`: the one registered app with its
//! client secret as a `passwordCredential` (the secret's first three characters as `hint`, its
//! validity as `startDateTime` and `endDateTime`), which is where a client reads the secret's
//! expiry. Reading it needs `Application.Read.All` or a permission that includes it.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::server::Request;

/// The application permissions that let an app read app registrations.
const APPLICATION_ROLES: &[&str] = &[
    "Application.Read.All",
    "Application.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];

/// The properties served, in Graph's order; the default answer (no `$select`) has all of them.
const PROPERTIES: &[&str] = &[
    "id",
    "appId",
    "displayName",
    "signInAudience",
    "keyCredentials",
    "passwordCredentials",
];

/// The app id addressed by an `applications(appId='…')` segment, with OData's doubled quotes
/// undone; `None` for any other key.
fn addressed_app_id(segment: &str) -> Option<String> {
    let quoted = segment
        .strip_prefix("applications(appId=")?
        .strip_suffix(')')?
        .strip_prefix('\'')?
        .strip_suffix('\'')?;
    Some(quoted.replace("''", "'"))
}

/// One app registration, addressed by its app id (`segment` is `applications(appId='…')`).
pub(crate) fn get(request: &Request<'_>, segment: &str) -> Response {
    let Some(app_id) = addressed_app_id(segment) else {
        return request.error(
            StatusCode::BAD_REQUEST,
            "Request_BadRequest",
            &format!(
                "The emulator addresses an application only as applications(appId='...'), not {segment}."
            ),
        );
    };
    if !request.has_role(APPLICATION_ROLES) {
        return request.error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        );
    }
    let options = &request.state.options;
    if !app_id.eq_ignore_ascii_case(&options.client_id) {
        return request.error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!(
                "Resource '{app_id}' does not exist or one of its queried reference-property objects are not present."
            ),
        );
    }
    let selected: Vec<String> = match request.query.select_names() {
        None => PROPERTIES.iter().map(|name| (*name).to_owned()).collect(),
        Some(names) => {
            if let Some(unknown) = names.iter().find(|name| !PROPERTIES.contains(&name.as_str())) {
                return request.error(
                    StatusCode::BAD_REQUEST,
                    "Request_BadRequest",
                    &format!(
                        "Could not find a property named '{unknown}' on type 'microsoft.graph.application'."
                    ),
                );
            }
            names
        }
    };
    let (start, end) = request.state.issuer.secret_validity();
    let hint: String = options.client_secret.chars().take(3).collect();
    let seed = options.seed;
    let mut body = Map::new();
    let context = match request.query.select {
        Some(_) => format!("applications({})/$entity", selected.join(",")),
        None => "applications/$entity".to_owned(),
    };
    body.insert(
        "@odata.context".to_owned(),
        json!(format!("{}/v1.0/$metadata#{context}", request.state.url)),
    );
    for name in &selected {
        let value = match name.as_str() {
            "id" => json!(crate::generate::guid(seed ^ 0xa99)),
            "appId" => json!(options.client_id),
            "displayName" => json!("entra-sync"),
            "signInAudience" => json!("AzureADMyOrg"),
            // The registered certificate is not listed: the emulator does not read certificates'
            // dates, and entra-sync reads a certificate's expiry from the certificate itself.
            "keyCredentials" => json!([]),
            "passwordCredentials" => json!([{
                "customKeyIdentifier": null,
                "displayName": "entra-sync",
                "endDateTime": crate::clock::iso(end),
                "hint": hint,
                "keyId": crate::generate::guid(seed ^ 0x5ec),
                "secretText": null,
                "startDateTime": crate::clock::iso(start),
            }]),
            _ => Value::Null,
        };
        body.insert(name.clone(), value);
    }
    crate::json::response(StatusCode::OK, Value::Object(body).to_string().into_bytes())
}
