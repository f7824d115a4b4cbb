//! Request bytes stored once per content. A LINE request fanned out to ten forwarding sets makes
//! ten jobs with the same body and headers: writing them ten times made the spool's writes (and
//! sled's copying of its tree nodes) ten times larger than the request. Jobs name their body by
//! a SHA-256 of it; the number of jobs naming each body is kept in memory (counted again from the
//! jobs at start), and the body goes when the last of them does.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard, PoisonError},
};

use bytes::Bytes;
use prost::Message as _;
use sha2::{Digest, Sha256};

use super::{Header, Job};
use crate::Error;

pub(super) type BodyKey = [u8; 32];

#[derive(Clone, PartialEq, prost::Message)]
struct Stored {
    #[prost(bytes = "bytes", tag = "1")]
    body: Bytes,
    #[prost(message, repeated, tag = "2")]
    headers: Vec<Header>,
}

pub(super) struct Bodies {
    tree: sled::Tree,
    /// Jobs naming each body. A body is removed under this lock when its count reaches zero,
    /// and a count is raised under it before its body is written, so a body in use is never
    /// removed. A B-tree, so growing with the backlog never stalls the lock for a rehash.
    refs: Mutex<BTreeMap<BodyKey, usize>>,
}

impl Bodies {
    pub fn open(db: &sled::Db) -> Result<Self, Error> {
        Ok(Self {
            tree: db.open_tree("bodies")?,
            refs: Mutex::new(BTreeMap::new()),
        })
    }

    fn refs(&self) -> MutexGuard<'_, BTreeMap<BodyKey, usize>> {
        self.refs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn key_of(job: &Job) -> BodyKey {
        let mut hash = Sha256::new();
        for header in &job.headers {
            hash.update((header.name.len() as u64).to_be_bytes());
            hash.update(header.name.as_bytes());
            hash.update((header.value.len() as u64).to_be_bytes());
            hash.update(header.value.as_bytes());
        }
        hash.update(&job.body);
        hash.finalize().into()
    }

    /// Counts `n` more jobs naming `job`'s body and makes sure it is stored.
    pub fn retain(&self, key: &BodyKey, job: &Job, n: usize) -> Result<(), Error> {
        *self.refs().entry(*key).or_default() += n;
        let stored = Stored {
            body: job.body.clone(),
            headers: job.headers.clone(),
        };
        self.tree.insert(key, stored.encode_to_vec())?;
        Ok(())
    }

    /// `n` jobs naming the body are gone; the body goes with the last of them.
    pub fn release(&self, key: &[u8], n: usize) -> Result<(), Error> {
        let Ok(key) = BodyKey::try_from(key) else {
            return Ok(());
        };
        let mut refs = self.refs();
        let Some(count) = refs.get_mut(&key) else {
            return Ok(());
        };
        *count = count.saturating_sub(n);
        if *count == 0 {
            refs.remove(&key);
            self.tree.remove(key)?;
        }
        Ok(())
    }

    /// Puts the stored body and headers back into a job read from disk. False when the body is
    /// missing.
    pub fn fill(&self, key: &[u8], job: &mut Job) -> Result<bool, Error> {
        let Some(bytes) = self.tree.get(key)? else {
            return Ok(false);
        };
        let stored = Stored::decode(bytes.as_ref())?;
        job.body = stored.body;
        job.headers = stored.headers;
        Ok(true)
    }

    /// At start: one more job names this body.
    pub fn count(&self, key: &[u8]) {
        if let Ok(key) = BodyKey::try_from(key) {
            *self.refs().entry(key).or_default() += 1;
        }
    }

    /// At start, after counting: removes bodies no job names (a crash between a job's removal
    /// and its body's). Returns how many.
    pub fn collect_garbage(&self) -> Result<usize, Error> {
        let refs = self.refs();
        let mut removed = 0;
        for key in self.tree.iter().keys() {
            let key = key?;
            let named = BodyKey::try_from(key.as_ref()).is_ok_and(|k| refs.contains_key(&k));
            if !named {
                self.tree.remove(key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    #[cfg(test)]
    pub fn stored(&self) -> usize {
        self.tree.len()
    }
}
