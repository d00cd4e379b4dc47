//! Microsoft data shown next to each user: licence names, last sign-in and MFA registration.
//!
//! It is read in full runs only, after the run's changes are committed: `subscribedSkus` is one
//! request, but sign-in activity and the MFA registration report page through every user and Graph
//! throttles them far harder than directory reads (GRAPH.md §4.3), so they stay out of delta runs
//! (a no-change delta run makes at most three requests). A tenant that refuses a read (the app
//! lacks the permission, or the tenant has no Entra ID P1/P2 licence) leaves a warning on the
//! connection and unknown values; it never fails the run.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::graph::GraphClient;
use crate::store::{Doing, Store, StoreError, timestamp, write_in_chunks};

/// A licence as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct License {
    pub sku_id: String,
    /// `None` when the tenant's licence list is unknown (not readable, or not read yet).
    pub sku_part_number: Option<String>,
}

/// What the last full run could read, per connection.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// When it was last read; `None` before the first full run.
    pub read_at: Option<String>,
    /// What the tenant refused, one line each, saying what to grant.
    pub warnings: Vec<String>,
}

/// The warning for a refused sign-in or MFA read, by Graph's code.
fn audit_warning(what: &str, code: &str) -> String {
    if code.eq_ignore_ascii_case("Authentication_RequestFromNonPremiumTenantOrB2CTenant") {
        format!(
            "{what} unavailable: the tenant has no Entra ID P1 or P2 licence (403 {code}); Graph shares them only with premium tenants"
        )
    } else {
        format!(
            "{what} unavailable: the app lacks AuditLog.Read.All (403 {code}): grant it as an Application permission with admin consent"
        )
    }
}

/// Reads the Microsoft data of a connection's tenant and stores it; answers the warnings, which
/// are also kept on the connection. Store errors are the only failures.
pub async fn refresh(
    store: &Store,
    client: &GraphClient,
    connection_id: i64,
) -> Result<Vec<String>, StoreError> {
    let mut warnings = Vec::new();
    let skus = match client.subscribed_skus().await {
        Ok(skus) => Some(skus),
        Err(error) => {
            match error.refused_code() {
                Some(code) => warnings.push(format!(
                    "licence names unavailable: the app lacks LicenseAssignment.Read.All (403 {code} on subscribedSkus): grant it as an Application permission with admin consent"
                )),
                None => warnings.push(format!("licence names not refreshed: {error}")),
            }
            // Refused: the names are no longer ours to show. Failed: keep the last ones.
            error.refused_code().map(|_| Vec::new())
        }
    };
    // Both need the same permission and licence: when the first read is refused, the second
    // would be too, so it is not asked.
    let (sign_ins, mfa) = match client.sign_in_activity().await {
        Ok(users) => {
            let sign_ins: BTreeMap<String, Option<DateTime<Utc>>> = users
                .into_iter()
                .map(|user| {
                    let latest = user.sign_in_activity.and_then(|activity| activity.latest());
                    (user.id, latest)
                })
                .collect();
            let mfa = match client.mfa_registrations().await {
                Ok(entries) => Some(
                    entries
                        .into_iter()
                        .filter_map(|entry| Some((entry.id, entry.is_mfa_registered?)))
                        .collect::<BTreeMap<String, bool>>(),
                ),
                Err(error) => match error.refused_code() {
                    Some(code) => {
                        warnings.push(audit_warning("MFA registration", code));
                        Some(BTreeMap::new())
                    }
                    None => {
                        warnings.push(format!("MFA registration not refreshed: {error}"));
                        None
                    }
                },
            };
            (Some(sign_ins), mfa)
        }
        Err(error) => match error.refused_code() {
            Some(code) => {
                warnings.push(audit_warning("last sign-in and MFA registration", code));
                (Some(BTreeMap::new()), Some(BTreeMap::new()))
            }
            None => {
                warnings.push(format!(
                    "last sign-in and MFA registration not refreshed: {error}"
                ));
                (None, None)
            }
        },
    };
    for warning in &warnings {
        tracing::warn!(connection_id, %warning, "Microsoft data");
    }
    save(
        store,
        connection_id,
        skus.as_deref(),
        sign_ins.as_ref(),
        mfa.as_ref(),
        &warnings,
    )
    .await?;
    Ok(warnings)
}

