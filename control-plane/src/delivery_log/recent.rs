//! The ids of the attempts stored lately. A node whose report timed out after the control plane
//! stored it sends the same attempts again (seconds later, or after a restart of either side);
//! they must be stored and counted once. Pages hold attempts by batch, not by id, so the ids are
//! remembered here instead, for the last `REMEMBERED` attempts.

use std::collections::hash_map::RandomState;
use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher as _;

/// At 20,000 attempts a second, the last 50 seconds: beyond a node's report timeout (15 s) and
/// its first waits before sending again. About 26 MiB when full.
const REMEMBERED: usize = 1 << 20;

pub(crate) struct RecentIds {
    /// Ids are kept as keyed hashes: a collision (one in 2^44 at this size) costs one attempt's
    /// record, and ids cannot be chosen to collide without the per-process key.
    seen: HashSet<u64>,
    order: VecDeque<u64>,
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
            seen: HashSet::new(),
            order: VecDeque::new(),
            keys: RandomState::new(),
            limit,
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.seen.contains(&self.keys.hash_one(id))
    }

    /// Remembers `id`; false when it was remembered already.
    pub fn insert(&mut self, id: &str) -> bool {
        let hash = self.keys.hash_one(id);
        if !self.seen.insert(hash) {
            return false;
        }
        self.order.push_back(hash);
        if self.order.len() > self.limit
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
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
        assert!(recent.insert("att_1"));
        assert!(!recent.insert("att_1"));
        assert!(recent.insert("att_2"));
    }

    #[test]
    fn the_oldest_ids_are_forgotten_beyond_the_limit() {
        let mut recent = RecentIds::with_limit(2);
        for id in ["att_1", "att_2", "att_3"] {
            assert!(recent.insert(id));
        }
        assert!(!recent.insert("att_3"));
        assert!(recent.insert("att_1"));
    }
}
