//! Stable key-order pagination over sled trees: a page token is the opaque encoding of the last
//! key returned, so items added later appear on later pages and none is skipped or repeated.

use std::ops::Bound;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sled::IVec;

use crate::error::Error;

const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;

/// A validated page request within one listing (one key prefix).
#[derive(Debug, Clone)]
pub(crate) struct Page {
    size: usize,
    prefix: Vec<u8>,
    after: Option<Vec<u8>>,
}

/// One page of raw entries and the token for the next (empty when this is the last page).
pub(crate) struct Entries {
    pub items: Vec<(IVec, IVec)>,
    pub next_page_token: String,
}

impl Page {
    /// `page_size` 0 means 50, above 1000 clamps to 1000, negative is an error; the token must
    /// come from the same listing.
    pub fn new(page_size: i32, page_token: &str, prefix: &[u8]) -> Result<Page, Error> {
        let size = match usize::try_from(page_size) {
            Err(_) => return Err(Error::invalid("page_size", "must not be negative")),
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) => n.min(MAX_PAGE_SIZE),
        };
        let after = if page_token.is_empty() {
            None
        } else {
            let key = URL_SAFE_NO_PAD
                .decode(page_token)
                .map_err(|_| Error::invalid("page_token", "malformed"))?;
            if !key.starts_with(prefix) {
                return Err(Error::invalid(
                    "page_token",
                    "does not belong to this listing",
                ));
            }
            Some(key)
        };
        Ok(Page {
            size,
            prefix: prefix.to_vec(),
            after,
        })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// The key the token names, for a listing that is not in one tree's key order.
    pub fn after(&self) -> Option<&[u8]> {
        self.after.as_deref()
    }

    /// Reads the page from `tree` in key order.
    pub fn read(&self, tree: &sled::Tree) -> Result<Entries, Error> {
        let start = match &self.after {
            Some(key) => Bound::Excluded(key.clone()),
            None => Bound::Included(self.prefix.clone()),
        };
        let mut items = Vec::with_capacity(self.size.min(64));
        let mut more = false;
        for entry in tree.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (key, value) = entry?;
            if !key.starts_with(&self.prefix) {
                break;
            }
            if items.len() == self.size {
                more = true;
                break;
            }
            items.push((key, value));
        }
        let next_page_token = match items.last() {
            Some((key, _)) if more => token(key),
            _ => String::new(),
        };
        Ok(Entries {
            items,
            next_page_token,
        })
    }
}

/// The page token naming `key`, the last one of a page.
pub(crate) fn token(key: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with(keys: &[&str]) -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        for k in keys {
            tree.insert(k.as_bytes(), b"").unwrap();
        }
        tree
    }

    fn keys(entries: &Entries) -> Vec<String> {
        entries
            .items
            .iter()
            .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn a_negative_page_size_is_rejected() {
        let err = Page::new(-1, "", b"").unwrap_err();
        assert_eq!(err.to_string(), "page_size: must not be negative");
    }

    #[test]
    fn a_zero_page_size_means_fifty() {
        assert_eq!(Page::new(0, "", b"").unwrap().size, 50);
    }

    #[test]
    fn a_page_size_over_1000_clamps_to_1000() {
        assert_eq!(Page::new(5000, "", b"").unwrap().size, 1000);
    }

    #[test]
    fn a_garbled_page_token_is_rejected() {
        let err = Page::new(10, "!!!", b"").unwrap_err();
        assert_eq!(err.to_string(), "page_token: malformed");
    }

    #[test]
    fn a_token_from_another_listing_is_rejected() {
        let token = URL_SAFE_NO_PAD.encode(b"b/1");
        assert!(Page::new(10, &token, b"a/").is_err());
    }

    #[test]
    fn listing_stays_within_the_prefix() {
        let tree = tree_with(&["a/1", "a/2", "b/1"]);
        let page = Page::new(10, "", b"a/").unwrap().read(&tree).unwrap();
        assert_eq!(keys(&page), ["a/1", "a/2"]);
        assert!(page.next_page_token.is_empty());
    }

    #[test]
    fn items_added_after_a_page_was_read_appear_on_a_later_page() {
        let tree = tree_with(&["k1", "k2", "k3"]);
        let first = Page::new(2, "", b"").unwrap().read(&tree).unwrap();
        assert_eq!(keys(&first), ["k1", "k2"]);
        tree.insert(b"k4", b"").unwrap();
        let second = Page::new(2, &first.next_page_token, b"")
            .unwrap()
            .read(&tree)
            .unwrap();
        assert_eq!(keys(&second), ["k3", "k4"]);
    }

    #[test]
    fn an_item_deleted_between_pages_does_not_shift_the_next_page() {
        let tree = tree_with(&["k1", "k2", "k3", "k4"]);
        let first = Page::new(2, "", b"").unwrap().read(&tree).unwrap();
        tree.remove(b"k2").unwrap();
        let second = Page::new(2, &first.next_page_token, b"")
            .unwrap()
            .read(&tree)
            .unwrap();
        assert_eq!(keys(&second), ["k3", "k4"]);
    }
}
