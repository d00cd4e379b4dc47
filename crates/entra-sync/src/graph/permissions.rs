//! The application permissions a sync needs, which granted roles satisfy each, and how to read
//! the granted roles out of an access token.

use base64::Engine;

/// A permission a sync needs and the granted roles that include it.
pub struct Requirement {
    pub permission: &'static str,
    pub satisfied_by: &'static [&'static str],
}

/// What a sync reads: users, and groups with their members.
pub const REQUIRED: &[Requirement] = &[
    Requirement {
        permission: "User.Read.All",
        satisfied_by: &[
            "User.Read.All",
            "User.ReadWrite.All",
            "Directory.Read.All",
            "Directory.ReadWrite.All",
        ],
    },
    Requirement {
        permission: "GroupMember.Read.All",
        satisfied_by: &[
            "GroupMember.Read.All",
            "GroupMember.ReadWrite.All",
            "Group.Read.All",
            "Group.ReadWrite.All",
            "Directory.Read.All",
            "Directory.ReadWrite.All",
        ],
    },
];

/// What the Microsoft data (`microsoft.rs`) and Test connection's secret expiry (`health.rs`)
/// need: a sync works without them, and each missing one is a warning.
pub const OPTIONAL: &[Requirement] = &[
    Requirement {
        permission: "LicenseAssignment.Read.All",
        satisfied_by: &[
            "LicenseAssignment.Read.All",
            "Organization.Read.All",
            "Organization.ReadWrite.All",
            "Directory.Read.All",
            "Directory.ReadWrite.All",
        ],
    },
    Requirement {
        permission: "AuditLog.Read.All",
        satisfied_by: &["AuditLog.Read.All"],
    },
    // The app's own registration, where its client secrets' end dates are.
    Requirement {
        permission: "Application.Read.All",
        satisfied_by: &[
            "Application.Read.All",
            "Application.ReadWrite.All",
            "Directory.Read.All",
            "Directory.ReadWrite.All",
        ],
    },
];

/// The required permissions that none of `granted` satisfies.
pub fn missing(granted: &[String]) -> Vec<&'static str> {
    missing_of(REQUIRED, granted)
}

/// The permissions of `requirements` that none of `granted` satisfies.
pub fn missing_of(requirements: &[Requirement], granted: &[String]) -> Vec<&'static str> {
    requirements
        .iter()
        .filter(|requirement| {
            !requirement
                .satisfied_by
                .iter()
                .any(|role| granted.iter().any(|granted| granted == role))
        })
        .map(|requirement| requirement.permission)
        .collect()
}

/// The `roles` claim of an app-only access token, or `None` when the token is not a JWT with
/// one. The token is read, not verified: it just came from the token endpoint, and this only
/// reports what it says; Graph enforces the permissions itself.
pub(super) fn token_roles(token: &str) -> Option<Vec<String>> {
    let payload = token.split('.').nth(1)?;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&payload).ok()?;
    claims
        .get("roles")?
        .as_array()?
        .iter()
        .map(|role| role.as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_permissions() {
        for (granted, expected) in [
            (vec!["User.Read.All", "GroupMember.Read.All"], vec![]),
            (vec!["Directory.Read.All"], vec![]),
            (vec!["User.Read.All", "Group.Read.All"], vec![]),
            (vec!["User.Read.All"], vec!["GroupMember.Read.All"]),
            (vec!["Mail.Send"], vec!["User.Read.All", "GroupMember.Read.All"]),
            (vec![], vec!["User.Read.All", "GroupMember.Read.All"]),
        ] {
            let granted: Vec<String> = granted.iter().map(|role| (*role).to_owned()).collect();
            assert_eq!(missing(&granted), expected, "{granted:?}");
        }
        let granted = vec!["User.Read.All".to_owned(), "Directory.Read.All".to_owned()];
        assert_eq!(missing_of(OPTIONAL, &granted), vec!["AuditLog.Read.All"]);
        let granted = vec!["User.Read.All".to_owned(), "GroupMember.Read.All".to_owned()];
        assert_eq!(
            missing_of(OPTIONAL, &granted),
            vec![
                "LicenseAssignment.Read.All",
                "AuditLog.Read.All",
                "Application.Read.All"
            ]
        );
        let granted = vec!["Application.ReadWrite.All".to_owned()];
        assert!(!missing_of(OPTIONAL, &granted).contains(&"Application.Read.All"));
    }

    #[test]
    fn roles_from_a_token() {
        let encode = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        let token = format!(
            "{}.{}.signature",
            encode(r#"{"alg":"RS256"}"#),
            encode(r#"{"roles":["User.Read.All","Group.Read.All"],"tid":"t"}"#)
        );
        assert_eq!(
            token_roles(&token),
            Some(vec!["User.Read.All".to_owned(), "Group.Read.All".to_owned()])
        );
        let no_roles = format!("{}.{}.s", encode("{}"), encode(r#"{"tid":"t"}"#));
        assert_eq!(token_roles(&no_roles), None);
        assert_eq!(token_roles("opaque-token"), None);
    }
}
