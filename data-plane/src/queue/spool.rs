//! The embedded queue: job records in an append-only journal in `--spool-dir/journal`, local to
//! the node (journal.rs), and the schedule (what is due when, what is leased) in memory.
//!
//! Only the records are durable: a job's record holds its attempt count, the time it is next due
//! and, once it failed for good, why. The schedule is rebuilt from them at start, where leases
//! are void anyway (whoever held them is gone). So an attempt costs the disk one append when it
//! settles (an ack removes the record, a retry rewrites it) and nothing when it is leased or
//! deferred. Enqueues are made durable by a group commit: concurrent callers share one sync.
//! Settling is not synced: a crash may forget an ack (a duplicate attempt) or a retry's new
//! count, never a job.
//!
//! Jobs enqueued by this process are kept in memory until leased (bounded), so the fan-out of
//! one request shares one body and a lease reads nothing back from disk.
//!
//! The spool's sled database stays for the node's other local state (outcomes, idempotency
//! keys); spools written when jobs lived in its `jobs` and `bodies` trees are moved into the
//! journal when opened.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use async_trait::async_trait;
use foldhash::{HashMap, HashMapExt as _};
use prost::Message as _;
use tokio::sync::Notify;
use tracing::warn;

use super::{
    Job, Leased, Purged, Queue, Receipt, Room, Storage,
    bodies::{Bodies, BodyKey},
    budget::{Charges, JOB_CHARGE, Limits, Refusal, SpoolBudget, SpoolUsage},
    hashed_key::{HashedKey, HashedMap, Lookup, Probe},
    journal::{Journal, Space},
    spill::{self, Spill},
    unix_ms, unix_ms_not_before,
};
use crate::{Error, metrics::Metrics};

/// How long a leased job stays invisible: longer than the longest attempt (60 s timeout) so a
/// live worker never sees its job handed out twice, short enough that a stuck one comes back.
const LEASE_TIME: Duration = Duration::from_secs(300);
/// Parked failed jobs kept for RetryDelivery; the oldest go first. They go sooner once their
/// first enqueue is older than `--payload-retention`.
const MAX_FAILED: usize = 10_000;
/// Jobs kept decoded in memory until their first lease. Beyond this a backlog lives on disk
/// only and each lease reads its record back.
const MAX_CACHED: usize = 100_000;
/// Jobs of a lane kept in memory while it waits; the later ones are spilled (spill.rs), so a
/// backlog costs memory in proportion to its lanes, not its jobs.
const WINDOW: usize = 1024;
/// Jobs waiting in memory across lanes: with many lanes each keeps fewer, down to
/// [`MIN_WINDOW`], so ten thousand backlogged subscriptions cost what a few dozen do.
const WINDOWED: usize = 100_000;
const MIN_WINDOW: usize = 16;
/// Trees of the earlier on-disk schedule, dropped when an old spool is opened.
const LEGACY_TREES: [&str; 3] = ["due", "leases", "failed"];
/// Trees that held the jobs and bodies before the journal; moved into it when opened.
const SLED_JOBS: &str = "jobs";
const SLED_BODIES: &str = "bodies";

#[derive(Clone, PartialEq, prost::Message)]
struct Record {
    #[prost(message, optional, tag = "1")]
    job: Option<Job>,
    #[prost(bool, tag = "2")]
    failed: bool,
    #[prost(uint64, tag = "3")]
    failed_ms: u64,
    #[prost(string, tag = "4")]
    reason: String,
    /// Unix ms before which the job is not handed out (a retry's wait); 0 = at once.
    #[prost(uint64, tag = "5")]
    not_before_ms: u64,
    /// The job's body and headers in `bodies` (see bodies.rs); empty: they are in the job.
    #[prost(bytes = "vec", tag = "6")]
    body_key: Vec<u8>,
}

/// A place in time order: (unix ms, tie-breaking sequence number).
type Slot = (u64, u64);

/// A held job's delivery id, hashed once when it is first held.
type Id = HashedKey<Arc<str>>;

fn probe(id: &str) -> Probe<'_> {
    Probe::new(id.as_bytes())
}

/// Where every held job stands. Waiting jobs sit in their lane (one per target) in due order:
/// the lane's earliest in memory, the rest in its spill on disk (spill.rs). `heads` orders the
/// lanes by their earliest job, so a lease visits lanes oldest first and skips a lane without
/// room in one step. Leased jobs sit in `leased` at their lease deadline, so a lease that is
/// never settled comes due again. `held` knows the jobs in memory (in a lane's window or
/// leased); a spilled job is known only by its entry in the spill and its record.
#[derive(Default)]
struct Schedule {
    lanes: HashMap<Arc<str>, Lane>,
    heads: BTreeSet<(Slot, Arc<str>)>,
    leased: BTreeMap<Slot, Id>,
    /// Sharded, so growing never stalls the lock for a whole rehash (hashed_key.rs).
    held: HashedMap<Arc<str>, Held>,
    failed: BTreeMap<Slot, Arc<str>>,
    failed_at: BTreeMap<Arc<str>, Slot>,
    cached: usize,
    seq: u64,
    /// Where spills are written; without one (tests of the schedule alone) every job stays in
    /// memory.
    spill_dir: Option<PathBuf>,
    spill_files: u64,
    /// Jobs in spills.
    spilled: usize,
}

/// One target's waiting jobs: up to [`WINDOW`] of its earliest in memory, the rest spilled.
#[derive(Default)]
struct Lane {
    window: BTreeMap<Slot, Id>,
    spill: Option<Spill>,
    /// Its place in `heads`.
    head: Option<Slot>,
}

struct Held {
    lane: Arc<str>,
    slot: Slot,
    leased: bool,
    /// The job as enqueued or deferred, until it is leased (see MAX_CACHED). Boxed: inline, a
    /// job made each entry of `held` about 370 bytes, moved whole on every insert, and the map
    /// (a lane's window of them and the leased ones, through a drain) several times larger.
    job: Option<Box<Job>>,
    /// The body its record names, so an ack removes the record without reading it back.
    body: Option<BodyKey>,
}

/// Where a lease takes a lane's next job from.
enum Next {
    Window(Slot),
    Spill(Slot),
}

impl Schedule {
    fn with_spill_dir(dir: PathBuf) -> Schedule {
        Schedule {
            spill_dir: Some(dir),
            ..Schedule::default()
        }
    }

    fn slot_at(&mut self, ms: u64) -> Slot {
        self.seq += 1;
        (ms, self.seq)
    }

    /// Jobs waiting or leased.
    fn depth(&self) -> usize {
        self.held.len() + self.spilled
    }

    /// Puts `lane`'s place in `heads` right after its window or spill changed; forgets a lane
    /// left empty.
    fn refresh_head(&mut self, lane: &Arc<str>) {
        let Some(state) = self.lanes.get_mut(lane) else {
            return;
        };
        let window = state.window.first_key_value().map(|(slot, _)| *slot);
        let spilled = state.spill.as_ref().and_then(Spill::first);
        let head = window.into_iter().chain(spilled).min();
        if head == state.head {
            return;
        }
        if let Some(old) = state.head {
            self.heads.remove(&(old, Arc::clone(lane)));
        }
        state.head = head;
        match head {
            Some(head) => {
                self.heads.insert((head, Arc::clone(lane)));
            }
            None => {
                // Dropping the spill deletes its file.
                self.lanes.remove(lane);
            }
        }
    }

    /// Places a waiting job in its lane: in the window while it has room or the job is earlier
    /// than the window's latest (which then goes to the spill), else in the spill. True when
    /// it is in the window, so `held` must know it.
    fn place(&mut self, lane: &Arc<str>, slot: Slot, id: &Id) -> bool {
        let lanes = self.lanes.len().max(1);
        let window = (WINDOWED / lanes).clamp(MIN_WINDOW, WINDOW);
        let run_len = (WINDOWED / lanes).clamp(MIN_WINDOW, spill::RUN_LEN);
        let state = self.lanes.entry(Arc::clone(lane)).or_default();
        let full = self.spill_dir.is_some() && state.window.len() >= window;
        let later = state
            .window
            .last_key_value()
            .is_some_and(|(last, _)| slot > *last);
        if full && later && self.spill(lane, slot, id, run_len) {
            self.refresh_head(lane);
            return false;
        }
        let Some(state) = self.lanes.get_mut(lane) else {
            return false;
        };
        state.window.insert(slot, id.clone());
        // A window left larger when there were fewer lanes shrinks as its lane takes more.
        let over = state.window.len().saturating_sub(window);
        if full {
            for _ in 0..over {
                self.evict_latest(lane, run_len);
            }
        }
        self.refresh_head(lane);
        // The job itself may have been among the latest that went.
        self.lanes
            .get(lane)
            .is_some_and(|state| state.window.contains_key(&slot))
    }

