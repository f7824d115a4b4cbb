//! Per-target concurrency: at most `cap` attempts in flight per target, and a bounded line of
//! leased jobs waiting for one of them to finish.
//!
//! A worker that finishes an attempt takes the next job in its target's line and keeps the slot,
//! so a busy target's jobs go out as fast as the target answers, without going back to the queue
//! and being leased again (the churn that cost a tenth of the node's CPU). The count of busy
//! slots and the line sit under one lock, so a job can never be left in a line that no worker
//! will look at.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Mutex, PoisonError},
    time::Duration,
};

use crate::queue::Job;

/// Jobs waiting per target beyond the ones in flight. Beyond this the engine pushes them back
/// to the queue for about as long as the line takes to drain.
const LINE_CAP: usize = 1024;
/// Bounds of that push-back.
const MIN_PUSH_BACK: Duration = Duration::from_millis(250);
const MAX_PUSH_BACK: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct TargetLines {
    per_target: usize,
    targets: Mutex<HashMap<String, Line>>,
}

#[derive(Debug, Default)]
struct Line {
    busy: usize,
    waiting: VecDeque<Job>,
    /// Smoothed attempt latency, to tell how long a full line takes to drain.
    latency_ms: f64,
}

/// What to do with an offered job.
#[derive(Debug)]
pub enum Offer {
    /// A slot is yours: attempt it now, then call [`TargetLines::finish`].
    Go(Job),
    /// It waits in the line; a worker of this target will take it.
    Queued,
    /// The line is full: push the job back to the queue for this long.
    PushBack(Job, Duration),
}

impl TargetLines {
    pub fn new(per_target: usize) -> Self {
        Self {
            per_target: per_target.max(1),
            targets: Mutex::new(HashMap::new()),
        }
    }

    pub fn offer(&self, target: &str, job: Job) -> Offer {
        let mut targets = self.targets.lock().unwrap_or_else(PoisonError::into_inner);
        let line = targets.entry(target.to_owned()).or_default();
        if line.busy < self.per_target {
            line.busy += 1;
            return Offer::Go(job);
        }
        if line.waiting.len() < LINE_CAP {
            line.waiting.push_back(job);
            return Offer::Queued;
        }
        let drain_ms = line.waiting.len() as f64 * line.latency_ms / self.per_target as f64;
        let wait = Duration::from_millis(drain_ms as u64).clamp(MIN_PUSH_BACK, MAX_PUSH_BACK);
        Offer::PushBack(job, wait)
    }

    /// An attempt of `target` ended after `latency` (None: no attempt was made). Returns the
    /// next job in its line, whose slot the caller now holds, or frees the slot.
    pub fn finish(&self, target: &str, latency: Option<Duration>) -> Option<Job> {
        let mut targets = self.targets.lock().unwrap_or_else(PoisonError::into_inner);
        let line = targets.get_mut(target)?;
        if let Some(latency) = latency {
            let ms = latency.as_secs_f64() * 1_000.0;
            line.latency_ms = if line.latency_ms == 0.0 {
                ms
            } else {
                0.8 * line.latency_ms + 0.2 * ms
            };
        }
        if let Some(next) = line.waiting.pop_front() {
            return Some(next);
        }
        line.busy = line.busy.saturating_sub(1);
        if line.busy == 0 {
            targets.remove(target);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> Job {
        Job {
            delivery_id: id.to_owned(),
            ..Job::default()
        }
    }

    fn went(offer: Offer) -> bool {
        matches!(offer, Offer::Go(_))
    }

    #[test]
    fn a_target_gets_at_most_its_cap_in_flight() {
        let lines = TargetLines::new(2);
        assert!(went(lines.offer("fwd_1", job("a"))));
        assert!(went(lines.offer("fwd_1", job("b"))));
        assert!(matches!(lines.offer("fwd_1", job("c")), Offer::Queued));
    }

    #[test]
    fn a_busy_target_leaves_others_their_slots() {
        let lines = TargetLines::new(1);
        assert!(went(lines.offer("fwd_1", job("a"))));
        assert!(went(lines.offer("fwd_2", job("b"))));
    }

    #[test]
    fn a_finished_attempt_hands_its_slot_to_the_next_in_line_in_order() {
        let lines = TargetLines::new(1);
        lines.offer("fwd_1", job("a"));
        lines.offer("fwd_1", job("b"));
        lines.offer("fwd_1", job("c"));
        let next = lines.finish("fwd_1", Some(Duration::from_millis(5)));
        assert_eq!(next.unwrap().delivery_id, "b");
        assert_eq!(lines.finish("fwd_1", None).unwrap().delivery_id, "c");
        assert!(lines.finish("fwd_1", None).is_none());
        assert!(went(lines.offer("fwd_1", job("d"))));
    }

    #[test]
    fn a_full_line_pushes_back_for_about_as_long_as_it_takes_to_drain() {
        let lines = TargetLines::new(1);
        lines.offer("fwd_1", job("first"));
        for i in 0..LINE_CAP {
            assert!(matches!(
                lines.offer("fwd_1", job(&i.to_string())),
                Offer::Queued
            ));
        }
        let Offer::PushBack(_, short) = lines.offer("fwd_1", job("x")) else {
            panic!("the line should be full");
        };
        assert_eq!(short, MIN_PUSH_BACK);
        // A target that takes 10 s per attempt: the line drains in hours, so the longest wait.
        let next = lines
            .finish("fwd_1", Some(Duration::from_secs(10)))
            .unwrap();
        lines.offer("fwd_1", next);
        let Offer::PushBack(_, long) = lines.offer("fwd_1", job("y")) else {
            panic!("the line should be full");
        };
        assert_eq!(long, MAX_PUSH_BACK);
    }
}
