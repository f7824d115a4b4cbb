//! The shared queue: jobs in a replicated NATS JetStream stream that every node publishes to and
//! takes from, so any node delivers any job and a node lost for good loses nothing.
//!
//! How each promise of [`Queue`] maps onto JetStream (names in `nats.rs`):
//! - enqueue: one publish per job on `<prefix>.jobs.<lane>` with the delivery id as
//!   `Nats-Msg-Id`; returns once the stream has acknowledged every one. The stream drops a
//!   delivery id it saw within its duplicate window, whichever node publishes it.
//! - lease: a fetch from one durable pull consumer shared by all nodes; the lease is the
//!   consumer's ack wait, and a job not settled in it is handed out again (to any node).
//! - ack / fail: the message is acknowledged (the stream is a work queue: it is gone). A failed
//!   job is first written to the `<prefix>_parked` bucket, keyed by its delivery id, so
//!   RetryDelivery works on whichever node the request reaches.
//! - retry: the job with its new attempt count is published again, carrying the time it is due
//!   in a header, then the old message is acknowledged. A message handed out before its time is
//!   NAKed with the delay left: the wait is JetStream's redelivery timer, never a sleeping task.
//! - defer: NAK with a delay.
//! - a lane without room: its job is held on the node (up to [`HOLD_PER_LANE`] a lane,
//!   [`HOLD_MAX`] in all) and handed out by the next lease that finds room, as the spool's lanes
//!   wait; beyond that it goes back with a NAK delay that grows with each time it found no room,
//!   up to [`MAX_ROOM_WAIT`]. A lane that stays full costs one redelivery per job per delay,
//!   never a wait for the other lanes.
//!
//! The receipt is the message's acknowledgement handle: nothing is kept per lease.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, SystemTime},
};

