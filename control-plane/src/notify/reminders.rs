//! Turning the ledger into emails: a failure reminder for each tenant with failures not yet told
//! (at most one per quiet window), and the periodic sweep of endpoints that failed during the
//! period and still fail.

use std::collections::BTreeMap;
use std::time::Duration;

use hookplane_proto::v1::Notification;

use super::books::{Batch, Book, Books};
use super::compose::{self, FailingEndpoint, Occasion, ReasonCount};
use super::outbox::{self, FORWARD_FAILURE, PERIODIC_SUMMARY};
use super::records::{FailureRecord, Health, Tally, TenantNotices, tenant_prefix};
use super::throttle::{self, Decision};
use crate::clock::Time;
use crate::error::Error;
use crate::store::Store;

const LAST_SWEEP_KEY: &[u8] = b"last_sweep";

#[derive(Clone)]
pub(crate) struct Reminders {
    pub store: Store,
    pub books: Books,
    /// Whether an SMTP server is configured (notices are queued rather than only logged).
    pub smtp: bool,
    pub window: Duration,
}

/// What a sweep or a reminder round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Round {
    pub notices: Vec<Notification>,
    /// When held failures are next due.
    pub next_due: Option<Time>,
}

fn earlier(a: Option<Time>, b: Time) -> Option<Time> {
    Some(a.map_or(b, |a| a.min(b)))
}

impl Reminders {
    /// Reminds every tenant with untold failures whose quiet window has passed.
    pub fn remind_due(&self, now: Time) -> Result<Round, Error> {
        let _guard = self.books.lock();
        let mut round = Round::default();
        for (key, notices) in self.books.scan::<TenantNotices>(Book::Tenants, b"")? {
            if !notices.pending {
                continue;
            }
            let tenant_id = String::from_utf8_lossy(&key).into_owned();
            match throttle::decide(notices.last_reminder, now, self.window) {
                Decision::HoldUntil(due) => round.next_due = earlier(round.next_due, due),
                Decision::Now => {
                    if let Some(n) = self.remind(&tenant_id, notices, now)? {
                        round.notices.push(n);
                    }
                }
            }
        }
        Ok(round)
    }

    fn remind(
        &self,
        tenant_id: &str,
        mut notices: TenantNotices,
        now: Time,
    ) -> Result<Option<Notification>, Error> {
        let records = self
            .books
            .scan::<FailureRecord>(Book::Failures, &tenant_prefix(tenant_id))?;
        let mut batch = Batch::default();
        let Some(tenant) = self.store.find_tenant(tenant_id)? else {
            forget_tenant(&mut batch, tenant_id, &records);
            self.books.apply(batch)?;
            return Ok(None);
        };
        let untold: Vec<&FailureRecord> = records
            .iter()
            .map(|(_, r)| r)
            .filter(|r| r.since_reminder.is_some())
            .collect();
        notices.pending = false;
        let mut notice = None;
        if !untold.is_empty() {
            let endpoints = self.endpoints(&untold, |r| r.since_reminder)?;
            let email =
                compose::failure_reminder(&tenant.display_name, &endpoints, Occasion::Reminder);
            notice = Some(outbox::add_notice(
                &mut batch,
                &tenant,
                FORWARD_FAILURE,
                email,
                self.smtp,
                now,
            ));
            notices.last_reminder = Some(now);
            for (key, record) in &records {
                if record.since_reminder.is_some() {
                    let mut record = record.clone();
                    record.since_reminder = None;
                    keep_or_drop(&mut batch, key, &record);
                }
            }
        }
        batch.put(Book::Tenants, tenant_id.as_bytes().to_vec(), &notices);
        self.books.apply(batch)?;
        Ok(notice)
    }

    /// When the last periodic sweep ran.
    pub fn last_sweep(&self) -> Result<Option<Time>, Error> {
        self.books.get(Book::Meta, LAST_SWEEP_KEY)
    }

