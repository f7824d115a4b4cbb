//! Keys hashed once, and the sharded hash map the spool keeps its held jobs and its journal's
//! index in.
//!
//! Both grow with the backlog: half a million entries and more. In a B-tree a lookup is a dozen
//! or more cache misses, and with the ids on the heap each comparison was another; a delivery
//! makes several lookups, and they were a tenth of what it cost. A hash map finds an entry in one
//! or two, but a single one doubling at a million entries stalls everyone behind the spool's lock
//! for tens of milliseconds. So the map is 64 hash maps, each growing on its own: a doubling moves
//! a sixty-fourth of the entries. A key's hash is computed once, when it is first stored, and the
//! maps use it as it is.
//!
//! Lookups go through [`Probe`], borrowed as `dyn Lookup`, so finding a key allocates nothing.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::sync::{Arc, OnceLock};

/// Maps a [`HashedMap`] is made of.
const SHARDS: usize = 64;

/// SipHash under keys drawn once per process: the hashes live only in memory, and ids chosen
/// to collide cannot be worked out ahead of time.
fn hash_of(bytes: &[u8]) -> u64 {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new).hash_one(bytes)
}

/// What a stored key holds its bytes in.
pub(super) trait KeyBytes {
    fn key_bytes(&self) -> &[u8];
}

impl KeyBytes for Box<[u8]> {
    fn key_bytes(&self) -> &[u8] {
        self
    }
}

impl KeyBytes for Arc<str> {
    fn key_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// A stored key: its bytes and their hash.
#[derive(Debug, Clone)]
pub(super) struct HashedKey<K> {
    hash: u64,
    key: K,
}

impl<K: KeyBytes> HashedKey<K> {
    pub fn new(key: K) -> Self {
        HashedKey {
            hash: hash_of(key.key_bytes()),
            key,
        }
    }

    pub fn key(&self) -> &K {
        &self.key
    }
}

/// The key of a lookup, hashed once.
pub(super) struct Probe<'a> {
    hash: u64,
    bytes: &'a [u8],
}

impl<'a> Probe<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Probe {
            hash: hash_of(bytes),
            bytes,
        }
    }

    /// The probe as the trees' `get`, `remove` and `contains_key` take it.
    pub fn lookup(&self) -> &(dyn Lookup + 'a) {
        self
    }
}

/// What stored keys and probes compare as.
pub(super) trait Lookup {
    fn hash(&self) -> u64;
    fn bytes(&self) -> &[u8];
}

impl<K: KeyBytes> Lookup for HashedKey<K> {
    fn hash(&self) -> u64 {
        self.hash
    }
    fn bytes(&self) -> &[u8] {
        self.key.key_bytes()
    }
}

impl Lookup for Probe<'_> {
    fn hash(&self) -> u64 {
        self.hash
    }
    fn bytes(&self) -> &[u8] {
        self.bytes
    }
}

fn same(a: &(impl Lookup + ?Sized), b: &(impl Lookup + ?Sized)) -> bool {
    a.hash() == b.hash() && a.bytes() == b.bytes()
}

impl<'a, K: KeyBytes + 'a> Borrow<dyn Lookup + 'a> for HashedKey<K> {
    fn borrow(&self) -> &(dyn Lookup + 'a) {
        self
    }
}

impl PartialEq for dyn Lookup + '_ {
    fn eq(&self, other: &Self) -> bool {
        same(self, other)
    }
}

impl Eq for dyn Lookup + '_ {}

impl Hash for dyn Lookup + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(Lookup::hash(self));
    }
}

impl<K: KeyBytes> PartialEq for HashedKey<K> {
    fn eq(&self, other: &Self) -> bool {
        same(self, other)
    }
}

impl<K: KeyBytes> Eq for HashedKey<K> {}

impl<K: KeyBytes> Hash for HashedKey<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Hands a key's stored hash to the map unchanged.
#[derive(Default)]
pub(super) struct StoredHash(u64);

impl Hasher for StoredHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by the keys above; anything else still hashes.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard<K, V> = HashMap<HashedKey<K>, V, BuildHasherDefault<StoredHash>>;

/// A hash map in [`SHARDS`] parts, keyed by [`HashedKey`].
pub(super) struct HashedMap<K, V> {
    shards: Box<[Shard<K, V>]>,
    len: usize,
}

impl<K: KeyBytes, V> Default for HashedMap<K, V> {
    fn default() -> Self {
        HashedMap {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            len: 0,
        }
    }
}

