//! Connections made through the API: a definition with the config file's keys, taken as JSON,
//! checked by the same validation as the file, and kept in the database with the client secret
//! sealed (`secrets`). The running set of connections is the `serve::Runner`'s.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::Row;

use crate::config::{Config, ConfigError, Connection, ConnectionFile, validate_connection};
use crate::secrets::{SecretKey, SecretKeyError};
use crate::store::{Doing, Store, StoreError, ensure_organization, timestamp};

/// Keys the API refuses: they name files or environment variables on the server, whose content
/// a client of the API could otherwise have sent, as a credential, to a token endpoint it chose.
const SERVER_SIDE_KEYS: [&str; 4] = [
    "client_secret_env",
    "client_secret_file",
    "certificate_file",
    "private_key_file",
];

/// Keys of `[connections.email]` the API refuses, for the same reason: the SMTP password would
/// go to a mail server the API's client chose, and a body file would be read off the server.
const SERVER_SIDE_EMAIL_KEYS: [&str; 3] = ["password_env", "password_file", "body_file"];

/// The longest connection name; it appears in URLs and log lines.
const MAX_NAME_LEN: usize = 64;

/// A connection as the database keeps it.
#[derive(Debug, Clone)]
pub struct StoredConnection {
    pub name: String,
    /// The definition without the client secret.
    pub definition: Map<String, Value>,
    /// The client secret, sealed.
    pub sealed_secret: String,
}

/// Splits a create or edit body into the definition and the client secret it carries, if any.
/// The message of an error never repeats the secret.
pub fn take_secret(body: Value) -> Result<(Map<String, Value>, Option<String>), String> {
    let Value::Object(mut definition) = body else {
        return Err("the body must be a JSON object with the config file's connection keys".into());
    };
    if let Some(key) = SERVER_SIDE_KEYS.iter().find(|key| definition.contains_key(**key)) {
        return Err(format!(
            "{key} is accepted only in the config file; through the API, give the secret's Value as client_secret"
        ));
    }
    if let Some(key) = definition
        .get("email")
        .and_then(Value::as_object)
        .and_then(|email| {
            SERVER_SIDE_EMAIL_KEYS
                .iter()
                .find(|key| email.contains_key(**key))
        })
    {
        return Err(format!(
            "email.{key} is accepted only in the config file; through the API, give the template as email.body and define a mail server that needs a password in the config file"
        ));
    }
    let secret = match definition.remove("client_secret") {
        None | Some(Value::Null) => None,
        Some(Value::String(secret)) if !secret.trim().is_empty() => Some(secret.trim().to_owned()),
        Some(_) => return Err("client_secret must be the secret's Value, a non-empty string".into()),
    };
    Ok((definition, secret))
}

/// Checks a new connection's name: it is a path segment of the API and a key of the history.
pub fn check_name(name: &str) -> Result<(), String> {
    let fits = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if fits {
        Ok(())
    } else {
        Err(format!(
            "name {name:?}: use 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.', starting with a letter or digit"
        ))
    }
}

/// The connection a definition and its secret make, validated like a config file's.
pub fn build(definition: &Map<String, Value>, secret: &str) -> Result<Connection, String> {
    let mut with_secret = definition.clone();
    with_secret.insert("client_secret".into(), Value::String(secret.to_owned()));
    let file: ConnectionFile =
        serde_json::from_value(Value::Object(with_secret)).map_err(|error| error.to_string())?;
    validate_connection(file, Path::new("."))
}

/// Why the command line found no connection to work on.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    SecretKey(#[from] SecretKeyError),
    #[error("the connection {name:?} made through the API is no longer valid: {message}; fix it with PATCH")]
    Invalid { name: String, message: String },
}

/// The connection the command line names: the config file's, or else one made through the API
/// (its secret opened with the service's key). Without a name, the config file's only one.
pub async fn find(config: &Config, store: &Store, name: Option<&str>) -> Result<Connection, FindError> {
    let in_file = config.connection(name);
    let (Some(name), Err(not_in_file)) = (name, &in_file) else {
        return Ok(in_file?.clone());
    };
    let Some(stored) = store
        .api_connections()
        .await?
        .into_iter()
        .find(|stored| stored.name == name)
    else {
        return Err(FindError::Config(ConfigError::File {
            path: config.path.clone(),
            message: format!("{not_in_file}; nor was one of that name made through the API"),
        }));
    };
    let secret = SecretKey::load(&config.data_dir)?.open(name, &stored.sealed_secret)?;
    build(&stored.definition, &secret).map_err(|message| FindError::Invalid {
        name: name.to_owned(),
        message,
    })
}

/// Applies a JSON merge patch (RFC 7386): `null` removes a key, objects merge, anything else
/// replaces.
pub fn merge_patch(target: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(&key);
            }
            Value::Object(inner) => {
                let entry = target.entry(key).or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                if let Value::Object(existing) = entry {
                    merge_patch(existing, inner);
                }
            }
            other => {
                target.insert(key, other);
            }
        }
    }
}

impl Store {
    /// The connections made through the API.
    pub async fn api_connections(&self) -> Result<Vec<StoredConnection>, StoreError> {
        let rows =
            sqlx::query("SELECT name, definition, client_secret_sealed FROM api_connections ORDER BY name")
                .fetch_all(&self.pool)
                .await
                .doing("loading the connections made through the API")?;
        rows.iter()
            .map(|row| {
                Ok(StoredConnection {
                    name: row.get(0),
                    definition: crate::store::decode_json(
                        row.get::<&str, _>(1),
                        "a connection's definition",
                    )?,
                    sealed_secret: row.get(2),
                })
            })
            .collect()
    }

