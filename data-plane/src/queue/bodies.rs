//! Request bytes stored once per content. A LINE request fanned out to ten forwarding sets makes
//! ten jobs with the same body and headers: writing them ten times made the spool's writes (and
//! the journal's appends) ten times larger than the request. Jobs name their body by
//! a SHA-256 of it; the number of jobs naming each body is kept in memory (counted again from the
//! jobs at start), and the body goes when the last of them does.
//!
//! The bodies live in the spool's journal (space `Bodies`); this keeps their reference counts,
//! and their sizes, which the spool's budget charges once per body (budget.rs).

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Mutex, MutexGuard, PoisonError},
};

use bytes::Bytes;
use foldhash::HashMap;
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
    /// Jobs naming each body, and its stored size. A body is removed under this lock when its
    /// count reaches zero, and a count is raised under it before its body is written, so a body
    /// in use is never removed. A B-tree, so growing with the backlog never stalls the lock for
    /// a rehash.
    refs: Mutex<BTreeMap<BodyKey, Refs>>,
    /// Bodies read back lately. A request's jobs are handed out at about the same time, one
    /// per lane, and each read its shared body back from the journal: a read, a copy and a
    /// decode per job of a fan-out where one does. Bodies are keyed by their content, so one
    /// kept here is never stale.
    recent: Mutex<Recent>,
}

/// A bounded set of decoded bodies; the oldest go first.
#[derive(Default)]
struct Recent {
    bodies: HashMap<BodyKey, Stored>,
    order: VecDeque<BodyKey>,
    bytes: usize,
}

/// Bytes of bodies [`Recent`] keeps: many fan-outs' worth of LINE requests.
const RECENT_BYTES: usize = 8 << 20;

impl Recent {
    fn get(&self, key: &BodyKey) -> Option<Stored> {
        self.bodies.get(key).cloned()
    }

    fn put(&mut self, key: BodyKey, stored: &Stored) {
        let size = stored.body.len() + 64;
        if size > RECENT_BYTES / 16 || self.bodies.contains_key(&key) {
            return;
        }
        while self.bytes + size > RECENT_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(gone) = self.bodies.remove(&oldest) {
                self.bytes -= gone.body.len() + 64;
            }
        }
        self.bodies.insert(key, stored.clone());
        self.order.push_back(key);
        self.bytes += size;
    }
}

#[derive(Default)]
struct Refs {
    jobs: usize,
    bytes: u64,
}

impl Bodies {
    fn refs(&self) -> MutexGuard<'_, BTreeMap<BodyKey, Refs>> {
        self.refs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn key_of(job: &Job) -> BodyKey {
        let mut hash = Sha256::new();
        for header in &job.headers {
            hash.update((header.name.len() as u64).to_be_bytes());
            hash.update(&header.name);
            hash.update((header.value.len() as u64).to_be_bytes());
            hash.update(&header.value);
        }
        hash.update(&job.body);
        hash.finalize().into()
    }

    /// Counts `n` more jobs naming `job`'s body and makes sure it is stored. Returns its size
    /// when no job named it before (0 when it was held already).
    pub fn retain(
        &self,
        journal: &Journal,
        key: &BodyKey,
        job: &Job,
        n: usize,
    ) -> Result<u64, Error> {
        // Encoded even when the body is stored already (a duplicate enqueue, rare): one taking
        // of the journal's lock instead of two.
        let stored = Stored {
            body: job.body.clone(),
            headers: job.headers.clone(),
        }
        .encode_to_vec();
        let new = {
            let mut refs = self.refs();
            let entry = refs.entry(*key).or_default();
            let new = entry.jobs == 0;
            entry.jobs += n;
            if new {
                entry.bytes = stored.len() as u64;
            }
            if new { entry.bytes } else { 0 }
        };
        journal.insert_new(Space::Bodies, key, &stored)?;
        Ok(new)
    }

    /// `n` jobs naming the body are gone; the body goes with the last of them. Returns the bytes
    /// it took when it went, else 0.
    pub fn release(&self, journal: &Journal, key: &[u8], n: usize) -> Result<u64, Error> {
        let Ok(key) = BodyKey::try_from(key) else {
            return Ok(0);
        };
        let mut refs = self.refs();
        let Some(entry) = refs.get_mut(&key) else {
            return Ok(0);
        };
        entry.jobs = entry.jobs.saturating_sub(n);
        if entry.jobs > 0 {
            return Ok(0);
        }
        let bytes = entry.bytes;
        refs.remove(&key);
        journal.delete(Space::Bodies, &key)?;
        Ok(bytes)
    }

    /// Puts the stored body and headers back into a job read from disk. False when the body is
    /// missing.
    pub fn fill(&self, journal: &Journal, key: &[u8], job: &mut Job) -> Result<bool, Error> {
        let parsed = BodyKey::try_from(key).ok();
        let recent = parsed.and_then(|parsed| self.recent().get(&parsed));
        let stored = match recent {
            Some(stored) => stored,
            None => {
                let Some(bytes) = journal.get(Space::Bodies, key)? else {
                    return Ok(false);
                };
                let stored = Stored::decode(bytes.as_ref())?;
                if let Some(parsed) = parsed {
                    self.recent().put(parsed, &stored);
                }
                stored
            }
        };
        job.body = stored.body;
        job.headers = stored.headers;
        Ok(true)
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// At start: one more job names this body. Returns its size when it is the first (read
    /// from the journal's index), else 0.
    pub fn count(&self, journal: &Journal, key: &[u8]) -> u64 {
        let Ok(key) = BodyKey::try_from(key) else {
            return 0;
        };
        let mut refs = self.refs();
        let entry = refs.entry(key).or_default();
        entry.jobs += 1;
        if entry.jobs > 1 {
            return 0;
        }
        // A body missing from the journal weighs nothing; its jobs are dropped when leased.
        entry.bytes = journal.value_len(Space::Bodies, &key).unwrap_or(0);
        entry.bytes
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