    /// Writes a waiting job to its lane's spill (made when the lane first needs one); false
    /// when that failed (the disk is full) and the job stays in memory.
    fn spill(&mut self, lane: &Arc<str>, slot: Slot, id: &Id, run_len: usize) -> bool {
        let (Some(dir), Some(state)) = (self.spill_dir.as_deref(), self.lanes.get_mut(lane)) else {
            return false;
        };
        let files = &mut self.spill_files;
        let spill = state.spill.get_or_insert_with(|| {
            *files += 1;
            Spill::new(dir.join(format!("{files}.spill")))
        });
        match spill.push(slot, id.key(), run_len) {
            Ok(()) => {
                self.spilled += 1;
                true
            }
            Err(e) => {
                warn!(error = %e, "a lane's spill could not be written; kept in memory");
                false
            }
        }
    }

    /// Moves the window's latest job to the spill (the disk is full: it stays).
    fn evict_latest(&mut self, lane: &Arc<str>, run_len: usize) {
        let Some((slot, id)) = self
            .lanes
            .get_mut(lane)
            .and_then(|state| state.window.pop_last())
        else {
            return;
        };
        if !self.spill(lane, slot, &id, run_len) {
            if let Some(state) = self.lanes.get_mut(lane) {
                state.window.insert(slot, id);
            }
            return;
        }
        if let Some(held) = self.held.remove(&id) {
            self.cached -= usize::from(held.job.is_some());
        }
    }

    fn window_remove(&mut self, lane: &Arc<str>, slot: Slot) {
        if let Some(state) = self.lanes.get_mut(lane) {
            state.window.remove(&slot);
            self.refresh_head(lane);
        }
    }

    fn take_out(&mut self, lane: &Arc<str>, slot: Slot, leased: bool) {
        if leased {
            self.leased.remove(&slot);
        } else {
            self.window_remove(lane, slot);
        }
    }

    /// Puts a job (new, or held already) in its lane, due at `due_ms`.
    fn hold(&mut self, id: &str, lane: &str, due_ms: u64, job: Option<Job>) {
        self.hold_naming_body(id, lane, due_ms, job, &[]);
    }

    /// [`Schedule::hold`] for a job whose record names stored body `body` (empty: the record
    /// keeps its body, or names the one it named before).
    fn hold_naming_body(
        &mut self,
        id: &str,
        lane: &str,
        due_ms: u64,
        job: Option<Job>,
        body: &[u8],
    ) {
        let lane = self.lane_name(lane);
        self.hold_key(HashedKey::new(Arc::from(id)), lane, due_ms, job, body);
    }

    /// [`Schedule::hold_naming_body`] of an id hashed already (once, for the release and the
    /// insert both), in `lane` unless it was held in another.
    fn hold_key(&mut self, id: Id, lane: Arc<str>, due_ms: u64, job: Option<Job>, body: &[u8]) {
        let (lane, before) = match self.release_key(&id) {
            Some(before) => (before.lane, before.body),
            None => (lane, None),
        };
        let body = BodyKey::try_from(body).ok().or(before);
        self.put_back(id, lane, due_ms, job, body);
    }

    /// `lane`'s name as its jobs share it: a held job's lane was a copy of its own, an
    /// allocation a job and its bytes in memory for as long as it was held.
    fn lane_name(&self, lane: &str) -> Arc<str> {
        self.lanes
            .get_key_value(lane)
            .map_or_else(|| Arc::from(lane), |(name, _)| Arc::clone(name))
    }

    /// Places a job that `held` does not know (any more) and, in memory, makes `held` know it.
    fn put_back(
        &mut self,
        id: Id,
        lane: Arc<str>,
        due_ms: u64,
        job: Option<Job>,
        body: Option<BodyKey>,
    ) {
        let slot = self.slot_at(due_ms);
        if !self.place(&lane, slot, &id) {
            return;
        }
        let job = job.filter(|_| self.cached < MAX_CACHED).map(Box::new);
        self.cached += usize::from(job.is_some());
        self.held.insert(
            id,
            Held {
                lane,
                slot,
                leased: false,
                job,
                body,
            },
        );
    }

    /// Records which stored body a held job's record names.
    fn name_body(&mut self, id: &Id, body: &[u8]) {
        let held = self.held.get_mut(id);
        if let (Some(held), Ok(key)) = (held, BodyKey::try_from(body)) {
            held.body = Some(key);
        }
    }

    /// Moves a held job to `due_ms`, keeping `job` in memory if given. False when it is not
    /// held.
    fn reschedule(&mut self, id: &str, due_ms: u64, job: Option<Job>) -> bool {
        let Some(lane) = self
            .held
            .get(probe(id).lookup())
            .map(|h| Arc::clone(&h.lane))
        else {
            return false;
        };
        self.hold(id, &lane, due_ms, job);
        true
    }

    /// Forgets a held job; returns what was held, `None` when it was not.
    fn release(&mut self, id: &str) -> Option<Held> {
        self.release_key(probe(id).lookup())
    }

    /// [`Schedule::release`] of a key hashed already.
    fn release_key(&mut self, id: &(dyn Lookup + '_)) -> Option<Held> {
        let held = self.held.remove(id)?;
        self.take_out(&held.lane, held.slot, held.leased);
        self.cached -= usize::from(held.job.is_some());
        Some(held)
    }

    fn park(&mut self, id: &str, failed_ms: u64) {
        let slot = self.slot_at(failed_ms);
        let id: Arc<str> = Arc::from(id);
        self.failed_at.insert(Arc::clone(&id), slot);
        self.failed.insert(slot, id);
    }

    fn unpark(&mut self, id: &str) -> bool {
        match self.failed_at.remove(id) {
            Some(slot) => {
                self.failed.remove(&slot);
                true
            }
            None => false,
        }
    }

    /// The lane's earliest job, if due at `now_ms`.
    fn next_due(&self, lane: &Arc<str>, now_ms: u64) -> Option<Next> {
        let state = self.lanes.get(lane)?;
        let window = state.window.first_key_value().map(|(slot, _)| *slot);
        let spilled = state.spill.as_ref().and_then(Spill::first);
        let next = match (window, spilled) {
            (Some(w), Some(s)) if s < w => Next::Spill(s),
            (Some(w), _) => Next::Window(w),
            (None, Some(s)) => Next::Spill(s),
            (None, None) => return None,
        };
        let (Next::Window(slot) | Next::Spill(slot)) = next;
        (slot.0 <= now_ms).then_some(next)
    }

    /// Takes up to `max` jobs due at `now_ms`, as many per lane as `room` allows, oldest lanes
    /// first, and leases each until `deadline_ms`. Cached jobs come back whole, the others by
    /// id (hashed already, so naming their bodies afterwards hashes nothing again).
    fn lease(
        &mut self,
        max: usize,
        now_ms: u64,
        deadline_ms: u64,
        room: &Room<'_>,
    ) -> (Vec<Job>, Vec<Id>) {
        self.expire_leases(now_ms);
        let due_lanes: Vec<Arc<str>> = self
            .heads
            .iter()
            .take_while(|(slot, _)| slot.0 <= now_ms)
            .map(|(_, lane)| Arc::clone(lane))
            .collect();
        let mut jobs = Vec::new();
        let mut ids = Vec::new();
        for lane in due_lanes {
            let wanted = max.saturating_sub(jobs.len() + ids.len());
            if wanted == 0 {
                break;
            }
            let take = room(&lane).min(wanted);
            for _ in 0..take {
                let id = match self.next_due(&lane, now_ms) {
                    None => break,
                    Some(Next::Window(slot)) => {
                        let Some(id) = self
                            .lanes
                            .get_mut(&lane)
                            .and_then(|state| state.window.remove(&slot))
                        else {
                            break;
                        };
                        self.refresh_head(&lane);
                        id
                    }
                    Some(Next::Spill(_)) => {
                        // Known to `held` only from here on, and leased at once: one insert,
                        // where placing it first and then finding it again took two probes of a
                        // map as large as the backlog in memory.
                        let Some(id) = self.unspill(&lane) else {
                            continue;
                        };
                        let lease_slot = self.slot_at(deadline_ms);
                        self.leased.insert(lease_slot, id.clone());
                        self.held.insert(
                            id.clone(),
                            Held {
                                lane: Arc::clone(&lane),
                                slot: lease_slot,
                                leased: true,
                                job: None,
                                body: None,
                            },
                        );
                        ids.push(id);
                        continue;
                    }
                };
                let lease_slot = self.slot_at(deadline_ms);
                self.leased.insert(lease_slot, id.clone());
                let Some(held) = self.held.get_mut(&id) else {
                    self.leased.remove(&lease_slot);
                    continue;
                };
                held.slot = lease_slot;
                held.leased = true;
                match held.job.take() {
                    Some(job) => {
                        self.cached -= 1;
                        jobs.push(*job);
                    }
                    None => ids.push(id),
                }
            }
        }
        (jobs, ids)
    }

    /// Takes the lane's earliest spilled job out of its spill (its record is read when it is
    /// handed out; the caller makes `held` know it); `None` when it could not be read (a restart
    /// finds it again).
    fn unspill(&mut self, lane: &Arc<str>) -> Option<Id> {
        let popped = self
            .lanes
            .get_mut(lane)
            .and_then(|state| state.spill.as_mut())
            .map(Spill::pop);
        let popped = match popped {
            Some(Ok(Some(popped))) => popped,
            Some(Err(e)) => {
                tracing::error!(error = %e, "a lane's spill could not be read; its jobs wait for a restart");
                self.drop_spill(lane);
                return None;
            }
            _ => return None,
        };
        self.spilled -= 1;
        self.refresh_head(lane);
        let (_, id) = popped;
        Some(HashedKey::new(Arc::from(id)))
    }

    fn drop_spill(&mut self, lane: &Arc<str>) {
        if let Some(spill) = self
            .lanes
            .get_mut(lane)
            .and_then(|state| state.spill.take())
        {
            self.spilled -= spill.len();
        }
        self.refresh_head(lane);
    }

    /// Leases that ran out: their jobs are due again at once.
    fn expire_leases(&mut self, now_ms: u64) {
        while let Some(entry) = self.leased.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let id = entry.remove();
            let Some(held) = self.held.remove(&id) else {
                continue;
            };
            self.cached -= usize::from(held.job.is_some());
            self.put_back(id, held.lane, now_ms, held.job.map(|job| *job), held.body);
        }
    }

