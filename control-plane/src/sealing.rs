//! Encryption of secrets at rest: XChaCha20-Poly1305 under the master key, a fresh random
//! 24-byte nonce per value, stored as standard base64 of `nonce || ciphertext`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::Error;

const NONCE_LEN: usize = 24;

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
}

fn decode_any_base64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
}

/// A secret as stored: base64 of nonce and ciphertext. Its Debug never shows the plaintext
/// (which it does not hold) nor the ciphertext (noise in logs).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Sealed(String);

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealed(..)")
    }
}

/// Seals and opens secrets under the master key.
#[derive(Clone)]
pub(crate) struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    pub fn new(key: &MasterKey) -> Sealer {
        Sealer {
            cipher: XChaCha20Poly1305::new(Key::from_slice(&key.0)),
        }
    }

    pub fn seal(&self, plaintext: &str) -> Sealed {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        // Encryption only fails for plaintexts beyond the AEAD's limit (~256 GiB); ours are short.
        let ciphertext = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext.as_bytes())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Sealed(STANDARD.encode(out))
    }

    pub fn open(&self, sealed: &Sealed) -> Result<String, Error> {
        let bytes = STANDARD.decode(&sealed.0).map_err(|_| Error::Unseal)?;
        if bytes.len() < NONCE_LEN {
            return Err(Error::Unseal);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let plaintext = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| Error::Unseal)?;
        String::from_utf8(plaintext).map_err(|_| Error::Unseal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_to_the_original() {
        let sealer = Sealer::new(&MasterKey::generate());
        let sealed = sealer.seal("line-channel-secret");
        assert_eq!(sealer.open(&sealed).unwrap(), "line-channel-secret");
    }

    #[test]
    fn sealing_twice_gives_different_ciphertexts() {
        let sealer = Sealer::new(&MasterKey::generate());
        assert_ne!(sealer.seal("same"), sealer.seal("same"));
    }

    #[test]
    fn a_sealed_value_does_not_contain_the_plaintext() {
        let sealer = Sealer::new(&MasterKey::generate());
        let sealed = sealer.seal("plain-secret-text");
        assert!(!sealed.0.contains("plain-secret-text"));
    }

    #[test]
    fn another_key_cannot_open_a_sealed_value() {
        let sealed = Sealer::new(&MasterKey::generate()).seal("secret");
        let other = Sealer::new(&MasterKey::generate());
        assert!(matches!(other.open(&sealed), Err(Error::Unseal)));
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
