//! `entra-sync explain`: why the sync treats one Entra user as it does, from the same rules the
//! planner uses (scope, link, unit and roles), so the answer never drifts from the plan.

use std::fmt;

use serde::Serialize;

use crate::assign::{self, Assigned};
use crate::map::{Field, clean, email};
use crate::model::{EntraId, EntraUser, Presence, SourceSnapshot};
use crate::policy::{MatchBy, Policy};
use crate::scope::{ScopeDecision, ScopeIndex};
use crate::target::{DirectoryId, DirectoryUser, TargetState};

/// How the user stands with the directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// A directory user carries this Entra id.
    Linked(DirectoryId),
    /// Not linked yet; the first `match_existing_by` key that finds directory users names them.
    /// One unlinked match is linked on the next run; several, or a linked one, are a conflict.
    Matches {
        by: MatchBy,
        directory_ids: Vec<DirectoryId>,
    },
    /// Not linked and no key finds a directory user: the next run creates one (when in scope).
    None,
}

/// Everything `explain` says about one user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub struct Explanation {
    pub entra_id: EntraId,
    pub display_name: Option<String>,
    pub presence: Presence,
    pub account_enabled: Option<bool>,
    pub scope: ScopeDecision,
    pub link: Link,
    /// The linked directory user's record.
    pub directory: Option<DirectoryUser>,
    /// The linked user's department, by name.
    pub department: Option<String>,
    pub unit: Assigned,
    pub roles: Assigned,
}

/// The snapshot's users a query names: by object id, or by UPN or mail (case-insensitive). More
/// than one means the query is ambiguous and the caller should say so.
pub fn find_users<'s>(source: &'s SourceSnapshot, query: &str) -> Vec<&'s EntraUser> {
    let query = query.trim();
    if let Some(user) = source.users.get(query) {
        return vec![user];
    }
    source
        .users
        .values()
        .filter(|user| {
            [user.user_principal_name(), user.mail()]
                .into_iter()
                .flatten()
                .any(|address| address.trim().eq_ignore_ascii_case(query))
        })
        .collect()
}

/// Explains one Entra user (found with [`find_users`]).
pub fn explain(
    user: &EntraUser,
    source: &SourceSnapshot,
    target: &TargetState,
    policy: &Policy,
) -> Explanation {
    let scope = ScopeIndex::new(&policy.scope, &source.groups).decide(user);
    let directory = target
        .users
        .iter()
        .find(|candidate| candidate.entra_id.as_deref() == Some(user.id.as_str()))
        .cloned();
    let link = match &directory {
        Some(directory_user) => Link::Linked(directory_user.id),
        None => policy
            .match_existing_by
            .iter()
            .find_map(|&by| {
                let value = match by {
                    MatchBy::Email => email(user),
                    MatchBy::Upn => user.user_principal_name(),
                }
                .and_then(clean)?
                .to_lowercase();
                let fields: &[Field] = match by {
                    MatchBy::Email => &[Field::Email],
                    MatchBy::Upn => &[Field::UserPrincipalName, Field::Email],
                };
                let directory_ids: Vec<DirectoryId> = target
                    .users
                    .iter()
                    .filter(|candidate| {
                        fields.iter().any(|field| {
                            candidate
                                .attributes
                                .get(*field)
                                .is_some_and(|own| own.to_lowercase() == value)
                        })
                    })
                    .map(|candidate| candidate.id)
                    .collect();
                (!directory_ids.is_empty()).then_some(Link::Matches { by, directory_ids })
            })
            .unwrap_or(Link::None),
    };
    let department = directory
        .as_ref()
        .and_then(|directory_user| directory_user.department)
        .and_then(|id| target.departments.iter().find(|department| department.id == id))
        .map(|department| department.name.clone());
    let rules = &policy.assignments;
    Explanation {
        entra_id: user.id.clone(),
        display_name: user.display_name().map(str::to_owned),
        presence: user.presence,
        account_enabled: user.account_enabled,
        scope,
        link,
        directory,
        department,
        unit: assign::unit(user, rules.unit_from, &rules.units),
        roles: assign::roles(user, rules.roles_from, &rules.roles),
    }
}