    /// When something next comes due after `now_ms` (a lane waiting for room does not count:
    /// the caller learns of room itself).
    fn next_due_ms(&self, now_ms: u64) -> Option<u64> {
        let lane = self
            .heads
            .range(((now_ms + 1, 0), Arc::from(""))..)
            .next()
            .map(|(slot, _)| slot.0);
        let lease = self.leased.first_key_value().map(|(slot, _)| slot.0);
        lane.into_iter().chain(lease).min()
    }
}

/// How long opening waits for the spool's lock: a node that is exiting, or in tests the IO
/// threads of a handle just dropped, can hold it for a moment.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Opens the database, waiting up to [`LOCK_WAIT`] while another holder lets go of its lock.
fn open_when_free(config: &sled::Config) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            opened => return opened,
        }
    }
}

/// An enqueue's jobs with their bodies' keys, stored and synced, and the time they arrived (ms).
type Arrival = (u64, Vec<(Job, BodyKey)>);

/// The node-local [`Queue`].
pub struct Spool {
    db: sled::Db,
    journal: Journal,
    bodies: Bodies,
    schedule: Mutex<Schedule>,
    /// Jobs stored and synced by an enqueue, with the time they arrived, for the schedule to take
    /// in the next time anyone takes its lock. The ingress waits for nobody's lock but this one,
    /// held only to push or to swap: the schedule's is held by the delivery threads, at a lower
    /// priority, for whole leases, and a holder preempted there kept acknowledgements waiting.
    inbox: Mutex<Vec<Arrival>>,
    arrivals: Notify,
    lease_time: Duration,
    /// What each tenant holds against the cap and its share (budget.rs).
    budget: SpoolBudget,
    /// How long a parked job's body is kept after its first enqueue (`--payload-retention`).
    payload_retention: Option<Duration>,
}