    pub fn set_last_sweep(&self, at: Time) -> Result<(), Error> {
        let mut batch = Batch::default();
        batch.put(Book::Meta, LAST_SWEEP_KEY.to_vec(), &at);
        self.books.apply(batch)
    }

    /// Emails every tenant whose forwarding sets failed during the period and still fail, then
    /// starts the next period.
    pub fn sweep(&self, now: Time, period: Duration) -> Result<Round, Error> {
        let _guard = self.books.lock();
        let mut by_tenant: BTreeMap<String, Vec<(Vec<u8>, FailureRecord)>> = BTreeMap::new();
        for (key, record) in self.books.scan::<FailureRecord>(Book::Failures, b"")? {
            by_tenant
                .entry(record.tenant_id.clone())
                .or_default()
                .push((key, record));
        }
        let mut round = Round::default();
        for (tenant_id, records) in by_tenant {
            let mut batch = Batch::default();
            let Some(tenant) = self.store.find_tenant(&tenant_id)? else {
                forget_tenant(&mut batch, &tenant_id, &records);
                self.books.apply(batch)?;
                continue;
            };
            let mut still_failing = Vec::new();
            for (_, record) in &records {
                if record.this_period.is_some() && self.is_failing(&record.forwarding_set_id)? {
                    still_failing.push(record);
                }
            }
            if !still_failing.is_empty() {
                let endpoints = self.endpoints(&still_failing, |r| r.this_period)?;
                let email = compose::failure_reminder(
                    &tenant.display_name,
                    &endpoints,
                    Occasion::PeriodicSummary { period },
                );
                round.notices.push(outbox::add_notice(
                    &mut batch,
                    &tenant,
                    PERIODIC_SUMMARY,
                    email,
                    self.smtp,
                    now,
                ));
            }
            for (key, record) in &records {
                let mut record = record.clone();
                record.this_period = None;
                keep_or_drop(&mut batch, key, &record);
            }
            self.books.apply(batch)?;
        }
        let mut batch = Batch::default();
        for (key, _) in self.books.scan::<Health>(Book::Health, b"")? {
            let set_id = String::from_utf8_lossy(&key).into_owned();
            if self.store.find_forwarding_set(&set_id)?.is_none() {
                batch.remove(Book::Health, key);
            }
        }
        batch.put(Book::Meta, LAST_SWEEP_KEY.to_vec(), &now);
        self.books.apply(batch)?;
        Ok(round)
    }

    fn health(&self, forwarding_set_id: &str) -> Result<Option<Health>, Error> {
        self.books.get(Book::Health, forwarding_set_id.as_bytes())
    }

    fn is_failing(&self, forwarding_set_id: &str) -> Result<bool, Error> {
        Ok(self.health(forwarding_set_id)?.is_some_and(|h| h.failing))
    }

    /// The endpoints of `records` with the counts `pick` chooses, earliest failure first.
    fn endpoints(
        &self,
        records: &[&FailureRecord],
        pick: fn(&FailureRecord) -> Option<Tally>,
    ) -> Result<Vec<FailingEndpoint>, Error> {
        let mut endpoints: Vec<(String, FailingEndpoint)> = Vec::new();
        for record in records {
            let Some(tally) = pick(record) else { continue };
            let index = match endpoints
                .iter()
                .position(|(id, _)| *id == record.forwarding_set_id)
            {
                Some(i) => i,
                None => {
                    endpoints.push((record.forwarding_set_id.clone(), self.endpoint(record)?));
                    endpoints.len() - 1
                }
            };
            endpoints[index].1.reasons.push(ReasonCount {
                reason: record.reason.clone(),
                count: tally.count,
                first: tally.first,
                last: tally.last,
            });
        }
        let mut endpoints: Vec<FailingEndpoint> = endpoints.into_iter().map(|(_, e)| e).collect();
        for e in &mut endpoints {
            e.reasons.sort_by_key(|r| r.first);
        }
        endpoints.sort_by_key(|e| e.reasons.first().map(|r| r.first));
        Ok(endpoints)
    }

