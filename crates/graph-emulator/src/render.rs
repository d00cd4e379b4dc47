//! Graph's JSON shapes of users and groups: the property tables, the default property sets, and
//! rendering one object with a `$select`.

use serde_json::{Map, Value, json};

use crate::json::{ObjectWriter, push_str};
use crate::model::{Field, Group, User, UserState};

/// How one user property is rendered.
#[derive(Clone, Copy, Debug)]
pub(crate) enum UserProp {
    Id,
    Text(Field),
    BusinessPhones,
    AccountEnabled,
    AssignedLicenses,
    DeletedDateTime,
    OtherMails,
    ProxyAddresses,
    OnPremisesSyncEnabled,
    SignInActivity,
    /// A navigation property: `manager@delta` in delta, not rendered in collections.
    Manager,
}

/// Every user property the emulator knows. A property's index is its bit in change masks.
pub(crate) const USER_PROPS: &[(&str, UserProp)] = &[
    ("id", UserProp::Id),
    ("businessPhones", UserProp::BusinessPhones),
    ("displayName", UserProp::Text(Field::DisplayName)),
    ("givenName", UserProp::Text(Field::GivenName)),
    ("jobTitle", UserProp::Text(Field::JobTitle)),
    ("mail", UserProp::Text(Field::Mail)),
    ("mobilePhone", UserProp::Text(Field::MobilePhone)),
    ("officeLocation", UserProp::Text(Field::OfficeLocation)),
    ("preferredLanguage", UserProp::Text(Field::PreferredLanguage)),
    ("surname", UserProp::Text(Field::Surname)),
    ("userPrincipalName", UserProp::Text(Field::UserPrincipalName)),
    ("accountEnabled", UserProp::AccountEnabled),
    ("assignedLicenses", UserProp::AssignedLicenses),
    ("city", UserProp::Text(Field::City)),
    ("companyName", UserProp::Text(Field::CompanyName)),
    ("country", UserProp::Text(Field::Country)),
    ("createdDateTime", UserProp::Text(Field::CreatedDateTime)),
    ("deletedDateTime", UserProp::DeletedDateTime),
    ("department", UserProp::Text(Field::Department)),
    ("employeeId", UserProp::Text(Field::EmployeeId)),
    ("employeeType", UserProp::Text(Field::EmployeeType)),
    ("externalUserState", UserProp::Text(Field::ExternalUserState)),
    ("mailNickname", UserProp::Text(Field::MailNickname)),
    ("otherMails", UserProp::OtherMails),
    ("onPremisesSyncEnabled", UserProp::OnPremisesSyncEnabled),
    ("postalCode", UserProp::Text(Field::PostalCode)),
    ("proxyAddresses", UserProp::ProxyAddresses),
    ("signInActivity", UserProp::SignInActivity),
    ("state", UserProp::Text(Field::State)),
    ("streetAddress", UserProp::Text(Field::StreetAddress)),
    ("usageLocation", UserProp::Text(Field::UsageLocation)),
    ("userType", UserProp::Text(Field::UserType)),
    ("manager", UserProp::Manager),
];

/// Indexes in [`USER_PROPS`] of the properties returned without `$select` (GRAPH.md §2.1), in the
/// order of the samples.
pub(crate) const USER_DEFAULT: &[usize] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0];

pub(crate) const USER_MANAGER: usize = USER_PROPS.len() - 1;
pub(crate) const USER_SIGN_IN_ACTIVITY: usize = 27;

/// Graph's zero DateTimeOffset, its value for "never signed in" (sample
/// user-list-signinactivity.json).
pub(crate) const NEVER_SIGNED_IN: &str = "0001-01-01T00:00:00Z";

/// Properties Graph keeps outside the directory; selecting them on a collection answers 501.
pub(crate) const USER_NOT_IN_COLLECTIONS: &[&str] = &[
    "aboutMe",
    "birthday",
    "hireDate",
    "interests",
    "mySite",
    "pastProjects",
    "preferredName",
    "responsibilities",
    "schools",
    "skills",
    "mailboxSettings",
];

pub(crate) fn user_prop_index(name: &str) -> Option<usize> {
    USER_PROPS
        .iter()
        .position(|(prop, _)| prop.eq_ignore_ascii_case(name))
}

