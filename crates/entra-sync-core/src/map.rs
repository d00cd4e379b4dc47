//! Mapping an Entra user to the attributes of a directory user.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::EntraUser;

/// A directory user attribute the sync writes. The object id is not here: it is the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    GivenName,
    Surname,
    DisplayName,
    Email,
    UserPrincipalName,
    JobTitle,
    Department,
    CompanyName,
    OfficeLocation,
    StreetAddress,
    City,
    State,
    PostalCode,
    Country,
    BusinessPhone,
    MobilePhone,
    EmployeeId,
    UserType,
    /// `"true"` or `"false"`.
    AccountEnabled,
    /// Sorted SKU ids joined with `,`.
    AssignedLicenses,
    /// The unit a unit rule gave (`assignments.unit_from`); written only when there is a rule.
    Unit,
    /// The roles a role rule gave, sorted and joined with `, `; written only when there is a rule.
    Roles,
}

pub use crate::attributes::Attributes;

/// Why a user could not be mapped; the user goes to the run's conflicts with this reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MappingProblem {
    /// Neither given name and surname nor a display name to derive them from.
    NoUsableName,
}

impl Field {
    /// Every field, in order; the planner diffs over this list.
    pub const ALL: [Field; 22] = [
        Field::GivenName,
        Field::Surname,
        Field::DisplayName,
        Field::Email,
        Field::UserPrincipalName,
        Field::JobTitle,
        Field::Department,
        Field::CompanyName,
        Field::OfficeLocation,
        Field::StreetAddress,
        Field::City,
        Field::State,
        Field::PostalCode,
        Field::Country,
        Field::BusinessPhone,
        Field::MobilePhone,
        Field::EmployeeId,
        Field::UserType,
        Field::AccountEnabled,
        Field::AssignedLicenses,
        Field::Unit,
        Field::Roles,
    ];

    /// The field's name as serialized (`job_title`), for plans and history.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::GivenName => "given_name",
            Field::Surname => "surname",
            Field::DisplayName => "display_name",
            Field::Email => "email",
            Field::UserPrincipalName => "user_principal_name",
            Field::JobTitle => "job_title",
            Field::Department => "department",
            Field::CompanyName => "company_name",
            Field::OfficeLocation => "office_location",
            Field::StreetAddress => "street_address",
            Field::City => "city",
            Field::State => "state",
            Field::PostalCode => "postal_code",
            Field::Country => "country",
            Field::BusinessPhone => "business_phone",
            Field::MobilePhone => "mobile_phone",
            Field::EmployeeId => "employee_id",
            Field::UserType => "user_type",
            Field::AccountEnabled => "account_enabled",
            Field::AssignedLicenses => "assigned_licenses",
            Field::Unit => "unit",
            Field::Roles => "roles",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for MappingProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MappingProblem::NoUsableName => f.write_str(
                "no usable name: given name and surname are not set and the display name does not provide them",
            ),
        }
    }
}

/// Maps an Entra user to directory attributes. Values are trimmed; unset, empty and
/// whitespace-only values are absent from the map.
///
/// - `email` is `mail`, else the UPN, except a guest's UPN (it contains `#EXT#` and is not a
///   mailbox), else absent.
/// - `business_phone` is the first business phone; `account_enabled` is `"true"` or `"false"`;
///   `assigned_licenses` is the sorted SKU ids joined with `,`.
/// - Given name and surname are mandatory in the target. Entra's `givenName` and `surname` win
///   when set; a missing part comes from the display name:
///   1. `"Last, First"` (a comma with text on both sides) gives surname `Last`, given `First`.
///   2. A known part at the start or end of the display name claims its words, and the rest is
///      the other part: given `"Mary Ann"` and `"Mary Ann Smith"` give surname `"Smith"`.
///   3. Otherwise the first word is the given name and the remaining words the surname. Names
///      written family name first come out swapped; only Entra's own parts can tell.
///   4. A one-word display name fills a missing part only when the other part is set and is a
///      different word: `"Doe"` completes given name `"Jane"`, but `"Jane"` alone is no name.
///
///   A display name with an `@` is an address, not a name, and is not used. When the parts still
///   are not both there the user is [`MappingProblem::NoUsableName`]: inventing a surname would
///   put a wrong name in the target, while a conflict asks an admin to fix it in Entra.
pub fn map_user(user: &EntraUser) -> Result<Attributes, MappingProblem> {
    // Collected rather than inserted one by one: a B-tree built from sorted entries fills its
    // nodes, where inserting in order leaves each about half full (at a million new users, the
    // plan's maps took 0.18 GB more so).
    let mut fields = Vec::with_capacity(Field::ALL.len());
    visit_mapped(user, |field, value| fields.push((field, value.to_owned())))?;
    Ok(fields.into_iter().collect())
}

