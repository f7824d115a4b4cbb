//! The tokens and the master key: taken from flags or the files their `-file` twins name, or read
//! from (or generated into) files of the data directory with mode 0600. A generated token is
//! never printed nor logged: the log says which file holds it.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hookplane_secret_file::SecretFlag;
use rand::RngCore;

use crate::error::Error;
use crate::options::ControlOptions;
use crate::sealing::MasterKey;

const ADMIN_TOKEN: SecretFlag = SecretFlag::new("--admin-token", "--admin-token-file");
const NODE_TOKEN: SecretFlag = SecretFlag::new("--node-token", "--node-token-file");
const PUBLISHER_TOKEN: SecretFlag = SecretFlag::new("--publisher-token", "--publisher-token-file");
const MASTER_KEY: SecretFlag = SecretFlag::new("--master-key", "--master-key-file");
const PREVIOUS_MASTER_KEY: SecretFlag =
    SecretFlag::new("--previous-master-key", "--previous-master-key-file");

/// Every credential the control plane needs, resolved.
pub(crate) struct Credentials {
    pub admin_token: String,
    pub node_token: String,
    pub publisher_token: String,
    pub master_key: MasterKey,
    /// The key a rotation moves away from (`--previous-master-key`).
    pub previous_master_key: Option<MasterKey>,
}

impl Credentials {
    /// Creates the data directory if missing, then resolves each credential: flag first, else the
    /// file, else a new one written to the file (tokens are printed once, on that start).
    pub fn resolve(opts: &ControlOptions) -> Result<Credentials, Error> {
        let dir = opts.data_dir.as_path();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(Error::io(dir))?;
        let admin = ADMIN_TOKEN.resolve(
            opts.admin_token.as_deref(),
            opts.admin_token_file.as_deref(),
        )?;
        let node =
            NODE_TOKEN.resolve(opts.node_token.as_deref(), opts.node_token_file.as_deref())?;
        let publisher = PUBLISHER_TOKEN.resolve(
            opts.publisher_token.as_deref(),
            opts.publisher_token_file.as_deref(),
        )?;
        let master =
            MASTER_KEY.resolve(opts.master_key.as_deref(), opts.master_key_file.as_deref())?;
        let previous = PREVIOUS_MASTER_KEY.resolve(
            opts.previous_master_key.as_deref(),
            opts.previous_master_key_file.as_deref(),
        )?;
        Ok(Credentials {
            admin_token: token(admin, dir, "admin", "hp_admin_")?,
            node_token: token(node, dir, "node", "hp_node_")?,
            publisher_token: token(publisher, dir, "publisher", "hp_pub_")?,
            master_key: master_key(master, dir)?,
            previous_master_key: previous
                .map(|key| {
                    MasterKey::parse(&key)
                        .map_err(|e| Error::MasterKey(format!("--previous-master-key: {e}")))
                })
                .transpose()?,
        })
    }
}

/// The token given (flag or file), else the one stored in the data directory, else a new one
/// stored there.
fn token(given: Option<String>, dir: &Path, role: &str, prefix: &str) -> Result<String, Error> {
    if let Some(value) = given {
        return Ok(value);
    }
    let path = dir.join(format!("{role}.token"));
    if let Some(stored) = read_trimmed(&path)? {
        return Ok(stored);
    }
    let token = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random_32()));
    write_private(&path, &token)?;
    // Where, never what: logs are collected and kept far more widely than the data directory.
    tracing::info!(
        path = %path.display(),
        "{role} token generated and stored in its file (mode 0600)"
    );
    Ok(token)
}

fn master_key(given: Option<String>, dir: &Path) -> Result<MasterKey, Error> {
    if let Some(value) = given {
        return MasterKey::parse(&value);
    }
    let path = dir.join("master.key");
    if let Some(stored) = read_trimmed(&path)? {
        return MasterKey::parse(&stored)
            .map_err(|e| Error::MasterKey(format!("{}: {e}", path.display())));
    }
    let key = MasterKey::generate();
    write_private(&path, &key.to_base64())?;
    tracing::info!(
        path = %path.display(),
        key_id = key.id(),
        "master key generated and stored in its file (mode 0600)"
    );
    Ok(key)
}

