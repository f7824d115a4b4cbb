//! The embedded queue: a sled database in `--spool-dir`, local to the node.
//!
//! Trees: `jobs` (delivery id -> record with the job), `due` (due time BE ++ id -> nothing; a
//! leased job sits there at its lease deadline), `leases` (id -> its `due` key, so a restart can
//! hand leased jobs out again at once), `failed` (failure time BE ++ id, to bound parked jobs).
//! Enqueues are made durable by a group commit: concurrent callers share one flush.
//!
//! Only enqueue (and the rare fail and requeue) use sled transactions: each one seals and syncs
//! sled's IO buffer twice, and one per lease, ack and retry of every delivery made the disk, not
//! the CPU, the node's limit (docs/BENCHMARKS.md). Those write single keys instead, in an order
//! where a crash between two writes leaves a job due twice (a duplicate attempt) but never not
//! due: new index entries are written before old ones are removed, and an ack removes the job
//! before its index entries.

use std::{
    convert::Infallible,
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use prost::Message as _;
use sled::{
    Transactional,
    transaction::{ConflictableTransactionError, TransactionError},
};
use tokio::sync::Notify;

use super::{Job, Queue, unix_ms};
use crate::Error;

/// How long a leased job stays invisible: longer than the longest attempt (60 s timeout) so a
/// live worker never sees its job handed out twice, short enough that a stuck one comes back.
const LEASE_TIME: Duration = Duration::from_secs(300);
/// Parked failed jobs kept for RetryDelivery; the oldest go first.
const MAX_FAILED: usize = 10_000;

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
}

/// The sled-backed [`Queue`].
pub struct Spool {
    db: sled::Db,
    jobs: sled::Tree,
    due: sled::Tree,
    leases: sled::Tree,
    failed: sled::Tree,
    depth: AtomicU64,
    failed_count: AtomicU64,
    /// Serialises leasing so two callers never take the same due key.
    lease_lock: Mutex<()>,
    arrivals: Notify,
    commit: GroupCommit,
}

