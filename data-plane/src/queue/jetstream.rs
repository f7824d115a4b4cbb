//! The shared queue: jobs in replicated NATS JetStream streams that every node publishes to and
//! takes from, so any node delivers any job and a node lost for good loses nothing.
//!
//! Jobs enqueued together (one LINE request's jobs for every forwarding set, one event's for
//! every subscription) travel as one message, a [`Bundle`] carrying their shared body once: the
//! stream stores, hands out and deletes one message per request instead of one per target. One
//! message per job cost the NATS server and the node a publish, an acknowledgement, a delivery
//! and an ack per delivery, and held NATS mode to a third of the spool's rate with 10 sets
//! (docs/BENCHMARKS.md). A job that leaves its bundle's course (retried, deferred, or sent back
//! for want of room) is published alone, and the bundle is acknowledged once every job it
//! carried is settled.
//!
//! How each promise of [`Queue`] maps onto JetStream (names in `nats.rs`):
//! - enqueue: one publish per call (up to [`BUNDLE_MAX`] jobs a message) on
//!   `<prefix>.jobs.<stream>.<n>` (`n` jobs in it, which is how [`Queue::depth`] counts jobs),
//!   with a message id made of the jobs' delivery ids, which also picks which of the jobs
//!   streams it goes to; returns once the stream has acknowledged it. A stream drops a message
//!   id it saw within its duplicate window, whichever node publishes it: the same jobs enqueued
//!   again (a LINE redelivery of the same webhook, on any node) are stored once. A stream that
//!   does not store it in time (its leader lost with a server) is passed over for the next.
//! - lease: a fetch from each stream's durable pull consumer, shared by all nodes; the lease is the
//!   consumer's ack wait, and a message not settled in it is handed out again (to any node),
//!   with every job it carries.
//! - ack / fail: the job is settled; its message is acknowledged (the stream is a work queue:
//!   it is gone) once all its jobs are. A failed job is first written to the `<prefix>_parked`
//!   bucket, keyed by its delivery id, so RetryDelivery works on whichever node the request
//!   reaches.
//! - retry: the job with its new attempt count is published alone, carrying the time it is due
//!   in a header, then settled. A message handed out before its time is NAKed with the delay
//!   left: the wait is JetStream's redelivery timer, never a sleeping task.
//! - defer: NAK with a delay (a job alone in its message), or published alone, due then.
//! - a lane without room: its job is held on the node and handed out by the next lease that
//!   finds room, as the spool's lanes wait; once a lane holds [`HOLD_PER_LANE`] the node takes
//!   no more messages (the rest wait in the stream for whoever has room). A lane without room
//!   whose oldest held job waited [`STUCK_AFTER`] is stuck (a dead or hanging target): its jobs
//!   go back to the stream with a delay that grows with each time they found no room, up to
//!   [`MAX_ROOM_WAIT`], until it has room again. A lane that stays full costs one redelivery per
//!   job per delay, never a wait for the other lanes, not even for the jobs of its own message.
//!
//! - purge_tenant: a job's message may carry other tenants' jobs too (not in practice: one
//!   request's jobs are one tenant's, but a stream cannot delete part of a message), so the
//!   node remembers the purge and a lease settles, undelivered, every job of the tenant enqueued
//!   before it, as it comes; the message is gone once all its jobs are settled. Parked jobs are
//!   purged from the bucket at once. What stays is a job waiting in a stream for its retry's
//!   time: its message leaves when it comes due (at most the retry schedule's longest wait), or
//!   at the stream's max age (`--payload-retention`). Every node applies every purge, so
//!   whichever node takes a message drops it.
//!
//! The receipt is the job's share of its message's acknowledgement: nothing is kept per lease.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use async_nats::{
    HeaderMap,
    jetstream::{AckKind, message::Acker, stream::LastRawMessageErrorKind},
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;
use prost::Message as _;
use rand::Rng as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tracing::warn;

use super::{Job, Leased, Purged, Queue, Receipt, Room, unix_ms, unix_ms_not_before};
use crate::{
    Error,
    nats::{Nats, PUBLISH_TIMEOUT},
};

/// The pause before a publish that was not acknowledged is sent again.
const PUBLISH_PAUSE: Duration = Duration::from_millis(50);

/// Header of a message whose jobs are not to be attempted before this unix ms.
const NOT_BEFORE: &str = "Hookplane-Not-Before";
/// Header of a message whose jobs all go to one lane: a lease finds the lane stuck without
/// decoding them, and hands the message back whole.
const LANE: &str = "Hookplane-Lane";
/// The longest a job of a lane without room waits before it is offered again: a lane that
/// stays full (a dead target behind its breaker) costs one redelivery per job per this, so a
/// backlog of a million costs a few thousand a second, not the stream's whole capacity.
const MAX_ROOM_WAIT: Duration = Duration::from_secs(300);
/// The first wait of a job of a stuck lane; it doubles with each time it found no room. A
/// target whose breaker opened rests 5 s at first (`delivery/breaker.rs`): its jobs offered
/// again sooner would only come back once more, each time a delivery and a NAK for the server.
const FIRST_ROOM_WAIT: Duration = Duration::from_secs(5);
/// Most jobs one message carries: an event for more subscriptions than this is enqueued as
/// several messages, each well under NATS's default 1 MiB payload limit for a body shared once.
pub const BUNDLE_MAX: usize = 64;

