//! The system stop: a subscription whose every delivery attempt has failed for
//! `--subscription-failure-stop-after` is stopped by the system (STOPPED, `stopped_by_system`, a
//! reason saying why and since when, one revision that the config stream carries to the nodes),
//! and its tenant is told through the notifier.
//!
//! The health of each subscription lives in the `subscription_failures` tree, outside the
//! configuration: following failures is no config change, only the stop is. The failure window
//! opens at the first failed attempt after the last success; it starts afresh when the
//! subscription is resumed or gets another URL, so failures of before do not count against it.

use std::time::Duration;

use hookplane_proto::v1::{AttemptOutcome, DeliveryAttempt, SubscriptionState};
use serde::{Deserialize, Serialize};
use sled::Tree;

use crate::clock::Time;
use crate::error::Error;
use crate::notify::Notifier;
use crate::store::{Change, Store};

const TREE: &str = "subscription_failures";

/// What is known of one subscription's recent attempts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Health {
    /// The first failed attempt after the last success.
    failing_since: Option<Time>,
    last_failure: Option<Time>,
    last_success: Option<Time>,
    last_reason: String,
    /// Attempts made before this instant (before a resume or a URL change) are not counted.
    fresh_from: Option<Time>,
}

impl Health {
    fn decode(bytes: Option<&[u8]>) -> Health {
        // A record that does not decode is a window lost, not a reason to fail a report.
        bytes
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default()
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The health after an attempt at `time` with `outcome`. Batches of several nodes may arrive
    /// out of order, so an attempt older than what is known only counts where it fits.
    fn after(mut self, time: Time, outcome: i32, reason: &str) -> Health {
        if self.fresh_from.is_some_and(|from| time < from) {
            return self;
        }
        match AttemptOutcome::try_from(outcome) {
            Ok(AttemptOutcome::Succeeded) => {
                self.last_success = Some(self.last_success.map_or(time, |s| s.max(time)));
                match self.last_failure {
                    // Failures after this success still form a run, which began after it.
                    Some(last) if last > time => {
                        self.failing_since = self.failing_since.map(|f| f.max(time));
                    }
                    _ => {
                        self.failing_since = None;
                        self.last_failure = None;
                    }
                }
            }
            Ok(AttemptOutcome::Retrying | AttemptOutcome::Failed) => {
                if self.last_success.is_some_and(|s| s >= time) {
                    return self;
                }
                self.failing_since = Some(self.failing_since.map_or(time, |f| f.min(time)));
                if self.last_failure.is_none_or(|last| time >= last) {
                    self.last_failure = Some(time);
                    reason.clone_into(&mut self.last_reason);
                }
            }
            Ok(AttemptOutcome::Unspecified) | Err(_) => {}
        }
        self
    }

    /// Since when every attempt has failed, when that is `window` or longer.
    fn failing_for(&self, window: Duration) -> Option<Time> {
        match (self.failing_since, self.last_failure) {
            (Some(since), Some(last)) if last.minus(window) >= since => Some(since),
            _ => None,
        }
    }
}

fn tree(store: &Store) -> Result<Tree, Error> {
    store.named_tree(TREE)
}

/// Opens a new failure window for `subscription_id` at `at`: what failed before is forgotten.
pub(crate) fn start_afresh(store: &Store, subscription_id: &str, at: Time) -> Result<(), Error> {
    let health = Health {
        fresh_from: Some(at),
        ..Health::default()
    };
    tree(store)?.insert(subscription_id.as_bytes(), health.encode())?;
    Ok(())
}

/// Drops what is known of a deleted subscription.
pub(crate) fn forget(store: &Store, subscription_id: &str) -> Result<(), Error> {
    tree(store)?.remove(subscription_id.as_bytes())?;
    Ok(())
}

#[derive(Clone)]
pub(crate) struct SystemStop {
    store: Store,
    tree: Tree,
    window: Duration,
    notifier: Notifier,
}

impl SystemStop {
    pub fn new(store: Store, window: Duration, notifier: Notifier) -> Result<SystemStop, Error> {
        Ok(SystemStop {
            tree: tree(&store)?,
            store,
            window,
            notifier,
        })
    }

