//! What a connection's admin chose: the options the planner follows, and the one check that a
//! combination of them makes sense (`Policy::validate`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::map::Field;
use crate::model::EntraUser;

/// What to do with a user disabled in Entra (`accountEnabled: false`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDisabled {
    /// Disable the directory user with reason "Disabled in Microsoft".
    #[default]
    Disable,
    /// Leave the directory user as it is.
    Ignore,
}

/// What to do with a user deleted in Entra (soft or hard), or gone from a full read with
/// `remove_users_not_in_entra`: the rung of the deprovisioning ladder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDeleted {
    /// Disable the directory user with reason "Deleted in Microsoft".
    #[default]
    Disable,
    /// Soft-delete and keep for `soft_delete_retention_days`, then purge to a tombstone.
    SoftDelete,
    /// Remove the directory user and its memberships.
    Delete,
}

/// What to do with a linked user that no longer meets the scope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnOutOfScope {
    /// Keep the directory user as it is; the sync no longer updates it.
    #[default]
    Keep,
    /// Disable it with reason "Out of sync scope".
    Disable,
    /// Soft-delete it (purged after the retention period).
    SoftDelete,
    /// Remove it.
    Delete,
}

/// How to treat a directory user matched on first sight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExistingUsers {
    /// Link and update it from Entra.
    #[default]
    Update,
    /// Link it but leave its attributes as they are.
    Skip,
}

/// What links an existing directory user to an Entra user on first sight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchBy {
    /// The directory user's email equals the Entra user's mail (or UPN when it has no mail).
    Email,
    /// The directory user's email or UPN equals the Entra user's UPN.
    Upn,
}

/// Which Entra groups become directory groups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupsToSync {
    /// Every group with at least one member user in the directory.
    #[default]
    WithMembers,
    /// Only the groups named in `scope.groups`.
    Scoped,
}

/// How scope groups count their members.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupMembership {
    /// Only the users directly in the group.
    #[default]
    Direct,
    /// Also the users of nested groups, at any depth; a cycle of groups ends the walk.
    Transitive,
}

/// When the sync writes one directory field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldSetting {
    /// On create and on every change in Entra.
    #[default]
    Always,
    /// When the sync creates the user (or links one that has no value yet); edits made in the
    /// directory afterwards are kept.
    OnCreate,
    /// Never; the directory's value is kept.
    Never,
}

/// An Entra user attribute that unit and role rules read, named as Graph names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SourceAttribute {
    JobTitle,
    CompanyName,
    Department,
    StreetAddress,
    State,
    Country,
    OfficeLocation,
    City,
    PostalCode,
}

/// Who is synced. An empty list selects everyone for that section, including values that
/// appear later; a user must meet every section that has a selection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Scope {
    /// Display names (case-insensitive) or object ids; members of any of them.
    pub groups: Vec<String>,
    pub group_membership: GroupMembership,
    /// `Member`, `Guest` (case-insensitive). A user without `userType` is a guest when its UPN
    /// carries `#EXT#`, else a member.
    pub user_types: Vec<String>,
    /// Domains of the UPN or the mail (case-insensitive); either one matching is enough.
    pub domains: Vec<String>,
    pub office_locations: Vec<String>,
    pub departments: Vec<String>,
}

/// A list of names, or a table from the Entra value to the name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NameRule {
    /// Each name matches the Entra value equal to it (case-insensitive).
    Names(Vec<String>),
    /// `{ "CPH HQ" = "Copenhagen" }`: the Entra value on the left gives the name on the right.
    Aliases(BTreeMap<String, String>),
}

impl NameRule {
    /// Whether the rule names nothing.
    pub fn is_empty(&self) -> bool {
        match self {
            NameRule::Names(names) => names.is_empty(),
            NameRule::Aliases(aliases) => aliases.is_empty(),
        }
    }
}

impl Default for NameRule {
    fn default() -> Self {
        NameRule::Names(Vec::new())
    }
}

/// Ziik's unit and role rules: which attribute names a user's unit and roles.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Assignments {
    /// The attribute whose value names the unit; `None` assigns no units.
    pub unit_from: Option<SourceAttribute>,
    pub units: NameRule,
    /// The attribute holding a comma-separated list of roles; `None` assigns no roles.
    pub roles_from: Option<SourceAttribute>,
    pub roles: NameRule,
}

/// Limits that stop a run for approval instead of applying it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Guards {
    /// Disables, soft-deletes and deletes in one run.
    pub max_deprovisions: usize,
    /// Deprovisions as a percentage of the linked users.
    pub max_deprovision_percent: u32,
    /// Membership removals as a percentage of the memberships the sync made.
    pub max_membership_removals_percent: u32,
    /// A read that returned this many percent fewer users than the last good one is unhealthy.
    pub max_source_drop_percent: u32,
}

