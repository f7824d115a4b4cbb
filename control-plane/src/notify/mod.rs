//! The notifier: failure reminder emails to tenants, at most one per quiet window, the periodic
//! sweep of still-failing forwards, and the notice of a subscription the system stopped.
//!
//! ReportDeliveries only records outcomes in the ledger (a few sled writes) and wakes the
//! background tasks; composing, throttling and SMTP all happen off the report's path. Every
//! notice is kept in the `notifications` tree that NotificationService lists.

mod books;
mod compose;
mod ledger;
mod mailer;
mod outbox;
mod records;
mod reminders;
mod sender;
mod throttle;

use std::sync::Arc;
use std::time::Duration;

use hookplane_proto::v1::{DeliveryAttempt, Notification, NotificationState};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub(crate) use ledger::ForwardOutcome;
pub(crate) use mailer::redacted_url;

use books::{Batch, Books};
use mailer::Mailer;
use reminders::Reminders;

use crate::clock::Time;
use crate::delivery_log::ForwardAttemptSink;
use crate::error::Error;
use crate::options::ControlOptions;
use crate::shutdown::Stopping;
use crate::store::{Store, SubscriptionRecord};

/// After a failed round (the store erred), try again after this long.
const AFTER_ERROR: Duration = Duration::from_secs(30);

/// Handle to the notifier; cheap to clone.
#[derive(Clone)]
pub(crate) struct Notifier {
    shared: Arc<Shared>,
}

struct Shared {
    reminders: Reminders,
    mailer: Option<Mailer>,
    sweep_every: Duration,
    /// Wakes the reminder task: failures were recorded.
    failures_recorded: Notify,
    /// Wakes the sender: an email was queued.
    queued: Notify,
}

impl Notifier {
    /// Checks the mail settings (a bad `--smtp-url` or `--smtp-from` stops the start) and opens
    /// the notifier's trees.
    pub fn open(store: &Store, opts: &ControlOptions) -> Result<Notifier, Error> {
        let mailer = match &opts.smtp_url {
            Some(url) if !url.trim().is_empty() => Some(Mailer::new(url.trim(), &opts.smtp_from)?),
            _ => None,
        };
        match &mailer {
            Some(m) => tracing::info!(server = m.shown_url(), "notices are emailed over SMTP"),
            None => tracing::info!("no --smtp-url: notices are logged and kept, not emailed"),
        }
        Ok(Notifier {
            shared: Arc::new(Shared {
                reminders: Reminders {
                    books: Books::open(store)?,
                    store: store.clone(),
                    smtp: mailer.is_some(),
                    window: *opts.notify_window,
                },
                mailer,
                sweep_every: *opts.failure_sweep_interval,
                failures_recorded: Notify::new(),
                queued: Notify::new(),
            }),
        })
    }