    /// Follows the subscription attempts of a node's batch and stops every subscription whose
    /// window is full. Returns the ids it stopped.
    pub fn observe(&self, attempts: &[DeliveryAttempt]) -> Result<Vec<String>, Error> {
        let now = Time::now();
        let mut sorted: Vec<(&DeliveryAttempt, Time)> = attempts
            .iter()
            .filter(|a| !a.subscription_id.is_empty())
            .map(|a| (a, a.time.as_ref().and_then(Time::from_proto).unwrap_or(now)))
            .collect();
        sorted.sort_by_key(|(_, time)| *time);
        let mut due = Vec::new();
        for (attempt, time) in sorted {
            let id = attempt.subscription_id.as_str();
            match self.store.find_subscription(id)? {
                Some(record) if record.state == SubscriptionState::Active as i32 => {}
                // Stopped: its attempts say nothing of its endpoint. Deleted: nothing to follow.
                Some(_) => continue,
                None => {
                    self.tree.remove(id.as_bytes())?;
                    continue;
                }
            }
            // Atomic per key, so a resume's fresh start is never overwritten by a stale update.
            let updated = self.tree.update_and_fetch(id.as_bytes(), |old| {
                Some(
                    Health::decode(old)
                        .after(time, attempt.outcome, &attempt.reason)
                        .encode(),
                )
            })?;
            let health = Health::decode(updated.as_deref());
            if let Some(since) = health.failing_for(self.window)
                && !due.iter().any(|(d, _, _)| d == id)
            {
                due.push((id.to_owned(), since, health.last_reason));
            }
        }
        let mut stopped = Vec::new();
        for (id, since, reason) in due {
            if self.stop(&id, since, &reason)? {
                stopped.push(id);
            }
        }
        Ok(stopped)
    }

