//! The directory the emulator serves: users, groups and memberships, kept compact so a million users
//! fit in memory, and the change log that delta rounds read.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// Soft-deleted users can be restored for 30 days, then they are gone for good (GRAPH.md §3.7).
pub(crate) const SOFT_DELETE_RETENTION_SECS: i64 = 30 * 86_400;

/// The string-valued facts of a user, stored packed in one allocation (see [`Packed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    UserPrincipalName,
    Mail,
    DisplayName,
    GivenName,
    Surname,
    JobTitle,
    Department,
    CompanyName,
    OfficeLocation,
    StreetAddress,
    City,
    State,
    PostalCode,
    Country,
    MobilePhone,
    /// The one number of `businessPhones` ("only one number can be set").
    BusinessPhone,
    EmployeeId,
    EmployeeType,
    UserType,
    PreferredLanguage,
    UsageLocation,
    MailNickname,
    CreatedDateTime,
    ExternalUserState,
    /// The manager's object id.
    Manager,
    /// Assigned licence SKU ids, comma-separated.
    Licenses,
}

pub(crate) const FIELD_COUNT: usize = Field::Licenses as usize + 1;

/// Every field, in declaration order (`ALL_FIELDS[f as usize] == f`).
const ALL_FIELDS: [Field; FIELD_COUNT] = [
    Field::UserPrincipalName,
    Field::Mail,
    Field::DisplayName,
    Field::GivenName,
    Field::Surname,
    Field::JobTitle,
    Field::Department,
    Field::CompanyName,
    Field::OfficeLocation,
    Field::StreetAddress,
    Field::City,
    Field::State,
    Field::PostalCode,
    Field::Country,
    Field::MobilePhone,
    Field::BusinessPhone,
    Field::EmployeeId,
    Field::EmployeeType,
    Field::UserType,
    Field::PreferredLanguage,
    Field::UsageLocation,
    Field::MailNickname,
    Field::CreatedDateTime,
    Field::ExternalUserState,
    Field::Manager,
    Field::Licenses,
];

/// The JSON names of the fields that are plain strings in Graph's user shape. Graph's `state`
/// (the address's state or province) is left out: in control API and fixture JSON, `state` is the
/// user's lifecycle (`active`, `soft_deleted`, `deleted`), so the address state stays unset.
pub(crate) const TEXT_FIELDS: &[(&str, Field)] = &[
    ("userPrincipalName", Field::UserPrincipalName),
    ("mail", Field::Mail),
    ("displayName", Field::DisplayName),
    ("givenName", Field::GivenName),
    ("surname", Field::Surname),
    ("jobTitle", Field::JobTitle),
    ("department", Field::Department),
    ("companyName", Field::CompanyName),
    ("officeLocation", Field::OfficeLocation),
    ("streetAddress", Field::StreetAddress),
    ("city", Field::City),
    ("postalCode", Field::PostalCode),
    ("country", Field::Country),
    ("mobilePhone", Field::MobilePhone),
    ("employeeId", Field::EmployeeId),
    ("employeeType", Field::EmployeeType),
    ("userType", Field::UserType),
    ("preferredLanguage", Field::PreferredLanguage),
    ("usageLocation", Field::UsageLocation),
    ("mailNickname", Field::MailNickname),
    ("createdDateTime", Field::CreatedDateTime),
    ("externalUserState", Field::ExternalUserState),
];

/// Keys of a Graph-shaped user that are derived here and so ignored on input (they appear in
/// fixtures and in `GET /_emulator/users`).
const DERIVED_USER_KEYS: &[&str] = &[
    "id",
    "deletedDateTime",
    "proxyAddresses",
    "otherMails",
    "onPremisesSyncEnabled",
    "@odata.type",
];

/// The first private-use character; `COMMON_BASE + i` stands for the `i`-th common value of a field.
const COMMON_BASE: u32 = 0xE000;

/// Stored as `mail` when it equals the userPrincipalName, as most members' do.
const SAME_AS_UPN: char = '\u{E100}';
/// Stored as `mailNickname` when it is the userPrincipalName's part before `@`.
const UPN_LOCAL_PART: char = '\u{E101}';