impl Default for Guards {
    fn default() -> Self {
        Guards {
            max_deprovisions: 500,
            max_deprovision_percent: 20,
            max_membership_removals_percent: 20,
            max_source_drop_percent: 30,
        }
    }
}

/// A connection's sync policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    pub scope: Scope,
    pub existing_users: ExistingUsers,
    /// Tried in order; the first key that matches exactly one directory user links it.
    pub match_existing_by: Vec<MatchBy>,
    /// Create departments from in-scope users' department values and assign users to them.
    pub sync_departments: bool,
    /// Import Entra groups as user groups, with memberships.
    pub sync_groups: bool,
    pub groups_to_sync: GroupsToSync,
    /// Remove memberships the sync made that Entra no longer has.
    pub remove_group_assignments_not_in_entra: bool,
    /// After a complete full read, deprovision (as `on_deleted` says) linked users whose Entra
    /// object is gone from it.
    pub remove_users_not_in_entra: bool,
    pub on_disabled: OnDisabled,
    pub on_deleted: OnDeleted,
    pub on_out_of_scope: OnOutOfScope,
    /// Days a soft-deleted user is kept before its purge.
    pub soft_delete_retention_days: u32,
    /// Whether created users get the application's welcome email; carried to the target.
    pub welcome_email: bool,
    /// Per-field settings; a field not listed is `always`.
    pub fields: BTreeMap<Field, FieldSetting>,
    pub assignments: Assignments,
    pub guards: Guards,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            scope: Scope::default(),
            existing_users: ExistingUsers::Update,
            match_existing_by: vec![MatchBy::Email],
            sync_departments: true,
            sync_groups: true,
            groups_to_sync: GroupsToSync::WithMembers,
            remove_group_assignments_not_in_entra: true,
            remove_users_not_in_entra: false,
            on_disabled: OnDisabled::Disable,
            on_deleted: OnDeleted::Disable,
            on_out_of_scope: OnOutOfScope::Keep,
            soft_delete_retention_days: 90,
            welcome_email: false,
            fields: BTreeMap::new(),
            assignments: Assignments::default(),
            guards: Guards::default(),
        }
    }
}

impl Policy {
    /// Checks the combinations a config file can get wrong; the message names the keys.
    pub fn validate(&self) -> Result<(), String> {
        let assignments = &self.assignments;
        if let (Some(unit_from), Some(roles_from)) = (assignments.unit_from, assignments.roles_from)
            && unit_from == roles_from
        {
            return Err(format!(
                "assignments.unit_from and assignments.roles_from both read {unit_from}: one attribute cannot name both the unit and the roles"
            ));
        }
        for (from_key, from, names_key, names) in [
            (
                "assignments.unit_from",
                assignments.unit_from,
                "assignments.units",
                &assignments.units,
            ),
            (
                "assignments.roles_from",
                assignments.roles_from,
                "assignments.roles",
                &assignments.roles,
            ),
        ] {
            match (from, names.is_empty()) {
                (Some(_), true) => {
                    return Err(format!(
                        "{from_key} is set but {names_key} is empty: every user would be unassigned"
                    ));
                }
                (None, false) => {
                    return Err(format!(
                        "{names_key} is set but {from_key} is not: say which attribute names them"
                    ));
                }
                _ => {}
            }
        }
        for field in [Field::GivenName, Field::Surname] {
            if self.fields.get(&field) == Some(&FieldSetting::Never) {
                return Err(format!(
                    "fields.{field} = \"never\": the directory requires a first and last name; use \"on_create\" to keep edits"
                ));
            }
        }
        if self.groups_to_sync == GroupsToSync::Scoped && self.scope.groups.is_empty() {
            return Err(
                "options.groups_to_sync = \"scoped\" imports only the groups in scope.groups, which is empty"
                    .to_owned(),
            );
        }
        if self.match_existing_by.is_empty() {
            return Err("options.match_existing_by is empty: list email, upn or both".to_owned());
        }
        for (key, percent) in [
            (
                "guards.max_deprovision_percent",
                self.guards.max_deprovision_percent,
            ),
            (
                "guards.max_membership_removals_percent",
                self.guards.max_membership_removals_percent,
            ),
            (
                "guards.max_source_drop_percent",
                self.guards.max_source_drop_percent,
            ),
        ] {
            if percent > 100 {
                return Err(format!("{key} = {percent}: a percentage is at most 100"));
            }
        }
        Ok(())
    }