/// Jobs enqueued together, as one message of the jobs stream carries them: a body that every
/// job shares (the same LINE request to each forwarding set) is stored once, in `body`, and left
/// empty in the jobs.
#[derive(Clone, PartialEq, prost::Message)]
struct Bundle {
    #[prost(bytes = "bytes", tag = "1")]
    body: Bytes,
    #[prost(message, repeated, tag = "2")]
    jobs: Vec<Job>,
}

impl Bundle {
    fn pack(mut jobs: Vec<Job>) -> Self {
        let body = jobs.first().map(|j| j.body.clone()).unwrap_or_default();
        let shared = !body.is_empty() && jobs.iter().all(|j| j.body == body);
        if !shared {
            return Self {
                body: Bytes::new(),
                jobs,
            };
        }
        for job in &mut jobs {
            job.body = Bytes::new();
        }
        Self { body, jobs }
    }

    fn unpack(self) -> Vec<Job> {
        let Self { body, mut jobs } = self;
        if !body.is_empty() {
            for job in &mut jobs {
                job.body = body.clone();
            }
        }
        jobs
    }
}

/// The message id of jobs enqueued together: the delivery id of a job alone, or a digest of all
/// of them in order, so the same jobs enqueued again on any node make the same id.
fn bundle_msg_id(jobs: &[Job]) -> String {
    if let [job] = jobs {
        return job.delivery_id.clone();
    }
    let mut digest = Sha256::new();
    for job in jobs {
        digest.update(job.delivery_id.as_bytes());
        digest.update(b"\n");
    }
    format!("bundle.{}", &hex::encode(digest.finalize())[..32])
}

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
    /// Tenants purged since the node started, with the enqueue time (unix ms) up to which
    /// their jobs are dropped as they are handed out (see the module comment).
    purges: arc_swap::ArcSwap<HashMap<String, u64>>,
    /// One per jobs stream.
    pumps: Vec<tokio::task::JoinHandle<()>>,
}

/// Messages a node holds in memory before any lease asks for them (their ack wait runs): a few
/// leases' worth, so a lease finds jobs at once without the node hoarding them from the others.
const PREFETCH: usize = 128;

/// Jobs held for a lane without room: past this many a lease stops taking from the pump, so a
/// busy lane's backlog waits in the stream rather than churning through the node.
const HOLD_PER_LANE: usize = 64;
/// Jobs held in all; past it a job without room goes back to the stream.
const HOLD_MAX: usize = 2048;
/// A lane whose oldest held job has waited this long is not draining (its target is dead,
/// hanging or resting behind its breaker): its further jobs go back to the stream.
const STUCK_AFTER: Duration = Duration::from_secs(2);

/// One message of the jobs stream as the node holds it: its acknowledgement handle (an
/// [`Acker`]; any handle in tests), sent once every job it carries is settled.
struct Carrier<A = Acker> {
    acker: Mutex<Option<A>>,
    /// Jobs it carries.
    jobs: usize,
    /// Jobs not yet settled.
    unsettled: AtomicUsize,
}

impl<A> Carrier<A> {
    fn new(acker: A, jobs: usize) -> Arc<Self> {
        Arc::new(Self {
            acker: Mutex::new(Some(acker)),
            jobs,
            unsettled: AtomicUsize::new(jobs),
        })
    }