/// The `index`-th common value of a field. Common values (departments, titles, offices, licence
/// ids…) are stored as one private-use character (3 bytes) instead of their text: they are most of
/// a generated user's bytes, and a million users must stay well under a gigabyte.
fn common_value(field: Field, index: usize) -> Option<&'static str> {
    use crate::generate::{COMPANY, DEPARTMENTS, JOB_TITLES, OFFICES, SKUS};
    let office = OFFICES.get(index);
    match field {
        Field::Department => DEPARTMENTS.get(index).copied(),
        Field::JobTitle => JOB_TITLES.get(index).copied(),
        Field::CompanyName => (index == 0).then_some(COMPANY),
        Field::OfficeLocation => office.map(|office| office.name),
        Field::StreetAddress => office.map(|office| office.street),
        Field::PostalCode => office.map(|office| office.postal_code),
        Field::City => office.map(|office| office.city),
        Field::Country => office.map(|office| office.country),
        Field::PreferredLanguage => office.map(|office| office.language),
        Field::UsageLocation => office.map(|office| office.usage_location),
        Field::EmployeeType => ["Employee", "Contractor"].get(index).copied(),
        Field::UserType => ["Member", "Guest"].get(index).copied(),
        Field::Licenses => SKUS.get(index).map(|sku| sku.0),
        _ => None,
    }
}

/// `value` in its stored form: a private-use character when it is common.
fn encode_common(field: Field, value: &str, into: &mut String) {
    let common = (0..).map_while(|index| common_value(field, index).map(|known| (index, known)));
    match common.into_iter().find(|(_, known)| *known == value) {
        Some((index, _)) => into.extend(char::from_u32(COMMON_BASE + index as u32)),
        None => into.push_str(value),
    }
}

/// The common value a stored string stands for, if it is one.
fn decode_common(field: Field, stored: &str) -> Option<&'static str> {
    let mut chars = stored.chars();
    let code = u32::from(chars.next()?).checked_sub(COMMON_BASE)?;
    if chars.next().is_some() || code > 0xff {
        return None;
    }
    common_value(field, code as usize)
}

/// All string fields of one object in a single boxed string with end offsets: one allocation per
/// user instead of twenty-six. An empty string means unset, as Graph has no empty values here.
#[derive(Clone, Debug, Default)]
pub(crate) struct Packed {
    text: Box<str>,
    ends: [u16; FIELD_COUNT],
}

impl Packed {
    /// The field's value. Licences are a list: read them with [`Packed::licenses`].
    pub(crate) fn get(&self, field: Field) -> Option<&str> {
        let stored = self.stored(field as usize)?;
        let upn = || self.stored(Field::UserPrincipalName as usize);
        match stored.chars().next() {
            Some(SAME_AS_UPN) if stored.len() == SAME_AS_UPN.len_utf8() => upn(),
            Some(UPN_LOCAL_PART) if stored.len() == UPN_LOCAL_PART.len_utf8() => {
                upn().and_then(|upn| upn.split('@').next())
            }
            _ => Some(decode_common(field, stored).unwrap_or(stored)),
        }
    }

    fn stored(&self, index: usize) -> Option<&str> {
        let start = if index == 0 {
            0
        } else {
            usize::from(self.ends[index - 1])
        };
        let end = usize::from(self.ends[index]);
        (end > start).then(|| &self.text[start..end])
    }

    /// The assigned licence SKU ids.
    pub(crate) fn licenses(&self) -> impl Iterator<Item = &str> {
        self.stored(Field::Licenses as usize)
            .unwrap_or("")
            .split(',')
            .filter(|sku| !sku.is_empty())
            .map(|sku| decode_common(Field::Licenses, sku).unwrap_or(sku))
    }

    pub(crate) fn set(&mut self, field: Field, value: Option<&str>) -> Result<(), ModelError> {
        let licenses = self.licenses().collect::<Vec<&str>>().join(",");
        let mut values: [&str; FIELD_COUNT] = [""; FIELD_COUNT];
        for (index, slot) in values.iter_mut().enumerate() {
            *slot = self.get(ALL_FIELDS[index]).unwrap_or("");
        }
        values[Field::Licenses as usize] = &licenses;
        values[field as usize] = value.unwrap_or("");
        *self = Packed::from_values(&values)?;
        Ok(())
    }

