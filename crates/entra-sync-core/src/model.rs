//! The source snapshot: what the sync knows of a connection's Entra tenant after folding delta
//! pages. Ordered maps keep plans and snapshot tests deterministic.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::delta::RemovalReason;

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

/// An Entra user as folded from delta entries. `None` means unset in Entra.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EntraUser {
    pub id: EntraId,
    pub presence: Presence,
    pub user_principal_name: Option<String>,
    pub mail: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub job_title: Option<String>,
    pub department: Option<String>,
    pub company_name: Option<String>,
    pub office_location: Option<String>,
    pub street_address: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
    pub business_phones: Vec<String>,
    pub mobile_phone: Option<String>,
    pub employee_id: Option<String>,
    pub user_type: Option<String>,
    pub account_enabled: Option<bool>,
    /// SKU ids of the assigned licences, sorted.
    pub assigned_licenses: Vec<String>,
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