    /// The message's handle, when the job settled now was its last.
    fn settle_one(&self) -> Option<A> {
        if self.unsettled.fetch_sub(1, Ordering::AcqRel) != 1 {
            return None;
        }
        self.acker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The handle of a message that carries one job, taken to NAK it (the job goes back whole,
    /// keeping its delivery count); `None` for a message carrying others too.
    fn alone(&self) -> Option<A> {
        self.whole(1)
    }

    /// The handle of a message all of whose `jobs` jobs are in the caller's hands, taken to NAK
    /// it whole; `None` when it carries others too (or some were settled already).
    fn whole(&self, jobs: usize) -> Option<A> {
        if self.jobs != jobs || self.unsettled.load(Ordering::Acquire) != jobs {
            return None;
        }
        self.unsettled.store(0, Ordering::Release);
        self.acker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Carrier {
    /// One of its jobs is settled; the message is acknowledged after the last.
    async fn settle(&self) -> Result<(), Error> {
        match self.settle_one() {
            Some(acker) => acker
                .ack()
                .await
                .map_err(|e| Error::Queue(format!("acknowledging a job: {e}"))),
            None => Ok(()),
        }
    }
}

/// JetStream's receipt: the job's share of the message that carries it.
struct JetStreamReceipt(Arc<Carrier>);

/// What the node holds between leases: the messages the pump took, and jobs that came while
/// their lane had no room (or after the lease that took their message was full), per lane in
/// arrival order.
struct Holding {
    incoming: mpsc::Receiver<Arrived>,
    lanes: HashMap<String, VecDeque<Held>>,
    held: usize,
    /// Lanes found stuck (no room, their oldest job held past [`STUCK_AFTER`]) and not seen
    /// with room since: their jobs go straight back to the stream.
    stuck: HashSet<String>,
    /// How fast each lane's jobs have been handed out lately.
    outflow: HashMap<String, Outflow>,
}

/// Jobs of a lane handed out in the current second and the one before: a lane holding its
/// share is draining (its target takes jobs, only not as fast as they come) when that rate
/// would empty its share within [`STUCK_AFTER`]. Such a lane holds the node back from taking
/// more messages; one that is not draining (a hanging target, which frees a slot only when an
/// attempt times out) must not, or it would hold back every other lane of the same requests.
#[derive(Debug, Default, Clone, Copy)]
struct Outflow {
    since: Option<tokio::time::Instant>,
    this_second: u32,
    last_second: u32,
}

impl Outflow {
    const SECOND: Duration = Duration::from_secs(1);

    fn roll(&mut self, now: tokio::time::Instant) {
        match self.since {
            None => self.since = Some(now),
            Some(since) if now.duration_since(since) >= Self::SECOND => {
                let gap = now.duration_since(since);
                self.last_second = if gap < 2 * Self::SECOND {
                    self.this_second
                } else {
                    0
                };
                self.this_second = 0;
                self.since = Some(now);
            }
            Some(_) => {}
        }
    }

    fn handed_out(&mut self, jobs: u32, now: tokio::time::Instant) {
        self.roll(now);
        self.this_second = self.this_second.saturating_add(jobs);
    }

    fn draining(&mut self, now: tokio::time::Instant) -> bool {
        self.roll(now);
        let per_second = self.this_second.max(self.last_second);
        let share = u32::try_from(HOLD_PER_LANE).unwrap_or(u32::MAX);
        per_second.saturating_mul(u32::try_from(STUCK_AFTER.as_secs()).unwrap_or(1)) >= share
    }
}

impl Holding {
    /// Holds a job for a later lease; how many its lane holds now.
    fn hold(
        &mut self,
        job: Job,
        carrier: Arc<Carrier>,
        arrived: tokio::time::Instant,
        delivered: i64,
    ) -> usize {
        let lane = job.lane().into_owned();
        let queue = self.lanes.entry(lane).or_default();
        queue.push_back(Held {
            job,
            carrier,
            arrived,
            held_at: tokio::time::Instant::now(),
            delivered,
        });
        self.held += 1;
        queue.len()
    }

    fn handed_out(&mut self, lane: &str, jobs: u32, now: tokio::time::Instant) {
        if jobs == 0 {
            return;
        }
        match self.outflow.get_mut(lane) {
            Some(outflow) => outflow.handed_out(jobs, now),
            None => {
                if self.outflow.len() >= OUTFLOW_LANES {
                    // Forget the lanes nothing was handed out for in a while.
                    self.outflow.retain(|_, o| {
                        o.since
                            .is_some_and(|s| now.duration_since(s) < 30 * Outflow::SECOND)
                    });
                }
                let mut outflow = Outflow::default();
                outflow.handed_out(jobs, now);
                self.outflow.insert(lane.to_owned(), outflow);
            }
        }
    }

    fn draining(&mut self, lane: &str, now: tokio::time::Instant) -> bool {
        self.outflow.get_mut(lane).is_some_and(|o| o.draining(now))
    }
}

/// Lanes whose outflow is remembered before the idle ones are forgotten.
const OUTFLOW_LANES: usize = 10_000;

struct Held {
    job: Job,
    carrier: Arc<Carrier>,
    /// When the pump took its message (its ack wait runs from about then).
    arrived: tokio::time::Instant,
    /// When it was first held.
    held_at: tokio::time::Instant,
    /// How many times the stream has handed out its message.
    delivered: i64,
}

/// A message as the pump took it, with when: its ack wait started then.
type Arrived = (tokio::time::Instant, async_nats::jetstream::Message);

/// A message to publish: its jobs, its message id, and when they are due (unix ms, 0: at once).
struct Outgoing {
    jobs: Vec<Job>,
    msg_id: String,
    not_before_ms: u64,
}

/// A message's jobs on their way back to the stream, each with its wait.
type GoingBack = (Arc<Carrier>, Vec<(Job, Duration)>);

/// A job on its way back to the stream, due after a wait.
type SendBack = (Job, Arc<Carrier>, Duration);

impl Drop for JetStreamQueue {
    fn drop(&mut self) {
        for pump in &self.pumps {
            pump.abort();
        }
    }
}

impl JetStreamQueue {
    /// Erases from the jobs streams every message whose jobs are all `tenant_id`'s and first
    /// enqueued by `before_ms` (an enqueue's jobs are one request's or one event's, so one
    /// tenant's), and returns how many jobs they carried. A scan of every message: a purge is an
    /// erasure request, rare, and the streams have no index by tenant. The server overwrites an
    /// erased message's bytes; a message another node holds leased is erased all the same (its
    /// ack then finds nothing), and one another node erased first is passed over.
    async fn erase_tenant_messages(&self, tenant_id: &str, before_ms: u64) -> Result<u64, Error> {
        let scan_error =
            |e: &dyn std::fmt::Display| Error::Queue(format!("purging queued jobs: {e}"));
        let mut erased = 0u64;
        for jobs in &self.nats.jobs {
            let info = jobs.stream.get_info().await.map_err(|e| scan_error(&e))?;
            if info.state.messages == 0 {
                // An empty stream names sequence 0, which the server refuses to look up.
                continue;
            }
            let (first, last) = (info.state.first_sequence.max(1), info.state.last_sequence);
            for sequence in first..=last {
                let message = match jobs.stream.get_raw_message(sequence).await {
                    Ok(message) => message,
                    // Settled (a work queue drops acknowledged messages) or erased already.
                    Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => {
                        continue;
                    }
                    Err(e) => return Err(scan_error(&e)),
                };
                let Ok(bundle) = Bundle::decode(message.payload.as_ref()) else {
                    continue;
                };
                let doomed = !bundle.jobs.is_empty()
                    && bundle
                        .jobs
                        .iter()
                        .all(|j| j.tenant_id == tenant_id && j.first_enqueued_ms <= before_ms);
                if !doomed {
                    continue;
                }
                match jobs.stream.delete_message(sequence).await {
                    Ok(true) => erased += bundle.jobs.len() as u64,
                    Ok(false) => {}
                    // Refused because another node erased or a node settled it meanwhile is
                    // fine; any other failure leaves the body there, and the purge says so.
                    Err(e) => match jobs.stream.get_raw_message(sequence).await {
                        Err(gone)
                            if matches!(gone.kind(), LastRawMessageErrorKind::NoMessageFound) => {}
                        _ => return Err(scan_error(&e)),
                    },
                }
            }
        }
        Ok(erased)
    }

    /// Starts taking jobs from the shared consumer (on the current runtime).
    pub fn new(nats: Nats) -> Self {
        let (tx, rx) = mpsc::channel(PREFETCH);
        let pumps = nats
            .jobs
            .iter()
            .map(|jobs| tokio::spawn(pump(jobs.deliver.clone(), tx.clone())))
            .collect();
        Self {
            nats,
            holding: tokio::sync::Mutex::new(Holding {
                incoming: rx,
                lanes: HashMap::new(),
                held: 0,
                stuck: HashSet::new(),
                outflow: HashMap::new(),
            }),
            purges: arc_swap::ArcSwap::default(),
            pumps,
        }
    }

    /// Whether `job` belongs to a purge (its tenant's jobs enqueued until then are dropped).
    fn purged(purges: &HashMap<String, u64>, job: &Job) -> bool {
        purges
            .get(&job.tenant_id)
            .is_some_and(|before| job.first_enqueued_ms <= *before)
    }

    /// Publishes each message and waits for the stream to acknowledge every one. A publish not
    /// acknowledged (a stream leader being elected after a server loss answers nothing for a
    /// moment) is sent again with the same message id, which the stream stores once, until
    /// [`PUBLISH_TIMEOUT`] has passed.
    async fn publish(&self, messages: Vec<Outgoing>) -> Result<(), Error> {
        publish(&self.nats, messages).await
    }

    /// Publishes `job` alone, due at `not_before`, then settles its share of `carrier`.
    async fn publish_alone(
        &self,
        job: Job,
        msg_id: String,
        not_before: SystemTime,
        carrier: &Carrier,
    ) -> Result<(), Error> {
        self.publish(vec![Outgoing {
            jobs: vec![job],
            msg_id,
            not_before_ms: unix_ms_not_before(not_before).max(1),
        }])
        .await?;
        carrier.settle().await
    }

    /// Hands jobs back to the stream with their delays, on a task of their own: a lease dropped
    /// halfway (the engine stops waiting when room frees up) must not lose a job's handle. A
    /// message all of whose jobs go back goes back whole, with a NAK and the shortest of their
    /// delays (it keeps its delivery count, which lengthens the next wait). The others' jobs are
    /// published anew, up to [`BUNDLE_MAX`] a message (a stuck lane's jobs from many requests
    /// travel together), each due after the shortest wait among them, and then settled.
    fn send_back(&self, jobs: Vec<SendBack>) {
        if jobs.is_empty() {
            return;
        }
        let nats = self.nats.clone();
        tokio::spawn(async move {
            let now_ms = unix_ms(SystemTime::now());
            // Per message (by its carrier's address): its jobs going back now.
            let mut by_carrier: HashMap<usize, GoingBack> = HashMap::new();
            for (job, carrier, wait) in jobs {
                by_carrier
                    .entry(Arc::as_ptr(&carrier).addr())
                    .or_insert_with(|| (carrier, Vec::new()))
                    .1
                    .push((job, wait));
            }
            let mut split: Vec<(Job, Arc<Carrier>, Duration)> = Vec::new();
            for (carrier, jobs) in by_carrier.into_values() {
                let shortest = jobs.iter().map(|(_, w)| *w).min().unwrap_or_default();
                if let Some(acker) = carrier.whole(jobs.len()) {
                    if let Err(e) = acker.ack_with(AckKind::Nak(Some(shortest))).await {
                        // The ack wait runs out and the jobs come back all the same.
                        warn!(error = %e, "could not hand jobs back to the stream");
                    }
                    continue;
                }
                split.extend(
                    jobs.into_iter()
                        .map(|(job, wait)| (job, Arc::clone(&carrier), wait)),
                );
            }
            // A lane's jobs together and no other's, so its messages say which lane they are
            // for (a lease then hands them back whole without decoding them).
            split.sort_by(|a, b| a.0.lane().cmp(&b.0.lane()).then(a.2.cmp(&b.2)));
            let mut split = split.into_iter().peekable();
            while let Some((first, _, _)) = split.peek() {
                let lane = first.lane().into_owned();
                let mut chunk = Vec::new();
                while chunk.len() < BUNDLE_MAX
                    && let Some(next) = split.next_if(|(job, _, _)| job.lane() == lane.as_str())
                {
                    chunk.push(next);
                }
                let wait = chunk.first().map(|(_, _, w)| *w).unwrap_or_default();
                let due = now_ms + u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                let (jobs, carriers): (Vec<Job>, Vec<Arc<Carrier>>) =
                    chunk.into_iter().map(|(job, c, _)| (job, c)).unzip();
                let msg_id = format!("{}.back.{now_ms}", bundle_msg_id(&jobs));
                let outgoing = Outgoing {
                    jobs,
                    msg_id,
                    not_before_ms: due.max(1),
                };
                // Unsettled, a job's message comes back after its ack wait with every job it
                // carries: nothing is lost, some are attempted again.
                match publish(&nats, vec![outgoing]).await {
                    Ok(()) => {
                        for carrier in carriers {
                            if let Err(e) = carrier.settle().await {
                                warn!(error = %e, "could not settle a job sent back to the stream");
                            }
                        }
                    }
                    Err(e) => warn!(error = %e, "could not send jobs back to the stream"),
                }
            }
        });
    }
}

/// The jobs stream a message goes to first: the same message id always to the same stream, so
/// the stream's duplicate window sees it again.
fn first_stream(msg_id: &str, streams: usize) -> usize {
    usize::from(Sha256::digest(msg_id.as_bytes())[0]) % streams.max(1)
}

/// See [`JetStreamQueue::publish`]. A message not stored in time by its stream (whose leader is
/// being elected after a server loss) is sent to the next one; stored twice that way (the first
/// stream had it after all, its acknowledgement lost) it is delivered twice, as at-least-once
/// allows.
async fn publish(nats: &Nats, messages: Vec<Outgoing>) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + PUBLISH_TIMEOUT;
    let streams = nats.jobs.len();
    // (stream, jobs in it, headers, payload)
    let mut pending: Vec<(usize, usize, HeaderMap, Bytes)> = messages
        .into_iter()
        .map(|outgoing| {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", outgoing.msg_id.as_str());
            if outgoing.not_before_ms > 0 {
                headers.insert(NOT_BEFORE, outgoing.not_before_ms.to_string().as_str());
            }
            if let Some(first) = outgoing.jobs.first()
                && outgoing.jobs.iter().all(|j| j.lane() == first.lane())
            {
                headers.insert(LANE, first.lane().as_ref());
            }
            let stream = first_stream(&outgoing.msg_id, streams);
            let count = outgoing.jobs.len();
            let payload = Bytes::from(Bundle::pack(outgoing.jobs).encode_to_vec());
            (stream, count, headers, payload)
        })
        .collect();
    loop {
        let mut acks = Vec::with_capacity(pending.len());
        for (stream, count, headers, payload) in &pending {
            acks.push(
                nats.js
                    .publish_with_headers(
                        nats.names.job_subject(*stream, *count),
                        headers.clone(),
                        payload.clone(),
                    )
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
                let (stream, count, headers, payload) = outgoing;
                unstored.push(((stream + 1) % streams.max(1), count, headers, payload));
            }
        }
        if unstored.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() + PUBLISH_PAUSE >= deadline {
            return Err(Error::Queue(format!(
                "the jobs streams did not store {} message(s): {why}",
                unstored.len()
            )));
        }
        tokio::time::sleep(PUBLISH_PAUSE).await;
        pending = unstored;
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

/// When the message's jobs are due, from its header (0: at once).
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
        let mut messages = Vec::with_capacity(jobs.len().div_ceil(BUNDLE_MAX));
        let mut jobs = jobs.into_iter().peekable();
        while jobs.peek().is_some() {
            let bundle: Vec<Job> = jobs.by_ref().take(BUNDLE_MAX).collect();
            messages.push(Outgoing {
                msg_id: bundle_msg_id(&bundle),
                jobs: bundle,
                not_before_ms: 0,
            });
        }
        self.publish(messages).await
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
        let mut back: Vec<SendBack> = Vec::new();
        let stale = self.nats.ack_wait / 2;
        let purges = self.purges.load();
        let unit = rand::thread_rng().gen_range(0.0..=1.0);
        let now = tokio::time::Instant::now();
        // Jobs held first, oldest of each lane first, and the lane that has waited longest
        // first: in a fixed order the lanes late in it would wait behind the others' share of
        // every lease until they looked stuck.
        let mut lanes: Vec<(tokio::time::Instant, String)> = holding
            .lanes
            .iter()
            .filter_map(|(lane, q)| q.front().map(|h| (h.held_at, lane.clone())))
            .collect();
        lanes.sort_unstable();
        for (_, lane) in lanes {
            let free = left.entry(lane.clone()).or_insert_with_key(|l| room(l));
            let Some(queue) = holding.lanes.get_mut(&lane) else {
                continue;
            };
            if *free > 0 {
                holding.stuck.remove(&lane);
            }
            let before = leased.len();
            while *free > 0 && leased.len() < max {
                let Some(held) = queue.pop_front() else {
                    break;
                };
                holding.held -= 1;
                if Self::purged(&purges, &held.job) {
                    drop_purged(held.carrier);
                    continue;
                }
                if held.arrived.elapsed() > stale {
                    back.push((held.job, held.carrier, Duration::ZERO));
                    continue;
                }
                *free -= 1;
                leased.push(Leased {
                    job: held.job,
                    receipt: Receipt::new(JetStreamReceipt(held.carrier)),
                });
            }
            let out = u32::try_from(leased.len() - before).unwrap_or(u32::MAX);
            let queue_len = queue.len();
            let waited = queue
                .front()
                .is_some_and(|h| h.held_at.elapsed() > STUCK_AFTER);
            holding.handed_out(&lane, out, now);
            let full_and_still = queue_len >= HOLD_PER_LANE && !holding.draining(&lane, now);
            let Some(queue) = holding.lanes.get_mut(&lane) else {
                continue;
            };
            // No room, and its oldest job has waited past STUCK_AFTER, or it holds its share
            // and is not draining: a dead or hanging target. Its jobs go back to the stream, and
            // so do those that come for it until it has room again: held, they would only stop
            // this node from taking the other lanes' jobs.
            if *free == 0 && (waited || full_and_still) {
                holding.held -= queue.len();
                back.extend(
                    queue
                        .drain(..)
                        .map(|h| (h.job, h.carrier, room_wait(h.delivered, unit))),
                );
                holding.stuck.insert(lane.clone());
            }
            if queue.is_empty() {
                holding.lanes.remove(&lane);
            }
        }
        // A draining lane that holds its share: the node has more of its jobs than it can
        // start, and the rest wait in the stream for whoever has room.
        let full: Vec<String> = holding
            .lanes
            .iter()
            .filter(|(_, q)| q.len() >= HOLD_PER_LANE)
            .map(|(lane, _)| lane.clone())
            .collect();
        let mut enough = full.iter().any(|lane| holding.draining(lane, now));
        while leased.len() < max && !enough {
            // Waits only while nothing is leased yet; then takes what is already here.
            let message = if leased.is_empty() && naks.is_empty() && back.is_empty() {
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
                        nak_all(std::mem::take(&mut naks));
                        self.send_back(std::mem::take(&mut back));
                        continue;
                    }
                    Err(_) => break,
                }
            };
            let (arrived, message) = message;
            let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
            let due = not_before_ms(message.headers.as_ref());
            let (message, acker) = message.split();
            if arrived.elapsed() > stale {
                // Waited here for most of its ack wait (every worker busy): handed out now it
                // could still be running when the stream gives it to another node. Back it goes.
                naks.push((acker, Duration::ZERO));
                continue;
            }
            let now_ms = unix_ms(SystemTime::now());
            if due > now_ms {
                naks.push((acker, Duration::from_millis(due - now_ms)));
                continue;
            }
            if let Some(lane) = message.headers.as_ref().and_then(|h| h.get(LANE)) {
                let lane = lane.as_str();
                let free = *left.entry(lane.to_owned()).or_insert_with_key(|l| room(l));
                if free == 0 && holding.stuck.contains(lane) {
                    naks.push((acker, room_wait(delivered, unit)));
                    continue;
                }
            }
            let jobs = match Bundle::decode(message.payload.as_ref()) {
                Ok(bundle) if !bundle.jobs.is_empty() => bundle.unpack(),
                outcome => {
                    let error = outcome.err().map(|e| e.to_string()).unwrap_or_default();
                    warn!(subject = %message.subject, error, "dropping an unreadable message of jobs");
                    tokio::spawn(async move { acker.ack_with(AckKind::Term).await });
                    continue;
                }
            };
            let carrier = Carrier::new(acker, jobs.len());
            for job in jobs {
                if Self::purged(&purges, &job) {
                    drop_purged(Arc::clone(&carrier));
                    continue;
                }
                let lane = job.lane();
                let free = match left.get_mut(lane.as_ref()) {
                    Some(n) => n,
                    None => left
                        .entry(lane.into_owned())
                        .or_insert_with_key(|l| room(l)),
                };
                let carrier = Arc::clone(&carrier);
                if *free > 0 {
                    *free -= 1;
                    if !holding.stuck.is_empty() {
                        holding.stuck.remove(job.lane().as_ref());
                    }
                    if leased.len() < max {
                        holding.handed_out(job.lane().as_ref(), 1, now);
                        leased.push(Leased {
                            job,
                            receipt: Receipt::new(JetStreamReceipt(carrier)),
                        });
                    } else {
                        // This lease is full; the next one hands it out.
                        holding.hold(job, carrier, arrived, delivered);
                        enough = true;
                    }
                    continue;
                }
                // No room in its lane now: it waits here while the lane drains, goes back to
                // the stream while the lane is stuck.
                let lane = job.lane().into_owned();
                let queue = holding.lanes.get(&lane);
                let waited = queue
                    .and_then(|q| q.front())
                    .is_some_and(|oldest| oldest.held_at.elapsed() > STUCK_AFTER);
                let full = queue.is_some_and(|q| q.len() >= HOLD_PER_LANE);
                let stuck = holding.stuck.contains(&lane)
                    || waited
                    || (full && !holding.draining(&lane, now));
                if stuck || holding.held >= HOLD_MAX {
                    back.push((job, carrier, room_wait(delivered, unit)));
                    continue;
                }
                let draining = holding.draining(&lane, now);
                let held = holding.hold(job, carrier, arrived, delivered);
                enough |= held >= HOLD_PER_LANE && draining;
            }
        }
        nak_all(naks);
        self.send_back(back);
        if leased.is_empty() && enough {
            // Nothing can start until a slot frees up, which ends this wait early (the caller
            // drops the lease); returning at once would only be asked again at once.
            tokio::time::sleep_until(give_up).await;
        }
        Ok(leased)
    }

    async fn ack(&self, leased: Leased) -> Result<(), Error> {
        let JetStreamReceipt(carrier) = leased.receipt.open()?;
        carrier.settle().await
    }

    async fn retry(
        &self,
        leased: Leased,
        attempts: u32,
        not_before: SystemTime,
    ) -> Result<(), Error> {
        let JetStreamReceipt(carrier) = leased.receipt.open()?;
        let mut job = leased.job;
        job.attempts = attempts;
        // The same retry published twice (a node lost between publish and ack) is stored once.
        let msg_id = format!("{}.{attempts}", job.delivery_id);
        self.publish_alone(job, msg_id, not_before, &carrier).await
    }

    async fn defer(&self, leased: Leased, not_before: SystemTime) -> Result<(), Error> {
        let JetStreamReceipt(carrier) = leased.receipt.open()?;
        if let Some(acker) = carrier.alone() {
            let wait = not_before
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            return acker
                .ack_with(AckKind::Nak(Some(wait)))
                .await
                .map_err(|e| Error::Queue(format!("deferring a job: {e}")));
        }
        let job = leased.job;
        let msg_id = format!(
            "{}.{}.defer.{}",
            job.delivery_id,
            job.attempts,
            unix_ms(SystemTime::now())
        );
        self.publish_alone(job, msg_id, not_before, &carrier).await
    }

    async fn fail(&self, leased: Leased, attempts: u32, reason: &str) -> Result<(), Error> {
        let JetStreamReceipt(carrier) = leased.receipt.open()?;
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
        carrier.settle().await
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
        self.publish(vec![Outgoing {
            jobs: vec![job],
            msg_id,
            not_before_ms: 0,
        }])
        .await?;
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

    /// Remembers the purge for the leases to come, and purges the tenant's parked jobs from the
    /// bucket. `queued` stays 0: the jobs streams cannot be searched by tenant, and their jobs
    /// are dropped as they are handed out (module comment).
    async fn purge_tenant(&self, tenant_id: &str, before: SystemTime) -> Result<Purged, Error> {
        let before_ms = unix_ms(before);
        self.purges.rcu(|purges| {
            let mut purges = HashMap::clone(purges);
            let at = purges.entry(tenant_id.to_owned()).or_default();
            *at = (*at).max(before_ms);
            purges
        });
        let parked_error =
            |e: &dyn std::fmt::Display| Error::Queue(format!("purging parked jobs: {e}"));
        let mut keys = self
            .nats
            .parked
            .keys()
            .await
            .map_err(|e| parked_error(&e))?;
        let mut purged = Purged::default();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| parked_error(&e))?;
            let entry = self
                .nats
                .parked
                .entry(key.as_str())
                .await
                .map_err(|e| parked_error(&e))?;
            let Some(entry) =
                entry.filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
            else {
                continue;
            };
            let Ok(Parked { job: Some(job), .. }) = Parked::decode(entry.value.as_ref()) else {
                continue;
            };
            if job.tenant_id == tenant_id && job.first_enqueued_ms <= before_ms {
                // A purge leaves no earlier value of the key behind (a rollup), unlike a delete.
                self.nats
                    .parked
                    .purge(key.as_str())
                    .await
                    .map_err(|e| parked_error(&e))?;
                purged.parked += 1;
            }
        }
        purged.queued = self.erase_tenant_messages(tenant_id, before_ms).await?;
        Ok(purged)
    }

