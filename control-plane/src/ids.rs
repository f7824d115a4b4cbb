//! Server-made resource ids: a type prefix and a ULID.

use std::sync::Mutex;

use ulid::{Generator, Ulid};

pub(crate) const TENANT: &str = "tnt";
pub(crate) const CHANNEL: &str = "ch";
pub(crate) const FORWARDING_SET: &str = "fwd";
pub(crate) const SUBSCRIPTION: &str = "sub";
pub(crate) const ATTEMPT: &str = "att";
pub(crate) const NOTIFICATION: &str = "ntf";
/// An API token (its secret is `hp_tok_..._...`).
pub(crate) const TOKEN: &str = "tok";
/// An audit event.
pub(crate) const AUDIT_EVENT: &str = "aud";
/// A test event sent by SendTestEvent.
pub(crate) const EVENT: &str = "evt";
/// The store itself, named once when it is created (nodes remember which store they follow).
pub(crate) const STORE: &str = "st";

/// Ids are list keys, and listing must be in creation order; a plain `Ulid::new()` orders ids made
/// within one millisecond at random, so all ids come from one monotonic generator.
static GENERATOR: Mutex<Generator> = Mutex::new(Generator::new());

pub(crate) fn new_id(prefix: &str) -> String {
    let ulid = {
        let mut generator = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
        // Overflow needs 2^80 ids in one millisecond; fall back to a fresh ULID all the same.
        generator.generate().unwrap_or_else(|_| Ulid::new())
    };
    format!("{prefix}_{ulid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_type_prefix() {
        assert!(new_id(TENANT).starts_with("tnt_"));
    }

    #[test]
    fn ids_made_in_a_row_sort_in_creation_order() {
        let ids: Vec<String> = (0..1000).map(|_| new_id(CHANNEL)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }
}