/// Whether [`map_user`] gives `user` exactly `attributes`, found without building its map: most
/// linked users did not change, and a delta run asks this of every one of them.
pub fn maps_to(user: &EntraUser, attributes: &Attributes) -> bool {
    let mut expected = attributes.iter();
    let mut equal = true;
    let mapped = visit_mapped(user, |field, value| {
        equal &= expected
            .next()
            .is_some_and(|(have, have_value)| have == field && have_value == value);
    });
    mapped.is_ok() && equal && expected.next().is_none()
}

/// The fields [`map_user`] gives `user`, one call of `emit` each, in [`Field`] order (which
/// [`maps_to`] relies on).
fn visit_mapped(user: &EntraUser, mut emit: impl FnMut(Field, &str)) -> Result<(), MappingProblem> {
    let (given_name, surname) = name_parts(user)?;
    emit(Field::GivenName, &given_name);
    emit(Field::Surname, &surname);
    let mut set = |field: Field, value: Option<&str>| {
        if let Some(value) = value.and_then(clean) {
            emit(field, value);
        }
    };
    set(Field::DisplayName, user.display_name());
    set(Field::Email, email(user));
    set(Field::UserPrincipalName, user.user_principal_name());
    set(Field::JobTitle, user.job_title());
    set(Field::Department, user.department());
    set(Field::CompanyName, user.company_name());
    set(Field::OfficeLocation, user.office_location());
    set(Field::StreetAddress, user.street_address());
    set(Field::City, user.city());
    set(Field::State, user.state());
    set(Field::PostalCode, user.postal_code());
    set(Field::Country, user.country());
    set(Field::BusinessPhone, user.business_phones().find_map(clean));
    set(Field::MobilePhone, user.mobile_phone());
    set(Field::EmployeeId, user.employee_id());
    set(Field::UserType, user.user_type());
    set(
        Field::AccountEnabled,
        user.account_enabled
            .map(|enabled| if enabled { "true" } else { "false" }),
    );
    let mut licenses: Vec<&str> = user.assigned_licenses().filter_map(clean).collect();
    // The fold keeps them sorted, but a snapshot may come from elsewhere.
    licenses.sort_unstable();
    licenses.dedup();
    if !licenses.is_empty() {
        emit(Field::AssignedLicenses, &licenses.join(","));
    }
    Ok(())
}

/// A trimmed value, or `None` when nothing is left.
pub(crate) fn clean(value: &str) -> Option<&str> {
    Some(value.trim()).filter(|value| !value.is_empty())
}

/// The email [`map_user`] gives a user.
pub(crate) fn email(user: &EntraUser) -> Option<&str> {
    if let Some(mail) = user.mail().and_then(clean) {
        return Some(mail);
    }
    let upn = user.user_principal_name().and_then(clean)?;
    let guest = upn
        .as_bytes()
        .windows(5)
        .any(|window| window.eq_ignore_ascii_case(b"#EXT#"));
    (!guest).then_some(upn)
}

/// The given name and surname, derived as [`map_user`] documents.
fn name_parts(user: &EntraUser) -> Result<(String, String), MappingProblem> {
    let given_name = user.given_name().and_then(clean);
    let surname = user.surname().and_then(clean);
    if let (Some(given_name), Some(surname)) = (given_name, surname) {
        return Ok((given_name.to_owned(), surname.to_owned()));
    }
    let display_name = user
        .display_name()
        .and_then(clean)
        .filter(|name| !name.contains('@'))
        .ok_or(MappingProblem::NoUsableName)?;
    let (derived_given, derived_surname) = split_display_name(display_name, given_name, surname);
    match (
        given_name.map(str::to_owned).or(derived_given),
        surname.map(str::to_owned).or(derived_surname),
    ) {
        (Some(given_name), Some(surname)) => Ok((given_name, surname)),
        _ => Err(MappingProblem::NoUsableName),
    }
}

/// Splits a display name into a given name and a surname, as far as it can, taking the parts
/// already known into account.
fn split_display_name(
    display_name: &str,
    given_name: Option<&str>,
    surname: Option<&str>,
) -> (Option<String>, Option<String>) {
    if let Some((last, first)) = display_name.split_once(',') {
        let (first, last) = (words(first), words(last));
        if !first.is_empty() && !last.is_empty() {
            return (Some(first), Some(last));
        }
    }
    let all: Vec<&str> = display_name
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|word| !word.is_empty())
        .collect();
    let known_given: Vec<&str> = given_name.map_or_else(Vec::new, |name| name.split_whitespace().collect());
    let known_surname: Vec<&str> = surname.map_or_else(Vec::new, |name| name.split_whitespace().collect());
    if !known_given.is_empty() && all.len() > known_given.len() && all.starts_with(&known_given) {
        return (None, Some(all[known_given.len()..].join(" ")));
    }
    if !known_surname.is_empty() && all.len() > known_surname.len() && all.ends_with(&known_surname) {
        return (Some(all[..all.len() - known_surname.len()].join(" ")), None);
    }
    match all.as_slice() {
        [] => (None, None),
        [word] => {
            let differs = |known: &[&str]| known != [*word];
            match (given_name, surname) {
                (Some(_), None) if differs(&known_given) => (None, Some((*word).to_owned())),
                (None, Some(_)) if differs(&known_surname) => (Some((*word).to_owned()), None),
                _ => (None, None),
            }
        }
        [first, rest @ ..] => (Some((*first).to_owned()), Some(rest.join(" "))),
    }
}