/// Replaces what was read; `None` keeps the stored values of that part (a transient failure).
async fn save(
    store: &Store,
    connection_id: i64,
    skus: Option<&[crate::graph::wire::SubscribedSku]>,
    sign_ins: Option<&BTreeMap<String, Option<DateTime<Utc>>>>,
    mfa: Option<&BTreeMap<String, bool>>,
    warnings: &[String],
) -> Result<(), StoreError> {
    const DOING: &str = "saving the Microsoft data";
    let mut transaction = store.pool.begin().await.doing(DOING)?;
    if let Some(skus) = skus {
        sqlx::query("DELETE FROM microsoft_skus WHERE connection_id = ?")
            .bind(connection_id)
            .execute(&mut *transaction)
            .await
            .doing(DOING)?;
        let build = |_, chunk: &[crate::graph::wire::SubscribedSku]| {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT OR REPLACE INTO microsoft_skus (connection_id, sku_id, sku_part_number) ",
            );
            insert.push_values(chunk, |mut row, sku| {
                row.push_bind(connection_id)
                    .push_bind(sku.sku_id.to_lowercase())
                    .push_bind(sku.sku_part_number.clone());
            });
            insert
        };
        write_in_chunks(&mut transaction, skus, DOING, build, |_| {}).await?;
    }
    if let Some(sign_ins) = sign_ins {
        sqlx::query("UPDATE microsoft_users SET last_sign_in = NULL WHERE connection_id = ?")
            .bind(connection_id)
            .execute(&mut *transaction)
            .await
            .doing(DOING)?;
        let rows: Vec<(&String, Option<String>)> =
            sign_ins.iter().map(|(id, at)| (id, at.map(timestamp))).collect();
        let build = |_, chunk: &[(&String, Option<String>)]| {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO microsoft_users (connection_id, entra_id, last_sign_in) ",
            );
            insert.push_values(chunk, |mut row, (id, at)| {
                row.push_bind(connection_id)
                    .push_bind((*id).clone())
                    .push_bind(at.clone());
            });
            insert.push(
                " ON CONFLICT (connection_id, entra_id) DO UPDATE SET last_sign_in = excluded.last_sign_in",
            );
            insert
        };
        write_in_chunks(&mut transaction, &rows, DOING, build, |_| {}).await?;
    }
    if let Some(mfa) = mfa {
        sqlx::query("UPDATE microsoft_users SET mfa_registered = NULL WHERE connection_id = ?")
            .bind(connection_id)
            .execute(&mut *transaction)
            .await
            .doing(DOING)?;
        let rows: Vec<(&String, &bool)> = mfa.iter().collect();
        let build = |_, chunk: &[(&String, &bool)]| {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO microsoft_users (connection_id, entra_id, mfa_registered) ",
            );
            insert.push_values(chunk, |mut row, (id, registered)| {
                row.push_bind(connection_id)
                    .push_bind((*id).clone())
                    .push_bind(**registered);
            });
            insert.push(
                " ON CONFLICT (connection_id, entra_id) DO UPDATE SET mfa_registered = excluded.mfa_registered",
            );
            insert
        };
        write_in_chunks(&mut transaction, &rows, DOING, build, |_| {}).await?;
    }
    sqlx::query(
        "DELETE FROM microsoft_users WHERE connection_id = ? AND last_sign_in IS NULL AND mfa_registered IS NULL",
    )
    .bind(connection_id)
    .execute(&mut *transaction)
    .await
    .doing(DOING)?;
    sqlx::query("UPDATE connections SET microsoft_read_at = ?, microsoft_warnings = ? WHERE id = ?")
        .bind(timestamp(crate::clock::now()))
        .bind(serde_json::to_string(warnings).unwrap_or_default())
        .bind(connection_id)
        .execute(&mut *transaction)
        .await
        .doing(DOING)?;
    transaction.commit().await.doing(DOING)
}

/// What the last full run of connection `name` could read.
pub async fn status(store: &Store, name: &str) -> Result<Status, StoreError> {
    let row = sqlx::query("SELECT microsoft_read_at, microsoft_warnings FROM connections WHERE name = ?")
        .bind(name)
        .fetch_optional(&store.pool)
        .await
        .doing("reading the Microsoft data status")?;
    Ok(match row {
        None => Status::default(),
        Some(row) => Status {
            read_at: row.get(0),
            warnings: row
                .get::<Option<String>, _>(1)
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or_default(),
        },
    })
}

/// The licence names of the tenant an organization syncs from, by lower-case SKU id.
pub async fn sku_names(store: &Store, organization: &str) -> Result<BTreeMap<String, String>, StoreError> {
    let rows = sqlx::query(
        "SELECT s.sku_id, s.sku_part_number FROM microsoft_skus s \
         JOIN connections c ON c.id = s.connection_id JOIN organizations o ON o.id = c.organization_id \
         WHERE o.name = ?",
    )
    .bind(organization)
    .fetch_all(&store.pool)
    .await
    .doing("reading licence names")?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// A user's licences with their names where known.
pub fn licenses(sku_ids: &[String], names: &BTreeMap<String, String>) -> Vec<License> {
    sku_ids
        .iter()
        .map(|sku_id| License {
            sku_id: sku_id.clone(),
            sku_part_number: names.get(&sku_id.to_lowercase()).cloned(),
        })
        .collect()
}

/// The `microsoft` object of a user in the API and `users --json`; `null` for a user the sync
/// does not link to Entra.
pub fn user_json(user: &crate::store::UserRecord, names: &BTreeMap<String, String>) -> serde_json::Value {
    if user.entra_id.is_none() {
        return serde_json::Value::Null;
    }
    serde_json::json!({
        "licenses": licenses(&user.microsoft.license_ids, names),
        "last_sign_in": user.microsoft.last_sign_in,
        "mfa_registered": user.microsoft.mfa_registered,
    })
}
