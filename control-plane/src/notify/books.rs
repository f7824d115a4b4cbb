//! The notifier's sled trees, read one record at a time and written in batches that commit
//! atomically (a reminder, the failures it covers and the tenant's last-reminder time together).

use std::sync::{Arc, Mutex, MutexGuard};

use hookplane_proto::v1::Notification;
use prost::Message as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Tree;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use crate::error::Error;
use crate::store::{Store, decode};

/// The trees, in the order of `Books::trees`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Book {
    Failures = 0,
    Health,
    Tenants,
    Meta,
    Outbox,
    /// The store's `notifications` tree, which NotificationService lists.
    Notifications,
}

const NAMES: [&str; 5] = [
    "notify_failures",
    "notify_health",
    "notify_tenants",
    "notify_meta",
    "notify_outbox",
];

impl Book {
    fn name(self) -> &'static str {
        match self {
            Book::Notifications => "notifications",
            other => NAMES[other as usize],
        }
    }
}

/// Writes to apply together.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    ops: Vec<(Book, Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn put<T: Serialize>(&mut self, book: Book, key: Vec<u8>, value: &T) {
        // Records are plain structs of strings and numbers: serialising cannot fail.
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        self.ops.push((book, key, Some(bytes)));
    }

    pub fn put_notification(&mut self, key: Vec<u8>, notification: &Notification) {
        self.ops
            .push((Book::Notifications, key, Some(notification.encode_to_vec())));
    }

    pub fn remove(&mut self, book: Book, key: Vec<u8>) {
        self.ops.push((book, key, None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Handle to the trees; cheap to clone.
#[derive(Clone)]
pub(crate) struct Books {
    store: Store,
    trees: Arc<[Tree; 6]>,
    /// Serialises the notifier's read-modify-writes (reports against reminders and sweeps).
    writes: Arc<Mutex<()>>,
}

impl Books {
    pub fn open(store: &Store) -> Result<Books, Error> {
        let trees = [
            store.named_tree(NAMES[0])?,
            store.named_tree(NAMES[1])?,
            store.named_tree(NAMES[2])?,
            store.named_tree(NAMES[3])?,
            store.named_tree(NAMES[4])?,
            store.notifications_tree().clone(),
        ];
        Ok(Books {
            store: store.clone(),
            trees: Arc::new(trees),
            writes: Arc::new(Mutex::new(())),
        })
    }

    /// Makes every write so far durable: a notice and the last-reminder time must outlive a
    /// crash before the email they stand for leaves.
    pub async fn flush(&self) -> Result<(), Error> {
        self.store.flush().await
    }

    pub fn lock(&self) -> MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tree(&self, book: Book) -> &Tree {
        &self.trees[book as usize]
    }

    pub fn get<T: DeserializeOwned>(&self, book: Book, key: &[u8]) -> Result<Option<T>, Error> {
        match self.tree(book).get(key)? {
            Some(bytes) => Ok(Some(decode(book.name(), &bytes)?)),
            None => Ok(None),
        }
    }

    /// Every record under `prefix`, in key order.
    pub fn scan<T: DeserializeOwned>(
        &self,
        book: Book,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, T)>, Error> {
        self.tree(book)
            .scan_prefix(prefix)
            .map(|entry| {
                let (key, value) = entry?;
                Ok((key.to_vec(), decode(book.name(), &value)?))
            })
            .collect()
    }

    pub fn notification(&self, key: &[u8]) -> Result<Option<Notification>, Error> {
        match self.tree(Book::Notifications).get(key)? {
            Some(bytes) => {
                Notification::decode(bytes.as_ref())
                    .map(Some)
                    .map_err(|e| Error::Corrupt {
                        tree: "notifications",
                        detail: e.to_string(),
                    })
            }
            None => Ok(None),
        }
    }

    /// Applies every write of `batch`, or none.
    pub fn apply(&self, batch: Batch) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let trees: &[Tree] = self.trees.as_slice();
        let result: Result<(), TransactionError<std::convert::Infallible>> =
            trees.transaction(|views| {
                for (book, key, value) in &batch.ops {
                    let view = &views[*book as usize];
                    match value {
                        Some(value) => view.insert(key.as_slice(), value.as_slice())?,
                        None => view.remove(key.as_slice())?,
                    };
                }
                Ok::<_, ConflictableTransactionError<std::convert::Infallible>>(())
            });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(Error::Store(e)),
            Err(TransactionError::Abort(never)) => match never {},
        }
    }
}
