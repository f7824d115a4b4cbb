//! How the attempt log stores a target's attempts: in pages, one sled value per target per
//! reported batch, each page's attempts newest first. A node reports hundreds of attempts at a
//! time; one insert per target per batch, and trimming by whole pages, is what lets the control
//! plane keep up with thousands of deliveries a second. One sled insert per attempt, and one
//! removal per attempt trimmed, cost about 16 µs each of them.
//!
//! A page's key holds the times of its oldest and newest attempts and its length, so trimming
//! finds the target's oldest attempts, and listing the pages a place in the list needs, from the
//! keys alone. Pages of batches from several nodes overlap in time; listing merges them.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};

use hookplane_proto::v1::DeliveryAttempt;
use prost::Message as _;
use sled::{IVec, Tree};

use crate::clock::Time;
use crate::error::Error;

/// The most attempts one page holds: trimming a page short rewrites it whole.
pub(super) const PAGE_MAX: usize = 128;
/// A batch this small joins the target's last page while that page is this small too: a target
/// that gets an attempt or two a batch would otherwise hold a page, and a key in memory, for each.
const SMALL: usize = PAGE_MAX / 4;
const ID_LEN: usize = 16;
const KEY_LEN: usize = 8 + 8 + 4 + ID_LEN;
pub(crate) const TREE: &str = "attempt_pages";

/// The stored form of a page.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredPage {
    /// Newest first, without the fields in `shared`.
    #[prost(message, repeated, tag = "1")]
    attempts: Vec<DeliveryAttempt>,
    /// The fields every attempt of the page holds alike (the target, its tenant, channel and URL,
    /// mostly the node): stored once, they halve the bytes sled writes for a page.
    #[prost(message, optional, tag = "2")]
    shared: Option<DeliveryAttempt>,
}

/// The fields a page stores once when all its attempts hold the same.
const SHAREABLE: [fn(&mut DeliveryAttempt) -> &mut String; 6] = [
    |a| &mut a.forwarding_set_id,
    |a| &mut a.subscription_id,
    |a| &mut a.tenant_id,
    |a| &mut a.channel_id,
    |a| &mut a.url,
    |a| &mut a.node_id,
];

fn encode(mut attempts: Vec<DeliveryAttempt>) -> Vec<u8> {
    let mut shared = DeliveryAttempt::default();
    if let Some((first, rest)) = attempts.split_first_mut() {
        for field in SHAREABLE {
            let value = field(first);
            if !value.is_empty() && rest.iter_mut().all(|a| field(a) == value) {
                *field(&mut shared) = std::mem::take(value);
                rest.iter_mut().for_each(|a| field(a).clear());
            }
        }
    }
    let shared = (shared != DeliveryAttempt::default()).then_some(shared);
    StoredPage { attempts, shared }.encode_to_vec()
}

fn decode(value: &[u8]) -> Result<Vec<DeliveryAttempt>, Error> {
    let page = StoredPage::decode(value).map_err(|e| Error::Corrupt {
        tree: TREE,
        detail: e.to_string(),
    })?;
    let mut attempts = page.attempts;
    if let Some(mut shared) = page.shared {
        for field in SHAREABLE {
            let value = std::mem::take(field(&mut shared));
            if !value.is_empty() {
                attempts.iter_mut().for_each(|a| value.clone_into(field(a)));
            }
        }
    }
    Ok(attempts)
}

pub(super) fn target_prefix(target_id: &str) -> Vec<u8> {
    format!("{target_id}/").into_bytes()
}

/// The attempt time in µs since the epoch; 0 for none (every attempt stored has one).
pub(super) fn micros(attempt: &DeliveryAttempt) -> u64 {
    attempt
        .time
        .as_ref()
        .and_then(Time::from_proto)
        .map_or(0, Time::unix_micros)
}

/// Where an attempt sorts in a target's list: listing goes from the greatest down.
pub(super) fn rank(attempt: &DeliveryAttempt) -> (u64, &str) {
    (micros(attempt), &attempt.id)
}

