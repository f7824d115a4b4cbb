//! When the next attempt happens, and when to stop trying: after the attempts or the age a
//! delivery gets, and before any attempt once its body is past `--payload-retention`.

use std::time::{Duration, SystemTime};

use crate::queue::Job;

/// Jitter spreads retries of a burst over ±20 % of the scheduled wait.
const JITTER: f64 = 0.2;
/// Longest Retry-After honoured; a larger one is capped so the delivery's age still decides.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    schedule: Vec<Duration>,
    max_attempts: u32,
    max_age: Duration,
    /// How long a job's body may be kept after its first enqueue; `None`: no bound here.
    payload_retention: Option<Duration>,
}

/// What follows a failed attempt that may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    RetryAt(SystemTime),
    /// Out of attempts or age.
    GiveUp,
}

impl RetryPolicy {
    pub fn new(schedule: Vec<Duration>, max_attempts: u32, max_age: Duration) -> Self {
        let schedule = if schedule.is_empty() {
            vec![Duration::from_secs(1)]
        } else {
            schedule
        };
        Self {
            schedule,
            max_attempts: max_attempts.max(1),
            max_age,
            payload_retention: None,
        }
    }

    /// Jobs first enqueued longer than `retention` ago fail for good before their next attempt.
    pub fn with_payload_retention(mut self, retention: Duration) -> Self {
        self.payload_retention = Some(retention);
        self
    }

    /// Why `job` must fail for good now without an attempt, if so: its body has been kept as
    /// long as `--payload-retention` allows (counted from its first enqueue, or a manual retry).
    pub fn past_retention(&self, job: &Job, now: SystemTime) -> Option<String> {
        let retention = self.payload_retention?;
        // A job that never said when it was enqueued is not taken for one from 1970.
        let known = job.first_enqueued_ms > 0;
        (known && now > job.budget_began() + retention).then(|| {
            format!(
                "payload retention ({}) passed: dropped without an attempt",
                humantime::format_duration(retention)
            )
        })
    }

    /// The scheduled wait after the `attempt`-th failed attempt (1-based), before jitter.
    pub fn base_wait(&self, attempt: u32) -> Duration {
        let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        self.schedule[index.min(self.schedule.len() - 1)]
    }

    /// `base` scaled by a factor in [0.8, 1.2]; `unit` is a uniform draw from [0, 1].
    pub fn jittered(base: Duration, unit: f64) -> Duration {
        base.mul_f64(1.0 - JITTER + 2.0 * JITTER * unit.clamp(0.0, 1.0))
    }

    /// What to do after `job`'s attempt number `attempts` (already counted in) failed.
    pub fn next_step(
        &self,
        job: &Job,
        attempts: u32,
        retry_after: Option<Duration>,
        now: SystemTime,
        unit: f64,
    ) -> NextStep {
        let in_budget = attempts.saturating_sub(job.budget_start);
        if in_budget >= self.max_attempts {
            return NextStep::GiveUp;
        }
        let scheduled = Self::jittered(self.base_wait(in_budget), unit);
        let wait = match retry_after {
            Some(asked) => scheduled.max(asked.min(MAX_RETRY_AFTER)),
            None => scheduled,
        };
        let at = now + wait;
        if at > job.budget_began() + self.max_age {
            return NextStep::GiveUp;
        }
        NextStep::RetryAt(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_whose_body_is_past_the_payload_retention_fails_with_a_reason_naming_it() {
        let day = Duration::from_secs(24 * 3600);
        let policy =
            RetryPolicy::new(vec![Duration::from_secs(1)], 20, day).with_payload_retention(7 * day);
        let enqueued = SystemTime::UNIX_EPOCH + 1000 * day;
        let job = Job {
            first_enqueued_ms: crate::queue::unix_ms(enqueued),
            ..Job::default()
        };
        assert_eq!(policy.past_retention(&job, enqueued + 7 * day), None);
        let reason = policy
            .past_retention(&job, enqueued + 7 * day + Duration::from_secs(1))
            .unwrap();
        assert_eq!(
            reason,
            "payload retention (7days) passed: dropped without an attempt"
        );
        let unbounded = RetryPolicy::new(vec![Duration::from_secs(1)], 20, day);
        assert_eq!(unbounded.past_retention(&job, enqueued + 100 * day), None);
    }
    use crate::queue::unix_ms;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn policy() -> RetryPolicy {
        RetryPolicy::new(vec![secs(1), secs(2), secs(4)], 5, secs(3600))
    }

    fn job_started(at: SystemTime) -> Job {
        Job {
            first_enqueued_ms: unix_ms(at),
            ..Job::default()
        }
    }

    #[test]
    fn the_schedule_is_followed_and_its_last_step_repeats() {
        let p = policy();
        assert_eq!(p.base_wait(1), secs(1));
        assert_eq!(p.base_wait(2), secs(2));
        assert_eq!(p.base_wait(3), secs(4));
        assert_eq!(p.base_wait(9), secs(4));
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let base = secs(10);
        assert_eq!(
            RetryPolicy::jittered(base, 0.0),
            Duration::from_millis(8000)
        );
        assert_eq!(
            RetryPolicy::jittered(base, 1.0),
            Duration::from_millis(12000)
        );
        for i in 0..=100 {
            let d = RetryPolicy::jittered(base, f64::from(i) / 100.0);
            assert!(d >= secs(8) && d <= secs(12));
        }
    }

    #[test]
    fn a_failed_attempt_is_retried_after_the_jittered_wait() {
        let now = SystemTime::now();
        let step = policy().next_step(&job_started(now), 2, None, now, 0.5);
        assert_eq!(step, NextStep::RetryAt(now + secs(2)));
    }

    #[test]
    fn retry_after_pushes_the_next_attempt_later() {
        let now = SystemTime::now();
        let step = policy().next_step(&job_started(now), 1, Some(secs(30)), now, 0.5);
        assert_eq!(step, NextStep::RetryAt(now + secs(30)));
    }

    #[test]
    fn a_short_retry_after_does_not_hurry_the_schedule() {
        let now = SystemTime::now();
        let step = policy().next_step(&job_started(now), 3, Some(secs(1)), now, 0.5);
        assert_eq!(step, NextStep::RetryAt(now + secs(4)));
    }

    #[test]
    fn the_last_allowed_attempt_gives_up() {
        let now = SystemTime::now();
        let job = job_started(now);
        assert!(matches!(
            policy().next_step(&job, 4, None, now, 0.5),
            NextStep::RetryAt(_)
        ));
        assert_eq!(
            policy().next_step(&job, 5, None, now, 0.5),
            NextStep::GiveUp
        );
    }

    #[test]
    fn a_delivery_past_its_age_gives_up() {
        let started = SystemTime::now() - secs(3600);
        let step = policy().next_step(&job_started(started), 1, None, SystemTime::now(), 0.5);
        assert_eq!(step, NextStep::GiveUp);
    }

    #[test]
    fn a_manual_retry_grants_a_fresh_budget() {
        let now = SystemTime::now();
        let job = Job {
            budget_start: 5,
            ..job_started(now)
        };
        assert!(matches!(
            policy().next_step(&job, 6, None, now, 0.5),
            NextStep::RetryAt(_)
        ));
    }
}