/// Which shard a hash goes to: bits the shard's own table uses for neither its bucket (the low
/// ones) nor its tag (the top seven).
fn shard_of(hash: u64) -> usize {
    (hash >> 40) as usize % SHARDS
}

impl<K: KeyBytes, V> HashedMap<K, V> {
    fn shard(&self, key: &dyn Lookup) -> &Shard<K, V> {
        &self.shards[shard_of(key.hash())]
    }

    fn shard_mut(&mut self, key: &dyn Lookup) -> &mut Shard<K, V> {
        &mut self.shards[shard_of(key.hash())]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get(&self, key: &dyn Lookup) -> Option<&V> {
        self.shard(key).get(key)
    }

    pub fn get_mut(&mut self, key: &dyn Lookup) -> Option<&mut V> {
        self.shard_mut(key).get_mut(key)
    }

    #[cfg(test)]
    pub fn contains_key(&self, key: &dyn Lookup) -> bool {
        self.shard(key).contains_key(key)
    }

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, key: HashedKey<K>, value: V) -> Option<V> {
        let old = self.shard_mut(&key).insert(key, value);
        self.len += usize::from(old.is_none());
        old
    }

    pub fn remove(&mut self, key: &dyn Lookup) -> Option<V> {
        let old = self.shard_mut(key).remove(key);
        self.len -= usize::from(old.is_some());
        old
    }

    #[cfg(test)]
    pub fn keys(&self) -> impl Iterator<Item = &HashedKey<K>> {
        self.shards.iter().flat_map(HashMap::keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(key: &str) -> HashedKey<Box<[u8]>> {
        HashedKey::new(key.as_bytes().into())
    }

    #[test]
    fn a_probe_finds_the_key_with_the_same_bytes_and_no_other() {
        let mut map = HashedMap::default();
        for (i, id) in ["dlv_a", "dlv_b", "dlv_c"].into_iter().enumerate() {
            map.insert(stored(id), i);
        }
        assert_eq!(map.get(Probe::new(b"dlv_b").lookup()), Some(&1));
        assert_eq!(map.get(Probe::new(b"dlv_d").lookup()), None);
        assert_eq!(map.remove(Probe::new(b"dlv_a").lookup()), Some(0));
        assert!(!map.contains_key(Probe::new(b"dlv_a").lookup()));
        assert_eq!(map.len(), 2);
        assert_eq!(map.keys().count(), 2);
    }

    #[test]
    fn inserting_a_key_again_replaces_its_value_and_keeps_the_count() {
        let mut map = HashedMap::default();
        assert_eq!(map.insert(stored("dlv_a"), 1), None);
        assert_eq!(map.insert(stored("dlv_a"), 2), Some(1));
        assert_eq!(map.len(), 1);
        assert_eq!(map.remove(Probe::new(b"dlv_a").lookup()), Some(2));
        assert_eq!(map.remove(Probe::new(b"dlv_a").lookup()), None);
        assert_eq!(map.len(), 0);
    }

    #[test]
    fn keys_whose_hashes_tie_are_told_apart_by_their_bytes() {
        let tied = |bytes: &[u8]| HashedKey {
            hash: 7,
            key: Box::<[u8]>::from(bytes),
        };
        let mut map = HashedMap::default();
        map.insert(tied(b"a"), 1);
        map.insert(tied(b"b"), 2);
        assert_eq!(map.len(), 2);
        let probe = Probe {
            hash: 7,
            bytes: b"b",
        };
        assert_eq!(map.get(probe.lookup()), Some(&2));
        assert_eq!(map.get(&tied(b"a")), Some(&1));
    }

    #[test]
    fn an_arc_str_key_and_a_boxed_key_of_the_same_bytes_hash_alike() {
        let arc = HashedKey::new(Arc::<str>::from("dlv_x"));
        assert_eq!(arc.hash, stored("dlv_x").hash);
        let mut map = HashedMap::default();
        map.insert(arc, ());
        assert!(map.contains_key(Probe::new(b"dlv_x").lookup()));
    }

    #[test]
    fn many_keys_spread_over_every_shard() {
        let mut map = HashedMap::default();
        for i in 0..10_000 {
            map.insert(stored(&format!("dlv_{i}")), i);
        }
        assert!(map.shards.iter().all(|shard| !shard.is_empty()));
        assert_eq!(map.get(Probe::new(b"dlv_4321").lookup()), Some(&4321));
    }
}