/// Writes one user property value; `None` when the value is null.
fn write_user_value(buf: &mut Vec<u8>, id: &str, user: &User, prop: UserProp) -> bool {
    match prop {
        UserProp::Id => push_str(buf, id),
        UserProp::Text(field) => match user.get(field) {
            Some(text) => push_str(buf, text),
            None => return false,
        },
        UserProp::BusinessPhones => {
            buf.push(b'[');
            if let Some(phone) = user.get(Field::BusinessPhone) {
                push_str(buf, phone);
            }
            buf.push(b']');
        }
        UserProp::AccountEnabled => {
            buf.extend_from_slice(if user.account_enabled { b"true" } else { b"false" });
        }
        UserProp::AssignedLicenses => {
            buf.push(b'[');
            for (index, sku) in user.licenses().enumerate() {
                if index > 0 {
                    buf.push(b',');
                }
                buf.extend_from_slice(b"{\"disabledPlans\":[],\"skuId\":");
                push_str(buf, sku);
                buf.push(b'}');
            }
            buf.push(b']');
        }
        UserProp::DeletedDateTime => match user.state {
            UserState::SoftDeleted { at } => push_str(buf, &crate::clock::iso(at)),
            UserState::Active => return false,
        },
        UserProp::OtherMails => buf.extend_from_slice(b"[]"),
        UserProp::ProxyAddresses => {
            buf.push(b'[');
            if let Some(mail) = user.get(Field::Mail) {
                push_str(buf, &format!("SMTP:{mail}"));
            }
            buf.push(b']');
        }
        UserProp::OnPremisesSyncEnabled => return false,
        UserProp::SignInActivity => {
            let (at, request) = match user.last_sign_in {
                Some(at) => (
                    crate::clock::iso(at),
                    crate::generate::guid(at as u64 ^ 0x516e_0000_0000_0000),
                ),
                None => (NEVER_SIGNED_IN.to_owned(), String::new()),
            };
            let mut activity = ObjectWriter::new(buf);
            activity.string("lastSignInDateTime", &at);
            activity.string("lastSignInRequestId", &request);
            // The emulator models interactive sign-ins only.
            activity.string("lastNonInteractiveSignInDateTime", NEVER_SIGNED_IN);
            activity.string("lastNonInteractiveSignInRequestId", "");
            activity.finish();
        }
        UserProp::Manager => match user.get(Field::Manager) {
            Some(manager) => {
                buf.extend_from_slice(b"[{\"@odata.type\":\"#microsoft.graph.user\",\"id\":");
                push_str(buf, manager);
                buf.extend_from_slice(b"}]");
            }
            None => return false,
        },
    }
    true
}

/// How a user object is written.
#[derive(Clone, Copy)]
pub(crate) struct UserStyle {
    /// Properties (bits as in change masks) written as `null` when unset: all of them in
    /// collections; in delta only those that changed, as an unset property is otherwise left out.
    pub(crate) null_mask: u64,
    /// Delta writes `manager@delta`; collections skip navigation properties.
    pub(crate) delta: bool,
}

/// Writes a user with the properties `props` (indexes in [`USER_PROPS`]).
pub(crate) fn write_user(buf: &mut Vec<u8>, id: &str, user: &User, props: &[usize], style: UserStyle) {
    let mut object = ObjectWriter::new(buf);
    for &index in props {
        let (name, prop) = USER_PROPS[index];
        if matches!(prop, UserProp::Manager) {
            if style.delta {
                let checkpoint = object.checkpoint();
                if !write_user_value(object.key("manager@delta"), id, user, prop) {
                    object.rollback(checkpoint);
                    // A removed manager shows as an empty list; one never set is left out.
                    if style.null_mask & (1 << index) != 0 {
                        object.raw("manager@delta", "[]");
                    }
                }
            }
            continue;
        }
        let checkpoint = object.checkpoint();
        if !write_user_value(object.key(name), id, user, prop) {
            object.rollback(checkpoint);
            if style.null_mask & (1 << index) != 0 {
                object.raw(name, "null");
            }
        }
    }
    object.finish();
}

/// The bits of the properties that differ between two versions of a user.
pub(crate) fn user_diff(id: &str, before: &User, after: &User) -> u64 {
    let mut mask = 0u64;
    for (index, (_, prop)) in USER_PROPS.iter().enumerate() {
        // Sign-ins are kept outside the directory: they never show in delta.
        if index == USER_SIGN_IN_ACTIVITY {
            continue;
        }
        let (mut old, mut new) = (Vec::new(), Vec::new());
        let old_set = write_user_value(&mut old, id, before, *prop);
        let new_set = write_user_value(&mut new, id, after, *prop);
        if old_set != new_set || old != new {
            mask |= 1 << index;
        }
    }
    mask
}