fn newest_first(a: &DeliveryAttempt, b: &DeliveryAttempt) -> std::cmp::Ordering {
    rank(b).cmp(&rank(a))
}

/// What follows a page's `target/` prefix: big-endian (MAX - oldest µs), (MAX - newest µs),
/// length, page id. A target's page holding its oldest attempt sorts last.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub(super) struct PageKey([u8; KEY_LEN]);

impl PageKey {
    fn new(oldest: u64, newest: u64, len: usize, id: [u8; ID_LEN]) -> PageKey {
        let mut key = [0u8; KEY_LEN];
        key[..8].copy_from_slice(&(u64::MAX - oldest).to_be_bytes());
        key[8..16].copy_from_slice(&(u64::MAX - newest).to_be_bytes());
        key[16..20].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
        key[20..].copy_from_slice(&id);
        PageKey(key)
    }

    /// The key of a page of `attempts` (newest first, at least one).
    fn of(attempts: &[DeliveryAttempt], id: [u8; ID_LEN]) -> PageKey {
        let newest = attempts.first().map_or(0, micros);
        let oldest = attempts.last().map_or(0, micros);
        PageKey::new(oldest, newest, attempts.len(), id)
    }

    fn field(&self, at: usize) -> u64 {
        let mut be = [0u8; 8];
        be.copy_from_slice(&self.0[at..at + 8]);
        u64::from_be_bytes(be)
    }

    pub fn oldest(&self) -> u64 {
        u64::MAX - self.field(0)
    }

    pub fn newest(&self) -> u64 {
        u64::MAX - self.field(8)
    }

    pub fn len(&self) -> usize {
        let mut be = [0u8; 4];
        be.copy_from_slice(&self.0[16..20]);
        u32::from_be_bytes(be) as usize
    }

    fn id(&self) -> [u8; ID_LEN] {
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&self.0[20..]);
        id
    }

    fn full(&self, prefix: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(prefix.len() + KEY_LEN);
        key.extend_from_slice(prefix);
        key.extend_from_slice(&self.0);
        key
    }

    /// `None` for a key of another shape.
    fn parse(key: &[u8], prefix_len: usize) -> Option<PageKey> {
        key.get(prefix_len..)?.try_into().ok().map(PageKey)
    }
}

/// Copies of `attempts` (any order) cut into pages, each named by a call of `id`. Each page is
/// made at its own size: cutting pages off the front of one vector made a copy of the rest for
/// each page, large blocks a standalone node's memory kept through a drain (docs/BENCHMARKS.md,
/// change 44).
fn paginate(
    attempts: &[DeliveryAttempt],
    mut id: impl FnMut() -> [u8; ID_LEN],
) -> Vec<(PageKey, Vec<DeliveryAttempt>)> {
    let mut order: Vec<&DeliveryAttempt> = attempts.iter().collect();
    order.sort_by(|a, b| newest_first(a, b));
    order
        .chunks(PAGE_MAX)
        .map(|chunk| {
            let page: Vec<DeliveryAttempt> = chunk.iter().map(|a| (*a).clone()).collect();
            (PageKey::of(&page, id()), page)
        })
        .collect()
}

/// Writes `attempts` (any order) as new pages into `batch`, each named by a call of `id`.
pub(super) fn write_pages(
    batch: &mut sled::Batch,
    prefix: &[u8],
    attempts: &[DeliveryAttempt],
    id: impl FnMut() -> [u8; ID_LEN],
) {
    for (key, page) in paginate(attempts, id) {
        batch.insert(key.full(prefix), encode(page));
    }
}

