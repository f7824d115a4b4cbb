//! The load generator: runs one [`Step`] of requests made by a `fire` function and measures
//! acknowledgements. Every loop is bounded by the step's window, an in-flight cap and a
//! per-request timeout.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use crate::plan::Step;

/// More in flight than this and the open loop skips (and counts) a scheduled request rather than
/// piling up sockets: the service is far past saturation by then anyway.
const MAX_IN_FLIGHT: usize = 2_048;
/// A request not answered within this counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Latencies are kept in microseconds up to a minute.
const HIGHEST_US: u64 = 60_000_000;

/// What one step measured.
pub struct Outcome {
    /// Requests answered with an acknowledgement (200).
    pub acked: u64,
    /// Requests answered otherwise, failed in transport, or timed out.
    pub failed: u64,
    /// Open loop only: scheduled requests not sent because too many were in flight.
    pub skipped: u64,
    /// From the first request to the last answer.
    pub elapsed: Duration,
    /// Acknowledgement latency in microseconds: from the scheduled start (open loop) or the
    /// actual start (closed loop) to the answer.
    pub latency: Histogram<u64>,
}

impl Outcome {
    pub fn acked_per_sec(&self) -> f64 {
        per_sec(self.acked, self.elapsed)
    }

    /// A latency quantile in milliseconds.
    pub fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }
}

pub fn per_sec(count: u64, over: Duration) -> f64 {
    let secs = over.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        count as f64 / secs
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("static histogram bounds are valid")
}

struct Tally {
    acked: u64,
    failed: u64,
    latency: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            acked: 0,
            failed: 0,
            latency: histogram(),
        }
    }

    fn record(&mut self, acked: bool, latency: Duration) {
        if acked {
            self.acked += 1;
            let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            self.latency.saturating_record(us.clamp(1, HIGHEST_US));
        } else {
            self.failed += 1;
        }
    }
}

/// Sends one request and says whether it was acknowledged.
pub type Fire = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// Wraps a closure as a [`Fire`].
pub fn fire<F, Fut>(f: F) -> Fire
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

/// Runs `step` for `window`.
pub async fn run(step: Step, window: Duration, fire: Fire) -> Outcome {
    match step {
        Step::Rate(rate) => open_loop(rate, window, fire).await,
        Step::Saturate(concurrency) => closed_loop(concurrency, window, fire).await,
    }
}

async fn fire_once(fire: &Fire) -> bool {
    tokio::time::timeout(REQUEST_TIMEOUT, fire())
        .await
        .unwrap_or(false)
}

async fn open_loop(rate: u64, window: Duration, fire: Fire) -> Outcome {
    let rate = rate.max(1);
    let total = (rate as f64 * window.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tally = Tally::new();
    let mut skipped = 0;
    let mut in_flight = JoinSet::new();
    let start = Instant::now();
    let mut scheduled = 0u64;
    while scheduled < total {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
        while scheduled < due {
            let intended = start + interval.mul_f64(scheduled as f64);
            scheduled += 1;
            if in_flight.len() >= MAX_IN_FLIGHT {
                skipped += 1;
                continue;
            }
            let fire = Arc::clone(&fire);
            in_flight.spawn(async move {
                let acked = fire_once(&fire).await;
                (acked, intended.elapsed())
            });
        }
        while let Some(done) = in_flight.try_join_next() {
            if let Ok((acked, latency)) = done {
                tally.record(acked, latency);
            }
        }
        // The timer's 1 ms grain: requests due within it start together, still on schedule.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    while let Some(done) = in_flight.join_next().await {
        if let Ok((acked, latency)) = done {
            tally.record(acked, latency);
        }
    }
    Outcome {
        acked: tally.acked,
        failed: tally.failed,
        skipped,
        elapsed: start.elapsed(),
        latency: tally.latency,
    }
}

async fn closed_loop(concurrency: usize, window: Duration, fire: Fire) -> Outcome {
    let start = Instant::now();
    let deadline = start + window;
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let fire = Arc::clone(&fire);
        workers.spawn(async move {
            let mut tally = Tally::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let acked = fire_once(&fire).await;
                tally.record(acked, sent.elapsed());
            }
            tally
        });
    }
    let mut total = Tally::new();
    while let Some(done) = workers.join_next().await {
        if let Ok(tally) = done {
            total.acked += tally.acked;
            total.failed += tally.failed;
            let _ = total.latency.add(&tally.latency);
        }
    }
    Outcome {
        acked: total.acked,
        failed: total.failed,
        skipped: 0,
        elapsed: start.elapsed(),
        latency: total.latency,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    fn counting(calls: &Arc<AtomicU64>, acked: bool) -> Fire {
        let calls = Arc::clone(calls);
        fire(move || {
            calls.fetch_add(1, Ordering::Relaxed);
            async move { acked }
        })
    }

    #[tokio::test]
    async fn an_open_loop_step_sends_its_rate_for_its_window() {
        let calls = Arc::new(AtomicU64::new(0));
        let outcome = run(
            Step::Rate(200),
            Duration::from_millis(500),
            counting(&calls, true),
        )
        .await;
        assert_eq!(calls.load(Ordering::Relaxed), 100);
        assert_eq!(outcome.acked, 100);
        assert_eq!(outcome.skipped, 0);
    }

    #[tokio::test]
    async fn answers_other_than_an_acknowledgement_count_as_failed_and_not_in_latency() {
        let calls = Arc::new(AtomicU64::new(0));
        let outcome = run(
            Step::Rate(100),
            Duration::from_millis(200),
            counting(&calls, false),
        )
        .await;
        assert_eq!(outcome.failed, 20);
        assert_eq!(outcome.acked, 0);
        assert_eq!(outcome.latency.len(), 0);
    }

    #[tokio::test]
    async fn open_loop_latency_counts_from_the_scheduled_start() {
        // Each request takes 20 ms; on schedule nothing waits, so the latency is about that.
        let slow = fire(|| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            true
        });
        let outcome = run(Step::Rate(100), Duration::from_millis(200), slow).await;
        assert!(outcome.ms(0.5) >= 20.0, "{}", outcome.ms(0.5));
    }

    #[tokio::test]
    async fn a_closed_loop_step_keeps_sending_until_its_window_ends() {
        let calls = Arc::new(AtomicU64::new(0));
        let outcome = run(
            Step::Saturate(4),
            Duration::from_millis(100),
            counting(&calls, true),
        )
        .await;
        assert!(outcome.acked > 4);
        assert_eq!(outcome.acked, calls.load(Ordering::Relaxed));
        assert!(outcome.elapsed >= Duration::from_millis(100));
    }
}
