//! The last applied configuration on the node's disk, so a node that starts while the control
//! plane is away serves its channels from the revision it last had instead of answering 503 to
//! everything (static stability). The file holds channel secrets and access tokens: it is sealed
//! (ChaCha20-Poly1305) with a key derived from the node token, or the `--config-cache-key` given,
//! and written 0600 by rename, so a crash leaves the old file or the new one.

use std::path::{Path, PathBuf};

use chacha20poly1305::{
    ChaCha20Poly1305, KeyInit as _, Nonce,
    aead::{Aead as _, Payload},
};
use hookplane_proto::v1::ConfigUpdate;
use prost::Message as _;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use crate::Error;

const FILE: &str = "config.sealed";
/// Bound to every sealed file, so a sealed value from elsewhere does not open as a config.
const CONTEXT: &[u8] = b"hookplane node config cache v1";
const NONCE_LEN: usize = 12;

pub struct ConfigCache {
    path: PathBuf,
    cipher: ChaCha20Poly1305,
}

impl ConfigCache {
    /// The cache in `dir`, sealed with `key` (32 bytes, hex or base64) or, without one, a key
    /// derived from `node_token`.
    pub fn new(dir: &Path, key: Option<&str>, node_token: &str) -> Result<Self, Error> {
        let key: [u8; 32] = match key {
            Some(text) => parse_key(text)?,
            None => Sha256::new()
                .chain_update(CONTEXT)
                .chain_update(node_token.as_bytes())
                .finalize()
                .into(),
        };
        Ok(Self {
            path: dir.join(FILE),
            cipher: ChaCha20Poly1305::new(&key.into()),
        })
    }

    /// Where the config is saved.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The config last saved, if there is one that opens with this key.
    pub fn load(&self) -> Result<Option<ConfigUpdate>, Error> {
        let sealed = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if sealed.len() < NONCE_LEN {
            return Err(Error::InvalidSetting(format!(
                "{} is too short to be a sealed config",
                self.path.display()
            )));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: CONTEXT,
                },
            )
            .map_err(|_| {
                Error::InvalidSetting(format!(
                    "{} does not open with this node's key (another node token or \
                     --config-cache-key?)",
                    self.path.display()
                ))
            })?;
        Ok(Some(ConfigUpdate::decode(plain.as_slice())?))
    }

    /// Saves `update` (a full snapshot) in place of what was saved.
    pub fn save(&self, update: &ConfigUpdate) -> Result<(), Error> {
        use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &update.encode_to_vec(),
                    aad: CONTEXT,
                },
            )
            .map_err(|_| Error::InvalidSetting("sealing the config cache failed".into()))?;
        let temporary = self.path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(&nonce)?;
        file.write_all(&ciphertext)?;
        file.sync_data()?;
        std::fs::rename(&temporary, &self.path)?;
        Ok(())
    }
}

fn parse_key(text: &str) -> Result<[u8; 32], Error> {
    use base64::Engine as _;
    let bytes = hex::decode(text.trim())
        .ok()
        .or_else(|| {
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .ok()
        })
        .ok_or_else(|| Error::invalid("config_cache_key", "must be hex or base64"))?;
    bytes
        .try_into()
        .map_err(|_| Error::invalid("config_cache_key", "must be 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_config_opens_with_the_same_key_and_not_with_another() {
        let dir = tempfile::tempdir().unwrap();
        let update = ConfigUpdate {
            revision: 7,
            snapshot: true,
            publisher_token_sha256: "abc".into(),
            ..ConfigUpdate::default()
        };
        ConfigCache::new(dir.path(), None, "node-token-1")
            .unwrap()
            .save(&update)
            .unwrap();
        let same = ConfigCache::new(dir.path(), None, "node-token-1").unwrap();
        assert_eq!(same.load().unwrap(), Some(update));
        let other = ConfigCache::new(dir.path(), None, "node-token-2").unwrap();
        assert!(other.load().is_err());
        let raw = std::fs::read(dir.path().join(FILE)).unwrap();
        assert!(!raw.windows(3).any(|w| w == b"abc"), "stored in clear");
    }

    #[test]
    fn no_file_is_no_config() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ConfigCache::new(dir.path(), Some(&"11".repeat(32)), "t").unwrap();
        assert_eq!(cache.load().unwrap(), None);
    }
}
