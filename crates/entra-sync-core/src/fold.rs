//! Folding delta pages into the source snapshot.
//!
//! Delta entries are sparse patches (GRAPH.md §3.3): an absent property keeps what was folded
//! before, a `null` clears it. Pages may repeat an entry (replays) or split one group over several
//! pages, so every step is an idempotent merge.

use std::collections::BTreeSet;

use crate::delta::{AssignedLicense, GroupDelta, Patch, UserDelta};
use crate::model::{EntraGroup, EntraId, EntraUser, Presence, SourceSnapshot};

/// The ids a fold touched, so the service persists only what changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    pub users: BTreeSet<EntraId>,
    pub groups: BTreeSet<EntraId>,
}

/// Folds one page of user delta entries into the snapshot.
pub fn fold_users(snapshot: &mut SourceSnapshot, page: Vec<UserDelta>, touched: &mut Touched) {
    let mut removed = BTreeSet::new();
    // An entry without an id names no user (see `UserDelta::id`).
    for entry in page.into_iter().filter(|entry| !entry.id.is_empty()) {
        touched.users.insert(entry.id.clone());
        // Look up before inserting: a delta round mostly changes known users, and the entry API
        // would allocate a key for each of them.
        let user = match snapshot.users.get_mut(&entry.id) {
            Some(user) => user,
            None => snapshot
                .users
                .entry(entry.id.clone())
                .or_insert_with_key(|id| EntraUser::new(id.clone())),
        };
        match entry.removed {
            Some(removed_as) => {
                // A removed entry carries no other property: keep what we knew for a restore.
                user.presence = Presence::from(removed_as.reason);
                removed.insert(entry.id);
            }
            None => {
                // A restored user arrives as a plain entry without annotation (GRAPH.md §3.4).
                user.presence = Presence::Present;
                apply_user(user, entry);
            }
        }
    }
    // A user removed and restored within one page keeps its edges.
    removed.retain(|id| {
        snapshot
            .users
            .get(id)
            .is_some_and(|user| user.presence != Presence::Present)
    });
    drop_member_edges(snapshot, &removed, touched);
}

/// Folds one page of group delta entries into the snapshot.
pub fn fold_groups(snapshot: &mut SourceSnapshot, page: Vec<GroupDelta>, touched: &mut Touched) {
    // An entry without an id names no group (see `GroupDelta::id`).
    for entry in page.into_iter().filter(|entry| !entry.id.is_empty()) {
        touched.groups.insert(entry.id.clone());
        let group = snapshot
            .groups
            .entry(entry.id.clone())
            .or_insert_with(|| EntraGroup {
                id: entry.id.clone(),
                ..EntraGroup::default()
            });
        match entry.removed {
            // The members stay as they were: a restored Microsoft 365 group comes back with them.
            Some(removed_as) => group.presence = Presence::from(removed_as.reason),
            None => {
                group.presence = Presence::Present;
                apply_group(group, entry);
            }
        }
    }
}

/// Graph may not report a deleted user's memberships as removed (GRAPH.md §3.5), so the user
/// stream drops the edges itself. One pass over the groups per page, not per removed user.
fn drop_member_edges(snapshot: &mut SourceSnapshot, removed: &BTreeSet<EntraId>, touched: &mut Touched) {
    if removed.is_empty() {
        return;
    }
    for group in snapshot.groups.values_mut() {
        let before = group.member_users.len();
        // Walk whichever side is smaller: a page removes a few users from many groups, or many
        // users (an initial round) from small groups.
        if removed.len() <= before {
            for id in removed {
                group.member_users.remove(id);
            }
        } else {
            group.member_users.retain(|id| !removed.contains(id));
        }
        if group.member_users.len() != before {
            touched.groups.insert(group.id.clone());
        }
    }
}

fn apply_user(user: &mut EntraUser, entry: UserDelta) {
    let licenses = entry.assigned_licenses.map(sku_ids);
    fn one(patch: &Patch<String>) -> Patch<&[String]> {
        patch.as_ref().map(std::slice::from_ref)
    }
    fn list(patch: &Patch<Vec<String>>) -> Patch<&[String]> {
        patch.as_ref().map(Vec::as_slice)
    }
    // In `UserProperty::ALL` order.
    user.patch(&[
        one(&entry.user_principal_name),
        one(&entry.mail),
        one(&entry.display_name),
        one(&entry.given_name),
        one(&entry.surname),
        one(&entry.job_title),
        one(&entry.department),
        one(&entry.company_name),
        one(&entry.office_location),
        one(&entry.street_address),
        one(&entry.city),
        one(&entry.state),
        one(&entry.postal_code),
        one(&entry.country),
        list(&entry.business_phones),
        one(&entry.mobile_phone),
        one(&entry.employee_id),
        one(&entry.user_type),
        list(&licenses),
    ]);
    patch(&mut user.account_enabled, entry.account_enabled);
}