impl fmt::Display for Explanation {
    /// A few labelled lines, as `entra-sync explain` prints them before the recent actions.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "user {}", self.entra_id)?;
        if let Some(name) = &self.display_name {
            write!(f, " ({name})")?;
        }
        let presence = match self.presence {
            Presence::Present => "present",
            Presence::SoftDeleted => "soft-deleted",
            Presence::Deleted => "deleted",
        };
        let enabled = match self.account_enabled {
            Some(true) => "enabled",
            Some(false) => "disabled",
            None => "enabled state unknown",
        };
        writeln!(f)?;
        writeln!(f, "  in Entra:  {presence}, {enabled}")?;
        writeln!(f, "  scope:     {}", self.scope)?;
        match &self.link {
            Link::Linked(id) => writeln!(f, "  link:      linked to directory user #{id}")?,
            Link::Matches { by, directory_ids } => {
                let by = match by {
                    MatchBy::Email => "email",
                    MatchBy::Upn => "upn",
                };
                let ids: Vec<String> = directory_ids.iter().map(|id| format!("#{id}")).collect();
                writeln!(
                    f,
                    "  link:      not linked; {by} matches directory user {}",
                    ids.join(", ")
                )?;
            }
            Link::None => writeln!(f, "  link:      not linked; no directory user matches")?,
        }
        match &self.directory {
            Some(user) => {
                write!(f, "  directory: #{} {}", user.id, user.status.as_str())?;
                if let Some(reason) = &user.status_reason {
                    write!(f, " ({reason})")?;
                }
                if let Some(at) = user.soft_deleted_at {
                    write!(f, ", soft-deleted at {}", at.to_rfc3339())?;
                }
                writeln!(f)?;
                for (field, value) in user.attributes.iter() {
                    writeln!(f, "    {field}: {value:?}")?;
                }
                if let Some(department) = &self.department {
                    writeln!(f, "    department (object): {department:?}")?;
                }
            }
            None => writeln!(f, "  directory: no record")?,
        }
        writeln!(f, "  unit:      {}", self.unit)?;
        writeln!(f, "  roles:     {}", self.roles)
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn explains_scope_link_record_unit_and_roles() {
        let source: SourceSnapshot = serde_json::from_str(
            r#"{"users": {
                "u-ann": {"id": "u-ann", "display_name": "Ann Lee", "account_enabled": true,
                          "office_location": "CPH HQ", "job_title": "Support Analyst, Cook"},
                "u-bob": {"id": "u-bob", "display_name": "Bob Lee", "mail": "Bob@Pinnacle.example",
                          "office_location": "Odense"}
            },
            "groups": {
                "g-support": {"id": "g-support", "display_name": "Support Operations", "member_users": ["u-ann"]}
            }}"#,
        )
        .expect("source parses");
        let target: TargetState = serde_json::from_str(
            r#"{"users": [
                {"id": 1, "entra_id": "u-ann", "department": 30, "status": "disabled",
                 "status_reason": "Disabled in Microsoft",
                 "attributes": {"given_name": "Ann", "surname": "Lee", "unit": "Copenhagen"}},
                {"id": 2, "attributes": {"email": "bob@pinnacle.example"}}
            ],
            "departments": [{"id": 30, "name": "Support", "created_by_sync": true}]}"#,
        )
        .expect("target parses");
        let policy: Policy = serde_json::from_str(
            r#"{"scope": {"groups": ["Support Operations"]},
                "assignments": {"unit_from": "officeLocation", "units": {"CPH HQ": "Copenhagen"},
                                "roles_from": "jobTitle", "roles": ["Support Analyst"]}}"#,
        )
        .expect("policy parses");
        let found = |query: &str| -> Vec<&str> {
            find_users(&source, query)
                .iter()
                .map(|user| user.id.as_str())
                .collect()
        };
        assert_eq!(found("u-bob"), ["u-bob"]);
        assert_eq!(found(" bob@pinnacle.EXAMPLE "), ["u-bob"]);
        assert!(found("nobody@pinnacle.example").is_empty());
        // `explain --json` prints the same as a value.
        let json = serde_json::to_value(explain(&source.users["u-ann"], &source, &target, &policy))
            .expect("serializable");
        assert_eq!(json["scope"]["in"], "member (direct) of a scope group");
        assert_eq!(json["link"]["linked"], 1);
        assert_eq!(json["unit"]["names"]["names"][0], "Copenhagen");
        let rendered: String = source
            .users
            .values()
            .map(|user| explain(user, &source, &target, &policy).to_string())
            .collect();
        expect![[r#"
            user u-ann (Ann Lee)
              in Entra:  present, enabled
              scope:     in scope: member (direct) of a scope group
              link:      linked to directory user #1
              directory: #1 disabled (Disabled in Microsoft)
                given_name: "Ann"
                surname: "Lee"
                unit: "Copenhagen"
                department (object): "Support"
              unit:      Copenhagen (from unit_from officeLocation "CPH HQ")
              roles:     Support Analyst (from roles_from jobTitle "Support Analyst, Cook")
            user u-bob (Bob Lee)
              in Entra:  present, enabled state unknown
              scope:     out of scope: not a member (direct) of any scope group [Support Operations]
              link:      not linked; email matches directory user #2
              directory: no record
              unit:      unassigned: no unit matches officeLocation "Odense"
              roles:     unassigned: jobTitle is not set
        "#]]
        .assert_eq(&rendered);
    }
}
