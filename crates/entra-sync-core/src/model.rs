//! The source snapshot: what the sync knows of a connection's Entra tenant after folding delta
//! pages. Ordered maps keep plans and snapshot tests deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::delta::{Patch, RemovalReason};
use crate::packed::{Packed, Strings};

/// An Entra object id (a GUID string, kept as Graph sends it).
pub type EntraId = String;

/// Whether an object folded into the snapshot still exists in Entra.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// The object exists in Entra.
    #[default]
    Present,
    /// Graph reported `@removed` with reason `changed`: soft-deleted, restorable for 30 days.
    SoftDeleted,
    /// Graph reported `@removed` with reason `deleted`: gone for good.
    Deleted,
}

impl From<RemovalReason> for Presence {
    fn from(reason: RemovalReason) -> Self {
        match reason {
            RemovalReason::Changed => Presence::SoftDeleted,
            RemovalReason::Deleted => Presence::Deleted,
        }
    }
}

/// A string-valued property of an Entra user, in the order the snapshot's JSON lists them.
/// Two are lists ([`UserProperty::is_list`]); the others hold at most one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UserProperty {
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
    BusinessPhones,
    MobilePhone,
    EmployeeId,
    UserType,
    /// SKU ids of the assigned licences, sorted.
    AssignedLicenses,
}

impl UserProperty {
    /// Every property, in order (`property as usize` is its place here).
    pub const ALL: [UserProperty; 19] = [
        UserProperty::UserPrincipalName,
        UserProperty::Mail,
        UserProperty::DisplayName,
        UserProperty::GivenName,
        UserProperty::Surname,
        UserProperty::JobTitle,
        UserProperty::Department,
        UserProperty::CompanyName,
        UserProperty::OfficeLocation,
        UserProperty::StreetAddress,
        UserProperty::City,
        UserProperty::State,
        UserProperty::PostalCode,
        UserProperty::Country,
        UserProperty::BusinessPhones,
        UserProperty::MobilePhone,
        UserProperty::EmployeeId,
        UserProperty::UserType,
        UserProperty::AssignedLicenses,
    ];

    /// The property's key in the snapshot's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            UserProperty::UserPrincipalName => "user_principal_name",
            UserProperty::Mail => "mail",
            UserProperty::DisplayName => "display_name",
            UserProperty::GivenName => "given_name",
            UserProperty::Surname => "surname",
            UserProperty::JobTitle => "job_title",
            UserProperty::Department => "department",
            UserProperty::CompanyName => "company_name",
            UserProperty::OfficeLocation => "office_location",
            UserProperty::StreetAddress => "street_address",
            UserProperty::City => "city",
            UserProperty::State => "state",
            UserProperty::PostalCode => "postal_code",
            UserProperty::Country => "country",
            UserProperty::BusinessPhones => "business_phones",
            UserProperty::MobilePhone => "mobile_phone",
            UserProperty::EmployeeId => "employee_id",
            UserProperty::UserType => "user_type",
            UserProperty::AssignedLicenses => "assigned_licenses",
        }
    }

    /// Whether the property is a list of values.
    pub fn is_list(self) -> bool {
        matches!(
            self,
            UserProperty::BusinessPhones | UserProperty::AssignedLicenses
        )
    }
}

/// An Entra user as folded from delta entries. An unset property has no value.
///
/// The string properties are packed in one string (see [`crate::packed`]): a snapshot holds
/// every user of the tenant, and as nineteen separate strings and lists a user took about a
/// kilobyte, most of it allocation headers and empty slots.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EntraUser {
    pub id: EntraId,
    pub presence: Presence,
    pub account_enabled: Option<bool>,
    /// The string properties' values, tagged `property as u32`.
    properties: Packed,
}

impl EntraUser {
    /// A user with this id, present, with no properties.
    pub fn new(id: impl Into<EntraId>) -> Self {
        EntraUser {
            id: id.into(),
            ..EntraUser::default()
        }
    }