/// Removes every page of the targets `of_tenant` says are the tenant's (it gets each target's
/// id and the attempts of one of its pages: a target is one tenant's, so one page tells).
/// Returns how many attempts went and which targets held any.
pub(super) fn remove_targets(
    tree: &Tree,
    mut of_tenant: impl FnMut(&str, &[DeliveryAttempt]) -> bool,
) -> Result<(usize, Vec<String>), Error> {
    let mut removed = 0;
    let mut targets = Vec::new();
    // Keys come in order, so the keys under one `target/` prefix come together.
    let mut current: Option<(Vec<u8>, bool)> = None;
    for entry in tree.iter() {
        let (key, value) = entry?;
        let Some(slash) = key.iter().position(|b| *b == b'/') else {
            continue;
        };
        let prefix = &key[..=slash];
        let doomed = match &current {
            Some((p, doomed)) if p.as_slice() == prefix => *doomed,
            _ => {
                let target = String::from_utf8_lossy(&key[..slash]).into_owned();
                let doomed = of_tenant(&target, &decode(&value)?);
                if doomed {
                    targets.push(target);
                }
                current = Some((prefix.to_vec(), doomed));
                doomed
            }
        };
        if doomed {
            removed += PageKey::parse(&key, prefix.len()).map_or(0, |p| p.len());
            tree.remove(&key)?;
        }
    }
    Ok((removed, targets))
}

/// A page made or changed by one write, stored when the write ends.
struct Loose {
    /// The key it is stored under now, if it is.
    stored_as: Option<PageKey>,
    attempts: Vec<DeliveryAttempt>,
}

/// What the log knows of one target's pages, kept while the store is open so that a batch needs
/// no scan of the target.
#[derive(Debug)]
pub(crate) struct Shelf {
    prefix: Vec<u8>,
    pages: BTreeSet<PageKey>,
    held: usize,
    /// The page the last batch made or joined, as it was stored.
    last_written: Option<PageKey>,
}

impl Shelf {
    fn empty(prefix: Vec<u8>) -> Shelf {
        Shelf {
            prefix,
            pages: BTreeSet::new(),
            held: 0,
            last_written: None,
        }
    }

    /// Takes in a page read from the tree; a key of another shape is passed over.
    fn shelve(&mut self, key: &[u8]) {
        if let Some(page) = PageKey::parse(key, self.prefix.len()) {
            self.held += page.len();
            self.pages.insert(page);
        }
    }

    /// Reads the keys of `target`'s pages.
    pub fn load(tree: &Tree, target: &str) -> Result<Shelf, Error> {
        let mut shelf = Shelf::empty(target_prefix(target));
        for key in tree.scan_prefix(&shelf.prefix).keys() {
            shelf.shelve(&key?);
        }
        Ok(shelf)
    }

    /// Every target's shelf, each key of the tree read once (the sweep).
    pub fn load_all(tree: &Tree) -> Result<Vec<(String, Shelf)>, Error> {
        let mut shelves: Vec<(String, Shelf)> = Vec::new();
        for key in tree.iter().keys() {
            let key = key?;
            let Some(slash) = key.iter().position(|b| *b == b'/') else {
                continue;
            };
            // Keys come in order, so the keys under one `target/` prefix come together.
            let prefix = &key[..=slash];
            if shelves
                .last()
                .is_none_or(|(_, shelf)| shelf.prefix != prefix)
            {
                let target = String::from_utf8_lossy(&key[..slash]).into_owned();
                shelves.push((target, Shelf::empty(prefix.to_vec())));
            }
            if let Some((_, shelf)) = shelves.last_mut() {
                shelf.shelve(&key);
            }
        }
        Ok(shelves)
    }

    pub fn held(&self) -> usize {
        self.held
    }

    /// The attempts of the pages whose newest attempt is at `since` (µs) or later.
    pub fn read_since(&self, tree: &Tree, since: u64) -> Result<Vec<DeliveryAttempt>, Error> {
        let mut attempts = Vec::new();
        for page in self.pages.iter().filter(|p| p.newest() >= since) {
            if let Some(value) = tree.get(page.full(&self.prefix))? {
                attempts.extend(decode(&value)?);
            }
        }
        Ok(attempts)
    }