use async_nats::{
    HeaderMap,
    jetstream::{AckKind, message::Acker},
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;
use prost::Message as _;
use rand::Rng as _;
use tokio::sync::mpsc;
use tracing::warn;

use super::{Job, Leased, Queue, Receipt, Room, unix_ms};
use crate::{
    Error,
    nats::{Nats, PUBLISH_TIMEOUT},
};

/// The pause before a publish that was not acknowledged is sent again.
const PUBLISH_PAUSE: Duration = Duration::from_millis(50);

/// Header of a message whose job is not to be attempted before this unix ms.
const NOT_BEFORE: &str = "Hookplane-Not-Before";
/// The longest a job of a lane without room waits before it is offered again: a lane that
/// stays full (a dead target behind its breaker) costs one redelivery per job per this, so a
/// backlog of a million costs a few thousand a second, not the stream's whole capacity.
const MAX_ROOM_WAIT: Duration = Duration::from_secs(300);
/// The first wait of a job of a lane without room; it doubles with each time it found none.
const FIRST_ROOM_WAIT: Duration = Duration::from_millis(250);

/// A failed job as the parked bucket keeps it.
#[derive(Clone, PartialEq, prost::Message)]
struct Parked {
    #[prost(message, optional, tag = "1")]
    job: Option<Job>,
    #[prost(uint64, tag = "2")]
    failed_ms: u64,
    #[prost(string, tag = "3")]
    reason: String,
}

pub struct JetStreamQueue {
    nats: Nats,
    holding: tokio::sync::Mutex<Holding>,
    pump: tokio::task::JoinHandle<()>,
}

/// Messages a node holds in memory before any lease asks for them (their ack wait runs): a few
/// leases' worth, so a lease finds jobs at once without the node hoarding them from the others.
const PREFETCH: usize = 256;

/// Jobs held for a lane without room: past this many a lease stops taking from the pump, so a
/// busy lane's backlog waits in the stream rather than churning through the node.
const HOLD_PER_LANE: usize = 64;
/// Jobs held in all; past it a job without room goes back to the stream.
const HOLD_MAX: usize = 2048;
/// A lane whose oldest held job has waited this long is not draining (its target is dead,
/// hanging or resting behind its breaker): its further jobs go back to the stream.
const STUCK_AFTER: Duration = Duration::from_secs(2);

/// JetStream's receipt: the message's acknowledgement handle.
struct JetStreamReceipt(Acker);

/// What the node holds between leases: the messages the pump took, and jobs that came while
/// their lane had no room, per lane in arrival order.
struct Holding {
    incoming: mpsc::Receiver<Arrived>,
    lanes: HashMap<String, VecDeque<Held>>,
    held: usize,
}

struct Held {
    job: Job,
    acker: Acker,
    /// When the pump took it (its ack wait runs from about then).
    arrived: tokio::time::Instant,
    /// When it was first held for want of room.
    held_at: tokio::time::Instant,
}

/// A message as the pump took it, with when: its ack wait started then.
type Arrived = (tokio::time::Instant, async_nats::jetstream::Message);

impl Drop for JetStreamQueue {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl JetStreamQueue {
    /// Starts taking jobs from the shared consumer (on the current runtime).
    pub fn new(nats: Nats) -> Self {
        let (tx, rx) = mpsc::channel(PREFETCH);
        let pump = tokio::spawn(pump(nats.deliver.clone(), tx));
        Self {
            nats,
            holding: tokio::sync::Mutex::new(Holding {
                incoming: rx,
                lanes: HashMap::new(),
                held: 0,
            }),
            pump,
        }
    }

    /// Publishes each job with its message id, due at its unix ms (0: at once), and waits for
    /// the stream to acknowledge every one. A publish not acknowledged (a stream leader being
    /// elected after a server loss answers nothing for a moment) is sent again with the same
    /// message id, which the stream stores once, until [`PUBLISH_TIMEOUT`] has passed.
    async fn publish(&self, jobs: Vec<(Job, String, u64)>) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + PUBLISH_TIMEOUT;
        let mut pending: Vec<(String, HeaderMap, Bytes)> = jobs
            .into_iter()
            .map(|(job, msg_id, not_before_ms)| {
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Msg-Id", msg_id.as_str());
                if not_before_ms > 0 {
                    headers.insert(NOT_BEFORE, not_before_ms.to_string().as_str());
                }
                let subject = self.nats.names.job_subject(&job.lane());
                (subject, headers, Bytes::from(job.encode_to_vec()))
            })
            .collect();
        loop {
            let mut acks = Vec::with_capacity(pending.len());
            for (subject, headers, payload) in &pending {
                acks.push(
                    self.nats
                        .js
                        .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                        .await,
                );
            }
            let mut unstored = Vec::new();
            let mut why = String::new();
            for (outgoing, ack) in pending.into_iter().zip(acks) {
                let stored = match ack {
                    Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = stored {
                    why = e;
                    unstored.push(outgoing);
                }
            }
            if unstored.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() + PUBLISH_PAUSE >= deadline {
                return Err(Error::Queue(format!(
                    "the jobs stream did not store {} job(s): {why}",
                    unstored.len()
                )));
            }
            tokio::time::sleep(PUBLISH_PAUSE).await;
            pending = unstored;
        }
    }

    /// Hands jobs back to the stream with their delays, on a task of their own: a lease dropped
    /// halfway (the engine stops waiting when room frees up) must not lose a job's handle.
    fn nak_all(naks: Vec<(Acker, Duration)>) {
        if naks.is_empty() {
            return;
        }
        tokio::spawn(async move {
            for (acker, wait) in naks {
                if let Err(e) = acker.ack_with(AckKind::Nak(Some(wait))).await {
                    // The ack wait runs out and the job comes back all the same.
                    warn!(error = %e, "could not hand a job back to the stream");
                }
            }
        });
    }
}

/// Keeps up to [`PREFETCH`] messages of the shared consumer waiting for leases, pulling more as
/// they are taken; the consumer's pull requests, heartbeats and reconnects are async-nats's.
async fn pump(consumer: async_nats::jetstream::consumer::PullConsumer, tx: mpsc::Sender<Arrived>) {
    let mut failures = crate::backoff::Backoff::default();
    loop {
        let stream = consumer
            .stream()
            .max_messages_per_batch(PREFETCH)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await;
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot take jobs from NATS; trying again");
                tokio::time::sleep(failures.next_wait()).await;
                continue;
            }
        };
        while let Some(message) = stream.next().await {
            match message {
                Ok(message) => {
                    failures.reset();
                    if tx
                        .send((tokio::time::Instant::now(), message))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "taking jobs from NATS failed; trying again");
                    tokio::time::sleep(failures.next_wait()).await;
                    break;
                }
            }
        }
    }
}

/// When the message's job is due, from its header (0: at once).
fn not_before_ms(headers: Option<&HeaderMap>) -> u64 {
    headers
        .and_then(|h| h.get(NOT_BEFORE))
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(0)
}

