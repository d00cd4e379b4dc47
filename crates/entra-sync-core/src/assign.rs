//! Ziik's unit and role rules: a user's unit and roles from one Entra attribute each, with the
//! rule that gave them, shared by the plan and `explain`.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use crate::map::clean;
use crate::model::EntraUser;
use crate::policy::{NameRule, SourceAttribute};

/// What a rule gave one user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Assigned {
    /// The policy has no rule for this (no `unit_from` or `roles_from`).
    NoRule,
    /// The names, sorted, and the rule that gave them.
    Names { names: Vec<String>, rule: String },
    /// No match, or several units: left unassigned and listed with the reason.
    Unassigned { reason: String },
}

/// The user's unit. The attribute's value may list several comma-separated parts; exactly one
/// unit must match among them, since a user has one unit: none or several leave it unassigned.
pub fn unit(user: &EntraUser, from: Option<SourceAttribute>, units: &NameRule) -> Assigned {
    let Some(from) = from else {
        return Assigned::NoRule;
    };
    let Some(value) = from.value(user).and_then(clean) else {
        return Assigned::Unassigned {
            reason: format!("{from} is not set"),
        };
    };
    let matched: BTreeSet<&str> = parts(value).flat_map(|part| matches(units, part)).collect();
    match matched.len() {
        0 => Assigned::Unassigned {
            reason: format!("no unit matches {from} {value:?}"),
        },
        1 => Assigned::Names {
            names: matched.iter().map(|&name| name.to_owned()).collect(),
            rule: format!("unit_from {from} {value:?}"),
        },
        _ => Assigned::Unassigned {
            reason: format!(
                "{from} {value:?} matches several units ({}); a user has one",
                matched.into_iter().collect::<Vec<_>>().join(", ")
            ),
        },
    }
}

/// The user's roles: the attribute is a comma-separated list and each part is matched; the parts
/// that match give the roles. No matching part leaves the user without roles, listed.
pub fn roles(user: &EntraUser, from: Option<SourceAttribute>, roles: &NameRule) -> Assigned {
    let Some(from) = from else {
        return Assigned::NoRule;
    };
    let Some(value) = from.value(user).and_then(clean) else {
        return Assigned::Unassigned {
            reason: format!("{from} is not set"),
        };
    };
    let matched: BTreeSet<&str> = parts(value).flat_map(|part| matches(roles, part)).collect();
    if matched.is_empty() {
        return Assigned::Unassigned {
            reason: format!("no role matches {from} {value:?}"),
        };
    }
    Assigned::Names {
        names: matched.into_iter().map(str::to_owned).collect(),
        rule: format!("roles_from {from} {value:?}"),
    }
}

/// The trimmed, non-empty comma-separated parts of a value.
fn parts(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').filter_map(clean)
}

/// The names a rule gives one part: a name equal to it, or the aliases whose key equals it
/// (case-insensitive; an alias table may map differently cased keys to different names).
fn matches<'r>(rule: &'r NameRule, part: &str) -> Vec<&'r str> {
    match rule {
        NameRule::Names(names) => names
            .iter()
            .filter(|name| name.trim().eq_ignore_ascii_case(part))
            .map(|name| name.trim())
            .collect(),
        NameRule::Aliases(aliases) => aliases
            .iter()
            .filter(|(key, _)| key.trim().eq_ignore_ascii_case(part))
            .map(|(_, name)| name.trim())
            .collect(),
    }
}

impl fmt::Display for Assigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Assigned::NoRule => f.write_str("no rule"),
            Assigned::Names { names, rule } => write!(f, "{} (from {rule})", names.join(", ")),
            Assigned::Unassigned { reason } => write!(f, "unassigned: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use expect_test::expect;

    use super::*;
    use crate::model::UserProperty;

    #[test]
    fn units_and_roles() {
        let list = NameRule::Names(vec!["Copenhagen".into(), "Aarhus".into()]);
        let table = NameRule::Aliases(BTreeMap::from([
            ("CPH HQ".into(), "Copenhagen".into()),
            ("Cph hq".into(), "Copenhagen North".into()),
            ("AAR".into(), "Aarhus".into()),
        ]));
        let roles_rule = NameRule::Names(vec!["Support Analyst".into(), "Senior Support Analyst".into()]);
        let user = |office: Option<&str>, title: Option<&str>| {
            EntraUser::default()
                .with(UserProperty::OfficeLocation, office)
                .with(UserProperty::JobTitle, title)
        };
        let office = Some(SourceAttribute::OfficeLocation);
        let title = Some(SourceAttribute::JobTitle);
        let rendered: String = [
            ("single", unit(&user(Some("copenhagen"), None), office, &list)),
            ("alias", unit(&user(Some("AAR"), None), office, &table)),
            ("no match", unit(&user(Some("Odense"), None), office, &list)),
            ("not set", unit(&user(None, None), office, &list)),
            (
                "two parts",
                unit(&user(Some("Aarhus, Copenhagen"), None), office, &list),
            ),
            (
                "ambiguous alias",
                unit(&user(Some("cph hq"), None), office, &table),
            ),
            ("no rule", unit(&user(Some("Aarhus"), None), None, &list)),
            (
                "one role",
                roles(&user(None, Some("Support Analyst")), title, &roles_rule),
            ),
            (
                "comma roles",
                roles(
                    &user(None, Some("senior support analyst, Support Analyst,, Cook")),
                    title,
                    &roles_rule,
                ),
            ),
            ("no role", roles(&user(None, Some("Cook")), title, &roles_rule)),
        ]
        .iter()
        .map(|(case, assigned)| format!("{case}: {assigned}\n"))
        .collect();
        expect![[r#"
            single: Copenhagen (from unit_from officeLocation "copenhagen")
            alias: Aarhus (from unit_from officeLocation "AAR")
            no match: unassigned: no unit matches officeLocation "Odense"
            not set: unassigned: officeLocation is not set
            two parts: unassigned: officeLocation "Aarhus, Copenhagen" matches several units (Aarhus, Copenhagen); a user has one
            ambiguous alias: unassigned: officeLocation "cph hq" matches several units (Copenhagen, Copenhagen North); a user has one
            no rule: no rule
            one role: Support Analyst (from roles_from jobTitle "Support Analyst")
            comma roles: Senior Support Analyst, Support Analyst (from roles_from jobTitle "senior support analyst, Support Analyst,, Cook")
            no role: unassigned: no role matches jobTitle "Cook"
        "#]]
        .assert_eq(&rendered);
    }
}
