//! A directory user's attributes, packed: every value in one string (see [`crate::packed`]).
//!
//! A first sync plans a `CreateUser` for each of a million users and a re-sync loads a million
//! directory users, each with about sixteen attributes. As a `BTreeMap<Field, String>` that was
//! three tree nodes and sixteen strings a user (about 1.3 KB); packed it is two allocations
//! holding the bytes themselves and four more a value.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::map::Field;
use crate::packed::Packed;

/// A directory user's attributes; a field that is absent is unset. Iterates in [`Field`] order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// One value a field that has one, tagged `field as u32`.
    values: Packed,
}

/// One slot a field, in [`Field::ALL`] order: the unpacked form, for building and editing.
type Slots<'a> = [Option<&'a str>; Field::ALL.len()];

impl Attributes {
    /// No attributes.
    pub fn new() -> Self {
        Self::default()
    }

    /// The field's value, if it has one.
    pub fn get(&self, field: Field) -> Option<&str> {
        self.values.values(field as u32).next()
    }

    /// The fields that have a value, with it, in [`Field`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Field, &str)> {
        self.values
            .iter()
            .map(|(tag, value)| (Field::ALL[tag as usize], value))
    }

    /// How many fields have a value.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no field has a value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets a field's value, returning the one it replaces.
    pub fn insert(&mut self, field: Field, value: String) -> Option<String> {
        let previous = self.get(field).map(str::to_owned);
        let mut slots = self.slots();
        slots[field as usize] = Some(&value);
        *self = Self::pack(&slots);
        previous
    }

    /// Unsets a field, returning its value.
    pub fn remove(&mut self, field: Field) -> Option<String> {
        let previous = self.get(field).map(str::to_owned);
        if previous.is_some() {
            let mut slots = self.slots();
            slots[field as usize] = None;
            *self = Self::pack(&slots);
        }
        previous
    }

    /// Keeps the fields for which `keep` says yes.
    pub fn retain(&mut self, mut keep: impl FnMut(Field, &str) -> bool) {
        let mut slots = self.slots();
        let mut changed = false;
        for (field, slot) in Field::ALL.into_iter().zip(slots.iter_mut()) {
            if slot.is_some_and(|value| !keep(field, value)) {
                *slot = None;
                changed = true;
            }
        }
        if changed {
            *self = Self::pack(&slots);
        }
    }

    fn slots(&self) -> Slots<'_> {
        let mut slots: Slots<'_> = [None; Field::ALL.len()];
        for (field, value) in self.iter() {
            slots[field as usize] = Some(value);
        }
        slots
    }

    fn pack(slots: &Slots<'_>) -> Self {
        let values = Field::ALL
            .into_iter()
            .zip(slots)
            .filter_map(|(field, value)| Some((field as u32, (*value)?)))
            .collect();
        Attributes {
            values: Packed::new(values),
        }
    }
}

impl<V: AsRef<str>> FromIterator<(Field, V)> for Attributes {
    /// As a map would: a field given twice keeps its last value.
    fn from_iter<I: IntoIterator<Item = (Field, V)>>(entries: I) -> Self {
        let entries: Vec<(Field, V)> = entries.into_iter().collect();
        let mut slots: Slots<'_> = [None; Field::ALL.len()];
        for (field, value) in &entries {
            slots[*field as usize] = Some(value.as_ref());
        }
        Self::pack(&slots)
    }
}

impl<V: AsRef<str>, const N: usize> From<[(Field, V); N]> for Attributes {
    fn from(entries: [(Field, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Attributes {
    /// As a map of field names to values, in field order: the JSON the store and plans hold.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AttributesVisitor;

        impl<'de> Visitor<'de> for AttributesVisitor {
            type Value = Attributes;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of attribute names to strings")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Attributes, A::Error> {
                let mut values: [Option<String>; Field::ALL.len()] = Default::default();
                while let Some((field, value)) = map.next_entry::<Field, String>()? {
                    values[field as usize] = Some(value);
                }
                let mut slots: Slots<'_> = [None; Field::ALL.len()];
                for (slot, value) in slots.iter_mut().zip(&values) {
                    *slot = value.as_deref();
                }
                Ok(Attributes::pack(&slots))
            }
        }

        deserializer.deserialize_map(AttributesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packing relies on `field as usize` being the field's place in `Field::ALL`.
    #[test]
    fn every_field_is_at_its_own_index() {
        for (index, field) in Field::ALL.into_iter().enumerate() {
            assert_eq!(field as usize, index, "{field}");
        }
    }

    /// Each edit leaves the attributes equal to the same edit of a map, and the JSON is a map's.
    #[test]
    fn edits_behave_as_a_maps_do() {
        use std::collections::BTreeMap;
        let mut attributes = Attributes::from([
            (Field::Surname, "Vance"),
            (Field::GivenName, "Adele"),
            (Field::Roles, ""),
            (Field::City, "Oslo"),
        ]);
        let mut map: BTreeMap<Field, String> = attributes
            .iter()
            .map(|(field, value)| (field, value.to_owned()))
            .collect();
        let same = |attributes: &Attributes, map: &BTreeMap<Field, String>| {
            let packed: Vec<(Field, &str)> = attributes.iter().collect();
            let expected: Vec<(Field, &str)> = map
                .iter()
                .map(|(field, value)| (*field, value.as_str()))
                .collect();
            assert_eq!(packed, expected);
            assert_eq!(attributes.len(), map.len());
            assert_eq!(attributes.is_empty(), map.is_empty());
            for field in Field::ALL {
                assert_eq!(
                    attributes.get(field),
                    map.get(&field).map(String::as_str),
                    "{field}"
                );
            }
            assert_eq!(
                serde_json::to_string(attributes).ok(),
                serde_json::to_string(map).ok()
            );
            let decoded: Attributes =
                serde_json::from_str(&serde_json::to_string(map).unwrap_or_default()).unwrap_or_default();
            assert_eq!(&decoded, attributes);
        };
        same(&attributes, &map);
        assert_eq!(
            attributes.insert(Field::City, "Bergen".to_owned()),
            map.insert(Field::City, "Bergen".to_owned())
        );
        same(&attributes, &map);
        assert_eq!(
            attributes.insert(Field::Email, "adele@contoso.example".to_owned()),
            map.insert(Field::Email, "adele@contoso.example".to_owned())
        );
        same(&attributes, &map);
        assert_eq!(attributes.remove(Field::GivenName), map.remove(&Field::GivenName));
        assert_eq!(attributes.remove(Field::GivenName), None);
        same(&attributes, &map);
        attributes.retain(|field, _| field != Field::Roles);
        map.retain(|field, _| *field != Field::Roles);
        same(&attributes, &map);
        attributes.retain(|_, _| false);
        map.clear();
        same(&attributes, &map);
        assert_eq!(attributes, Attributes::new());
    }

    /// A field given twice keeps its last value, as a map's `collect` does.
    #[test]
    fn the_last_value_of_a_field_wins() {
        let attributes: Attributes = [(Field::City, "Oslo"), (Field::City, "Bergen")]
            .into_iter()
            .collect();
        assert_eq!(attributes.get(Field::City), Some("Bergen"));
        assert_eq!(attributes.len(), 1);
    }
}