    /// Records the forward outcomes among `attempts` (stored at the times given) and wakes the
    /// reminder task when one failed. A ledger error is logged, never passed to the reporter:
    /// the delivery log has the attempts whatever happens here.
    pub fn record_attempts<'a>(
        &self,
        attempts: impl IntoIterator<Item = (&'a DeliveryAttempt, Time)>,
    ) {
        let outcomes: Vec<ForwardOutcome<'_>> = attempts
            .into_iter()
            .filter_map(|(attempt, time)| ForwardOutcome::from_attempt(attempt, time))
            .collect();
        let r = &self.shared.reminders;
        match ledger::record(&r.books, &r.store, &outcomes) {
            Ok(true) => self.shared.failures_recorded.notify_one(),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "recording forward failures for reminders failed"),
        }
    }

    /// Tells the tenant that the system stopped `subscription` for failing, naming the webhook,
    /// the reason and since when. Not held by the quiet window: it is a notice of its own.
    pub fn subscription_stopped(
        &self,
        subscription: &SubscriptionRecord,
        reason: &str,
        since: Time,
    ) -> Result<Notification, Error> {
        let r = &self.shared.reminders;
        let tenant = r.store.tenant(&subscription.tenant_id)?;
        let email = compose::subscription_stopped(
            &tenant.display_name,
            &compose::StoppedWebhook {
                name: subscription.name.clone(),
                url: subscription.url.clone(),
                reason: reason.to_owned(),
                since,
            },
        );
        let mut batch = Batch::default();
        let notice = {
            let _guard = r.books.lock();
            let notice = outbox::add_notice(
                &mut batch,
                &tenant,
                outbox::SUBSCRIPTION_STOPPED,
                email,
                r.smtp,
                Time::now(),
            );
            r.books.apply(batch)?;
            notice
        };
        self.shared.queued.notify_one();
        Ok(notice)
    }

    /// Starts the background tasks: reminders, the periodic sweep, and the SMTP sender. They end
    /// when `stopping` fires.
    pub fn start(&self, stopping: &Stopping) -> Vec<JoinHandle<()>> {
        let mut tasks = vec![
            tokio::spawn(self.clone().remind_forever(stopping.clone())),
            tokio::spawn(self.clone().sweep_forever(stopping.clone())),
        ];
        if self.shared.mailer.is_some() {
            tasks.push(tokio::spawn(self.clone().send_forever(stopping.clone())));
        } else {
            match outbox::log_queued(&self.shared.reminders.books) {
                Ok(0) => {}
                Ok(n) => tracing::info!(notices = n, "queued notices logged without SMTP"),
                Err(e) => tracing::warn!(error = %e, "logging queued notices failed"),
            }
        }
        tasks
    }

    async fn remind_forever(self, mut stopping: Stopping) {
        loop {
            let next =
                match self.shared.reminders.remind_due(Time::now()) {
                    Ok(round) => {
                        if round.notices.iter().any(|n| {
                            n.state == hookplane_proto::v1::NotificationState::Queued as i32
                        }) {
                            self.shared.queued.notify_one();
                        }
                        round.next_due
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "making failure reminders failed");
                        Some(Time::now().plus(AFTER_ERROR))
                    }
                };
            tokio::select! {
                () = self.shared.failures_recorded.notified() => {}
                () = sleep_until(next) => {}
                () = stopping.wait() => return,
            }
        }
    }

    async fn sweep_forever(self, mut stopping: Stopping) {
        let r = &self.shared.reminders;
        loop {
            let last = match r.last_sweep() {
                Ok(Some(last)) => last,
                Ok(None) => {
                    // The first period starts with the first run.
                    let now = Time::now();
                    if let Err(e) = r.set_last_sweep(now) {
                        tracing::warn!(error = %e, "recording the sweep start failed");
                    }
                    now
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the last sweep time failed");
                    Time::now()
                }
            };
            tokio::select! {
                () = sleep_until(Some(last.plus(self.shared.sweep_every))) => {}
                () = stopping.wait() => return,
            }
            match r.sweep(Time::now(), self.shared.sweep_every) {
                Ok(round) => {
                    tracing::info!(notices = round.notices.len(), "failure sweep done");
                    self.made(&round.notices).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the failure sweep failed");
                    tokio::select! {
                        () = tokio::time::sleep(AFTER_ERROR) => {}
                        () = stopping.wait() => return,
                    }
                }
            }
        }
    }

    /// Makes new notices durable, then wakes the sender for those queued.
    async fn made(&self, notices: &[Notification]) {
        if let Err(e) = self.shared.reminders.books.flush().await {
            tracing::warn!(error = %e, "flushing new notices failed");
        }
        if notices
            .iter()
            .any(|n| n.state == NotificationState::Queued as i32)
        {
            self.shared.queued.notify_one();
        }
    }

    async fn send_forever(self, mut stopping: Stopping) {
        let Some(mailer) = &self.shared.mailer else {
            return;
        };
        let books = &self.shared.reminders.books;
        loop {
            let next = match sender::send_due(books, mailer, Time::now()).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, "the notice sender failed");
                    Some(Time::now().plus(AFTER_ERROR))
                }
            };
            tokio::select! {
                () = self.shared.queued.notified() => {}
                () = sleep_until(next) => {}
                () = stopping.wait() => return,
            }
        }
    }
}

