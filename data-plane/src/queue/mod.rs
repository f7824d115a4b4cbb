//! Work in flight: deliveries waiting for their (next) attempt.
//!
//! The [`Queue`] trait is shaped like a broker with acknowledgements so a replicated backend
//! (NATS JetStream: publish + ack, pull fetch with an ack wait, ack, nak with delay, term) can
//! stand in for the node-local [`spool::Spool`] without the engine noticing.

mod bodies;
#[cfg(test)]
mod contract;
mod hashed_key;
pub mod jetstream;
mod journal;
pub mod spool;

use std::{
    any::Any,
    borrow::Cow,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use bytes::Bytes;

use crate::Error;

/// One delivery of one event to one target, as it waits in the queue.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Job {
    /// `dlv_...`, stable per (event, target) so a duplicate after a crash shares it.
    #[prost(string, tag = "1")]
    pub delivery_id: String,
    /// `evt_...`, sent as x-hookplane-event-id.
    #[prost(string, tag = "2")]
    pub event_id: String,
    /// Set for a LINE forward.
    #[prost(string, tag = "3")]
    pub forwarding_set_id: String,
    /// Set for an outgoing event webhook.
    #[prost(string, tag = "4")]
    pub subscription_id: String,
    #[prost(string, tag = "5")]
    pub channel_id: String,
    #[prost(string, tag = "6")]
    pub tenant_id: String,
    /// The exact bytes to send.
    #[prost(bytes = "bytes", tag = "7")]
    pub body: Bytes,
    /// Headers replayed verbatim (x-line-signature, content-type).
    #[prost(message, repeated, tag = "8")]
    pub headers: Vec<Header>,
    /// Attempts made so far.
    #[prost(uint32, tag = "9")]
    pub attempts: u32,
    /// Unix milliseconds when the current attempt budget began (first enqueue, or a manual retry).
    #[prost(uint64, tag = "10")]
    pub first_enqueued_ms: u64,
    /// `attempts` when the current budget began: a manual retry grants a fresh budget while the
    /// attempt numbers keep counting up.
    #[prost(uint32, tag = "11")]
    pub budget_start: u32,
    /// Which call a forwarding set's job makes: the raw forward, or one of a connector's.
    #[prost(enumeration = "Leg", tag = "12")]
    pub leg: i32,
}

/// The calls a forwarding set's jobs make. Jobs spooled before connectors existed decode as
/// `Forward`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Leg {
    /// The identical LINE request to the set's URL.
    Forward = 0,
    /// One LINE message, translated, to Genesys Open Messaging (`body` is the inbound message).
    GenesysInbound = 1,
    /// One agent message to the LINE push API (`body` is the push request).
    LinePush = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Header {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

impl Job {
    /// The target it goes to, as its breaker and concurrency cap know it: the forwarding set (a
    /// connector's agent replies to LINE apart, so Genesys in trouble cannot hold them back), or
    /// the subscription.
    pub fn lane(&self) -> Cow<'_, str> {
        if self.forwarding_set_id.is_empty() {
            return Cow::Borrowed(&self.subscription_id);
        }
        match self.leg() {
            Leg::LinePush => Cow::Owned(format!("{}#line-push", self.forwarding_set_id)),
            Leg::Forward | Leg::GenesysInbound => Cow::Borrowed(&self.forwarding_set_id),
        }
    }

    /// Attempts made within the current budget.
    pub fn attempts_in_budget(&self) -> u32 {
        self.attempts.saturating_sub(self.budget_start)
    }

    /// A manual retry: the attempts from now on count against a fresh budget that begins at
    /// `now_ms`, while attempt numbers keep counting up.
    pub fn grant_fresh_budget(&mut self, now_ms: u64) {
        self.budget_start = self.attempts;
        self.first_enqueued_ms = now_ms;
    }

    /// When the current budget began.
    pub fn budget_began(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.first_enqueued_ms)
    }
}

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

/// What a backend needs to settle a job it handed out: the spool's delivery id, JetStream's
/// message (its acknowledgement subject). Opaque to everyone else, and handed back by value so
/// no backend has to remember its leases by id.
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
    /// The job is done; forget it.
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
    /// Jobs waiting or in flight (parked failures not counted).
    async fn depth(&self) -> Result<u64, Error>;
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
