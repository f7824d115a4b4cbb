//! The journal's index: where each key's latest record is, in 24 bytes a key, without the key.
//!
//! The index holds an entry for every job in the spool, so its size per entry is the spool's
//! memory per queued delivery. With the delivery id stored (a boxed key, its hash and its place)
//! an entry cost about 130 bytes and two million queued deliveries a quarter of a gigabyte. Here
//! a key is known by 96 bits of keyed hashes (SipHash under keys drawn once per process: ids
//! chosen to collide cannot be worked out ahead of time, and two million keys collide by chance
//! with a probability near 10^-17), and its place is packed in 12 bytes. The key itself is in
//! the record, read back when it is needed (copying a record forward, replay).
//!
//! Like the held jobs' map (`hashed_key.rs`) it is 64 maps, each growing on its own, so a
//! doubling never stalls the spool's lock for long; each also shrinks on its own as it empties.

use std::{
    collections::HashMap,
    hash::{BuildHasher, BuildHasherDefault, RandomState},
    sync::OnceLock,
};

use super::hashed_key::StoredHash;

const SHARDS: usize = 64;
/// Keys a shard may have room for before it is made smaller as it empties: below this, its
/// buckets are a few dozen KiB, not worth a rebuild.
const SHRINK_FROM: usize = 1024;

/// Where a record sits: its segment, its offset there and its whole length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Loc {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

/// A [`Loc`] packed beside the key's check bits. Segments are numbered from 1 and close at
/// 64 MiB (`journal.rs` refuses an offset past 4 GiB), so both fit in 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    check: u32,
    segment: u32,
    offset: u32,
    len: u32,
}

impl Entry {
    fn loc(self) -> Loc {
        Loc {
            segment: u64::from(self.segment),
            offset: u64::from(self.offset),
            len: self.len,
        }
    }
}

/// The two hashes a key is known by: one places it, the other tells it from the keys placed
/// alike.
fn hashes(key: &[u8]) -> (u64, u32) {
    static KEYS: OnceLock<(RandomState, RandomState)> = OnceLock::new();
    let (place, check) = KEYS.get_or_init(|| (RandomState::new(), RandomState::new()));
    (place.hash_one(key), check.hash_one(key) as u32)
}

fn shard_of(hash: u64) -> usize {
    (hash >> 40) as usize % SHARDS
}

type Shard = HashMap<u64, Entry, BuildHasherDefault<StoredHash>>;

pub(super) struct KeyIndex {
    shards: Box<[Shard]>,
    len: usize,
}

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            len: 0,
        }
    }
}

impl KeyIndex {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get(&self, key: &[u8]) -> Option<Loc> {
        let (place, check) = hashes(key);
        self.shards[shard_of(place)]
            .get(&place)
            .filter(|e| e.check == check)
            .map(|e| e.loc())
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// Puts `loc` as `key`'s place; the place it replaces. `loc` must fit (see [`Entry`]).
    pub fn insert(&mut self, key: &[u8], loc: Loc) -> Option<Loc> {
        let (place, check) = hashes(key);
        let entry = Entry {
            check,
            segment: u32::try_from(loc.segment).unwrap_or(u32::MAX),
            offset: u32::try_from(loc.offset).unwrap_or(u32::MAX),
            len: loc.len,
        };
        let old = self.shards[shard_of(place)].insert(place, entry);
        // Another key placed alike (a chance of about 10^-17 with two million keys) is
        // replaced: its record stays on disk and a restart finds it again.
        self.len += usize::from(old.is_none());
        old.filter(|e| e.check == check).map(Entry::loc)
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<Loc> {
        let (place, check) = hashes(key);
        let shard = &mut self.shards[shard_of(place)];
        if shard.get(&place)?.check != check {
            return None;
        }
        let old = shard.remove(&place)?;
        self.len -= 1;
        // A map keeps the buckets of its fullest moment. Through the drain of a backlog of
        // millions the index held its peak's buckets to the end: 100 MiB at 2.6 million, half of
        // a restarted node's memory (docs/BENCHMARKS.md, change 44). A shard under three eighths
        // full is rebuilt at half its buckets, three quarters full, so it grows again only
        // after a third more keys.
        if shard.capacity() > SHRINK_FROM && shard.len() * 8 < shard.capacity() * 3 {
            shard.shrink_to(shard.len() * 4 / 3);
        }
        Some(old.loc())
    }

    /// Every place held.
    pub fn locs(&self) -> impl Iterator<Item = Loc> + '_ {
        self.shards
            .iter()
            .flat_map(|shard| shard.values().map(|e| e.loc()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(segment: u64, offset: u64) -> Loc {
        Loc {
            segment,
            offset,
            len: 40,
        }
    }

    #[test]
    fn a_key_is_found_where_it_was_put_and_no_other_key_is() {
        let mut index = KeyIndex::default();
        assert_eq!(index.insert(b"dlv_a", at(1, 0)), None);
        assert_eq!(index.insert(b"dlv_b", at(1, 40)), None);
        assert_eq!(index.get(b"dlv_a"), Some(at(1, 0)));
        assert_eq!(index.get(b"dlv_c"), None);
        assert_eq!(index.insert(b"dlv_a", at(2, 0)), Some(at(1, 0)));
        assert_eq!(index.len(), 2);
        assert_eq!(index.remove(b"dlv_c"), None);
        assert_eq!(index.remove(b"dlv_a"), Some(at(2, 0)));
        assert_eq!(index.len(), 1);
        assert_eq!(index.locs().collect::<Vec<_>>(), vec![at(1, 40)]);
    }

    #[test]
    fn an_entry_is_24_bytes_with_its_key() {
        assert_eq!(std::mem::size_of::<(u64, Entry)>(), 24);
    }

    #[test]
    fn the_index_gives_back_its_room_as_it_empties_and_still_finds_what_is_left() {
        let mut index = KeyIndex::default();
        let room = |index: &KeyIndex| index.shards.iter().map(Shard::capacity).sum::<usize>();
        for i in 0..400_000_u64 {
            index.insert(format!("dlv_{i}").as_bytes(), at(1, i));
        }
        let full = room(&index);
        for i in 10_000..400_000_u64 {
            assert_eq!(index.remove(format!("dlv_{i}").as_bytes()), Some(at(1, i)));
        }
        assert!(room(&index) * 4 < full, "{} of {full}", room(&index));
        assert_eq!(index.len(), 10_000);
        for i in 0..10_000_u64 {
            assert_eq!(index.get(format!("dlv_{i}").as_bytes()), Some(at(1, i)));
        }
        // Filled again, it grows as before.
        for i in 10_000..400_000_u64 {
            index.insert(format!("dlv_{i}").as_bytes(), at(2, i));
        }
        assert_eq!(index.len(), 400_000);
        assert_eq!(index.get(b"dlv_399999"), Some(at(2, 399_999)));
    }

    #[test]
    fn a_million_keys_are_all_told_apart() {
        let mut index = KeyIndex::default();
        for i in 0..1_000_000_u64 {
            index.insert(format!("dlv_{i}").as_bytes(), at(1, i));
        }
        assert_eq!(index.len(), 1_000_000);
        assert!(index.shards.iter().all(|shard| !shard.is_empty()));
        assert_eq!(index.get(b"dlv_4321"), Some(at(1, 4321)));
    }
}