    fn endpoint(&self, record: &FailureRecord) -> Result<FailingEndpoint, Error> {
        let official_account = match self.store.find_channel(&record.channel_id)? {
            Some(channel) => channel.display_name,
            None if !record.channel_id.is_empty() => record.channel_id.clone(),
            None => "LINE official account".to_owned(),
        };
        let forwarding_set = match self.store.find_forwarding_set(&record.forwarding_set_id)? {
            Some(set) => set.name,
            None => format!("{} (since deleted)", record.forwarding_set_id),
        };
        let failing_since = self
            .health(&record.forwarding_set_id)?
            .filter(|h| h.failing)
            .and_then(|h| h.streak)
            .map(|s| (s.first, s.count));
        Ok(FailingEndpoint {
            official_account,
            forwarding_set,
            url: record.url.clone(),
            reasons: Vec::new(),
            failing_since,
        })
    }
}

fn keep_or_drop(batch: &mut Batch, key: &[u8], record: &FailureRecord) {
    if record.is_spent() {
        batch.remove(Book::Failures, key.to_vec());
    } else {
        batch.put(Book::Failures, key.to_vec(), record);
    }
}

/// A deleted tenant has no one to tell.
fn forget_tenant(batch: &mut Batch, tenant_id: &str, records: &[(Vec<u8>, FailureRecord)]) {
    for (key, _) in records {
        batch.remove(Book::Failures, key.clone());
    }
    batch.remove(Book::Tenants, tenant_id.as_bytes().to_vec());
}

#[cfg(test)]
mod tests {
    use hookplane_proto::v1::NotificationState;

    use super::*;
    use crate::notify::ledger::{self, ForwardOutcome};
    use crate::sealing::{MasterKey, Sealer};
    use crate::test_fixtures::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const WEEK: Duration = Duration::from_secs(7 * 86_400);

    struct Setup {
        _dir: tempfile::TempDir,
        reminders: Reminders,
        tenant_id: String,
        sets: Vec<(String, String)>,
    }

    fn at(seconds: i64) -> Time {
        Time { seconds, nanos: 0 }
    }

    fn reminders(store: Store, smtp: bool) -> Reminders {
        Reminders {
            books: Books::open(&store).unwrap(),
            store,
            smtp,
            window: HOUR,
        }
    }

