//! A cap on attempts in flight per target, so one slow target holds a bounded share of work.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
pub struct TargetSlots {
    per_target: usize,
    targets: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl TargetSlots {
    pub fn new(per_target: usize) -> Self {
        Self {
            per_target: per_target.max(1),
            targets: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for `target`, or None when all of its slots are taken: the caller never waits.
    pub fn try_take(&self, target: &str) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut targets = self
                .targets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(
                targets
                    .entry(target.to_owned())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_target))),
            )
        };
        semaphore.try_acquire_owned().ok()
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
        drop(a);
        assert!(slots.try_take("fwd_1").is_some());
    }

    #[test]
    fn a_busy_target_leaves_others_their_slots() {
        let slots = TargetSlots::new(1);
        let _a = slots.try_take("fwd_1").unwrap();
        assert!(slots.try_take("fwd_2").is_some());
    }
}
