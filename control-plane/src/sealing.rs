//! Encryption of secrets at rest: XChaCha20-Poly1305 under the master key, a fresh random
//! 24-byte nonce per value.
//!
//! A value is stored as `v2:<key id>:<base64 of nonce || ciphertext>`. The key id is a short
//! fingerprint of the master key that sealed it, so that during a rotation (`--master-key` new,
//! `--previous-master-key` old) each value opens under its own key, and a value under a key this
//! process was not given fails naming the key id. The value's place (`<record id>/<field>`) is
//! the AEAD's associated data: a sealed value copied onto another record or field does not open.
//!
//! Stores written before key ids hold the first format, `<base64 of nonce || ciphertext>` with no
//! associated data (base64 never holds `:`, so the two cannot be confused). Those still open, under
//! either key, and the re-seal at start (`resealing.rs`) rewrites them in the current format.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::Error;

const NONCE_LEN: usize = 24;
/// The prefix of the current format; the first format has none.
const V2: &str = "v2:";
/// Hashed with the key into its id, so the id is no plain hash of the key used elsewhere.
const KEY_ID_CONTEXT: &[u8] = b"hookplane master key id\0";

/// The 32-byte master key. Never printed.
#[derive(Clone)]
pub(crate) struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn generate() -> MasterKey {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        MasterKey(key)
    }

    /// Accepts 64 hex characters or base64 (standard or URL-safe, padded or not) of 32 bytes.
    pub fn parse(text: &str) -> Result<MasterKey, Error> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| Error::MasterKey("invalid hex".into()))?
        } else {
            decode_any_base64(text).ok_or_else(|| {
                Error::MasterKey("expected 32 bytes as base64 or 64 hex characters".into())
            })?
        };
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            Error::MasterKey(format!("expected 32 bytes, got {}", b.len()))
        })?;
        Ok(MasterKey(key))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The key's id: 8 hex characters of a keyed-context SHA-256 of it. Safe to log and to store
    /// beside each value; it tells keys apart, it does not help to guess one.
    pub fn id(&self) -> String {
        let digest = Sha256::new()
            .chain_update(KEY_ID_CONTEXT)
            .chain_update(self.0)
            .finalize();
        hex::encode(&digest[..4])
    }
}

fn decode_any_base64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
}

/// A secret as stored (see the module's comment for the formats). Its Debug never shows the
/// plaintext (which it does not hold) nor the ciphertext (noise in logs).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Sealed(String);

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealed(..)")
    }
}

impl Sealed {
    /// The id of the key that sealed it; `None` for a value of the first format, which has none.
    pub fn key_id(&self) -> Option<&str> {
        let rest = self.0.strip_prefix(V2)?;
        rest.split_once(':').map(|(id, _)| id)
    }
}

/// Where a sealed value lives: its record's id and its field. Sealed into the value as
/// associated data, so the value opens only there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Place<'a> {
    pub record: &'a str,
    pub field: &'static str,
}

impl<'a> Place<'a> {
    pub fn new(record: &'a str, field: &'static str) -> Place<'a> {
        Place { record, field }
    }

    fn associated_data(&self) -> Vec<u8> {
        format!("{}/{}", self.record, self.field).into_bytes()
    }
}

/// One master key ready to use, with its id.
#[derive(Clone)]
struct Keyed {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl Keyed {
    fn new(key: &MasterKey) -> Keyed {
        Keyed {
            id: key.id(),
            cipher: XChaCha20Poly1305::new(Key::from_slice(&key.0)),
        }
    }

    fn decrypt(&self, bytes: &[u8], aad: &[u8]) -> Result<String, Error> {
        if bytes.len() < NONCE_LEN {
            return Err(Error::Unseal);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let plaintext = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| Error::Unseal)?;
        String::from_utf8(plaintext).map_err(|_| Error::Unseal)
    }
}

/// Seals under the master key and opens under it or, during a rotation, the previous one.
#[derive(Clone)]
pub(crate) struct Sealer {
    current: Keyed,
    previous: Option<Keyed>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.current.id)
            .field("previous_key_id", &self.previous.as_ref().map(|k| &k.id))
            .finish()
    }
}

impl Sealer {
    pub fn new(key: &MasterKey) -> Sealer {
        Sealer {
            current: Keyed::new(key),
            previous: None,
        }
    }

