//! The re-seal that follows a master key rotation (`--master-key` new, `--previous-master-key`
//! old) or an upgrade from values sealed without key ids: every sealed value not yet under the
//! current key in the current format is sealed again, a batch of records per sled transaction
//! under the writer lock, while the control plane serves. A crash mid-way loses nothing: the
//! next start (with both keys) re-seals what is left. The store's key check goes last, so the
//! store opens with the new key alone only once every value is under it.

use crate::error::Error;
use crate::shutdown::Stopping;
use crate::store::{Resealed, SealedTree, Store};

/// Records per transaction: small enough that admin writes waiting for the writer lock are
/// held up for a moment only.
const BATCH: usize = 64;
/// The store is all re-sealed already (the usual start): nothing is logged.
const NOTHING: Resealed = Resealed {
    values: 0,
    unopenable: 0,
};

/// Re-seals the whole store in the background, logging the outcome; ends early at shutdown.
pub(crate) async fn reseal_in_background(store: Store, stopping: Stopping) {
    let previous = store.sealer().previous_key_id().map(str::to_owned);
    let key_id = store.sealer().key_id().to_owned();
    let work = tokio::task::spawn_blocking({
        let store = store.clone();
        move || reseal_all(&store, &stopping)
    });
    let done = match work.await {
        Ok(Ok(Some(done))) => done,
        // Stopped before the end: the next start goes on.
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "re-sealing the store's secrets failed; the next start tries again");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "re-sealing the store's secrets panicked");
            return;
        }
    };
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "re-sealed secrets could not be flushed; the next start tries again");
        return;
    }
    if done == NOTHING && previous.is_none() {
        return;
    }
    if done.unopenable > 0 {
        tracing::error!(
            key_id,
            resealed = done.values,
            unopenable = done.unopenable,
            "re-seal done, but some sealed values open under no master key given (each was logged)"
        );
        return;
    }
    match previous {
        Some(previous) => tracing::info!(
            key_id,
            previous_key_id = previous,
            resealed = done.values,
            "re-seal done: every sealed value is under the current master key; \
             --previous-master-key is no longer needed"
        ),
        None => tracing::info!(
            key_id,
            resealed = done.values,
            "re-seal done: every sealed value is under the current master key"
        ),
    }
}

