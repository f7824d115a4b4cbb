//! The delivery log's own part of the store: the attempt pages, the record of each delivery not
//! yet delivered, and the page index kept in memory beside them (`Shelves`). The index is only
//! true while every writer of the pages holds its lock, so one `LogTrees` is opened per store
//! and every clone of the `DeliveryLog` shares it.

use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use sled::Tree;

use super::{ATTEMPT_PAGES, Shelves};
use crate::clock::Time;
use crate::error::Error;
use crate::store::{Store, decode, encode};

/// The tree of delivery records.
const DELIVERIES: &str = "deliveries";

/// The current state of one delivery, folded from its attempts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DeliveryRecord {
    pub id: String,
    pub event_id: String,
    pub forwarding_set_id: String,
    pub subscription_id: String,
    /// The `hookplane.v1.DeliveryState` value.
    pub state: i32,
    pub attempts: u32,
    pub last_reason: String,
    pub last_attempt_time: Time,
}

pub(crate) struct LogTrees {
    attempt_pages: Tree,
    deliveries: Tree,
    shelves: Mutex<Shelves>,
}

impl LogTrees {
    pub fn open(store: &Store) -> Result<LogTrees, Error> {
        Ok(LogTrees {
            attempt_pages: store.named_tree(ATTEMPT_PAGES)?,
            deliveries: store.named_tree(DELIVERIES)?,
            shelves: Mutex::default(),
        })
    }

    /// Serialises read-modify-writes of the log (reports against retries and sweeps).
    pub fn lock(&self) -> MutexGuard<'_, Shelves> {
        self.shelves.lock().unwrap_or_else(|poisoned| {
            // A writer panicked half-way, so the shelves may miss some of its writes.
            self.shelves.clear_poison();
            let mut shelves = poisoned.into_inner();
            shelves.forget_targets();
            shelves
        })
    }

    pub fn attempt_pages(&self) -> &Tree {
        &self.attempt_pages
    }

    pub fn deliveries(&self) -> &Tree {
        &self.deliveries
    }

    pub fn find_delivery(&self, id: &str) -> Result<Option<DeliveryRecord>, Error> {
        match self.deliveries.get(id.as_bytes())? {
            Some(bytes) => Ok(Some(decode(DELIVERIES, &bytes)?)),
            None => Ok(None),
        }
    }

    pub fn put_delivery(&self, r: &DeliveryRecord) -> Result<(), Error> {
        self.deliveries.insert(r.id.as_bytes(), encode(r))?;
        Ok(())
    }

    pub fn remove_delivery(&self, id: &str) -> Result<(), Error> {
        self.deliveries.remove(id.as_bytes())?;
        Ok(())
    }
}
