//! The sled store: configuration trees, their parent/child indexes, the global revision and the
//! change log, plus the delivery-log trees. Every configuration write is one sled transaction that
//! also advances the revision and logs what it touched; a revision is announced to the config
//! stream only once a flush made it durable. The store is named once, when it is created, so nodes
//! can tell it from another (an empty store or a restored one).

mod records;
mod reseal;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hookplane_proto::v1::ResourceKind;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Tree;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use tokio::sync::watch;

pub(crate) use records::*;
pub(crate) use reseal::{Resealed, SealedTree};

use crate::error::Error;
use crate::sealing::{Place, Sealer};

/// How many revisions the change log keeps; a node further behind gets a snapshot.
const CHANGE_LOG_LEN: u64 = 100_000;
const REVISION_KEY: &[u8] = b"revision";
const STORE_ID_KEY: &[u8] = b"store_id";
const KEY_CHECK_KEY: &[u8] = b"master_key_check";
const KEY_CHECK_PLAINTEXT: &str = "hookplane master key check";
const KEY_CHECK_PLACE: Place<'static> = Place {
    record: "store",
    field: "master_key_check",
};

/// The configuration trees, in the order of `Store::config_trees`.
#[derive(Debug, Clone, Copy)]
enum ConfigTree {
    Tenants = 0,
    Channels,
    ForwardingSets,
    Subscriptions,
    TenantChannels,
    ChannelForwardingSets,
    TenantSubscriptions,
    Changes,
    Meta,
    Tokens,
    TenantTokens,
}

const CONFIG_TREE_NAMES: [&str; 11] = [
    "tenants",
    "channels",
    "forwarding_sets",
    "subscriptions",
    "tenant_channels",
    "channel_forwarding_sets",
    "tenant_subscriptions",
    "changes",
    "meta",
    "tokens",
    "tenant_tokens",
];

/// One resource touched by a revision, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub(crate) struct Touched {
    /// The `hookplane.v1.ResourceKind` value.
    pub kind: i32,
    pub id: String,
}

/// The writes of one revision, applied together by `Store::commit`.
#[derive(Debug, Default)]
pub(crate) struct Change {
    ops: Vec<(ConfigTree, Vec<u8>, Option<Vec<u8>>)>,
    touched: Vec<Touched>,
}