    /// The user with `property` set to `value`, or unset by `None`; a list property gets the
    /// value added. For building users in tests and tools.
    pub fn with<'v>(mut self, property: UserProperty, value: impl Into<Option<&'v str>>) -> Self {
        let mut values: Vec<(UserProperty, &str)> = self
            .values_all()
            .filter(|&(held, _)| held != property || property.is_list())
            .collect();
        values.extend(value.into().map(|value| (property, value)));
        self.properties = packed(values);
        self
    }

    /// The value of a single-valued property; for a list, its first value.
    pub fn get(&self, property: UserProperty) -> Option<&str> {
        self.values(property).next()
    }

    /// The values a property holds, in order: none, one, or a list's items.
    pub fn values(&self, property: UserProperty) -> impl Iterator<Item = &str> {
        self.properties.values(property as u32)
    }

    /// Every value with its property, in property order.
    pub fn values_all(&self) -> impl Iterator<Item = (UserProperty, &str)> {
        self.properties
            .iter()
            .map(|(tag, value)| (UserProperty::ALL[tag as usize], value))
    }

    /// Applies one patch a property (indexed as [`UserProperty::ALL`]): an absent patch keeps
    /// the values, a cleared one drops them, a set one replaces them.
    pub fn patch(&mut self, patches: &[Patch<&[String]>; UserProperty::ALL.len()]) {
        let mut values: Vec<(UserProperty, &str)> = Vec::with_capacity(self.properties.len() + 4);
        for (property, patch) in UserProperty::ALL.into_iter().zip(patches) {
            match patch {
                Patch::Absent => values.extend(self.values(property).map(|value| (property, value))),
                Patch::Cleared => {}
                Patch::Set(set) => values.extend(set.iter().map(|value| (property, value.as_str()))),
            }
        }
        self.properties = packed(values);
    }

    pub fn user_principal_name(&self) -> Option<&str> {
        self.get(UserProperty::UserPrincipalName)
    }

    pub fn mail(&self) -> Option<&str> {
        self.get(UserProperty::Mail)
    }

    pub fn display_name(&self) -> Option<&str> {
        self.get(UserProperty::DisplayName)
    }

    pub fn given_name(&self) -> Option<&str> {
        self.get(UserProperty::GivenName)
    }

    pub fn surname(&self) -> Option<&str> {
        self.get(UserProperty::Surname)
    }

    pub fn job_title(&self) -> Option<&str> {
        self.get(UserProperty::JobTitle)
    }

    pub fn department(&self) -> Option<&str> {
        self.get(UserProperty::Department)
    }

    pub fn company_name(&self) -> Option<&str> {
        self.get(UserProperty::CompanyName)
    }

    pub fn office_location(&self) -> Option<&str> {
        self.get(UserProperty::OfficeLocation)
    }

    pub fn street_address(&self) -> Option<&str> {
        self.get(UserProperty::StreetAddress)
    }

    pub fn city(&self) -> Option<&str> {
        self.get(UserProperty::City)
    }

    pub fn state(&self) -> Option<&str> {
        self.get(UserProperty::State)
    }

    pub fn postal_code(&self) -> Option<&str> {
        self.get(UserProperty::PostalCode)
    }

    pub fn country(&self) -> Option<&str> {
        self.get(UserProperty::Country)
    }

    pub fn business_phones(&self) -> impl Iterator<Item = &str> {
        self.values(UserProperty::BusinessPhones)
    }

    pub fn mobile_phone(&self) -> Option<&str> {
        self.get(UserProperty::MobilePhone)
    }

    pub fn employee_id(&self) -> Option<&str> {
        self.get(UserProperty::EmployeeId)
    }

    pub fn user_type(&self) -> Option<&str> {
        self.get(UserProperty::UserType)
    }

    /// SKU ids of the assigned licences, sorted.
    pub fn assigned_licenses(&self) -> impl Iterator<Item = &str> {
        self.values(UserProperty::AssignedLicenses)
    }
}

fn packed(values: Vec<(UserProperty, &str)>) -> Packed {
    Packed::new(
        values
            .into_iter()
            .map(|(property, value)| (property as u32, value))
            .collect(),
    )
}

impl fmt::Debug for EntraUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut user = f.debug_struct("EntraUser");
        user.field("id", &self.id)
            .field("presence", &self.presence)
            .field("account_enabled", &self.account_enabled);
        for (property, value) in self.values_all() {
            user.field(property.as_str(), &value);
        }
        user.finish()
    }
}

impl Serialize for EntraUser {
    /// Every key, unset ones as `null` or `[]`, in the order the snapshot's JSON always had.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut user = serializer.serialize_struct("EntraUser", UserProperty::ALL.len() + 3)?;
        user.serialize_field("id", &self.id)?;
        user.serialize_field("presence", &self.presence)?;
        for property in UserProperty::ALL {
            if property == UserProperty::AssignedLicenses {
                user.serialize_field("account_enabled", &self.account_enabled)?;
            }
            if property.is_list() {
                let values: Vec<&str> = self.values(property).collect();
                user.serialize_field(property.as_str(), &values)?;
            } else {
                user.serialize_field(property.as_str(), &self.get(property))?;
            }
        }
        user.end()
    }
}