impl Spool {
    /// Opens (or creates) the spool; jobs leased when the node last stopped are due again.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        // sled locks its directory, which also keeps a second node off this journal.
        let db = open_when_free(
            &sled::Config::new()
                .path(dir)
                .mode(sled::Mode::HighThroughput),
        )?;
        for name in LEGACY_TREES {
            db.drop_tree(name)?;
        }
        let journal = Journal::open(&dir.join("journal"))?;
        move_out_of_sled(&db, &journal)?;
        let bodies = Bodies::default();
        // Spills are rebuilt from the records: what a previous run left there is stale.
        let spills = dir.join("lanes");
        match std::fs::remove_dir_all(&spills) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        super::private_dir(&spills)?;
        let budget = SpoolBudget::default();
        let mut schedule = Schedule::with_spill_dir(spills);
        let mut unreadable = Vec::new();
        let mut stored_bodies = Vec::new();
        journal.for_each(|space, id, bytes| {
            if space == Space::Bodies {
                stored_bodies.push(id.to_vec());
                return Ok(());
            }
            let record = match Record::decode(bytes) {
                Ok(record) => record,
                Err(e) => {
                    warn!(error = %e, "dropping an unreadable spooled job");
                    unreadable.push(id.to_vec());
                    return Ok(());
                }
            };
            let id = String::from_utf8_lossy(id);
            let body_bytes = if record.body_key.is_empty() {
                0
            } else {
                bodies.count(&journal, &record.body_key)
            };
            if let Some(job) = &record.job {
                budget.ledger().replayed(job, body_bytes);
            }
            let since = record
                .job
                .as_ref()
                .map_or(record.failed_ms, |job| parked_since(&record, job));
            match record.job {
                Some(_) if record.failed => schedule.park(&id, since),
                Some(job) => {
                    schedule.hold_naming_body(
                        &id,
                        &job.lane(),
                        record.not_before_ms,
                        None,
                        &record.body_key,
                    );
                }
                None => {}
            }
            Ok(())
        })?;
        for id in unreadable {
            journal.delete(Space::Jobs, &id)?;
        }
        let orphans = bodies.collect_garbage(&journal, &stored_bodies)?;
        if orphans > 0 {
            warn!(orphans, "removed spooled bodies no job named");
        }
        Ok(Self {
            db,
            journal,
            bodies,
            schedule: Mutex::new(schedule),
            inbox: Mutex::default(),
            arrivals: Notify::new(),
            lease_time: LEASE_TIME,
            budget,
            payload_retention: None,
        })
    }

    /// Parked jobs first enqueued longer than `retention` ago are dropped with their bodies
    /// (`--payload-retention`); without it only their count bounds them.
    pub fn with_payload_retention(mut self, retention: Duration) -> Self {
        self.payload_retention = Some(retention);
        self
    }

    /// Bounds what new work may store from now on (budget.rs), counting refusals in `metrics`;
    /// what the spool holds was counted when it was opened.
    pub fn with_limits(mut self, limits: Limits, metrics: Arc<Metrics>) -> Self {
        self.budget.limit(limits, metrics);
        self
    }

    /// Bytes the journal takes on disk, what `--spool-max-bytes` bounds.
    pub fn disk_bytes(&self) -> u64 {
        self.journal.disk_bytes()
    }

    /// How long a leased job stays invisible (default [`LEASE_TIME`]); shorter in tests of
    /// lease expiry.
    pub fn with_lease_time(mut self, lease_time: Duration) -> Self {
        self.lease_time = lease_time;
        self
    }

    /// Makes everything the spool and the node-local state in its database hold durable.
    pub async fn flush(&self) -> Result<(), Error> {
        self.journal.sync().await?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Bytes of corrupt records the journal skipped when it was opened (see `journal.rs`).
    pub fn corrupt_bytes_skipped(&self) -> u64 {
        self.journal.skipped_bytes()
    }

    /// The database, for other node-local state that shares the spool's durability (outcomes).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The schedule, with every job enqueued so far in it.
    fn schedule(&self) -> MutexGuard<'_, Schedule> {
        let mut schedule = self.schedule.lock().unwrap_or_else(PoisonError::into_inner);
        let arrived =
            std::mem::take(&mut *self.inbox.lock().unwrap_or_else(PoisonError::into_inner));
        for (now, added) in arrived {
            for (job, body) in added {
                // Named before the job moves into the schedule, with no copy of either name.
                let id = HashedKey::new(Arc::from(job.delivery_id.as_str()));
                let lane = schedule.lane_name(&job.lane());
                schedule.hold_key(id, lane, now, Some(job), &body);
            }
        }
        schedule
    }

    /// The job's record; its job lacks body and headers when they are stored apart.
    fn read(&self, id: &str) -> Result<Option<Record>, Error> {
        match self.journal.get(Space::Jobs, id.as_bytes())? {
            Some(bytes) => Ok(Some(Record::decode(bytes.as_slice())?)),
            None => Ok(None),
        }
    }

    /// The records of jobs `ids`, in their order, each with its body and headers; their records
    /// are read together (`Journal::get_many`).
    fn read_whole_many(&self, ids: &[Id]) -> Result<Vec<Option<Record>>, Error> {
        let mut records = Vec::with_capacity(ids.len());
        let keys: Vec<&[u8]> = ids.iter().map(|id| id.key().as_bytes()).collect();
        for (id, bytes) in ids.iter().zip(self.journal.get_many(Space::Jobs, &keys)?) {
            let Some(bytes) = bytes else {
                records.push(None);
                continue;
            };
            let mut record = Record::decode(bytes.as_slice())?;
            if let Some(job) = record.job.as_mut()
                && !record.body_key.is_empty()
                && !self.bodies.fill(&self.journal, &record.body_key, job)?
            {
                warn!(
                    delivery_id = &**id.key(),
                    "a spooled job's body is missing; the job is dropped"
                );
                records.push(None);
                continue;
            }
            records.push(Some(record));
        }
        Ok(records)
    }

    /// Removes a job's record, and its body once no other job names it.
    fn forget(&self, id: &str) -> Result<(), Error> {
        if let Some(bytes) = self.journal.remove(Space::Jobs, id.as_bytes())? {
            let record = Record::decode(bytes.as_slice())?;
            let mut freed = 0;
            if !record.body_key.is_empty() {
                freed = self.bodies.release(&self.journal, &record.body_key, 1)?;
            }
            if let Some(job) = &record.job {
                self.budget
                    .ledger()
                    .release(&job.tenant_id, JOB_CHARGE + freed);
            }
        }
        Ok(())
    }

    /// A batch the budget refused. Held already in full (a redelivery of a request stored
    /// before), it adds nothing and is acknowledged once what holds it is synced; otherwise
    /// nothing of it is stored, and the refusal is counted and logged.
    async fn refused(&self, jobs: &[Job], refusal: Refusal) -> Result<(), Error> {
        let held = |job: &Job| {
            self.journal
                .contains(Space::Jobs, job.delivery_id.as_bytes())
        };
        if jobs.iter().all(held) {
            return self.journal.sync().await;
        }
        self.budget.refused(&refusal, Instant::now());
        Err(Error::SpoolFull(refusal))
    }

    /// Stores new jobs (a job whose id is held already is skipped) and returns the ones added,
    /// with what they cost in `charges`. Jobs with the same bytes (one request's fan-out) share
    /// one stored body.
    fn insert_new(
        &self,
        jobs: Vec<Job>,
        charges: &mut Charges,
    ) -> Result<Vec<(Job, BodyKey)>, Error> {
        let mut keys: Vec<BodyKey> = Vec::with_capacity(jobs.len());
        let mut first_use: Vec<(BodyKey, usize)> = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            // A fan-out shares one Bytes: hash it once.
            let same_as_last = i > 0 && {
                let last = &jobs[i - 1];
                last.body.as_ptr() == job.body.as_ptr()
                    && last.body.len() == job.body.len()
                    && last.headers == job.headers
            };
            let key = match keys.last() {
                Some(key) if same_as_last => *key,
                _ => Bodies::key_of(job),
            };
            if !first_use.iter().any(|(k, _)| *k == key) {
                first_use.push((key, i));
            }
            keys.push(key);
        }
        // Counted before the bodies are written, for every job that may name them; the ones
        // not added are given back below.
        let mut unused: HashMap<BodyKey, usize> = HashMap::new();
        for (key, i) in &first_use {
            let candidates = keys.iter().filter(|k| *k == key).count();
            let stored = self
                .bodies
                .retain(&self.journal, key, &jobs[*i], candidates)?;
            charges.body(&jobs[*i].tenant_id, stored);
            unused.insert(*key, 0);
        }
        // A body is charged to the tenant of the first job naming it (a request's jobs are one
        // tenant's).
        let owners: HashMap<BodyKey, String> = first_use
            .iter()
            .map(|(key, i)| (*key, jobs[*i].tenant_id.clone()))
            .collect();
        let mut records = Vec::with_capacity(jobs.len());
        for (mut job, key) in jobs.into_iter().zip(keys) {
            let body = std::mem::take(&mut job.body);
            let headers = std::mem::take(&mut job.headers);
            let mut record = Record {
                job: Some(job),
                body_key: key.to_vec(),
                ..Record::default()
            };
            let encoded = record.encode_to_vec();
            let Some(mut job) = record.job.take() else {
                continue;
            };
            job.body = body;
            job.headers = headers;
            records.push((job, key, encoded));
        }
        // Insert only if absent: a delivery id already held (or parked) is not added twice.
        let inserted = self.journal.insert_new_each(
            Space::Jobs,
            records
                .iter()
                .map(|(job, _, encoded)| (job.delivery_id.as_bytes(), encoded.as_slice())),
        )?;
        let mut added = Vec::with_capacity(records.len());
        for ((job, key, _), inserted) in records.into_iter().zip(inserted) {
            if inserted {
                charges.job(&job);
                added.push((job, key));
            } else {
                *unused.entry(key).or_default() += 1;
            }
        }
        for (key, n) in unused {
            if n > 0 {
                let gone = self.bodies.release(&self.journal, &key, n)?;
                charges.body_gone(owners.get(&key).map_or("", String::as_str), gone);
            }
        }
        Ok(added)
    }

    fn lease_due(&self, max: usize, room: &Room<'_>) -> Result<Vec<Job>, Error> {
        let now = unix_ms(SystemTime::now());
        let deadline = now + u64::try_from(self.lease_time.as_millis()).unwrap_or(u64::MAX);
        let (mut leased, uncached) = self.schedule().lease(max, now, deadline, room);
        // Room for the jobs read back too: a job is about 300 bytes, and growing the vector
        // one push at a time moved them all again (0.5 % of a drain's samples).
        leased.reserve(uncached.len());
        let mut named = Vec::with_capacity(uncached.len());
        let mut gone = Vec::new();
        let records = self.read_whole_many(&uncached)?;
        for (id, record) in uncached.into_iter().zip(records) {
            match record {
                Some(Record {
                    job: Some(job),
                    failed: false,
                    body_key,
                    ..
                }) => {
                    leased.push(job);
                    named.push((id, body_key));
                }
                // Settled between the schedule and the read.
                _ => gone.push(id),
            }
        }
        if !named.is_empty() || !gone.is_empty() {
            // A job read back (spilled, or past the cache) learns its body here, so its ack
            // removes the record without reading it a second time: in a drain of a spilled
            // backlog that second read was most of the ack's cost.
            let mut schedule = self.schedule();
            for (id, body_key) in &named {
                schedule.name_body(id, body_key);
            }
            for id in &gone {
                schedule.release(id.key());
            }
        }
        Ok(leased)
    }

    /// Drops the oldest parked failures beyond the bound, and those whose first enqueue is
    /// past the payload retention at `now`; the latter's bodies are erased from the disk soon.
    fn prune_failed(&self, now: SystemTime) -> Result<(), Error> {
        let expired_before = self
            .payload_retention
            .and_then(|retention| now.checked_sub(retention))
            .map_or(0, unix_ms);
        let mut expired = 0usize;
        loop {
            let oldest = {
                let mut schedule = self.schedule();
                let Some(((since, _), _)) = schedule.failed.first_key_value() else {
                    break;
                };
                let past = *since < expired_before;
                if schedule.failed.len() <= MAX_FAILED && !past {
                    break;
                }
                expired += usize::from(past);
                let Some((_, id)) = schedule.failed.pop_first() else {
                    break;
                };
                schedule.failed_at.remove(&id);
                id
            };
            self.forget(&oldest)?;
        }
        if expired > 0 {
            tracing::info!(
                jobs = expired,
                "parked deliveries past the payload retention dropped with their bodies"
            );
            self.journal.erase_soon();
        }
        Ok(())
    }

    /// Parked jobs past the payload retention, dropped now (the engine drops queued ones when
    /// it next leases them); the node calls this now and then, since nothing else may touch a
    /// parked job for days.
    pub fn prune_parked(&self, now: SystemTime) -> Result<(), Error> {
        self.prune_failed(now)
    }
}

/// Where a parked job sorts among the parked: by its first enqueue, what `--payload-retention`
/// counts from (a record parked before jobs knew it: when it failed).
fn parked_since(record: &Record, job: &Job) -> u64 {
    match job.first_enqueued_ms {
        0 => record.failed_ms,
        ms => ms,
    }
}

/// The spool's lease receipt. It holds nothing: the spool settles a lease by its job's delivery
/// id, which its records and schedule are keyed by ([`Queue::ack`]). A copy of the id in each
/// receipt, and the box around it, were two of the drain's allocations a delivery
/// (docs/BENCHMARKS.md, change 37); a box of nothing allocates nothing.
struct SpoolReceipt;

#[async_trait]
impl Queue for Spool {
    async fn enqueue(&self, jobs: Vec<Job>) -> Result<(), Error> {
        if jobs.is_empty() {
            return Ok(());
        }
        // While the disk refuses writes nothing new is taken: the caller answers 503 and the
        // node holds no work it cannot store.
        self.journal.writable()?;
        let now = unix_ms(SystemTime::now());
        let claim = match self.budget.claim(&jobs, || self.journal.disk_bytes()) {
            Ok(claim) => claim,
            Err(refusal) => return self.refused(&jobs, refusal).await,
        };
        let mut charges = Charges::default();
        let added = self.insert_new(jobs, &mut charges)?;
        claim.settle(charges);
        let synced = self.journal.sync().await;
        // Held even when the sync failed: the journal keeps the records and the next sync that
        // succeeds makes them durable, so the sender's retry of the same ids (a no-op here)
        // waits for that sync and is answered truthfully, and the jobs are delivered.
        self.inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((now, added));
        self.arrivals.notify_waiters();
        synced
    }

