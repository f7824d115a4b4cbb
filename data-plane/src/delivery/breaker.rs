//! A circuit breaker per target: after a run of failures the target is left alone for a while,
//! then one probe decides whether it is back. Due jobs for an open target are pushed to the probe
//! time without an attempt, so a dead target costs a reschedule and nothing else.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use foldhash::HashMap;

const OPEN_AFTER_FAILURES: u32 = 5;
const FIRST_COOLDOWN: Duration = Duration::from_secs(5);
const MAX_COOLDOWN: Duration = Duration::from_secs(60);
/// While a probe is out, others wait this long before asking again: long enough that a big
/// backlog is not shuffled every second, short enough that it follows soon after a good probe.
const PROBE_PENDING_WAIT: Duration = Duration::from_secs(5);
/// A probe that never reported (its worker died) stops blocking the target after this.
const PROBE_EXPIRY: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Make the attempt.
    Go,
    /// Do not attempt before this instant.
    NotBefore(Instant),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_sent: Instant },
}

#[derive(Debug, Clone, Copy)]
struct Breaker {
    state: State,
    cooldown: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: State::Closed { failures: 0 },
            cooldown: FIRST_COOLDOWN,
        }
    }
}

impl Breaker {
    fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            State::Closed { .. } => Admission::Go,
            State::Open { until } if now < until => Admission::NotBefore(until),
            State::Open { .. } => {
                self.state = State::HalfOpen { probe_sent: now };
                Admission::Go
            }
            State::HalfOpen { probe_sent } if now.duration_since(probe_sent) > PROBE_EXPIRY => {
                self.state = State::HalfOpen { probe_sent: now };
                Admission::Go
            }
            State::HalfOpen { .. } => Admission::NotBefore(now + PROBE_PENDING_WAIT),
        }
    }

    fn record(&mut self, healthy: bool, now: Instant) {
        if healthy {
            *self = Self::default();
            return;
        }
        match self.state {
            State::Closed { failures } if failures + 1 >= OPEN_AFTER_FAILURES => {
                self.state = State::Open {
                    until: now + self.cooldown,
                };
            }
            State::Closed { failures } => {
                self.state = State::Closed {
                    failures: failures + 1,
                };
            }
            // Attempts that started before the breaker opened change nothing.
            State::Open { .. } => {}
            State::HalfOpen { .. } => {
                self.cooldown = (self.cooldown * 2).min(MAX_COOLDOWN);
                self.state = State::Open {
                    until: now + self.cooldown,
                };
            }
        }
    }
}

/// The breakers of every target, keyed by target id.
#[derive(Debug, Default)]
pub struct Breakers {
    targets: Mutex<HashMap<String, Breaker>>,
}

impl Breakers {
    /// Whether `target` is resting now (open, or with a probe out): its jobs are best left in
    /// the queue. Changes nothing, unlike [`Breakers::admit`].
    pub fn resting(&self, target: &str, now: Instant) -> bool {
        let targets = self.lock();
        match targets.get(target).map(|b| b.state) {
            Some(State::Open { until }) => now < until,
            Some(State::HalfOpen { probe_sent }) => now.duration_since(probe_sent) <= PROBE_EXPIRY,
            Some(State::Closed { .. }) | None => false,
        }
    }

    pub fn admit(&self, target: &str, now: Instant) -> Admission {
        let mut targets = self.lock();
        match targets.get_mut(target) {
            Some(breaker) => breaker.admit(now),
            None => Admission::Go,
        }
    }

    /// `healthy`: the target answered in a way that shows it is up (a 2xx, or a 4xx that
    /// retrying would not change).
    pub fn record(&self, target: &str, healthy: bool, now: Instant) {
        let mut targets = self.lock();
        if healthy {
            // A healthy target needs no entry: keeps the map as small as the set of sick ones.
            targets.remove(target);
            return;
        }
        targets
            .entry(target.to_owned())
            .or_default()
            .record(false, now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Breaker>> {
        self.targets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail_times(b: &Breakers, n: u32, now: Instant) {
        for _ in 0..n {
            b.record("fwd_1", false, now);
        }
    }

    #[test]
    fn a_few_failures_keep_the_breaker_closed() {
        let b = Breakers::default();
        let now = Instant::now();
        fail_times(&b, OPEN_AFTER_FAILURES - 1, now);
        assert_eq!(b.admit("fwd_1", now), Admission::Go);
    }

    #[test]
    fn a_run_of_failures_opens_the_breaker_for_the_first_cooldown() {
        let b = Breakers::default();
        let now = Instant::now();
        fail_times(&b, OPEN_AFTER_FAILURES, now);
        assert_eq!(
            b.admit("fwd_1", now),
            Admission::NotBefore(now + FIRST_COOLDOWN)
        );
    }

    #[test]
    fn a_success_in_between_resets_the_count() {
        let b = Breakers::default();
        let now = Instant::now();
        fail_times(&b, OPEN_AFTER_FAILURES - 1, now);
        b.record("fwd_1", true, now);
        fail_times(&b, OPEN_AFTER_FAILURES - 1, now);
        assert_eq!(b.admit("fwd_1", now), Admission::Go);
    }

    #[test]
    fn after_the_cooldown_exactly_one_probe_goes() {
        let b = Breakers::default();
        let now = Instant::now();
        fail_times(&b, OPEN_AFTER_FAILURES, now);
        let later = now + FIRST_COOLDOWN;
        assert_eq!(b.admit("fwd_1", later), Admission::Go);
        assert_eq!(
            b.admit("fwd_1", later),
            Admission::NotBefore(later + PROBE_PENDING_WAIT)
        );
    }

    #[test]
    fn a_successful_probe_closes_the_breaker() {
        let b = Breakers::default();
        let now = Instant::now();
        fail_times(&b, OPEN_AFTER_FAILURES, now);
        let later = now + FIRST_COOLDOWN;
        b.admit("fwd_1", later);
        b.record("fwd_1", true, later);
        assert_eq!(b.admit("fwd_1", later), Admission::Go);
        assert_eq!(b.admit("fwd_1", later), Admission::Go);
    }

    #[test]
    fn a_failed_probe_reopens_with_a_doubled_cooldown_up_to_a_minute() {
        let b = Breakers::default();
        let mut now = Instant::now();
        fail_times(&b, OPEN_AFTER_FAILURES, now);
        let mut cooldown = FIRST_COOLDOWN;
        for _ in 0..6 {
            now += cooldown;
            assert_eq!(b.admit("fwd_1", now), Admission::Go);
            b.record("fwd_1", false, now);
            cooldown = (cooldown * 2).min(MAX_COOLDOWN);
            assert_eq!(b.admit("fwd_1", now), Admission::NotBefore(now + cooldown));
        }
        assert_eq!(cooldown, MAX_COOLDOWN);
    }

    #[test]
    fn a_lost_probe_stops_blocking_the_target() {
        let b = Breakers::default();
        let now = Instant::now();
        fail_times(&b, OPEN_AFTER_FAILURES, now);
        let probe = now + FIRST_COOLDOWN;
        b.admit("fwd_1", probe);
        let much_later = probe + PROBE_EXPIRY + Duration::from_secs(1);
        assert_eq!(b.admit("fwd_1", much_later), Admission::Go);
    }

    #[test]
    fn one_target_s_breaker_does_not_touch_another() {
        let b = Breakers::default();
        let now = Instant::now();
        fail_times(&b, OPEN_AFTER_FAILURES, now);
        assert_eq!(b.admit("fwd_2", now), Admission::Go);
    }
}
