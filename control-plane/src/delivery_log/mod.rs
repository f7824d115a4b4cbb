//! The delivery log: attempts reported by nodes (bounded per target by count and age, stored in
//! pages: `pages`), the state of each delivery not yet delivered folded from them (bounded by
//! age), and DeliveryService over both. A delivered delivery keeps no record: at thousands of
//! deliveries a second, one record each for the retention age would be the bulk of the store and
//! of its writes, and only a failed delivery can be retried.

mod pages;
mod recent;
mod trees;
mod upgrade;

use std::collections::HashSet;
use std::collections::hash_map::Entry;
use std::ops::Bound;
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt as _};

pub(crate) use pages::TREE as ATTEMPT_PAGES;
pub(crate) use upgrade::move_attempts_into_pages;

use hookplane_proto::v1::delivery_service_server::{self, DeliveryService};
use hookplane_proto::v1::{
    AttemptOutcome, Delivery, DeliveryAttempt, DeliveryState, GetTargetHealthRequest, HealthHour,
    ListDeliveryAttemptsRequest, ListDeliveryAttemptsResponse, RecoverDeliveriesRequest,
    RecoverDeliveriesResponse, RetryDeliveryRequest, TargetHealth,
};
use tokio::sync::broadcast;
use tonic::{Request, Response, Status};

use crate::audit::AuditLog;
use crate::caller::Caller;
use crate::clock::Time;
use crate::error::Error;
use crate::ids;
use crate::pagination::{self, Page};
use crate::store::Store;
use crate::validate;
use pages::{Shelf, place, place_key, target_prefix};
use recent::{IdHash, IdSet, RecentIds};
pub(crate) use trees::DeliveryRecord;
use trees::LogTrees;

/// How many attempts and for how long they are kept per forwarding set or subscription.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retention {
    pub count: usize,
    pub age: Duration,
}

#[derive(Clone)]
pub(crate) struct DeliveryLog {
    store: Store,
    /// Its trees and page index, shared by every clone.
    trees: std::sync::Arc<LogTrees>,
    retention: Retention,
    /// How long accepted attempts may wait in memory before they are written to pages.
    hold: Duration,
    /// Delivery ids an admin asked to retry, for the config streams to pass on to nodes.
    retries: broadcast::Sender<RetryBatch>,
    /// Told of every new forward attempt, for failure reminders.
    notifier: Option<std::sync::Arc<dyn ForwardAttemptSink>>,
}

/// Who hears of each forward attempt the log stores (the notifier, for failure reminders). A
/// trait, so the log knows nothing of the notifier, which reads the store on its own.
pub(crate) trait ForwardAttemptSink: Send + Sync {
    /// `attempts` were stored just now, each with the time it was made.
    fn forward_attempts_stored(&self, attempts: &[(&DeliveryAttempt, Time)]);
}

/// Delivery ids to re-enqueue, passed to every node in one config update: a recover sends
/// thousands at once, which one broadcast slot per id would overflow.
pub(crate) type RetryBatch = std::sync::Arc<[String]>;

/// Ids per [`RetryBatch`] a recover sends: the broadcast keeps a bounded number of batches for
/// a slow stream, so a recover of many takes few of them.
const RECOVER_BATCH: usize = 1000;

/// Delivery records a sweep reads per turn of the lock.
const SWEEP_CHUNK: usize = 1000;

/// How far back a target's stored attempts are remembered by id when its first batch since the
/// store was opened arrives: a node sends a report again within this, even across a restart.
const RESENT_WITHIN: Duration = Duration::from_secs(600);

/// What the attempt log keeps in memory while the store is open. It lives behind the store's
/// delivery-log lock, as it is only true while every writer of the pages holds that lock.
#[derive(Default)]
pub(crate) struct Shelves {
    /// The targets written since the store was opened.
    targets: HashMap<String, Shelf>,
    recent: RecentIds,
    /// Attempts accepted but not yet written to pages (see [`DeliveryLog::with_hold`]): per
    /// target, its newest, at most twice the retention count between trims.
    held_back: HashMap<String, Vec<DeliveryAttempt>>,
    /// When the oldest attempt held back was accepted.
    held_since: Option<Instant>,
    /// Vectors of attempts held back and since written, emptied, for the next targets held
    /// back. Made anew at each hold, a busy target's vector grew by doubling to thousands of
    /// attempts every second: large blocks, freed at once, that the allocator keeps a moment
    /// before it gives them back, most of a standalone node's growth at the start of a drain
    /// (docs/BENCHMARKS.md, change 44).
    spare: Vec<Vec<DeliveryAttempt>>,
}

/// Spare vectors kept at most. Each has room for up to twice the retention count and a batch:
/// at the default count of 1,000, about a MiB.
const SPARE_HELD: usize = 16;

impl Shelves {
    /// After a writer failed half-way: each target is read from the tree again at its next batch.
    pub fn forget_targets(&mut self) {
        self.targets.clear();
    }
}

/// The forwarding set or subscription an accepted attempt is listed under.
fn target_of(attempt: &DeliveryAttempt) -> &str {
    if attempt.forwarding_set_id.is_empty() {
        &attempt.subscription_id
    } else {
        &attempt.forwarding_set_id
    }
}

fn state_after(outcome: i32) -> Option<DeliveryState> {
    match AttemptOutcome::try_from(outcome) {
        Ok(AttemptOutcome::Succeeded) => Some(DeliveryState::Delivered),
        Ok(AttemptOutcome::Failed) => Some(DeliveryState::DeliveryFailed),
        Ok(AttemptOutcome::Retrying) => Some(DeliveryState::Pending),
        _ => None,
    }
}

/// When `attempt` was made, by its own clock or else `now`; `None` for an attempt without a
/// target, which the log does not take.
fn accepted_time(node_id: &str, attempt: &DeliveryAttempt, now: Time) -> Option<Time> {
    if attempt.forwarding_set_id.is_empty() && attempt.subscription_id.is_empty() {
        tracing::debug!(node_id, "dropped a delivery attempt without a target");
        return None;
    }
    Some(
        attempt
            .time
            .as_ref()
            .and_then(Time::from_proto)
            .unwrap_or(now),
    )
}

/// The copy of an accepted attempt the log keeps, with what the node left out filled in.
fn kept_copy(node_id: &str, attempt: &DeliveryAttempt, time: Time) -> DeliveryAttempt {
    let mut kept = attempt.clone();
    if kept.id.is_empty() {
        kept.id = ids::new_id(ids::ATTEMPT);
    }
    if kept.node_id.is_empty() {
        node_id.clone_into(&mut kept.node_id);
    }
    kept.time = Some(time.to_proto());
    kept
}

/// The record of a delivery first heard of through `attempt`.
fn new_record(attempt: &DeliveryAttempt, time: Time) -> DeliveryRecord {
    DeliveryRecord {
        id: attempt.delivery_id.clone(),
        event_id: attempt.event_id.clone(),
        forwarding_set_id: attempt.forwarding_set_id.clone(),
        subscription_id: attempt.subscription_id.clone(),
        state: DeliveryState::Pending as i32,
        attempts: 0,
        last_reason: String::new(),
        last_attempt_time: time,
    }
}

/// A delivery's record with a batch's new attempts folded in, written once per batch. A record
/// not stored yet is made only when it is written: most deliveries are delivered at their first
/// attempt and keep none, and making one for each, four strings copied and freed, was about a
/// twentieth of the attempt-log writer's samples in a drain (docs/BENCHMARKS.md, change 37).
struct Fold<'a> {
    base: Base<'a>,
    attempts: u32,
    state: i32,
    last_attempt_time: Time,
    /// The reason of the attempt that decided, copied into the record only when it is written.
    reason: Option<&'a str>,
}

/// What a fold's record is made from.
enum Base<'a> {
    /// The record the store held before this batch.
    Stored(DeliveryRecord),
    /// None yet: a new one is made of the delivery's first attempt of the batch, at its time.
    New(&'a DeliveryAttempt, Time),
}

impl<'a> Fold<'a> {
    /// The fold of a delivery first met in this batch through `first`.
    fn new(stored: Option<DeliveryRecord>, first: &'a DeliveryAttempt, time: Time) -> Self {
        let (attempts, state, last_attempt_time, base) = match stored {
            Some(record) => (
                record.attempts,
                record.state,
                record.last_attempt_time,
                Base::Stored(record),
            ),
            None => (
                0,
                DeliveryState::Pending as i32,
                time,
                Base::New(first, time),
            ),
        };
        Fold {
            base,
            attempts,
            state,
            last_attempt_time,
            reason: None,
        }
    }

    fn add(&mut self, attempt: &'a DeliveryAttempt, time: Time) {
        self.attempts = self.attempts.saturating_add(1);
        // Batches from several nodes may arrive out of order: the latest attempt decides.
        if time >= self.last_attempt_time {
            if let Some(state) = state_after(attempt.outcome) {
                self.state = state as i32;
            }
            self.reason = Some(&attempt.reason);
            self.last_attempt_time = time;
        }
    }

