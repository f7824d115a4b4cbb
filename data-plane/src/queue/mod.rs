//! Work in flight: deliveries waiting for their (next) attempt.
//!
//! The [`Queue`] trait is shaped like a broker with acknowledgements so a replicated backend
//! (NATS JetStream: publish + ack, pull fetch with an ack wait, ack, nak with delay, term) can
//! stand in for the node-local [`spool::Spool`] without the engine noticing.

mod bodies;
pub mod budget;
#[cfg(test)]
mod contract;
mod hashed_key;
pub mod jetstream;
mod job;
mod journal;
mod key_index;
mod spill;
pub mod spool;

use std::{
    any::Any,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;

pub use budget::SpoolUsage;
pub use job::{ForwardingSetRef, Header, Job, Leg, delivery_id};
pub(crate) use journal::private_dir;

use crate::Error;

/// How many jobs of a lane a lease may hand out now.
///
/// What a backend promises about it: a lease hands out at most `room(lane)` jobs of a lane,
/// asks at most once per lane per call, and leaves the rest of that lane where it was, in order,
/// without counting it as an attempt. Whether "where it was" costs anything depends on the
/// backend: the spool skips such a lane in one step; JetStream hands a fetched job of it back
/// with a delay (`queue/jetstream`), so a lane that stays full costs a redelivery per job per
/// delay, never a lease of another lane.
pub type Room<'a> = dyn Fn(&str) -> usize + Send + Sync + 'a;

/// Room for any number of jobs in every lane.
pub fn unlimited(_lane: &str) -> usize {
    usize::MAX
}

/// What a backend needs to settle a job it handed out besides the job's delivery id: nothing
/// for the spool (its mark), JetStream's message (its acknowledgement subject). Opaque to
/// everyone else, and handed back by value so no backend has to remember its leases by id.
pub struct Receipt(Box<dyn Any + Send + Sync>);

impl Receipt {
    pub(crate) fn new<T: Any + Send + Sync>(inner: T) -> Self {
        Self(Box::new(inner))
    }

    /// The backend's own receipt; a receipt of another backend is a programming error, reported
    /// rather than panicking a delivery thread.
    pub(crate) fn open<T: Any + Send + Sync>(self) -> Result<T, Error> {
        self.0.downcast::<T>().map(|b| *b).map_err(|_| {
            Error::InvalidSetting("a lease receipt was settled on another queue backend".into())
        })
    }
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Receipt(..)")
    }
}

/// A job handed out by [`Queue::lease`], with what settles it.
#[derive(Debug)]
pub struct Leased {
    pub job: Job,
    pub receipt: Receipt,
}

/// A durable, at-least-once queue of delivery jobs with delayed redelivery. Two backends: the
/// node-local [`spool::Spool`] and the shared [`jetstream::JetStreamQueue`]; the composition root
/// (`lib.rs`) picks one. `queue/contract.rs` states what the engine relies on and runs against
/// both.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Stores the jobs durably (synced to disk, or acknowledged by the replicated stream) before
    /// returning; an error means some may not be stored and the caller must not acknowledge them.
    /// The spool refuses new jobs of a tenant over its share, or when it is at its cap, with
    /// [`Error::SpoolFull`] and nothing stored (queue/budget.rs).
    /// A job whose delivery id is already held (spool) or was enqueued within the dedupe window
    /// (JetStream) is not added twice.
    async fn enqueue(&self, jobs: Vec<Job>) -> Result<(), Error>;
    /// Up to `max` due jobs, each leased: invisible to other callers until it is settled (ack,
    /// retry, defer, fail) or until the lease runs out, when it is handed out again. `room` says
    /// how many jobs of a lane (see [`Job::lane`]) the caller can take now (see [`Room`]). Waits
    /// up to `wait` for a job to come due; the caller stops waiting (drops the future) when room
    /// frees up.
    async fn lease(
        &self,
        max: usize,
        wait: Duration,
        room: &Room<'_>,
    ) -> Result<Vec<Leased>, Error>;
    /// The job is done; forget it. Goes by the receipt and the job's delivery id alone: the
    /// engine's attempt record has taken the job's other strings by then.
    async fn ack(&self, leased: Leased) -> Result<(), Error>;
    /// An attempt failed; record `attempts` and hand the job out again at `not_before`.
    async fn retry(
        &self,
        leased: Leased,
        attempts: u32,
        not_before: SystemTime,
    ) -> Result<(), Error>;
    /// Hand the job out again at `not_before` without an attempt having been made.
    async fn defer(&self, leased: Leased, not_before: SystemTime) -> Result<(), Error>;
    /// The job failed for good after `attempts`: park it (bounded) so an admin can still retry
    /// it, from any node.
    async fn fail(&self, leased: Leased, attempts: u32, reason: &str) -> Result<(), Error>;
    /// Makes a parked job due now with a fresh budget. False when no such failed job is held.
    async fn requeue_failed(&self, delivery_id: &str) -> Result<bool, Error>;
    /// Drops every job of `tenant_id` first enqueued at or before `before`, queued or parked,
    /// with its body (PurgeTenantData); a job leased now may still make the attempt under way.
    /// Safe to call again with the same arguments.
    async fn purge_tenant(&self, tenant_id: &str, before: SystemTime) -> Result<Purged, Error>;
    /// Jobs waiting or in flight (parked failures not counted).
    async fn depth(&self) -> Result<u64, Error>;
    /// How the backend's own storage fares (the spool's disk); a broker says nothing here.
    fn storage(&self) -> Storage {
        Storage::default()
    }
    /// What the queue holds on this node's disk, per tenant, for `/metrics`; `None` where the
    /// node holds nothing of its own (JetStream).
    fn usage(&self) -> Option<SpoolUsage> {
        None
    }
    /// Whether the engine should hand its acks to the task that leases, which applies them
    /// between leases. True where an ack is bookkeeping in this process (the spool): its maps
    /// then stay with one thread, and the two delivery threads stop fighting over its lock.
    /// False where an ack is a round trip (JetStream), which would hold the next lease up.
    fn acks_between_leases(&self) -> bool {
        false
    }
}

/// What a purge dropped on this node (JetStream: what it could count, see
/// `jetstream::JetStreamQueue::purge_tenant`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub queued: u64,
    pub parked: u64,
}

/// The state of a queue's own storage, for readiness and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Storage {
    /// Why new work cannot be stored now, while that lasts.
    pub failure: Option<String>,
    /// Writes and syncs that failed since start.
    pub failures: u64,
    /// Spool segments abandoned after a failed sync since start.
    pub abandoned: u64,
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A due time `t` in Unix milliseconds, rounded up, so that a job kept in milliseconds is never
/// handed out before `t`. Rounded down, as [`unix_ms`] does, a job deferred or retried to `t`
/// could come back up to a millisecond early (the spool's contract test caught it once).
pub(crate) fn unix_ms_not_before(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_due_time_in_milliseconds_is_never_before_the_time_asked_for() {
        let at = |nanos: u64| UNIX_EPOCH + Duration::from_nanos(nanos);
        assert_eq!(unix_ms_not_before(at(1_000_000_001)), 1_001);
        assert_eq!(unix_ms_not_before(at(1_999_999_999)), 2_000);
        assert_eq!(unix_ms_not_before(at(2_000_000_000)), 2_000);
        assert_eq!(unix_ms(at(1_999_999_999)), 1_999);
        assert_eq!(unix_ms_not_before(UNIX_EPOCH), 0);
    }
}
