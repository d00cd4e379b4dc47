//! The reads and the few writes only the admin UI needs: the admin password, discarding a stored
//! plan, and directory listings with what a page shows (soft-delete dates, members). Kept beside
//! the pages rather than in `store.rs`, whose queries the sync depends on.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::store::{Doing, Store, StoreError, decode_json, timestamp};

/// A directory user as the UI lists it.
#[derive(Debug, Clone)]
pub(crate) struct UserRow {
    pub(crate) id: i64,
    pub(crate) organization: String,
    pub(crate) entra_id: Option<String>,
    pub(crate) attributes: serde_json::Map<String, serde_json::Value>,
    pub(crate) status: String,
    pub(crate) status_reason: Option<String>,
    pub(crate) soft_deleted_at: Option<DateTime<Utc>>,
    /// The names of the user's groups, sorted.
    pub(crate) groups: Vec<String>,
}

/// Directory users and groups by the Entra id they are linked to: their directory id and name.
#[derive(Debug, Default)]
pub(crate) struct EntraNames {
    pub(crate) users: HashMap<String, (i64, String)>,
    pub(crate) groups: HashMap<String, (i64, String)>,
}

/// The users the UI shows at most on one list page.
pub(crate) const MAX_LISTED_USERS: i64 = 500;

const USER_COLUMNS: &str = "u.id, o.name, u.entra_id, u.attributes, u.status, u.status_reason, u.soft_deleted_at, \
     (SELECT group_concat(ug.name, char(31)) FROM memberships um JOIN groups ug ON ug.id = um.group_id WHERE um.user_id = u.id)";

fn user_row(row: &sqlx::sqlite::SqliteRow) -> Result<UserRow, StoreError> {
    Ok(UserRow {
        id: row.get(0),
        organization: row.get(1),
        entra_id: row.get(2),
        attributes: decode_json(row.get::<&str, _>(3), "a user's attributes")?,
        status: row.get(4),
        status_reason: row.get(5),
        soft_deleted_at: row
            .get::<Option<&str>, _>(6)
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .map(|time| time.with_timezone(&Utc)),
        groups: {
            let mut groups: Vec<String> = row
                .get::<Option<String>, _>(7)
                .map(|names| names.split('\u{1f}').map(str::to_owned).collect())
                .unwrap_or_default();
            groups.sort();
            groups
        },
    })
}

/// A directory group and its members.
pub(crate) struct GroupMembers {
    pub(crate) name: String,
    pub(crate) organization: String,
    /// The Entra group it was synced from; `None` for a group made in the directory.
    pub(crate) entra_id: Option<String>,
    pub(crate) members: Vec<UserRow>,
}

impl Store {
    /// Stores the admin password's argon2 hash, replacing any earlier one.
    pub(crate) async fn set_admin_password_hash(
        &self,
        hash: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO admin_password (id, argon2_hash, set_at) VALUES (1, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET argon2_hash = excluded.argon2_hash, set_at = excluded.set_at",
        )
        .bind(hash)
        .bind(timestamp(now))
        .execute(&self.pool)
        .await
        .doing("setting the admin password")?;
        Ok(())
    }