fn index_key(parent: &str, child: &str) -> Vec<u8> {
    format!("{parent}/{child}").into_bytes()
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Records are plain structs of strings, numbers and maps: serialising cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

impl Change {
    fn put(&mut self, tree: ConfigTree, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((tree, key, Some(value)));
    }

    fn remove(&mut self, tree: ConfigTree, key: Vec<u8>) {
        self.ops.push((tree, key, None));
    }

    fn touch(&mut self, kind: ResourceKind, id: &str) {
        self.touched.push(Touched {
            kind: kind as i32,
            id: id.to_owned(),
        });
    }

    pub fn put_tenant(&mut self, r: &TenantRecord) {
        self.put(ConfigTree::Tenants, r.id.clone().into_bytes(), encode(r));
        self.touch(ResourceKind::Tenant, &r.id);
    }

    pub fn remove_tenant(&mut self, id: &str) {
        self.remove(ConfigTree::Tenants, id.as_bytes().to_vec());
        self.touch(ResourceKind::Tenant, id);
    }

    pub fn put_channel(&mut self, r: &ChannelRecord) {
        self.put(ConfigTree::Channels, r.id.clone().into_bytes(), encode(r));
        self.put(
            ConfigTree::TenantChannels,
            index_key(&r.tenant_id, &r.id),
            Vec::new(),
        );
        self.touch(ResourceKind::Channel, &r.id);
    }

    pub fn remove_channel(&mut self, tenant_id: &str, id: &str) {
        self.remove(ConfigTree::Channels, id.as_bytes().to_vec());
        self.remove(ConfigTree::TenantChannels, index_key(tenant_id, id));
        self.touch(ResourceKind::Channel, id);
    }

    pub fn put_forwarding_set(&mut self, r: &ForwardingSetRecord) {
        self.put(
            ConfigTree::ForwardingSets,
            r.id.clone().into_bytes(),
            encode(r),
        );
        self.put(
            ConfigTree::ChannelForwardingSets,
            index_key(&r.channel_id, &r.id),
            Vec::new(),
        );
        self.touch(ResourceKind::ForwardingSet, &r.id);
    }

    pub fn remove_forwarding_set(&mut self, channel_id: &str, id: &str) {
        self.remove(ConfigTree::ForwardingSets, id.as_bytes().to_vec());
        self.remove(ConfigTree::ChannelForwardingSets, index_key(channel_id, id));
        self.touch(ResourceKind::ForwardingSet, id);
    }

    pub fn put_subscription(&mut self, r: &SubscriptionRecord) {
        self.put(
            ConfigTree::Subscriptions,
            r.id.clone().into_bytes(),
            encode(r),
        );
        self.put(
            ConfigTree::TenantSubscriptions,
            index_key(&r.tenant_id, &r.id),
            Vec::new(),
        );
        self.touch(ResourceKind::Subscription, &r.id);
    }

    pub fn remove_subscription(&mut self, tenant_id: &str, id: &str) {
        self.remove(ConfigTree::Subscriptions, id.as_bytes().to_vec());
        self.remove(ConfigTree::TenantSubscriptions, index_key(tenant_id, id));
        self.touch(ResourceKind::Subscription, id);
    }

    /// Tokens are configuration: nodes learn of publishing tokens, and of their revocation,
    /// through the config stream like any other change.
    pub fn put_token(&mut self, r: &TokenRecord) {
        self.put(ConfigTree::Tokens, r.id.clone().into_bytes(), encode(r));
        if !r.tenant_id.is_empty() {
            self.put(
                ConfigTree::TenantTokens,
                index_key(&r.tenant_id, &r.id),
                Vec::new(),
            );
        }
        self.touch(ResourceKind::PublisherToken, &r.id);
    }

    pub fn remove_token(&mut self, tenant_id: &str, id: &str) {
        self.remove(ConfigTree::Tokens, id.as_bytes().to_vec());
        if !tenant_id.is_empty() {
            self.remove(ConfigTree::TenantTokens, index_key(tenant_id, id));
        }
        self.touch(ResourceKind::PublisherToken, id);
    }
}

/// Proof that the caller holds the single writer lock: configuration writes check quotas by
/// reading first, so reads and the commit must not interleave with another writer.
pub(crate) struct WriteGuard<'a>(#[allow(dead_code)] MutexGuard<'a, ()>);

/// The parent/child indexes, for listing children.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Index {
    TenantChannels,
    ChannelForwardingSets,
    TenantSubscriptions,
    TenantTokens,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub(crate) struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    config_trees: Vec<Tree>,
    notifications: Tree,
    audit_events: Tree,
    audit_by_tenant: Tree,
    audit_by_resource: Tree,
    token_last_used: Tree,
    sealer: Sealer,
    writes: Mutex<()>,
    /// sled 0.34 can deadlock when two `flush_async` calls overlap (spacejam/sled#1308), which
    /// concurrent admin writes made happen: flushes take turns, and one flush serves every caller
    /// whose ticket was issued before it started (group commit). Holds the last ticket flushed.
    flushes: tokio::sync::Mutex<u64>,
    flush_tickets: AtomicU64,
    /// The last revision committed; advanced under the writer lock.
    committed: AtomicU64,
    /// The last revision a flush made durable: what the config stream may send. A node that
    /// applied a revision a crash then lost would hold config the store no longer has, and see
    /// the revision go backwards when the control plane comes back.
    durable: watch::Sender<u64>,
    id: String,
}

pub(crate) fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        tree,
        detail: e.to_string(),
    })
}

