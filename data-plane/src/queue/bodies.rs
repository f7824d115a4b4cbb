//! Request bytes stored once per content. A LINE request fanned out to ten forwarding sets makes
//! ten jobs with the same body and headers: writing them ten times made the spool's writes (and
//! the journal's appends) ten times larger than the request. Jobs name their body by
//! a SHA-256 of it; the number of jobs naming each body is kept in memory (counted again from the
//! jobs at start), and the body goes when the last of them does.
//!
//! The bodies live in the spool's journal (space `Bodies`); this keeps their reference counts.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard, PoisonError},
};

use bytes::Bytes;
use prost::Message as _;
use sha2::{Digest, Sha256};

use super::{
    Header, Job,
    journal::{Journal, Space},
};
use crate::Error;

pub(super) type BodyKey = [u8; 32];

#[derive(Clone, PartialEq, prost::Message)]
struct Stored {
    #[prost(bytes = "bytes", tag = "1")]
    body: Bytes,
    #[prost(message, repeated, tag = "2")]
    headers: Vec<Header>,
}

#[derive(Default)]
pub(super) struct Bodies {
    /// Jobs naming each body. A body is removed under this lock when its count reaches zero,
    /// and a count is raised under it before its body is written, so a body in use is never
    /// removed. A B-tree, so growing with the backlog never stalls the lock for a rehash.
    refs: Mutex<BTreeMap<BodyKey, usize>>,
}

impl Bodies {
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
    pub fn retain(
        &self,
        journal: &Journal,
        key: &BodyKey,
        job: &Job,
        n: usize,
    ) -> Result<(), Error> {
        *self.refs().entry(*key).or_default() += n;
        // Encoded even when the body is stored already (a duplicate enqueue, rare): one taking
        // of the journal's lock instead of two.
        let stored = Stored {
            body: job.body.clone(),
            headers: job.headers.clone(),
        };
        journal.insert_new(Space::Bodies, key, &stored.encode_to_vec())?;
        Ok(())
    }

    /// `n` jobs naming the body are gone; the body goes with the last of them.
    pub fn release(&self, journal: &Journal, key: &[u8], n: usize) -> Result<(), Error> {
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
            journal.delete(Space::Bodies, &key)?;
        }
        Ok(())
    }

    /// Puts the stored body and headers back into a job read from disk. False when the body is
    /// missing.
    pub fn fill(&self, journal: &Journal, key: &[u8], job: &mut Job) -> Result<bool, Error> {
        let Some(bytes) = journal.get(Space::Bodies, key)? else {
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

    /// At start, after counting: removes those of the stored bodies `stored` that no job names
    /// (a crash between a job's removal and its body's). Returns how many.
    pub fn collect_garbage(&self, journal: &Journal, stored: &[Vec<u8>]) -> Result<usize, Error> {
        let refs = self.refs();
        let mut removed = 0;
        for key in stored {
            let named = BodyKey::try_from(key.as_slice()).is_ok_and(|k| refs.contains_key(&k));
            if !named {
                journal.delete(Space::Bodies, key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A body and headers as they are stored, for tests that write a spool by hand.
    pub fn stored(job: &Job) -> Vec<u8> {
        Stored {
            body: job.body.clone(),
            headers: job.headers.clone(),
        }
        .encode_to_vec()
    }
}
