//! What the notifier keeps in sled (serde_json values) and under which keys.

use serde::{Deserialize, Serialize};

use crate::clock::Time;

/// How many times something happened, first and last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Tally {
    pub count: u64,
    pub first: Time,
    pub last: Time,
}

impl Tally {
    pub fn once(at: Time) -> Tally {
        Tally {
            count: 1,
            first: at,
            last: at,
        }
    }

    /// Adds one occurrence; reports from several nodes may arrive out of time order.
    pub fn add(tally: Option<Tally>, at: Time) -> Tally {
        match tally {
            None => Tally::once(at),
            Some(t) => Tally {
                count: t.count.saturating_add(1),
                first: t.first.min(at),
                last: t.last.max(at),
            },
        }
    }
}

/// The failures of one forwarding set for one reason, under `tenant/fwd/reason`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FailureRecord {
    pub tenant_id: String,
    pub channel_id: String,
    pub forwarding_set_id: String,
    pub url: String,
    pub reason: String,
    /// Failures not yet in a reminder.
    pub since_reminder: Option<Tally>,
    /// Failures since the last periodic sweep.
    pub this_period: Option<Tally>,
}

impl FailureRecord {
    /// Nothing left to tell: the record can go.
    pub fn is_spent(&self) -> bool {
        self.since_reminder.is_none() && self.this_period.is_none()
    }
}

/// Whether a forwarding set's latest attempt failed, under `fwd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Health {
    pub tenant_id: String,
    /// The time of the latest attempt seen.
    pub latest: Time,
    pub failing: bool,
    /// The failures since the last success (None while it succeeds).
    pub streak: Option<Tally>,
}

/// A tenant's notice state, under `tenant`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TenantNotices {
    /// When the last failure reminder was made; it survives restarts so the window does too.
    pub last_reminder: Option<Time>,
    /// Failures wait for a reminder.
    pub pending: bool,
}

/// An email waiting for the SMTP server, under the key of its notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OutboxEntry {
    pub tenant_id: String,
    pub recipients: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Sends tried so far.
    pub attempts: u32,
    pub next_try: Time,
}

pub(crate) fn failure_key(tenant_id: &str, forwarding_set_id: &str, reason: &str) -> Vec<u8> {
    format!("{tenant_id}/{forwarding_set_id}/{reason}").into_bytes()
}

pub(crate) fn tenant_prefix(tenant_id: &str) -> Vec<u8> {
    format!("{tenant_id}/").into_bytes()
}

/// `tenant/` + (u64::MAX - µs) in hex + `/` + id: a tenant's notifications list newest first.
pub(crate) fn notification_key(tenant_id: &str, created: Time, id: &str) -> Vec<u8> {
    format!("{tenant_id}/{:016x}/{id}", u64::MAX - created.unix_micros()).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time { seconds, nanos: 0 }
    }

    #[test]
    fn a_tally_keeps_the_earliest_and_latest_time_whatever_the_arrival_order() {
        let t = Tally::add(Some(Tally::once(at(20))), at(10));
        let t = Tally::add(Some(t), at(30));
        assert_eq!(
            t,
            Tally {
                count: 3,
                first: at(10),
                last: at(30)
            }
        );
    }

    #[test]
    fn later_notifications_sort_first() {
        let older = notification_key("tnt_a", at(100), "ntf_1");
        let newer = notification_key("tnt_a", at(200), "ntf_2");
        assert!(newer < older);
        assert!(older.starts_with(b"tnt_a/"));
    }
}
