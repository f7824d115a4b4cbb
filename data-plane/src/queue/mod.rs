//! Work in flight: deliveries waiting for their (next) attempt.
//!
//! The [`Queue`] trait is shaped like a broker with acknowledgements so a replicated backend
//! (NATS JetStream: publish + ack, pull fetch with an ack wait, ack, nak with delay, term) can
//! stand in for the node-local [`spool::Spool`] without the engine noticing.

mod bodies;
mod hashed_key;
mod journal;
pub mod spool;

use std::{
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

    /// When the current budget began.
    pub fn budget_began(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.first_enqueued_ms)
    }
}

/// How many jobs of a lane a lease may hand out now.
pub type Room<'a> = dyn Fn(&str) -> usize + Send + Sync + 'a;

/// Room for any number of jobs in every lane.
pub fn unlimited(_lane: &str) -> usize {
    usize::MAX
}

/// A durable, at-least-once queue of delivery jobs with delayed redelivery.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Stores the jobs durably (on disk, or replicated) before returning. A job whose delivery id
    /// is already held is not added twice.
    async fn enqueue(&self, jobs: Vec<Job>) -> Result<(), Error>;
    /// Up to `max` due jobs, each leased: invisible to other callers until it is acked, retried,
    /// deferred or failed, or until the lease runs out. `room` says how many jobs of a lane (see
    /// [`Job::lane`]) the caller can take now; jobs of a lane without room stay where they are, in
    /// order, so a slow target's backlog neither blocks the others nor churns. Waits up to `wait`
    /// for a job to come due; the caller stops waiting (drops the future) when room frees up.
    async fn lease(&self, max: usize, wait: Duration, room: &Room<'_>) -> Result<Vec<Job>, Error>;
    /// The job is done; forget it.
    async fn ack(&self, delivery_id: &str) -> Result<(), Error>;
    /// An attempt failed; record `attempts` and hand the job out again at `not_before`.
    async fn retry(
        &self,
        delivery_id: &str,
        attempts: u32,
        not_before: SystemTime,
    ) -> Result<(), Error>;
    /// Hand the job out again at `not_before` without an attempt having been made.
    async fn defer(&self, job: Job, not_before: SystemTime) -> Result<(), Error>;
    /// The job failed for good after `attempts`: park it (bounded) so an admin can still retry
    /// it.
    async fn fail(&self, delivery_id: &str, attempts: u32, reason: &str) -> Result<(), Error>;
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