    /// A tenant with one channel ("Brand OA") and `urls.len()` forwarding sets.
    async fn setup(urls: &[&str]) -> Setup {
        let (dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let channel = create_channel(&store, &tenant.id).await;
        let mut sets = Vec::new();
        for url in urls {
            let mut input = raw_set_input();
            input.url = (*url).into();
            let set = create_forwarding_set(&store, &channel.id, input)
                .await
                .unwrap();
            sets.push((set.id, set.url));
        }
        Setup {
            _dir: dir,
            reminders: reminders(store, false),
            tenant_id: tenant.id,
            sets,
        }
    }

    impl Setup {
        fn report(&self, set: usize, reason: Option<&str>, time: Time) {
            let outcome = ForwardOutcome {
                forwarding_set_id: &self.sets[set].0,
                tenant_id: "",
                channel_id: "",
                url: "",
                failed: reason.is_some(),
                reason: reason.unwrap_or_default(),
                time,
            };
            ledger::record(&self.reminders.books, &self.reminders.store, &[outcome]).unwrap();
        }
    }

    #[tokio::test]
    async fn the_first_failure_is_told_at_once() {
        let s = setup(&["https://crm.brand.example/a"]).await;
        s.report(0, Some("404 Not Found"), at(1_000));
        let round = s.reminders.remind_due(at(1_001)).unwrap();
        assert_eq!(round.notices.len(), 1);
        let n = &round.notices[0];
        assert_eq!(n.kind, FORWARD_FAILURE);
        assert_eq!(n.tenant_id, s.tenant_id);
        assert_eq!(n.recipients, ["ops@brand.example"]);
        assert_eq!(
            n.subject,
            "[System Notification] Brand OA -- LINE Webhook Forward Failure Reminder"
        );
        assert!(n.body_text.contains("Error reason: 404 Not Found"));
        assert!(
            n.body_text
                .contains("Webhook endpoint URL: https://crm.brand.example/a")
        );
        assert_eq!(n.state, NotificationState::Logged as i32);
    }

    #[tokio::test]
    async fn a_failure_within_the_window_is_held_until_it_ends() {
        let s = setup(&["https://crm.brand.example/a"]).await;
        s.report(0, Some("404 Not Found"), at(1_000));
        s.reminders.remind_due(at(1_000)).unwrap();
        s.report(0, Some("404 Not Found"), at(1_100));
        let held = s.reminders.remind_due(at(1_100)).unwrap();
        assert!(held.notices.is_empty());
        assert_eq!(held.next_due, Some(at(1_000 + 3_600)));
    }

    #[tokio::test]
    async fn after_the_window_one_email_sums_up_every_endpoint_and_reason_held() {
        let s = setup(&["https://crm.brand.example/a", "https://bot.brand.example/b"]).await;
        s.report(0, Some("404 Not Found"), at(1_000));
        s.reminders.remind_due(at(1_000)).unwrap();
        s.report(0, Some("404 Not Found"), at(1_100));
        s.report(1, Some("500 Internal Server Error"), at(1_200));
        s.report(1, Some("500 Internal Server Error"), at(1_300));
        s.report(1, Some("remote network error"), at(1_400));
        assert!(
            s.reminders
                .remind_due(at(1_500))
                .unwrap()
                .notices
                .is_empty()
        );
        let round = s.reminders.remind_due(at(4_600)).unwrap();
        assert_eq!(round.notices.len(), 1);
        let text = &round.notices[0].body_text;
        for needle in [
            "Webhook endpoint URL: https://crm.brand.example/a",
            "Webhook endpoint URL: https://bot.brand.example/b",
            "Error reason: 500 Internal Server Error",
            "Error reason: remote network error",
            "Count: 2 failed attempts since the last reminder",
            // The endpoint failing since the first reminder counts both of its failures.
            "(2 failed attempts in all)",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from\n{text}");
        }
        assert!(
            s.reminders
                .remind_due(at(4_700))
                .unwrap()
                .notices
                .is_empty()
        );
    }

    #[tokio::test]
    async fn nothing_is_sent_when_nothing_failed_since_the_last_reminder() {
        let s = setup(&["https://crm.brand.example/a"]).await;
        s.report(0, Some("404 Not Found"), at(1_000));
        s.reminders.remind_due(at(1_000)).unwrap();
        let later = s.reminders.remind_due(at(9_000)).unwrap();
        assert_eq!(later, Round::default());
    }

    #[tokio::test]
    async fn the_last_reminder_time_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate();
        let path = dir.path().join("store");
        let tenant_id;
        let set_id;
        {
            let store = Store::open(&path, Sealer::new(&key)).unwrap();
            let tenant = create_tenant(&store, tenant_input()).await;
            let channel = create_channel(&store, &tenant.id).await;
            set_id = create_forwarding_set(&store, &channel.id, raw_set_input())
                .await
                .unwrap()
                .id;
            tenant_id = tenant.id;
            let r = reminders(store.clone(), false);
            let failure = |t| ForwardOutcome {
                forwarding_set_id: &set_id,
                tenant_id: "",
                channel_id: "",
                url: "",
                failed: true,
                reason: "404 Not Found",
                time: t,
            };
            ledger::record(&r.books, &r.store, &[failure(at(1_000))]).unwrap();
            assert_eq!(r.remind_due(at(1_000)).unwrap().notices.len(), 1);
            ledger::record(&r.books, &r.store, &[failure(at(1_010))]).unwrap();
            store.flush().await.unwrap();
        }
        let store = Store::open(&path, Sealer::new(&key)).unwrap();
        let r = reminders(store, false);
        let held = r.remind_due(at(1_020)).unwrap();
        assert!(held.notices.is_empty(), "reminded again after a restart");
        assert_eq!(held.next_due, Some(at(4_600)));
        let later = r.remind_due(at(4_600)).unwrap();
        assert_eq!(later.notices.len(), 1);
        assert_eq!(later.notices[0].tenant_id, tenant_id);
    }

