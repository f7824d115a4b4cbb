//! Publishes with an `idempotency_key`: the same key of the same tenant within 24 h gets the same
//! event id and enqueues nothing new.
//!
//! The event id of a keyed publish derives from (tenant, key) alone, so every node behind a load
//! balancer hands out the same id for a repeat. Where the keys are remembered follows the queue
//! backend:
//! - [`IdempotencyBook`] (spool): the node's spool (`idempotency` tree, pruned after the TTL)
//!   keeps a repeat reaching the same node from being delivered twice. A repeat reaching another
//!   node is delivered again with the same event id, which receivers dedupe on
//!   (`CrescLab-Idempotency-Key`, `webhook-id`).
//! - [`SharedIdempotencyKeys`] (JetStream): a key-value bucket every node reads, whose entries
//!   expire after the TTL, so a repeat on any node within 24 h enqueues nothing. Two repeats
//!   racing on two nodes both enqueue, with the same delivery ids, which the jobs stream stores
//!   once (its duplicate window).

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use prost::Message as _;
use sha2::{Digest, Sha256};

use crate::{Error, queue::unix_ms};

/// Where a node remembers the idempotency keys of PublishEvent.
#[async_trait]
pub trait IdempotencyKeys: Send + Sync + 'static {
    /// The publish of `key` by `tenant_id` within the TTL before `now`, if any.
    async fn find(
        &self,
        tenant_id: &str,
        key: &str,
        now: SystemTime,
    ) -> Result<Option<Prior>, Error>;
    /// Remembers a publish; an earlier record of the same key is replaced.
    async fn remember(&self, tenant_id: &str, key: &str, prior: &Prior) -> Result<(), Error>;
}

/// How long a key is remembered.
pub const TTL: Duration = Duration::from_secs(24 * 3600);
/// Expired keys removed per publish: pruning keeps pace with inserts without a task of its own.
const PRUNE_BATCH: usize = 16;

/// The event id of a publish by `tenant_id` with `key`: `evt_` + 32 hex digits.
pub fn event_id(tenant_id: &str, key: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"publish-idempotency-key\n");
    hash.update(tenant_id.as_bytes());
    hash.update(b"\n");
    hash.update(key.as_bytes());
    format!("evt_{}", hex::encode(&hash.finalize()[..16]))
}

/// An earlier publish of a key.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Prior {
    #[prost(string, tag = "1")]
    pub event_id: String,
    #[prost(uint32, tag = "2")]
    pub matched: u32,
    #[prost(uint64, tag = "3")]
    pub published_ms: u64,
}

/// The keys this node has seen: `keys` (tenant NUL key -> [`Prior`]) and `expiry`
/// (publish time BE ++ tenant NUL key), the latter to prune in time order.
pub struct IdempotencyBook {
    keys: sled::Tree,
    expiry: sled::Tree,
}

