use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use hookplane_outbound::sender::Sender;
use hookplane_proto::v1::{AttemptOutcome, DeliveryAttempt};
use rand::Rng;
use tokio::{
    sync::{Notify, Semaphore, watch},
    task::JoinSet,
};
use tracing::{Instrument, Span, debug, field::Empty, info, warn};

use super::{
    breaker::{Admission, Breakers},
    retry::{NextStep, RetryPolicy},
    slots::{Slot, TargetSlots},
    target::Target,
};
use crate::{
    attempt::{AttemptFailure, AttemptResult},
    config::ConfigStore,
    connectors::Connectors,
    metrics::Metrics,
    outcomes::Outcomes,
    queue::{Job, Leased, Queue},
};

/// Attempts in flight on the whole node. Attempts are cheap tasks; the per-target cap is what
/// keeps a hanging target from hoarding them, this only bounds memory.
const WORKERS: usize = 1024;
const LEASE_BATCH: usize = 128;
const LEASE_WAIT: Duration = Duration::from_millis(500);
/// How long in-flight attempts may finish after shutdown is asked; the rest come back from the
/// spool at the next start.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

pub struct EngineSettings {
    pub node_id: String,
    pub policy: RetryPolicy,
    pub target_concurrency: usize,
    /// Where connectors push to LINE (`--line-api-base-url`).
    pub line_api_base_url: String,
}

pub struct Engine {
    queue: Arc<dyn Queue>,
    config: Arc<ConfigStore>,
    sender: Sender,
    connectors: Connectors,
    outcomes: Arc<dyn Outcomes>,
    metrics: Arc<Metrics>,
    node_id: String,
    policy: RetryPolicy,
    breakers: Breakers,
    slots: Arc<TargetSlots>,
    workers: Arc<Semaphore>,
    /// Acks for the leasing task to apply, where the queue wants them so
    /// ([`Queue::acks_between_leases`]); `None` where each attempt settles its own.
    acks: Option<Mutex<Vec<Leased>>>,
    /// Wakes the leasing task when an ack is handed to it while it waits.
    ack_handed: Notify,
}

impl Engine {
    pub fn new(
        settings: EngineSettings,
        queue: Arc<dyn Queue>,
        config: Arc<ConfigStore>,
        sender: Sender,
        outcomes: Arc<dyn Outcomes>,
        metrics: Arc<Metrics>,
    ) -> Self {
        // Connectors call Genesys and LINE through the same guarded sender as any brand URL.
        let connectors = Connectors::new(Arc::new(sender.clone()), settings.line_api_base_url);
        let acks = queue.acks_between_leases().then(Mutex::default);
        Self {
            queue,
            config,
            sender,
            connectors,
            outcomes,
            metrics,
            node_id: settings.node_id,
            policy: settings.policy,
            breakers: Breakers::default(),
            slots: TargetSlots::new(settings.target_concurrency),
            workers: Arc::new(Semaphore::new(WORKERS)),
            acks,
            ack_handed: Notify::new(),
        }
    }