fn decode_u64(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

impl Store {
    /// Opens (or creates) the store at `path`. Fails when the store was sealed under another
    /// master key, rather than failing later on the first secret read.
    pub fn open(path: &Path, sealer: Sealer) -> Result<Store, Error> {
        let db = open_when_free(&sled::Config::new().path(path))?;
        let config_trees = CONFIG_TREE_NAMES
            .iter()
            .map(|name| db.open_tree(name))
            .collect::<Result<Vec<_>, _>>()?;
        let meta = &config_trees[ConfigTree::Meta as usize];
        match meta.get(KEY_CHECK_KEY)? {
            Some(sealed) => {
                let sealed = decode("meta", &sealed)?;
                match sealer.open(&sealed, KEY_CHECK_PLACE) {
                    Ok(_) => {}
                    Err(Error::UnknownMasterKey { key_id }) => {
                        return Err(Error::MasterKey(format!(
                            "the store at {} is sealed under master key id {key_id}, and this \
                             process holds {} (give that key as --master-key, or as \
                             --previous-master-key to rotate to a new one)",
                            path.display(),
                            std::iter::once(sealer.key_id())
                                .chain(sealer.previous_key_id())
                                .collect::<Vec<_>>()
                                .join(" and ")
                        )));
                    }
                    Err(_) => {
                        return Err(Error::MasterKey(format!(
                            "it does not open the store at {}",
                            path.display()
                        )));
                    }
                }
            }
            None => {
                let check = sealer.seal(KEY_CHECK_PLAINTEXT, KEY_CHECK_PLACE);
                meta.insert(KEY_CHECK_KEY, encode(&check))?;
            }
        }
        // Made once, when the store is created. A store made before stores had ids gets one at
        // its first open here; nodes that followed it remember no id yet and take this one as
        // theirs, so the upgrade changes nothing for them.
        let id = match meta.get(STORE_ID_KEY)? {
            Some(id) => String::from_utf8_lossy(&id).into_owned(),
            None => {
                let id = crate::ids::new_id(crate::ids::STORE);
                meta.insert(STORE_ID_KEY, id.as_bytes())?;
                id
            }
        };
        // Whatever recovery read may sit in the page cache only, and the id must never change
        // under nodes that already saw it: everything is durable before anything is served.
        db.flush()?;
        let current = meta.get(REVISION_KEY)?.map_or(0, |v| decode_u64(&v));
        let (durable, _) = watch::channel(current);
        Ok(Store {
            inner: Arc::new(Inner {
                notifications: db.open_tree("notifications")?,
                audit_events: db.open_tree("audit_events")?,
                audit_by_tenant: db.open_tree("audit_by_tenant")?,
                audit_by_resource: db.open_tree("audit_by_resource")?,
                token_last_used: db.open_tree("token_last_used")?,
                db,
                config_trees,
                sealer,
                writes: Mutex::new(()),
                flushes: tokio::sync::Mutex::new(0),
                flush_tickets: AtomicU64::new(0),
                committed: AtomicU64::new(current),
                durable,
                id,
            }),
        })
    }

    pub fn sealer(&self) -> &Sealer {
        &self.inner.sealer
    }

    /// The store's id (`st_...`), the same for its whole life.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    fn tree(&self, t: ConfigTree) -> &Tree {
        &self.inner.config_trees[t as usize]
    }

    pub fn lock_writes(&self) -> WriteGuard<'_> {
        WriteGuard(self.inner.writes.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Applies `change` and advances the revision in one transaction; returns the new revision.
    /// The config stream learns of it at the next `flush`, which every writer calls before it
    /// answers.
    pub fn commit(&self, _guard: &WriteGuard<'_>, change: Change) -> Result<u64, Error> {
        let touched = encode(&change.touched);
        let trees: &[Tree] = &self.inner.config_trees;
        let result: Result<u64, TransactionError<std::convert::Infallible>> =
            trees.transaction(|views| {
                let meta = &views[ConfigTree::Meta as usize];
                let next = meta.get(REVISION_KEY)?.map_or(0, |v| decode_u64(&v)) + 1;
                for (tree, key, value) in &change.ops {
                    let view = &views[*tree as usize];
                    match value {
                        Some(value) => view.insert(key.as_slice(), value.as_slice())?,
                        None => view.remove(key.as_slice())?,
                    };
                }
                let changes = &views[ConfigTree::Changes as usize];
                changes.insert(&next.to_be_bytes(), touched.as_slice())?;
                if next > CHANGE_LOG_LEN {
                    changes.remove(&(next - CHANGE_LOG_LEN).to_be_bytes())?;
                }
                meta.insert(REVISION_KEY, &next.to_be_bytes())?;
                Ok::<_, ConflictableTransactionError<std::convert::Infallible>>(next)
            });
        let revision = match result {
            Ok(revision) => revision,
            Err(TransactionError::Storage(e)) => return Err(Error::Store(e)),
            Err(TransactionError::Abort(never)) => match never {},
        };
        self.inner.committed.store(revision, SeqCst);
        Ok(revision)
    }

    /// Makes every write so far durable, then announces the revisions it covered to the config
    /// stream.
    pub async fn flush(&self) -> Result<(), Error> {
        // The caller's writes happened before its ticket; a flush that starts after the ticket
        // was issued makes them durable.
        let ticket = self.inner.flush_tickets.fetch_add(1, SeqCst) + 1;
        let mut flushed = self.inner.flushes.lock().await;
        if *flushed >= ticket {
            return Ok(());
        }
        let covers = self.inner.flush_tickets.load(SeqCst);
        // Read after `covers`: the commits of every ticket this flush serves are in it.
        let committed = self.inner.committed.load(SeqCst);
        self.inner.db.flush_async().await?;
        *flushed = covers;
        self.inner.durable.send_if_modified(|durable| {
            let newer = committed > *durable;
            if newer {
                *durable = committed;
            }
            newer
        });
        Ok(())
    }

    /// The last revision committed, durable or not yet.
    pub fn revision(&self) -> u64 {
        self.inner.committed.load(SeqCst)
    }

    /// The last revision known durable: the newest the config stream may send.
    pub fn durable_revision(&self) -> u64 {
        *self.inner.durable.borrow()
    }

    /// Wakes when a flush makes newer revisions durable, with the newest.
    pub fn watch_durable_revision(&self) -> watch::Receiver<u64> {
        self.inner.durable.subscribe()
    }

    /// Every logged revision after `after` up to `upto`, in order, with what each touched.
    pub fn changes_between(
        &self,
        after: u64,
        upto: u64,
    ) -> Result<Vec<(u64, Vec<Touched>)>, Error> {
        if upto <= after {
            return Ok(Vec::new());
        }
        let start = after.saturating_add(1).to_be_bytes();
        self.tree(ConfigTree::Changes)
            .range(start..=upto.to_be_bytes())
            .map(|entry| {
                let (k, v) = entry?;
                Ok((decode_u64(&k), decode("changes", &v)?))
            })
            .collect()
    }

    fn get<T: DeserializeOwned>(
        &self,
        t: ConfigTree,
        name: &'static str,
        id: &str,
    ) -> Result<Option<T>, Error> {
        match self.tree(t).get(id.as_bytes())? {
            Some(bytes) => Ok(Some(decode(name, &bytes)?)),
            None => Ok(None),
        }
    }

    fn all<T: DeserializeOwned>(&self, t: ConfigTree, name: &'static str) -> Result<Vec<T>, Error> {
        self.tree(t)
            .iter()
            .values()
            .map(|v| decode(name, &v?))
            .collect()
    }

    pub fn find_tenant(&self, id: &str) -> Result<Option<TenantRecord>, Error> {
        self.get(ConfigTree::Tenants, "tenants", id)
    }

    pub fn tenant(&self, id: &str) -> Result<TenantRecord, Error> {
        self.find_tenant(id)?
            .ok_or_else(|| Error::not_found("tenant", id))
    }

    pub fn find_channel(&self, id: &str) -> Result<Option<ChannelRecord>, Error> {
        self.get(ConfigTree::Channels, "channels", id)
    }

    pub fn channel(&self, id: &str) -> Result<ChannelRecord, Error> {
        self.find_channel(id)?
            .ok_or_else(|| Error::not_found("channel", id))
    }

    pub fn find_forwarding_set(&self, id: &str) -> Result<Option<ForwardingSetRecord>, Error> {
        self.get(ConfigTree::ForwardingSets, "forwarding_sets", id)
    }

    pub fn forwarding_set(&self, id: &str) -> Result<ForwardingSetRecord, Error> {
        self.find_forwarding_set(id)?
            .ok_or_else(|| Error::not_found("forwarding set", id))
    }

    pub fn find_subscription(&self, id: &str) -> Result<Option<SubscriptionRecord>, Error> {
        self.get(ConfigTree::Subscriptions, "subscriptions", id)
    }

    pub fn subscription(&self, id: &str) -> Result<SubscriptionRecord, Error> {
        self.find_subscription(id)?
            .ok_or_else(|| Error::not_found("subscription", id))
    }

    pub fn find_token(&self, id: &str) -> Result<Option<TokenRecord>, Error> {
        self.get(ConfigTree::Tokens, "tokens", id)
    }

    pub fn token(&self, id: &str) -> Result<TokenRecord, Error> {
        self.find_token(id)?
            .ok_or_else(|| Error::not_found("token", id))
    }

    pub fn all_tokens(&self) -> Result<Vec<TokenRecord>, Error> {
        self.all(ConfigTree::Tokens, "tokens")
    }

    pub fn tokens_tree(&self) -> &Tree {
        self.tree(ConfigTree::Tokens)
    }

    pub fn all_tenants(&self) -> Result<Vec<TenantRecord>, Error> {
        self.all(ConfigTree::Tenants, "tenants")
    }

    pub fn all_channels(&self) -> Result<Vec<ChannelRecord>, Error> {
        self.all(ConfigTree::Channels, "channels")
    }

    pub fn all_forwarding_sets(&self) -> Result<Vec<ForwardingSetRecord>, Error> {
        self.all(ConfigTree::ForwardingSets, "forwarding_sets")
    }

    pub fn all_subscriptions(&self) -> Result<Vec<SubscriptionRecord>, Error> {
        self.all(ConfigTree::Subscriptions, "subscriptions")
    }

    pub fn tenants_tree(&self) -> &Tree {
        self.tree(ConfigTree::Tenants)
    }

    pub fn index_tree(&self, index: Index) -> &Tree {
        self.tree(match index {
            Index::TenantChannels => ConfigTree::TenantChannels,
            Index::ChannelForwardingSets => ConfigTree::ChannelForwardingSets,
            Index::TenantSubscriptions => ConfigTree::TenantSubscriptions,
            Index::TenantTokens => ConfigTree::TenantTokens,
        })
    }

    /// The ids of every child of `parent` in `index`, in creation order.
    pub fn child_ids(&self, index: Index, parent: &str) -> Result<Vec<String>, Error> {
        let prefix = index_key(parent, "");
        self.index_tree(index)
            .scan_prefix(&prefix)
            .keys()
            .map(|k| Ok(child_id_of(&k?, prefix.len())))
            .collect()
    }

    pub fn notifications_tree(&self) -> &Tree {
        &self.inner.notifications
    }

    /// The audit trail, newest first: see `audit`.
    pub fn audit_events_tree(&self) -> &Tree {
        &self.inner.audit_events
    }

    /// The audit trail by tenant (`tenant_id/` and the event's key).
    pub fn audit_by_tenant_tree(&self) -> &Tree {
        &self.inner.audit_by_tenant
    }

    /// The audit trail by resource (`resource_id/` and the event's key).
    pub fn audit_by_resource_tree(&self) -> &Tree {
        &self.inner.audit_by_resource
    }

    /// When each API token was last used (kept apart from the configuration: a use is no change
    /// the nodes need to hear of).
    pub fn token_last_used_tree(&self) -> &Tree {
        &self.inner.token_last_used
    }

    /// A number larger than any this store gave before, across restarts.
    pub fn next_sequence(&self) -> Result<u64, Error> {
        Ok(self.inner.db.generate_id()?)
    }

    /// A tree outside the configuration that one module owns (the notifier's ledgers, the
    /// delivery log's pages and records).
    pub fn named_tree(&self, name: &str) -> Result<Tree, Error> {
        Ok(self.inner.db.open_tree(name)?)
    }

    /// Whether the store holds a tree of that name, without creating it.
    pub fn has_tree(&self, name: &str) -> bool {
        self.inner
            .db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == name.as_bytes())
    }

    /// Removes a tree that is no longer used.
    pub fn drop_tree(&self, name: &str) -> Result<(), Error> {
        self.inner.db.drop_tree(name)?;
        Ok(())
    }
}

