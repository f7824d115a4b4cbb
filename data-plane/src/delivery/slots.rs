//! Per-target concurrency: at most `cap` attempts in flight per target. The engine asks the
//! queue only for as many of a target's jobs as it has free slots, so a busy or slow target's
//! backlog waits in the queue, in order, instead of being leased and pushed back again and
//! again (that churn once cost a tenth of the node's CPU).

use std::sync::{Arc, Mutex, PoisonError};

use foldhash::{HashMap, HashMapExt as _};
use tokio::sync::Notify;

#[derive(Debug)]
pub struct TargetSlots {
    per_target: usize,
    /// Each busy target's count of slots taken, keyed by its name, which its slots share: a slot
    /// of a busy target copies no name (a copy per attempt, and its free, were two of the
    /// drain's allocations a delivery; docs/BENCHMARKS.md, change 37).
    busy: Mutex<Busy>,
    freed: Notify,
}

/// Busy targets by name, with how many slots are taken.
type Busy = HashMap<Arc<str>, usize>;

/// One slot of a target, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<TargetSlots>,
    target: Arc<str>,
}

impl TargetSlots {
    pub fn new(per_target: usize) -> Arc<Self> {
        Arc::new(Self {
            per_target: per_target.max(1),
            busy: Mutex::new(HashMap::new()),
            freed: Notify::new(),
        })
    }

    /// Free slots of `target`.
    pub fn room(&self, target: &str) -> usize {
        let busy = self.lock().get(target).copied().unwrap_or(0);
        self.per_target.saturating_sub(busy)
    }

    /// A slot of `target`, or None when all are taken: the caller never waits.
    pub fn try_take(self: &Arc<Self>, target: &str) -> Option<Slot> {
        let mut busy = self.lock();
        let name = match busy.get_key_value(target) {
            Some((_, &count)) if count >= self.per_target => return None,
            Some((name, _)) => Arc::clone(name),
            None => Arc::from(target),
        };
        *busy.entry(Arc::clone(&name)).or_default() += 1;
        Some(Slot {
            slots: Arc::clone(self),
            target: name,
        })
    }

    /// Resolves when a slot was given back since this future was created (and enabled).
    pub fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Busy> {
        self.busy.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut busy = self.slots.lock();
            if let Some(count) = busy.get_mut(&*self.target) {
                *count -= 1;
                // Idle targets leave the map, so it stays as small as the set of busy ones.
                if *count == 0 {
                    busy.remove(&*self.target);
                }
            }
        }
        self.slots.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_gets_at_most_its_cap_and_a_slot_comes_back_when_dropped() {
        let slots = TargetSlots::new(2);
        let a = slots.try_take("fwd_1").unwrap();
        let _b = slots.try_take("fwd_1").unwrap();
        assert!(slots.try_take("fwd_1").is_none());
        assert_eq!(slots.room("fwd_1"), 0);
        drop(a);
        assert_eq!(slots.room("fwd_1"), 1);
        assert!(slots.try_take("fwd_1").is_some());
    }

    #[test]
    fn a_busy_target_leaves_others_their_slots() {
        let slots = TargetSlots::new(1);
        let _a = slots.try_take("fwd_1").unwrap();
        assert!(slots.try_take("fwd_2").is_some());
        assert_eq!(slots.room("fwd_3"), 1);
    }

    #[tokio::test]
    async fn a_slot_given_back_wakes_a_waiter() {
        let slots = TargetSlots::new(1);
        let a = slots.try_take("fwd_1").unwrap();
        let freed = slots.freed();
        tokio::pin!(freed);
        freed.as_mut().enable();
        drop(a);
        tokio::time::timeout(std::time::Duration::from_secs(1), freed)
            .await
            .unwrap();
    }
}
