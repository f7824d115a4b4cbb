//! The delivery log: attempts reported by nodes (bounded per target by count and age), the state
//! of each delivery folded from them, and DeliveryService over both.

use std::collections::BTreeSet;
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

#[derive(Clone)]
pub(crate) struct DeliveryLog {
    store: Store,
    retention: Retention,
    /// Delivery ids an admin asked to retry, for the config streams to pass on to nodes.
    retries: broadcast::Sender<String>,
    /// Told of every new forward attempt, for failure reminders.
    notifier: Option<Notifier>,
}

fn target_prefix(target_id: &str) -> Vec<u8> {
    format!("{target_id}/").into_bytes()
}

/// `target/` + big-endian (u64::MAX - time in µs) + `/` + attempt id: newest first per target.
fn attempt_key(target_id: &str, time: Time, attempt_id: &str) -> Vec<u8> {
    let mut key = target_prefix(target_id);
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

fn state_after(outcome: i32) -> Option<DeliveryState> {
    match AttemptOutcome::try_from(outcome) {
        Ok(AttemptOutcome::Succeeded) => Some(DeliveryState::Delivered),
        Ok(AttemptOutcome::Failed) => Some(DeliveryState::DeliveryFailed),
        Ok(AttemptOutcome::Retrying) => Some(DeliveryState::Pending),
        _ => None,
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
        }
    }

    /// Feeds every newly stored forward attempt to `notifier`.
    pub fn with_notifier(mut self, notifier: Notifier) -> DeliveryLog {
        self.notifier = Some(notifier);
        self
    }

    /// Stores a node's batch of attempts; returns how many were stored. Attempts naming neither a
    /// forwarding set nor a subscription cannot be listed, so they are dropped.
    pub fn record(&self, node_id: &str, attempts: Vec<DeliveryAttempt>) -> Result<u64, Error> {
        let _guard = self.store.lock_delivery_log();
        let tree = self.store.attempts_tree();
        let now = Time::now();
        let mut targets = BTreeSet::new();
        let mut stored = 0u64;
        let mut fresh = Vec::new();
        for mut attempt in attempts {
            let target = if !attempt.forwarding_set_id.is_empty() {
                attempt.forwarding_set_id.clone()
            } else if !attempt.subscription_id.is_empty() {
                attempt.subscription_id.clone()
            } else {
                tracing::debug!(node_id, "dropped a delivery attempt without a target");
                continue;
            };
            if attempt.id.is_empty() {
                attempt.id = ids::new_id(ids::ATTEMPT);
            }
            if attempt.node_id.is_empty() {
                attempt.node_id = node_id.to_owned();
            }
            let time = attempt
                .time
                .as_ref()
                .and_then(Time::from_proto)
                .unwrap_or(now);
            attempt.time = Some(time.to_proto());
            let key = attempt_key(&target, time, &attempt.id);
            let is_new = tree.insert(key, attempt.encode_to_vec())?.is_none();
            if is_new && !attempt.delivery_id.is_empty() {
                self.fold_into_delivery(&attempt, time)?;
            }
            if is_new && self.notifier.is_some() && !attempt.forwarding_set_id.is_empty() {
                fresh.push((attempt, time));
            }
            targets.insert(target);
            stored += 1;
        }
        if let Some(notifier) = &self.notifier {
            notifier.record_attempts(fresh.iter().map(|(a, t)| (a, *t)));
        }
        for target in targets {
            self.prune_target(&target, now)?;
        }
        Ok(stored)
    }

    fn fold_into_delivery(&self, attempt: &DeliveryAttempt, time: Time) -> Result<(), Error> {
        let mut delivery = self
            .store
            .find_delivery(&attempt.delivery_id)?
            .unwrap_or_else(|| DeliveryRecord {
                id: attempt.delivery_id.clone(),
                event_id: attempt.event_id.clone(),
                forwarding_set_id: attempt.forwarding_set_id.clone(),
                subscription_id: attempt.subscription_id.clone(),
                state: DeliveryState::Pending as i32,
                attempts: 0,
                last_reason: String::new(),
                last_attempt_time: time,
            });
        delivery.attempts = delivery.attempts.saturating_add(1);
        // Batches from several nodes may arrive out of order: the latest attempt decides.
        if time >= delivery.last_attempt_time {
            if let Some(state) = state_after(attempt.outcome) {
                delivery.state = state as i32;
            }
            delivery.last_reason = attempt.reason.clone();
            delivery.last_attempt_time = time;
        }
        self.store.put_delivery(&delivery)
    }

    /// Keeps the newest `count` attempts of a target that are younger than `age`.
    fn prune_target(&self, target: &str, now: Time) -> Result<usize, Error> {
        let tree = self.store.attempts_tree();
        let prefix = target_prefix(target);
        let cutoff = now.minus(self.retention.age).unix_micros();
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
        let mut removed = 0;
        for target in targets {
            removed += self.prune_target(&target, now)?;
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
}