/// How long opening waits for the store's lock: a process that is exiting, or in tests the IO
/// threads of a handle just dropped, can hold it for a moment.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Opens the database, waiting up to [`LOCK_WAIT`] while another holder lets go of its lock.
fn open_when_free(config: &sled::Config) -> sled::Result<sled::Db> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            opened => return opened,
        }
    }
}

/// The child id of an index key `parent/child`.
pub(crate) fn child_id_of(key: &[u8], prefix_len: usize) -> String {
    String::from_utf8_lossy(&key[prefix_len.min(key.len())..]).into_owned()
}

/// The key prefix under which `parent`'s children are indexed.
pub(crate) fn index_prefix(parent: &str) -> Vec<u8> {
    index_key(parent, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Time;
    use crate::sealing::MasterKey;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("store"),
            Sealer::new(&MasterKey::generate()),
        )
        .unwrap();
        (dir, store)
    }

    fn tenant(id: &str) -> TenantRecord {
        crate::test_fixtures::tenant_record(id)
    }

    #[test]
    fn a_fresh_store_is_at_revision_zero() {
        let (_dir, store) = store();
        assert_eq!(store.revision(), 0);
    }

    #[test]
    fn each_commit_advances_the_revision_by_one_and_logs_what_it_touched() {
        let (_dir, store) = store();
        let guard = store.lock_writes();
        let mut change = Change::default();
        change.put_tenant(&tenant("tnt_a"));
        change.put_tenant(&tenant("tnt_b"));
        assert_eq!(store.commit(&guard, change).unwrap(), 1);
        let log = store.changes_between(0, store.revision()).unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].0, 1);
        let ids: Vec<_> = log[0].1.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["tnt_a", "tnt_b"]);
    }

    #[test]
    fn opening_waits_for_a_holder_that_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate();
        let path = dir.path().join("store");
        let held = Store::open(&path, Sealer::new(&key)).unwrap();
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        Store::open(&path, Sealer::new(&key)).unwrap();
        letting_go.join().unwrap();
    }

    #[test]
    fn the_revision_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate();
        {
            let store = Store::open(&dir.path().join("store"), Sealer::new(&key)).unwrap();
            let guard = store.lock_writes();
            let mut change = Change::default();
            change.put_tenant(&tenant("tnt_a"));
            store.commit(&guard, change).unwrap();
        }
        let store = Store::open(&dir.path().join("store"), Sealer::new(&key)).unwrap();
        assert_eq!(store.revision(), 1);
    }

    #[test]
    fn another_master_key_cannot_open_the_store() {
        let dir = tempfile::tempdir().unwrap();
        drop(
            Store::open(
                &dir.path().join("store"),
                Sealer::new(&MasterKey::generate()),
            )
            .unwrap(),
        );
        let again = Store::open(
            &dir.path().join("store"),
            Sealer::new(&MasterKey::generate()),
        );
        assert!(matches!(again, Err(Error::MasterKey(_))));
    }

    #[test]
    fn a_store_made_before_key_ids_opens_and_its_key_check_is_resealed() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate();
        let path = dir.path().join("store");
        {
            let store = Store::open(&path, Sealer::new(&key)).unwrap();
            let old = store.sealer().seal_first_format(KEY_CHECK_PLAINTEXT);
            store
                .tree(ConfigTree::Meta)
                .insert(KEY_CHECK_KEY, encode(&old))
                .unwrap();
            store.inner.db.flush().unwrap();
        }
        let store = Store::open(&path, Sealer::new(&key)).unwrap();
        assert!(store.reseal_key_check(&store.lock_writes()).unwrap());
        let check: crate::sealing::Sealed = decode(
            "meta",
            &store
                .tree(ConfigTree::Meta)
                .get(KEY_CHECK_KEY)
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert!(store.sealer().is_current(&check));
        assert!(!store.reseal_key_check(&store.lock_writes()).unwrap());
    }

    #[tokio::test]
    async fn a_revision_reaches_the_config_stream_only_once_it_is_durable() {
        let (_dir, store) = store();
        let mut watcher = store.watch_durable_revision();
        {
            let guard = store.lock_writes();
            let mut change = Change::default();
            change.put_tenant(&tenant("tnt_a"));
            store.commit(&guard, change).unwrap();
        }
        assert_eq!(store.revision(), 1);
        assert!(!watcher.has_changed().unwrap());
        assert_eq!(store.durable_revision(), 0);
        assert!(
            store
                .changes_between(0, store.durable_revision())
                .unwrap()
                .is_empty()
        );

        store.flush().await.unwrap();
        assert!(watcher.has_changed().unwrap());
        assert_eq!(*watcher.borrow_and_update(), 1);
        assert_eq!(store.durable_revision(), 1);
    }

    #[tokio::test]
    async fn one_flush_announces_every_revision_committed_before_it() {
        let (_dir, store) = store();
        for id in ["tnt_a", "tnt_b", "tnt_c"] {
            let guard = store.lock_writes();
            let mut change = Change::default();
            change.put_tenant(&tenant(id));
            store.commit(&guard, change).unwrap();
        }
        store.flush().await.unwrap();
        assert_eq!(store.durable_revision(), 3);
        assert_eq!(store.changes_between(0, 3).unwrap().len(), 3);
    }

    #[test]
    fn a_store_is_named_once_when_it_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate();
        let path = dir.path().join("store");
        let id = Store::open(&path, Sealer::new(&key))
            .unwrap()
            .id()
            .to_owned();
        assert!(
            id.starts_with("st_") && id.len() == "st_".len() + 26,
            "{id}"
        );
        assert_eq!(Store::open(&path, Sealer::new(&key)).unwrap().id(), id);
        let (_other_dir, other) = store();
        assert_ne!(other.id(), id);
    }

    #[test]
    fn a_store_made_before_ids_gets_one_at_its_first_open_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate();
        let path = dir.path().join("store");
        {
            let store = Store::open(&path, Sealer::new(&key)).unwrap();
            store.tree(ConfigTree::Meta).remove(STORE_ID_KEY).unwrap();
            store.inner.db.flush().unwrap();
        }
        let named = Store::open(&path, Sealer::new(&key))
            .unwrap()
            .id()
            .to_owned();
        assert!(named.starts_with("st_"));
        assert_eq!(Store::open(&path, Sealer::new(&key)).unwrap().id(), named);
    }

    #[test]
    fn child_ids_lists_only_that_parents_children() {
        let (_dir, store) = store();
        let guard = store.lock_writes();
        let mut change = Change::default();
        for (tenant_id, id) in [("tnt_a", "ch_1"), ("tnt_a", "ch_2"), ("tnt_ab", "ch_3")] {
            change.put_channel(&ChannelRecord {
                id: id.into(),
                tenant_id: tenant_id.into(),
                display_name: "x".into(),
                secret: store
                    .sealer()
                    .seal("s", Place::new(id, sealed_field::SECRET)),
                previous_secret: None,
                access_token: None,
                metadata: Default::default(),
                create_time: Time::now(),
                update_time: Time::now(),
            });
        }
        store.commit(&guard, change).unwrap();
        assert_eq!(
            store.child_ids(Index::TenantChannels, "tnt_a").unwrap(),
            ["ch_1", "ch_2"]
        );
    }
}
