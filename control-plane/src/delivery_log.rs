//! The delivery log: attempts reported by nodes (bounded per target by count and age), the state
//! of each delivery folded from them, and DeliveryService over both.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hookplane_proto::v1::delivery_service_server::DeliveryService;
use hookplane_proto::v1::{
    AttemptOutcome, Delivery, DeliveryAttempt, DeliveryState, ListDeliveryAttemptsRequest,
    ListDeliveryAttemptsResponse, RetryDeliveryRequest,
};
use prost::Message as _;
use tokio::sync::broadcast;
use tonic::{Request, Response, Status};

use crate::clock::Time;
use crate::error::Error;
use crate::ids;
use crate::notify::Notifier;
use crate::pagination::Page;
use crate::store::{DeliveryRecord, Store};
use crate::validate;

/// How many attempts and for how long they are kept per forwarding set or subscription.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retention {
    pub count: usize,
    pub age: Duration,
}

impl Retention {
    /// How many attempts beyond `count` a target may hold between two prunes. Pruning scans the
    /// target's whole key range, so doing it on every report batch cost more than the inserts;
    /// a tenth of the count (at least 64) makes it one scan per that many new attempts.
    fn slack(&self) -> usize {
        (self.count / 10).max(MIN_SLACK)
    }
}

const MIN_SLACK: usize = 64;

/// How far the age cutoff may move past a target's last prune before a batch prunes it again.
const CUTOFF_SLACK_MICROS: u64 = 60_000_000;

/// What a target was last pruned at, kept in memory only: a target without one (e.g. after a
/// restart) is pruned at its next batch, so the bound below never rests on a lost count.
#[derive(Debug, Clone, Copy)]
struct PruneMark {
    /// Attempts of the batches since (an upper bound of those stored: duplicates count too).
    added: usize,
    /// The age cutoff applied, in µs since the epoch.
    cutoff: u64,
}

#[derive(Clone)]
pub(crate) struct DeliveryLog {
    store: Store,
    retention: Retention,
    /// Delivery ids an admin asked to retry, for the config streams to pass on to nodes.
    retries: broadcast::Sender<String>,
    /// Told of every new forward attempt, for failure reminders.
    notifier: Option<Notifier>,
    /// Per target, since its last prune. Bound: once `record` returns, a target holds at most
    /// `retention.count + retention.slack()` attempts, none older than the age cutoff of its last
    /// prune, which is at most a minute behind the current one (attempts arriving already past
    /// the current cutoff are never stored). `sweep` applies the exact retention to every target.
    /// Only locked under the store's delivery-log lock.
    marks: Arc<Mutex<HashMap<String, PruneMark>>>,
}

fn target_prefix(target_id: &str) -> Vec<u8> {
    format!("{target_id}/").into_bytes()
}

/// `target/` + big-endian (u64::MAX - time in µs) + `/` + attempt id: newest first per target.
fn attempt_key(target_id: &str, time: Time, attempt_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(target_id.len() + 10 + attempt_id.len());
    key.extend_from_slice(target_id.as_bytes());
    key.push(b'/');
    key.extend_from_slice(&(u64::MAX - time.unix_micros()).to_be_bytes());
    key.push(b'/');
    key.extend_from_slice(attempt_id.as_bytes());
    key
}