fn book_key(tenant_id: &str, key: &str) -> Vec<u8> {
    // Tenant ids never hold NUL, so the split is unambiguous whatever the key holds.
    let mut k = Vec::with_capacity(tenant_id.len() + 1 + key.len());
    k.extend_from_slice(tenant_id.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn cutoff_ms(now: SystemTime) -> u64 {
    unix_ms(now).saturating_sub(u64::try_from(TTL.as_millis()).unwrap_or(u64::MAX))
}

impl IdempotencyBook {
    pub fn open(db: &sled::Db) -> Result<Self, Error> {
        Ok(Self {
            keys: db.open_tree("idempotency")?,
            expiry: db.open_tree("idempotency_expiry")?,
        })
    }

    /// The publish of `key` by `tenant_id` within the TTL before `now`, if any.
    pub fn find(
        &self,
        tenant_id: &str,
        key: &str,
        now: SystemTime,
    ) -> Result<Option<Prior>, Error> {
        let Some(bytes) = self.keys.get(book_key(tenant_id, key))? else {
            return Ok(None);
        };
        let prior = Prior::decode(bytes.as_ref())?;
        Ok((prior.published_ms > cutoff_ms(now)).then_some(prior))
    }

    /// Remembers a publish; an earlier record of the same key (expired, or a racing publish) is
    /// replaced. Prunes a few expired keys on the way.
    pub fn remember(&self, tenant_id: &str, key: &str, prior: &Prior) -> Result<(), Error> {
        let k = book_key(tenant_id, key);
        let mut expiry_key = prior.published_ms.to_be_bytes().to_vec();
        expiry_key.extend_from_slice(&k);
        self.expiry.insert(expiry_key, &[])?;
        self.keys.insert(k, prior.encode_to_vec())?;
        self.prune(SystemTime::now(), PRUNE_BATCH)?;
        Ok(())
    }

    /// Forgets up to `max` keys published before the TTL; returns how many expiry entries went.
    fn prune(&self, now: SystemTime, max: usize) -> Result<usize, Error> {
        let cutoff = cutoff_ms(now).to_be_bytes();
        let mut pruned = 0;
        for entry in self.expiry.range(..cutoff.as_slice()).keys().take(max) {
            let expiry_key = entry?;
            let (at, k) = expiry_key.split_at(8);
            // A key published again since holds a newer record: that one stays.
            if let Some(bytes) = self.keys.get(k)?
                && Prior::decode(bytes.as_ref())?.published_ms.to_be_bytes() == at
            {
                self.keys.remove(k)?;
            }
            self.expiry.remove(&expiry_key)?;
            pruned += 1;
        }
        Ok(pruned)
    }
}

#[async_trait]
impl IdempotencyKeys for IdempotencyBook {
    async fn find(
        &self,
        tenant_id: &str,
        key: &str,
        now: SystemTime,
    ) -> Result<Option<Prior>, Error> {
        IdempotencyBook::find(self, tenant_id, key, now)
    }

    async fn remember(&self, tenant_id: &str, key: &str, prior: &Prior) -> Result<(), Error> {
        IdempotencyBook::remember(self, tenant_id, key, prior)
    }
}

/// The keys in JetStream's `<prefix>_idempotency` bucket (its entries expire after [`TTL`]),
/// keyed by the event id the key derives, which is a valid bucket key whatever the key holds.
pub struct SharedIdempotencyKeys {
    bucket: async_nats::jetstream::kv::Store,
}

impl SharedIdempotencyKeys {
    pub fn new(bucket: async_nats::jetstream::kv::Store) -> Self {
        Self { bucket }
    }
}

#[async_trait]
impl IdempotencyKeys for SharedIdempotencyKeys {
    async fn find(
        &self,
        tenant_id: &str,
        key: &str,
        now: SystemTime,
    ) -> Result<Option<Prior>, Error> {
        let found = self
            .bucket
            .get(event_id(tenant_id, key))
            .await
            .map_err(|e| Error::Queue(format!("reading an idempotency key: {e}")))?;
        let Some(bytes) = found else {
            return Ok(None);
        };
        let prior = Prior::decode(bytes.as_ref())?;
        Ok((prior.published_ms > cutoff_ms(now)).then_some(prior))
    }

    async fn remember(&self, tenant_id: &str, key: &str, prior: &Prior) -> Result<(), Error> {
        self.bucket
            .put(event_id(tenant_id, key), Bytes::from(prior.encode_to_vec()))
            .await
            .map_err(|e| Error::Queue(format!("keeping an idempotency key: {e}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> (tempfile::TempDir, IdempotencyBook) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .temporary(true)
            .path(dir.path())
            .open()
            .unwrap();
        (dir, IdempotencyBook::open(&db).unwrap())
    }

    fn prior(event_id: &str, at: SystemTime) -> Prior {
        Prior {
            event_id: event_id.to_owned(),
            matched: 2,
            published_ms: unix_ms(at),
        }
    }

    #[test]
    fn the_event_id_is_the_same_for_the_same_tenant_and_key() {
        assert_eq!(event_id("tnt_1", "order-7"), event_id("tnt_1", "order-7"));
        assert!(event_id("tnt_1", "order-7").starts_with("evt_"));
        assert_eq!(event_id("tnt_1", "order-7").len(), 4 + 32);
    }

    #[test]
    fn another_tenant_or_key_gets_another_event_id() {
        assert_ne!(event_id("tnt_1", "order-7"), event_id("tnt_2", "order-7"));
        assert_ne!(event_id("tnt_1", "order-7"), event_id("tnt_1", "order-8"));
    }

    #[test]
    fn a_remembered_key_is_found_within_the_ttl() {
        let (_dir, book) = book();
        let now = SystemTime::now();
        book.remember("tnt_1", "k", &prior("evt_a", now)).unwrap();
        assert_eq!(
            book.find("tnt_1", "k", now + Duration::from_secs(3600))
                .unwrap(),
            Some(prior("evt_a", now))
        );
    }

    #[test]
    fn a_key_is_per_tenant() {
        let (_dir, book) = book();
        let now = SystemTime::now();
        book.remember("tnt_1", "k", &prior("evt_a", now)).unwrap();
        assert_eq!(book.find("tnt_2", "k", now).unwrap(), None);
    }

    #[test]
    fn a_key_older_than_the_ttl_is_not_found() {
        let (_dir, book) = book();
        let then = SystemTime::now() - TTL - Duration::from_secs(1);
        book.keys
            .insert(book_key("tnt_1", "k"), prior("evt_a", then).encode_to_vec())
            .unwrap();
        assert_eq!(book.find("tnt_1", "k", SystemTime::now()).unwrap(), None);
    }

    #[test]
    fn pruning_forgets_expired_keys_and_keeps_fresh_ones() {
        let (_dir, book) = book();
        let now = SystemTime::now();
        book.remember(
            "tnt_1",
            "old",
            &prior("evt_a", now - TTL - Duration::from_secs(5)),
        )
        .unwrap();
        book.remember("tnt_1", "new", &prior("evt_b", now)).unwrap();
        // Remembering prunes as it goes: the expired key is gone from both trees already.
        assert!(book.keys.get(book_key("tnt_1", "old")).unwrap().is_none());
        assert_eq!(book.expiry.len(), 1);
        assert!(book.find("tnt_1", "new", now).unwrap().is_some());
    }

    #[test]
    fn a_key_published_again_after_expiry_survives_the_old_records_pruning() {
        let (_dir, book) = book();
        let now = SystemTime::now();
        let expired = prior("evt_a", now - TTL - Duration::from_secs(5));
        let mut expiry_key = expired.published_ms.to_be_bytes().to_vec();
        expiry_key.extend_from_slice(&book_key("tnt_1", "k"));
        book.expiry.insert(expiry_key, &[]).unwrap();
        book.remember("tnt_1", "k", &prior("evt_a", now)).unwrap();
        assert_eq!(
            book.find("tnt_1", "k", now).unwrap(),
            Some(prior("evt_a", now))
        );
        assert_eq!(book.expiry.len(), 1);
    }
}
