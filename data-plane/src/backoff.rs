//! Reconnect pacing towards the control plane: exponential with full jitter, capped, so a fleet
//! of nodes does not reconnect in lockstep when the control plane comes back.

use std::time::Duration;

use rand::Rng;

const FIRST: Duration = Duration::from_millis(100);
const CAP: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Backoff {
    ceiling: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { ceiling: FIRST }
    }
}

impl Backoff {
    /// The next wait: random in [ceiling/2, ceiling], then the ceiling doubles up to the cap.
    pub fn next_wait(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(CAP);
        let half = ceiling / 2;
        half + half.mul_f64(rand::thread_rng().gen_range(0.0..=1.0))
    }

    pub fn reset(&mut self) {
        self.ceiling = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_and_stay_under_the_cap() {
        let mut backoff = Backoff::default();
        let waits: Vec<Duration> = (0..12).map(|_| backoff.next_wait()).collect();
        assert!(waits[0] <= FIRST);
        assert!(waits.iter().all(|w| *w <= CAP));
        assert!(waits[11] >= CAP / 2);
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::default();
        for _ in 0..10 {
            backoff.next_wait();
        }
        backoff.reset();
        assert!(backoff.next_wait() <= FIRST);
    }
}