/// The attempt time encoded in a key, in µs since the epoch.
fn key_micros(key: &[u8], prefix_len: usize) -> Option<u64> {
    let bytes: [u8; 8] = key.get(prefix_len..prefix_len + 8)?.try_into().ok()?;
    Some(u64::MAX - u64::from_be_bytes(bytes))
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

/// Fills in what the node left out; `None` for an attempt without a target.
fn accept(
    node_id: &str,
    mut attempt: DeliveryAttempt,
    now: Time,
) -> Option<(DeliveryAttempt, Time)> {
    if attempt.forwarding_set_id.is_empty() && attempt.subscription_id.is_empty() {
        tracing::debug!(node_id, "dropped a delivery attempt without a target");
        return None;
    }
    if attempt.id.is_empty() {
        attempt.id = ids::new_id(ids::ATTEMPT);
    }
    if attempt.node_id.is_empty() {
        node_id.clone_into(&mut attempt.node_id);
    }
    let time = attempt
        .time
        .as_ref()
        .and_then(Time::from_proto)
        .unwrap_or(now);
    attempt.time = Some(time.to_proto());
    Some((attempt, time))
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

/// A delivery's record with a batch's new attempts folded in, written once per batch.
struct Fold<'a> {
    record: DeliveryRecord,
    /// The reason of the attempt that decided, copied into the record only when it is written.
    reason: Option<&'a str>,
}

impl<'a> Fold<'a> {
    fn add(&mut self, attempt: &'a DeliveryAttempt, time: Time) {
        let record = &mut self.record;
        record.attempts = record.attempts.saturating_add(1);
        // Batches from several nodes may arrive out of order: the latest attempt decides.
        if time >= record.last_attempt_time {
            if let Some(state) = state_after(attempt.outcome) {
                record.state = state as i32;
            }
            self.reason = Some(&attempt.reason);
            record.last_attempt_time = time;
        }
    }

    fn finish(mut self) -> DeliveryRecord {
        if let Some(reason) = self.reason {
            reason.clone_into(&mut self.record.last_reason);
        }
        self.record
    }
}

impl DeliveryLog {
    pub fn new(
        store: Store,
        retention: Retention,
        retries: broadcast::Sender<String>,
    ) -> DeliveryLog {
        DeliveryLog {
            store,
            retention,
            retries,
            notifier: None,
            marks: Arc::default(),
        }
    }

    /// Feeds every newly stored forward attempt to `notifier`.
    pub fn with_notifier(mut self, notifier: Notifier) -> DeliveryLog {
        self.notifier = Some(notifier);
        self
    }

    fn lock_marks(&self) -> MutexGuard<'_, HashMap<String, PruneMark>> {
        self.marks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores a node's batch of attempts; returns how many were stored. Attempts naming neither a
    /// forwarding set nor a subscription cannot be listed, so they are dropped.
    pub fn record(&self, node_id: &str, attempts: Vec<DeliveryAttempt>) -> Result<u64, Error> {
        let _guard = self.store.lock_delivery_log();
        let mut marks = self.lock_marks();
        let tree = self.store.attempts_tree();
        let now = Time::now();
        let cutoff = now.minus(self.retention.age).unix_micros();
        let batch: Vec<(DeliveryAttempt, Time)> = attempts
            .into_iter()
            .filter_map(|attempt| accept(node_id, attempt, now))
            .collect();

        let mut per_target: HashMap<&str, usize> = HashMap::new();
        for (attempt, _) in &batch {
            *per_target.entry(target_of(attempt)).or_default() += 1;
        }
        // Counted before the inserts, so that an error half-way leaves an overestimate.
        for (target, added) in &per_target {
            if let Some(mark) = marks.get_mut(*target) {
                mark.added = mark.added.saturating_add(*added);
            }
        }

        let mut folds: HashMap<&str, Fold<'_>> = HashMap::new();
        let mut fresh = Vec::new();
        let mut past_age = HashSet::new();
        for (attempt, time) in &batch {
            let time = *time;
            let key = attempt_key(target_of(attempt), time, &attempt.id);
            let is_new = if time.unix_micros() < cutoff {
                // A prune would remove it at once, and with pruning amortised it would otherwise
                // stay listed until the next one; it still counts for its delivery.
                !tree.contains_key(&key)? && past_age.insert(key)
            } else {
                tree.insert(key, attempt.encode_to_vec())?.is_none()
            };
            if !is_new {
                continue;
            }
            if !attempt.delivery_id.is_empty() {
                let fold = match folds.entry(&attempt.delivery_id) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        let record = match self.store.find_delivery(&attempt.delivery_id)? {
                            Some(record) => record,
                            None => new_record(attempt, time),
                        };
                        e.insert(Fold {
                            record,
                            reason: None,
                        })
                    }
                };
                fold.add(attempt, time);
            }
            if self.notifier.is_some() && !attempt.forwarding_set_id.is_empty() {
                fresh.push((attempt, time));
            }
        }
        for fold in folds.into_values() {
            self.store.put_delivery(&fold.finish())?;
        }
        if let Some(notifier) = &self.notifier {
            notifier.record_attempts(fresh);
        }

        let slack = self.retention.slack();
        for target in per_target.into_keys() {
            let due = marks.get(target).is_none_or(|mark| {
                mark.added > slack || cutoff.saturating_sub(mark.cutoff) > CUTOFF_SLACK_MICROS
            });
            if due {
                self.prune_target(target, cutoff)?;
                marks.insert(target.to_owned(), PruneMark { added: 0, cutoff });
            }
        }
        Ok(batch.len() as u64)
    }

    /// Keeps the newest `count` attempts of a target that are not older than `cutoff` (µs).
    fn prune_target(&self, target: &str, cutoff: u64) -> Result<usize, Error> {
        let tree = self.store.attempts_tree();
        let prefix = target_prefix(target);
        let mut removed = 0;
        for (i, key) in tree.scan_prefix(&prefix).keys().enumerate() {
            let key = key?;
            let too_old = key_micros(&key, prefix.len()).is_some_and(|t| t < cutoff);
            if i >= self.retention.count || too_old {
                tree.remove(&key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Applies retention to every target, and forgets deliveries whose last attempt is older than
    /// the retention age. Returns how many attempts were removed.
    pub fn sweep(&self) -> Result<usize, Error> {
        let now = Time::now();
        let cutoff = now.minus(self.retention.age);
        let mut targets = BTreeSet::new();
        for key in self.store.attempts_tree().iter().keys() {
            let key = key?;
            if let Some(slash) = key.iter().position(|b| *b == b'/') {
                targets.insert(String::from_utf8_lossy(&key[..slash]).into_owned());
            }
        }
        let _guard = self.store.lock_delivery_log();
        let mut marks = self.lock_marks();
        let cutoff_micros = cutoff.unix_micros();
        // Also forgets deleted targets; one first written since the scan above loses its mark,
        // so its next batch prunes it.
        marks.retain(|target, _| targets.contains(target));
        let mut removed = 0;
        for target in targets {
            removed += self.prune_target(&target, cutoff_micros)?;
            let mark = PruneMark {
                added: 0,
                cutoff: cutoff_micros,
            };
            marks.insert(target, mark);
        }
        let deliveries = self.store.deliveries_tree();
        for entry in deliveries.iter() {
            let (key, value) = entry?;
            let record: DeliveryRecord = crate::store::decode("deliveries", &value)?;
            if record.last_attempt_time < cutoff {
                deliveries.remove(key)?;
            }
        }
        Ok(removed)
    }

    fn list(
        &self,
        req: &ListDeliveryAttemptsRequest,
    ) -> Result<ListDeliveryAttemptsResponse, Error> {
        let target = match (req.forwarding_set_id.as_str(), req.subscription_id.as_str()) {
            (fwd, "") if !fwd.is_empty() => {
                self.store.forwarding_set(fwd)?;
                fwd
            }
            ("", sub) if !sub.is_empty() => {
                self.store.subscription(sub)?;
                sub
            }
            _ => {
                return Err(Error::invalid(
                    "forwarding_set_id",
                    "exactly one of forwarding_set_id and subscription_id is required",
                ));
            }
        };
        let page = Page::new(req.page_size, &req.page_token, &target_prefix(target))?
            .read(self.store.attempts_tree())?;
        let attempts = page
            .items
            .iter()
            .map(|(_, v)| {
                DeliveryAttempt::decode(v.as_ref()).map_err(|e| Error::Corrupt {
                    tree: "attempts",
                    detail: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ListDeliveryAttemptsResponse {
            attempts,
            next_page_token: page.next_page_token,
        })
    }

    /// Marks a failed delivery pending again and asks the nodes to re-enqueue it.
    fn retry(&self, id: &str) -> Result<Delivery, Error> {
        let _guard = self.store.lock_delivery_log();
        let mut record = self
            .store
            .find_delivery(id)?
            .ok_or_else(|| Error::not_found("delivery", id))?;
        if record.state != DeliveryState::DeliveryFailed as i32 {
            let state = DeliveryState::try_from(record.state)
                .map(|s| s.as_str_name())
                .unwrap_or("UNKNOWN");
            return Err(Error::FailedPrecondition(format!(
                "delivery \"{id}\" is {state}; only a DELIVERY_FAILED delivery can be retried"
            )));
        }
        record.state = DeliveryState::Pending as i32;
        self.store.put_delivery(&record)?;
        // No connected node means nobody can act on it now; the state still records the request.
        let _ = self.retries.send(id.to_owned());
        Ok(to_proto(&record))
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
        Ok(Response::new(self.list(request.get_ref())?))
    }

    async fn retry_delivery(
        &self,
        request: Request<RetryDeliveryRequest>,
    ) -> Result<Response<Delivery>, Status> {
        let id = validate::id("id", &request.get_ref().id)?;
        let delivery = self.retry(id)?;
        self.store.flush().await?;
        Ok(Response::new(delivery))
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::test_fixtures::*;

    struct Setup {
        _dir: tempfile::TempDir,
        log: DeliveryLog,
        retries: broadcast::Receiver<String>,
        fwd_id: String,
    }

    async fn setup(count: usize, age: Duration) -> Setup {
        let (dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let channel = create_channel(&store, &tenant.id).await;
        let fwd_id = create_forwarding_set(&store, &channel.id, raw_set_input())
            .await
            .unwrap()
            .id;
        let (tx, retries) = broadcast::channel(16);
        Setup {
            _dir: dir,
            log: DeliveryLog::new(store, Retention { count, age }, tx),
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

    async fn list(log: &DeliveryLog, fwd_id: &str) -> Vec<DeliveryAttempt> {
        log.list_delivery_attempts(Request::new(ListDeliveryAttemptsRequest {
            forwarding_set_id: fwd_id.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .attempts
    }

    async fn retry(log: &DeliveryLog, id: &str) -> Result<Delivery, Status> {
        log.retry_delivery(Request::new(RetryDeliveryRequest { id: id.into() }))
            .await
            .map(Response::into_inner)
    }

    /// How many attempts the tree holds for `target`, whatever the page size.
    fn stored(log: &DeliveryLog, target: &str) -> usize {
        log.store
            .attempts_tree()
            .scan_prefix(target_prefix(target))
            .count()
    }

    /// Stores an attempt `seconds_ago` under `target` behind the log's back.
    fn insert_directly(log: &DeliveryLog, target: &str, seconds_ago: u64, id: &str) {
        let key = attempt_key(
            target,
            Time::now().minus(Duration::from_secs(seconds_ago)),
            id,
        );
        log.store
            .attempts_tree()
            .insert(key, DeliveryAttempt::default().encode_to_vec())
            .unwrap();
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[tokio::test]
    async fn attempts_are_listed_newest_first() {
        let s = setup(100, DAY).await;
        s.log
            .record(
                "node-1",
                vec![
                    attempt(&s.fwd_id, "dlv_1", 30, AttemptOutcome::Retrying),
                    attempt(&s.fwd_id, "dlv_1", 10, AttemptOutcome::Succeeded),
                    attempt(&s.fwd_id, "dlv_1", 20, AttemptOutcome::Retrying),
                ],
            )
            .unwrap();
        let listed = list(&s.log, &s.fwd_id).await;
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
        let batch = (1..=5)
            .map(|i| attempt(&s.fwd_id, "dlv_1", i * 10, AttemptOutcome::Retrying))
            .collect();
        assert_eq!(s.log.record("n", batch).unwrap(), 5);
        let listed = list(&s.log, &s.fwd_id).await;
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
                vec![
                    attempt(&s.fwd_id, "dlv_1", 7200, AttemptOutcome::Retrying),
                    attempt(&s.fwd_id, "dlv_1", 60, AttemptOutcome::Succeeded),
                ],
            )
            .unwrap();
        assert_eq!(list(&s.log, &s.fwd_id).await.len(), 1);
    }

    #[tokio::test]
    async fn the_sweep_applies_retention_to_every_target() {
        let s = setup(100, Duration::from_secs(3600)).await;
        s.log
            .record(
                "n",
                vec![attempt(&s.fwd_id, "dlv_1", 60, AttemptOutcome::Failed)],
            )
            .unwrap();
        let old_key = attempt_key(
            &s.fwd_id,
            Time::now().minus(Duration::from_secs(7200)),
            "att_old",
        );
        s.log
            .store
            .attempts_tree()
            .insert(old_key, DeliveryAttempt::default().encode_to_vec())
            .unwrap();
        assert_eq!(s.log.sweep().unwrap(), 1);
        assert_eq!(list(&s.log, &s.fwd_id).await.len(), 1);
    }

    #[tokio::test]
    async fn an_attempt_without_a_target_is_not_accepted() {
        let s = setup(100, DAY).await;
        let accepted = s.log.record("n", vec![DeliveryAttempt::default()]).unwrap();
        assert_eq!(accepted, 0);
    }

    #[tokio::test]
    async fn listing_needs_exactly_one_target() {
        let s = setup(100, DAY).await;
        let result = s
            .log
            .list_delivery_attempts(Request::new(ListDeliveryAttemptsRequest {
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
            .list_delivery_attempts(Request::new(ListDeliveryAttemptsRequest {
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
                vec![
                    attempt(&s.fwd_id, "dlv_1", 20, AttemptOutcome::Retrying),
                    attempt(&s.fwd_id, "dlv_1", 10, AttemptOutcome::Failed),
                ],
            )
            .unwrap();
        let delivery = s.log.store.find_delivery("dlv_1").unwrap().unwrap();
        assert_eq!(delivery.state, DeliveryState::DeliveryFailed as i32);
        assert_eq!(delivery.attempts, 2);
        assert_eq!(delivery.last_reason, "502 Bad Gateway");
    }

    #[tokio::test]
    async fn an_older_attempt_arriving_late_does_not_override_the_state() {
        let s = setup(100, DAY).await;
        s.log
            .record(
                "n",
                vec![attempt(&s.fwd_id, "dlv_1", 10, AttemptOutcome::Succeeded)],
            )
            .unwrap();
        s.log
            .record(
                "n",
                vec![attempt(&s.fwd_id, "dlv_1", 20, AttemptOutcome::Retrying)],
            )
            .unwrap();
        let delivery = s.log.store.find_delivery("dlv_1").unwrap().unwrap();
        assert_eq!(delivery.state, DeliveryState::Delivered as i32);
    }

    #[tokio::test]
    async fn retrying_a_failed_delivery_makes_it_pending_and_tells_the_nodes() {
        let mut s = setup(100, DAY).await;
        s.log
            .record(
                "n",
                vec![attempt(&s.fwd_id, "dlv_1", 10, AttemptOutcome::Failed)],
            )
            .unwrap();
        let delivery = retry(&s.log, "dlv_1").await.unwrap();
        assert_eq!(delivery.state, DeliveryState::Pending as i32);
        assert_eq!(s.retries.try_recv().unwrap(), "dlv_1");
    }

    #[tokio::test]
    async fn retrying_a_pending_delivery_is_refused() {
        let s = setup(100, DAY).await;
        s.log
            .record(
                "n",
                vec![attempt(&s.fwd_id, "dlv_1", 10, AttemptOutcome::Retrying)],
            )
            .unwrap();
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
            "delivery \"dlv_missing\" not found",
        );
    }

    #[tokio::test]
    async fn a_batch_writes_each_delivery_record_once_and_the_latest_attempt_decides() {
        let s = setup(100, DAY).await;
        s.log
            .record(
                "n",
                vec![attempt(&s.fwd_id, "dlv_1", 50, AttemptOutcome::Retrying)],
            )
            .unwrap();
        let mut writes = s.log.store.deliveries_tree().watch_prefix(b"dlv_");
        s.log
            .record(
                "n",
                vec![
                    attempt(&s.fwd_id, "dlv_1", 30, AttemptOutcome::Retrying),
                    attempt(&s.fwd_id, "dlv_2", 25, AttemptOutcome::Retrying),
                    attempt(&s.fwd_id, "dlv_1", 10, AttemptOutcome::Succeeded),
                    attempt(&s.fwd_id, "dlv_1", 20, AttemptOutcome::Failed),
                    attempt(&s.fwd_id, "dlv_2", 15, AttemptOutcome::Failed),
                ],
            )
            .unwrap();
        let mut written = Vec::new();
        while let Ok(event) = writes.next_timeout(Duration::from_millis(100)) {
            written.push(String::from_utf8_lossy(event.key()).into_owned());
        }
        written.sort();
        assert_eq!(written, ["dlv_1", "dlv_2"]);

        let first = s.log.store.find_delivery("dlv_1").unwrap().unwrap();
        assert_eq!(first.attempts, 4);
        assert_eq!(first.state, DeliveryState::Delivered as i32);
        assert_eq!(first.last_reason, "");
        let second = s.log.store.find_delivery("dlv_2").unwrap().unwrap();
        assert_eq!(second.attempts, 2);
        assert_eq!(second.state, DeliveryState::DeliveryFailed as i32);
        assert_eq!(second.last_reason, "502 Bad Gateway");
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
        s.log.record("n", attempts("dlv_batch")).unwrap();
        for one in attempts("dlv_single") {
            s.log.record("n", vec![one]).unwrap();
        }
        let batch = s.log.store.find_delivery("dlv_batch").unwrap().unwrap();
        let single = s.log.store.find_delivery("dlv_single").unwrap().unwrap();
        assert_eq!(batch.attempts, 6);
        assert_eq!(batch.last_reason, "reason 10 FAILED");
        assert_eq!(
            (batch.state, batch.attempts, &batch.last_reason),
            (single.state, single.attempts, &single.last_reason)
        );
    }

    #[tokio::test]
    async fn a_target_holds_at_most_count_plus_slack_attempts_and_a_sweep_leaves_exactly_count() {
        let s = setup(100, DAY).await;
        let slack = s.log.retention.slack();
        assert_eq!(slack, 64);
        let mut times = Vec::new();
        let mut most = 0;
        let mut ago = 10_000;
        for batch in 0..40 {
            let attempts: Vec<_> = (0..7)
                .map(|i| {
                    ago -= 1;
                    attempt(
                        &s.fwd_id,
                        &format!("dlv_{batch}_{i}"),
                        ago,
                        AttemptOutcome::Retrying,
                    )
                })
                .collect();
            times.extend(attempts.iter().map(|a| a.time.unwrap().seconds));
            s.log.record("n", attempts).unwrap();
            let held = stored(&s.log, &s.fwd_id);
            assert!(held <= 100 + slack, "{held} attempts after batch {batch}");
            most = most.max(held);
        }
        assert!(
            most > 100,
            "every batch pruned: at most {most} attempts held"
        );

        s.log.sweep().unwrap();
        let kept: Vec<_> = s
            .log
            .store
            .attempts_tree()
            .scan_prefix(target_prefix(&s.fwd_id))
            .values()
            .map(|v| DeliveryAttempt::decode(v.unwrap().as_ref()).unwrap())
            .map(|a| a.time.unwrap().seconds)
            .collect();
        times.sort_by(|a, b| b.cmp(a));
        times.truncate(100);
        assert_eq!(kept, times);
    }

    #[tokio::test]
    async fn a_batch_prunes_its_target_once_the_age_cutoff_moved_by_more_than_a_minute() {
        let s = setup(100, Duration::from_secs(3600)).await;
        let one = |log: &DeliveryLog| {
            log.record(
                "n",
                vec![attempt(&s.fwd_id, "dlv_1", 5, AttemptOutcome::Retrying)],
            )
            .unwrap();
        };
        one(&s.log);
        insert_directly(&s.log, &s.fwd_id, 7200, "att_old");
        one(&s.log);
        assert_eq!(stored(&s.log, &s.fwd_id), 3, "pruned within the slack");

        let moved = s
            .log
            .lock_marks()
            .get_mut(&s.fwd_id)
            .map(|mark| mark.cutoff -= CUTOFF_SLACK_MICROS + 1_000_000);
        assert!(moved.is_some());
        one(&s.log);
        assert_eq!(stored(&s.log, &s.fwd_id), 3);
        assert!(
            list(&s.log, &s.fwd_id)
                .await
                .iter()
                .all(|a| a.node_id == "n")
        );
    }

    #[tokio::test]
    async fn an_attempt_already_past_the_age_is_not_kept_but_counts_for_its_delivery() {
        let s = setup(100, Duration::from_secs(3600)).await;
        s.log
            .record(
                "n",
                vec![attempt(&s.fwd_id, "dlv_1", 60, AttemptOutcome::Succeeded)],
            )
            .unwrap();
        let late = attempt(&s.fwd_id, "dlv_1", 7200, AttemptOutcome::Failed);
        assert_eq!(s.log.record("n", vec![late.clone(), late]).unwrap(), 2);
        assert_eq!(stored(&s.log, &s.fwd_id), 1);
        let delivery = s.log.store.find_delivery("dlv_1").unwrap().unwrap();
        assert_eq!(delivery.attempts, 3);
        assert_eq!(delivery.state, DeliveryState::Delivered as i32);
    }

    #[tokio::test]
    async fn a_target_is_pruned_at_its_first_batch_after_a_restart() {
        let s = setup(2, DAY).await;
        let batch = || vec![attempt(&s.fwd_id, "dlv_1", 1, AttemptOutcome::Retrying)];
        s.log.record("n", batch()).unwrap();
        for i in 0..5 {
            insert_directly(&s.log, &s.fwd_id, 10 + i, &format!("att_extra{i}"));
        }
        s.log.record("n", batch()).unwrap();
        assert_eq!(stored(&s.log, &s.fwd_id), 7, "pruned within the slack");

        let restarted = DeliveryLog::new(
            s.log.store.clone(),
            s.log.retention,
            broadcast::channel(16).0,
        );
        restarted.record("n", batch()).unwrap();
        assert_eq!(stored(&restarted, &s.fwd_id), 2);
    }
}