impl Spool {
    /// Opens (or creates) the spool; jobs leased when the node last stopped are due again.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let spool = Self {
            jobs: db.open_tree("jobs")?,
            due: db.open_tree("due")?,
            leases: db.open_tree("leases")?,
            failed: db.open_tree("failed")?,
            db,
            depth: AtomicU64::new(0),
            failed_count: AtomicU64::new(0),
            lease_lock: Mutex::new(()),
            arrivals: Notify::new(),
            commit: GroupCommit::default(),
        };
        spool.release_stale_leases()?;
        spool.depth.store(spool.due.len() as u64, Ordering::Relaxed);
        spool
            .failed_count
            .store(spool.failed.len() as u64, Ordering::Relaxed);
        Ok(spool)
    }

    /// The database, for other node-local state that shares the spool's durability (outcomes).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    fn release_stale_leases(&self) -> Result<(), Error> {
        let now = unix_ms(SystemTime::now());
        for entry in self.leases.iter() {
            let (id, due_key) = entry?;
            (&self.due, &self.leases)
                .transaction(|(due, leases)| {
                    due.remove(due_key.as_ref())?;
                    due.insert(due_key_for(now, &id), &[])?;
                    leases.remove(id.as_ref())?;
                    Ok::<_, ConflictableTransactionError<Infallible>>(())
                })
                .map_err(storage)?;
        }
        self.db.flush()?;
        Ok(())
    }

    fn read(&self, id: &[u8]) -> Result<Option<Record>, Error> {
        match self.jobs.get(id)? {
            Some(bytes) => Ok(Some(Record::decode(bytes.as_ref())?)),
            None => Ok(None),
        }
    }

    fn lease_due(&self, max: usize) -> Result<Vec<Job>, Error> {
        let _guard = self
            .lease_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = unix_ms(SystemTime::now());
        let deadline = now + u64::try_from(LEASE_TIME.as_millis()).unwrap_or(u64::MAX);
        let mut leased = Vec::new();
        let upper = (now + 1).to_be_bytes();
        for entry in self.due.range(..upper.as_slice()) {
            if leased.len() >= max {
                break;
            }
            let (key, _) = entry?;
            let id = &key[8..];
            let Some(Record { job: Some(job), .. }) = self.read(id)? else {
                // An index entry without its job (a half-finished ack before a crash).
                self.due.remove(&key)?;
                continue;
            };
            let lease_key = due_key_for(deadline, id);
            // Single-key writes, new entries before the old one goes (see the module doc).
            self.due.insert(lease_key.as_slice(), &[])?;
            self.leases.insert(id, lease_key.as_slice())?;
            self.due.remove(&key)?;
            leased.push(job);
        }
        Ok(leased)
    }

    fn next_due_ms(&self) -> Result<Option<u64>, Error> {
        Ok(self.due.first()?.map(|(key, _)| due_ms_of(&key)))
    }

    /// Moves a leased (or due) job to a new due time, rewriting its record when asked.
    fn reschedule(
        &self,
        id: &str,
        not_before: SystemTime,
        attempts: Option<u32>,
    ) -> Result<(), Error> {
        let id = id.as_bytes();
        match attempts {
            Some(attempts) => {
                let Some(mut record) = self.read(id)? else {
                    return Ok(());
                };
                if let Some(job) = record.job.as_mut() {
                    job.attempts = attempts;
                }
                self.jobs.insert(id, record.encode_to_vec())?;
            }
            None if !self.jobs.contains_key(id)? => return Ok(()),
            None => {}
        }
        // Single-key writes, the new entry before the old one goes (see the module doc).
        let new_key = due_key_for(unix_ms(not_before), id);
        self.due.insert(new_key.as_slice(), &[])?;
        if let Some(old) = self.leases.remove(id)?
            && old.as_ref() != new_key.as_slice()
        {
            self.due.remove(old)?;
        }
        self.arrivals.notify_waiters();
        Ok(())
    }

    /// Drops the oldest parked failures beyond the bound.
    fn prune_failed(&self) -> Result<(), Error> {
        while self.failed_count.load(Ordering::Relaxed) > MAX_FAILED as u64 {
            let Some((key, _)) = self.failed.pop_min()? else {
                break;
            };
            let id = &key[8..];
            if let Some(record) = self.read(id)?
                && record.failed
            {
                self.jobs.remove(id)?;
            }
            self.failed_count.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[async_trait]
impl Queue for Spool {
    async fn enqueue(&self, jobs: Vec<Job>) -> Result<(), Error> {
        if jobs.is_empty() {
            return Ok(());
        }
        let now = unix_ms(SystemTime::now());
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = jobs
            .into_iter()
            .map(|job| {
                let id = job.delivery_id.clone().into_bytes();
                let record = Record {
                    job: Some(job),
                    ..Record::default()
                };
                (id, record.encode_to_vec())
            })
            .collect();
        let added = (&self.jobs, &self.due)
            .transaction(|(jobs, due)| {
                let mut added = 0u64;
                for (id, record) in &encoded {
                    if jobs.get(id)?.is_some() {
                        continue;
                    }
                    jobs.insert(id.as_slice(), record.as_slice())?;
                    due.insert(due_key_for(now, id), &[])?;
                    added += 1;
                }
                Ok::<_, ConflictableTransactionError<Infallible>>(added)
            })
            .map_err(storage)?;
        self.commit.flush(&self.db).await?;
        self.depth.fetch_add(added, Ordering::Relaxed);
        self.arrivals.notify_waiters();
        Ok(())
    }

    async fn lease(&self, max: usize, wait: Duration) -> Result<Vec<Job>, Error> {
        let give_up = tokio::time::Instant::now() + wait;
        loop {
            let arrival = self.arrivals.notified();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            let leased = self.lease_due(max)?;
            if !leased.is_empty() || max == 0 {
                return Ok(leased);
            }
            let now = tokio::time::Instant::now();
            if now >= give_up {
                return Ok(Vec::new());
            }
            let mut wake = give_up;
            if let Some(due_ms) = self.next_due_ms()? {
                let in_ms = due_ms.saturating_sub(unix_ms(SystemTime::now()));
                wake = wake.min(now + Duration::from_millis(in_ms));
            }
            tokio::select! {
                () = arrival => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn ack(&self, delivery_id: &str) -> Result<(), Error> {
        let id = delivery_id.as_bytes();
        // Removing the job is the ack; an index entry a crash leaves behind is dropped when it
        // comes due (see lease_due).
        let removed = self.jobs.remove(id)?.is_some();
        if let Some(old) = self.leases.remove(id)? {
            self.due.remove(old)?;
        }
        if removed {
            self.depth.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn retry(
        &self,
        delivery_id: &str,
        attempts: u32,
        not_before: SystemTime,
    ) -> Result<(), Error> {
        self.reschedule(delivery_id, not_before, Some(attempts))
    }

    async fn defer(&self, delivery_id: &str, not_before: SystemTime) -> Result<(), Error> {
        self.reschedule(delivery_id, not_before, None)
    }

    async fn fail(&self, delivery_id: &str, attempts: u32, reason: &str) -> Result<(), Error> {
        let id = delivery_id.as_bytes();
        let Some(mut record) = self.read(id)? else {
            return Ok(());
        };
        let now = unix_ms(SystemTime::now());
        if let Some(job) = record.job.as_mut() {
            job.attempts = attempts;
        }
        record.failed = true;
        record.failed_ms = now;
        record.reason = reason.to_owned();
        let encoded = record.encode_to_vec();
        let failed_key = due_key_for(now, id);
        let parked = (&self.jobs, &self.due, &self.leases, &self.failed)
            .transaction(|(jobs, due, leases, failed)| {
                if jobs.get(id)?.is_none() {
                    return Ok(false);
                }
                if let Some(old) = leases.remove(id)? {
                    due.remove(old)?;
                }
                jobs.insert(id, encoded.as_slice())?;
                failed.insert(failed_key.as_slice(), &[])?;
                Ok::<_, ConflictableTransactionError<Infallible>>(true)
            })
            .map_err(storage)?;
        if parked {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            self.failed_count.fetch_add(1, Ordering::Relaxed);
            self.prune_failed()?;
        }
        Ok(())
    }

    async fn requeue_failed(&self, delivery_id: &str) -> Result<bool, Error> {
        let id = delivery_id.as_bytes();
        let Some(record) = self.read(id)? else {
            return Ok(false);
        };
        let (true, Some(mut job)) = (record.failed, record.job) else {
            return Ok(false);
        };
        let now = unix_ms(SystemTime::now());
        let failed_key = due_key_for(record.failed_ms, id);
        job.budget_start = job.attempts;
        job.first_enqueued_ms = now;
        let encoded = Record {
            job: Some(job),
            ..Record::default()
        }
        .encode_to_vec();
        (&self.jobs, &self.due, &self.failed)
            .transaction(|(jobs, due, failed)| {
                jobs.insert(id, encoded.as_slice())?;
                failed.remove(failed_key.as_slice())?;
                due.insert(due_key_for(now, id), &[])?;
                Ok::<_, ConflictableTransactionError<Infallible>>(())
            })
            .map_err(storage)?;
        self.commit.flush(&self.db).await?;
        self.depth.fetch_add(1, Ordering::Relaxed);
        self.failed_count.fetch_sub(1, Ordering::Relaxed);
        self.arrivals.notify_waiters();
        Ok(true)
    }

    async fn depth(&self) -> Result<u64, Error> {
        Ok(self.depth.load(Ordering::Relaxed))
    }
}

/// One flush to disk shared by every write that happened before it started.
#[derive(Default)]
struct GroupCommit {
    written: AtomicU64,
    flushed: tokio::sync::Mutex<u64>,
}

impl GroupCommit {
    async fn flush(&self, db: &sled::Db) -> Result<(), Error> {
        let mine = self.written.fetch_add(1, Ordering::AcqRel) + 1;
        let mut flushed = self.flushed.lock().await;
        if *flushed >= mine {
            return Ok(());
        }
        // Everything counted so far is already in sled's memory, so this flush covers it.
        let covers = self.written.load(Ordering::Acquire);
        db.flush_async().await?;
        *flushed = covers;
        Ok(())
    }
}

fn due_key_for(due_ms: u64, id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + id.len());
    key.extend_from_slice(&due_ms.to_be_bytes());
    key.extend_from_slice(id);
    key
}

fn due_ms_of(key: &[u8]) -> u64 {
    let mut be = [0u8; 8];
    be.copy_from_slice(&key[..8]);
    u64::from_be_bytes(be)
}

fn storage(e: TransactionError<Infallible>) -> Error {
    match e {
        TransactionError::Storage(e) => Error::Spool(e),
        TransactionError::Abort(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn an_enqueued_job_is_still_there_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spool = Spool::open(dir.path()).unwrap();
            spool.enqueue(vec![job("dlv_a")]).await.unwrap();
        }
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.depth().await.unwrap(), 1);
        let leased = spool.lease(10, NO_WAIT).await.unwrap();
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
        assert_eq!(spool.lease(10, NO_WAIT).await.unwrap().len(), 1);
        assert!(spool.lease(10, NO_WAIT).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_job_leased_when_the_node_stopped_is_due_again_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let spool = Spool::open(dir.path()).unwrap();
            spool.enqueue(vec![job("dlv_a")]).await.unwrap();
            assert_eq!(spool.lease(10, NO_WAIT).await.unwrap().len(), 1);
            spool.db().flush().unwrap();
        }
        let spool = Spool::open(dir.path()).unwrap();
        let leased = spool.lease(10, NO_WAIT).await.unwrap();
        assert_eq!(leased.len(), 1);
        assert_eq!(leased[0].delivery_id, "dlv_a");
    }

    #[tokio::test]
    async fn an_acked_job_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.enqueue(vec![job("dlv_a")]).await.unwrap();
        spool.lease(10, NO_WAIT).await.unwrap();
        spool.ack("dlv_a").await.unwrap();
        assert_eq!(spool.depth().await.unwrap(), 0);
        drop(spool);
        let spool = Spool::open(dir.path()).unwrap();
        assert!(spool.lease(10, NO_WAIT).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_index_entry_a_crash_left_without_its_job_is_dropped_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.enqueue(vec![job("dlv_a")]).await.unwrap();
        // What an ack interrupted after its first write leaves behind.
        spool.jobs.remove("dlv_a").unwrap();
        assert!(spool.lease(10, NO_WAIT).await.unwrap().is_empty());
        assert!(spool.due.is_empty());
    }

    #[tokio::test]
    async fn a_job_leased_again_after_a_crash_mid_lease_is_still_delivered_once_acked() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.enqueue(vec![job("dlv_a")]).await.unwrap();
        // What a lease interrupted after its first write leaves: the job due now and at the
        // lease deadline, with no lease recorded.
        let (due_now, _) = spool.due.first().unwrap().unwrap();
        let later = due_key_for(unix_ms(SystemTime::now()) + 300_000, b"dlv_a");
        spool.due.insert(later, &[]).unwrap();
        assert_eq!(spool.due.len(), 2);
        let leased = spool.lease(10, NO_WAIT).await.unwrap();
        assert_eq!(leased.len(), 1);
        spool.ack("dlv_a").await.unwrap();
        assert!(spool.lease(10, NO_WAIT).await.unwrap().is_empty());
        assert!(!spool.due.contains_key(due_now).unwrap());
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
        assert_eq!(spool.lease(10, NO_WAIT).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_retried_job_waits_until_its_time_and_keeps_its_attempt_count() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.enqueue(vec![job("dlv_a")]).await.unwrap();
        spool.lease(1, NO_WAIT).await.unwrap();
        let later = SystemTime::now() + Duration::from_millis(300);
        spool.retry("dlv_a", 1, later).await.unwrap();
        assert!(spool.lease(1, NO_WAIT).await.unwrap().is_empty());
        let leased = spool.lease(1, Duration::from_secs(2)).await.unwrap();
        assert_eq!(leased.len(), 1);
        assert_eq!(leased[0].attempts, 1);
        assert!(SystemTime::now() + Duration::from_millis(5) >= later);
    }

    #[tokio::test]
    async fn a_deferred_job_keeps_its_attempt_count() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.enqueue(vec![job("dlv_a")]).await.unwrap();
        spool.lease(1, NO_WAIT).await.unwrap();
        spool.retry("dlv_a", 3, SystemTime::now()).await.unwrap();
        spool.lease(1, NO_WAIT).await.unwrap();
        spool.defer("dlv_a", SystemTime::now()).await.unwrap();
        let leased = spool.lease(1, NO_WAIT).await.unwrap();
        assert_eq!(leased[0].attempts, 3);
    }

    #[tokio::test]
    async fn a_waiting_lease_wakes_when_a_job_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let spool = std::sync::Arc::new(Spool::open(dir.path()).unwrap());
        let waiter = {
            let spool = std::sync::Arc::clone(&spool);
            tokio::spawn(async move { spool.lease(1, Duration::from_secs(5)).await })
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
        spool.lease(1, NO_WAIT).await.unwrap();
        spool.retry("dlv_a", 5, SystemTime::now()).await.unwrap();
        spool.lease(1, NO_WAIT).await.unwrap();
        spool.fail("dlv_a", 6, "404 Not Found").await.unwrap();
        assert_eq!(spool.depth().await.unwrap(), 0);
        assert!(spool.lease(1, NO_WAIT).await.unwrap().is_empty());

        assert!(spool.requeue_failed("dlv_a").await.unwrap());
        let leased = spool.lease(1, NO_WAIT).await.unwrap();
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
}