    /// Leases due jobs and starts their attempts until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        // Targets are known only from the config: spooled jobs wait for the first snapshot.
        tokio::select! {
            () = self.config.wait_ready() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let mut in_flight = JoinSet::new();
        loop {
            while in_flight.try_join_next().is_some() {}
            self.apply_acks().await;
            let free = self.workers.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = in_flight.join_next() => continue,
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
            // Created before the lease looks at the slots, so a slot freed meanwhile still
            // wakes the wait below.
            let freed = self.slots.freed();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let now = Instant::now();
            let room = |lane: &str| {
                if self.breakers.resting(lane, now) {
                    0
                } else {
                    self.slots.room(lane)
                }
            };
            let leased = tokio::select! {
                r = self.queue.lease(free.min(LEASE_BATCH), LEASE_WAIT, &room) => r,
                () = &mut freed => continue,
                () = self.ack_handed.notified() => continue,
                _ = stop.wait_for(|s| *s) => break,
            };
            match leased {
                Ok(leases) => {
                    for leased in leases {
                        self.dispatch(leased, &mut in_flight).await;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "could not lease deliveries");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        let drained = async { while in_flight.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, drained).await;
        // The attempts that finished in the grace handed their acks over: applied, their jobs
        // are not made again after a restart.
        self.apply_acks().await;
    }

    /// Applies the acks handed over since the last time, on the leasing task.
    async fn apply_acks(&self) {
        let Some(acks) = &self.acks else { return };
        let acks = std::mem::take(&mut *acks.lock().unwrap_or_else(PoisonError::into_inner));
        for leased in acks {
            self.settle(leased, Settle::Ack).await;
        }
    }

    async fn dispatch(self: &Arc<Self>, leased: Leased, in_flight: &mut JoinSet<()>) {
        let Some((leased, target)) = self.admit(leased).await else {
            return;
        };
        // The lease took no more of this target than it had room for; a slot can only be
        // missing if the config moved the job to another target since.
        let Some(slot) = self.slots.try_take(target.id()) else {
            self.defer(leased, Duration::ZERO).await;
            return;
        };
        let Ok(worker) = Arc::clone(&self.workers).acquire_owned().await else {
            return;
        };
        let engine = Arc::clone(self);
        // Boxed: the task then holds a pointer, not the attempt's whole state machine, which
        // tokio otherwise copies when it stores the task, when the task finishes and when its
        // output is taken. Those copies were 2.7 % of a drain's samples (docs/BENCHMARKS.md,
        // change 35); boxed, it is one allocation and one copy.
        in_flight.spawn(Box::pin(async move {
            engine.attempt(leased, target, slot).await;
            drop(worker);
        }));
    }

    /// Resolves a job's target and settles the jobs that may not be attempted now: target
    /// deleted, switched off, or resting behind its breaker.
    async fn admit(&self, leased: Leased) -> Option<(Leased, Target)> {
        let snapshot = self.config.load();
        let Some(target) = Target::resolve(&snapshot, &leased.job, &self.connectors) else {
            // Deleted since it was queued (a forwarding set, a subscription): nobody is left to
            // deliver to, and nobody to report the attempt to either.
            info!(delivery_id = %leased.job.delivery_id, "target no longer configured; delivery dropped");
            self.settle(leased, Settle::Ack).await;
            return None;
        };
        let expired = self.policy.past_retention(&leased.job, SystemTime::now());
        if let Some(why) = expired.or_else(|| target.switched_off().map(str::to_owned)) {
            let attempt = attempt_record(&self.node_id, &leased.job, &target, SystemTime::now());
            let failure = AttemptFailure {
                reason: why,
                retryable: false,
            };
            self.conclude_failure(leased, attempt, failure, None, Duration::ZERO)
                .await;
            return None;
        }
        let now = Instant::now();
        if let Admission::NotBefore(at) = self.breakers.admit(target.id(), now) {
            self.defer(leased, at.saturating_duration_since(now)).await;
            return None;
        }
        Some((leased, target))
    }

    /// Pushes a job back without an attempt, spread a little so a crowd does not return at once.
    async fn defer(&self, leased: Leased, wait: Duration) {
        let spread = Duration::from_millis(rand::thread_rng().gen_range(0..500));
        self.metrics.deferred();
        let id = leased.job.delivery_id.clone();
        if let Err(e) = self
            .queue
            .defer(leased, SystemTime::now() + wait + spread)
            .await
        {
            warn!(delivery_id = %id, error = %e, "could not defer a delivery");
        }
    }

    /// Makes one attempt and settles the job by its result. The target's slot goes back as soon
    /// as its request is answered: the cap is on requests at the target, and keeping the attempt
    /// record and settling the job (a round trip to the stream with JetStream) need not hold the
    /// next request back.
    async fn attempt(&self, leased: Leased, target: Target, slot: Slot) {
        let span = attempt_span(&leased.job, &target);
        self.attempt_in_span(leased, target, slot)
            .instrument(span)
            .await;
    }

    /// [`Engine::attempt`] inside the attempt's span (which its request's `traceparent` names).
    async fn attempt_in_span(&self, mut leased: Leased, target: Target, slot: Slot) {
        let number = leased.job.attempts + 1;
        let at = SystemTime::now();
        let started = Instant::now();
        let result = target
            .attempt(&leased.job, number, at, &self.sender, &self.connectors)
            .await;
        drop(slot);
        let latency = started.elapsed();
        if let Some(unwell) = result.target_is_unwell() {
            self.breakers.record(target.id(), !unwell, Instant::now());
        }
        let AttemptResult {
            http_status,
            response_body,
            failure,
            retry_after,
        } = result;
        match failure {
            None => {
                // Acked next, by its delivery id alone: the record takes the rest of the job
                // rather than copies of it.
                let mut record = attempt_record_taking(&self.node_id, &mut leased.job, &target, at);
                record.http_status = i32::from(http_status);
                record.response_body = response_body;
                self.finish(
                    leased,
                    record,
                    AttemptOutcome::Succeeded,
                    Settle::Ack,
                    latency,
                )
                .await;
            }
            Some(failure) => {
                let mut record = attempt_record(&self.node_id, &leased.job, &target, at);
                record.http_status = i32::from(http_status);
                record.response_body = response_body;
                self.conclude_failure(leased, record, failure, retry_after, latency)
                    .await;
            }
        }
    }

    async fn conclude_failure(
        &self,
        leased: Leased,
        mut record: DeliveryAttempt,
        failure: AttemptFailure,
        retry_after: Option<Duration>,
        latency: Duration,
    ) {
        let job = &leased.job;
        let number = job.attempts + 1;
        let step = if failure.retryable {
            let unit = rand::thread_rng().gen_range(0.0..=1.0);
            self.policy
                .next_step(job, number, retry_after, SystemTime::now(), unit)
        } else {
            NextStep::GiveUp
        };
        record.reason = failure.reason;
        let (outcome, settle) = match step {
            NextStep::RetryAt(at) => (AttemptOutcome::Retrying, Settle::Retry(number, at)),
            NextStep::GiveUp => (
                AttemptOutcome::Failed,
                Settle::Fail(number, record.reason.clone()),
            ),
        };
        debug!(
            delivery_id = %job.delivery_id,
            forwarding_set_id = %job.forwarding_set_id,
            subscription_id = %job.subscription_id,
            attempt = number,
            reason = %record.reason,
            outcome = outcome.as_str_name(),
            "delivery attempt failed"
        );
        self.finish(leased, record, outcome, settle, latency).await;
    }

    /// Keeps the attempt's record for the control plane, then settles the job (or hands its ack
    /// to the leasing task): with a shared queue, the record is stored before the job is, so a
    /// node lost in between leaves the job to be attempted again rather than an attempt nobody
    /// hears of.
    async fn finish(
        &self,
        leased: Leased,
        mut record: DeliveryAttempt,
        outcome: AttemptOutcome,
        settle: Settle,
        latency: Duration,
    ) {
        record.outcome = outcome.into();
        record.latency = prost_types::Duration::try_from(latency).ok();
        record_on_attempt_span(&record, outcome);
        self.outcomes.record(record).await;
        match (settle, &self.acks) {
            (Settle::Ack, Some(acks)) => {
                acks.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(leased);
                self.ack_handed.notify_one();
            }
            (settle, _) => self.settle(leased, settle).await,
        }
        self.metrics.attempt(outcome_label(outcome), latency);
    }

    async fn settle(&self, leased: Leased, settle: Settle) {
        let id = leased.job.delivery_id.clone();
        let result = match settle {
            Settle::Ack => self.queue.ack(leased).await,
            Settle::Retry(attempts, at) => self.queue.retry(leased, attempts, at).await,
            Settle::Fail(attempts, reason) => self.queue.fail(leased, attempts, &reason).await,
        };
        if let Err(e) = result {
            // The lease runs out and the job comes back: a duplicate at worst.
            warn!(delivery_id = %id, error = %e, "could not settle a delivery in the queue");
        }
    }
}

/// The record of an attempt of `job` made at `at` by node `node_id`.
fn attempt_record(node_id: &str, job: &Job, target: &Target, at: SystemTime) -> DeliveryAttempt {
    DeliveryAttempt {
        id: attempt_id(),
        delivery_id: job.delivery_id.clone(),
        event_id: job.event_id.clone(),
        forwarding_set_id: job.forwarding_set_id.clone(),
        subscription_id: job.subscription_id.clone(),
        tenant_id: job.tenant_id.clone(),
        attempt_number: job.attempts + 1,
        time: Some(at.into()),
        node_id: node_id.to_owned(),
        url: target.url().to_owned(),
        channel_id: job.channel_id.clone(),
        ..DeliveryAttempt::default()
    }
}

/// [`attempt_record`] for a job that is only acked after it: the record takes the job's
/// strings, leaving its delivery id, which the ack goes by ([`Queue::ack`]). Copies of the four
/// a forward holds, and their frees, were four of the drain's allocations a delivery
/// (docs/BENCHMARKS.md, change 37).
fn attempt_record_taking(
    node_id: &str,
    job: &mut Job,
    target: &Target,
    at: SystemTime,
) -> DeliveryAttempt {
    DeliveryAttempt {
        id: attempt_id(),
        delivery_id: job.delivery_id.clone(),
        event_id: std::mem::take(&mut job.event_id),
        forwarding_set_id: std::mem::take(&mut job.forwarding_set_id),
        subscription_id: std::mem::take(&mut job.subscription_id),
        tenant_id: std::mem::take(&mut job.tenant_id),
        attempt_number: job.attempts + 1,
        time: Some(at.into()),
        node_id: node_id.to_owned(),
        url: target.url().to_owned(),
        channel_id: std::mem::take(&mut job.channel_id),
        ..DeliveryAttempt::default()
    }
}

/// A new attempt id: `att_` and a lowercase ULID, made in one allocation (one per attempt;
/// `format!` over `to_string().to_lowercase()` made three).
fn attempt_id() -> String {
    let mut buf = [0; ulid::ULID_LEN];
    let ulid = ulid::Ulid::new().array_to_str(&mut buf);
    ulid.make_ascii_lowercase();
    let mut id = String::with_capacity("att_".len() + ulid::ULID_LEN);
    id.push_str("att_");
    id.push_str(ulid);
    id
}

/// The span of one attempt of `job`, a child of the enqueue that queued it (the `traceparent` the
/// job keeps), not of the engine's task: the request was answered long ago, maybe on another
/// node. Made only while traces are exported.
fn attempt_span(job: &Job, target: &Target) -> Span {
    let span = tracing::debug_span!(
        target: hookplane_trace_context::TARGET,
        parent: None,
        "delivery attempt",
        otel.kind = "client",
        otel.status_code = Empty,
        target = target.id(),
        url = %hookplane_outbound::masked_url(target.url()),
        attempt = job.attempts + 1,
        delivery_id = %job.delivery_id,
        event_id = %job.event_id,
        status = Empty,
        reason = Empty,
        outcome = Empty,
    );
    if let Some(traceparent) = &job.traceparent {
        hookplane_trace_context::continue_traceparent(&span, traceparent);
    }
    span
}

/// How the attempt ended, on its span when it is in one.
fn record_on_attempt_span(record: &DeliveryAttempt, outcome: AttemptOutcome) {
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    span.record("status", record.http_status);
    span.record("outcome", outcome_label(outcome));
    if !record.reason.is_empty() {
        span.record("reason", record.reason.as_str());
        span.record("otel.status_code", "ERROR");
    }
}

enum Settle {
    Ack,
    Retry(u32, SystemTime),
    Fail(u32, String),
}

fn outcome_label(outcome: AttemptOutcome) -> &'static str {
    match outcome {
        AttemptOutcome::Succeeded => "succeeded",
        AttemptOutcome::Retrying => "retrying",
        AttemptOutcome::Failed | AttemptOutcome::Unspecified => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_that_takes_the_jobs_strings_reads_as_a_copied_one_and_leaves_the_delivery_id() {
        let mut job = Job {
            delivery_id: "dlv_1".into(),
            event_id: "evt_1".into(),
            forwarding_set_id: "fwd_1".into(),
            channel_id: "chn_1".into(),
            tenant_id: "tnt_1".into(),
            attempts: 2,
            ..Job::default()
        };
        let target = Target::Forward(Arc::new(hookplane_proto::v1::NodeForwardingSet {
            id: "fwd_1".into(),
            url: "https://crm.brand.example/line".into(),
            ..Default::default()
        }));
        let at = SystemTime::now();
        let copied = attempt_record("node-1", &job, &target, at);
        let taken = attempt_record_taking("node-1", &mut job, &target, at);
        assert_eq!(copied.attempt_number, 3);
        assert_eq!(copied.url, "https://crm.brand.example/line");
        assert_eq!(
            DeliveryAttempt {
                id: String::new(),
                ..taken
            },
            DeliveryAttempt {
                id: String::new(),
                ..copied
            }
        );
        assert_eq!(job.delivery_id, "dlv_1", "the ack goes by it");
    }

    #[test]
    fn an_attempt_id_is_att_and_a_lowercase_ulid_and_no_two_are_alike() {
        let id = attempt_id();
        let ulid = id.strip_prefix("att_").expect("the att_ prefix");
        assert_eq!(ulid.len(), ulid::ULID_LEN);
        assert!(
            ulid.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()),
            "{id}"
        );
        assert!(ulid::Ulid::from_string(ulid).is_ok(), "{id}");
        assert_ne!(attempt_id(), attempt_id());
    }
}