    /// Jobs in the streams' messages, counted by the subjects they were published on (a job
    /// settled while others of its message are not yet is still counted).
    async fn depth(&self) -> Result<u64, Error> {
        let mut depth = 0u64;
        for (shard, jobs) in self.nats.jobs.iter().enumerate() {
            let mut subjects = jobs
                .stream
                .info_with_subjects(self.nats.names.jobs_subjects(shard))
                .await
                .map_err(|e| Error::Queue(format!("reading the jobs streams: {e}")))?;
            while let Some(subject) = subjects.next().await {
                let (subject, messages) =
                    subject.map_err(|e| Error::Queue(format!("reading the jobs streams: {e}")))?;
                let per_message = subject
                    .rsplit('.')
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(1);
                depth += per_message * u64::try_from(messages).unwrap_or(u64::MAX);
            }
        }
        Ok(depth)
    }
}

/// Settles a purged job's share of its message undelivered, on a task of its own (the lease
/// holds the node's holding lock).
fn drop_purged(carrier: Arc<Carrier>) {
    tokio::spawn(async move {
        if let Err(e) = carrier.settle().await {
            // The ack wait runs out, the message comes back and its job is dropped again.
            warn!(error = %e, "could not settle a purged job");
        }
    });
}

/// NAKs messages with their delays, on a task of their own (see [`JetStreamQueue::send_back`]).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_without_room_waits_longer_each_time_up_to_the_cap() {
        assert_eq!(room_wait(1, 1.0), FIRST_ROOM_WAIT);
        assert_eq!(room_wait(2, 1.0), FIRST_ROOM_WAIT * 2);
        assert_eq!(room_wait(100, 1.0), MAX_ROOM_WAIT);
        assert!(room_wait(4, 1.0) < MAX_ROOM_WAIT);
        assert_eq!(room_wait(1, 0.0), FIRST_ROOM_WAIT / 2);
    }

    #[test]
    fn the_due_time_is_read_from_its_header() {
        let mut headers = HeaderMap::new();
        headers.insert(NOT_BEFORE, "1234");
        assert_eq!(not_before_ms(Some(&headers)), 1234);
        assert_eq!(not_before_ms(None), 0);
    }

    fn job(id: &str, body: &'static [u8]) -> Job {
        Job {
            delivery_id: id.into(),
            body: Bytes::from_static(body),
            ..Job::default()
        }
    }

    #[test]
    fn a_body_every_job_shares_is_stored_once_and_given_back_to_each() {
        let jobs = vec![
            job("dlv_a", b"{\"events\":[]}"),
            job("dlv_b", b"{\"events\":[]}"),
        ];
        let bundle = Bundle::pack(jobs.clone());
        assert_eq!(bundle.body, Bytes::from_static(b"{\"events\":[]}"));
        assert!(bundle.jobs.iter().all(|j| j.body.is_empty()));
        let decoded = Bundle::decode(bundle.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.unpack(), jobs);
    }

    #[test]
    fn jobs_with_bodies_of_their_own_keep_them() {
        for jobs in [
            vec![job("dlv_a", b"one"), job("dlv_b", b"two")],
            vec![job("dlv_a", b""), job("dlv_b", b"")],
            vec![job("dlv_a", b"one"), job("dlv_b", b"")],
        ] {
            let bundle = Bundle::pack(jobs.clone());
            let decoded = Bundle::decode(bundle.encode_to_vec().as_slice()).unwrap();
            assert_eq!(decoded.unpack(), jobs);
        }
    }

    #[test]
    fn the_same_jobs_make_the_same_message_id_and_a_job_alone_keeps_its_delivery_id() {
        let ab = [job("dlv_a", b""), job("dlv_b", b"")];
        assert_eq!(bundle_msg_id(&ab), bundle_msg_id(&ab.clone()));
        assert_ne!(bundle_msg_id(&ab), bundle_msg_id(&ab[..1]));
        assert_eq!(bundle_msg_id(&ab[..1]), "dlv_a");
    }

    #[test]
    fn a_message_is_acknowledged_once_its_last_job_is_settled_and_only_then() {
        let carrier = Carrier::new("ack", 3);
        assert_eq!(carrier.alone(), None, "three jobs share it");
        assert_eq!(carrier.settle_one(), None);
        assert_eq!(carrier.settle_one(), None);
        assert_eq!(carrier.settle_one(), Some("ack"));
    }

    #[test]
    fn a_lane_is_draining_when_its_rate_would_empty_its_share_in_time() {
        let start = tokio::time::Instant::now();
        let mut hanging = Outflow::default();
        hanging.handed_out(2, start);
        assert!(
            !hanging.draining(start),
            "2 a second: a timeout now and then"
        );
        let mut busy = Outflow::default();
        busy.handed_out(40, start);
        assert!(busy.draining(start));
        // A second later the last second's rate still counts; two seconds later it is gone.
        assert!(busy.draining(start + Duration::from_millis(1500)));
        assert!(!busy.draining(start + Duration::from_millis(3500)));
    }

    #[test]
    fn a_job_alone_in_its_message_takes_the_whole_message_back() {
        let carrier = Carrier::new("nak", 1);
        assert_eq!(carrier.alone(), Some("nak"));
    }

    #[test]
    fn a_message_goes_back_whole_only_with_every_job_it_carries() {
        let carrier = Carrier::new("nak", 3);
        assert_eq!(carrier.whole(2), None, "one of its jobs is elsewhere");
        assert_eq!(carrier.whole(3), Some("nak"));
        let settled_one = Carrier::new("nak", 3);
        assert_eq!(settled_one.settle_one(), None);
        assert_eq!(settled_one.whole(2), None, "it carries three");
    }
}
