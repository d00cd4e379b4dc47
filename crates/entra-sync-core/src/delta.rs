//! The shapes of Microsoft Graph delta entries for users and groups, as the core folds them.
//!
//! A delta entry is a sparse patch: a property that is absent did not change, a property that
//! is `null` was cleared. `Patch<T>` keeps those two apart so folding never erases data that
//! Graph simply did not send.

use serde::{Deserialize, Deserializer};

/// One property of a delta entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Patch<T> {
    /// The property was not in the entry: keep the value folded before.
    #[default]
    Absent,
    /// The property was `null`: the value was cleared in Entra.
    Cleared,
    /// The property carries a value.
    Set(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Only reached when the key is present (absent keys take `Default`), so `None` is `null`.
        Ok(match Option::<T>::deserialize(deserializer)? {
            Some(value) => Patch::Set(value),
            None => Patch::Cleared,
        })
    }
}

impl<T> Patch<T> {
    /// The patch with its value borrowed.
    pub fn as_ref(&self) -> Patch<&T> {
        match self {
            Patch::Absent => Patch::Absent,
            Patch::Cleared => Patch::Cleared,
            Patch::Set(value) => Patch::Set(value),
        }
    }

    /// Converts a carried value, keeping absent and cleared as they are.
    pub fn map<U>(self, convert: impl FnOnce(T) -> U) -> Patch<U> {
        match self {
            Patch::Absent => Patch::Absent,
            Patch::Cleared => Patch::Cleared,
            Patch::Set(value) => Patch::Set(convert(value)),
        }
    }
}

/// Why Graph reported an object as removed (`"@removed": {"reason": ...}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RemovalReason {
    /// Soft-deleted: in Entra's deleted items for up to 30 days and restorable.
    Changed,
    /// Permanently deleted; cannot come back.
    Deleted,
}

/// The `@removed` annotation.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Removed {
    /// Why the object was removed.
    pub reason: RemovalReason,
}

/// One `assignedLicenses` item.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignedLicense {
    /// The licence's SKU id.
    pub sku_id: String,
}

/// One entry of a `/users/delta` page.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserDelta {
    /// The Entra object id. Graph always sends it, but Microsoft's documentation samples leave
    /// it out, so a missing id parses as empty and the fold skips the entry instead of failing
    /// the page.
    #[serde(default)]
    pub id: String,
    /// Present when the user was removed; then no other property is sent.
    #[serde(rename = "@removed", default)]
    pub removed: Option<Removed>,
    #[serde(default)]
    pub user_principal_name: Patch<String>,
    #[serde(default)]
    pub mail: Patch<String>,
    #[serde(default)]
    pub display_name: Patch<String>,
    #[serde(default)]
    pub given_name: Patch<String>,
    #[serde(default)]
    pub surname: Patch<String>,
    #[serde(default)]
    pub job_title: Patch<String>,
    #[serde(default)]
    pub department: Patch<String>,
    #[serde(default)]
    pub company_name: Patch<String>,
    #[serde(default)]
    pub office_location: Patch<String>,
    #[serde(default)]
    pub street_address: Patch<String>,
    #[serde(default)]
    pub city: Patch<String>,
    #[serde(default)]
    pub state: Patch<String>,
    #[serde(default)]
    pub postal_code: Patch<String>,
    #[serde(default)]
    pub country: Patch<String>,
    #[serde(default)]
    pub business_phones: Patch<Vec<String>>,
    #[serde(default)]
    pub mobile_phone: Patch<String>,
    #[serde(default)]
    pub employee_id: Patch<String>,
    #[serde(default)]
    pub user_type: Patch<String>,
    #[serde(default)]
    pub account_enabled: Patch<bool>,
    #[serde(default)]
    pub assigned_licenses: Patch<Vec<AssignedLicense>>,
}

/// One `members@delta` item of a group delta entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct MemberDelta {
    /// `#microsoft.graph.user`, `#microsoft.graph.group`, or another directory object type.
    #[serde(rename = "@odata.type", default)]
    pub odata_type: Option<String>,
    /// The member's object id; empty when missing, and then skipped like the entries' ids.
    #[serde(default)]
    pub id: String,
    /// Present when the member left the group (or the member object was deleted).
    #[serde(rename = "@removed", default)]
    pub removed: Option<Removed>,
}

/// One entry of a `/groups/delta` page. A large group may appear on several pages, each with a
/// different slice of `members@delta`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupDelta {
    /// The Entra object id. Graph always sends it, but Microsoft's documentation samples leave
    /// it out, so a missing id parses as empty and the fold skips the entry instead of failing
    /// the page.
    #[serde(default)]
    pub id: String,
    /// Present when the group was removed.
    #[serde(rename = "@removed", default)]
    pub removed: Option<Removed>,
    #[serde(default)]
    pub display_name: Patch<String>,
    #[serde(default)]
    pub description: Patch<String>,
    #[serde(default)]
    pub mail: Patch<String>,
    #[serde(default)]
    pub security_enabled: Patch<bool>,
    #[serde(default)]
    pub group_types: Patch<Vec<String>>,
    /// Membership changes; absent when the group has no members or none changed.
    #[serde(rename = "members@delta", default)]
    pub members_delta: Option<Vec<MemberDelta>>,
}