    /// The admin password's argon2 hash, if one was set.
    pub(crate) async fn admin_password_hash(&self) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT argon2_hash FROM admin_password WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .doing("reading the admin password")
    }

    /// Marks a plan awaiting approval as discarded, and its run too; `false` when the run has no
    /// plan awaiting approval. The sync's next run plans afresh from Entra.
    pub(crate) async fn discard_plan(&self, run_id: i64, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut transaction = self.pool.begin().await.doing("discarding the plan")?;
        let discarded = sqlx::query(
            "UPDATE stored_plans SET state = 'discarded', decided_at = ? WHERE run_id = ? AND state = 'awaiting'",
        )
        .bind(timestamp(now))
        .bind(run_id)
        .execute(&mut *transaction)
        .await
        .doing("discarding the plan")?
        .rows_affected()
            == 1;
        if discarded {
            sqlx::query("UPDATE runs SET status = 'discarded' WHERE id = ?")
                .bind(run_id)
                .execute(&mut *transaction)
                .await
                .doing("discarding the plan")?;
        }
        transaction.commit().await.doing("discarding the plan")?;
        Ok(discarded)
    }

    /// The guards that stopped a run and the state of its stored plan (`awaiting`, `applied`,
    /// `discarded`), if it has one.
    pub(crate) async fn plan_guards(&self, run_id: i64) -> Result<Option<(Vec<String>, String)>, StoreError> {
        let row = sqlx::query("SELECT guards, state FROM stored_plans WHERE run_id = ?")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .doing("reading the stored plan")?;
        row.map(|row| Ok((decode_json(row.get::<&str, _>(0), "a plan's guards")?, row.get(1))))
            .transpose()
    }

    /// Users present in the connection's last good read, if it had one.
    pub(crate) async fn last_good_users(&self, connection: &str) -> Result<Option<u64>, StoreError> {
        let users: Option<Option<i64>> =
            sqlx::query_scalar("SELECT last_good_users FROM connections WHERE name = ?")
                .bind(connection)
                .fetch_optional(&self.pool)
                .await
                .doing("reading the last good read")?;
        Ok(users.flatten().map(|users| users as u64))
    }

    /// The directory users of the organizations whose name, email or UPN contains `search`
    /// (case-insensitive; all when empty), with `status` if given, by name; at most
    /// `MAX_LISTED_USERS`, and how many matched in all.
    pub(crate) async fn search_users(
        &self,
        organizations: &[String],
        search: &str,
        status: Option<&str>,
    ) -> Result<(Vec<UserRow>, i64), StoreError> {
        let organizations = serde_json::to_string(organizations).unwrap_or_default();
        let pattern = format!("%{}%", search.trim().to_lowercase().replace(['%', '_'], ""));
        let filter = "FROM users u JOIN organizations o ON o.id = u.organization_id \
             WHERE o.name IN (SELECT value FROM json_each(?)) AND (? IS NULL OR u.status = ?) \
             AND lower(coalesce(json_extract(u.attributes, '$.display_name'), '') || ' ' || \
             coalesce(json_extract(u.attributes, '$.email'), '') || ' ' || \
             coalesce(json_extract(u.attributes, '$.user_principal_name'), '')) LIKE ?";
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) {filter}")))
            .bind(&organizations)
            .bind(status)
            .bind(status)
            .bind(&pattern)
            .fetch_one(&self.pool)
            .await
            .doing("searching users")?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} {filter} \
             ORDER BY lower(coalesce(json_extract(u.attributes, '$.display_name'), '')), u.id LIMIT ?"
        )))
        .bind(&organizations)
        .bind(status)
        .bind(status)
        .bind(&pattern)
        .bind(MAX_LISTED_USERS)
        .fetch_all(&self.pool)
        .await
        .doing("searching users")?;
        Ok((rows.iter().map(user_row).collect::<Result<_, _>>()?, total))
    }

    /// The directory users and groups of the organization linked to these Entra ids, so that a
    /// run's actions can name whom they touch.
    pub(crate) async fn entra_names(
        &self,
        organization: &str,
        entra_ids: &[&str],
    ) -> Result<EntraNames, StoreError> {
        let ids = serde_json::to_string(entra_ids).unwrap_or_default();
        let rows = |table: &str, name: &str| {
            format!(
                "SELECT t.entra_id, t.id, {name} FROM {table} t JOIN organizations o ON o.id = t.organization_id \
                 WHERE o.name = ? AND t.entra_id IN (SELECT value FROM json_each(?))"
            )
        };
        let mut names = EntraNames::default();
        for (query, map) in [
            (
                rows(
                    "users",
                    "coalesce(json_extract(t.attributes, '$.display_name'), json_extract(t.attributes, '$.email'), t.entra_id)",
                ),
                &mut names.users,
            ),
            (rows("groups", "t.name"), &mut names.groups),
        ] {
            let found: Vec<(String, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(query))
                .bind(organization)
                .bind(&ids)
                .fetch_all(&self.pool)
                .await
                .doing("naming a run's actions")?;
            map.extend(
                found
                    .into_iter()
                    .map(|(entra_id, id, name)| (entra_id, (id, name))),
            );
        }
        Ok(names)
    }

    /// What the connection's snapshot (which only applied runs advance) holds for each scope
    /// section: groups with their member users, and the departments, office locations, user
    /// types and domains of present users, each with how many users have it, most common first
    /// (at most `limit` of each).
    pub(crate) async fn tenant_values(
        &self,
        connection: &str,
        limit: i64,
    ) -> Result<serde_json::Value, StoreError> {
        let connection_id: Option<i64> = sqlx::query_scalar("SELECT id FROM connections WHERE name = ?")
            .bind(connection)
            .fetch_optional(&self.pool)
            .await
            .doing("reading the tenant's values")?;
        let Some(connection_id) = connection_id else {
            return Ok(serde_json::Value::Null);
        };
        let groups: Vec<(String, i64)> = sqlx::query_as(
            "SELECT json_extract(data, '$.display_name'), coalesce(json_array_length(data, '$.member_users'), 0) \
             FROM source_groups WHERE connection_id = ? AND json_extract(data, '$.presence') = 'present' \
             AND json_extract(data, '$.display_name') IS NOT NULL ORDER BY 1 LIMIT ?",
        )
        .bind(connection_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .doing("reading the tenant's groups")?;
        let mut values = serde_json::json!({ "groups": groups });
        for (section, expression) in [
            ("departments", "json_extract(data, '$.department')"),
            ("office_locations", "json_extract(data, '$.office_location')"),
            ("user_types", "json_extract(data, '$.user_type')"),
            (
                "domains",
                "lower(substr(json_extract(data, '$.user_principal_name'), instr(json_extract(data, '$.user_principal_name'), '@') + 1))",
            ),
        ] {
            let found: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT value, count(*) FROM (SELECT {expression} AS value FROM source_users \
                 WHERE connection_id = ? AND json_extract(data, '$.presence') = 'present') \
                 WHERE value IS NOT NULL AND value != '' GROUP BY value ORDER BY count(*) DESC, value LIMIT ?"
            )))
            .bind(connection_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .doing("reading the tenant's values")?;
            values[section] = serde_json::json!(found);
        }
        Ok(values)
    }

    /// One directory user as the UI shows it.
    pub(crate) async fn user_row(&self, id: i64) -> Result<Option<UserRow>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users u JOIN organizations o ON o.id = u.organization_id WHERE u.id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .doing("reading a user")?;
        row.as_ref().map(user_row).transpose()
    }

    /// A directory group's name and organization, with its members.
    pub(crate) async fn group_members(&self, group_id: i64) -> Result<Option<GroupMembers>, StoreError> {
        let group = sqlx::query(
            "SELECT g.name, o.name, g.entra_id FROM groups g JOIN organizations o ON o.id = g.organization_id WHERE g.id = ?",
        )
        .bind(group_id)
        .fetch_optional(&self.pool)
        .await
        .doing("reading a group")?;
        let Some(group) = group else {
            return Ok(None);
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM memberships m JOIN users u ON u.id = m.user_id \
             JOIN organizations o ON o.id = u.organization_id WHERE m.group_id = ? \
             ORDER BY lower(coalesce(json_extract(u.attributes, '$.display_name'), '')), u.id"
        )))
        .bind(group_id)
        .fetch_all(&self.pool)
        .await
        .doing("reading a group's members")?;
        let members = rows.iter().map(user_row).collect::<Result<_, _>>()?;
        Ok(Some(GroupMembers {
            name: group.get(0),
            organization: group.get(1),
            entra_id: group.get(2),
            members,
        }))
    }

    /// A directory department's name and organization, with its users.
    pub(crate) async fn department_members(
        &self,
        department_id: i64,
    ) -> Result<Option<(String, String, Vec<UserRow>)>, StoreError> {
        let department = sqlx::query(
            "SELECT d.name, o.name FROM departments d JOIN organizations o ON o.id = d.organization_id WHERE d.id = ?",
        )
        .bind(department_id)
        .fetch_optional(&self.pool)
        .await
        .doing("reading a department")?;
        let Some(department) = department else {
            return Ok(None);
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users u JOIN organizations o ON o.id = u.organization_id \
             WHERE u.department_id = ? ORDER BY lower(coalesce(json_extract(u.attributes, '$.display_name'), '')), u.id"
        )))
        .bind(department_id)
        .fetch_all(&self.pool)
        .await
        .doing("reading a department's users")?;
        let members = rows.iter().map(user_row).collect::<Result<_, _>>()?;
        Ok(Some((department.get(0), department.get(1), members)))
    }
}