fn apply_group(group: &mut EntraGroup, entry: GroupDelta) {
    patch(&mut group.display_name, entry.display_name);
    patch(&mut group.description, entry.description);
    patch(&mut group.mail, entry.mail);
    patch(&mut group.security_enabled, entry.security_enabled);
    patch_list(&mut group.group_types, entry.group_types);
    let members_delta = entry.members_delta.into_iter().flatten();
    for member in members_delta.filter(|member| !member.id.is_empty()) {
        let members = match member.odata_type.as_deref() {
            // Graph's own direct-members sample leaves the type out; such members are users.
            None | Some("#microsoft.graph.user") => &mut group.member_users,
            Some("#microsoft.graph.group") => &mut group.member_groups,
            // Devices, service principals and contacts have no place in the directory.
            Some(_) => continue,
        };
        if member.removed.is_some() {
            members.remove(&member.id);
        } else {
            members.insert(member.id);
        }
    }
}

fn patch<T>(slot: &mut Option<T>, patch: Patch<T>) {
    match patch {
        Patch::Absent => {}
        Patch::Cleared => *slot = None,
        Patch::Set(value) => *slot = Some(value),
    }
}

fn patch_list<T>(slot: &mut Vec<T>, patch: Patch<Vec<T>>) {
    match patch {
        Patch::Absent => {}
        Patch::Cleared => slot.clear(),
        Patch::Set(values) => *slot = values,
    }
}

