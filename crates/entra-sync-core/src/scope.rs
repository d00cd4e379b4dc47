//! Who is synced: a policy's scope sections decided per user, with the rule that decided it, so
//! that the plan and `explain` give the same answer for the same reason.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use serde::Serialize;

use crate::map::clean;
use crate::model::{EntraGroup, EntraId, EntraUser, Presence};
use crate::policy::{GroupMembership, Scope};

/// Whether a user is in scope, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeDecision {
    /// Meets every section with a selection; the text names the sections (or says there are none).
    In(String),
    /// Fails the section the text names.
    Out(String),
}

/// The scope with its groups resolved against one snapshot; built once per plan.
#[derive(Clone, Debug)]
pub struct ScopeIndex<'a> {
    scope: &'a Scope,
    /// The present groups `scope.groups` names, by id or display name.
    named_groups: BTreeSet<&'a str>,
    /// The users of the named groups (with nested groups when transitive).
    members: BTreeSet<&'a str>,
}

impl ScopeDecision {
    /// Whether the user is in scope.
    pub fn is_in(&self) -> bool {
        matches!(self, ScopeDecision::In(_))
    }
}

impl<'a> ScopeIndex<'a> {
    /// Resolves the scope's groups. A transitive walk remembers the groups it visited, so a cycle
    /// of nested groups ends it.
    pub fn new(scope: &'a Scope, groups: &'a BTreeMap<EntraId, EntraGroup>) -> ScopeIndex<'a> {
        let named_groups: BTreeSet<&str> = groups
            .values()
            .filter(|group| group.presence == Presence::Present)
            .filter(|group| {
                scope.groups.iter().any(|wanted| {
                    let wanted = wanted.trim();
                    group.id == wanted
                        || group
                            .display_name
                            .as_deref()
                            .and_then(clean)
                            .is_some_and(|name| name.eq_ignore_ascii_case(wanted))
                })
            })
            .map(|group| group.id.as_str())
            .collect();
        let mut members = BTreeSet::new();
        let mut visited: BTreeSet<&str> = named_groups.clone();
        let mut queue: VecDeque<&str> = named_groups.iter().copied().collect();
        while let Some(id) = queue.pop_front() {
            let Some(group) = groups.get(id) else {
                continue;
            };
            if group.presence != Presence::Present {
                continue;
            }
            members.extend(group.member_users.iter().map(String::as_str));
            if scope.group_membership == GroupMembership::Transitive {
                for nested in &group.member_groups {
                    if visited.insert(nested) {
                        queue.push_back(nested);
                    }
                }
            }
        }
        ScopeIndex {
            scope,
            named_groups,
            members,
        }
    }

    /// The users the scope's groups hold (with `transitive`, through nested groups too).
    pub fn group_members(&self) -> &BTreeSet<&'a str> {
        &self.members
    }

    /// The ids of the present groups the scope names, for `groups_to_sync = "scoped"`.
    pub fn named_groups(&self) -> &BTreeSet<&'a str> {
        &self.named_groups
    }

    /// Decides one user: every section that has a selection must be met.
    pub fn decide(&self, user: &EntraUser) -> ScopeDecision {
        let scope = self.scope;
        let mut met: Vec<String> = Vec::new();
        if !scope.groups.is_empty() {
            let how = match scope.group_membership {
                GroupMembership::Direct => "direct",
                GroupMembership::Transitive => "transitive",
            };
            if !self.members.contains(user.id.as_str()) {
                return ScopeDecision::Out(format!(
                    "not a member ({how}) of any scope group [{}]",
                    scope.groups.join(", ")
                ));
            }
            met.push(format!("member ({how}) of a scope group"));
        }
        if !scope.user_types.is_empty() {
            let user_type = user_type(user);
            if !contains(&scope.user_types, user_type) {
                return ScopeDecision::Out(format!(
                    "user type {user_type} is not in user_types [{}]",
                    scope.user_types.join(", ")
                ));
            }
            met.push(format!("user type {user_type}"));
        }
        if !scope.domains.is_empty() {
            let domains: Vec<&str> = [user.user_principal_name(), user.mail()]
                .into_iter()
                .flatten()
                .filter_map(|address| address.rsplit_once('@').map(|(_, domain)| domain.trim()))
                .collect();
            match domains.iter().find(|domain| contains(&scope.domains, domain)) {
                Some(domain) => met.push(format!("domain {domain}")),
                None => {
                    return ScopeDecision::Out(format!(
                        "neither the UPN's nor the mail's domain is in domains [{}]",
                        scope.domains.join(", ")
                    ));
                }
            }
        }
        for (section, values, value) in [
            (
                "office_locations",
                &scope.office_locations,
                user.office_location(),
            ),
            ("departments", &scope.departments, user.department()),
        ] {
            if values.is_empty() {
                continue;
            }
            match value.and_then(clean) {
                Some(value) if contains(values, value) => met.push(format!("{section} {value:?}")),
                Some(value) => {
                    return ScopeDecision::Out(format!(
                        "{value:?} is not in {section} [{}]",
                        values.join(", ")
                    ));
                }
                None => {
                    return ScopeDecision::Out(format!("no value for {section} [{}]", values.join(", ")));
                }
            }
        }
        if met.is_empty() {
            ScopeDecision::In("no scope section has a selection: everyone is in scope".to_owned())
        } else {
            ScopeDecision::In(met.join(", "))
        }
    }
}

