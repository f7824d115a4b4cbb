//! Moves the attempts an earlier version stored one per key (tree `attempts`, keys `target/` +
//! big-endian (MAX - time) + `/` + attempt id, newest first) into pages, once, when the control
//! plane opens its store.

use hookplane_proto::v1::DeliveryAttempt;
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use sled::IVec;

use super::ATTEMPT_PAGES;
use super::pages::{PAGE_MAX, write_pages};
use crate::error::Error;
use crate::store::Store;

const OLD_TREE: &str = "attempts";

/// Moves every attempt of the old tree into pages and drops the tree; returns how many it moved.
/// A page's id is taken from its attempts' keys, so a move cut short (a crash) writes the same
/// pages again when it runs again, not a second copy.
pub(crate) fn move_attempts_into_pages(store: &Store) -> Result<usize, Error> {
    if !store.has_tree(OLD_TREE) {
        return Ok(0);
    }
    let old = store.named_tree(OLD_TREE)?;
    let mut moved = 0;
    let mut chunk: Vec<(IVec, DeliveryAttempt)> = Vec::new();
    let mut chunk_prefix: Vec<u8> = Vec::new();
    for entry in old.iter() {
        let (key, value) = entry?;
        let Some(slash) = key.iter().position(|b| *b == b'/') else {
            continue;
        };
        let prefix = &key[..=slash];
        if !chunk.is_empty() && (prefix != chunk_prefix.as_slice() || chunk.len() == PAGE_MAX) {
            moved += move_chunk(store, &old, &chunk_prefix, std::mem::take(&mut chunk))?;
        }
        if chunk.is_empty() {
            prefix.clone_into(&mut chunk_prefix);
        }
        let attempt = DeliveryAttempt::decode(value.as_ref()).map_err(|e| Error::Corrupt {
            tree: OLD_TREE,
            detail: e.to_string(),
        })?;
        chunk.push((key, attempt));
    }
    if !chunk.is_empty() {
        moved += move_chunk(store, &old, &chunk_prefix, chunk)?;
    }
    store.drop_tree(OLD_TREE)?;
    Ok(moved)
}

fn move_chunk(
    store: &Store,
    old: &sled::Tree,
    prefix: &[u8],
    chunk: Vec<(IVec, DeliveryAttempt)>,
) -> Result<usize, Error> {
    let id = page_id(chunk.iter().map(|(key, _)| key));
    let mut removals = sled::Batch::default();
    for (key, _) in &chunk {
        removals.remove(key.clone());
    }
    let attempts: Vec<DeliveryAttempt> = chunk.into_iter().map(|(_, a)| a).collect();
    let moved = attempts.len();
    let mut page = sled::Batch::default();
    write_pages(&mut page, prefix, &attempts, || id);
    store.named_tree(ATTEMPT_PAGES)?.apply_batch(page)?;
    old.apply_batch(removals)?;
    Ok(moved)
}

/// The id of the page that the attempts under `keys` move into.
fn page_id<'a>(keys: impl Iterator<Item = &'a IVec>) -> [u8; 16] {
    let mut digest = Sha256::new();
    for key in keys {
        digest.update(key);
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest.finalize()[..16]);
    id
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::broadcast;

    use super::*;
    use crate::clock::Time;
    use crate::delivery_log::{DeliveryLog, Retention};
    use crate::test_fixtures::*;

    /// Stores an attempt as the earlier version did.
    fn store_old(old: &sled::Tree, target: &str, seconds_ago: u64, id: &str) {
        let time = Time::now().minus(Duration::from_secs(seconds_ago));
        let mut key = format!("{target}/").into_bytes();
        key.extend_from_slice(&(u64::MAX - time.unix_micros()).to_be_bytes());
        key.push(b'/');
        key.extend_from_slice(id.as_bytes());
        let attempt = DeliveryAttempt {
            id: id.to_owned(),
            forwarding_set_id: target.to_owned(),
            time: Some(time.to_proto()),
            ..DeliveryAttempt::default()
        };
        old.insert(key, attempt.encode_to_vec()).unwrap();
    }

    #[tokio::test]
    async fn attempts_stored_one_per_key_are_listed_after_the_move() {
        let (_dir, store) = store();
        let tenant = create_tenant(&store, tenant_input()).await;
        let channel = create_channel(&store, &tenant.id).await;
        let fwd = create_forwarding_set(&store, &channel.id, raw_set_input())
            .await
            .unwrap();
        let old = store.named_tree(OLD_TREE).unwrap();
        let count = PAGE_MAX + 5;
        for i in 0..count {
            store_old(&old, &fwd.id, 1000 - i as u64, &format!("att_{i:04}"));
        }
        store_old(&old, "fwd_other", 5, "att_other");

        assert_eq!(move_attempts_into_pages(&store).unwrap(), count + 1);
        assert!(!store.has_tree(OLD_TREE));
        assert_eq!(move_attempts_into_pages(&store).unwrap(), 0);

        let log = DeliveryLog::new(
            store,
            Retention {
                count: 10_000,
                age: Duration::from_secs(86_400),
            },
            broadcast::channel(16).0,
        )
        .unwrap();
        let listed = log
            .list(
                &crate::test_fixtures::operator_caller(),
                &hookplane_proto::v1::ListDeliveryAttemptsRequest {
                    forwarding_set_id: fwd.id.clone(),
                    page_size: 1000,
                    ..Default::default()
                },
            )
            .unwrap()
            .attempts;
        let expected: Vec<String> = (0..count).rev().map(|i| format!("att_{i:04}")).collect();
        let ids: Vec<String> = listed.into_iter().map(|a| a.id).collect();
        assert_eq!(ids, expected);
    }

    #[tokio::test]
    async fn a_move_cut_short_and_run_again_stores_each_attempt_once() {
        let (_dir, store) = store();
        let old = store.named_tree(OLD_TREE).unwrap();
        for i in 0..PAGE_MAX * 2 {
            store_old(&old, "fwd_x", 1000 - i as u64, &format!("att_{i:04}"));
        }
        // The first page was written, but the crash came before its keys were removed.
        let first: Vec<(IVec, DeliveryAttempt)> = old
            .iter()
            .take(PAGE_MAX)
            .map(|e| {
                let (k, v) = e.unwrap();
                (k, DeliveryAttempt::decode(v.as_ref()).unwrap())
            })
            .collect();
        let mut page = sled::Batch::default();
        let id = page_id(first.iter().map(|(key, _)| key));
        write_pages(
            &mut page,
            b"fwd_x/",
            &first.into_iter().map(|(_, a)| a).collect::<Vec<_>>(),
            || id,
        );
        store
            .named_tree(ATTEMPT_PAGES)
            .unwrap()
            .apply_batch(page)
            .unwrap();

        move_attempts_into_pages(&store).unwrap();
        assert_eq!(store.named_tree(ATTEMPT_PAGES).unwrap().len(), 2);
    }
}