/// Re-seals every record, then the key check; `None` when asked to stop before the end.
fn reseal_all(store: &Store, stopping: &Stopping) -> Result<Option<Resealed>, Error> {
    let mut done = Resealed::default();
    for tree in SealedTree::ALL {
        let keys = store.sealed_record_keys(tree)?;
        for batch in keys.chunks(BATCH) {
            if stopping.is_stopping() {
                return Ok(None);
            }
            let guard = store.lock_writes();
            done += store.reseal_records(&guard, tree, batch)?;
        }
    }
    if done.unopenable == 0 {
        let guard = store.lock_writes();
        store.reseal_key_check(&guard)?;
    }
    Ok(Some(done))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::clock::Time;
    use crate::sealing::{MasterKey, Place, Sealer};
    use crate::store::{Change, ChannelRecord, PreviousSecret, SubscriptionRecord, sealed_field};

    fn channel(id: &str, secret: crate::sealing::Sealed) -> ChannelRecord {
        ChannelRecord {
            id: id.into(),
            tenant_id: "tnt_a".into(),
            display_name: "OA".into(),
            secret,
            previous_secret: None,
            access_token: None,
            metadata: BTreeMap::new(),
            create_time: Time::now(),
            update_time: Time::now(),
        }
    }

    fn subscription(id: &str, secret: crate::sealing::Sealed) -> SubscriptionRecord {
        SubscriptionRecord {
            id: id.into(),
            tenant_id: "tnt_a".into(),
            name: "crm".into(),
            url: "https://crm.example/hook".into(),
            event_types: vec![],
            state: 1,
            signature_scheme: 1,
            secret,
            previous_secret: None,
            state_reason: String::new(),
            stopped_by_system: false,
            create_time: Time::now(),
            update_time: Time::now(),
        }
    }

    fn never_stopping() -> Stopping {
        let (tx, stopping) = Stopping::new();
        std::mem::forget(tx);
        stopping
    }

    #[test]
    fn after_a_rotation_and_a_reseal_the_new_key_alone_opens_every_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let (old, new) = (MasterKey::generate(), MasterKey::generate());
        {
            let store = Store::open(&path, Sealer::new(&old)).unwrap();
            let sealer = store.sealer();
            let mut sub = subscription(
                "sub_1",
                sealer.seal("whsec_now", Place::new("sub_1", sealed_field::SECRET)),
            );
            sub.previous_secret = Some(PreviousSecret {
                secret: sealer.seal(
                    "whsec_before",
                    Place::new("sub_1", sealed_field::PREVIOUS_SECRET),
                ),
                valid_until: Time::now(),
            });
            let mut ch = channel("ch_1", sealer.seal_first_format("line-secret-first-format"));
            ch.access_token =
                Some(sealer.seal("token", Place::new("ch_1", sealed_field::ACCESS_TOKEN)));
            let guard = store.lock_writes();
            let mut change = Change::default();
            change.put_channel(&ch);
            change.put_subscription(&sub);
            store.commit(&guard, change).unwrap();
        }
        {
            let store = Store::open(&path, Sealer::new(&new).with_previous(&old)).unwrap();
            let revision = store.revision();
            let done = reseal_all(&store, &never_stopping()).unwrap().unwrap();
            assert_eq!(
                done,
                Resealed {
                    values: 4,
                    unopenable: 0
                }
            );
            // Nothing a node needs to learn: the plaintexts are the same.
            assert_eq!(store.revision(), revision);
            // Done once: a second pass finds nothing.
            assert_eq!(
                reseal_all(&store, &never_stopping()).unwrap().unwrap(),
                NOTHING
            );
        }
        let store = Store::open(&path, Sealer::new(&new)).unwrap();
        let sealer = store.sealer();
        let ch = store.channel("ch_1").unwrap();
        assert!(sealer.is_current(&ch.secret));
        assert_eq!(
            sealer
                .open(&ch.secret, Place::new("ch_1", sealed_field::SECRET))
                .unwrap(),
            "line-secret-first-format"
        );
        let sub: SubscriptionRecord = store.subscription("sub_1").unwrap();
        assert_eq!(
            sealer
                .open(&sub.secret, Place::new("sub_1", sealed_field::SECRET))
                .unwrap(),
            "whsec_now"
        );
        let previous = sub.previous_secret.unwrap();
        assert_eq!(
            sealer
                .open(
                    &previous.secret,
                    Place::new("sub_1", sealed_field::PREVIOUS_SECRET)
                )
                .unwrap(),
            "whsec_before"
        );
    }

    #[test]
    fn before_the_reseal_the_new_key_alone_is_refused_naming_the_old_key_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let (old, new) = (MasterKey::generate(), MasterKey::generate());
        drop(Store::open(&path, Sealer::new(&old)).unwrap());
        drop(Store::open(&path, Sealer::new(&new).with_previous(&old)).unwrap());
        let Err(Error::MasterKey(why)) = Store::open(&path, Sealer::new(&new)) else {
            panic!("the store opened without the key it is sealed under");
        };
        assert!(why.contains(&old.id()), "{why}");
        assert!(!why.contains(&old.to_base64()), "{why}");
    }

    #[test]
    fn a_value_copied_onto_another_record_does_not_open_there() {
        let (_dir, store) = crate::test_fixtures::store();
        let sealer = store.sealer();
        let a = channel(
            "ch_a",
            sealer.seal("secret-of-a", Place::new("ch_a", sealed_field::SECRET)),
        );
        let b = channel("ch_b", a.secret.clone());
        let guard = store.lock_writes();
        let mut change = Change::default();
        change.put_channel(&a);
        change.put_channel(&b);
        store.commit(&guard, change).unwrap();
        drop(guard);
        let b = store.channel("ch_b").unwrap();
        assert!(matches!(
            sealer.open(&b.secret, Place::new("ch_b", sealed_field::SECRET)),
            Err(Error::Unseal)
        ));
    }
}
