//! Re-sealing stored values in place: under the current master key, in the current format, at
//! their own record and field. What resealing.rs runs over the whole store after a master key
//! rotation, or once after an upgrade from values without key ids.

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::IVec;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{ConfigTree, KEY_CHECK_KEY, KEY_CHECK_PLACE, Store, WriteGuard, decode, encode};
use crate::error::Error;
use crate::sealing::{Place, Sealed};
use crate::store::{ChannelRecord, ForwardingSetRecord, SealedFields, SubscriptionRecord};

/// The trees whose records hold sealed values.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SealedTree {
    Channels,
    ForwardingSets,
    Subscriptions,
}

impl SealedTree {
    pub const ALL: [SealedTree; 3] = [
        SealedTree::Channels,
        SealedTree::ForwardingSets,
        SealedTree::Subscriptions,
    ];

    fn config_tree(self) -> (ConfigTree, &'static str) {
        match self {
            SealedTree::Channels => (ConfigTree::Channels, "channels"),
            SealedTree::ForwardingSets => (ConfigTree::ForwardingSets, "forwarding_sets"),
            SealedTree::Subscriptions => (ConfigTree::Subscriptions, "subscriptions"),
        }
    }
}

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resealed {
    /// Values sealed again.
    pub values: usize,
    /// Values that open under no key this process holds (logged each, left as they are).
    pub unopenable: usize,
}

impl std::ops::AddAssign for Resealed {
    fn add_assign(&mut self, other: Resealed) {
        self.values += other.values;
        self.unopenable += other.unopenable;
    }
}

impl Store {
    /// The keys of every record of `tree`, to re-seal in batches.
    pub fn sealed_record_keys(&self, tree: SealedTree) -> Result<Vec<IVec>, Error> {
        let (t, _) = tree.config_tree();
        Ok(self.tree(t).iter().keys().collect::<Result<_, _>>()?)
    }

    /// Re-seals the values of the records `keys` of `tree` that are not current, in one sled
    /// transaction (a crash leaves each record as it was or re-sealed whole). The caller holds
    /// the writer lock, so no admin write of the same records interleaves. The revision does not
    /// move: the plaintexts are the same, nodes have nothing to learn.
    pub fn reseal_records(
        &self,
        _guard: &WriteGuard<'_>,
        tree: SealedTree,
        keys: &[IVec],
    ) -> Result<Resealed, Error> {
        match tree {
            SealedTree::Channels => self.reseal_in::<ChannelRecord>(tree, keys),
            SealedTree::ForwardingSets => self.reseal_in::<ForwardingSetRecord>(tree, keys),
            SealedTree::Subscriptions => self.reseal_in::<SubscriptionRecord>(tree, keys),
        }
    }

    fn reseal_in<T>(&self, tree: SealedTree, keys: &[IVec]) -> Result<Resealed, Error>
    where
        T: SealedFields + Serialize + DeserializeOwned,
    {
        let (t, name) = tree.config_tree();
        let sealer = self.sealer();
        let result = self.tree(t).transaction(|tx| {
            let mut done = Resealed::default();
            for key in keys {
                // Deleted since the keys were read.
                let Some(bytes) = tx.get(key)? else { continue };
                let mut record: T = decode(name, &bytes).map_err(ConflictableTransactionError::Abort)?;
                let id = record.record_id().to_owned();
                let mut changed = false;
                for (field, value) in record.sealed_fields() {
                    if sealer.is_current(value) {
                        continue;
                    }
                    let at = Place::new(&id, field);
                    match sealer.reseal(value, at, at) {
                        Ok(resealed) => {
                            *value = resealed;
                            changed = true;
                            done.values += 1;
                        }
                        Err(e) => {
                            tracing::error!(record = %id, field, error = %e, "a sealed value opens under no master key given; left as it is");
                            done.unopenable += 1;
                        }
                    }
                }
                if changed {
                    tx.insert(key, encode(&record))?;
                }
            }
            Ok(done)
        });
        match result {
            Ok(done) => Ok(done),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(Error::Store(e)),
        }
    }

    /// Re-seals the store's key check under the current key, last: from then on the current key
    /// alone opens the store.
    pub fn reseal_key_check(&self, _guard: &WriteGuard<'_>) -> Result<bool, Error> {
        let meta = self.tree(ConfigTree::Meta);
        let Some(bytes) = meta.get(KEY_CHECK_KEY)? else {
            return Ok(false);
        };
        let sealed: Sealed = decode("meta", &bytes)?;
        if self.sealer().is_current(&sealed) {
            return Ok(false);
        }
        let resealed = self
            .sealer()
            .reseal(&sealed, KEY_CHECK_PLACE, KEY_CHECK_PLACE)?;
        meta.insert(KEY_CHECK_KEY, encode(&resealed))?;
        Ok(true)
    }
}
