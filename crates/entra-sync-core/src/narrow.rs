//! A plan narrowed to some users and groups, for the one-user and one-group syncs: the actions on
//! them and what those actions need, so that a manual sync of one user never applies another
//! user's pending changes (those wait for the connection's next run).

use std::collections::BTreeSet;

use crate::model::EntraId;
use crate::plan::{Action, Plan};
use crate::target::TargetState;

/// Keeps the actions on `users` (their attributes, lifecycle, department and memberships) and on
/// `groups` (the group itself and its memberships), plus the groups and departments the kept
/// actions need created. Department deletions are left to whole runs. Of the named users, those
/// linked in the directory with nothing to do count as unchanged, the others as skipped.
pub fn narrow(
    plan: Plan,
    target: &TargetState,
    users: &BTreeSet<EntraId>,
    groups: &BTreeSet<EntraId>,
) -> Plan {
    let keeps_on_its_own = |action: &Action| match action {
        Action::CreateUser { entra_id, .. }
        | Action::LinkUser { entra_id, .. }
        | Action::UpdateUser { entra_id, .. }
        | Action::DisableUser { entra_id, .. }
        | Action::SoftDeleteUser { entra_id, .. }
        | Action::DeleteUser { entra_id, .. }
        | Action::PurgeUser { entra_id, .. }
        | Action::RestoreUser { entra_id, .. } => users.contains(entra_id),
        Action::UpdateGroup { entra_id, .. } | Action::DeleteGroup { entra_id, .. } => {
            groups.contains(entra_id)
        }
        Action::AddMembership { group, user } | Action::RemoveMembership { group, user } => {
            users.contains(user) || groups.contains(group)
        }
        Action::SetDepartment { user, .. } => users.contains(user),
        Action::CreateGroup { .. } | Action::CreateDepartment { .. } | Action::DeleteDepartment { .. } => {
            false
        }
    };
    let kept: Vec<&Action> = plan
        .actions
        .iter()
        .filter(|action| keeps_on_its_own(action))
        .collect();
    let needed_groups: BTreeSet<EntraId> = kept
        .iter()
        .filter_map(|action| match action {
            Action::AddMembership { group, .. } => Some(group.clone()),
            _ => None,
        })
        .collect();
    let needed_departments: BTreeSet<String> = kept
        .iter()
        .filter_map(|action| match action {
            Action::SetDepartment {
                department: Some(name),
                ..
            }
            | Action::CreateUser {
                department: Some(name),
                ..
            } => Some(name.to_lowercase()),
            _ => None,
        })
        .collect();
    let actions: Vec<Action> = plan
        .actions
        .into_iter()
        .filter(|action| match action {
            Action::CreateGroup { entra_id, .. } => {
                groups.contains(entra_id) || needed_groups.contains(entra_id)
            }
            Action::CreateDepartment { name } => needed_departments.contains(&name.to_lowercase()),
            other => keeps_on_its_own(other),
        })
        .collect();
    let conflicts: Vec<_> = plan
        .conflicts
        .into_iter()
        .filter(|conflict| conflict.entra_id.as_ref().is_some_and(|id| users.contains(id)))
        .collect();
    let acted_on: BTreeSet<&str> = actions
        .iter()
        .filter_map(|action| match action {
            Action::CreateUser { entra_id, .. }
            | Action::LinkUser { entra_id, .. }
            | Action::UpdateUser { entra_id, .. }
            | Action::DisableUser { entra_id, .. }
            | Action::SoftDeleteUser { entra_id, .. }
            | Action::DeleteUser { entra_id, .. }
            | Action::PurgeUser { entra_id, .. }
            | Action::RestoreUser { entra_id, .. } => Some(entra_id.as_str()),
            _ => None,
        })
        .chain(
            conflicts
                .iter()
                .filter_map(|conflict| conflict.entra_id.as_deref()),
        )
        .collect();
    let linked: BTreeSet<&str> = target
        .users
        .iter()
        .filter_map(|user| user.entra_id.as_deref())
        .collect();
    let untouched = users.iter().filter(|id| !acted_on.contains(id.as_str()));
    let (unchanged, skipped) = untouched.fold((0, 0), |(unchanged, skipped), id| {
        if linked.contains(id.as_str()) {
            (unchanged + 1, skipped)
        } else {
            (unchanged, skipped + 1)
        }
    });
    Plan {
        actions,
        conflicts,
        unassigned: plan
            .unassigned
            .into_iter()
            .filter(|unassigned| users.contains(&unassigned.entra_id))
            .collect(),
        unchanged,
        skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Conflict, FieldChange};
    use crate::target::{DirectoryUser, UserStatus};

    fn update(entra_id: &str, directory_id: i64) -> Action {
        Action::UpdateUser {
            directory_id,
            entra_id: entra_id.into(),
            changes: Vec::<FieldChange>::new(),
        }
    }

    fn ids(names: &[&str]) -> BTreeSet<EntraId> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn keeps_the_named_objects_and_what_they_need() {
        let plan = Plan {
            actions: vec![
                Action::CreateDepartment { name: "Sales".into() },
                Action::CreateDepartment { name: "Legal".into() },
                Action::CreateGroup {
                    entra_id: "g-new".into(),
                    name: "New".into(),
                    description: None,
                },
                Action::CreateGroup {
                    entra_id: "g-other".into(),
                    name: "Other".into(),
                    description: None,
                },
                update("u1", 1),
                update("u2", 2),
                Action::SetDepartment {
                    user: "u1".into(),
                    department: Some("sales".into()),
                },
                Action::SetDepartment {
                    user: "u2".into(),
                    department: Some("Legal".into()),
                },
                Action::AddMembership {
                    group: "g-new".into(),
                    user: "u1".into(),
                },
                Action::AddMembership {
                    group: "g-other".into(),
                    user: "u2".into(),
                },
                Action::RemoveMembership {
                    group: "g-team".into(),
                    user: "u3".into(),
                },
                Action::DeleteDepartment {
                    directory_id: 9,
                    name: "Old".into(),
                },
            ],
            conflicts: vec![Conflict {
                entra_id: Some("u2".into()),
                directory_id: None,
                reason: "duplicate email".into(),
            }],
            unassigned: Vec::new(),
            unchanged: 40,
            skipped: 3,
        };
        let target = TargetState {
            users: ["u1", "u2", "u4"]
                .iter()
                .enumerate()
                .map(|(index, id)| DirectoryUser {
                    id: index as i64 + 1,
                    entra_id: Some((*id).into()),
                    status: UserStatus::Active,
                    ..DirectoryUser::default()
                })
                .collect(),
            ..TargetState::default()
        };
        let one_user = narrow(plan.clone(), &target, &ids(&["u1"]), &BTreeSet::new());
        assert_eq!(
            one_user.actions,
            vec![
                Action::CreateDepartment { name: "Sales".into() },
                Action::CreateGroup {
                    entra_id: "g-new".into(),
                    name: "New".into(),
                    description: None,
                },
                update("u1", 1),
                Action::SetDepartment {
                    user: "u1".into(),
                    department: Some("sales".into()),
                },
                Action::AddMembership {
                    group: "g-new".into(),
                    user: "u1".into(),
                },
            ]
        );
        assert!(one_user.conflicts.is_empty());
        assert_eq!((one_user.unchanged, one_user.skipped), (0, 0));

        let unchanged = narrow(plan.clone(), &target, &ids(&["u4", "u5"]), &BTreeSet::new());
        assert!(unchanged.actions.is_empty());
        assert_eq!((unchanged.unchanged, unchanged.skipped), (1, 1));

        let group = narrow(plan, &target, &ids(&["u2"]), &ids(&["g-team"]));
        let kinds: Vec<String> = group
            .actions
            .iter()
            .map(|action| {
                format!("{action:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "CreateDepartment",
                "CreateGroup",
                "UpdateUser",
                "SetDepartment",
                "AddMembership",
                "RemoveMembership"
            ]
        );
        assert_eq!(group.conflicts.len(), 1);
    }
}