    /// Stores a new connection, or replaces the definition and secret of an existing one, and
    /// points the connection's sync state at its organization. The sync state of a name survives
    /// a delete (its history refers to it), so a new connection of that name takes it over.
    pub async fn save_api_connection(
        &self,
        connection: &StoredConnection,
        organization: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await.doing("saving the connection")?;
        sqlx::query(
            "INSERT INTO api_connections (name, definition, client_secret_sealed, created_at, updated_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, \
             client_secret_sealed = excluded.client_secret_sealed, updated_at = excluded.updated_at",
        )
        .bind(&connection.name)
        .bind(Value::Object(connection.definition.clone()).to_string())
        .bind(&connection.sealed_secret)
        .bind(timestamp(now))
        .bind(timestamp(now))
        .execute(&mut *transaction)
        .await
        .doing("saving the connection")?;
        ensure_organization(&mut transaction, organization, now).await?;
        sqlx::query(
            "UPDATE connections SET organization_id = (SELECT id FROM organizations WHERE name = ?) WHERE name = ?",
        )
        .bind(organization)
        .bind(&connection.name)
        .execute(&mut *transaction)
        .await
        .doing("saving the connection")?;
        transaction.commit().await.doing("saving the connection")
    }

    /// Deletes a connection made through the API with what the sync knew of its tenant (the
    /// snapshot, delta links and Microsoft data), so a connection made later under its name starts with a full
    /// read. Its history and its directory users stay.
    pub async fn delete_api_connection(&self, name: &str) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await.doing("deleting the connection")?;
        sqlx::query("DELETE FROM api_connections WHERE name = ?")
            .bind(name)
            .execute(&mut *transaction)
            .await
            .doing("deleting the connection")?;
        for forget in [
            "DELETE FROM source_users WHERE connection_id IN (SELECT id FROM connections WHERE name = ?)",
            "DELETE FROM source_groups WHERE connection_id IN (SELECT id FROM connections WHERE name = ?)",
            "DELETE FROM microsoft_skus WHERE connection_id IN (SELECT id FROM connections WHERE name = ?)",
            "DELETE FROM microsoft_users WHERE connection_id IN (SELECT id FROM connections WHERE name = ?)",
            "UPDATE connections SET users_delta_link = NULL, groups_delta_link = NULL, delta_links_at = NULL, \
             last_full_at = NULL, needs_replan = 0, last_good_users = NULL, applied_policy = NULL, \
             microsoft_read_at = NULL, microsoft_warnings = NULL WHERE name = ?",
        ] {
            sqlx::query(forget)
                .bind(name)
                .execute(&mut *transaction)
                .await
                .doing("deleting the connection's sync state")?;
        }
        transaction.commit().await.doing("deleting the connection")
    }

    /// When a connection's stored delta links were issued, if it has any.
    pub async fn delta_links_at(&self, connection: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let issued: Option<Option<String>> = sqlx::query_scalar(
            "SELECT delta_links_at FROM connections WHERE name = ? AND users_delta_link IS NOT NULL",
        )
        .bind(connection)
        .fetch_optional(&self.pool)
        .await
        .doing("reading the delta links' age")?;
        Ok(issued
            .flatten()
            .and_then(|text| DateTime::parse_from_rfc3339(&text).ok())
            .map(|time| time.with_timezone(&Utc)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_secret_is_taken_out_and_server_side_keys_are_refused() {
        let (definition, secret) = take_secret(json!({
            "name": "contoso", "tenant_id": "t", "client_id": "c", "client_secret": " s3cret "
        }))
        .expect("valid");
        assert_eq!(secret.as_deref(), Some("s3cret"));
        assert!(!Value::Object(definition.clone()).to_string().contains("s3cret"));
        let connection = build(&definition, "s3cret").expect("a connection");
        assert_eq!(connection.organization, "contoso");
        for key in SERVER_SIDE_KEYS {
            let error = take_secret(json!({ "name": "x", key: "/etc/shadow" })).expect_err(key);
            assert!(error.contains(key), "{error}");
        }
        for key in SERVER_SIDE_EMAIL_KEYS {
            let error = take_secret(json!({ "name": "x", "email": { key: "/etc/shadow" } })).expect_err(key);
            assert!(error.contains(&format!("email.{key}")), "{error}");
        }
        let error = take_secret(json!({ "client_secret": 42 })).expect_err("a number");
        assert!(!error.contains("42"), "{error}");
        let unknown = build(
            &take_secret(json!({ "name": "x", "tenant_id": "t", "client_id": "c", "colour": "blue" }))
                .expect("an object")
                .0,
            "s",
        )
        .expect_err("unknown key");
        assert!(unknown.contains("colour"), "{unknown}");
    }

    #[test]
    fn names_are_path_segments() {
        for (name, ok) in [
            ("contoso", true),
            ("fabrikam-eu_2.prod", true),
            ("", false),
            ("-x", false),
            ("a/b", false),
            ("with space", false),
        ] {
            assert_eq!(check_name(name).is_ok(), ok, "{name:?}");
        }
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({ "a": 1, "options": { "sync_groups": true, "welcome_email": true } })
            .as_object()
            .cloned()
            .expect("an object");
        let patch = json!({ "a": null, "enabled": false, "options": { "welcome_email": null } })
            .as_object()
            .cloned()
            .expect("an object");
        merge_patch(&mut target, patch);
        assert_eq!(
            Value::Object(target),
            json!({ "enabled": false, "options": { "sync_groups": true } })
        );
    }
}