impl<'de> Deserialize<'de> for EntraUser {
    /// Any subset of the keys [`Serialize`] writes; a missing or `null` one is unset, and keys
    /// it does not know are ignored.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UserVisitor;

        impl<'de> Visitor<'de> for UserVisitor {
            type Value = EntraUser;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an Entra user")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EntraUser, A::Error> {
                let mut user = EntraUser::default();
                // The values of each property as last given, in `UserProperty::ALL` order.
                let mut slots: [Vec<String>; UserProperty::ALL.len()] = Default::default();
                while let Some(key) = map.next_key::<UserKey>()? {
                    match key {
                        UserKey::Id => user.id = map.next_value()?,
                        UserKey::Presence => user.presence = map.next_value()?,
                        UserKey::AccountEnabled => user.account_enabled = map.next_value()?,
                        UserKey::Property(property) if property.is_list() => {
                            let items: Option<Vec<String>> = map.next_value()?;
                            slots[property as usize] = items.unwrap_or_default();
                        }
                        UserKey::Property(property) => {
                            let value: Option<String> = map.next_value()?;
                            slots[property as usize] = value.into_iter().collect();
                        }
                        UserKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                user.properties = packed(
                    UserProperty::ALL
                        .into_iter()
                        .zip(&slots)
                        .flat_map(|(property, values)| {
                            values.iter().map(move |value| (property, value.as_str()))
                        })
                        .collect(),
                );
                Ok(user)
            }
        }

        deserializer.deserialize_map(UserVisitor)
    }
}

/// A key of a user's JSON, read without allocating it (a whole snapshot read decodes a
/// million users' nineteen keys each).
enum UserKey {
    Id,
    Presence,
    AccountEnabled,
    Property(UserProperty),
    /// A key this version does not know: its value is skipped.
    Other,
}

impl<'de> Deserialize<'de> for UserKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl Visitor<'_> for KeyVisitor {
            type Value = UserKey;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a user's property name")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<UserKey, E> {
                Ok(match name {
                    "id" => UserKey::Id,
                    "presence" => UserKey::Presence,
                    "account_enabled" => UserKey::AccountEnabled,
                    _ => UserProperty::ALL
                        .into_iter()
                        .find(|property| property.as_str() == name)
                        .map_or(UserKey::Other, UserKey::Property),
                })
            }
        }

        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// An Entra group as folded from delta entries, with its direct members.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EntraGroup {
    pub id: EntraId,
    pub presence: Presence,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub mail: Option<String>,
    pub security_enabled: Option<bool>,
    pub group_types: Vec<String>,
    /// Direct members that are users.
    pub member_users: BTreeSet<EntraId>,
    /// Direct members that are groups (nested groups).
    pub member_groups: BTreeSet<EntraId>,
}

/// Everything the sync knows of one connection's tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSnapshot {
    pub users: BTreeMap<EntraId, EntraUser>,
    pub groups: BTreeMap<EntraId, EntraGroup>,
}

/// Entra ids in order, packed in one text: a full round's commit needs only the ids its read
/// named, and a million of them as strings of their own took twice the room (plus a map's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdList {
    ids: Strings,
}