    /// The setting of one field.
    pub fn field_setting(&self, field: Field) -> FieldSetting {
        self.fields.get(&field).copied().unwrap_or_default()
    }
}

impl SourceAttribute {
    /// The attribute's value on a user.
    pub fn value(self, user: &EntraUser) -> Option<&str> {
        match self {
            SourceAttribute::JobTitle => user.job_title(),
            SourceAttribute::CompanyName => user.company_name(),
            SourceAttribute::Department => user.department(),
            SourceAttribute::StreetAddress => user.street_address(),
            SourceAttribute::State => user.state(),
            SourceAttribute::Country => user.country(),
            SourceAttribute::OfficeLocation => user.office_location(),
            SourceAttribute::City => user.city(),
            SourceAttribute::PostalCode => user.postal_code(),
        }
    }

    /// Graph's name of the attribute (`officeLocation`), as the config file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceAttribute::JobTitle => "jobTitle",
            SourceAttribute::CompanyName => "companyName",
            SourceAttribute::Department => "department",
            SourceAttribute::StreetAddress => "streetAddress",
            SourceAttribute::State => "state",
            SourceAttribute::Country => "country",
            SourceAttribute::OfficeLocation => "officeLocation",
            SourceAttribute::City => "city",
            SourceAttribute::PostalCode => "postalCode",
        }
    }
}

impl fmt::Display for SourceAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn validate_names_the_keys() {
        let same = Policy {
            assignments: Assignments {
                unit_from: Some(SourceAttribute::JobTitle),
                units: NameRule::Names(vec!["Support".into()]),
                roles_from: Some(SourceAttribute::JobTitle),
                roles: NameRule::Names(vec!["Analyst".into()]),
            },
            ..Policy::default()
        };
        let never_name = Policy {
            fields: BTreeMap::from([(Field::Surname, FieldSetting::Never)]),
            ..Policy::default()
        };
        let no_match = Policy {
            match_existing_by: Vec::new(),
            ..Policy::default()
        };
        let percent = Policy {
            guards: Guards {
                max_source_drop_percent: 130,
                ..Guards::default()
            },
            ..Policy::default()
        };
        let different = Policy {
            assignments: Assignments {
                unit_from: Some(SourceAttribute::OfficeLocation),
                units: NameRule::Names(vec!["Copenhagen".into()]),
                roles_from: Some(SourceAttribute::JobTitle),
                roles: NameRule::Names(vec!["Analyst".into()]),
            },
            ..Policy::default()
        };
        let units_without_rule = Policy {
            assignments: Assignments {
                units: NameRule::Names(vec!["Copenhagen".into()]),
                ..Assignments::default()
            },
            ..Policy::default()
        };
        let roles_rule_without_roles = Policy {
            assignments: Assignments {
                roles_from: Some(SourceAttribute::JobTitle),
                ..Assignments::default()
            },
            ..Policy::default()
        };
        let scoped_without_groups = Policy {
            groups_to_sync: GroupsToSync::Scoped,
            ..Policy::default()
        };
        let rendered: String = [
            Policy::default(),
            different,
            same,
            units_without_rule,
            roles_rule_without_roles,
            never_name,
            scoped_without_groups,
            no_match,
            percent,
        ]
        .iter()
        .map(|policy| format!("{:?}\n", policy.validate()))
        .collect();
        expect![[r#"
            Ok(())
            Ok(())
            Err("assignments.unit_from and assignments.roles_from both read jobTitle: one attribute cannot name both the unit and the roles")
            Err("assignments.units is set but assignments.unit_from is not: say which attribute names them")
            Err("assignments.roles_from is set but assignments.roles is empty: every user would be unassigned")
            Err("fields.surname = \"never\": the directory requires a first and last name; use \"on_create\" to keep edits")
            Err("options.groups_to_sync = \"scoped\" imports only the groups in scope.groups, which is empty")
            Err("options.match_existing_by is empty: list email, upn or both")
            Err("guards.max_source_drop_percent = 130: a percentage is at most 100")
        "#]]
        .assert_eq(&rendered);
    }

    #[test]
    fn units_are_a_list_or_a_table() {
        let list: NameRule = serde_json::from_str(r#"["Copenhagen", "Aarhus"]"#).expect("list");
        let table: NameRule = serde_json::from_str(r#"{"CPH HQ": "Copenhagen"}"#).expect("table");
        assert_eq!(list, NameRule::Names(vec!["Copenhagen".into(), "Aarhus".into()]));
        assert_eq!(
            table,
            NameRule::Aliases(BTreeMap::from([("CPH HQ".into(), "Copenhagen".into())]))
        );
    }
}