fn random_32() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A secret file of the data directory, if it holds one. One others can read is used, with a
/// warning: refusing would stop a running service over a mode someone else set.
fn read_trimmed(path: &Path) -> Result<Option<String>, Error> {
    match fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            if let Ok(meta) = fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "a secret file is readable by others than its owner; chmod 600 it"
                );
            }
            Ok(Some(text.trim().to_owned()))
        }
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path)(e)),
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(Error::io(path))?;
    // `mode` applies to a file it creates only: an empty file left there with a looser mode is
    // made private before the secret goes in.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(Error::io(path))?;
    file.write_all(format!("{contents}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(Error::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_carry_their_role_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let creds = Credentials::resolve(&ControlOptions::with_data_dir(dir.path())).unwrap();
        assert!(creds.admin_token.starts_with("hp_admin_"));
        assert!(creds.node_token.starts_with("hp_node_"));
        assert!(creds.publisher_token.starts_with("hp_pub_"));
        // 32 bytes in URL-safe base64 without padding are 43 characters.
        assert_eq!(creds.admin_token.len(), "hp_admin_".len() + 43);
    }

    #[test]
    fn generated_files_are_readable_by_the_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        Credentials::resolve(&ControlOptions::with_data_dir(dir.path())).unwrap();
        for file in ["admin.token", "node.token", "publisher.token", "master.key"] {
            let mode = fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }

    #[test]
    fn an_empty_token_file_readable_by_others_is_made_private_before_the_token_goes_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        fs::write(&path, "").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let creds = Credentials::resolve(&ControlOptions::with_data_dir(dir.path())).unwrap();
        assert!(creds.admin_token.starts_with("hp_admin_"));
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_second_start_reads_the_same_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let opts = ControlOptions::with_data_dir(dir.path());
        let first = Credentials::resolve(&opts).unwrap();
        let second = Credentials::resolve(&opts).unwrap();
        assert_eq!(first.admin_token, second.admin_token);
        assert_eq!(first.node_token, second.node_token);
        assert_eq!(first.master_key.to_base64(), second.master_key.to_base64());
    }

    #[test]
    fn a_flag_wins_over_the_file_and_writes_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = ControlOptions::with_data_dir(dir.path());
        opts.admin_token = Some("chosen".into());
        let creds = Credentials::resolve(&opts).unwrap();
        assert_eq!(creds.admin_token, "chosen");
        assert!(!dir.path().join("admin.token").exists());
    }

    #[test]
    fn an_empty_flag_counts_as_unset() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = ControlOptions::with_data_dir(dir.path());
        opts.node_token = Some(String::new());
        let creds = Credentials::resolve(&opts).unwrap();
        assert!(creds.node_token.starts_with("hp_node_"));
    }

    #[test]
    fn tokens_and_keys_are_read_from_the_files_their_file_flags_name() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = tempfile::tempdir().unwrap();
        let file = |name: &str, content: &str| {
            let path = secrets.path().join(name);
            fs::write(&path, content).unwrap();
            Some(path)
        };
        let old = MasterKey::generate();
        let new = MasterKey::generate();
        let mut opts = ControlOptions::with_data_dir(dir.path());
        opts.admin_token_file = file("admin", "hp_admin_from_file\n");
        opts.node_token_file = file("node", "hp_node_from_file\n");
        opts.publisher_token_file = file("publisher", "hp_pub_from_file");
        opts.master_key_file = file("master", &format!("{}\n", new.to_base64()));
        opts.previous_master_key_file = file("previous", &old.to_base64());
        let creds = Credentials::resolve(&opts).unwrap();
        assert_eq!(creds.admin_token, "hp_admin_from_file");
        assert_eq!(creds.node_token, "hp_node_from_file");
        assert_eq!(creds.publisher_token, "hp_pub_from_file");
        assert_eq!(creds.master_key.id(), new.id());
        assert_eq!(creds.previous_master_key.unwrap().id(), old.id());
        for generated in ["admin.token", "node.token", "publisher.token", "master.key"] {
            assert!(!dir.path().join(generated).exists(), "{generated}");
        }
    }

    #[test]
    fn a_token_and_its_file_together_are_an_error_naming_both_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin");
        fs::write(&file, "x").unwrap();
        let mut opts = ControlOptions::with_data_dir(dir.path());
        opts.admin_token = Some("y".into());
        opts.admin_token_file = Some(file);
        let err = Credentials::resolve(&opts).err().unwrap().to_string();
        assert!(
            err.contains("--admin-token ") && err.contains("--admin-token-file"),
            "{err}"
        );
    }

    #[test]
    fn an_unreadable_master_key_file_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such.key");
        let mut opts = ControlOptions::with_data_dir(dir.path());
        opts.master_key_file = Some(missing.clone());
        let err = Credentials::resolve(&opts).err().unwrap().to_string();
        assert!(err.contains(&missing.display().to_string()), "{err}");
    }

    #[test]
    fn a_malformed_master_key_flag_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = ControlOptions::with_data_dir(dir.path());
        opts.master_key = Some("too-short".into());
        assert!(matches!(
            Credentials::resolve(&opts),
            Err(Error::MasterKey(_))
        ));
    }
}