    #[tokio::test]
    async fn with_smtp_the_reminder_is_queued() {
        let mut s = setup(&["https://crm.brand.example/a"]).await;
        s.reminders.smtp = true;
        s.report(0, Some("502 Bad Gateway"), at(1_000));
        let round = s.reminders.remind_due(at(1_000)).unwrap();
        assert_eq!(round.notices[0].state, NotificationState::Queued as i32);
        assert_eq!(outbox::queued(&s.reminders.books).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn the_sweep_tells_of_sets_that_failed_in_the_period_and_still_fail() {
        let s = setup(&["https://crm.brand.example/a", "https://bot.brand.example/b"]).await;
        s.report(0, Some("404 Not Found"), at(1_000));
        s.report(0, Some("404 Not Found"), at(2_000));
        s.report(1, Some("502 Bad Gateway"), at(1_500));
        s.report(1, None, at(2_500));
        let round = s.reminders.sweep(at(10_000), WEEK).unwrap();
        assert_eq!(round.notices.len(), 1);
        let n = &round.notices[0];
        assert_eq!(n.kind, PERIODIC_SUMMARY);
        assert!(n.body_text.contains("https://crm.brand.example/a"));
        assert!(
            n.body_text
                .contains("Count: 2 failed attempts in the past 7days")
        );
        assert!(
            !n.body_text.contains("https://bot.brand.example/b"),
            "a success cleared it:\n{}",
            n.body_text
        );
    }

    #[tokio::test]
    async fn the_next_sweep_counts_only_its_own_period() {
        let s = setup(&["https://crm.brand.example/a"]).await;
        s.report(0, Some("404 Not Found"), at(1_000));
        s.reminders.sweep(at(10_000), WEEK).unwrap();
        assert!(
            s.reminders
                .sweep(at(20_000), WEEK)
                .unwrap()
                .notices
                .is_empty()
        );
        assert_eq!(s.reminders.last_sweep().unwrap(), Some(at(20_000)));
    }

    #[tokio::test]
    async fn the_sweep_does_not_spend_what_the_next_reminder_will_tell() {
        let s = setup(&["https://crm.brand.example/a"]).await;
        s.report(0, Some("404 Not Found"), at(1_000));
        s.reminders.sweep(at(1_001), WEEK).unwrap();
        assert_eq!(s.reminders.remind_due(at(1_002)).unwrap().notices.len(), 1);
    }

    #[tokio::test]
    async fn failures_of_a_deleted_tenant_are_forgotten() {
        use hookplane_proto::v1::DeleteTenantRequest;
        use hookplane_proto::v1::tenant_service_server::TenantService as _;
        let s = setup(&["https://crm.brand.example/a"]).await;
        s.report(0, Some("404 Not Found"), at(1_000));
        crate::tenants::TenantApi::new(s.reminders.store.clone())
            .delete_tenant(operator(DeleteTenantRequest {
                id: s.tenant_id.clone(),
            }))
            .await
            .unwrap();
        assert!(
            s.reminders
                .remind_due(at(1_001))
                .unwrap()
                .notices
                .is_empty()
        );
        assert!(
            s.reminders
                .books
                .scan::<FailureRecord>(Book::Failures, b"")
                .unwrap()
                .is_empty()
        );
    }
}