/// The words of `text` joined by single spaces.
fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;
    use crate::model::UserProperty;

    /// Maps a user given as snapshot JSON and renders its attributes one a line.
    fn check(user: &str, expect: Expect) {
        let user: EntraUser = serde_json::from_str(user).expect("user parses");
        let mapped = map_user(&user);
        if let Ok(attributes) = &mapped {
            // The comparison without a map agrees with the map in every case of the table.
            assert!(maps_to(&user, attributes), "{attributes:?}");
        }
        expect.assert_eq(&render(mapped));
    }

    /// `maps_to` answers no to any other value, a missing field, an extra one, or a user
    /// without a usable name.
    #[test]
    fn maps_to_tells_any_difference() {
        let mut user = EntraUser::new("u-1")
            .with(UserProperty::GivenName, "Adele")
            .with(UserProperty::Surname, "Vance")
            .with(UserProperty::Mail, "adele@contoso.example")
            .with(UserProperty::JobTitle, "Retail Manager")
            .with(UserProperty::AssignedLicenses, "c7df2760");
        user.account_enabled = Some(true);
        let mapped = map_user(&user).expect("a usable name");
        assert!(maps_to(&user, &mapped));
        for (field, _) in mapped.iter() {
            let mut changed = mapped.clone();
            changed.insert(field, "other".into());
            assert!(!maps_to(&user, &changed), "{field} changed");
            let mut missing = mapped.clone();
            missing.remove(field);
            assert!(!maps_to(&user, &missing), "{field} missing");
        }
        for extra in [Field::DisplayName, Field::Unit, Field::Roles] {
            let mut more = mapped.clone();
            more.insert(extra, "extra".into());
            assert!(!maps_to(&user, &more), "{extra} extra");
        }
        let nameless = EntraUser::new("u-2");
        assert!(!maps_to(&nameless, &Attributes::new()));
    }

    fn render(mapped: Result<Attributes, MappingProblem>) -> String {
        match mapped {
            Ok(attributes) => attributes
                .iter()
                .map(|(field, value)| format!("{field}: {value:?}\n"))
                .collect(),
            Err(problem) => format!("{problem}\n"),
        }
    }

    #[test]
    fn every_field() {
        check(
            r#"{
                "id": "87d349ed", "given_name": " Adele ", "surname": "Vance",
                "display_name": "Adele Vance", "mail": "AdeleV@contoso.example",
                "user_principal_name": "adele@contoso.example", "job_title": "Retail Manager",
                "department": "Retail", "company_name": "Contoso", "office_location": "18/2111",
                "street_address": "205 108th Ave NE", "city": "Bellevue", "state": "WA",
                "postal_code": "98004", "country": "United States",
                "business_phones": ["  ", "+1 425 555 0109", "+1 425 555 0110"],
                "mobile_phone": "   ", "employee_id": "E-1001", "user_type": "Member",
                "account_enabled": false, "assigned_licenses": ["c7df2760", "189a915c", "c7df2760"]
            }"#,
            expect![[r#"
                given_name: "Adele"
                surname: "Vance"
                display_name: "Adele Vance"
                email: "AdeleV@contoso.example"
                user_principal_name: "adele@contoso.example"
                job_title: "Retail Manager"
                department: "Retail"
                company_name: "Contoso"
                office_location: "18/2111"
                street_address: "205 108th Ave NE"
                city: "Bellevue"
                state: "WA"
                postal_code: "98004"
                country: "United States"
                business_phone: "+1 425 555 0109"
                employee_id: "E-1001"
                user_type: "Member"
                account_enabled: "false"
                assigned_licenses: "189a915c,c7df2760"
            "#]],
        );
    }

    #[test]
    fn email_falls_back_to_the_upn_but_not_a_guests() {
        check(
            r#"{"id": "u1", "given_name": "Jane", "surname": "Doe", "mail": "  ",
                "user_principal_name": "jane@contoso.example"}"#,
            expect![[r#"
                given_name: "Jane"
                surname: "Doe"
                email: "jane@contoso.example"
                user_principal_name: "jane@contoso.example"
            "#]],
        );
        check(
            r##"{"id": "u2", "display_name": "Adele Vance", "user_type": "Guest",
                "user_principal_name": "AdeleV_adatum.com#EXT#@contoso.onmicrosoft.com"}"##,
            expect![[r##"
                given_name: "Adele"
                surname: "Vance"
                display_name: "Adele Vance"
                user_principal_name: "AdeleV_adatum.com#EXT#@contoso.onmicrosoft.com"
                user_type: "Guest"
            "##]],
        );
        check(
            r##"{"id": "u3", "display_name": "Adele Vance", "mail": "AdeleV@adatum.example",
                "user_principal_name": "AdeleV_adatum.example#ext#@contoso.onmicrosoft.com"}"##,
            expect![[r##"
                given_name: "Adele"
                surname: "Vance"
                display_name: "Adele Vance"
                email: "AdeleV@adatum.example"
                user_principal_name: "AdeleV_adatum.example#ext#@contoso.onmicrosoft.com"
            "##]],
        );
    }

    #[test]
    fn name_derivation() {
        let cases: &[(Option<&str>, Option<&str>, Option<&str>)] = &[
            (Some("Jane"), Some("Doe"), Some("Someone Else")),
            (None, None, Some("Jane Doe")),
            (None, None, Some("  Jane   van  der Berg ")),
            (None, None, Some("Doe, Jane")),
            (None, None, Some("Doe, Jane Mary")),
            (None, None, Some("Doe,")),
            (Some("Mary Ann"), None, Some("Mary Ann Smith")),
            (None, Some("van der Berg"), Some("Jane van der Berg")),
            (Some("Jane"), None, Some("Doe")),
            (None, Some("Doe"), Some("Jane")),
            (Some("Jane"), None, Some("Jane")),
            (Some("Jane"), None, Some("Doe, Jane")),
            (None, None, Some("Reception")),
            (None, None, Some("jane.doe@contoso.example")),
            (Some("Jane"), None, Some("jane.doe@contoso.example")),
            (None, None, None),
            (Some("   "), Some("Doe"), None),
            (None, None, Some("José Álvarez-García")),
            (None, None, Some("Åsa Ørsted Søndergaard")),
            (None, None, Some("山田 太郎")),
            (None, None, Some("山田太郎")),
            (Some("Zoë"), None, Some("Zoë Ünal")),
        ];
        let rendered: String = cases
            .iter()
            .map(|&(given_name, surname, display_name)| {
                let user = EntraUser::default()
                    .with(UserProperty::GivenName, given_name)
                    .with(UserProperty::Surname, surname)
                    .with(UserProperty::DisplayName, display_name);
                let outcome = match map_user(&user) {
                    Ok(attributes) => format!(
                        "{:?} {:?}",
                        attributes.get(Field::GivenName).unwrap_or_default(),
                        attributes.get(Field::Surname).unwrap_or_default()
                    ),
                    Err(MappingProblem::NoUsableName) => "no usable name".to_owned(),
                };
                format!("{given_name:?} {surname:?} {display_name:?} -> {outcome}\n")
            })
            .collect();
        expect![[r#"
            Some("Jane") Some("Doe") Some("Someone Else") -> "Jane" "Doe"
            None None Some("Jane Doe") -> "Jane" "Doe"
            None None Some("  Jane   van  der Berg ") -> "Jane" "van der Berg"
            None None Some("Doe, Jane") -> "Jane" "Doe"
            None None Some("Doe, Jane Mary") -> "Jane Mary" "Doe"
            None None Some("Doe,") -> no usable name
            Some("Mary Ann") None Some("Mary Ann Smith") -> "Mary Ann" "Smith"
            None Some("van der Berg") Some("Jane van der Berg") -> "Jane" "van der Berg"
            Some("Jane") None Some("Doe") -> "Jane" "Doe"
            None Some("Doe") Some("Jane") -> "Jane" "Doe"
            Some("Jane") None Some("Jane") -> no usable name
            Some("Jane") None Some("Doe, Jane") -> "Jane" "Doe"
            None None Some("Reception") -> no usable name
            None None Some("jane.doe@contoso.example") -> no usable name
            Some("Jane") None Some("jane.doe@contoso.example") -> no usable name
            None None None -> no usable name
            Some("   ") Some("Doe") None -> no usable name
            None None Some("José Álvarez-García") -> "José" "Álvarez-García"
            None None Some("Åsa Ørsted Søndergaard") -> "Åsa" "Ørsted Søndergaard"
            None None Some("山田 太郎") -> "山田" "太郎"
            None None Some("山田太郎") -> no usable name
            Some("Zoë") None Some("Zoë Ünal") -> "Zoë" "Ünal"
        "#]]
        .assert_eq(&rendered);
    }
}