    /// Writes the record, or removes it once the delivery is delivered: only deliveries that may
    /// still need a retry are kept, so the tree holds the failures, not every delivery made.
    fn write(self, trees: &LogTrees) -> Result<(), Error> {
        if self.state == DeliveryState::Delivered as i32 {
            if let Base::Stored(stored) = &self.base {
                trees.remove_delivery(&stored.id)?;
            }
            return Ok(());
        }
        let mut record = match self.base {
            Base::Stored(record) => record,
            Base::New(first, time) => new_record(first, time),
        };
        record.attempts = self.attempts;
        record.state = self.state;
        record.last_attempt_time = self.last_attempt_time;
        if let Some(reason) = self.reason {
            reason.clone_into(&mut record.last_reason);
        }
        trees.put_delivery(&record)
    }
}

impl DeliveryLog {
    /// The delivery log of `store`. Open one per store: its page index is only true while
    /// every writer of the pages goes through it (clones share it).
    pub fn new(
        store: Store,
        retention: Retention,
        retries: broadcast::Sender<RetryBatch>,
    ) -> Result<DeliveryLog, Error> {
        Ok(DeliveryLog {
            trees: std::sync::Arc::new(LogTrees::open(&store)?),
            store,
            retention,
            hold: Duration::ZERO,
            retries,
            notifier: None,
        })
    }

    /// Holds accepted attempts back for up to `hold` and writes them to pages together, the
    /// newest retention count of each target only. While a target gets more attempts a second
    /// than its retention count (a backlog draining at tens of thousands a second), most of its
    /// attempts would be written only to be trimmed by the next batches, and writing pages was
    /// most of what an attempt cost the control plane (docs/BENCHMARKS.md). Whatever reads pages
    /// writes the held-back attempts first, so no reader sees the difference; a crash forgets
    /// up to `hold` of the log (the deliveries are not affected, nor the records of deliveries
    /// not delivered, which are written at once).
    pub fn with_hold(mut self, hold: Duration) -> DeliveryLog {
        self.hold = hold;
        self
    }

    /// How many attempts of `target` are written to pages (not those held back).
    #[cfg(test)]
    pub(crate) fn written(&self, target: &str) -> usize {
        Shelf::load(self.trees.attempt_pages(), target)
            .map(|shelf| shelf.held())
            .unwrap_or_default()
    }

    /// This log with another retention, sharing its trees and page index.
    #[cfg(test)]
    fn with_retention(&self, retention: Retention) -> DeliveryLog {
        DeliveryLog {
            retention,
            ..self.clone()
        }
    }

    /// Feeds every newly stored forward attempt to `notifier`.
    pub fn with_notifier(
        mut self,
        notifier: std::sync::Arc<dyn ForwardAttemptSink>,
    ) -> DeliveryLog {
        self.notifier = Some(notifier);
        self
    }

    /// Stores a node's batch of attempts; returns how many were stored. Attempts naming neither a
    /// forwarding set nor a subscription cannot be listed, so they are dropped; an attempt stored
    /// lately (the node sends a report again when it missed the answer) is not stored again. Once
    /// it returns, each target of the batch holds at most its newest `retention.count` attempts,
    /// none older than the retention age.
    pub fn record(&self, node_id: &str, attempts: &[DeliveryAttempt]) -> Result<u64, Error> {
        let mut shelves = self.trees.lock();
        let recorded = self.record_shelved(&mut shelves, node_id, attempts);
        if recorded.is_err() {
            shelves.forget_targets();
        }
        recorded
    }