    async fn lease(
        &self,
        max: usize,
        wait: Duration,
        room: &Room<'_>,
    ) -> Result<Vec<Leased>, Error> {
        let give_up = tokio::time::Instant::now() + wait;
        loop {
            let arrival = self.arrivals.notified();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            let leased = self.lease_due(max, room)?;
            if !leased.is_empty() || max == 0 {
                return Ok(leased
                    .into_iter()
                    .map(|job| Leased {
                        receipt: Receipt::new(SpoolReceipt),
                        job,
                    })
                    .collect());
            }
            let now = tokio::time::Instant::now();
            if now >= give_up {
                return Ok(Vec::new());
            }
            let mut wake = give_up;
            let now_ms = unix_ms(SystemTime::now());
            if let Some(due_ms) = self.schedule().next_due_ms(now_ms) {
                let in_ms = due_ms.saturating_sub(now_ms);
                wake = wake.min(now + Duration::from_millis(in_ms));
            }
            tokio::select! {
                () = arrival => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn ack(&self, leased: Leased) -> Result<(), Error> {
        let SpoolReceipt = leased.receipt.open()?;
        let delivery_id = leased.job.delivery_id.as_str();
        // Out of the schedule first: an enqueue of the same id racing this ack then either sees
        // the record (a duplicate of what was just delivered, skipped) or finds both gone.
        let held = self.schedule().release(delivery_id);
        match held.and_then(|held| Some((held.body?, held.lane))) {
            Some((body, lane)) => {
                if self.journal.delete(Space::Jobs, delivery_id.as_bytes())? {
                    let freed = self.bodies.release(&self.journal, &body, 1)?;
                    self.budget.ledger().release_lane(&lane, JOB_CHARGE + freed);
                }
                Ok(())
            }
            // Not held, or its record keeps its body inline: the record says.
            None => self.forget(delivery_id),
        }
    }

    async fn retry(
        &self,
        leased: Leased,
        attempts: u32,
        not_before: SystemTime,
    ) -> Result<(), Error> {
        let SpoolReceipt = leased.receipt.open()?;
        let delivery_id = leased.job.delivery_id.as_str();
        let Some(mut record) = self.read(delivery_id)? else {
            return Ok(());
        };
        let due_ms = unix_ms_not_before(not_before);
        if let Some(job) = record.job.as_mut() {
            job.attempts = attempts;
        }
        record.not_before_ms = due_ms;
        self.journal
            .insert(Space::Jobs, delivery_id.as_bytes(), &record.encode_to_vec())?;
        self.schedule().reschedule(delivery_id, due_ms, None);
        self.arrivals.notify_waiters();
        Ok(())
    }

    async fn defer(&self, leased: Leased, not_before: SystemTime) -> Result<(), Error> {
        let job = leased.job;
        // Memory only: after a restart the job is due at once, which a deferral allows. The job
        // stays decoded so its next lease reads nothing back.
        let id = job.delivery_id.clone();
        self.schedule()
            .reschedule(&id, unix_ms_not_before(not_before), Some(job));
        self.arrivals.notify_waiters();
        Ok(())
    }

    async fn fail(&self, leased: Leased, attempts: u32, reason: &str) -> Result<(), Error> {
        let SpoolReceipt = leased.receipt.open()?;
        let delivery_id = leased.job.delivery_id.as_str();
        let Some(mut record) = self.read(delivery_id)? else {
            return Ok(());
        };
        let now = unix_ms(SystemTime::now());
        if let Some(job) = record.job.as_mut() {
            job.attempts = attempts;
        }
        record.failed = true;
        record.failed_ms = now;
        record.reason = reason.to_owned();
        let since = record
            .job
            .as_ref()
            .map_or(now, |job| parked_since(&record, job));
        {
            let mut schedule = self.schedule();
            if schedule.release(delivery_id).is_none() {
                return Ok(());
            }
            schedule.park(delivery_id, since);
        }
        self.journal
            .insert(Space::Jobs, delivery_id.as_bytes(), &record.encode_to_vec())?;
        self.prune_failed(SystemTime::now())
    }

    async fn requeue_failed(&self, delivery_id: &str) -> Result<bool, Error> {
        let Some(record) = self.read(delivery_id)? else {
            return Ok(false);
        };
        let (true, Some(mut job)) = (record.failed, record.job) else {
            return Ok(false);
        };
        let now = unix_ms(SystemTime::now());
        job.grant_fresh_budget(now);
        let lane = job.lane().into_owned();
        let body_key = record.body_key;
        let encoded = Record {
            job: Some(job),
            body_key: body_key.clone(),
            ..Record::default()
        }
        .encode_to_vec();
        if !self.schedule().unpark(delivery_id) {
            return Ok(false);
        }
        self.journal
            .insert(Space::Jobs, delivery_id.as_bytes(), &encoded)?;
        self.journal.sync().await?;
        {
            let mut schedule = self.schedule();
            schedule.hold_naming_body(delivery_id, &lane, now, None, &body_key);
        }
        self.arrivals.notify_waiters();
        Ok(true)
    }

    async fn purge_tenant(&self, tenant_id: &str, before: SystemTime) -> Result<Purged, Error> {
        let before_ms = unix_ms(before);
        let mut doomed: Vec<(String, bool)> = Vec::new();
        self.journal.for_each(|space, id, bytes| {
            if space != Space::Jobs {
                return Ok(());
            }
            // An unreadable record was dropped when the spool was opened.
            let Ok(record) = Record::decode(bytes) else {
                return Ok(());
            };
            if let Some(job) = &record.job
                && job.tenant_id == tenant_id
                && job.first_enqueued_ms <= before_ms
            {
                doomed.push((String::from_utf8_lossy(id).into_owned(), record.failed));
            }
            Ok(())
        })?;
        let mut purged = Purged::default();
        for (id, failed) in &doomed {
            {
                let mut schedule = self.schedule();
                // A spilled job is not held: its lease finds no record and lets it go.
                schedule.release(id);
                schedule.unpark(id);
            }
            if self.journal.contains(Space::Jobs, id.as_bytes()) {
                self.forget(id)?;
                if *failed {
                    purged.parked += 1;
                } else {
                    purged.queued += 1;
                }
            }
        }
        if purged != Purged::default() {
            // The removals are durable before the copies that leave them out replace the files.
            self.journal.sync().await?;
            self.journal.erase_settled().await?;
        }
        Ok(purged)
    }

    async fn depth(&self) -> Result<u64, Error> {
        Ok(self.schedule().depth() as u64)
    }

    fn storage(&self) -> Storage {
        self.journal.storage()
    }

    fn usage(&self) -> Option<SpoolUsage> {
        Some(self.budget.usage(self.journal.disk_bytes()))
    }

    /// An ack here is a few map updates and a tombstone appended in memory. Made by the task
    /// that also leases, no ack waits on the lock a lease holds, and the maps stay in one
    /// thread's cache (in a drain's profile, lock waits 1 % to none, acks 7-9 % to 6-7 % of the
    /// samples: docs/BENCHMARKS.md, change 38).
    fn acks_between_leases(&self) -> bool {
        true
    }
}

/// Moves jobs and bodies a spool kept in sled before the journal into the journal, durably, then
/// drops their trees.
fn move_out_of_sled(db: &sled::Db, journal: &Journal) -> Result<(), Error> {
    let names = db.tree_names();
    let mut moved = 0usize;
    for (name, space) in [(SLED_BODIES, Space::Bodies), (SLED_JOBS, Space::Jobs)] {
        if !names.iter().any(|n| n.as_ref() == name.as_bytes()) {
            continue;
        }
        for entry in db.open_tree(name)?.iter() {
            let (key, value) = entry?;
            journal.insert(space, &key, &value)?;
            moved += 1;
        }
    }
    if moved > 0 {
        journal.sync_blocking()?;
    }
    for name in [SLED_BODIES, SLED_JOBS] {
        db.drop_tree(name)?;
    }
    if moved > 0 {
        db.flush()?;
        tracing::info!(
            records = moved,
            "moved the spool's jobs from sled into its journal"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::queue::unlimited;

    fn job(id: &str) -> Job {
        Job {
            delivery_id: id.to_owned(),
            event_id: "evt_1".to_owned(),
            forwarding_set_id: "fwd_1".to_owned(),
            body: bytes::Bytes::from_static(b"{\"events\":[]}"),
            first_enqueued_ms: unix_ms(SystemTime::now()),
            ..Job::default()
        }
    }

    const NO_WAIT: Duration = Duration::ZERO;

    async fn lease_now(spool: &Spool, max: usize) -> Vec<Job> {
        leased_jobs(spool.lease(max, NO_WAIT, &unlimited).await.unwrap())
    }

    /// What comes due within a second: a job retried or deferred to "now" is due at the next
    /// millisecond, as due times are rounded up.
    async fn lease_soon(spool: &Spool, max: usize) -> Vec<Job> {
        leased_jobs(
            spool
                .lease(max, Duration::from_secs(1), &unlimited)
                .await
                .unwrap(),
        )
    }

    fn leased_jobs(leased: Vec<Leased>) -> Vec<Job> {
        leased.into_iter().map(|l| l.job).collect()
    }

    /// A lease of `id` as the engine would hand it back (the spool needs only the id).
    fn by_id(id: &str) -> Leased {
        by_job(Job {
            delivery_id: id.to_owned(),
            ..Job::default()
        })
    }

    fn by_job(job: Job) -> Leased {
        Leased {
            receipt: Receipt::new(SpoolReceipt),
            job,
        }
    }

    #[tokio::test]
    async fn an_enqueued_job_is_still_there_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spool = Spool::open(dir.path()).unwrap();
            spool.enqueue(vec![job("dlv_a")]).await.unwrap();
        }
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.depth().await.unwrap(), 1);
        let leased = lease_now(&spool, 10).await;
        assert_eq!(leased, vec![job_with_time("dlv_a", &leased[0])]);
    }

    fn job_with_time(id: &str, like: &Job) -> Job {
        Job {
            first_enqueued_ms: like.first_enqueued_ms,
            ..job(id)
        }
    }

    #[tokio::test]
    async fn a_leased_job_is_not_handed_out_twice() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.enqueue(vec![job("dlv_a")]).await.unwrap();
        assert_eq!(lease_now(&spool, 10).await.len(), 1);
        assert!(lease_now(&spool, 10).await.is_empty());
    }

    #[test]
    fn opening_waits_for_a_holder_that_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let held = Spool::open(dir.path()).unwrap();
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        Spool::open(dir.path()).unwrap();
        letting_go.join().unwrap();
    }

