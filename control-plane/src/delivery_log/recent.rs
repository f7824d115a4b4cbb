//! The ids of the attempts stored lately. A node whose report timed out after the control plane
//! stored it sends the same attempts again (seconds later, or after a restart of either side);
//! they must be stored and counted once. Pages hold attempts by batch, not by id, so the ids are
//! remembered here instead, for the last `REMEMBERED` attempts.

use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

/// At 20,000 attempts a second, the last 50 seconds: beyond a node's report timeout (15 s) and
/// its first waits before sending again. About 26 MiB when full.
const REMEMBERED: usize = 1 << 20;

/// An attempt id as the log remembers it: its keyed hash. A collision (one in 2^44 at this
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

    fn remove(&mut self, id: IdHash) {
        if let Ok(found) = self.0.find_entry(id.0, |x| *x == id) {
            found.remove();
        }
    }
}

pub(crate) struct RecentIds {
    seen: IdSet,
    order: VecDeque<IdHash>,
    keys: RandomState,
    limit: usize,
}

impl Default for RecentIds {
    fn default() -> RecentIds {
        RecentIds::with_limit(REMEMBERED)
    }
}

impl RecentIds {
    fn with_limit(limit: usize) -> RecentIds {
        RecentIds {
            seen: IdSet::default(),
            order: VecDeque::new(),
            keys: RandomState::new(),
            limit,
        }
    }

    /// `id` as this log remembers it; one hash, for both the lookup and the insert.
    pub fn hash(&self, id: &str) -> IdHash {
        IdHash(self.keys.hash_one(id))
    }

    pub fn contains(&self, id: IdHash) -> bool {
        self.seen.contains(id)
    }

    /// Remembers `id`; false when it was remembered already.
    pub fn insert(&mut self, id: IdHash) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.limit
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(oldest);
        }
        true
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
    fn the_oldest_ids_are_forgotten_beyond_the_limit() {
        let mut recent = RecentIds::with_limit(2);
        let [one, two, three] = ["att_1", "att_2", "att_3"].map(|id| recent.hash(id));
        for id in [one, two, three] {
            assert!(recent.insert(id));
        }
        assert!(!recent.insert(three));
        assert!(recent.insert(one));
    }
}