    /// Reads the batch where it lies (its reporter keeps a share) and copies only what it holds
    /// back: each target's newest retention count of the batch, which is all of it unless a
    /// batch brings a target more. The copies are made and freed on this thread. Before, the
    /// node copied every attempt for its report and this thread freed the copy: a free across
    /// threads for each of a dozen strings (docs/BENCHMARKS.md, change 36).
    fn record_shelved(
        &self,
        shelves: &mut Shelves,
        node_id: &str,
        attempts: &[DeliveryAttempt],
    ) -> Result<u64, Error> {
        let tree = self.trees.attempt_pages();
        let now = Time::now();
        let cutoff = now.minus(self.retention.age).unix_micros();
        // What waited its hold goes first: while the store refuses writes, a batch is refused
        // before any of it is taken, and waits on its node rather than piling up here.
        if self.hold_is_over(shelves) {
            self.write_held_back(shelves, cutoff)?;
        }
        let batch: Vec<(&DeliveryAttempt, Time)> = attempts
            .iter()
            .filter_map(|attempt| Some((attempt, accepted_time(node_id, attempt, now)?)))
            .collect();
        let accepted = batch.len() as u64;

        for (attempt, _) in &batch {
            let target = target_of(attempt);
            if !shelves.targets.contains_key(target) {
                // First written since the store was opened: its recent attempts are remembered
                // too, so that a report sent again across a restart is still known.
                let shelf = Shelf::load(tree, target)?;
                for stored in shelf.read_since(tree, now.minus(RESENT_WITHIN).unix_micros())? {
                    let id = shelves.recent.hash(&stored.id);
                    shelves.recent.insert(id);
                }
                shelves.targets.insert(target.to_owned(), shelf);
            }
        }

        // An attempt without an id is given one when it is kept: it cannot have been stored.
        let ids: Vec<Option<IdHash>> = batch
            .iter()
            .map(|(a, _)| (!a.id.is_empty()).then(|| shelves.recent.hash(&a.id)))
            .collect();
        let mut in_batch = IdSet::default();
        let is_new: Vec<bool> = ids
            .iter()
            .map(|id| id.is_none_or(|id| !shelves.recent.contains(id) && in_batch.insert(id)))
            .collect();
        let mut folds: HashMap<&str, Fold<'_>> = HashMap::new();
        let mut fresh = Vec::new();
        for (&(attempt, time), _) in batch.iter().zip(&is_new).filter(|(_, new)| **new) {
            if !attempt.delivery_id.is_empty() {
                let fold = match folds.entry(&attempt.delivery_id) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        // The tree holds only deliveries not yet delivered, so this lookup is
                        // in a small tree, and finds nothing for most first attempts.
                        let stored = self.trees.find_delivery(&attempt.delivery_id)?;
                        e.insert(Fold::new(stored, attempt, time))
                    }
                };
                fold.add(attempt, time);
            }
            if self.notifier.is_some() && !attempt.forwarding_set_id.is_empty() {
                fresh.push((attempt, time));
            }
        }
        for fold in folds.into_values() {
            fold.write(&self.trees)?;
        }
        if let Some(notifier) = &self.notifier {
            notifier.forward_attempts_stored(&fresh);
        }

        // Retention would remove at once an attempt already past the age; it still counted for
        // its delivery above.
        let mut by_target: HashMap<&str, Vec<(&DeliveryAttempt, Time)>> = HashMap::new();
        for (&(attempt, time), new) in batch.iter().zip(&is_new) {
            if *new && time.unix_micros() >= cutoff {
                by_target
                    .entry(target_of(attempt))
                    .or_default()
                    .push((attempt, time));
            }
        }
        let count = self.retention.count;
        for (target, mut newest) in by_target {
            // Of this batch only a target's newest `count` can outlast retention.
            keep_first_by(&mut newest, count, |(a, at), (b, bt)| {
                (bt.unix_micros(), b.id.as_str()).cmp(&(at.unix_micros(), a.id.as_str()))
            });
            let held = shelves
                .held_back
                .entry(target.to_owned())
                .or_insert_with(|| shelves.spare.pop().unwrap_or_default());
            held.extend(
                newest
                    .into_iter()
                    .map(|(attempt, time)| kept_copy(node_id, attempt, time)),
            );
            // Trimmed now and then rather than at every batch: the sort is per attempt.
            if held.len() > count.saturating_mul(2) {
                keep_newest(held, count);
            }
        }
        // Remembered once held: written or not, the node is told they are stored, and an
        // attempt held back whose write fails stays held back for the next one.
        for (id, new) in ids.into_iter().zip(&is_new) {
            if let Some(id) = id
                && *new
            {
                shelves.recent.insert(id);
            }
        }
        if shelves.held_back.is_empty() {
            return Ok(accepted);
        }
        shelves.held_since.get_or_insert_with(Instant::now);
        if self.hold_is_over(shelves) {
            self.write_held_back(shelves, cutoff)?;
        }
        Ok(accepted)
    }

    /// Writes the attempts held back to pages, each target's newest retention count, and trims
    /// each target written to its retention. On a failure the attempts not written stay held
    /// back, and the target's shelf is read from the tree again at the next write.
    fn write_held_back(&self, shelves: &mut Shelves, cutoff: u64) -> Result<(), Error> {
        let tree = self.trees.attempt_pages();
        let count = self.retention.count;
        let held_back = std::mem::take(&mut shelves.held_back);
        shelves.held_since = None;
        let mut failed = None;
        for (target, mut attempts) in held_back {
            if failed.is_some() {
                shelves.held_back.insert(target, attempts);
                continue;
            }
            keep_newest(&mut attempts, count);
            let shelf = match shelves.targets.entry(target.clone()) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => match Shelf::load(tree, &target) {
                    Ok(shelf) => e.insert(shelf),
                    Err(err) => {
                        failed = Some(err);
                        shelves.held_back.insert(target, attempts);
                        continue;
                    }
                },
            };
            match shelf.add_and_trim(tree, &attempts, count, cutoff) {
                Ok(_) => {
                    if shelves.spare.len() < SPARE_HELD {
                        attempts.clear();
                        shelves.spare.push(attempts);
                    }
                }
                Err(e) => {
                    shelves.targets.remove(&target);
                    shelves.held_back.insert(target, attempts);
                    failed = Some(e);
                }
            }
        }
        match failed {
            Some(e) => {
                shelves.held_since = Some(Instant::now());
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// Whether attempts are held back and the oldest has waited its hold.
    fn hold_is_over(&self, shelves: &Shelves) -> bool {
        shelves
            .held_since
            .is_some_and(|since| since.elapsed() >= self.hold)
    }

    /// Writes whatever is held back, for a reader of pages (which holds the lock already).
    fn write_all_held(&self, shelves: &mut Shelves) -> Result<(), Error> {
        if shelves.held_since.is_none() {
            return Ok(());
        }
        let cutoff = Time::now().minus(self.retention.age).unix_micros();
        self.write_held_back(shelves, cutoff)
    }

    /// Writes whatever is held back, for a reader of pages or a writer that stops.
    pub fn write_held(&self) -> Result<(), Error> {
        self.write_all_held(&mut self.trees.lock())
    }

    /// Writes what is held back once it has waited its hold, for a writer with nothing else to
    /// do.
    pub fn write_held_if_due(&self) -> Result<(), Error> {
        let mut shelves = self.trees.lock();
        if self.hold_is_over(&shelves) {
            self.write_all_held(&mut shelves)
        } else {
            Ok(())
        }
    }

    /// Applies retention to every target, and forgets deliveries whose last attempt is older than
    /// the retention age (and delivered ones). Returns how many attempts were removed.
    pub fn sweep(&self) -> Result<usize, Error> {
        let now = Time::now();
        let cutoff = now.minus(self.retention.age);
        let tree = self.trees.attempt_pages();
        let mut shelves = self.trees.lock();
        self.write_all_held(&mut shelves)?;
        // Every shelf read from the tree again, so that one that went wrong somehow is right again.
        shelves.forget_targets();
        let cutoff_micros = cutoff.unix_micros();
        let mut removed = 0;
        for (target, mut shelf) in Shelf::load_all(tree)? {
            removed += shelf.trim_now(tree, self.retention.count, cutoff_micros)?;
            // Idle targets whose attempts all aged out need no shelf.
            if shelf.held() > 0 {
                shelves.targets.insert(target, shelf);
            }
        }
        drop(shelves);
        self.forget_deliveries(cutoff)?;
        Ok(removed)
    }

    /// Removes the records of deliveries last attempted before `cutoff`, and delivered ones (an
    /// earlier version kept a record of every delivery). The lock is taken per chunk: the first
    /// sweep after an upgrade may remove millions of records, and reports must not wait for all
    /// of them.
    fn forget_deliveries(&self, cutoff: Time) -> Result<(), Error> {
        let deliveries = self.trees.deliveries();
        let mut after: Option<sled::IVec> = None;
        loop {
            let _guard = self.trees.lock();
            let chunk = match after.take() {
                Some(key) => deliveries.range((Bound::Excluded(key), Bound::Unbounded)),
                None => deliveries.iter(),
            };
            let mut read = 0;
            for entry in chunk.take(SWEEP_CHUNK) {
                let (key, value) = entry?;
                let record: DeliveryRecord = crate::store::decode("deliveries", &value)?;
                if record.last_attempt_time < cutoff
                    || record.state == DeliveryState::Delivered as i32
                {
                    deliveries.remove(&key)?;
                }
                after = Some(key);
                read += 1;
            }
            if read < SWEEP_CHUNK {
                return Ok(());
            }
        }
    }

    /// Removes a tenant's attempts, and the records of its deliveries not yet delivered, for
    /// PurgeTenantData; returns how many of each. `targets` are the tenant's forwarding sets and
    /// subscriptions as the store knows them; a deleted target's pages name the tenant in their
    /// attempts, so those go too.
    pub fn purge_tenant(
        &self,
        tenant_id: &str,
        targets: &HashSet<String>,
    ) -> Result<(u64, u64), Error> {
        let mut shelves = self.trees.lock();
        self.write_all_held(&mut shelves)?;
        let removed = pages::remove_targets(self.trees.attempt_pages(), |target, page| {
            targets.contains(target) || page.iter().any(|a| a.tenant_id == tenant_id)
        });
        // The index of pages held in memory no longer matches the tree either way.
        shelves.forget_targets();
        let (attempts, emptied) = removed?;
        let mut doomed: HashSet<&str> = targets.iter().map(String::as_str).collect();
        doomed.extend(emptied.iter().map(String::as_str));
        let deliveries = self.trees.deliveries();
        let mut records = 0u64;
        for entry in deliveries.iter() {
            let (key, value) = entry?;
            let record: DeliveryRecord = crate::store::decode("deliveries", &value)?;
            if doomed.contains(record.forwarding_set_id.as_str())
                || doomed.contains(record.subscription_id.as_str())
            {
                deliveries.remove(&key)?;
                records += 1;
            }
        }
        drop(shelves);
        Ok((attempts as u64, records))
    }

    /// Where the retries admins ask for are announced, for the config streams to pass on.
    pub(crate) fn retry_requests(&self) -> broadcast::Sender<RetryBatch> {
        self.retries.clone()
    }

    /// The one target a request names, which must exist and be of a tenant the caller may
    /// act for.
    fn target<'a>(
        &self,
        caller: &Caller,
        forwarding_set_id: &'a str,
        subscription_id: &'a str,
    ) -> Result<&'a str, Error> {
        match (forwarding_set_id, subscription_id) {
            (fwd, "") if !fwd.is_empty() => {
                caller.check_tenant(&self.store.forwarding_set(fwd)?.tenant_id)?;
                Ok(fwd)
            }
            ("", sub) if !sub.is_empty() => {
                caller.check_tenant(&self.store.subscription(sub)?.tenant_id)?;
                Ok(sub)
            }
            _ => Err(Error::invalid(
                "forwarding_set_id",
                "exactly one of forwarding_set_id and subscription_id is required",
            )),
        }
    }

    /// The tenant of a forwarding set or subscription, if it still exists.
    fn tenant_of_target(
        &self,
        forwarding_set_id: &str,
        subscription_id: &str,
    ) -> Result<Option<String>, Error> {
        if !forwarding_set_id.is_empty() {
            return Ok(self
                .store
                .find_forwarding_set(forwarding_set_id)?
                .map(|f| f.tenant_id));
        }
        if !subscription_id.is_empty() {
            return Ok(self
                .store
                .find_subscription(subscription_id)?
                .map(|s| s.tenant_id));
        }
        Ok(None)
    }

    /// A target's attempts of the last 24 hours, counted per hour (the last hour is the one
    /// under way, so its start is `now` rounded down to the hour).
    fn health(
        &self,
        caller: &Caller,
        req: &GetTargetHealthRequest,
        now: Time,
    ) -> Result<TargetHealth, Error> {
        const HOURS: i64 = 24;
        let target = self.target(caller, &req.forwarding_set_id, &req.subscription_id)?;
        let first_hour = (now.seconds.div_euclid(3600) - (HOURS - 1)) * 3600;
        let cutoff = u64::try_from(first_hour).unwrap_or_default() * 1_000_000;
        self.write_held()?;
        let attempts = pages::since(self.trees.attempt_pages(), &target_prefix(target), cutoff)?;
        let mut hours: Vec<HealthHour> = (0..HOURS)
            .map(|i| HealthHour {
                start_time: Some(prost_types::Timestamp {
                    seconds: first_hour + i * 3600,
                    nanos: 0,
                }),
                delivered: 0,
                failed: 0,
            })
            .collect();
        let mut health = TargetHealth::default();
        for attempt in &attempts {
            let seconds = attempt.time.as_ref().map_or(0, |t| t.seconds);
            let Ok(index) = usize::try_from((seconds - first_hour).div_euclid(3600)) else {
                continue;
            };
            let Some(hour) = hours.get_mut(index) else {
                // Reported with a clock ahead of ours: not in the last 24 hours.
                continue;
            };
            if attempt.outcome == AttemptOutcome::Succeeded as i32 {
                hour.delivered += 1;
                health.delivered += 1;
            } else {
                hour.failed += 1;
                health.failed += 1;
            }
        }
        health.hours = hours;
        Ok(health)
    }

    fn list(
        &self,
        caller: &Caller,
        req: &ListDeliveryAttemptsRequest,
    ) -> Result<ListDeliveryAttemptsResponse, Error> {
        let target = self.target(caller, &req.forwarding_set_id, &req.subscription_id)?;
        let prefix = target_prefix(target);
        let page = Page::new(req.page_size, &req.page_token, &prefix)?;
        let after = page
            .after()
            .map(|key| place(key, prefix.len()))
            .transpose()?;
        self.write_held()?;
        let (attempts, more) = pages::list(
            self.trees.attempt_pages(),
            &prefix,
            page.size(),
            after.as_ref(),
        )?;
        let next_page_token = match attempts.last() {
            Some(last) if more => pagination::token(&place_key(&prefix, last)),
            _ => String::new(),
        };
        Ok(ListDeliveryAttemptsResponse {
            attempts,
            next_page_token,
        })
    }

    /// Marks a failed delivery pending again and asks the nodes to re-enqueue it; returns it
    /// with its tenant (empty when its target is gone).
    fn retry(&self, caller: &Caller, id: &str) -> Result<(Delivery, String), Error> {
        let _guard = self.trees.lock();
        let mut record = self
            .trees
            .find_delivery(id)?
            // Delivered deliveries keep no record, so the message names what is kept.
            .ok_or_else(|| Error::not_found("failed or pending delivery", id))?;
        let tenant_id = self
            .tenant_of_target(&record.forwarding_set_id, &record.subscription_id)?
            .unwrap_or_default();
        // A delivery whose target is gone belongs to no tenant a tenant admin could prove.
        match caller.own_tenant() {
            Some(_) if tenant_id.is_empty() => {
                caller.require_operator("retry a delivery whose target was deleted")?;
            }
            _ => caller.check_tenant(&tenant_id)?,
        }
        if record.state != DeliveryState::DeliveryFailed as i32 {
            let state = DeliveryState::try_from(record.state)
                .map(|s| s.as_str_name())
                .unwrap_or("UNKNOWN");
            return Err(Error::FailedPrecondition(format!(
                "delivery \"{id}\" is {state}; only a DELIVERY_FAILED delivery can be retried"
            )));
        }
        record.state = DeliveryState::Pending as i32;
        self.trees.put_delivery(&record)?;
        // No connected node means nobody can act on it now; the state still records the request.
        let _ = self.retries.send(RetryBatch::from([id.to_owned()]));
        Ok((to_proto(&record), tenant_id))
    }

    /// Marks pending again every delivery of `target` that failed for good at or after
    /// `since`, and asks the nodes to re-enqueue them with a fresh attempt budget. The records
    /// are keyed by delivery id, so this reads them all: a recover is an operator's rare act,
    /// and the records kept are only those not delivered, within the retention age.
    fn recover(&self, target: &str, since: Time) -> Result<u32, Error> {
        let _guard = self.trees.lock();
        let failed = DeliveryState::DeliveryFailed as i32;
        let mut recovered = Vec::new();
        for entry in self.trees.deliveries().iter() {
            let (_, value) = entry?;
            let mut record: DeliveryRecord = crate::store::decode("deliveries", &value)?;
            let of_target = record.forwarding_set_id == target || record.subscription_id == target;
            if !of_target || record.state != failed || record.last_attempt_time < since {
                continue;
            }
            record.state = DeliveryState::Pending as i32;
            self.trees.put_delivery(&record)?;
            recovered.push(record.id);
        }
        let count = u32::try_from(recovered.len()).unwrap_or(u32::MAX);
        for batch in recovered.chunks(RECOVER_BATCH) {
            // No connected node means nobody can act on it now; the states still record it.
            let _ = self.retries.send(RetryBatch::from(batch));
        }
        Ok(count)
    }
}