    #[tokio::test]
    async fn a_job_leased_when_the_node_stopped_is_due_again_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spool = Spool::open(dir.path()).unwrap();
            spool.enqueue(vec![job("dlv_a")]).await.unwrap();
            assert_eq!(lease_now(&spool, 10).await.len(), 1);
        }
        let spool = Spool::open(dir.path()).unwrap();
        let leased = lease_now(&spool, 10).await;
        assert_eq!(leased.len(), 1);
        assert_eq!(leased[0].delivery_id, "dlv_a");
    }

    #[tokio::test]
    async fn an_acked_job_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.enqueue(vec![job("dlv_a")]).await.unwrap();
        lease_now(&spool, 10).await;
        spool.ack(by_id("dlv_a")).await.unwrap();
        assert_eq!(spool.depth().await.unwrap(), 0);
        drop(spool);
        let spool = Spool::open(dir.path()).unwrap();
        assert!(lease_now(&spool, 10).await.is_empty());
    }

    #[tokio::test]
    async fn a_retried_job_keeps_its_wait_and_its_count_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let later = SystemTime::now() + Duration::from_millis(1_500);
        {
            let spool = Spool::open(dir.path()).unwrap();
            spool.enqueue(vec![job("dlv_a")]).await.unwrap();
            lease_now(&spool, 1).await;
            spool.retry(by_id("dlv_a"), 2, later).await.unwrap();
        }
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.depth().await.unwrap(), 1);
        assert!(lease_now(&spool, 1).await.is_empty());
        let leased = leased_jobs(
            spool
                .lease(1, Duration::from_secs(5), &unlimited)
                .await
                .unwrap(),
        );
        assert_eq!(leased[0].attempts, 2);
        assert!(SystemTime::now() + Duration::from_millis(5) >= later);
    }

    #[tokio::test]
    async fn a_failed_job_stays_parked_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spool = Spool::open(dir.path()).unwrap();
            spool.enqueue(vec![job("dlv_a")]).await.unwrap();
            lease_now(&spool, 1).await;
            spool
                .fail(by_id("dlv_a"), 1, "404 Not Found")
                .await
                .unwrap();
        }
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.depth().await.unwrap(), 0);
        assert!(lease_now(&spool, 1).await.is_empty());
        assert!(spool.requeue_failed("dlv_a").await.unwrap());
        assert_eq!(lease_now(&spool, 1).await.len(), 1);
    }

    #[tokio::test]
    async fn a_spool_written_with_the_on_disk_due_index_opens_with_its_jobs_due() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let record = Record {
                job: Some(job("dlv_a")),
                ..Record::default()
            };
            db.open_tree("jobs")
                .unwrap()
                .insert("dlv_a", record.encode_to_vec())
                .unwrap();
            let mut lease_key = u64::MAX.to_be_bytes().to_vec();
            lease_key.extend_from_slice(b"dlv_a");
            db.open_tree("due")
                .unwrap()
                .insert(&lease_key, &[])
                .unwrap();
            db.open_tree("leases")
                .unwrap()
                .insert("dlv_a", lease_key)
                .unwrap();
            db.flush().unwrap();
        }
        let spool = Spool::open(dir.path()).unwrap();
        assert!(!spool.db().tree_names().iter().any(|n| n.as_ref() == b"due"));
        let leased = lease_now(&spool, 10).await;
        assert_eq!(leased.len(), 1);
        assert_eq!(leased[0].delivery_id, "dlv_a");
    }

    #[tokio::test]
    async fn jobs_a_spool_kept_in_sled_are_moved_into_the_journal_and_survive_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = fan_out(&["dlv_a", "dlv_b"]);
        let body_key = Bodies::key_of(&jobs[0]);
        {
            let db = sled::open(dir.path()).unwrap();
            let stored = crate::queue::bodies::tests::stored(&jobs[0]);
            db.open_tree(SLED_BODIES)
                .unwrap()
                .insert(body_key, stored)
                .unwrap();
            for job in &jobs {
                let record = Record {
                    job: Some(Job {
                        body: bytes::Bytes::new(),
                        headers: Vec::new(),
                        ..job.clone()
                    }),
                    body_key: body_key.to_vec(),
                    ..Record::default()
                };
                db.open_tree(SLED_JOBS)
                    .unwrap()
                    .insert(job.delivery_id.as_bytes(), record.encode_to_vec())
                    .unwrap();
            }
            db.flush().unwrap();
        }
        drop(Spool::open(dir.path()).unwrap());
        let spool = Spool::open(dir.path()).unwrap();
        let names = spool.db().tree_names();
        assert!(!names.iter().any(|n| n.as_ref() == SLED_JOBS.as_bytes()));
        let mut leased = lease_now(&spool, 10).await;
        leased.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
        assert_eq!(ids(&leased), ["dlv_a", "dlv_b"]);
        assert_eq!(leased[0].body, jobs[0].body);
        assert_eq!(leased[1].headers, jobs[1].headers);
    }

    #[tokio::test]
    async fn a_lanes_jobs_beyond_its_window_wait_on_disk_and_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let n = WINDOW * 3 + 7;
        let all: Vec<String> = (0..n).map(|i| format!("dlv_{i:06}")).collect();
        {
            let spool = Spool::open(dir.path()).unwrap();
            spool
                .enqueue(all.iter().map(|id| job(id)).collect())
                .await
                .unwrap();
            assert_eq!(spool.depth().await.unwrap(), n as u64);
            {
                let schedule = spool.schedule();
                assert_eq!(schedule.held.len(), WINDOW, "only the window is in memory");
                assert_eq!(schedule.spilled, n - WINDOW);
            }
            let first = lease_now(&spool, 10).await;
            assert_eq!(
                ids(&first),
                all[..10].iter().map(String::as_str).collect::<Vec<_>>()
            );
            for job in &first {
                spool.ack(by_id(&job.delivery_id)).await.unwrap();
            }
        }
        // Rebuilt from the records at start, spilled again, handed out in order.
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.depth().await.unwrap(), (n - 10) as u64);
        assert!(spool.schedule().held.len() <= WINDOW);
        let rest = lease_now(&spool, n).await;
        assert_eq!(
            ids(&rest),
            all[10..].iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert_eq!(spool.schedule().spilled, 0);
    }

    #[tokio::test]
    async fn a_job_earlier_than_a_full_window_goes_into_it_and_the_latest_is_spilled() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let later = SystemTime::now() + Duration::from_secs(3600);
        // A window full of retries due in an hour...
        let retries: Vec<Job> = (0..WINDOW).map(|i| job(&format!("dlv_r{i:05}"))).collect();
        spool.enqueue(retries).await.unwrap();
        for job in lease_now(&spool, WINDOW).await {
            spool
                .retry(by_id(&job.delivery_id), 1, later)
                .await
                .unwrap();
        }
        // ...does not keep a job due now waiting behind it.
        spool.enqueue(vec![job("dlv_now")]).await.unwrap();
        assert_eq!(ids(&lease_now(&spool, 10).await), ["dlv_now"]);
        assert_eq!(spool.depth().await.unwrap(), WINDOW as u64 + 1);
    }

    #[test]
    fn with_many_lanes_waiting_each_keeps_fewer_jobs_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let mut schedule = Schedule::with_spill_dir(dir.path().to_owned());
        let lanes = WINDOWED / MIN_WINDOW + 1_000;
        // Subscriptions whose targets are all down, their events arriving in turn.
        for n in 0..MIN_WINDOW + 4 {
            for lane in 0..lanes {
                schedule.hold(&format!("dlv_{lane}_{n}"), &format!("sub_{lane}"), 0, None);
            }
        }
        assert_eq!(schedule.depth(), lanes * (MIN_WINDOW + 4));
        assert_eq!(schedule.held.len(), lanes * MIN_WINDOW);
        // Each job is handed out once.
        let (_, ids) = schedule.lease(usize::MAX, 1, 1_000, &unlimited);
        assert_eq!(ids.len(), lanes * (MIN_WINDOW + 4));
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
    }

    #[test]
    fn a_window_left_large_shrinks_as_its_lane_takes_more_and_keeps_each_job_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut schedule = Schedule::with_spill_dir(dir.path().to_owned());
        for n in 0..WINDOW as u64 {
            schedule.hold(&format!("dlv_a{n}"), "sub_a", 100 + n, None);
        }
        // More lanes: each may keep fewer now.
        for lane in 0..199 {
            schedule.hold(&format!("dlv_other{lane}"), &format!("sub_{lane}"), 0, None);
        }
        // A job among the latest of the large window.
        schedule.hold("dlv_late", "sub_a", 100 + WINDOW as u64 - 2, None);
        assert_eq!(
            schedule.lanes[&Arc::<str>::from("sub_a")].window.len(),
            WINDOWED / 200
        );
        assert_eq!(schedule.depth(), WINDOW + 200, "each job counted once");
        let only_a = |lane: &str| if lane == "sub_a" { usize::MAX } else { 0 };
        let (_, ids) = schedule.lease(usize::MAX, u64::MAX / 2, u64::MAX, &only_a);
        assert_eq!(ids.len(), WINDOW + 1);
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
    }

    #[test]
    fn a_lease_never_settled_comes_due_again_after_the_lease_time() {
        let mut schedule = Schedule::default();
        schedule.hold("dlv_a", "fwd_1", 0, None);
        let names = |ids: Vec<Id>| {
            ids.iter()
                .map(|id| id.key().to_string())
                .collect::<Vec<_>>()
        };
        let (_, ids) = schedule.lease(10, 1, 1_000, &unlimited);
        assert_eq!(names(ids), ["dlv_a"]);
        assert_eq!(schedule.lease(10, 999, 2_000, &unlimited).1.len(), 0);
        assert_eq!(
            names(schedule.lease(10, 1_000, 2_000, &unlimited).1),
            ["dlv_a"]
        );
    }

    #[tokio::test]
    async fn an_acked_job_is_not_read_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spool = Spool::open(dir.path()).unwrap();
            spool
                .enqueue(vec![job("dlv_a"), job("dlv_b")])
                .await
                .unwrap();
            lease_now(&spool, 10).await;
            spool.ack(by_id("dlv_a")).await.unwrap();
        }
        let spool = Spool::open(dir.path()).unwrap();
        let leased = lease_now(&spool, 10).await;
        let ids: Vec<_> = leased.iter().map(|j| j.delivery_id.as_str()).collect();
        assert_eq!(ids, vec!["dlv_b"]);
    }

    fn job_for(id: &str, set: &str) -> Job {
        Job {
            forwarding_set_id: set.to_owned(),
            ..job(id)
        }
    }

    fn ids(jobs: &[Job]) -> Vec<&str> {
        jobs.iter().map(|j| j.delivery_id.as_str()).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_enqueue_completes_while_a_delivery_thread_holds_the_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(dir.path()).unwrap());
        let (locked, is_locked) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn({
            let spool = Arc::clone(&spool);
            move || {
                let _schedule = spool.schedule.lock().unwrap();
                locked.send(()).unwrap();
                // Bounded, so that an enqueue that waits for this lock fails the test, not hangs it.
                let _ = released.recv_timeout(Duration::from_secs(60));
            }
        });
        is_locked.recv().unwrap();
        let enqueuing = tokio::spawn({
            let spool = Arc::clone(&spool);
            async move { spool.enqueue(vec![job("dlv_a")]).await }
        });
        let enqueued = tokio::time::timeout(Duration::from_secs(30), enqueuing).await;
        release.send(()).unwrap();
        holder.join().unwrap();
        enqueued
            .expect("the enqueue waited for the schedule's lock")
            .unwrap()
            .unwrap();
        assert_eq!(ids(&lease_now(&spool, 10).await), ["dlv_a"]);
    }

    #[tokio::test]
    async fn a_lane_without_room_is_passed_over_and_keeps_its_order() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let jobs = vec![
            job_for("dlv_a1", "fwd_a"),
            job_for("dlv_a2", "fwd_a"),
            job_for("dlv_b1", "fwd_b"),
        ];
        spool.enqueue(jobs).await.unwrap();
        let b_only = |lane: &str| usize::from(lane == "fwd_b");
        assert_eq!(
            ids(&leased_jobs(
                spool.lease(10, NO_WAIT, &b_only).await.unwrap()
            )),
            vec!["dlv_b1"]
        );
        let leased = lease_now(&spool, 10).await;
        assert_eq!(ids(&leased), vec!["dlv_a1", "dlv_a2"]);
    }

    #[tokio::test]
    async fn a_lease_takes_no_more_of_a_lane_than_its_room() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let jobs = (0..5)
            .map(|i| job_for(&format!("dlv_{i}"), "fwd_a"))
            .collect();
        spool.enqueue(jobs).await.unwrap();
        let two = |_: &str| 2;
        assert_eq!(
            leased_jobs(spool.lease(10, NO_WAIT, &two).await.unwrap()).len(),
            2
        );
        assert_eq!(
            leased_jobs(spool.lease(10, NO_WAIT, &two).await.unwrap()).len(),
            2
        );
        assert_eq!(
            leased_jobs(spool.lease(10, NO_WAIT, &two).await.unwrap()).len(),
            1
        );
    }

    #[tokio::test]
    async fn waiting_with_no_room_anywhere_returns_empty_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.enqueue(vec![job("dlv_a")]).await.unwrap();
        let none = |_: &str| 0;
        let leased = leased_jobs(
            spool
                .lease(10, Duration::from_millis(100), &none)
                .await
                .unwrap(),
        );
        assert!(leased.is_empty());
        assert_eq!(lease_now(&spool, 10).await.len(), 1);
    }

    #[test]
    fn an_agent_reply_to_line_has_a_lane_of_its_own() {
        let reply = Job {
            leg: crate::queue::Leg::LinePush as i32,
            ..job_for("dlv_a", "fwd_a")
        };
        assert_eq!(reply.lane(), "fwd_a#line-push");
        assert_eq!(job_for("dlv_b", "fwd_a").lane(), "fwd_a");
    }

    fn fan_out(ids: &[&str]) -> Vec<Job> {
        let body = bytes::Bytes::from_static(b"{\"events\":[{\"type\":\"message\"}]}");
        ids.iter()
            .map(|id| Job {
                body: body.clone(),
                headers: vec![crate::queue::Header {
                    name: "x-line-signature".into(),
                    value: "c2ln".into(),
                }],
                ..job_for(id, id)
            })
            .collect()
    }

    #[tokio::test]
    async fn a_fan_out_stores_its_body_once_and_every_job_gets_it_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = fan_out(&["dlv_a", "dlv_b", "dlv_c"]);
        {
            let spool = Spool::open(dir.path()).unwrap();
            spool.enqueue(jobs.clone()).await.unwrap();
            assert_eq!(spool.journal.len(Space::Bodies), 1);
        }
        let spool = Spool::open(dir.path()).unwrap();
        let mut leased = lease_now(&spool, 10).await;
        leased.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
        let leased: Vec<_> = leased
            .into_iter()
            .map(|j| Job {
                first_enqueued_ms: 0,
                ..j
            })
            .collect();
        let expected: Vec<_> = jobs
            .into_iter()
            .map(|j| Job {
                first_enqueued_ms: 0,
                ..j
            })
            .collect();
        assert_eq!(leased, expected);
    }

    #[tokio::test]
    async fn a_body_goes_with_the_last_job_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.enqueue(fan_out(&["dlv_a", "dlv_b"])).await.unwrap();
        ack_both_and_see_the_body_go_with_the_last(&spool).await;
    }

    /// Leases and acks the fan-out `dlv_a`, `dlv_b`: its body outlives the first ack only.
    async fn ack_both_and_see_the_body_go_with_the_last(spool: &Spool) {
        lease_now(spool, 10).await;
        spool.ack(by_id("dlv_a")).await.unwrap();
        assert_eq!(spool.journal.len(Space::Bodies), 1);
        spool.ack(by_id("dlv_b")).await.unwrap();
        assert_eq!(spool.journal.len(Space::Bodies), 0);
    }

    #[tokio::test]
    async fn a_body_goes_with_the_last_job_naming_it_after_reopening_too() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spool = Spool::open(dir.path()).unwrap();
            spool.enqueue(fan_out(&["dlv_a", "dlv_b"])).await.unwrap();
        }
        let spool = Spool::open(dir.path()).unwrap();
        ack_both_and_see_the_body_go_with_the_last(&spool).await;
        assert_eq!(spool.journal.len(Space::Jobs), 0);
    }

    #[tokio::test]
    async fn a_duplicate_enqueue_does_not_keep_a_body_alive() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.enqueue(fan_out(&["dlv_a"])).await.unwrap();
        spool.enqueue(fan_out(&["dlv_a"])).await.unwrap();
        lease_now(&spool, 10).await;
        spool.ack(by_id("dlv_a")).await.unwrap();
        assert_eq!(spool.journal.len(Space::Bodies), 0);
    }

    #[tokio::test]
    async fn a_body_a_crash_left_without_jobs_is_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spool = Spool::open(dir.path()).unwrap();
            spool.enqueue(fan_out(&["dlv_a"])).await.unwrap();
            // What an ack interrupted between the job's removal and its body's leaves.
            spool.journal.remove(Space::Jobs, b"dlv_a").unwrap();
        }
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.journal.len(Space::Bodies), 0);
    }

    #[tokio::test]
    async fn a_requeued_failure_comes_back_with_its_body() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let jobs = fan_out(&["dlv_a"]);
        spool.enqueue(jobs.clone()).await.unwrap();
        lease_now(&spool, 1).await;
        spool
            .fail(by_id("dlv_a"), 1, "404 Not Found")
            .await
            .unwrap();
        assert!(spool.requeue_failed("dlv_a").await.unwrap());
        let leased = lease_now(&spool, 1).await;
        assert_eq!(leased[0].body, jobs[0].body);
        assert_eq!(leased[0].headers, jobs[0].headers);
    }

    #[tokio::test]
    async fn enqueueing_a_delivery_id_already_held_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.enqueue(vec![job("dlv_a")]).await.unwrap();
        spool
            .enqueue(vec![job("dlv_a"), job("dlv_b")])
            .await
            .unwrap();
        assert_eq!(spool.depth().await.unwrap(), 2);
        assert_eq!(lease_now(&spool, 10).await.len(), 2);
    }

    #[tokio::test]
    async fn a_retried_job_waits_until_its_time_and_keeps_its_attempt_count() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.enqueue(vec![job("dlv_a")]).await.unwrap();
        lease_now(&spool, 1).await;
        let later = SystemTime::now() + Duration::from_millis(300);
        spool.retry(by_id("dlv_a"), 1, later).await.unwrap();
        assert!(lease_now(&spool, 1).await.is_empty());
        let leased = leased_jobs(
            spool
                .lease(1, Duration::from_secs(2), &unlimited)
                .await
                .unwrap(),
        );
        assert_eq!(leased.len(), 1);
        assert_eq!(leased[0].attempts, 1);
        assert!(SystemTime::now() + Duration::from_millis(5) >= later);
    }

    #[tokio::test]
    async fn a_deferred_job_keeps_its_attempt_count() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.enqueue(vec![job("dlv_a")]).await.unwrap();
        lease_now(&spool, 1).await;
        spool
            .retry(by_id("dlv_a"), 3, SystemTime::now())
            .await
            .unwrap();
        let deferred = lease_soon(&spool, 1).await.into_iter().next().unwrap();
        spool
            .defer(by_job(deferred), SystemTime::now())
            .await
            .unwrap();
        let leased = lease_soon(&spool, 1).await;
        assert_eq!(leased[0].attempts, 3);
    }

    #[tokio::test]
    async fn a_waiting_lease_wakes_when_a_job_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let spool = std::sync::Arc::new(Spool::open(dir.path()).unwrap());
        let waiter = {
            let spool = std::sync::Arc::clone(&spool);
            tokio::spawn(async move { spool.lease(1, Duration::from_secs(5), &unlimited).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        spool.enqueue(vec![job("dlv_a")]).await.unwrap();
        let leased = waiter.await.unwrap().unwrap();
        assert_eq!(leased.len(), 1);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_failed_job_is_parked_and_can_be_requeued_with_a_fresh_budget() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.enqueue(vec![job("dlv_a")]).await.unwrap();
        lease_now(&spool, 1).await;
        spool
            .retry(by_id("dlv_a"), 5, SystemTime::now())
            .await
            .unwrap();
        lease_now(&spool, 1).await;
        spool
            .fail(by_id("dlv_a"), 6, "404 Not Found")
            .await
            .unwrap();
        assert_eq!(spool.depth().await.unwrap(), 0);
        assert!(lease_now(&spool, 1).await.is_empty());

        assert!(spool.requeue_failed("dlv_a").await.unwrap());
        let leased = lease_now(&spool, 1).await;
        assert_eq!(leased[0].attempts, 6);
        assert_eq!(leased[0].attempts_in_budget(), 0);
        assert_eq!(spool.depth().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn requeueing_an_unknown_or_pending_job_does_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.enqueue(vec![job("dlv_a")]).await.unwrap();
        assert!(!spool.requeue_failed("dlv_a").await.unwrap());
        assert!(!spool.requeue_failed("dlv_zz").await.unwrap());
        assert_eq!(spool.depth().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn concurrent_enqueues_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let spool = std::sync::Arc::new(Spool::open(dir.path()).unwrap());
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let spool = std::sync::Arc::clone(&spool);
                tokio::spawn(async move { spool.enqueue(vec![job(&format!("dlv_{i}"))]).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        drop(spool);
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.depth().await.unwrap(), 32);
    }

    /// Every file under `dir` holds `marker` somewhere.
    fn on_disk(dir: &Path, marker: &[u8]) -> bool {
        let mut found = false;
        let mut dirs = vec![dir.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let bytes = std::fs::read(&path).unwrap();
                    found |= bytes.windows(marker.len()).any(|w| w == marker);
                }
            }
        }
        found
    }

    fn tenant_job(id: &str, tenant: &str, set: &str, text: &str, enqueued: SystemTime) -> Job {
        Job {
            tenant_id: tenant.to_owned(),
            forwarding_set_id: set.to_owned(),
            body: bytes::Bytes::from(format!(
                "{{\"events\":[{{\"message\":{{\"text\":\"{text}\"}}}}]}}"
            )),
            first_enqueued_ms: unix_ms(enqueued),
            ..job(id)
        }
    }

    #[tokio::test]
    async fn a_purge_drops_the_tenants_queued_and_parked_jobs_and_no_byte_of_their_bodies_stays_on_disk()
     {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let earlier = SystemTime::now() - Duration::from_secs(60);
        spool
            .enqueue(vec![tenant_job(
                "dlv_parked",
                "tnt_a",
                "fwd_a",
                "parked-secret-7f3a",
                earlier,
            )])
            .await
            .unwrap();
        lease_now(&spool, 1).await;
        spool.fail(by_id("dlv_parked"), 20, "503").await.unwrap();
        spool
            .enqueue(vec![
                tenant_job(
                    "dlv_queued",
                    "tnt_a",
                    "fwd_a",
                    "queued-secret-7f3a",
                    earlier,
                ),
                tenant_job("dlv_other", "tnt_b", "fwd_b", "other-tenant-body", earlier),
            ])
            .await
            .unwrap();
        let purge_time = SystemTime::now();
        let later = purge_time + Duration::from_secs(1);
        spool
            .enqueue(vec![tenant_job(
                "dlv_later",
                "tnt_a",
                "fwd_a",
                "after-the-purge",
                later,
            )])
            .await
            .unwrap();
        spool.flush().await.unwrap();
        assert!(on_disk(dir.path(), b"queued-secret-7f3a"));
        assert!(on_disk(dir.path(), b"parked-secret-7f3a"));

        let purged = spool.purge_tenant("tnt_a", purge_time).await.unwrap();

        assert_eq!(
            purged,
            Purged {
                queued: 1,
                parked: 1
            }
        );
        assert!(!on_disk(dir.path(), b"queued-secret-7f3a"));
        assert!(!on_disk(dir.path(), b"parked-secret-7f3a"));
        assert!(on_disk(dir.path(), b"other-tenant-body"));
        assert!(on_disk(dir.path(), b"after-the-purge"));
        assert!(!spool.requeue_failed("dlv_parked").await.unwrap());
        let mut left = ids(&lease_now(&spool, 10).await)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        left.sort();
        assert_eq!(left, ["dlv_later", "dlv_other"]);
        assert_eq!(
            spool.purge_tenant("tnt_a", purge_time).await.unwrap(),
            Purged::default()
        );
        drop(spool);
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.depth().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_purged_job_waiting_in_a_spill_is_not_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let earlier = SystemTime::now() - Duration::from_secs(60);
        let jobs: Vec<Job> = (0..WINDOW + 10)
            .map(|i| tenant_job(&format!("dlv_{i:05}"), "tnt_a", "fwd_a", "x", earlier))
            .collect();
        spool.enqueue(jobs).await.unwrap();
        let purged = spool
            .purge_tenant("tnt_a", SystemTime::now())
            .await
            .unwrap();
        assert_eq!(purged.queued, (WINDOW + 10) as u64);
        assert!(lease_now(&spool, WINDOW + 10).await.is_empty());
    }

    #[tokio::test]
    async fn parked_jobs_past_the_payload_retention_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path())
            .unwrap()
            .with_payload_retention(Duration::from_secs(3600));
        let now = SystemTime::now();
        for (id, age) in [("dlv_old", 7200), ("dlv_young", 60)] {
            let enqueued = now - Duration::from_secs(age);
            spool
                .enqueue(vec![tenant_job(id, "tnt_a", "fwd_a", "x", enqueued)])
                .await
                .unwrap();
            lease_now(&spool, 1).await;
            spool.fail(by_id(id), 3, "503").await.unwrap();
        }
        // Parked past its retention: gone at once.
        assert!(!spool.requeue_failed("dlv_old").await.unwrap());
        spool.prune_parked(now + Duration::from_secs(60)).unwrap();
        let young = tenant_job("dlv_young", "tnt_a", "fwd_a", "x", now);
        assert!(
            spool
                .journal
                .contains(Space::Jobs, young.delivery_id.as_bytes())
        );
        spool.prune_parked(now + Duration::from_secs(3600)).unwrap();
        assert!(!spool.requeue_failed("dlv_young").await.unwrap());
    }
}
