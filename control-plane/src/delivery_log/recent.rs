//! The ids of the attempts stored lately. A node whose report timed out after the control plane
//! stored it sends the same attempts again (seconds later, or after a restart of either side);
//! they must be stored and counted once. Pages hold attempts by batch, not by id, so the ids are
//! remembered here instead: the last `GENERATION` attempts at least, up to twice as many.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

/// Ids a generation holds: what a table of 2^20 buckets takes before it would grow. At 20,000
/// attempts a second, 46 seconds at least: beyond a node's report timeout (15 s) and its first
/// waits before sending again. Two generations, the current and the one before, take 18 MiB at
/// most. Before, one table of the last 2^20 ids with a ring of them in order took 34 MiB once
/// full (a table of 2^21 buckets, a ring grown to 2^21 slots), the largest part of what a
/// standalone node's memory grew by through a drain (docs/BENCHMARKS.md, change 44).
const GENERATION: usize = (1 << 20) / 8 * 7;

/// An attempt id as the log remembers it: its keyed hash. A collision (one in 2^43 at this
/// size) costs one attempt's record, and ids cannot be chosen to collide without the
/// per-process key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IdHash(u64);

/// A set of [`IdHash`]es that takes each as its own hash (a `HashTable`): they are keyed hashes
/// already. Before, each attempt's id was hashed twice and its hash three times more, all with
/// SipHash; with the lazy delivery record, dropping that took `attempt_log_cost` from 3.29 to
/// 2.95 µs an attempt, the means of nine alternated runs (docs/BENCHMARKS.md, change 37).
#[derive(Default)]
pub(crate) struct IdSet(HashTable<IdHash>);

impl IdSet {
    pub fn contains(&self, id: IdHash) -> bool {
        self.0.find(id.0, |x| *x == id).is_some()
    }

    /// Adds `id`; false when it was there already.
    pub fn insert(&mut self, id: IdHash) -> bool {
        match self.0.entry(id.0, |x| *x == id, |x| x.0) {
            Entry::Occupied(_) => false,
            Entry::Vacant(place) => {
                place.insert(id);
                true
            }
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The ids remembered, in two generations: the oldest are forgotten a generation at a time,
/// which needs no record of their order, and never drops one of the newest `generation`.
pub(crate) struct RecentIds {
    current: IdSet,
    previous: IdSet,
    keys: RandomState,
    generation: usize,
}

impl Default for RecentIds {
    fn default() -> RecentIds {
        RecentIds::with_generation(GENERATION)
    }
}

impl RecentIds {
    fn with_generation(generation: usize) -> RecentIds {
        RecentIds {
            current: IdSet::default(),
            previous: IdSet::default(),
            keys: RandomState::new(),
            generation: generation.max(1),
        }
    }

    /// `id` as this log remembers it; one hash, for both the lookup and the insert.
    pub fn hash(&self, id: &str) -> IdHash {
        IdHash(self.keys.hash_one(id))
    }

    pub fn contains(&self, id: IdHash) -> bool {
        self.current.contains(id) || self.previous.contains(id)
    }

    /// Remembers `id`; false when it was remembered already.
    pub fn insert(&mut self, id: IdHash) -> bool {
        if self.previous.contains(id) {
            return false;
        }
        // The current generation is probed once, by the insert below, unless it is full.
        if self.current.len() >= self.generation && !self.current.contains(id) {
            // The current generation is full: it becomes the one before, and the one before is
            // forgotten.
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_new_once() {
        let mut recent = RecentIds::default();
        let (one, two) = (recent.hash("att_1"), recent.hash("att_2"));
        assert!(!recent.contains(one));
        assert!(recent.insert(one));
        assert!(recent.contains(one));
        assert!(!recent.insert(one));
        assert!(recent.insert(two));
    }

    #[test]
    fn the_newest_generation_of_ids_is_always_remembered_and_older_ones_a_generation_at_a_time() {
        let mut recent = RecentIds::with_generation(2);
        let ids: Vec<IdHash> = (1..=5).map(|n| recent.hash(&format!("att_{n}"))).collect();
        for &id in &ids {
            assert!(recent.insert(id));
            assert!(!recent.insert(id), "an id just remembered is known");
        }
        // Generations {1, 2}, {3, 4}, {5}: the first is forgotten, the second still held.
        assert!(!recent.contains(ids[0]) && !recent.contains(ids[1]));
        for &id in &ids[2..] {
            assert!(recent.contains(id));
            assert!(
                !recent.insert(id),
                "an id of the generation before is known"
            );
        }
        assert!(recent.insert(ids[0]), "a forgotten id is new again");
    }

    #[test]
    fn a_full_generation_holds_as_many_ids_as_its_table_takes_without_growing() {
        let mut set = IdSet::default();
        set.0.reserve(GENERATION, |x| x.0);
        let buckets = set.0.capacity();
        let recent = RecentIds::default();
        for n in 0..GENERATION {
            set.insert(recent.hash(&n.to_string()));
        }
        assert_eq!(set.0.capacity(), buckets);
        assert_eq!(set.len(), GENERATION);
    }
}