    /// Stores `attempts` (none held yet) as new pages, then removes the target's oldest attempts
    /// beyond `count` and any older than `cutoff` (µs), all in one atomic sled batch. Returns how
    /// many attempts it removed.
    pub fn add_and_trim(
        &mut self,
        tree: &Tree,
        attempts: &[DeliveryAttempt],
        count: usize,
        cutoff: u64,
    ) -> Result<usize, Error> {
        let mut loose = HashMap::new();
        let mut attempts = attempts;
        let joinable = self.last_written.filter(|last| {
            (1..SMALL).contains(&attempts.len()) && last.len() < SMALL && self.pages.contains(last)
        });
        if let Some(last) = joinable
            && let Some(value) = tree.get(last.full(&self.prefix))?
        {
            let mut joined = decode(&value)?;
            joined.extend_from_slice(attempts);
            attempts = &[];
            joined.sort_by(newest_first);
            self.pages.remove(&last);
            let key = PageKey::of(&joined, last.id());
            self.pages.insert(key);
            self.held += joined.len() - last.len();
            self.last_written = Some(key);
            let page = Loose {
                stored_as: Some(last),
                attempts: joined,
            };
            loose.insert(key.id(), page);
        }
        for (key, attempts) in paginate(attempts, rand::random) {
            self.pages.insert(key);
            self.held += attempts.len();
            // Pages come newest first: the first is the one a next small batch may join.
            if loose.is_empty() {
                self.last_written = Some(key);
            }
            let page = Loose {
                stored_as: None,
                attempts,
            };
            loose.insert(key.id(), page);
        }
        let stored = self
            .trim(tree, &mut loose, count, cutoff)
            .and_then(|removed| {
                let mut batch = sled::Batch::default();
                for (id, page) in loose {
                    if let Some(stored_as) = page.stored_as {
                        batch.remove(stored_as.full(&self.prefix));
                    }
                    if !page.attempts.is_empty() {
                        let key = PageKey::of(&page.attempts, id);
                        batch.insert(key.full(&self.prefix), encode(page.attempts));
                    }
                }
                tree.apply_batch(batch)?;
                Ok(removed)
            });
        if stored.is_err() {
            // The shelf may no longer match the tree; the caller forgets it and loads it again.
            self.pages.clear();
        }
        stored
    }

    /// Trims as `add_and_trim` does, alone (the sweep).
    pub fn trim_now(&mut self, tree: &Tree, count: usize, cutoff: u64) -> Result<usize, Error> {
        self.add_and_trim(tree, &[], count, cutoff)
    }

    /// Removes the oldest attempts from the pages, reading into `loose` (by id) the pages it
    /// changes. The oldest attempt of all is the oldest of the page that sorts last; attempts go
    /// from that page's end for as long as none in another page is older. A page wholly due goes
    /// without being read.
    fn trim(
        &mut self,
        tree: &Tree,
        loose: &mut HashMap<[u8; ID_LEN], Loose>,
        count: usize,
        cutoff: u64,
    ) -> Result<usize, Error> {
        let mut excess = self.held.saturating_sub(count);
        let mut removed = 0;
        while let Some(&page) = self.pages.last() {
            if excess == 0 && page.oldest() >= cutoff {
                break;
            }
            let next_oldest = self.pages.iter().rev().nth(1).map(PageKey::oldest);
            let wholly_due = page.newest() < cutoff
                || (page.len() <= excess && next_oldest.is_none_or(|n| page.newest() <= n));
            self.pages.remove(&page);
            let held = match loose.entry(page.id()) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let attempts = if wholly_due {
                        Vec::new()
                    } else {
                        match tree.get(page.full(&self.prefix))? {
                            Some(value) => decode(&value)?,
                            // Gone from the tree after all: only the shelf's idea of it goes.
                            None => {
                                self.held = self.held.saturating_sub(page.len());
                                excess = excess.saturating_sub(page.len());
                                continue;
                            }
                        }
                    };
                    e.insert(Loose {
                        stored_as: Some(page),
                        attempts,
                    })
                }
            };
            let attempts = &mut held.attempts;
            let before = if wholly_due {
                page.len()
            } else {
                attempts.len()
            };
            if wholly_due {
                attempts.clear();
                excess = excess.saturating_sub(before);
            }
            while let Some(last) = attempts.last() {
                let at = micros(last);
                let due = excess > 0 || at < cutoff;
                if !due || next_oldest.is_some_and(|n| at > n) {
                    break;
                }
                attempts.pop();
                excess = excess.saturating_sub(1);
            }
            let dropped = before - attempts.len();
            removed += dropped;
            if attempts.is_empty() {
                continue;
            }
            if dropped == 0 {
                // A key that does not match its page: leave it as it is.
                self.pages.insert(page);
                break;
            }
            self.pages.insert(PageKey::of(attempts, page.id()));
        }
        self.held = self.held.saturating_sub(removed);
        Ok(removed)
    }
}

