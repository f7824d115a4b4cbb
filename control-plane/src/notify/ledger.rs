//! The failure ledger: every forward attempt the nodes report updates its forwarding set's health
//! (is the latest attempt a failure, since when does it fail), and every failure is counted per
//! tenant, forwarding set and reason, once for the next reminder and once for the periodic sweep.

use std::collections::BTreeMap;
use std::collections::hash_map::Entry;

use foldhash::{HashMap, HashMapExt as _};
use hookplane_proto::v1::{AttemptOutcome, DeliveryAttempt};

use super::books::{Batch, Book, Books};
use super::records::{FailureRecord, Health, Tally, TenantNotices, failure_key};
use crate::clock::Time;
use crate::error::Error;
use crate::store::Store;

/// Reasons are keys; a node's long error text must not make keys unbounded.
const MAX_REASON_CHARS: usize = 200;

/// One forward attempt as the notifier sees it, borrowed from the attempt: most are successes
/// that only move their set's health, and copying four strings of each showed in the attempt
/// log's profile (docs/BENCHMARKS.md, change 36).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ForwardOutcome<'a> {
    pub forwarding_set_id: &'a str,
    pub tenant_id: &'a str,
    pub channel_id: &'a str,
    pub url: &'a str,
    pub failed: bool,
    pub reason: &'a str,
    pub time: Time,
}

