//! Notices as NotificationService lists them, and the outbox of those waiting for the SMTP
//! server: LOGGED at once without a server (or without recipients), otherwise QUEUED until SENT,
//! retried with a bounded exponential backoff, UNDELIVERABLE once given up.

use std::time::Duration;

use hookplane_proto::v1::{Notification, NotificationState};

use super::books::{Batch, Book, Books};
use super::compose::Email;
use super::records::{OutboxEntry, notification_key};
use crate::clock::Time;
use crate::error::Error;
use crate::ids;
use crate::store::TenantRecord;

pub(crate) const FORWARD_FAILURE: &str = "forward_failure";
pub(crate) const PERIODIC_SUMMARY: &str = "weekly_summary";
pub(crate) const SUBSCRIPTION_STOPPED: &str = "subscription_stopped";

const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_CAP: Duration = Duration::from_secs(300);
/// With the waits above, about 40 minutes of trying.
pub(crate) const MAX_ATTEMPTS: u32 = 12;

const NO_RECIPIENTS: &str = "the tenant has no notification_emails: nothing was sent";

/// How long to wait after the `attempts`-th failed send.
pub(crate) fn retry_delay(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    RETRY_FIRST.saturating_mul(1 << doublings).min(RETRY_CAP)
}

/// Adds a notice for `tenant` to `batch`: QUEUED in the outbox when `smtp` is set and the tenant
/// has recipients, otherwise LOGGED (and written to the log here).
pub(crate) fn add_notice(
    batch: &mut Batch,
    tenant: &TenantRecord,
    kind: &str,
    email: Email,
    smtp: bool,
    now: Time,
) -> Notification {
    let id = ids::new_id(ids::NOTIFICATION);
    let key = notification_key(&tenant.id, now, &id);
    let recipients = tenant.notification_emails.clone();
    let mut notification = Notification {
        id,
        tenant_id: tenant.id.clone(),
        kind: kind.to_owned(),
        recipients: recipients.clone(),
        subject: email.subject.clone(),
        body_text: email.text.clone(),
        state: NotificationState::Logged as i32,
        create_time: Some(now.to_proto()),
        sent_time: None,
        last_error: String::new(),
    };
    if recipients.is_empty() {
        notification.last_error = NO_RECIPIENTS.to_owned();
        tracing::info!(
            tenant_id = %tenant.id,
            notification_id = %notification.id,
            kind,
            subject = %email.subject,
            "notice kept without sending: the tenant has no notification emails"
        );
    } else if !smtp {
        tracing::info!(
            tenant_id = %tenant.id,
            notification_id = %notification.id,
            kind,
            recipients = ?recipients,
            subject = %email.subject,
            body = %email.text,
            "notice logged (no SMTP server configured)"
        );
    } else {
        notification.state = NotificationState::Queued as i32;
        batch.put(
            Book::Outbox,
            key.clone(),
            &OutboxEntry {
                tenant_id: tenant.id.clone(),
                recipients,
                subject: email.subject,
                text: email.text,
                html: email.html,
                attempts: 0,
                next_try: now,
            },
        );
    }
    batch.put_notification(key, &notification);
    notification
}

/// Every queued email, with its key.
pub(crate) fn queued(books: &Books) -> Result<Vec<(Vec<u8>, OutboxEntry)>, Error> {
    books.scan(Book::Outbox, b"")
}

/// Marks the notice SENT and takes it off the outbox.
pub(crate) fn sent(books: &Books, key: &[u8], now: Time) -> Result<(), Error> {
    update(books, key, None, |n| {
        n.state = NotificationState::Sent as i32;
        n.sent_time = Some(now.to_proto());
        n.last_error.clear();
    })
}