/// `userType`, else `Guest` for a UPN with `#EXT#` (an invited account), else `Member`. Guests
/// are never in or out by accident: the rule is this one, written down.
pub fn user_type(user: &EntraUser) -> &str {
    if let Some(user_type) = user.user_type().and_then(clean) {
        return user_type;
    }
    let invited = user
        .user_principal_name()
        .is_some_and(|upn| upn.to_ascii_uppercase().contains("#EXT#"));
    if invited { "Guest" } else { "Member" }
}

/// Whether `values` holds `value`, trimmed and case-insensitive.
fn contains(values: &[String], value: &str) -> bool {
    values
        .iter()
        .any(|candidate| candidate.trim().eq_ignore_ascii_case(value.trim()))
}

impl fmt::Display for ScopeDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeDecision::In(rule) => write!(f, "in scope: {rule}"),
            ScopeDecision::Out(rule) => write!(f, "out of scope: {rule}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;
    use crate::model::SourceSnapshot;

    /// Decides every user of `users` (snapshot JSON) under `scope` (JSON), one line each.
    fn check(scope: &str, expect: Expect) {
        let scope: Scope = serde_json::from_str(scope).expect("scope parses");
        let source = source();
        let index = ScopeIndex::new(&scope, &source.groups);
        let decided: Vec<(&str, ScopeDecision)> = source
            .users
            .values()
            .map(|user| (user.id.as_str(), index.decide(user)))
            .collect();
        let rendered: String = decided
            .iter()
            .map(|(id, decision)| format!("{id}: {decision}\n"))
            .collect();
        expect.assert_eq(&rendered);
    }

    fn source() -> SourceSnapshot {
        let users: Vec<EntraUser> = serde_json::from_str(
            r##"[
            {"id": "u-ann", "user_principal_name": "ann@pinnacle.example", "user_type": "Member",
             "office_location": "Copenhagen", "department": "Support"},
            {"id": "u-bob", "user_principal_name": "bob@other.example", "mail": "bob@pinnacle.example",
             "office_location": "Odense", "department": "Sales"},
            {"id": "u-guest", "user_principal_name": "gus_x.example#EXT#@pinnacle.onmicrosoft.com",
             "mail": "gus@x.example"},
            {"id": "u-nested", "user_principal_name": "nia@pinnacle.example", "account_enabled": false}
        ]"##,
        )
        .expect("users parse");
        let group = |id: &str, name: &str, users: &[&str], groups: &[&str]| EntraGroup {
            id: id.into(),
            display_name: Some(name.into()),
            member_users: users.iter().map(|&user| user.to_owned()).collect(),
            member_groups: groups.iter().map(|&group| group.to_owned()).collect(),
            ..EntraGroup::default()
        };
        SourceSnapshot {
            users: users.into_iter().map(|user| (user.id.clone(), user)).collect(),
            groups: [
                group("g-support", "Support Operations", &["u-ann"], &["g-tier2"]),
                group("g-tier2", "Tier 2", &["u-nested"], &["g-support"]),
                group("g-sales", "Sales", &["u-bob", "u-guest"], &[]),
            ]
            .into_iter()
            .map(|group| (group.id.clone(), group))
            .collect(),
        }
    }

    #[test]
    fn no_selection_is_everyone() {
        check(
            "{}",
            expect![[r#"
                u-ann: in scope: no scope section has a selection: everyone is in scope
                u-bob: in scope: no scope section has a selection: everyone is in scope
                u-guest: in scope: no scope section has a selection: everyone is in scope
                u-nested: in scope: no scope section has a selection: everyone is in scope
            "#]],
        );
    }

    #[test]
    fn groups_direct_and_transitive_with_a_cycle() {
        check(
            r#"{"groups": ["support operations"]}"#,
            expect![[r#"
                u-ann: in scope: member (direct) of a scope group
                u-bob: out of scope: not a member (direct) of any scope group [support operations]
                u-guest: out of scope: not a member (direct) of any scope group [support operations]
                u-nested: out of scope: not a member (direct) of any scope group [support operations]
            "#]],
        );
        // g-tier2 is nested in g-support and g-support in g-tier2: the walk still ends.
        check(
            r#"{"groups": ["g-support"], "group_membership": "transitive"}"#,
            expect![[r#"
                u-ann: in scope: member (transitive) of a scope group
                u-bob: out of scope: not a member (transitive) of any scope group [g-support]
                u-guest: out of scope: not a member (transitive) of any scope group [g-support]
                u-nested: in scope: member (transitive) of a scope group
            "#]],
        );
    }

    #[test]
    fn user_types_domains_and_values() {
        check(
            r#"{"user_types": ["member"], "domains": ["PINNACLE.example"]}"#,
            expect![[r#"
                u-ann: in scope: user type Member, domain pinnacle.example
                u-bob: in scope: user type Member, domain pinnacle.example
                u-guest: out of scope: user type Guest is not in user_types [member]
                u-nested: in scope: user type Member, domain pinnacle.example
            "#]],
        );
        check(
            r#"{"user_types": ["Guest"]}"#,
            expect![[r#"
                u-ann: out of scope: user type Member is not in user_types [Guest]
                u-bob: out of scope: user type Member is not in user_types [Guest]
                u-guest: in scope: user type Guest
                u-nested: out of scope: user type Member is not in user_types [Guest]
            "#]],
        );
        check(
            r#"{"groups": ["Sales"], "office_locations": ["odense"], "departments": ["Sales", "Support"]}"#,
            expect![[r#"
                u-ann: out of scope: not a member (direct) of any scope group [Sales]
                u-bob: in scope: member (direct) of a scope group, office_locations "Odense", departments "Sales"
                u-guest: out of scope: no value for office_locations [odense]
                u-nested: out of scope: not a member (direct) of any scope group [Sales]
            "#]],
        );
    }
}