/// A place in a target's list: the rank of the last attempt listed.
pub(super) type After = (u64, String);

/// The key a page token names when `last` ends the page: the target's prefix, big-endian
/// (MAX - time in µs), attempt id. The next page starts below it.
pub(super) fn place_key(prefix: &[u8], last: &DeliveryAttempt) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&(u64::MAX - micros(last)).to_be_bytes());
    key.extend_from_slice(last.id.as_bytes());
    key
}

/// The place a page token's key names (see [`place_key`]).
pub(super) fn place(key: &[u8], prefix_len: usize) -> Result<After, Error> {
    let malformed = || Error::invalid("page_token", "malformed");
    let time: [u8; 8] = key
        .get(prefix_len..prefix_len + 8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(malformed)?;
    let id = std::str::from_utf8(&key[prefix_len + 8..]).map_err(|_| malformed())?;
    Ok((u64::MAX - u64::from_be_bytes(time), id.to_owned()))
}

/// Up to `size` of the target's attempts that rank below `after`, newest first, and whether more
/// follow. Pages are read newest first and the reading stops once no page left can hold an
/// attempt that ranks among the `size` found.
pub(super) fn list(
    tree: &Tree,
    prefix: &[u8],
    size: usize,
    after: Option<&After>,
) -> Result<(Vec<DeliveryAttempt>, bool), Error> {
    let below = |attempt: &DeliveryAttempt| {
        after.is_none_or(|(micros, id)| rank(attempt) < (*micros, id.as_str()))
    };
    let mut pages: Vec<(PageKey, IVec)> = Vec::new();
    for entry in tree.scan_prefix(prefix) {
        let (key, value) = entry?;
        if let Some(page) = PageKey::parse(&key, prefix.len())
            && after.is_none_or(|(micros, _)| page.oldest() <= *micros)
        {
            pages.push((page, value));
        }
    }
    pages.sort_by_key(|(page, _)| Reverse(page.newest()));
    // Kept sorted, newest first, and at most one beyond `size`: that one tells more follow.
    let mut found: Vec<DeliveryAttempt> = Vec::new();
    for (page, value) in pages {
        if found.len() > size && page.newest() < micros(&found[size]) {
            break;
        }
        found.extend(decode(&value)?.into_iter().filter(|a| below(a)));
        found.sort_by(newest_first);
        found.truncate(size + 1);
    }
    let more = found.len() > size;
    found.truncate(size);
    Ok((found, more))
}

/// Every kept attempt of the target at `cutoff` (µs since the epoch) or later, in no order. Only
/// the pages holding some of them are read.
pub(super) fn since(
    tree: &Tree,
    prefix: &[u8],
    cutoff: u64,
) -> Result<Vec<DeliveryAttempt>, Error> {
    let mut found = Vec::new();
    for entry in tree.scan_prefix(prefix) {
        let (key, value) = entry?;
        if let Some(page) = PageKey::parse(&key, prefix.len())
            && page.newest() >= cutoff
        {
            found.extend(decode(&value)?.into_iter().filter(|a| micros(a) >= cutoff));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(micros: u64, id: &str) -> DeliveryAttempt {
        let time = prost_types::Timestamp {
            seconds: i64::try_from(micros / 1_000_000).unwrap(),
            nanos: i32::try_from(micros % 1_000_000 * 1000).unwrap(),
        };
        DeliveryAttempt {
            id: id.to_owned(),
            time: Some(time),
            ..DeliveryAttempt::default()
        }
    }

    fn tree() -> Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree(TREE).unwrap()
    }

    /// Attempts at each of `seconds`, named by their second.
    fn batch(seconds: &[u64]) -> Vec<DeliveryAttempt> {
        seconds
            .iter()
            .map(|s| at(s * 1_000_000, &format!("att_{s:04}")))
            .collect()
    }

    /// Stores `attempts` as a page of their own, as a batch too large to join the last page is.
    fn apart(
        shelf: &mut Shelf,
        tree: &Tree,
        attempts: Vec<DeliveryAttempt>,
        count: usize,
        cutoff: u64,
    ) -> Result<usize, Error> {
        shelf.last_written = None;
        shelf.add_and_trim(tree, &attempts, count, cutoff)
    }

    fn ids(attempts: &[DeliveryAttempt]) -> Vec<&str> {
        attempts.iter().map(|a| a.id.as_str()).collect()
    }

    /// Every attempt the tree holds for the target, newest first, read page by page of `size`.
    fn listed(tree: &Tree, size: usize) -> Vec<String> {
        let prefix = target_prefix("fwd_1");
        let mut all = Vec::new();
        let mut after: Option<After> = None;
        loop {
            let (page, more) = list(tree, &prefix, size, after.as_ref()).unwrap();
            assert!(page.len() <= size);
            after = page.last().map(|a| (micros(a), a.id.clone()));
            all.extend(page.into_iter().map(|a| a.id));
            if !more {
                return all;
            }
        }
    }

    #[test]
    fn a_page_gives_back_its_attempts_with_the_fields_they_share_stored_once() {
        let attempts: Vec<DeliveryAttempt> = (0..3u64)
            .map(|i| DeliveryAttempt {
                forwarding_set_id: "fwd_1".into(),
                tenant_id: "ten_1".into(),
                url: "https://crm.example.com/hook".into(),
                // Alike in two, not in all three: stored in each.
                node_id: if i == 2 { "node-b" } else { "node-a" }.into(),
                ..at(100 - i, &format!("att_{i}"))
            })
            .collect();
        let stored = encode(attempts.clone());
        assert_eq!(decode(&stored).unwrap(), attempts);
        let one_by_one: usize = attempts.iter().map(|a| a.encoded_len()).sum();
        assert!(stored.len() < one_by_one - 2 * "https://crm.example.com/hook".len());
    }

    #[test]
    fn a_page_key_keeps_its_times_and_length() {
        let key = PageKey::new(5, 9, 3, [7; ID_LEN]);
        assert_eq!((key.oldest(), key.newest(), key.len()), (5, 9, 3));
        let parsed = PageKey::parse(&key.full(b"fwd_1/"), 6).unwrap();
        assert_eq!(parsed, key);
    }

    #[test]
    fn the_page_holding_the_oldest_attempt_sorts_last() {
        let old = PageKey::new(1, 100, 2, [0; ID_LEN]);
        let new = PageKey::new(50, 60, 2, [0; ID_LEN]);
        assert!(new.full(b"t/") < old.full(b"t/"));
    }

    #[test]
    fn listing_merges_overlapping_pages_newest_first_across_page_tokens() {
        let tree = tree();
        let mut shelf = Shelf::load(&tree, "fwd_1").unwrap();
        // Three batches whose times interleave, as from three nodes.
        for seconds in [[10, 40, 70, 100], [20, 50, 80, 110], [30, 60, 90, 5]] {
            apart(&mut shelf, &tree, batch(&seconds), 100, 0).unwrap();
        }
        let mut expected = [10, 40, 70, 100, 20, 50, 80, 110, 30, 60, 90, 5];
        expected.sort_by(|a, b| b.cmp(a));
        let expected: Vec<String> = expected.iter().map(|s| format!("att_{s:04}")).collect();
        for size in [1, 2, 3, 5, 12, 50] {
            assert_eq!(listed(&tree, size), expected, "pages of {size}");
        }
    }

    #[test]
    fn a_batch_larger_than_a_page_is_stored_in_several() {
        let tree = tree();
        let mut shelf = Shelf::load(&tree, "fwd_1").unwrap();
        let seconds: Vec<u64> = (1..=PAGE_MAX as u64 * 2 + 1).collect();
        shelf
            .add_and_trim(&tree, &batch(&seconds), 1000, 0)
            .unwrap();
        assert_eq!(tree.len(), 3);
        assert_eq!(shelf.held(), seconds.len());
        assert_eq!(listed(&tree, 100).len(), seconds.len());
    }

    #[test]
    fn trimming_removes_the_oldest_attempts_whichever_pages_hold_them() {
        let tree = tree();
        let mut shelf = Shelf::load(&tree, "fwd_1").unwrap();
        apart(&mut shelf, &tree, batch(&[1, 50, 90]), 4, 0).unwrap();
        apart(&mut shelf, &tree, batch(&[2, 3, 60]), 4, 0).unwrap();
        let removed = apart(&mut shelf, &tree, batch(&[70, 4]), 4, 0).unwrap();
        assert_eq!(removed, 2);
        assert_eq!(shelf.held(), 4);
        assert_eq!(
            listed(&tree, 10),
            ["att_0090", "att_0070", "att_0060", "att_0050"]
        );
        // What the shelf knows is what a fresh read of the tree finds.
        let reloaded = Shelf::load(&tree, "fwd_1").unwrap();
        assert_eq!(reloaded.pages, shelf.pages);
        assert_eq!(reloaded.held(), 4);
    }

    #[test]
    fn trimming_removes_attempts_older_than_the_cutoff_however_few_are_held() {
        let tree = tree();
        let mut shelf = Shelf::load(&tree, "fwd_1").unwrap();
        apart(&mut shelf, &tree, batch(&[1, 2, 30]), 100, 0).unwrap();
        apart(&mut shelf, &tree, batch(&[3, 40]), 100, 0).unwrap();
        let removed = shelf.trim_now(&tree, 100, 10 * 1_000_000).unwrap();
        assert_eq!(removed, 3);
        assert_eq!(listed(&tree, 10), ["att_0040", "att_0030"]);
    }

    #[test]
    fn a_page_wholly_past_the_count_is_removed_and_the_next_cut_short() {
        let tree = tree();
        let mut shelf = Shelf::load(&tree, "fwd_1").unwrap();
        apart(&mut shelf, &tree, batch(&[1, 2]), 3, 0).unwrap();
        apart(&mut shelf, &tree, batch(&[3, 4, 5]), 3, 0).unwrap();
        apart(&mut shelf, &tree, batch(&[6, 7]), 3, 0).unwrap();
        assert_eq!(tree.len(), 2);
        assert_eq!(
            ids(&list(&tree, b"fwd_1/", 10, None).unwrap().0),
            ["att_0007", "att_0006", "att_0005"]
        );
    }

    #[test]
    fn batches_of_a_few_attempts_fill_one_page_rather_than_one_page_each() {
        let tree = tree();
        let mut shelf = Shelf::load(&tree, "fwd_1").unwrap();
        let batches = SMALL as u64 + 8;
        for second in 1..=batches {
            shelf
                .add_and_trim(&tree, &batch(&[second]), 1000, 0)
                .unwrap();
        }
        assert_eq!(tree.len(), 2);
        assert_eq!(shelf.held(), batches as usize);
        let expected: Vec<String> = (1..=batches).rev().map(|s| format!("att_{s:04}")).collect();
        assert_eq!(listed(&tree, 7), expected);
        let reloaded = Shelf::load(&tree, "fwd_1").unwrap();
        assert_eq!(reloaded.pages, shelf.pages);
    }

    #[test]
    fn a_place_in_the_list_skips_pages_wholly_before_it() {
        let tree = tree();
        let mut shelf = Shelf::load(&tree, "fwd_1").unwrap();
        apart(&mut shelf, &tree, batch(&[100, 110]), 100, 0).unwrap();
        apart(&mut shelf, &tree, batch(&[10, 20]), 100, 0).unwrap();
        let after = (20 * 1_000_000 + 1, "att_z".to_owned());
        let (page, more) = list(&tree, b"fwd_1/", 10, Some(&after)).unwrap();
        assert_eq!(ids(&page), ["att_0020", "att_0010"]);
        assert!(!more);
    }
}