/// A user with every property and its lifecycle state, as the control API and fixtures show it,
/// with `isMfaRegistered` from the MFA registration report.
pub(crate) fn user_control_json(id: &str, user: &User) -> Value {
    let all: Vec<usize> = (0..USER_PROPS.len()).collect();
    let mut buf = Vec::new();
    write_user(
        &mut buf,
        id,
        user,
        &all,
        UserStyle {
            null_mask: u64::MAX,
            delta: false,
        },
    );
    let mut value: Value = serde_json::from_slice(&buf).unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.insert("manager".to_owned(), json!(user.get(Field::Manager)));
        let state = match user.state {
            UserState::Active => "active",
            UserState::SoftDeleted { .. } => "soft_deleted",
        };
        object.insert("state".to_owned(), json!(state));
        object.insert("isMfaRegistered".to_owned(), json!(user.mfa_registered));
    }
    value
}

/// Every group property, in the order of sample group-list-default.json; all are defaults. An
/// index is the property's bit in change masks; `members` is the navigation property for delta.
pub(crate) const GROUP_PROPS: &[&str] = &[
    "id",
    "deletedDateTime",
    "classification",
    "createdDateTime",
    "description",
    "displayName",
    "expirationDateTime",
    "groupTypes",
    "isAssignableToRole",
    "mail",
    "mailEnabled",
    "mailNickname",
    "membershipRule",
    "membershipRuleProcessingState",
    "onPremisesLastSyncDateTime",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "preferredDataLocation",
    "preferredLanguage",
    "proxyAddresses",
    "renewedDateTime",
    "resourceBehaviorOptions",
    "resourceProvisioningOptions",
    "securityEnabled",
    "theme",
    "visibility",
    "onPremisesProvisioningErrors",
    "members",
];

pub(crate) const GROUP_MEMBERS: usize = GROUP_PROPS.len() - 1;

pub(crate) fn group_prop_index(name: &str) -> Option<usize> {
    GROUP_PROPS
        .iter()
        .position(|prop| prop.eq_ignore_ascii_case(name))
}

/// A group with all its (non-navigation) properties.
pub(crate) fn group_json(id: &str, group: &Group) -> Map<String, Value> {
    let proxy: Vec<String> = group.mail.iter().map(|mail| format!("SMTP:{mail}")).collect();
    let value = json!({
        "id": id,
        "deletedDateTime": null,
        "classification": null,
        "createdDateTime": group.created,
        "description": group.description,
        "displayName": group.display_name,
        "expirationDateTime": null,
        "groupTypes": group.group_types,
        "isAssignableToRole": null,
        "mail": group.mail,
        "mailEnabled": group.mail_enabled,
        "mailNickname": group.mail_nickname,
        "membershipRule": null,
        "membershipRuleProcessingState": null,
        "onPremisesLastSyncDateTime": null,
        "onPremisesSecurityIdentifier": null,
        "onPremisesSyncEnabled": null,
        "preferredDataLocation": null,
        "preferredLanguage": null,
        "proxyAddresses": proxy,
        "renewedDateTime": group.created,
        "resourceBehaviorOptions": [],
        "resourceProvisioningOptions": [],
        "securityEnabled": group.security_enabled,
        "theme": null,
        "visibility": group.visibility,
        "onPremisesProvisioningErrors": [],
    });
    match value {
        Value::Object(object) => object,
        _ => Map::new(),
    }
}

pub(crate) fn group_diff(before: &Map<String, Value>, after: &Map<String, Value>) -> u64 {
    let mut mask = 0u64;
    for (index, name) in GROUP_PROPS.iter().enumerate() {
        if before.get(*name) != after.get(*name) {
            mask |= 1 << index;
        }
    }
    mask
}

/// The group's properties `props` (indexes in [`GROUP_PROPS`]) written into `object`; `null_mask`
/// as in [`UserStyle`].
pub(crate) fn write_group(
    object: &mut ObjectWriter<'_>,
    all: &Map<String, Value>,
    props: &[usize],
    null_mask: u64,
) {
    for &index in props {
        let name = GROUP_PROPS[index];
        if index == GROUP_MEMBERS {
            continue;
        }
        let nulls = null_mask & (1 << index) != 0;
        match all.get(name) {
            Some(Value::Null) | None if !nulls => {}
            Some(value) => object.raw(name, &value.to_string()),
            None => object.raw(name, "null"),
        }
    }
}