/// How long a job that found its lane full for the `delivered`th time waits, spread so a crowd
/// does not come back at once.
fn room_wait(delivered: i64, unit: f64) -> Duration {
    let doublings = u32::try_from(delivered.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
    let wait = FIRST_ROOM_WAIT
        .saturating_mul(1 << doublings)
        .min(MAX_ROOM_WAIT);
    wait.mul_f64(0.5 + unit / 2.0)
}

#[async_trait]
impl Queue for JetStreamQueue {
    async fn enqueue(&self, jobs: Vec<Job>) -> Result<(), Error> {
        let jobs = jobs
            .into_iter()
            .map(|job| {
                let id = job.delivery_id.clone();
                (job, id, 0)
            })
            .collect();
        self.publish(jobs).await
    }

    async fn lease(
        &self,
        max: usize,
        wait: Duration,
        room: &Room<'_>,
    ) -> Result<Vec<Leased>, Error> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let give_up = tokio::time::Instant::now() + wait;
        let mut guard = self.holding.lock().await;
        let holding = &mut *guard;
        let mut left: HashMap<String, usize> = HashMap::new();
        let mut leased = Vec::new();
        let mut naks = Vec::new();
        let stale = self.nats.ack_wait / 2;
        // Jobs held for want of room first, oldest of each lane first.
        let lanes: Vec<String> = holding.lanes.keys().cloned().collect();
        for lane in lanes {
            let free = left.entry(lane.clone()).or_insert_with_key(|l| room(l));
            let Some(queue) = holding.lanes.get_mut(&lane) else {
                continue;
            };
            while *free > 0 && leased.len() < max {
                let Some(held) = queue.pop_front() else {
                    break;
                };
                holding.held -= 1;
                if held.arrived.elapsed() > stale {
                    naks.push((held.acker, Duration::ZERO));
                    continue;
                }
                *free -= 1;
                leased.push(Leased {
                    job: held.job,
                    receipt: Receipt::new(JetStreamReceipt(held.acker)),
                });
            }
            if queue.is_empty() {
                holding.lanes.remove(&lane);
            }
        }
        while leased.len() < max {
            // Waits only while nothing is leased yet; then takes what is already here.
            let message = if leased.is_empty() && naks.is_empty() {
                match tokio::time::timeout_at(give_up, holding.incoming.recv()).await {
                    Ok(Some(m)) => m,
                    Ok(None) => return Err(Error::Queue("the job pump stopped".into())),
                    Err(_) => break,
                }
            } else {
                match holding.incoming.try_recv() {
                    Ok(m) => m,
                    Err(_) if leased.is_empty() => {
                        // Everything taken so far went back; wait again for the rest.
                        Self::nak_all(std::mem::take(&mut naks));
                        continue;
                    }
                    Err(_) => break,
                }
            };
            let (arrived, message) = message;
            if arrived.elapsed() > stale {
                // Waited here for most of its ack wait (every worker busy): handed out now it
                // could still be running when the stream gives it to another node. Back it goes.
                naks.push((message.split().1, Duration::ZERO));
                continue;
            }
            let now_ms = unix_ms(SystemTime::now());
            let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
            let due = not_before_ms(message.headers.as_ref());
            let (message, acker) = message.split();
            if due > now_ms {
                naks.push((acker, Duration::from_millis(due - now_ms)));
                continue;
            }
            let job = match Job::decode(message.payload.as_ref()) {
                Ok(job) => job,
                Err(e) => {
                    warn!(subject = %message.subject, error = %e, "dropping an unreadable job");
                    tokio::spawn(async move { acker.ack_with(AckKind::Term).await });
                    continue;
                }
            };
            let lane = job.lane();
            let free = match left.get_mut(lane.as_ref()) {
                Some(n) => n,
                None => left
                    .entry(lane.into_owned())
                    .or_insert_with_key(|l| room(l)),
            };
            if *free > 0 {
                *free -= 1;
                leased.push(Leased {
                    job,
                    receipt: Receipt::new(JetStreamReceipt(acker)),
                });
                continue;
            }
            // No room in its lane now. Its attempts are ending (the oldest job held for it has
            // not waited long): it waits here, and once the lane holds its share this lease
            // takes no more from the pump, which leaves the rest in the stream for whoever has
            // room. The lane is stuck (a dead or hanging target): back to the stream with a
            // delay that grows with each time the job found no room, so it never holds back
            // the lanes behind it.
            let lane = job.lane().into_owned();
            let queue = holding.lanes.entry(lane).or_default();
            let stuck = queue
                .front()
                .is_some_and(|oldest| oldest.held_at.elapsed() > STUCK_AFTER);
            if stuck || holding.held >= HOLD_MAX {
                let unit = rand::thread_rng().gen_range(0.0..=1.0);
                naks.push((acker, room_wait(delivered, unit)));
                continue;
            }
            let full = queue.len() >= HOLD_PER_LANE;
            queue.push_back(Held {
                job,
                acker,
                arrived,
                held_at: tokio::time::Instant::now(),
            });
            holding.held += 1;
            if full {
                break;
            }
        }
        Self::nak_all(naks);
        Ok(leased)
    }

    async fn ack(&self, leased: Leased) -> Result<(), Error> {
        let JetStreamReceipt(acker) = leased.receipt.open()?;
        acker
            .ack()
            .await
            .map_err(|e| Error::Queue(format!("acknowledging a job: {e}")))
    }

    async fn retry(
        &self,
        leased: Leased,
        attempts: u32,
        not_before: SystemTime,
    ) -> Result<(), Error> {
        let JetStreamReceipt(acker) = leased.receipt.open()?;
        let mut job = leased.job;
        job.attempts = attempts;
        // The same retry published twice (a node lost between publish and ack) is stored once.
        let msg_id = format!("{}.{attempts}", job.delivery_id);
        self.publish(vec![(job, msg_id, unix_ms(not_before).max(1))])
            .await?;
        acker
            .ack()
            .await
            .map_err(|e| Error::Queue(format!("acknowledging a retried job: {e}")))
    }

    async fn defer(&self, leased: Leased, not_before: SystemTime) -> Result<(), Error> {
        let JetStreamReceipt(acker) = leased.receipt.open()?;
        let wait = not_before
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        acker
            .ack_with(AckKind::Nak(Some(wait)))
            .await
            .map_err(|e| Error::Queue(format!("deferring a job: {e}")))
    }

    async fn fail(&self, leased: Leased, attempts: u32, reason: &str) -> Result<(), Error> {
        let JetStreamReceipt(acker) = leased.receipt.open()?;
        let mut job = leased.job;
        job.attempts = attempts;
        let id = job.delivery_id.clone();
        let parked = Parked {
            job: Some(job),
            failed_ms: unix_ms(SystemTime::now()),
            reason: reason.to_owned(),
        };
        self.nats
            .parked
            .put(&id, Bytes::from(parked.encode_to_vec()))
            .await
            .map_err(|e| Error::Queue(format!("parking a failed job: {e}")))?;
        acker
            .ack()
            .await
            .map_err(|e| Error::Queue(format!("acknowledging a failed job: {e}")))
    }

    async fn requeue_failed(&self, delivery_id: &str) -> Result<bool, Error> {
        let entry = self
            .nats
            .parked
            .entry(delivery_id)
            .await
            .map_err(|e| Error::Queue(format!("reading a parked job: {e}")))?;
        let Some(entry) =
            entry.filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
        else {
            return Ok(false);
        };
        let Some(mut job) = Parked::decode(entry.value.as_ref())?.job else {
            return Ok(false);
        };
        job.grant_fresh_budget(unix_ms(SystemTime::now()));
        // Every node is asked to requeue; they publish the same message id, which the stream
        // stores once.
        let msg_id = format!("{delivery_id}.requeue.{}", entry.revision);
        self.publish(vec![(job, msg_id, 0)]).await?;
        if let Err(e) = self
            .nats
            .parked
            .delete_expect_revision(delivery_id, Some(entry.revision))
            .await
        {
            // Another node requeued it first.
            tracing::debug!(delivery_id, error = %e, "parked job already taken");
        }
        Ok(true)
    }

    async fn depth(&self) -> Result<u64, Error> {
        let mut jobs = self.nats.jobs.clone();
        let info = jobs
            .info()
            .await
            .map_err(|e| Error::Queue(format!("reading the jobs stream: {e}")))?;
        Ok(info.state.messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_without_room_waits_longer_each_time_up_to_the_cap() {
        assert_eq!(room_wait(1, 1.0), FIRST_ROOM_WAIT);
        assert_eq!(room_wait(2, 1.0), FIRST_ROOM_WAIT * 2);
        assert_eq!(room_wait(100, 1.0), MAX_ROOM_WAIT);
        assert!(room_wait(8, 1.0) < MAX_ROOM_WAIT);
        assert_eq!(room_wait(1, 0.0), FIRST_ROOM_WAIT / 2);
    }

    #[test]
    fn the_due_time_is_read_from_its_header() {
        let mut headers = HeaderMap::new();
        headers.insert(NOT_BEFORE, "1234");
        assert_eq!(not_before_ms(Some(&headers)), 1234);
        assert_eq!(not_before_ms(None), 0);
    }
}