impl IdList {
    /// The ids `ids` yields, which must come in order.
    pub fn of<'i>(ids: impl ExactSizeIterator<Item = &'i str> + Clone) -> IdList {
        let mut list = IdList {
            ids: Strings::with_capacity(ids.len(), ids.clone().map(str::len).sum()),
        };
        for id in ids {
            debug_assert!(list.iter().next_back() < Some(id), "ids in order");
            list.ids.push(id);
        }
        list
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.len() == 0
    }

    /// The ids in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator {
        self.ids.iter()
    }

    /// Whether `id` is one of the ids.
    pub fn contains(&self, id: &str) -> bool {
        let (mut low, mut high) = (0, self.ids.len());
        while low < high {
            let middle = low + (high - low) / 2;
            match self.ids.get(middle).cmp(id) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return true,
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An id list holds its ids in order and finds each, and none other.
    #[test]
    fn an_id_list_holds_and_finds_its_ids() {
        let ids = ["a", "b-2", "b-3", "c", "d-long-id"];
        let list = IdList::of(ids.iter().copied());
        assert_eq!(list.len(), ids.len());
        assert_eq!(list.iter().collect::<Vec<_>>(), ids);
        for id in ids {
            assert!(list.contains(id), "{id}");
        }
        for absent in ["", "0", "b", "b-20", "ca", "e"] {
            assert!(!list.contains(absent), "{absent}");
        }
        assert!(!IdList::default().contains("a"));
    }

    /// The snapshot's JSON keeps the shape stored rows already have: every key, in the same
    /// order, unset values as `null` and empty lists.
    #[test]
    fn a_user_writes_the_json_stored_snapshots_hold() {
        let mut user = EntraUser::new("u-1")
            .with(UserProperty::Surname, "Vance")
            .with(UserProperty::GivenName, "Adele")
            .with(UserProperty::AssignedLicenses, "b-sku")
            .with(UserProperty::AssignedLicenses, "a-sku")
            .with(UserProperty::JobTitle, "");
        user.account_enabled = Some(false);
        let json = serde_json::to_string(&user).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"id":"u-1","presence":"present","user_principal_name":null,"mail":null,"display_name":null,"given_name":"Adele","surname":"Vance","job_title":"","department":null,"company_name":null,"office_location":null,"street_address":null,"city":null,"state":null,"postal_code":null,"country":null,"business_phones":[],"mobile_phone":null,"employee_id":null,"user_type":null,"account_enabled":false,"assigned_licenses":["b-sku","a-sku"]}"#
        );
        let decoded: EntraUser = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(decoded, user);
    }

    /// Missing and `null` keys are unset, unknown keys are ignored, a key given twice keeps its
    /// last value, and an empty value stays set.
    #[test]
    fn a_user_reads_any_subset_of_its_keys() {
        let decoded: EntraUser = serde_json::from_str(
            r#"{"id": "u-2", "presence": "soft_deleted", "mail": "a@b.example", "mail": "c@d.example",
                "city": null, "business_phones": ["1", "2"], "assigned_licenses": null,
                "department": "", "future_property": {"nested": [1]}}"#,
        )
        .unwrap_or_default();
        assert_eq!(decoded.id, "u-2");
        assert_eq!(decoded.presence, Presence::SoftDeleted);
        assert_eq!(decoded.mail(), Some("c@d.example"));
        assert_eq!(decoded.city(), None);
        assert_eq!(decoded.department(), Some(""));
        assert_eq!(decoded.business_phones().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(decoded.assigned_licenses().count(), 0);
        assert_eq!(decoded.account_enabled, None);
        assert_eq!(
            decoded.values_all().collect::<Vec<_>>(),
            [
                (UserProperty::Mail, "c@d.example"),
                (UserProperty::Department, ""),
                (UserProperty::BusinessPhones, "1"),
                (UserProperty::BusinessPhones, "2"),
            ]
        );
    }

    /// A patch keeps what is absent, drops what is cleared and replaces what is set, lists
    /// whole.
    #[test]
    fn a_patch_changes_only_what_it_names() {
        let mut user = EntraUser::new("u-3")
            .with(UserProperty::Mail, "old@contoso.example")
            .with(UserProperty::City, "Oslo")
            .with(UserProperty::BusinessPhones, "1")
            .with(UserProperty::BusinessPhones, "2");
        let (mail, phones, surname) = (
            ["new@contoso.example".to_owned()],
            ["3".to_owned()],
            ["Vance".to_owned()],
        );
        let mut patches: [Patch<&[String]>; UserProperty::ALL.len()] = Default::default();
        patches[UserProperty::Mail as usize] = Patch::Set(&mail);
        patches[UserProperty::City as usize] = Patch::Cleared;
        patches[UserProperty::BusinessPhones as usize] = Patch::Set(&phones);
        patches[UserProperty::Surname as usize] = Patch::Set(&surname);
        user.patch(&patches);
        assert_eq!(
            user.values_all().collect::<Vec<_>>(),
            [
                (UserProperty::Mail, "new@contoso.example"),
                (UserProperty::Surname, "Vance"),
                (UserProperty::BusinessPhones, "3"),
            ]
        );
        user.patch(&Default::default());
        assert_eq!(user.values_all().count(), 3);
    }

    /// The packing relies on `property as usize` being the property's place in `ALL`.
    #[test]
    fn every_property_is_at_its_own_index() {
        for (index, property) in UserProperty::ALL.into_iter().enumerate() {
            assert_eq!(property as usize, index, "{}", property.as_str());
        }
    }
}