/// Keeps the error on the notice and schedules the next try, or gives up (UNDELIVERABLE) when the error
/// is permanent or the tries are spent (UNDELIVERABLE). Returns when it will be tried again, if it will.
pub(crate) fn failed_once(
    books: &Books,
    key: &[u8],
    mut entry: OutboxEntry,
    error: &Error,
    now: Time,
) -> Result<Option<Time>, Error> {
    entry.attempts = entry.attempts.saturating_add(1);
    let permanent = matches!(
        error,
        Error::Mail {
            permanent: true,
            ..
        }
    );
    let again = !permanent && entry.attempts < MAX_ATTEMPTS;
    let detail = error.to_string();
    if again {
        entry.next_try = now.plus(retry_delay(entry.attempts));
        update(books, key, Some(&entry), |n| {
            n.last_error = format!("attempt {}: {detail}", entry.attempts);
        })?;
        Ok(Some(entry.next_try))
    } else {
        update(books, key, None, |n| {
            n.state = NotificationState::Undeliverable as i32;
            n.last_error = format!("gave up after {} attempt(s): {detail}", entry.attempts);
        })?;
        Ok(None)
    }
}

/// Without an SMTP server any more, what was queued is only logged.
pub(crate) fn log_queued(books: &Books) -> Result<usize, Error> {
    let entries = queued(books)?;
    for (key, entry) in &entries {
        tracing::info!(
            tenant_id = %entry.tenant_id,
            recipients = ?entry.recipients,
            subject = %entry.subject,
            body = %entry.text,
            "queued notice logged (no SMTP server configured any more)"
        );
        update(books, key, None, |n| {
            n.state = NotificationState::Logged as i32;
            n.last_error = "no SMTP server configured any more: nothing was sent".to_owned();
        })?;
    }
    Ok(entries.len())
}