/// Sleeps until `at` (at once when it has passed), or forever when `None`.
async fn sleep_until(at: Option<Time>) {
    match at {
        Some(at) => {
            let now = Time::now().unix_micros();
            let wait = Duration::from_micros(at.unix_micros().saturating_sub(now));
            tokio::time::sleep(wait).await;
        }
        None => std::future::pending().await,
    }
}

impl ForwardAttemptSink for Notifier {
    fn forward_attempts_stored(&self, attempts: &[(&DeliveryAttempt, Time)]) {
        self.record_attempts(attempts.iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use hookplane_proto::v1::AttemptOutcome;

    use super::*;
    use crate::test_fixtures::*;

    async fn notifier_with_failure(
        window: Duration,
    ) -> (tempfile::TempDir, Store, Notifier, String, DeliveryAttempt) {
        let (dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let channel = create_channel(&store, &tenant.id).await;
        let set = create_forwarding_set(&store, &channel.id, raw_set_input())
            .await
            .unwrap();
        let mut opts = ControlOptions::with_data_dir(dir.path());
        opts.notify_window = window.into();
        let notifier = Notifier::open(&store, &opts).unwrap();
        let attempt = DeliveryAttempt {
            forwarding_set_id: set.id,
            outcome: AttemptOutcome::Failed as i32,
            reason: "404 Not Found".into(),
            ..Default::default()
        };
        (dir, store, notifier, tenant.id, attempt)
    }

    fn listed(store: &Store) -> Vec<Notification> {
        use prost::Message as _;
        store
            .notifications_tree()
            .iter()
            .values()
            .map(|v| Notification::decode(v.unwrap().as_ref()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn a_reported_failure_wakes_the_reminder_task() {
        let (_dir, store, notifier, tenant_id, attempt) =
            notifier_with_failure(Duration::from_secs(3600)).await;
        let (stop, stopping) = Stopping::new();
        let tasks = notifier.start(&stopping);
        notifier.record_attempts([(&attempt, Time::now())]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while listed(&store).is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "no reminder made");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let notices = listed(&store);
        assert_eq!(notices[0].tenant_id, tenant_id);
        assert_eq!(notices[0].state, NotificationState::Logged as i32);
        stop.send(true).unwrap();
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .unwrap()
                .unwrap();
        }
    }

    #[tokio::test]
    async fn the_stopped_subscription_notice_is_kept_for_the_tenant() {
        let (_dir, store, notifier, tenant_id, _) =
            notifier_with_failure(Duration::from_secs(3600)).await;
        let sub = create_subscription(&store, &tenant_id, subscription_input())
            .await
            .unwrap();
        let record = store.subscription(&sub.id).unwrap();
        let since = Time {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        let notice = notifier
            .subscription_stopped(&record, "500 Internal Server Error", since)
            .unwrap();
        assert_eq!(notice.kind, "subscription_stopped");
        assert_eq!(notice.recipients, ["ops@brand.example"]);
        assert_eq!(
            notice.subject,
            "[System Notification] Receipts -- Webhook Subscription Stopped"
        );
        assert!(notice.body_text.contains("Webhook name: Receipts"));
        assert!(
            notice
                .body_text
                .contains("Webhook URL: https://hooks.brand.example/receipts")
        );
        assert!(
            notice
                .body_text
                .contains("Reason: 500 Internal Server Error")
        );
        assert!(
            notice
                .body_text
                .contains("Stopped since: 2023-11-14T22:13:20Z")
        );
        assert_eq!(listed(&store), [notice]);
    }

    #[tokio::test]
    async fn a_malformed_smtp_url_stops_the_start() {
        let (dir, store) = store();
        let mut opts = ControlOptions::with_data_dir(dir.path());
        opts.smtp_url = Some("http://user:pw-secret@mail.example.com".into());
        let err = Notifier::open(&store, &opts).err().unwrap();
        assert!(!err.to_string().contains("pw-secret"), "{err}");
    }
}