    /// Packs plain values, encoding the common ones.
    pub(crate) fn from_values(values: &[&str; FIELD_COUNT]) -> Result<Packed, ModelError> {
        let total: usize = values.iter().map(|value| value.len()).sum();
        if total > usize::from(u16::MAX) {
            return Err(ModelError::BadRequest(
                "the user's properties are too long".to_owned(),
            ));
        }
        let mut text = String::with_capacity(total);
        let mut ends = [0u16; FIELD_COUNT];
        for (index, (value, field)) in values.iter().zip(ALL_FIELDS).enumerate() {
            if field == Field::Licenses {
                for (position, sku) in value.split(',').filter(|sku| !sku.is_empty()).enumerate() {
                    if position > 0 {
                        text.push(',');
                    }
                    encode_common(Field::Licenses, sku, &mut text);
                }
            } else if field == Field::Mail
                && !value.is_empty()
                && *value == values[Field::UserPrincipalName as usize]
            {
                text.push(SAME_AS_UPN);
            } else if field == Field::MailNickname
                && !value.is_empty()
                && values[Field::UserPrincipalName as usize]
                    .strip_prefix(*value)
                    .is_some_and(|rest| rest.starts_with('@'))
            {
                text.push(UPN_LOCAL_PART);
            } else {
                encode_common(field, value, &mut text);
            }
            ends[index] = text.len() as u16;
        }
        Ok(Packed {
            text: text.into_boxed_str(),
            ends,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UserState {
    Active,
    /// In deletedItems since this emulated Unix time; restorable for 30 days.
    SoftDeleted {
        at: i64,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct User {
    pub(crate) fields: Packed,
    pub(crate) account_enabled: bool,
    pub(crate) state: UserState,
    /// The last interactive sign-in (emulated Unix time); `None`: never signed in. Graph keeps it
    /// outside the directory, so changing it is no delta change.
    pub(crate) last_sign_in: Option<i64>,
    /// Whether the user registered a strong authentication method (the MFA registration report).
    pub(crate) mfa_registered: bool,
}

impl User {
    pub(crate) fn get(&self, field: Field) -> Option<&str> {
        self.fields.get(field)
    }

    pub(crate) fn licenses(&self) -> impl Iterator<Item = &str> {
        self.fields.licenses()
    }

    pub(crate) fn is_active(&self) -> bool {
        self.state == UserState::Active
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MemberKind {
    User,
    Group,
}

impl MemberKind {
    pub(crate) fn odata_type(self) -> &'static str {
        match self {
            MemberKind::User => "#microsoft.graph.user",
            MemberKind::Group => "#microsoft.graph.group",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Group {
    pub(crate) display_name: String,
    pub(crate) description: Option<String>,
    pub(crate) mail: Option<String>,
    pub(crate) mail_nickname: String,
    pub(crate) mail_enabled: bool,
    pub(crate) security_enabled: bool,
    pub(crate) group_types: Vec<String>,
    pub(crate) visibility: Option<String>,
    pub(crate) created: String,
    pub(crate) members: BTreeMap<Box<str>, MemberKind>,
}

/// A licence the tenant has bought, served by `/subscribedSkus`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Sku {
    pub(crate) sku_id: String,
    pub(crate) sku_part_number: String,
    pub(crate) prepaid_units: u32,
}

/// One entry of the change log. Delta rounds fold the entries after their token's position and
/// render the objects' current state, so the log holds what changed, not the values.
#[derive(Clone, Debug)]
pub(crate) enum Change {
    /// Properties changed (bit `i` = `render::USER_PROPS[i]`); `fresh` when created or restored.
    User {
        id: Box<str>,
        mask: u64,
        fresh: bool,
    },
    /// Soft or hard deleted; the current state says which `@removed` reason to give.
    UserRemoved {
        id: Box<str>,
    },
    /// Properties changed (bit `i` = `render::GROUP_PROPS[i]`); `fresh` when created.
    Group {
        id: Box<str>,
        mask: u64,
        fresh: bool,
    },
    GroupRemoved {
        id: Box<str>,
    },
    Member {
        group: Box<str>,
        member: Box<str>,
        kind: MemberKind,
        added: bool,
    },
}

/// How [`Directory::create_user`] makes sure a userPrincipalName is free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UpnCheck {
    /// Look through every user: the control API, where tenants are small and calls rare.
    Scan,
    /// The caller guarantees it: churn builds unique addresses, fixture loading checks with a set.
    /// Scanning a million users per hire would make churn quadratic.
    Trusted,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ModelError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
}

#[derive(Clone, Debug)]
pub(crate) struct Directory {
    pub(crate) domain: String,
    pub(crate) company: String,
    pub(crate) users: BTreeMap<Box<str>, User>,
    /// Users deleted for good, as they last were: the control API still lists them (state
    /// `deleted`) so that tests can check what a sync did with them.
    pub(crate) purged: BTreeMap<Box<str>, User>,
    pub(crate) groups: BTreeMap<Box<str>, Group>,
    pub(crate) skus: Vec<Sku>,
    pub(crate) log: Vec<Change>,
    /// Source of ids for objects created through the control API or churn.
    pub(crate) next_id: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Fixture {
    domain: String,
    company_name: String,
    subscribed_skus: Vec<Sku>,
    users: Vec<Value>,
    groups: Vec<Value>,
}

impl Directory {
    /// The position of the next change; a delta token at `seq` has seen every change before it.
    pub(crate) fn seq(&self) -> u64 {
        self.log.len() as u64
    }

    pub(crate) fn new_id(&mut self) -> String {
        self.next_id = self.next_id.wrapping_add(1);
        crate::generate::guid(self.next_id ^ 0x5eed_0000_0000_0000)
    }

    pub(crate) fn member_kind(&self, id: &str) -> Option<MemberKind> {
        if self.users.contains_key(id) {
            Some(MemberKind::User)
        } else if self.groups.contains_key(id) {
            Some(MemberKind::Group)
        } else {
            None
        }
    }

    /// Whether a member currently counts: soft-deleted users keep their memberships for a restore,
    /// but Graph does not list them.
    pub(crate) fn member_is_visible(&self, id: &str, kind: MemberKind) -> bool {
        match kind {
            MemberKind::User => self.users.get(id).is_some_and(User::is_active),
            MemberKind::Group => self.groups.contains_key(id),
        }
    }

    pub(crate) fn user(&self, id: &str) -> Result<&User, ModelError> {
        self.users
            .get(id)
            .ok_or_else(|| ModelError::NotFound(format!("no user {id}")))
    }

    /// Creates a user from Graph-shaped JSON; `id` is generated when absent.
    pub(crate) fn create_user(
        &mut self,
        body: &Value,
        now: i64,
        check: UpnCheck,
    ) -> Result<String, ModelError> {
        let object = body
            .as_object()
            .ok_or_else(|| ModelError::BadRequest("a user is a JSON object".to_owned()))?;
        let id = match object.get("id").and_then(Value::as_str) {
            Some(id) => id.to_owned(),
            None => self.new_id(),
        };
        if self.users.contains_key(id.as_str()) || self.groups.contains_key(id.as_str()) {
            return Err(ModelError::Conflict(format!("an object with id {id} exists")));
        }
        let mut user = User {
            fields: Packed::default(),
            account_enabled: true,
            state: UserState::Active,
            last_sign_in: None,
            mfa_registered: false,
        };
        apply_user_json(&mut user, object)?;
        if user.get(Field::CreatedDateTime).is_none() {
            user.fields
                .set(Field::CreatedDateTime, Some(&crate::clock::iso(now)))?;
        }
        if user.get(Field::UserType).is_none() {
            user.fields.set(Field::UserType, Some("Member"))?;
        }
        let upn = user
            .get(Field::UserPrincipalName)
            .ok_or_else(|| ModelError::BadRequest("userPrincipalName is required".to_owned()))?;
        if user.get(Field::DisplayName).is_none() {
            return Err(ModelError::BadRequest("displayName is required".to_owned()));
        }
        if check == UpnCheck::Scan && self.find_user_by_upn(upn).is_some() {
            return Err(ModelError::Conflict(format!("userPrincipalName {upn} is taken")));
        }
        if object.get("state").and_then(Value::as_str) == Some("soft_deleted") {
            let at = object
                .get("deletedDateTime")
                .and_then(Value::as_str)
                .and_then(crate::clock::parse_iso)
                .unwrap_or(now);
            user.state = UserState::SoftDeleted { at };
        }
        self.purged.remove(id.as_str());
        self.users.insert(id.clone().into_boxed_str(), user);
        self.log.push(Change::User {
            id: id.clone().into_boxed_str(),
            mask: u64::MAX,
            fresh: true,
        });
        Ok(id)
    }

    pub(crate) fn find_user_by_upn(&self, upn: &str) -> Option<&str> {
        self.users.iter().find_map(|(id, user)| {
            user.get(Field::UserPrincipalName)
                .is_some_and(|candidate| candidate.eq_ignore_ascii_case(upn))
                .then_some(&**id)
        })
    }

    /// Applies a partial Graph-shaped update (`null` clears) and logs the properties it changed.
    pub(crate) fn patch_user(&mut self, id: &str, body: &Value) -> Result<(), ModelError> {
        let object = body
            .as_object()
            .ok_or_else(|| ModelError::BadRequest("a patch is a JSON object".to_owned()))?;
        if let Some(upn) = object.get("userPrincipalName").and_then(Value::as_str)
            && self.find_user_by_upn(upn).is_some_and(|owner| owner != id)
        {
            return Err(ModelError::Conflict(format!("userPrincipalName {upn} is taken")));
        }
        let user = self
            .users
            .get_mut(id)
            .ok_or_else(|| ModelError::NotFound(format!("no user {id}")))?;
        let before = user.clone();
        apply_user_json(user, object)?;
        let after = user.clone();
        self.log_user_diff(id, &before, &after);
        Ok(())
    }

    /// Changes one text field (churn and tests), logging it like a patch.
    pub(crate) fn set_user_field(
        &mut self,
        id: &str,
        field: Field,
        value: Option<&str>,
    ) -> Result<(), ModelError> {
        let user = self
            .users
            .get_mut(id)
            .ok_or_else(|| ModelError::NotFound(format!("no user {id}")))?;
        let before = user.clone();
        user.fields.set(field, value)?;
        let after = user.clone();
        self.log_user_diff(id, &before, &after);
        Ok(())
    }

    pub(crate) fn set_enabled(&mut self, id: &str, enabled: bool) -> Result<(), ModelError> {
        let user = self
            .users
            .get_mut(id)
            .ok_or_else(|| ModelError::NotFound(format!("no user {id}")))?;
        let before = user.clone();
        user.account_enabled = enabled;
        let after = user.clone();
        self.log_user_diff(id, &before, &after);
        Ok(())
    }

    fn log_user_diff(&mut self, id: &str, before: &User, after: &User) {
        let mask = crate::render::user_diff(id, before, after);
        if mask != 0 {
            self.log.push(Change::User {
                id: id.into(),
                mask,
                fresh: false,
            });
        }
    }

    /// Moves a user to deletedItems: it disappears from listings and its groups report it removed.
    pub(crate) fn soft_delete_user(&mut self, id: &str, now: i64) -> Result<(), ModelError> {
        let user = self
            .users
            .get_mut(id)
            .ok_or_else(|| ModelError::NotFound(format!("no user {id}")))?;
        if !user.is_active() {
            return Err(ModelError::Conflict(format!("user {id} is already deleted")));
        }
        user.state = UserState::SoftDeleted { at: now };
        self.log.push(Change::UserRemoved { id: id.into() });
        self.log_memberships(id, false);
        Ok(())
    }

    pub(crate) fn restore_user(&mut self, id: &str) -> Result<(), ModelError> {
        let user = self
            .users
            .get_mut(id)
            .ok_or_else(|| ModelError::NotFound(format!("no user {id}")))?;
        if user.is_active() {
            return Err(ModelError::Conflict(format!("user {id} is not deleted")));
        }
        user.state = UserState::Active;
        self.log.push(Change::User {
            id: id.into(),
            mask: u64::MAX,
            fresh: true,
        });
        self.log_memberships(id, true);
        Ok(())
    }

    /// Deletes a user for good, with its memberships.
    pub(crate) fn hard_delete_user(&mut self, id: &str) -> Result<(), ModelError> {
        let user = self
            .users
            .remove(id)
            .ok_or_else(|| ModelError::NotFound(format!("no user {id}")))?;
        if user.is_active() {
            self.log_memberships(id, false);
        }
        for group in self.groups.values_mut() {
            group.members.remove(id);
        }
        self.log.push(Change::UserRemoved { id: id.into() });
        self.purged.insert(id.into(), user);
        Ok(())
    }

    /// Logs a membership event in every group that holds `member` (a user leaving or coming back).
    fn log_memberships(&mut self, member: &str, added: bool) {
        let changes: Vec<Change> = self
            .groups
            .iter()
            .filter(|(_, group)| group.members.contains_key(member))
            .map(|(group, _)| Change::Member {
                group: group.clone(),
                member: member.into(),
                kind: MemberKind::User,
                added,
            })
            .collect();
        self.log.extend(changes);
    }

    /// Purges users soft-deleted more than 30 days ago (their `@removed` reason becomes `deleted`).
    pub(crate) fn sweep(&mut self, now: i64) {
        let expired: Vec<Box<str>> = self
            .users
            .iter()
            .filter(|(_, user)| {
                matches!(user.state, UserState::SoftDeleted { at } if now - at >= SOFT_DELETE_RETENTION_SECS)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            let _ = self.hard_delete_user(&id);
        }
    }

    pub(crate) fn create_group(&mut self, body: &Value, now: i64) -> Result<String, ModelError> {
        let object = body
            .as_object()
            .ok_or_else(|| ModelError::BadRequest("a group is a JSON object".to_owned()))?;
        let id = match object.get("id").and_then(Value::as_str) {
            Some(id) => id.to_owned(),
            None => self.new_id(),
        };
        if self.users.contains_key(id.as_str()) || self.groups.contains_key(id.as_str()) {
            return Err(ModelError::Conflict(format!("an object with id {id} exists")));
        }
        let display_name = object
            .get("displayName")
            .and_then(Value::as_str)
            .ok_or_else(|| ModelError::BadRequest("displayName is required".to_owned()))?;
        let nickname: String = display_name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_lowercase();
        let mut group = Group {
            display_name: display_name.to_owned(),
            description: None,
            mail: None,
            mail_nickname: if nickname.is_empty() { id.clone() } else { nickname },
            mail_enabled: false,
            security_enabled: true,
            group_types: Vec::new(),
            visibility: None,
            created: crate::clock::iso(now),
            members: BTreeMap::new(),
        };
        apply_group_json(&mut group, object)?;
        let member_ids = member_ids(object)?;
        self.groups.insert(id.clone().into_boxed_str(), group);
        self.log.push(Change::Group {
            id: id.clone().into_boxed_str(),
            mask: u64::MAX,
            fresh: true,
        });
        for member in member_ids {
            self.add_member(&id, &member)?;
        }
        Ok(id)
    }

    pub(crate) fn patch_group(&mut self, id: &str, body: &Value) -> Result<(), ModelError> {
        let object = body
            .as_object()
            .ok_or_else(|| ModelError::BadRequest("a patch is a JSON object".to_owned()))?;
        let group = self
            .groups
            .get_mut(id)
            .ok_or_else(|| ModelError::NotFound(format!("no group {id}")))?;
        let before = crate::render::group_json(id, group);
        apply_group_json(group, object)?;
        let after = crate::render::group_json(id, group);
        let mask = crate::render::group_diff(&before, &after);
        if mask != 0 {
            self.log.push(Change::Group {
                id: id.into(),
                mask,
                fresh: false,
            });
        }
        Ok(())
    }

    /// Deletes a group for good (security groups skip deletedItems), and its memberships in others.
    pub(crate) fn delete_group(&mut self, id: &str) -> Result<(), ModelError> {
        self.groups
            .remove(id)
            .ok_or_else(|| ModelError::NotFound(format!("no group {id}")))?;
        let parents: Vec<Box<str>> = self
            .groups
            .iter()
            .filter(|(_, group)| group.members.contains_key(id))
            .map(|(parent, _)| parent.clone())
            .collect();
        for parent in parents {
            let _ = self.remove_member(&parent, id);
        }
        self.log.push(Change::GroupRemoved { id: id.into() });
        Ok(())
    }

    pub(crate) fn add_member(&mut self, group: &str, member: &str) -> Result<(), ModelError> {
        let kind = self
            .member_kind(member)
            .ok_or_else(|| ModelError::NotFound(format!("no user or group {member}")))?;
        if group == member {
            return Err(ModelError::BadRequest(
                "a group cannot be its own member".to_owned(),
            ));
        }
        let entry = self
            .groups
            .get_mut(group)
            .ok_or_else(|| ModelError::NotFound(format!("no group {group}")))?;
        if entry.members.insert(member.into(), kind).is_some() {
            return Err(ModelError::Conflict(format!(
                "One or more added object references already exist for the following modified properties: 'members'. ({member})"
            )));
        }
        self.log.push(Change::Member {
            group: group.into(),
            member: member.into(),
            kind,
            added: true,
        });
        Ok(())
    }

    pub(crate) fn remove_member(&mut self, group: &str, member: &str) -> Result<(), ModelError> {
        let entry = self
            .groups
            .get_mut(group)
            .ok_or_else(|| ModelError::NotFound(format!("no group {group}")))?;
        let kind = entry
            .members
            .remove(member)
            .ok_or_else(|| ModelError::NotFound(format!("{member} is not a member of {group}")))?;
        self.log.push(Change::Member {
            group: group.into(),
            member: member.into(),
            kind,
            added: false,
        });
        Ok(())
    }

    /// Loads a tenant saved by [`Directory::to_fixture`].
    pub(crate) fn from_fixture(text: &str) -> Result<Directory, ModelError> {
        let fixture: Fixture = serde_json::from_str(text)
            .map_err(|error| ModelError::BadRequest(format!("not a fixture: {error}")))?;
        let mut directory = Directory {
            domain: fixture.domain,
            company: fixture.company_name,
            users: BTreeMap::new(),
            purged: BTreeMap::new(),
            groups: BTreeMap::new(),
            skus: fixture.subscribed_skus,
            log: Vec::new(),
            next_id: 0,
        };
        let mut upns = std::collections::HashSet::with_capacity(fixture.users.len());
        for user in &fixture.users {
            let upn = user
                .get("userPrincipalName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_lowercase();
            if !upns.insert(upn.clone()) {
                return Err(ModelError::Conflict(format!(
                    "userPrincipalName {upn} appears twice"
                )));
            }
            directory.create_user(user, 0, UpnCheck::Trusted)?;
        }
        let mut memberships = Vec::new();
        for group in &fixture.groups {
            let mut without_members = group.clone();
            if let Some(object) = without_members.as_object_mut() {
                object.remove("memberIds");
            }
            let id = directory.create_group(&without_members, 0)?;
            let object = group.as_object().cloned().unwrap_or_default();
            memberships.push((id, member_ids(&object)?));
        }
        for (group, members) in memberships {
            for member in members {
                directory.add_member(&group, &member)?;
            }
        }
        // A loaded tenant is the starting state, not a change.
        directory.log.clear();
        Ok(directory)
    }

    /// The tenant as a fixture: every user with all its properties and state, every group with its
    /// member ids, and the SKUs.
    pub(crate) fn to_fixture(&self) -> Value {
        let users: Vec<Value> = self
            .users
            .iter()
            .map(|(id, user)| crate::render::user_control_json(id, user))
            .collect();
        let groups: Vec<Value> = self
            .groups
            .iter()
            .map(|(id, group)| {
                let mut object = crate::render::group_json(id, group);
                let members: Vec<Value> = group.members.keys().map(|member| json!(&**member)).collect();
                object.insert("memberIds".to_owned(), Value::Array(members));
                Value::Object(object)
            })
            .collect();
        json!({
            "domain": self.domain,
            "companyName": self.company,
            "subscribedSkus": self.skus,
            "users": users,
            "groups": groups,
        })
    }
}

fn member_ids(object: &Map<String, Value>) -> Result<Vec<String>, ModelError> {
    match object.get("memberIds") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ModelError::BadRequest("memberIds holds strings".to_owned()))
            })
            .collect(),
        Some(_) => Err(ModelError::BadRequest("memberIds is an array".to_owned())),
    }
}

fn optional_string(key: &str, value: &Value) -> Result<Option<String>, ModelError> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) if text.is_empty() => Ok(None),
        Value::String(text) => Ok(Some(text.clone())),
        _ => Err(ModelError::BadRequest(format!("{key} must be a string or null"))),
    }
}

/// Applies Graph-shaped user JSON; unknown keys are an error so that test typos show up.
fn apply_user_json(user: &mut User, object: &Map<String, Value>) -> Result<(), ModelError> {
    for (key, value) in object {
        if let Some((_, field)) = TEXT_FIELDS.iter().find(|(name, _)| name == key) {
            let text = optional_string(key, value)?;
            user.fields.set(*field, text.as_deref())?;
            continue;
        }
        match key.as_str() {
            "businessPhones" => {
                let phone = match value {
                    Value::Null => None,
                    Value::Array(items) => items.first().and_then(Value::as_str).map(str::to_owned),
                    _ => return Err(ModelError::BadRequest("businessPhones is an array".to_owned())),
                };
                user.fields.set(Field::BusinessPhone, phone.as_deref())?;
            }
            "accountEnabled" => {
                user.account_enabled = value
                    .as_bool()
                    .ok_or_else(|| ModelError::BadRequest("accountEnabled is a boolean".to_owned()))?;
            }
            "assignedLicenses" => {
                let skus: Vec<&str> = match value {
                    Value::Null => Vec::new(),
                    Value::Array(items) => items
                        .iter()
                        .filter_map(|item| item.get("skuId").and_then(Value::as_str))
                        .collect(),
                    _ => return Err(ModelError::BadRequest("assignedLicenses is an array".to_owned())),
                };
                user.fields.set(Field::Licenses, Some(&skus.join(",")))?;
            }
            "manager" => {
                let manager = match value {
                    Value::Null => None,
                    Value::String(id) => Some(id.clone()),
                    Value::Object(object) => object.get("id").and_then(Value::as_str).map(str::to_owned),
                    _ => return Err(ModelError::BadRequest("manager is an id or {\"id\"}".to_owned())),
                };
                user.fields.set(Field::Manager, manager.as_deref())?;
            }
            "signInActivity" => {
                user.last_sign_in = match value {
                    Value::Null => None,
                    Value::Object(activity) => activity
                        .get("lastSignInDateTime")
                        .and_then(Value::as_str)
                        .filter(|at| *at != crate::render::NEVER_SIGNED_IN)
                        .and_then(crate::clock::parse_iso),
                    _ => {
                        return Err(ModelError::BadRequest(
                            "signInActivity is {\"lastSignInDateTime\"} or null".to_owned(),
                        ));
                    }
                };
            }
            // Not a user property in Graph: the emulator's way to set what the MFA registration
            // report (`userRegistrationDetails`) says about the user.
            "isMfaRegistered" => {
                user.mfa_registered = value
                    .as_bool()
                    .ok_or_else(|| ModelError::BadRequest("isMfaRegistered is a boolean".to_owned()))?;
            }
            "state" => {}
            _ if DERIVED_USER_KEYS.contains(&key.as_str()) => {}
            _ => return Err(ModelError::BadRequest(format!("unknown user property {key}"))),
        }
    }
    Ok(())
}

fn apply_group_json(group: &mut Group, object: &Map<String, Value>) -> Result<(), ModelError> {
    for (key, value) in object {
        match key.as_str() {
            "displayName" => {
                group.display_name = optional_string(key, value)?
                    .ok_or_else(|| ModelError::BadRequest("displayName cannot be cleared".to_owned()))?;
            }
            "description" => group.description = optional_string(key, value)?,
            "mail" => group.mail = optional_string(key, value)?,
            "visibility" => group.visibility = optional_string(key, value)?,
            "createdDateTime" => {
                if let Some(created) = optional_string(key, value)? {
                    group.created = created;
                }
            }
            "mailNickname" => {
                if let Some(nickname) = optional_string(key, value)? {
                    group.mail_nickname = nickname;
                }
            }
            "mailEnabled" | "securityEnabled" => {
                let flag = value
                    .as_bool()
                    .ok_or_else(|| ModelError::BadRequest(format!("{key} is a boolean")))?;
                if key == "mailEnabled" {
                    group.mail_enabled = flag;
                } else {
                    group.security_enabled = flag;
                }
            }
            "groupTypes" => {
                group.group_types = value
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
            }
            "id" | "memberIds" => {}
            _ if crate::render::GROUP_PROPS.contains(&key.as_str()) => {}
            _ => return Err(ModelError::BadRequest(format!("unknown group property {key}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Field, Packed};

    #[test]
    fn packed_values_read_back_through_their_encodings() {
        let mut packed = Packed::default();
        let set = |packed: &mut Packed, field, value| packed.set(field, Some(value)).expect("fits");
        set(
            &mut packed,
            Field::UserPrincipalName,
            "ana.oster@northwind.example",
        );
        set(&mut packed, Field::Mail, "ana.oster@northwind.example");
        set(&mut packed, Field::MailNickname, "ana.oster");
        set(&mut packed, Field::Department, "Sales");
        set(
            &mut packed,
            Field::Licenses,
            "6fd2c87f-b296-42f0-b197-1e91e994b900,not-a-known-sku",
        );
        assert_eq!(packed.get(Field::Mail), Some("ana.oster@northwind.example"));
        assert_eq!(packed.get(Field::MailNickname), Some("ana.oster"));
        assert_eq!(packed.get(Field::Department), Some("Sales"));
        let licenses: Vec<&str> = packed.licenses().collect();
        assert_eq!(
            licenses,
            ["6fd2c87f-b296-42f0-b197-1e91e994b900", "not-a-known-sku"]
        );
        // A new UPN leaves the mail as it was.
        set(&mut packed, Field::UserPrincipalName, "ana.o@northwind.example");
        assert_eq!(packed.get(Field::Mail), Some("ana.oster@northwind.example"));
        assert_eq!(packed.get(Field::MailNickname), Some("ana.oster"));
        assert_eq!(
            packed.get(Field::UserPrincipalName),
            Some("ana.o@northwind.example")
        );
        packed.set(Field::Department, None).expect("fits");
        assert_eq!(packed.get(Field::Department), None);
    }
}