    /// Also opens values sealed under `previous` (a rotation: `--previous-master-key`).
    pub fn with_previous(mut self, previous: &MasterKey) -> Sealer {
        let previous = Keyed::new(previous);
        // The same key given twice is no rotation.
        if previous.id != self.current.id {
            self.previous = Some(previous);
        }
        self
    }

    /// The id of the key new values are sealed under.
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// The id of the previous key, during a rotation.
    pub fn previous_key_id(&self) -> Option<&str> {
        self.previous.as_ref().map(|k| k.id.as_str())
    }

    pub fn seal(&self, plaintext: &str, at: Place<'_>) -> Sealed {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = at.associated_data();
        // Encryption only fails for plaintexts beyond the AEAD's limit (~256 GiB); ours are short.
        let ciphertext = self
            .current
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Sealed(format!("{V2}{}:{}", self.current.id, STANDARD.encode(out)))
    }

    /// The plaintext of a value sealed at `at`. A value sealed elsewhere, or under a key this
    /// process does not hold, does not open; the latter's error names the key id.
    pub fn open(&self, sealed: &Sealed, at: Place<'_>) -> Result<String, Error> {
        match sealed.0.strip_prefix(V2) {
            Some(rest) => {
                let (key_id, body) = rest.split_once(':').ok_or(Error::Unseal)?;
                let key = self.key(key_id).ok_or_else(|| Error::UnknownMasterKey {
                    key_id: key_id.to_owned(),
                })?;
                let bytes = STANDARD.decode(body).map_err(|_| Error::Unseal)?;
                key.decrypt(&bytes, &at.associated_data())
            }
            // The first format: no key id, no place. Whichever key opens it sealed it.
            None => {
                let bytes = STANDARD.decode(&sealed.0).map_err(|_| Error::Unseal)?;
                self.current
                    .decrypt(&bytes, b"")
                    .or_else(|e| match &self.previous {
                        Some(previous) => previous.decrypt(&bytes, b""),
                        None => Err(e),
                    })
            }
        }
    }

    /// Whether `sealed` is in the current format under the current key, as every value is once
    /// a re-seal is done.
    pub fn is_current(&self, sealed: &Sealed) -> bool {
        sealed.key_id() == Some(self.current.id.as_str())
    }

    /// `sealed` (from `from`) sealed again under the current key at `to`: a re-seal in place when
    /// both are the same, or a move (a rotated secret becoming the previous one).
    pub fn reseal(&self, sealed: &Sealed, from: Place<'_>, to: Place<'_>) -> Result<Sealed, Error> {
        Ok(self.seal(&self.open(sealed, from)?, to))
    }

    fn key(&self, id: &str) -> Option<&Keyed> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
    }
}

