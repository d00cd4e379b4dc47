//! Short strings packed in one allocation, each tagged with the field it is the value of: how the
//! snapshot's users and every directory user's attributes hold their values.
//!
//! A million users of about seventeen values each, as `String`s in structs or maps, cost an
//! allocation, a header and a map node a value; packed they cost their bytes and four more.

/// Values in one string. Each has an entry: its field's tag in the low [`TAG_BITS`] bits and
/// where the value ends in `text` above them. Entries are in tag order; a tag is repeated for a
/// field that holds a list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Packed {
    entries: Box<[u32]>,
    text: Box<str>,
}

/// The bits of an entry that hold its tag: tags are below 32.
const TAG_BITS: u32 = 5;

impl Packed {
    /// Packs `(tag, value)` pairs given in any order of tags; the values of one tag keep theirs.
    pub(crate) fn new(mut values: Vec<(u32, &str)>) -> Packed {
        values.sort_by_key(|&(tag, _)| tag);
        let mut text = String::with_capacity(values.iter().map(|(_, value)| value.len()).sum());
        let entries: Vec<u32> = values
            .iter()
            .map(|&(tag, value)| {
                debug_assert!(tag < 1 << TAG_BITS, "tag {tag}");
                text.push_str(value);
                // Directory values are a few hundred bytes at most: far below 128 MiB a record.
                let end = u32::try_from(text.len())
                    .ok()
                    .filter(|end| end.leading_zeros() >= TAG_BITS)
                    .expect("a record's values hold less than 128 MiB");
                (end << TAG_BITS) | tag
            })
            .collect();
        Packed {
            entries: entries.into_boxed_slice(),
            text: text.into_boxed_str(),
        }
    }

    /// How many values there are.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The values of one tag, in order.
    pub(crate) fn values(&self, tag: u32) -> impl Iterator<Item = &str> {
        let first = self.entries.partition_point(|&entry| entry_tag(entry) < tag);
        (first..self.entries.len())
            .take_while(move |&index| entry_tag(self.entries[index]) == tag)
            .map(|index| self.value(index))
    }

    /// Every value with its tag, in tag order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        (0..self.entries.len()).map(|index| (entry_tag(self.entries[index]), self.value(index)))
    }

    fn value(&self, index: usize) -> &str {
        let start = match index {
            0 => 0,
            _ => entry_end(self.entries[index - 1]),
        };
        &self.text[start..entry_end(self.entries[index])]
    }
}

/// Strings in one text, each closed by its end offset: a list of a million short strings as
/// `String`s costs an allocation and 24 bytes each beside their text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Strings {
    text: String,
    ends: Vec<usize>,
}

impl Strings {
    /// An empty list with room for `count` strings of `bytes` bytes in all.
    pub(crate) fn with_capacity(count: usize, bytes: usize) -> Strings {
        Strings {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(count),
        }
    }

    pub(crate) fn push(&mut self, value: &str) {
        self.text.push_str(value);
        self.ends.push(self.text.len());
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn get(&self, index: usize) -> &str {
        let start = index.checked_sub(1).map_or(0, |before| self.ends[before]);
        &self.text[start..self.ends[index]]
    }

    /// The strings in order.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator {
        (0..self.ends.len()).map(|index| self.get(index))
    }
}

fn entry_tag(entry: u32) -> u32 {
    entry & ((1 << TAG_BITS) - 1)
}

fn entry_end(entry: u32) -> usize {
    (entry >> TAG_BITS) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values come back by tag, a list in its order, empty values included, whatever order
    /// they were given in.
    #[test]
    fn values_come_back_by_tag() {
        let packed = Packed::new(vec![(7, "b"), (2, "x"), (7, "a"), (31, ""), (0, "first")]);
        assert_eq!(packed.len(), 5);
        assert_eq!(
            packed.iter().collect::<Vec<_>>(),
            [(0, "first"), (2, "x"), (7, "b"), (7, "a"), (31, "")]
        );
        assert_eq!(packed.values(7).collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(packed.values(31).collect::<Vec<_>>(), [""]);
        assert_eq!(packed.values(3).count(), 0);
        assert_eq!(Packed::new(Vec::new()), Packed::default());
    }

    /// Strings come back in the order they were pushed, empty ones included.
    #[test]
    fn strings_come_back_in_order() {
        let mut strings = Strings::with_capacity(4, 6);
        for value in ["ab", "", "c", "def"] {
            strings.push(value);
        }
        assert_eq!(strings.len(), 4);
        assert_eq!(strings.get(1), "");
        assert_eq!(strings.iter().collect::<Vec<_>>(), ["ab", "", "c", "def"]);
        assert_eq!(Strings::default().iter().count(), 0);
    }
}