    /// Stops `id` if it is still active; false when someone else stopped or deleted it first.
    fn stop(&self, id: &str, since: Time, last_reason: &str) -> Result<bool, Error> {
        let now = Time::now();
        let record = {
            let guard = self.store.lock_writes();
            let Some(mut record) = self.store.find_subscription(id)? else {
                return Ok(false);
            };
            if record.state != SubscriptionState::Active as i32 {
                return Ok(false);
            }
            record.state = SubscriptionState::Stopped as i32;
            record.stopped_by_system = true;
            record.state_reason = format!(
                "stopped by the system: every delivery attempt has failed since {} (last: {})",
                since.rfc3339(),
                if last_reason.is_empty() {
                    "no reason given"
                } else {
                    last_reason
                }
            );
            record.update_time = now;
            let mut change = Change::default();
            change.put_subscription(&record);
            self.store.commit(&guard, change)?;
            record
        };
        start_afresh(&self.store, id, now)?;
        tracing::warn!(
            subscription_id = id,
            tenant_id = %record.tenant_id,
            failing_since = %since.rfc3339(),
            "subscription stopped by the system"
        );
        // The stop stands whether or not the notice could be kept.
        if let Err(e) = self
            .notifier
            .subscription_stopped(&record, last_reason, since)
        {
            tracing::warn!(subscription_id = id, error = %e, "could not keep the stop notice");
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use hookplane_proto::v1::{ListNotificationsRequest, SubscriptionState};

    use super::*;
    use crate::options::ControlOptions;
    use crate::test_fixtures::*;

    const WINDOW: Duration = Duration::from_secs(60);

    fn at(seconds: i64) -> Time {
        Time {
            seconds: 1_700_000_000 + seconds,
            nanos: 0,
        }
    }

    fn failed(h: Health, seconds: i64) -> Health {
        h.after(
            at(seconds),
            AttemptOutcome::Retrying as i32,
            "503 Service Unavailable",
        )
    }

    fn succeeded(h: Health, seconds: i64) -> Health {
        h.after(at(seconds), AttemptOutcome::Succeeded as i32, "")
    }

    #[test]
    fn the_window_opens_at_the_first_failure() {
        let h = failed(failed(Health::default(), 0), 30);
        assert_eq!(h.failing_since, Some(at(0)));
        assert_eq!(h.failing_for(WINDOW), None);
    }

    #[test]
    fn failing_for_the_whole_window_is_due() {
        let h = failed(failed(Health::default(), 0), 60);
        assert_eq!(h.failing_for(WINDOW), Some(at(0)));
        assert_eq!(h.last_reason, "503 Service Unavailable");
    }

    #[test]
    fn a_success_closes_the_window() {
        let h = failed(succeeded(failed(Health::default(), 0), 30), 70);
        assert_eq!(h.failing_since, Some(at(70)));
        assert_eq!(h.failing_for(WINDOW), None);
    }

    #[test]
    fn a_late_failure_older_than_the_last_success_does_not_count() {
        let h = failed(succeeded(Health::default(), 50), 10);
        assert_eq!(h.failing_since, None);
    }

    #[test]
    fn a_late_success_leaves_the_failures_after_it_a_shorter_run() {
        let h = succeeded(failed(failed(Health::default(), 0), 90), 40);
        assert_eq!(h.failing_since, Some(at(40)));
        assert_eq!(h.failing_for(WINDOW), None);
    }

    #[test]
    fn failures_before_a_fresh_start_are_ignored() {
        let fresh = Health {
            fresh_from: Some(at(100)),
            ..Health::default()
        };
        assert_eq!(failed(fresh.clone(), 50), fresh);
    }

    async fn setup(window: Duration) -> (tempfile::TempDir, Store, SystemStop, String) {
        let (dir, store) = store();
        let notifier = Notifier::open(&store, &ControlOptions::with_data_dir(dir.path())).unwrap();
        let tenant = create_tenant(&store, tenant_input()).await;
        let sub = create_subscription(&store, &tenant.id, subscription_input())
            .await
            .unwrap();
        let watch = SystemStop::new(store.clone(), window, notifier).unwrap();
        (dir, store, watch, sub.id)
    }

    fn attempt(sub: &str, seconds_ago: i64, outcome: AttemptOutcome) -> DeliveryAttempt {
        DeliveryAttempt {
            subscription_id: sub.into(),
            time: Some(
                Time::now()
                    .minus(Duration::from_secs(seconds_ago.unsigned_abs()))
                    .to_proto(),
            ),
            outcome: outcome as i32,
            reason: "503 Service Unavailable".into(),
            ..DeliveryAttempt::default()
        }
    }

    #[tokio::test]
    async fn a_subscription_failing_for_the_window_is_stopped_by_the_system() {
        let (_dir, store, watch, sub) = setup(WINDOW).await;
        let before = store.revision();
        let stopped = watch
            .observe(&[
                attempt(&sub, 90, AttemptOutcome::Retrying),
                attempt(&sub, 0, AttemptOutcome::Retrying),
            ])
            .unwrap();
        assert_eq!(stopped, std::slice::from_ref(&sub));
        let record = store.subscription(&sub).unwrap();
        assert_eq!(record.state, SubscriptionState::Stopped as i32);
        assert!(record.stopped_by_system);
        assert!(
            record
                .state_reason
                .starts_with("stopped by the system: every delivery attempt has failed since "),
            "{}",
            record.state_reason
        );
        assert!(
            record
                .state_reason
                .ends_with("(last: 503 Service Unavailable)")
        );
        assert_eq!(store.revision(), before + 1);
    }

    #[tokio::test]
    async fn the_tenant_is_told_when_the_system_stops_a_subscription() {
        use hookplane_proto::v1::notification_service_server::NotificationService as _;
        let (_dir, store, watch, sub) = setup(WINDOW).await;
        let tenant_id = store.subscription(&sub).unwrap().tenant_id;
        watch
            .observe(&[
                attempt(&sub, 90, AttemptOutcome::Retrying),
                attempt(&sub, 0, AttemptOutcome::Failed),
            ])
            .unwrap();
        let listed = crate::notifications::NotificationApi::new(store.clone())
            .list_notifications(operator(ListNotificationsRequest {
                tenant_id,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.notifications.len(), 1);
    }

    #[tokio::test]
    async fn failing_for_less_than_the_window_changes_nothing() {
        let (_dir, store, watch, sub) = setup(WINDOW).await;
        let before = store.revision();
        let stopped = watch
            .observe(&[
                attempt(&sub, 30, AttemptOutcome::Retrying),
                attempt(&sub, 0, AttemptOutcome::Retrying),
            ])
            .unwrap();
        assert!(stopped.is_empty());
        assert_eq!(store.revision(), before);
    }

    #[tokio::test]
    async fn failures_reported_in_several_batches_add_up() {
        let (_dir, store, watch, sub) = setup(WINDOW).await;
        watch
            .observe(&[attempt(&sub, 90, AttemptOutcome::Retrying)])
            .unwrap();
        let stopped = watch
            .observe(&[attempt(&sub, 0, AttemptOutcome::Retrying)])
            .unwrap();
        assert_eq!(stopped, std::slice::from_ref(&sub));
        assert!(store.subscription(&sub).unwrap().stopped_by_system);
    }

    #[tokio::test]
    async fn a_fresh_start_forgets_the_failures_before_it() {
        let (_dir, store, watch, sub) = setup(WINDOW).await;
        watch
            .observe(&[attempt(&sub, 90, AttemptOutcome::Retrying)])
            .unwrap();
        start_afresh(&store, &sub, Time::now().minus(Duration::from_secs(10))).unwrap();
        let stopped = watch
            .observe(&[attempt(&sub, 0, AttemptOutcome::Retrying)])
            .unwrap();
        assert!(stopped.is_empty());
    }

    #[tokio::test]
    async fn attempts_of_a_stopped_subscription_are_not_followed() {
        use hookplane_proto::v1::StopSubscriptionRequest;
        use hookplane_proto::v1::subscription_service_server::SubscriptionService as _;
        let (_dir, store, watch, sub) = setup(WINDOW).await;
        subscription_api(&store)
            .stop_subscription(operator(StopSubscriptionRequest { id: sub.clone() }))
            .await
            .unwrap();
        watch
            .observe(&[
                attempt(&sub, 90, AttemptOutcome::Failed),
                attempt(&sub, 0, AttemptOutcome::Failed),
            ])
            .unwrap();
        let record = store.subscription(&sub).unwrap();
        assert!(!record.stopped_by_system);
        assert_eq!(record.state_reason, "stopped by an admin");
    }
}