/// Licences as sorted, deduplicated SKU ids, so that a reordered list is not a change.
fn sku_ids(licenses: Vec<AssignedLicense>) -> Vec<String> {
    let mut ids: Vec<String> = licenses.into_iter().map(|license| license.sku_id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use std::fmt::Write;

    use expect_test::{Expect, expect};
    use serde::Serialize;

    use super::*;

    /// Folds the user pages, then the group pages, and renders the snapshot with only the
    /// properties that are set, one object a line.
    fn check(user_pages: &str, group_pages: &str, expect: Expect) {
        let snapshot_and_touched = fold(user_pages, group_pages);
        expect.assert_eq(&render(&snapshot_and_touched.0, &snapshot_and_touched.1));
    }

    fn fold(user_pages: &str, group_pages: &str) -> (SourceSnapshot, Touched) {
        let mut snapshot = SourceSnapshot::default();
        let mut touched = Touched::default();
        let group_pages: Vec<Vec<GroupDelta>> = serde_json::from_str(group_pages).expect("group pages parse");
        let user_pages: Vec<Vec<UserDelta>> = serde_json::from_str(user_pages).expect("user pages parse");
        for page in group_pages {
            fold_groups(&mut snapshot, page, &mut touched);
        }
        for page in user_pages {
            fold_users(&mut snapshot, page, &mut touched);
        }
        (snapshot, touched)
    }

    fn render(snapshot: &SourceSnapshot, touched: &Touched) -> String {
        let mut out = String::new();
        for user in snapshot.users.values() {
            writeln!(out, "user {}", set_properties(user)).expect("write to string");
        }
        for group in snapshot.groups.values() {
            writeln!(out, "group {}", set_properties(group)).expect("write to string");
        }
        writeln!(
            out,
            "touched users {:?} groups {:?}",
            touched.users, touched.groups
        )
        .expect("write to string");
        out
    }

    fn set_properties(value: &impl Serialize) -> String {
        let mut value = serde_json::to_value(value).expect("serializable");
        if let serde_json::Value::Object(properties) = &mut value {
            properties.retain(|_, property| match property {
                serde_json::Value::Null => false,
                serde_json::Value::Array(items) => !items.is_empty(),
                _ => true,
            });
        }
        value.to_string()
    }

    #[test]
    fn initial_round_with_a_removed_user() {
        // Modeled on Microsoft's user-delta-initial-page(-with-removed) samples.
        check(
            r##"[
                [
                    {"businessPhones": [], "displayName": "Adele Vance", "givenName": "Adele",
                     "jobTitle": "Retail Manager", "mail": "AdeleV@contoso.example", "mobilePhone": null,
                     "officeLocation": "18/2111", "preferredLanguage": "en-US", "surname": "Vance",
                     "userPrincipalName": "AdeleV@contoso.example", "id": "87d349ed"},
                    {"id": "86462606", "@removed": {"reason": "deleted"}}
                ],
                [
                    {"businessPhones": ["+1 425 555 0109"], "displayName": "Alex Wilber",
                     "givenName": "Alex", "surname": "Wilber", "accountEnabled": true,
                     "userPrincipalName": "AlexW@contoso.example", "id": "5bde3e51"}
                ]
            ]"##,
            "[]",
            expect![[r#"
                user {"account_enabled":true,"business_phones":["+1 425 555 0109"],"display_name":"Alex Wilber","given_name":"Alex","id":"5bde3e51","presence":"present","surname":"Wilber","user_principal_name":"AlexW@contoso.example"}
                user {"id":"86462606","presence":"deleted"}
                user {"display_name":"Adele Vance","given_name":"Adele","id":"87d349ed","job_title":"Retail Manager","mail":"AdeleV@contoso.example","office_location":"18/2111","presence":"present","surname":"Vance","user_principal_name":"AdeleV@contoso.example"}
                touched users {"5bde3e51", "86462606", "87d349ed"} groups {}
            "#]],
        );
    }

    #[test]
    fn absent_keeps_null_clears() {
        check(
            r#"[
                [{"id": "u1", "givenName": "Jane", "surname": "Doe", "jobTitle": "Analyst",
                  "mobilePhone": "+45 1234", "businessPhones": ["+45 5678"], "accountEnabled": true}],
                [{"id": "u1", "jobTitle": "Senior Analyst"}],
                [{"id": "u1", "mobilePhone": null, "businessPhones": null, "accountEnabled": false}]
            ]"#,
            "[]",
            expect![[r#"
                user {"account_enabled":false,"given_name":"Jane","id":"u1","job_title":"Senior Analyst","presence":"present","surname":"Doe"}
                touched users {"u1"} groups {}
            "#]],
        );
    }

    #[test]
    fn licences_are_sorted_and_deduplicated() {
        check(
            r#"[[{"id": "u1", "assignedLicenses": [
                {"skuId": "c7df2760", "disabledPlans": []},
                {"skuId": "189a915c", "disabledPlans": ["9aaf7827"]},
                {"skuId": "c7df2760", "disabledPlans": []}
            ]}]]"#,
            "[]",
            expect![[r#"
                user {"assigned_licenses":["189a915c","c7df2760"],"id":"u1","presence":"present"}
                touched users {"u1"} groups {}
            "#]],
        );
    }

    #[test]
    fn soft_delete_keeps_properties_and_restore_brings_the_user_back() {
        check(
            r#"[
                [{"id": "u1", "givenName": "Jane", "surname": "Doe"},
                 {"id": "u2", "givenName": "John", "surname": "Roe"}],
                [{"id": "u1", "@removed": {"reason": "changed"}},
                 {"id": "u2", "@removed": {"reason": "deleted"}}]
            ]"#,
            "[]",
            expect![[r#"
                user {"given_name":"Jane","id":"u1","presence":"soft_deleted","surname":"Doe"}
                user {"given_name":"John","id":"u2","presence":"deleted","surname":"Roe"}
                touched users {"u1", "u2"} groups {}
            "#]],
        );
        check(
            r#"[
                [{"id": "u1", "givenName": "Jane", "surname": "Doe"}],
                [{"id": "u1", "@removed": {"reason": "changed"}}],
                [{"id": "u1", "givenName": "Jane", "surname": "Doe", "jobTitle": "Analyst"}]
            ]"#,
            "[]",
            expect![[r#"
                user {"given_name":"Jane","id":"u1","job_title":"Analyst","presence":"present","surname":"Doe"}
                touched users {"u1"} groups {}
            "#]],
        );
    }

    #[test]
    fn replayed_pages_are_harmless() {
        let users = r#"[{"id": "u1", "givenName": "Jane", "jobTitle": "Analyst"},
                        {"id": "u2", "@removed": {"reason": "changed"}}]"#;
        let groups = r##"[{"id": "g1", "displayName": "Sales", "members@delta": [
                            {"@odata.type": "#microsoft.graph.user", "id": "u1"},
                            {"@odata.type": "#microsoft.graph.user", "id": "u3", "@removed": {"reason": "deleted"}}]}]"##;
        let once = fold(&format!("[{users}]"), &format!("[{groups}]"));
        let twice = fold(&format!("[{users}, {users}]"), &format!("[{groups}, {groups}]"));
        assert_eq!(once, twice);
    }

    #[test]
    fn members_delta_adds_and_removes_by_type() {
        // Modeled on Microsoft's group-delta-initial-page-members and
        // group-delta-deltalink-members-changed samples.
        check(
            "[]",
            r##"[
                [{"id": "g1", "displayName": "TestGroup1", "description": "Test group 1",
                  "groupTypes": ["Unified"], "mail": "testgroup1@contoso.example",
                  "members@delta": [
                    {"@odata.type": "#microsoft.graph.user", "id": "u1"},
                    {"@odata.type": "#microsoft.graph.user", "id": "u2"},
                    {"id": "u3"},
                    {"@odata.type": "#microsoft.graph.group", "id": "g2"},
                    {"@odata.type": "#microsoft.graph.device", "id": "d1"},
                    {"@odata.type": "#microsoft.graph.servicePrincipal", "id": "sp1"},
                    {"@odata.type": "#microsoft.graph.orgContact", "id": "c1"}]},
                 {"id": "g2", "displayName": "TestGroup2"}],
                [{"id": "g1", "displayName": "TestGroup1", "description": "Test group 1",
                  "members@delta": [
                    {"@odata.type": "#microsoft.graph.user", "id": "u2", "@removed": {"reason": "deleted"}},
                    {"@odata.type": "#microsoft.graph.group", "id": "g2", "@removed": {"reason": "changed"}},
                    {"@odata.type": "#microsoft.graph.user", "id": "u4"}]}]
            ]"##,
            expect![[r#"
                group {"description":"Test group 1","display_name":"TestGroup1","group_types":["Unified"],"id":"g1","mail":"testgroup1@contoso.example","member_users":["u1","u3","u4"],"presence":"present"}
                group {"display_name":"TestGroup2","id":"g2","presence":"present"}
                touched users {} groups {"g1", "g2"}
            "#]],
        );
    }

    #[test]
    fn entries_without_an_id_are_skipped() {
        // Shaped like Microsoft's user-delta-api-prefer-return-minimal and
        // group-delta-api-default-members-delta documentation samples, which leave the id out.
        check(
            r#"[[{"displayName": "Vance Adele", "jobTitle": null},
                 {"id": "u1", "displayName": "Adele Vance"}]]"#,
            r##"[[{"displayName": "TestGroup1", "members@delta": [
                    {"@odata.type": "#microsoft.graph.user", "id": "u1"}]},
                  {"id": "g1", "members@delta": [{"id": "u1"}, {"@odata.type": "#microsoft.graph.user"}]}]]"##,
            expect![[r#"
                user {"display_name":"Adele Vance","id":"u1","presence":"present"}
                group {"id":"g1","member_users":["u1"],"presence":"present"}
                touched users {"u1"} groups {"g1"}
            "#]],
        );
    }

    #[test]
    fn a_group_split_across_pages_merges() {
        check(
            "[]",
            r#"[
                [{"id": "g1", "displayName": "Everyone", "members@delta": [{"id": "u1"}, {"id": "u2"}]}],
                [],
                [{"id": "g1", "displayName": "Everyone", "members@delta": [{"id": "u3"}]}]
            ]"#,
            expect![[r#"
                group {"display_name":"Everyone","id":"g1","member_users":["u1","u2","u3"],"presence":"present"}
                touched users {} groups {"g1"}
            "#]],
        );
    }

    #[test]
    fn a_removed_group_keeps_its_members() {
        check(
            "[]",
            r#"[
                [{"id": "g1", "displayName": "Sales", "members@delta": [{"id": "u1"}]}],
                [{"id": "g1", "@removed": {"reason": "changed"}}]
            ]"#,
            expect![[r#"
                group {"display_name":"Sales","id":"g1","member_users":["u1"],"presence":"soft_deleted"}
                touched users {} groups {"g1"}
            "#]],
        );
    }

    #[test]
    fn a_user_delete_removes_its_member_edges() {
        // Groups fold first here, so the user stream must drop u1's edges itself; u2 is
        // restored within the same page and keeps its edge.
        check(
            r#"[
                [{"id": "u1", "@removed": {"reason": "changed"}},
                 {"id": "u2", "@removed": {"reason": "deleted"}},
                 {"id": "u2", "givenName": "John"}]
            ]"#,
            r#"[
                [{"id": "g1", "members@delta": [{"id": "u1"}, {"id": "u2"}]},
                 {"id": "g2", "members@delta": [{"id": "u1"}]},
                 {"id": "g3", "members@delta": [{"id": "u2"}]}]
            ]"#,
            expect![[r#"
                user {"id":"u1","presence":"soft_deleted"}
                user {"given_name":"John","id":"u2","presence":"present"}
                group {"id":"g1","member_users":["u2"],"presence":"present"}
                group {"id":"g2","presence":"present"}
                group {"id":"g3","member_users":["u2"],"presence":"present"}
                touched users {"u1", "u2"} groups {"g1", "g2", "g3"}
            "#]],
        );
    }
}