impl<'a> ForwardOutcome<'a> {
    /// `None` for attempts of subscriptions and attempts without a final or retrying outcome.
    pub fn from_attempt(attempt: &'a DeliveryAttempt, time: Time) -> Option<ForwardOutcome<'a>> {
        if attempt.forwarding_set_id.is_empty() {
            return None;
        }
        let failed = match AttemptOutcome::try_from(attempt.outcome) {
            Ok(AttemptOutcome::Succeeded) => false,
            Ok(AttemptOutcome::Retrying | AttemptOutcome::Failed) => true,
            _ => return None,
        };
        let reason = match attempt.reason.trim() {
            // A success has no reason, and most outcomes are successes.
            _ if !failed => "",
            "" => "unknown error",
            reason => match reason.char_indices().nth(MAX_REASON_CHARS) {
                Some((end, _)) => &reason[..end],
                None => reason,
            },
        };
        Some(ForwardOutcome {
            forwarding_set_id: &attempt.forwarding_set_id,
            tenant_id: &attempt.tenant_id,
            channel_id: &attempt.channel_id,
            url: &attempt.url,
            failed,
            reason,
            time,
        })
    }
}

/// The health after one more attempt; an attempt older than the latest one seen only adds to the
/// failures it belongs to, it does not change whether the set is failing now.
fn next_health(health: Option<Health>, tenant_id: &str, failed: bool, at: Time) -> Health {
    let Some(mut h) = health else {
        return Health {
            tenant_id: tenant_id.to_owned(),
            latest: at,
            failing: failed,
            streak: failed.then(|| Tally::once(at)),
        };
    };
    let newest = at >= h.latest;
    if newest {
        h.latest = at;
    }
    if failed {
        if newest && !h.failing {
            h.failing = true;
            h.streak = None;
        }
        if h.failing {
            h.streak = Some(Tally::add(h.streak, at));
        }
    } else if newest {
        h.failing = false;
        h.streak = None;
    }
    h
}

/// Records a batch of outcomes; returns whether any failure was recorded (a reminder may be due).
pub(crate) fn record(
    books: &Books,
    store: &Store,
    outcomes: &[ForwardOutcome<'_>],
) -> Result<bool, Error> {
    if outcomes.is_empty() {
        return Ok(false);
    }
    let _guard = books.lock();
    let mut health: HashMap<&str, Option<Health>> = HashMap::new();
    let mut failures: BTreeMap<Vec<u8>, Option<FailureRecord>> = BTreeMap::new();
    let mut pending: BTreeMap<String, Option<TenantNotices>> = BTreeMap::new();
    // A batch holds hundreds of attempts of a few sets: each set is read once.
    let mut sets: HashMap<&str, Option<(String, String, String)>> = HashMap::new();
    for o in outcomes {
        let set = match sets.entry(o.forwarding_set_id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(
                store
                    .find_forwarding_set(o.forwarding_set_id)?
                    .map(|set| (set.tenant_id, set.channel_id, set.url)),
            ),
        };
        // The set as configured names the tenant and URL; the attempt's copy serves once it is gone.
        let (tenant_id, channel_id, url): (&str, &str, &str) = match set {
            Some((tenant_id, channel_id, url)) => {
                let url = if url.is_empty() { o.url } else { &*url };
                (tenant_id, channel_id, url)
            }
            None => (o.tenant_id, o.channel_id, o.url),
        };
        if tenant_id.is_empty() {
            continue;
        }
        let set_health = match health.entry(o.forwarding_set_id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(books.get(Book::Health, o.forwarding_set_id.as_bytes())?),
        };
        *set_health = Some(next_health(set_health.take(), tenant_id, o.failed, o.time));
        if !o.failed {
            continue;
        }
        let key = failure_key(tenant_id, o.forwarding_set_id, o.reason);
        let record = match failures.remove(&key) {
            Some(r) => r,
            None => books.get(Book::Failures, &key)?,
        };
        let mut record = record.unwrap_or_else(|| FailureRecord {
            tenant_id: tenant_id.to_owned(),
            channel_id: channel_id.to_owned(),
            forwarding_set_id: o.forwarding_set_id.to_owned(),
            url: url.to_owned(),
            reason: o.reason.to_owned(),
            since_reminder: None,
            this_period: None,
        });
        url.clone_into(&mut record.url);
        record.since_reminder = Some(Tally::add(record.since_reminder, o.time));
        record.this_period = Some(Tally::add(record.this_period, o.time));
        failures.insert(key, Some(record));
        if !pending.contains_key(tenant_id) {
            let notices = books.get(Book::Tenants, tenant_id.as_bytes())?;
            pending.insert(tenant_id.to_owned(), notices);
        }
    }
    let mut batch = Batch::default();
    for (id, h) in &health {
        if let Some(h) = h {
            batch.put(Book::Health, id.as_bytes().to_vec(), h);
        }
    }
    for (key, record) in &failures {
        if let Some(record) = record {
            batch.put(Book::Failures, key.clone(), record);
        }
    }
    let any_failure = !pending.is_empty();
    for (tenant_id, notices) in pending {
        let mut notices = notices.unwrap_or_default();
        notices.pending = true;
        batch.put(Book::Tenants, tenant_id.into_bytes(), &notices);
    }
    books.apply(batch)?;
    Ok(any_failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time { seconds, nanos: 0 }
    }

    fn attempt(outcome: AttemptOutcome, reason: &str) -> DeliveryAttempt {
        DeliveryAttempt {
            forwarding_set_id: "fwd_1".into(),
            tenant_id: "tnt_1".into(),
            outcome: outcome as i32,
            reason: reason.into(),
            ..Default::default()
        }
    }

    #[test]
    fn retrying_and_failed_attempts_count_as_failures() {
        for outcome in [AttemptOutcome::Retrying, AttemptOutcome::Failed] {
            let a = attempt(outcome, "404 Not Found");
            let o = ForwardOutcome::from_attempt(&a, at(1)).unwrap();
            assert!(o.failed);
            assert_eq!(o.reason, "404 Not Found");
        }
    }

    #[test]
    fn a_success_is_an_outcome_that_did_not_fail() {
        let a = attempt(AttemptOutcome::Succeeded, "");
        let o = ForwardOutcome::from_attempt(&a, at(1)).unwrap();
        assert!(!o.failed);
    }

    #[test]
    fn subscription_attempts_are_not_forward_outcomes() {
        let mut a = attempt(AttemptOutcome::Failed, "500 Internal Server Error");
        a.forwarding_set_id.clear();
        a.subscription_id = "sub_1".into();
        assert!(ForwardOutcome::from_attempt(&a, at(1)).is_none());
    }

    #[test]
    fn a_failure_without_a_reason_reads_as_unknown() {
        let a = attempt(AttemptOutcome::Failed, " ");
        let o = ForwardOutcome::from_attempt(&a, at(1)).unwrap();
        assert_eq!(o.reason, "unknown error");
    }

    #[test]
    fn a_long_reason_is_cut_to_its_first_200_characters() {
        // Multi-byte characters: the cut is at a character, not a byte.
        let long = "é".repeat(MAX_REASON_CHARS + 50);
        let a = attempt(AttemptOutcome::Failed, &long);
        let o = ForwardOutcome::from_attempt(&a, at(1)).unwrap();
        assert_eq!(o.reason.chars().count(), MAX_REASON_CHARS);
        assert!(long.starts_with(o.reason));
        let a = attempt(AttemptOutcome::Failed, &long[..2 * MAX_REASON_CHARS]);
        let o = ForwardOutcome::from_attempt(&a, at(1)).unwrap();
        assert_eq!(
            o.reason.chars().count(),
            MAX_REASON_CHARS,
            "exactly 200 kept whole"
        );
    }

    #[test]
    fn failures_in_a_row_make_one_streak() {
        let h = next_health(None, "tnt_1", true, at(10));
        let h = next_health(Some(h), "tnt_1", true, at(20));
        assert!(h.failing);
        assert_eq!(
            h.streak,
            Some(Tally {
                count: 2,
                first: at(10),
                last: at(20)
            })
        );
    }

    #[test]
    fn a_success_clears_the_failing_state() {
        let h = next_health(None, "tnt_1", true, at(10));
        let h = next_health(Some(h), "tnt_1", false, at(20));
        assert!(!h.failing);
        assert_eq!(h.streak, None);
    }

    #[test]
    fn a_late_failure_older_than_the_latest_success_does_not_make_the_set_failing() {
        let h = next_health(None, "tnt_1", false, at(20));
        let h = next_health(Some(h), "tnt_1", true, at(10));
        assert!(!h.failing);
        assert_eq!(h.latest, at(20));
    }

    #[test]
    fn a_failure_after_a_success_starts_a_new_streak() {
        let h = next_health(None, "tnt_1", true, at(10));
        let h = next_health(Some(h), "tnt_1", false, at(20));
        let h = next_health(Some(h), "tnt_1", true, at(30));
        assert_eq!(h.streak, Some(Tally::once(at(30))));
    }
}