#[cfg(test)]
impl Sealer {
    /// A value sealed the way stores wrote them before key ids: no prefix, no associated data.
    pub fn seal_first_format(&self, plaintext: &str) -> Sealed {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .current
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext.as_bytes())
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        Sealed(STANDARD.encode(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: Place<'static> = Place {
        record: "ch_1",
        field: "secret",
    };

    #[test]
    fn a_sealed_value_opens_to_the_original() {
        let sealer = Sealer::new(&MasterKey::generate());
        let sealed = sealer.seal("line-channel-secret", HERE);
        assert_eq!(sealer.open(&sealed, HERE).unwrap(), "line-channel-secret");
    }

    #[test]
    fn sealing_twice_gives_different_ciphertexts() {
        let sealer = Sealer::new(&MasterKey::generate());
        assert_ne!(sealer.seal("same", HERE), sealer.seal("same", HERE));
    }

    #[test]
    fn a_sealed_value_does_not_contain_the_plaintext() {
        let sealer = Sealer::new(&MasterKey::generate());
        let sealed = sealer.seal("plain-secret-text", HERE);
        assert!(!sealed.0.contains("plain-secret-text"));
    }

    #[test]
    fn another_key_cannot_open_a_sealed_value() {
        let sealed = Sealer::new(&MasterKey::generate()).seal("secret", HERE);
        let other = Sealer::new(&MasterKey::generate());
        assert!(matches!(
            other.open(&sealed, HERE),
            Err(Error::UnknownMasterKey { .. })
        ));
    }

    #[test]
    fn a_value_moved_to_another_record_does_not_open() {
        let sealer = Sealer::new(&MasterKey::generate());
        let sealed = sealer.seal("secret", Place::new("sub_a", "secret"));
        assert!(matches!(
            sealer.open(&sealed, Place::new("sub_b", "secret")),
            Err(Error::Unseal)
        ));
    }

    #[test]
    fn a_value_moved_to_another_field_of_its_record_does_not_open() {
        let sealer = Sealer::new(&MasterKey::generate());
        let sealed = sealer.seal("token", Place::new("ch_1", "access_token"));
        assert!(matches!(
            sealer.open(&sealed, Place::new("ch_1", "secret")),
            Err(Error::Unseal)
        ));
    }

    #[test]
    fn a_sealed_value_names_the_id_of_its_key() {
        let key = MasterKey::generate();
        let sealed = Sealer::new(&key).seal("secret", HERE);
        assert_eq!(sealed.key_id(), Some(key.id().as_str()));
        assert_eq!(key.id().len(), 8);
        assert_ne!(key.id(), MasterKey::generate().id());
        assert!(!sealed.0.contains(&key.to_base64()));
    }

    #[test]
    fn a_value_under_an_unknown_key_fails_naming_the_key_id_and_not_the_key() {
        let key = MasterKey::generate();
        let sealed = Sealer::new(&key).seal("secret", HERE);
        let err = Sealer::new(&MasterKey::generate())
            .open(&sealed, HERE)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&key.id()), "{err}");
        assert!(!err.contains(&key.to_base64()), "{err}");
    }

    #[test]
    fn a_value_of_the_first_format_still_opens_and_is_not_current() {
        let sealer = Sealer::new(&MasterKey::generate());
        let old = sealer.seal_first_format("from-before-key-ids");
        assert_eq!(old.key_id(), None);
        assert_eq!(sealer.open(&old, HERE).unwrap(), "from-before-key-ids");
        assert!(!sealer.is_current(&old));
        let resealed = sealer.reseal(&old, HERE, HERE).unwrap();
        assert!(sealer.is_current(&resealed));
        assert_eq!(sealer.open(&resealed, HERE).unwrap(), "from-before-key-ids");
    }

    #[test]
    fn during_a_rotation_values_of_both_keys_open_and_new_ones_use_the_new_key() {
        let old_key = MasterKey::generate();
        let new_key = MasterKey::generate();
        let old = Sealer::new(&old_key);
        let under_old = old.seal("old-secret", HERE);
        let first_format_under_old = old.seal_first_format("older-secret");

        let rotating = Sealer::new(&new_key).with_previous(&old_key);
        assert_eq!(rotating.open(&under_old, HERE).unwrap(), "old-secret");
        assert_eq!(
            rotating.open(&first_format_under_old, HERE).unwrap(),
            "older-secret"
        );
        assert!(!rotating.is_current(&under_old));
        let under_new = rotating.seal("new-secret", HERE);
        assert_eq!(under_new.key_id(), Some(new_key.id().as_str()));

        // Once re-sealed, the new key alone opens everything.
        let resealed = rotating.reseal(&under_old, HERE, HERE).unwrap();
        let after = Sealer::new(&new_key);
        assert_eq!(after.open(&resealed, HERE).unwrap(), "old-secret");
        assert_eq!(after.open(&under_new, HERE).unwrap(), "new-secret");
        assert!(matches!(
            after.open(&under_old, HERE),
            Err(Error::UnknownMasterKey { key_id }) if key_id == old_key.id()
        ));
    }

    #[test]
    fn a_reseal_can_move_a_value_to_another_field() {
        let sealer = Sealer::new(&MasterKey::generate());
        let current = Place::new("sub_1", "secret");
        let previous = Place::new("sub_1", "previous_secret");
        let sealed = sealer.seal("whsec_x", current);
        let moved = sealer.reseal(&sealed, current, previous).unwrap();
        assert_eq!(sealer.open(&moved, previous).unwrap(), "whsec_x");
        assert!(sealer.open(&moved, current).is_err());
    }

    #[test]
    fn master_key_parses_from_hex_and_base64() {
        let hex_key = "00".repeat(32);
        assert!(MasterKey::parse(&hex_key).is_ok());
        let b64 = MasterKey::generate().to_base64();
        assert!(MasterKey::parse(&b64).is_ok());
    }

    #[test]
    fn master_key_of_the_wrong_length_is_rejected() {
        assert!(MasterKey::parse("c2hvcnQ=").is_err());
    }
}