/// Keeps the newest `count` of `attempts`, the only ones retention would leave of them.
fn keep_newest(attempts: &mut Vec<DeliveryAttempt>, count: usize) {
    keep_first_by(attempts, count, |a, b| pages::rank(b).cmp(&pages::rank(a)));
}

/// Keeps the first `count` of `items` in the order `first` gives, themselves in no order: a
/// selection, not a sort (pages sort what they hold when they are written).
fn keep_first_by<T>(
    items: &mut Vec<T>,
    count: usize,
    mut first: impl FnMut(&T, &T) -> std::cmp::Ordering,
) {
    if items.len() > count {
        if count > 0 {
            items.select_nth_unstable_by(count - 1, &mut first);
        }
        items.truncate(count);
    }
}

fn to_proto(r: &DeliveryRecord) -> Delivery {
    Delivery {
        id: r.id.clone(),
        event_id: r.event_id.clone(),
        forwarding_set_id: r.forwarding_set_id.clone(),
        subscription_id: r.subscription_id.clone(),
        state: r.state,
        attempts: r.attempts,
        last_reason: r.last_reason.clone(),
    }
}

#[tonic::async_trait]
impl DeliveryService for DeliveryLog {
    async fn list_delivery_attempts(
        &self,
        request: Request<ListDeliveryAttemptsRequest>,
    ) -> Result<Response<ListDeliveryAttemptsResponse>, Status> {
        let caller = Caller::of(&request)?;
        Ok(Response::new(self.list(&caller, request.get_ref())?))
    }

    async fn retry_delivery(
        &self,
        request: Request<RetryDeliveryRequest>,
    ) -> Result<Response<Delivery>, Status> {
        let caller = Caller::of(&request)?;
        let id = validate::id("id", &request.get_ref().id)?;
        let (delivery, tenant_id) = self.retry(&caller, id)?;
        AuditLog::new(&self.store).record(
            &caller,
            &format!("{}/RetryDelivery", delivery_service_server::SERVICE_NAME),
            &tenant_id,
            id,
            &["state"],
        )?;
        self.store.flush().await?;
        Ok(Response::new(delivery))
    }

    async fn recover_deliveries(
        &self,
        request: Request<RecoverDeliveriesRequest>,
    ) -> Result<Response<RecoverDeliveriesResponse>, Status> {
        let caller = Caller::of(&request)?;
        let req = request.get_ref();
        let target = self.target(&caller, &req.forwarding_set_id, &req.subscription_id)?;
        let since = validate::present("since", req.since.as_ref())?;
        let since = Time::from_proto(since)
            .ok_or_else(|| Error::invalid("since", "must be a valid timestamp"))?;
        let delivery_count = self.recover(target, since)?;
        let tenant_id = self
            .tenant_of_target(&req.forwarding_set_id, &req.subscription_id)?
            .unwrap_or_default();
        AuditLog::new(&self.store).record(
            &caller,
            &format!(
                "{}/RecoverDeliveries",
                delivery_service_server::SERVICE_NAME
            ),
            &tenant_id,
            target,
            &["since"],
        )?;
        self.store.flush().await?;
        Ok(Response::new(RecoverDeliveriesResponse { delivery_count }))
    }

