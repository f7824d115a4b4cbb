//! Keys for the spool's in-memory B-trees that sort by a hash of their bytes first, then by the
//! bytes. A delivery id lives on the heap, a pointer away from the tree node that names it: with
//! half a million jobs held, each comparison of a search went to memory for the id it compared
//! against, twenty times per lookup, and a delivery makes several lookups. The hash sits in the
//! node itself, so a search reads key bytes only where two hashes tie, which is once: at the key
//! it finds. The order is the hash's, which nothing in the spool relies on.
//!
//! Lookups go through [`Probe`], borrowed as `dyn Lookup`, so finding a key allocates nothing.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;

fn hash_of(bytes: &[u8]) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(bytes)
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

fn compare(a: &(impl Lookup + ?Sized), b: &(impl Lookup + ?Sized)) -> Ordering {
    a.hash()
        .cmp(&b.hash())
        .then_with(|| a.bytes().cmp(b.bytes()))
}

impl<'a, K: KeyBytes + 'a> Borrow<dyn Lookup + 'a> for HashedKey<K> {
    fn borrow(&self) -> &(dyn Lookup + 'a) {
        self
    }
}

impl PartialEq for dyn Lookup + '_ {
    fn eq(&self, other: &Self) -> bool {
        compare(self, other).is_eq()
    }
}

impl Eq for dyn Lookup + '_ {}

impl PartialOrd for dyn Lookup + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn Lookup + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(self, other)
    }
}

impl<K: KeyBytes> PartialEq for HashedKey<K> {
    fn eq(&self, other: &Self) -> bool {
        compare(self, other).is_eq()
    }
}

impl<K: KeyBytes> Eq for HashedKey<K> {}

impl<K: KeyBytes> PartialOrd for HashedKey<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K: KeyBytes> Ord for HashedKey<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(self, other)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn stored(key: &str) -> HashedKey<Box<[u8]>> {
        HashedKey::new(key.as_bytes().into())
    }

    #[test]
    fn a_probe_finds_the_key_with_the_same_bytes_and_no_other() {
        let mut tree = BTreeMap::new();
        for (i, id) in ["dlv_a", "dlv_b", "dlv_c"].into_iter().enumerate() {
            tree.insert(stored(id), i);
        }
        assert_eq!(tree.get(Probe::new(b"dlv_b").lookup()), Some(&1));
        assert_eq!(tree.get(Probe::new(b"dlv_d").lookup()), None);
        assert_eq!(tree.remove(Probe::new(b"dlv_a").lookup()), Some(0));
        assert!(!tree.contains_key(Probe::new(b"dlv_a").lookup()));
        assert_eq!(tree.len(), 2);
    }

    #[test]
    fn keys_whose_hashes_tie_are_told_apart_by_their_bytes() {
        let a = HashedKey {
            hash: 7,
            key: Box::<[u8]>::from(&b"a"[..]),
        };
        let b = HashedKey {
            hash: 7,
            key: Box::<[u8]>::from(&b"b"[..]),
        };
        let mut tree = BTreeMap::new();
        tree.insert(a.clone(), 1);
        tree.insert(b, 2);
        assert_eq!(tree.len(), 2);
        let probe = Probe {
            hash: 7,
            bytes: b"b",
        };
        assert_eq!(tree.get(probe.lookup()), Some(&2));
        assert_eq!(tree.get(Borrow::<dyn Lookup>::borrow(&a)), Some(&1));
    }

    #[test]
    fn an_arc_str_key_and_a_boxed_key_of_the_same_bytes_hash_alike() {
        let arc = HashedKey::new(Arc::<str>::from("dlv_x"));
        assert_eq!(arc.hash, stored("dlv_x").hash);
        let mut tree = BTreeMap::new();
        tree.insert(arc, ());
        assert!(tree.contains_key(Probe::new(b"dlv_x").lookup()));
    }
}