/// Rewrites the notice under `key` and puts (`Some`) or removes (`None`) its outbox entry.
fn update(
    books: &Books,
    key: &[u8],
    outbox: Option<&OutboxEntry>,
    change: impl FnOnce(&mut Notification),
) -> Result<(), Error> {
    let _guard = books.lock();
    let mut batch = Batch::default();
    if let Some(mut notification) = books.notification(key)? {
        change(&mut notification);
        batch.put_notification(key.to_vec(), &notification);
    }
    match outbox {
        Some(entry) => batch.put(Book::Outbox, key.to_vec(), entry),
        None => batch.remove(Book::Outbox, key.to_vec()),
    }
    books.apply(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::store;

    fn tenant(emails: &[&str]) -> TenantRecord {
        TenantRecord {
            id: "tnt_a".into(),
            display_name: "Brand".into(),
            notification_emails: emails.iter().map(|e| (*e).to_owned()).collect(),
            zones: vec![],
            max_active_subscriptions: None,
            max_forwarding_sets_per_channel: None,
            create_time: Time::now(),
            update_time: Time::now(),
            purged_before: None,
        }
    }

    fn email() -> Email {
        Email {
            subject: "subject".into(),
            text: "text".into(),
            html: "<p>html</p>".into(),
        }
    }

    fn add(books: &Books, tenant: &TenantRecord, smtp: bool) -> (Vec<u8>, Notification) {
        let now = Time::now();
        let mut batch = Batch::default();
        let n = add_notice(&mut batch, tenant, FORWARD_FAILURE, email(), smtp, now);
        books.apply(batch).unwrap();
        let key = notification_key(&tenant.id, now, &n.id);
        (key, n)
    }

    #[test]
    fn the_retry_delay_doubles_up_to_its_cap() {
        let delays: Vec<_> = (1..=12).map(|a| retry_delay(a).as_secs()).collect();
        assert_eq!(delays[..4], [1, 2, 4, 8]);
        assert_eq!(delays[11], 300);
    }

    #[test]
    fn without_smtp_a_notice_is_logged_and_not_queued() {
        let (_dir, store) = store();
        let books = Books::open(&store).unwrap();
        let (key, n) = add(&books, &tenant(&["ops@brand.example"]), false);
        assert_eq!(n.state, NotificationState::Logged as i32);
        assert!(queued(&books).unwrap().is_empty());
        assert_eq!(books.notification(&key).unwrap().unwrap(), n);
    }

    #[test]
    fn a_tenant_without_recipients_gets_a_logged_notice_with_a_note() {
        let (_dir, store) = store();
        let books = Books::open(&store).unwrap();
        let (_, n) = add(&books, &tenant(&[]), true);
        assert_eq!(n.state, NotificationState::Logged as i32);
        assert_eq!(n.last_error, NO_RECIPIENTS);
        assert!(queued(&books).unwrap().is_empty());
    }

    #[test]
    fn with_smtp_a_notice_is_queued_until_sent() {
        let (_dir, store) = store();
        let books = Books::open(&store).unwrap();
        let (key, n) = add(&books, &tenant(&["ops@brand.example"]), true);
        assert_eq!(n.state, NotificationState::Queued as i32);
        let waiting = queued(&books).unwrap();
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].1.html, "<p>html</p>");
        let now = Time::now();
        sent(&books, &key, now).unwrap();
        let stored = books.notification(&key).unwrap().unwrap();
        assert_eq!(stored.state, NotificationState::Sent as i32);
        assert_eq!(stored.sent_time, Some(now.to_proto()));
        assert!(queued(&books).unwrap().is_empty());
    }

    #[test]
    fn a_transient_failure_keeps_the_error_and_schedules_a_retry() {
        let (_dir, store) = store();
        let books = Books::open(&store).unwrap();
        let (key, _) = add(&books, &tenant(&["ops@brand.example"]), true);
        let (_, entry) = queued(&books).unwrap().remove(0);
        let now = Time::now();
        let error = Error::Mail {
            detail: "Connection refused".into(),
            permanent: false,
        };
        assert_eq!(
            failed_once(&books, &key, entry, &error, now).unwrap(),
            Some(now.plus(Duration::from_secs(1)))
        );
        let stored = books.notification(&key).unwrap().unwrap();
        assert_eq!(stored.state, NotificationState::Queued as i32);
        assert!(stored.last_error.contains("Connection refused"));
        let (_, entry) = queued(&books).unwrap().remove(0);
        assert_eq!(entry.attempts, 1);
        assert_eq!(entry.next_try, now.plus(Duration::from_secs(1)));
    }

    #[test]
    fn a_permanent_refusal_gives_up_at_once() {
        let (_dir, store) = store();
        let books = Books::open(&store).unwrap();
        let (key, _) = add(&books, &tenant(&["ops@brand.example"]), true);
        let (_, entry) = queued(&books).unwrap().remove(0);
        let error = Error::Mail {
            detail: "550 mailbox unavailable".into(),
            permanent: true,
        };
        assert_eq!(
            failed_once(&books, &key, entry, &error, Time::now()).unwrap(),
            None
        );
        let stored = books.notification(&key).unwrap().unwrap();
        assert_eq!(stored.state, NotificationState::Undeliverable as i32);
        assert!(queued(&books).unwrap().is_empty());
    }

    #[test]
    fn the_last_allowed_try_gives_up() {
        let (_dir, store) = store();
        let books = Books::open(&store).unwrap();
        let (key, _) = add(&books, &tenant(&["ops@brand.example"]), true);
        let (_, mut entry) = queued(&books).unwrap().remove(0);
        entry.attempts = MAX_ATTEMPTS - 1;
        let error = Error::Mail {
            detail: "timed out".into(),
            permanent: false,
        };
        assert_eq!(
            failed_once(&books, &key, entry, &error, Time::now()).unwrap(),
            None
        );
        let stored = books.notification(&key).unwrap().unwrap();
        assert_eq!(stored.state, NotificationState::Undeliverable as i32);
        assert!(stored.last_error.starts_with("gave up after 12 attempt(s)"));
    }

    #[test]
    fn queued_notices_are_logged_when_smtp_is_gone() {
        let (_dir, store) = store();
        let books = Books::open(&store).unwrap();
        let (key, _) = add(&books, &tenant(&["ops@brand.example"]), true);
        assert_eq!(log_queued(&books).unwrap(), 1);
        let stored = books.notification(&key).unwrap().unwrap();
        assert_eq!(stored.state, NotificationState::Logged as i32);
        assert!(queued(&books).unwrap().is_empty());
    }
}