    async fn get_target_health(
        &self,
        request: Request<GetTargetHealthRequest>,
    ) -> Result<Response<TargetHealth>, Status> {
        let caller = Caller::of(&request)?;
        Ok(Response::new(self.health(
            &caller,
            request.get_ref(),
            Time::now(),
        )?))
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::sealing::{MasterKey, Sealer};
    use crate::test_fixtures::*;

    struct Setup {
        _dir: tempfile::TempDir,
        log: DeliveryLog,
        retries: broadcast::Receiver<RetryBatch>,
        fwd_id: String,
    }

    impl Setup {
        /// Reports one attempt of `delivery_id` to the set, from node "n".
        fn report(&self, delivery_id: &str, seconds_ago: i64, outcome: AttemptOutcome) {
            let one = attempt(&self.fwd_id, delivery_id, seconds_ago, outcome);
            self.log.record("n", &[one]).unwrap();
        }
    }

    async fn setup(count: usize, age: Duration) -> Setup {
        let (dir, store, fwd_id) = store_with_forwarding_set().await;
        let (tx, retries) = broadcast::channel(16);
        Setup {
            _dir: dir,
            log: DeliveryLog::new(store, Retention { count, age }, tx).unwrap(),
            retries,
            fwd_id,
        }
    }

    fn attempt(
        fwd_id: &str,
        delivery_id: &str,
        seconds_ago: i64,
        outcome: AttemptOutcome,
    ) -> DeliveryAttempt {
        let now = Time::now();
        DeliveryAttempt {
            delivery_id: delivery_id.into(),
            forwarding_set_id: fwd_id.into(),
            time: Some(prost_types::Timestamp {
                seconds: now.seconds - seconds_ago,
                nanos: 0,
            }),
            outcome: outcome as i32,
            reason: if outcome == AttemptOutcome::Succeeded {
                String::new()
            } else {
                "502 Bad Gateway".into()
            },
            ..Default::default()
        }
    }

    async fn retry(log: &DeliveryLog, id: &str) -> Result<Delivery, Status> {
        log.retry_delivery(operator(RetryDeliveryRequest { id: id.into() }))
            .await
            .map(Response::into_inner)
    }

    /// How many attempts the tree holds for `target`, whatever the page size.
    fn stored(log: &DeliveryLog, target: &str) -> usize {
        log.written(target)
    }

    /// Stores an attempt `seconds_ago` under `target` behind the log's back.
    fn insert_directly(log: &DeliveryLog, target: &str, seconds_ago: u64, id: &str) {
        let attempt = DeliveryAttempt {
            id: id.to_owned(),
            time: Some(
                Time::now()
                    .minus(Duration::from_secs(seconds_ago))
                    .to_proto(),
            ),
            ..DeliveryAttempt::default()
        };
        let mut batch = sled::Batch::default();
        pages::write_pages(&mut batch, &target_prefix(target), &[attempt], rand::random);
        log.trees.attempt_pages().apply_batch(batch).unwrap();
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[tokio::test]
    async fn target_health_counts_the_last_24_hours_hour_by_hour() {
        let s = setup(1000, Duration::from_secs(7 * 24 * 3600)).await;
        let now = Time::now();
        let into_hour = now.seconds.rem_euclid(3600);
        s.report("d1", into_hour + 5 * 3600, AttemptOutcome::Succeeded);
        s.report("d2", into_hour + 5 * 3600, AttemptOutcome::Retrying);
        s.report("d2", 0, AttemptOutcome::Failed);
        s.report("d3", 0, AttemptOutcome::Succeeded);
        // Older than the 24 hours shown.
        s.report("d4", 25 * 3600, AttemptOutcome::Failed);
        let health = s
            .log
            .health(
                &operator_caller(),
                &GetTargetHealthRequest {
                    forwarding_set_id: s.fwd_id.clone(),
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        assert_eq!((health.delivered, health.failed), (2, 2));
        assert_eq!(health.hours.len(), 24);
        let last = &health.hours[23];
        assert_eq!((last.delivered, last.failed), (1, 1));
        let five_ago = &health.hours[18];
        assert_eq!((five_ago.delivered, five_ago.failed), (1, 1));
        assert_eq!(
            last.start_time.unwrap().seconds,
            now.seconds - into_hour,
            "the last hour is the one under way"
        );
    }

    #[tokio::test]
    async fn target_health_needs_exactly_one_known_target() {
        let s = setup(1000, Duration::from_secs(3600)).await;
        let neither = s
            .log
            .health(
                &operator_caller(),
                &GetTargetHealthRequest::default(),
                Time::now(),
            )
            .unwrap_err();
        assert!(matches!(neither, Error::InvalidArgument { .. }));
        let unknown = s
            .log
            .health(
                &operator_caller(),
                &GetTargetHealthRequest {
                    forwarding_set_id: "fwd_missing".into(),
                    ..Default::default()
                },
                Time::now(),
            )
            .unwrap_err();
        assert!(matches!(unknown, Error::NotFound { .. }));
    }

    #[tokio::test]
    async fn attempts_are_listed_newest_first() {
        let s = setup(100, DAY).await;
        s.log
            .record(
                "node-1",
                &[
                    attempt(&s.fwd_id, "dlv_1", 30, AttemptOutcome::Retrying),
                    attempt(&s.fwd_id, "dlv_1", 10, AttemptOutcome::Succeeded),
                    attempt(&s.fwd_id, "dlv_1", 20, AttemptOutcome::Retrying),
                ],
            )
            .unwrap();
        let listed = listed_attempts(&s.log, &s.fwd_id).await;
        let times: Vec<_> = listed.iter().map(|a| a.time.unwrap().seconds).collect();
        let mut sorted = times.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(times, sorted);
        assert!(
            listed
                .iter()
                .all(|a| a.id.starts_with("att_") && a.node_id == "node-1")
        );
    }

    #[tokio::test]
    async fn only_the_newest_attempts_up_to_the_retention_count_are_kept() {
        let s = setup(2, DAY).await;
        let batch: Vec<_> = (1..=5)
            .map(|i| attempt(&s.fwd_id, "dlv_1", i * 10, AttemptOutcome::Retrying))
            .collect();
        assert_eq!(s.log.record("n", &batch).unwrap(), 5);
        let listed = listed_attempts(&s.log, &s.fwd_id).await;
        let now = Time::now().seconds;
        let ages: Vec<_> = listed
            .iter()
            .map(|a| now - a.time.unwrap().seconds)
            .collect();
        assert_eq!(ages.len(), 2);
        assert!(ages[0] <= 11 && ages[1] <= 21, "{ages:?}");
    }

    #[tokio::test]
    async fn attempts_older_than_the_retention_age_are_dropped() {
        let s = setup(100, Duration::from_secs(3600)).await;
        s.log
            .record(
                "n",
                &[
                    attempt(&s.fwd_id, "dlv_1", 7200, AttemptOutcome::Retrying),
                    attempt(&s.fwd_id, "dlv_1", 60, AttemptOutcome::Succeeded),
                ],
            )
            .unwrap();
        assert_eq!(listed_attempts(&s.log, &s.fwd_id).await.len(), 1);
    }

    #[tokio::test]
    async fn the_sweep_applies_retention_to_every_target() {
        let s = setup(100, Duration::from_secs(3600)).await;
        s.report("dlv_1", 60, AttemptOutcome::Failed);
        insert_directly(&s.log, &s.fwd_id, 7200, "att_old");
        assert_eq!(s.log.sweep().unwrap(), 1);
        assert_eq!(listed_attempts(&s.log, &s.fwd_id).await.len(), 1);
    }

    #[tokio::test]
    async fn an_attempt_without_a_target_is_not_accepted() {
        let s = setup(100, DAY).await;
        let accepted = s.log.record("n", &[DeliveryAttempt::default()]).unwrap();
        assert_eq!(accepted, 0);
    }

    #[tokio::test]
    async fn listing_needs_exactly_one_target() {
        let s = setup(100, DAY).await;
        let result = s
            .log
            .list_delivery_attempts(operator(ListDeliveryAttemptsRequest {
                forwarding_set_id: s.fwd_id.clone(),
                subscription_id: "sub_x".into(),
                ..Default::default()
            }))
            .await;
        assert_status(
            result,
            Code::InvalidArgument,
            "forwarding_set_id: exactly one of forwarding_set_id and subscription_id is required",
        );
    }

    #[tokio::test]
    async fn listing_an_unknown_target_is_not_found() {
        let s = setup(100, DAY).await;
        let result = s
            .log
            .list_delivery_attempts(operator(ListDeliveryAttemptsRequest {
                subscription_id: "sub_missing".into(),
                ..Default::default()
            }))
            .await;
        assert_status(
            result,
            Code::NotFound,
            "subscription \"sub_missing\" not found",
        );
    }

    #[tokio::test]
    async fn a_final_failure_makes_the_delivery_failed() {
        let s = setup(100, DAY).await;
        s.log
            .record(
                "n",
                &[
                    attempt(&s.fwd_id, "dlv_1", 20, AttemptOutcome::Retrying),
                    attempt(&s.fwd_id, "dlv_1", 10, AttemptOutcome::Failed),
                ],
            )
            .unwrap();
        let delivery = s.log.trees.find_delivery("dlv_1").unwrap().unwrap();
        assert_eq!(delivery.state, DeliveryState::DeliveryFailed as i32);
        assert_eq!(delivery.attempts, 2);
        assert_eq!(delivery.last_reason, "502 Bad Gateway");
    }

    #[tokio::test]
    async fn an_older_attempt_arriving_late_does_not_override_the_state() {
        let s = setup(100, DAY).await;
        s.report("dlv_1", 10, AttemptOutcome::Failed);
        s.report("dlv_1", 20, AttemptOutcome::Retrying);
        let delivery = s.log.trees.find_delivery("dlv_1").unwrap().unwrap();
        assert_eq!(delivery.state, DeliveryState::DeliveryFailed as i32);
        assert_eq!(delivery.attempts, 2);
    }

    #[tokio::test]
    async fn a_delivery_delivered_at_its_first_attempt_keeps_no_record() {
        let s = setup(100, DAY).await;
        s.report("dlv_1", 10, AttemptOutcome::Succeeded);
        assert!(s.log.trees.find_delivery("dlv_1").unwrap().is_none());
        assert_eq!(listed_attempts(&s.log, &s.fwd_id).await.len(), 1);
    }

    #[tokio::test]
    async fn a_delivery_delivered_after_failing_forgets_its_record() {
        let s = setup(100, DAY).await;
        s.report("dlv_1", 20, AttemptOutcome::Retrying);
        assert!(s.log.trees.find_delivery("dlv_1").unwrap().is_some());
        s.report("dlv_1", 10, AttemptOutcome::Succeeded);
        assert!(s.log.trees.find_delivery("dlv_1").unwrap().is_none());
        assert_eq!(listed_attempts(&s.log, &s.fwd_id).await.len(), 2);
    }

    #[tokio::test]
    async fn retrying_a_delivered_delivery_is_not_found() {
        let s = setup(100, DAY).await;
        s.report("dlv_1", 10, AttemptOutcome::Succeeded);
        assert_status(
            retry(&s.log, "dlv_1").await,
            Code::NotFound,
            "failed or pending delivery \"dlv_1\" not found",
        );
    }

    #[tokio::test]
    async fn the_sweep_forgets_delivered_records_an_earlier_version_kept() {
        let s = setup(100, DAY).await;
        let mut delivered = new_record(
            &attempt(&s.fwd_id, "dlv_old", 10, AttemptOutcome::Succeeded),
            Time::now(),
        );
        delivered.state = DeliveryState::Delivered as i32;
        s.log.trees.put_delivery(&delivered).unwrap();
        s.report("dlv_failed", 10, AttemptOutcome::Failed);
        s.log.sweep().unwrap();
        assert!(s.log.trees.find_delivery("dlv_old").unwrap().is_none());
        assert!(s.log.trees.find_delivery("dlv_failed").unwrap().is_some());
    }

    #[tokio::test]
    async fn the_sweep_reads_every_chunk_of_delivery_records() {
        let s = setup(100, DAY).await;
        let count = SWEEP_CHUNK * 2 + 10;
        for i in 0..count {
            let mut record = new_record(
                &attempt(
                    &s.fwd_id,
                    &format!("dlv_{i:05}"),
                    10,
                    AttemptOutcome::Failed,
                ),
                Time::now(),
            );
            // Every other one delivered, so removals land in every chunk.
            if i % 2 == 0 {
                record.state = DeliveryState::Delivered as i32;
            }
            s.log.trees.put_delivery(&record).unwrap();
        }
        s.log.sweep().unwrap();
        assert_eq!(s.log.trees.deliveries().len(), count / 2);
        // The last two, in the last chunk: the odd one failed and stays.
        let last = |i: usize| s.log.trees.find_delivery(&format!("dlv_{i:05}")).unwrap();
        assert!(last(count - 1).is_some());
        assert!(last(count - 2).is_none());
    }

    #[tokio::test]
    async fn retrying_a_failed_delivery_makes_it_pending_and_tells_the_nodes() {
        let mut s = setup(100, DAY).await;
        s.report("dlv_1", 10, AttemptOutcome::Failed);
        let delivery = retry(&s.log, "dlv_1").await.unwrap();
        assert_eq!(delivery.state, DeliveryState::Pending as i32);
        assert_eq!(&*s.retries.try_recv().unwrap(), ["dlv_1".to_owned()]);
    }

    #[tokio::test]
    async fn retrying_a_pending_delivery_is_refused() {
        let s = setup(100, DAY).await;
        s.report("dlv_1", 10, AttemptOutcome::Retrying);
        assert_status(
            retry(&s.log, "dlv_1").await,
            Code::FailedPrecondition,
            "delivery \"dlv_1\" is PENDING; only a DELIVERY_FAILED delivery can be retried",
        );
    }

    #[tokio::test]
    async fn retrying_an_unknown_delivery_is_not_found() {
        let s = setup(100, DAY).await;
        assert_status(
            retry(&s.log, "dlv_missing").await,
            Code::NotFound,
            "failed or pending delivery \"dlv_missing\" not found",
        );
    }

    async fn recover(
        log: &DeliveryLog,
        fwd_id: &str,
        since: Option<prost_types::Timestamp>,
    ) -> Result<u32, Status> {
        log.recover_deliveries(operator(RecoverDeliveriesRequest {
            forwarding_set_id: fwd_id.into(),
            subscription_id: String::new(),
            since,
        }))
        .await
        .map(|r| r.into_inner().delivery_count)
    }

    fn seconds_ago(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp {
            seconds: Time::now().seconds - seconds,
            nanos: 0,
        })
    }

    #[tokio::test]
    async fn recovering_makes_the_targets_failures_since_then_pending_and_sends_them_once() {
        let mut s = setup(100, DAY).await;
        s.report("dlv_before", 600, AttemptOutcome::Failed);
        s.report("dlv_a", 60, AttemptOutcome::Failed);
        s.report("dlv_b", 30, AttemptOutcome::Failed);
        s.report("dlv_still_trying", 20, AttemptOutcome::Retrying);
        assert_eq!(
            recover(&s.log, &s.fwd_id, seconds_ago(300)).await.unwrap(),
            2
        );
        let mut sent = s.retries.try_recv().unwrap().to_vec();
        sent.sort();
        assert_eq!(sent, ["dlv_a", "dlv_b"]);
        let state = |id: &str| s.log.trees.find_delivery(id).unwrap().unwrap().state;
        assert_eq!(state("dlv_a"), DeliveryState::Pending as i32);
        assert_eq!(state("dlv_before"), DeliveryState::DeliveryFailed as i32);
        // Pending now: a second recover finds nothing more to send.
        assert_eq!(
            recover(&s.log, &s.fwd_id, seconds_ago(300)).await.unwrap(),
            0
        );
        assert!(s.retries.try_recv().is_err());
    }

    #[tokio::test]
    async fn recovering_another_targets_failures_leaves_these_alone() {
        let s = setup(100, DAY).await;
        s.report("dlv_a", 60, AttemptOutcome::Failed);
        let other = create_forwarding_set(
            &s.log.store,
            &s.log.store.forwarding_set(&s.fwd_id).unwrap().channel_id,
            raw_set_input(),
        )
        .await
        .unwrap()
        .id;
        assert_eq!(recover(&s.log, &other, seconds_ago(300)).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_recover_of_many_goes_to_the_nodes_in_batches() {
        let mut s = setup(100, DAY).await;
        let count = RECOVER_BATCH + 5;
        let attempts: Vec<_> = (0..count)
            .map(|i| {
                attempt(
                    &s.fwd_id,
                    &format!("dlv_{i:05}"),
                    10,
                    AttemptOutcome::Failed,
                )
            })
            .collect();
        s.log.record("n", &attempts).unwrap();
        let recovered = recover(&s.log, &s.fwd_id, seconds_ago(60)).await.unwrap();
        assert_eq!(recovered as usize, count);
        assert_eq!(s.retries.try_recv().unwrap().len(), RECOVER_BATCH);
        assert_eq!(s.retries.try_recv().unwrap().len(), 5);
    }

    #[tokio::test]
    async fn recovering_needs_since_and_exactly_one_target() {
        let s = setup(100, DAY).await;
        let status = recover(&s.log, &s.fwd_id, None).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("since"), "{}", status.message());
        let status = recover(&s.log, "", seconds_ago(1)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("forwarding_set_id"),
            "{}",
            status.message()
        );
        let status = recover(&s.log, "fwd_missing", seconds_ago(1))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }

    #[tokio::test]
    async fn a_batch_writes_each_delivery_record_once_and_the_latest_attempt_decides() {
        let s = setup(100, DAY).await;
        s.report("dlv_1", 50, AttemptOutcome::Retrying);
        let mut writes = s.log.trees.deliveries().watch_prefix(b"dlv_");
        s.log
            .record(
                "n",
                &[
                    attempt(&s.fwd_id, "dlv_1", 30, AttemptOutcome::Retrying),
                    attempt(&s.fwd_id, "dlv_2", 25, AttemptOutcome::Failed),
                    attempt(&s.fwd_id, "dlv_1", 10, AttemptOutcome::Failed),
                    attempt(&s.fwd_id, "dlv_1", 20, AttemptOutcome::Succeeded),
                    attempt(&s.fwd_id, "dlv_2", 15, AttemptOutcome::Retrying),
                ],
            )
            .unwrap();
        let mut written = Vec::new();
        while let Ok(event) = writes.next_timeout(Duration::from_millis(100)) {
            written.push(String::from_utf8_lossy(event.key()).into_owned());
        }
        written.sort();
        assert_eq!(written, ["dlv_1", "dlv_2"]);

        let first = s.log.trees.find_delivery("dlv_1").unwrap().unwrap();
        assert_eq!(first.attempts, 4);
        assert_eq!(first.state, DeliveryState::DeliveryFailed as i32);
        assert_eq!(first.last_reason, "502 Bad Gateway");
        let second = s.log.trees.find_delivery("dlv_2").unwrap().unwrap();
        assert_eq!(second.attempts, 2);
        assert_eq!(second.state, DeliveryState::Pending as i32);
    }

    #[tokio::test]
    async fn folding_a_batch_gives_the_record_that_reporting_its_attempts_one_by_one_gives() {
        let s = setup(100, DAY).await;
        let outcomes = [
            (40, AttemptOutcome::Failed),
            (10, AttemptOutcome::Retrying),
            (30, AttemptOutcome::Succeeded),
            (10, AttemptOutcome::Failed),
            (20, AttemptOutcome::Unspecified),
            (50, AttemptOutcome::Succeeded),
        ];
        let attempts = |delivery_id: &str| -> Vec<DeliveryAttempt> {
            let now = Time::now().seconds;
            outcomes
                .iter()
                .map(|(ago, outcome)| {
                    let mut a = attempt(&s.fwd_id, delivery_id, 0, *outcome);
                    a.time = Some(prost_types::Timestamp {
                        seconds: now - ago,
                        nanos: 0,
                    });
                    a.reason = format!("reason {ago} {}", outcome.as_str_name());
                    a
                })
                .collect()
        };
        s.log.record("n", &attempts("dlv_batch")).unwrap();
        for one in attempts("dlv_single") {
            s.log.record("n", &[one]).unwrap();
        }
        let batch = s.log.trees.find_delivery("dlv_batch").unwrap().unwrap();
        let single = s.log.trees.find_delivery("dlv_single").unwrap().unwrap();
        assert_eq!(batch.attempts, 6);
        assert_eq!(batch.last_reason, "reason 10 FAILED");
        assert_eq!(
            (batch.state, batch.attempts, &batch.last_reason),
            (single.state, single.attempts, &single.last_reason)
        );
    }

    /// The times of the attempts the tree holds for `target`, newest first.
    fn kept_times(log: &DeliveryLog, target: &str) -> Vec<i64> {
        let tree = log.trees.attempt_pages();
        let (all, _) = pages::list(tree, &target_prefix(target), 1_000_000, None).unwrap();
        all.iter().map(|a| a.time.unwrap().seconds).collect()
    }

    #[tokio::test]
    async fn a_batch_of_more_than_the_retention_count_keeps_its_newest_whatever_their_order() {
        for hold in [Duration::ZERO, Duration::from_secs(3600)] {
            let s = setup(10, DAY).await;
            let log = s.log.with_hold(hold);
            let fwd_id = &s.fwd_id;
            // 50 attempts a second apart, in an order that is neither oldest nor newest first.
            let attempts: Vec<_> = (0..50)
                .map(|i| {
                    let ago = 100 + (i * 37) % 50;
                    attempt(fwd_id, &format!("dlv_{i}"), ago, AttemptOutcome::Retrying)
                })
                .collect();
            assert_eq!(log.record("n", &attempts).unwrap(), 50);
            log.write_held().unwrap();
            let mut newest: Vec<i64> = attempts.iter().map(|a| a.time.unwrap().seconds).collect();
            newest.sort_by(|a, b| b.cmp(a));
            newest.truncate(10);
            assert_eq!(kept_times(&log, fwd_id), newest, "held back for {hold:?}");
        }
    }

    #[tokio::test]
    async fn attempts_reported_without_ids_are_each_kept_under_an_id_of_their_own() {
        let s = setup(100, DAY).await;
        let nameless = attempt(&s.fwd_id, "dlv_1", 5, AttemptOutcome::Retrying);
        assert!(nameless.id.is_empty());
        let report = vec![nameless.clone(), nameless.clone(), nameless];
        assert_eq!(s.log.record("n", &report).unwrap(), 3);
        let listed = listed_attempts(&s.log, &s.fwd_id).await;
        let ids: HashSet<&str> = listed.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(listed.len(), 3);
        assert_eq!(ids.len(), 3, "ids {ids:?}");
        assert!(
            listed
                .iter()
                .all(|a| a.id.starts_with("att_") && a.node_id == "n")
        );
        assert!(
            report.iter().all(|a| a.id.is_empty()),
            "the report is left as sent"
        );
    }

    #[tokio::test]
    async fn a_target_holds_exactly_its_newest_count_attempts_after_every_batch() {
        let s = setup(100, DAY).await;
        let mut times = Vec::new();
        for batch in 0..40 {
            // Every third attempt is older than many already held, so the newest are not simply
            // the last reported.
            let attempts: Vec<_> = (0..7)
                .map(|i| {
                    let ago = 10_000 - batch * 7 - i + if i % 3 == 0 { 300 } else { 0 };
                    attempt(
                        &s.fwd_id,
                        &format!("dlv_{batch}_{i}"),
                        ago,
                        AttemptOutcome::Retrying,
                    )
                })
                .collect();
            times.extend(attempts.iter().map(|a| a.time.unwrap().seconds));
            s.log.record("n", &attempts).unwrap();
            times.sort_by(|a, b| b.cmp(a));
            times.truncate(100);
            assert_eq!(kept_times(&s.log, &s.fwd_id), times, "after batch {batch}");
        }
        assert_eq!(s.log.sweep().unwrap(), 0);
        assert_eq!(kept_times(&s.log, &s.fwd_id), times);
    }

    /// `batches` batches of 50 attempts a second apart, the newest last, from a log holding
    /// attempts back for an hour; returns their times, newest first.
    fn report_held_back(log: &DeliveryLog, fwd_id: &str, batches: i64) -> Vec<i64> {
        let mut times = Vec::new();
        for batch in 0..batches {
            let attempts: Vec<_> = (0..50)
                .map(|i| {
                    let ago = 1_000 - batch * 50 - i;
                    attempt(
                        fwd_id,
                        &format!("dlv_{batch}_{i}"),
                        ago,
                        AttemptOutcome::Retrying,
                    )
                })
                .collect();
            times.extend(attempts.iter().map(|a| a.time.unwrap().seconds));
            assert_eq!(log.record("n", &attempts).unwrap(), 50);
        }
        times.sort_by(|a, b| b.cmp(a));
        times
    }

    #[tokio::test]
    async fn attempts_held_back_are_not_written_before_their_hold_and_then_only_the_newest_count() {
        let s = setup(100, DAY).await;
        let log = s.log.with_hold(Duration::from_secs(3600));
        let mut times = report_held_back(&log, &s.fwd_id, 5);
        assert_eq!(stored(&log, &s.fwd_id), 0, "written before the hold ended");
        log.write_held().unwrap();
        times.truncate(100);
        assert_eq!(kept_times(&log, &s.fwd_id), times);
    }

    #[tokio::test]
    async fn the_next_hold_fills_the_vector_of_attempts_the_last_one_wrote() {
        let s = setup(100, DAY).await;
        let log = s.log.with_hold(Duration::from_secs(3600));
        report_held_back(&log, &s.fwd_id, 5);
        let held = |log: &DeliveryLog| {
            let shelves = log.trees.lock();
            shelves.held_back.get(&s.fwd_id).map_or(0, Vec::capacity)
        };
        let grown = held(&log);
        assert!(grown >= 200, "{grown}");
        log.write_held().unwrap();
        assert_eq!(held(&log), 0, "written, nothing is held back");
        report_held_back(&log, &s.fwd_id, 1);
        assert_eq!(
            held(&log),
            grown,
            "the written vector is filled again, not a new one grown"
        );
        log.write_held().unwrap();
        assert_eq!(stored(&log, &s.fwd_id), 100);
    }

    #[tokio::test]
    async fn a_batch_after_the_hold_writes_what_was_held_back_and_begins_a_hold_of_its_own() {
        let s = setup(100, DAY).await;
        let log = s.log.with_hold(Duration::from_millis(50));
        report_held_back(&log, &s.fwd_id, 1);
        assert_eq!(stored(&log, &s.fwd_id), 0);
        tokio::time::sleep(Duration::from_millis(60)).await;
        report_held_back(&log, &s.fwd_id, 1);
        // Written before the batch is taken, so a store that refuses writes refuses the batch.
        assert_eq!(stored(&log, &s.fwd_id), 50);
        log.write_held().unwrap();
        assert_eq!(stored(&log, &s.fwd_id), 100);
    }

    #[tokio::test]
    async fn listing_and_health_show_the_attempts_held_back() {
        let s = setup(100, DAY).await;
        let log = s.log.with_hold(Duration::from_secs(3600));
        report_held_back(&log, &s.fwd_id, 1);
        assert_eq!(listed_attempts(&log, &s.fwd_id).await.len(), 50);

        report_held_back(&log, &s.fwd_id, 1);
        let health = log
            .get_target_health(operator(GetTargetHealthRequest {
                forwarding_set_id: s.fwd_id.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(health.failed, 100);
    }

    #[tokio::test]
    async fn a_sweep_and_a_purge_see_the_attempts_held_back() {
        let s = setup(10, DAY).await;
        let log = s.log.with_hold(Duration::from_secs(3600));
        report_held_back(&log, &s.fwd_id, 1);
        log.sweep().unwrap();
        assert_eq!(stored(&log, &s.fwd_id), 10);

        report_held_back(&log, &s.fwd_id, 1);
        let tenant = log.store.forwarding_set(&s.fwd_id).unwrap().tenant_id;
        let (attempts, _) = log
            .purge_tenant(&tenant, &HashSet::from([s.fwd_id.clone()]))
            .unwrap();
        // Written first, the held-back ten newest took the place of the ten the sweep wrote.
        assert_eq!(attempts, 10);
        assert_eq!(stored(&log, &s.fwd_id), 0);
        assert!(listed_attempts(&log, &s.fwd_id).await.is_empty());
    }

    #[tokio::test]
    async fn every_batch_removes_the_attempts_of_its_targets_past_the_retention_age() {
        let s = setup(100, DAY).await;
        s.log
            .record(
                "n",
                &[
                    attempt(&s.fwd_id, "dlv_1", 7200, AttemptOutcome::Retrying),
                    attempt(&s.fwd_id, "dlv_1", 5000, AttemptOutcome::Retrying),
                    attempt(&s.fwd_id, "dlv_1", 60, AttemptOutcome::Retrying),
                ],
            )
            .unwrap();
        let hourly = s.log.with_retention(Retention {
            count: 100,
            age: Duration::from_secs(3600),
        });
        hourly
            .record(
                "n",
                &[attempt(&s.fwd_id, "dlv_1", 5, AttemptOutcome::Succeeded)],
            )
            .unwrap();
        assert_eq!(stored(&hourly, &s.fwd_id), 2);
        assert_eq!(hourly.sweep().unwrap(), 0);
    }

    #[tokio::test]
    async fn clones_of_a_log_share_the_counts() {
        let s = setup(3, DAY).await;
        let other = s.log.with_retention(s.log.retention);
        for i in 0..8 {
            let log = if i % 2 == 0 { &s.log } else { &other };
            log.record(
                "n",
                &[attempt(
                    &s.fwd_id,
                    "dlv_1",
                    60 - i,
                    AttemptOutcome::Retrying,
                )],
            )
            .unwrap();
            assert!(stored(log, &s.fwd_id) <= 3, "after batch {i}");
        }
        assert_eq!(stored(&s.log, &s.fwd_id), 3);
    }

    #[tokio::test]
    async fn an_attempt_reported_again_is_counted_once() {
        let s = setup(3, DAY).await;
        let now = Time::now().seconds;
        let at = |ago: i64| DeliveryAttempt {
            id: format!("att_{ago}"),
            delivery_id: format!("dlv_{ago}"),
            forwarding_set_id: s.fwd_id.clone(),
            time: Some(prost_types::Timestamp {
                seconds: now - ago,
                nanos: 0,
            }),
            outcome: AttemptOutcome::Retrying as i32,
            ..Default::default()
        };
        s.log.record("n", &[at(40), at(30), at(20)]).unwrap();
        // Again in a later batch, and twice in the same one.
        s.log.record("n", &[at(20), at(10), at(10)]).unwrap();
        assert_eq!(
            kept_times(&s.log, &s.fwd_id),
            [now - 10, now - 20, now - 30]
        );
        let delivery = s.log.trees.find_delivery("dlv_10").unwrap().unwrap();
        assert_eq!(delivery.attempts, 1);
    }

    #[tokio::test]
    async fn a_sweep_corrects_the_counts() {
        let s = setup(10, DAY).await;
        let batch = |count: i64, ago: i64| -> Vec<_> {
            (0..count)
                .map(|i| attempt(&s.fwd_id, "dlv_1", ago - i, AttemptOutcome::Retrying))
                .collect()
        };
        s.log.record("n", &batch(3, 1000)).unwrap();
        for i in 0..4 {
            insert_directly(&s.log, &s.fwd_id, 900 - i, &format!("att_behind{i}"));
        }
        assert_eq!(s.log.sweep().unwrap(), 0);
        s.log.record("n", &batch(5, 100)).unwrap();
        assert_eq!(stored(&s.log, &s.fwd_id), 10);
    }

    #[tokio::test]
    async fn an_attempt_already_past_the_age_is_not_kept_but_counts_for_its_delivery() {
        let s = setup(100, Duration::from_secs(3600)).await;
        s.report("dlv_1", 60, AttemptOutcome::Retrying);
        let late = attempt(&s.fwd_id, "dlv_1", 7200, AttemptOutcome::Failed);
        assert_eq!(s.log.record("n", &[late.clone(), late]).unwrap(), 2);
        assert_eq!(stored(&s.log, &s.fwd_id), 1);
        let delivery = s.log.trees.find_delivery("dlv_1").unwrap().unwrap();
        assert_eq!(delivery.attempts, 3);
        assert_eq!(delivery.state, DeliveryState::Pending as i32);
    }

    #[tokio::test]
    async fn a_first_attempt_of_a_delivery_already_recorded_adds_to_its_record() {
        let s = setup(100, DAY).await;
        let first = |seconds_ago, outcome| DeliveryAttempt {
            attempt_number: 1,
            ..attempt(&s.fwd_id, "dlv_1", seconds_ago, outcome)
        };
        s.log
            .record("node-a", &[first(30, AttemptOutcome::Failed)])
            .unwrap();
        let recorded = s.log.trees.find_delivery("dlv_1").unwrap().unwrap();
        assert_eq!(recorded.attempts, 1);
        assert_eq!(recorded.state, DeliveryState::DeliveryFailed as i32);

        // Another node queued the same event.
        s.log
            .record(
                "node-b",
                &[
                    first(20, AttemptOutcome::Retrying),
                    first(40, AttemptOutcome::Failed),
                ],
            )
            .unwrap();
        let delivery = s.log.trees.find_delivery("dlv_1").unwrap().unwrap();
        assert_eq!(delivery.attempts, 3);
        assert_eq!(delivery.state, DeliveryState::Pending as i32);
        assert!(delivery.last_attempt_time > recorded.last_attempt_time);
    }

    #[tokio::test]
    async fn an_attempt_reported_again_after_a_restart_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate();
        let path = dir.path().join("store");
        let open = || {
            DeliveryLog::new(
                Store::open(&path, Sealer::new(&key)).unwrap(),
                Retention {
                    count: 100,
                    age: DAY,
                },
                broadcast::channel(16).0,
            )
            .unwrap()
        };
        let report = || {
            let mut one = attempt("fwd_x", "dlv_1", 5, AttemptOutcome::Failed);
            one.id = "att_1".into();
            vec![one]
        };
        let log = open();
        log.record("n", &report()).unwrap();
        drop(log);

        // The node missed the answer, and sends the report again to the restarted control plane.
        let restarted = open();
        restarted.record("n", &report()).unwrap();
        assert_eq!(stored(&restarted, "fwd_x"), 1);
        let delivery = restarted.trees.find_delivery("dlv_1").unwrap().unwrap();
        assert_eq!(delivery.attempts, 1);
    }

    #[tokio::test]
    async fn the_first_batch_after_a_restart_counts_its_target_from_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate();
        let path = dir.path().join("store");
        let open = |count: usize| {
            DeliveryLog::new(
                Store::open(&path, Sealer::new(&key)).unwrap(),
                Retention { count, age: DAY },
                broadcast::channel(16).0,
            )
            .unwrap()
        };
        let batch = |ago: i64| vec![attempt("fwd_x", "dlv_1", ago, AttemptOutcome::Retrying)];
        let log = open(100);
        for ago in 10..15 {
            log.record("n", &batch(ago)).unwrap();
        }
        drop(log);

        let restarted = open(2);
        restarted.record("n", &batch(5)).unwrap();
        assert_eq!(stored(&restarted, "fwd_x"), 2);
        restarted.record("n", &batch(1)).unwrap();
        assert_eq!(stored(&restarted, "fwd_x"), 2);
    }

    #[tokio::test]
    async fn a_tenant_admin_cannot_read_retry_or_recover_another_tenants_deliveries_or_health() {
        let s = setup(10, Duration::from_secs(3600)).await;
        s.report("dlv_1", 1, AttemptOutcome::Failed);
        let other = create_tenant(&s.log.store, tenant_input()).await;
        let admin = tenant_admin_caller(&other.id);
        let listed = s
            .log
            .list_delivery_attempts(as_caller(
                &admin,
                ListDeliveryAttemptsRequest {
                    forwarding_set_id: s.fwd_id.clone(),
                    ..Default::default()
                },
            ))
            .await;
        assert_eq!(listed.unwrap_err().code(), Code::PermissionDenied);
        let retried = s
            .log
            .retry_delivery(as_caller(
                &admin,
                RetryDeliveryRequest { id: "dlv_1".into() },
            ))
            .await;
        assert_eq!(retried.unwrap_err().code(), Code::PermissionDenied);
        let recovered = s
            .log
            .recover_deliveries(as_caller(
                &admin,
                RecoverDeliveriesRequest {
                    forwarding_set_id: s.fwd_id.clone(),
                    since: seconds_ago(60),
                    ..Default::default()
                },
            ))
            .await;
        assert_eq!(recovered.unwrap_err().code(), Code::PermissionDenied);
        let health = s
            .log
            .get_target_health(as_caller(
                &admin,
                GetTargetHealthRequest {
                    forwarding_set_id: s.fwd_id.clone(),
                    ..Default::default()
                },
            ))
            .await;
        assert_eq!(health.unwrap_err().code(), Code::PermissionDenied);
        assert_eq!(
            s.log.trees.find_delivery("dlv_1").unwrap().unwrap().state,
            DeliveryState::DeliveryFailed as i32
        );
    }

    #[tokio::test]
    async fn a_recover_is_in_the_audit_trail() {
        let s = setup(100, DAY).await;
        s.report("dlv_a", 60, AttemptOutcome::Failed);
        recover(&s.log, &s.fwd_id, seconds_ago(300)).await.unwrap();
        use hookplane_proto::v1::ListAuditEventsRequest;
        use hookplane_proto::v1::audit_service_server::AuditService as _;
        let events = AuditLog::new(&s.log.store)
            .list_audit_events(operator(ListAuditEventsRequest {
                resource_id: s.fwd_id.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .events;
        assert!(
            events
                .iter()
                .any(|e| e.method.ends_with("/RecoverDeliveries")),
            "{events:?}"
        );
    }
}
