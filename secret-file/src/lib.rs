//! A secret given as a flag's value (`--admin-token`, or its `HOOKPLANE_*` variable) or in a file
//! named by the flag's `-file` twin (`--admin-token-file`), so that it stays off command lines and
//! out of the process environment. Every secret flag of the binary resolves through
//! [`SecretFlag::resolve`], so they all behave alike: the file's content without its trailing
//! newline, an error naming both flags when both are given, an error naming the path when the
//! file cannot be read.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

/// Why a secret flag pair could not be resolved. Messages name flags and paths, never contents.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The value and the file were both given.
    #[error("give either {flag} or {file_flag}, not both")]
    Both {
        flag: &'static str,
        file_flag: &'static str,
    },
    /// The file could not be read.
    #[error("{file_flag}: cannot read {}: {source}", path.display())]
    Unreadable {
        file_flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file holds nothing but whitespace.
    #[error("{file_flag}: {} is empty", path.display())]
    Empty {
        file_flag: &'static str,
        path: PathBuf,
    },
}

/// One secret flag and its file twin, by the names a person typed (`--admin-token`,
/// `--admin-token-file`): errors name them.
#[derive(Debug, Clone, Copy)]
pub struct SecretFlag {
    pub flag: &'static str,
    pub file_flag: &'static str,
}

impl SecretFlag {
    pub const fn new(flag: &'static str, file_flag: &'static str) -> SecretFlag {
        SecretFlag { flag, file_flag }
    }

    /// The secret from `value` or from the file at `file`; `None` when neither is given. An
    /// empty or blank value counts as not given: an empty environment variable is how many
    /// deployments say "none". A file's content loses its trailing newline (what `echo` and
    /// most editors add), and surrounding whitespace, which no token or key holds.
    pub fn resolve(
        &self,
        value: Option<&str>,
        file: Option<&Path>,
    ) -> Result<Option<String>, SecretFileError> {
        let value = value.map(str::trim).filter(|v| !v.is_empty());
        match (value, file) {
            (Some(_), Some(_)) => Err(SecretFileError::Both {
                flag: self.flag,
                file_flag: self.file_flag,
            }),
            (Some(value), None) => Ok(Some(value.to_owned())),
            (None, Some(path)) => self.read(path).map(Some),
            (None, None) => Ok(None),
        }
    }

    fn read(&self, path: &Path) -> Result<String, SecretFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretFileError::Unreadable {
            file_flag: self.file_flag,
            path: path.to_owned(),
            source,
        })?;
        let secret = text.trim();
        if secret.is_empty() {
            return Err(SecretFileError::Empty {
                file_flag: self.file_flag,
                path: path.to_owned(),
            });
        }
        Ok(secret.to_owned())
    }
}

/// A secret flag's value as clap parses it: its `Debug` never shows it, so an options struct
/// that derives `Debug` cannot print it by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for SecretValue {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<SecretValue, Self::Err> {
        Ok(SecretValue(s.to_owned()))
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: SecretFlag = SecretFlag::new("--admin-token", "--admin-token-file");

    #[test]
    fn a_secret_values_debug_never_shows_it() {
        let value: SecretValue = "hp_node_visible".parse().unwrap();
        assert_eq!(format!("{value:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(value.clone())), "Some(<redacted>)");
        assert_eq!(value.expose(), "hp_node_visible");
    }

    #[test]
    fn a_file_gives_its_content_without_the_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        std::fs::write(&path, "hp_admin_from_file\n").unwrap();
        assert_eq!(
            ADMIN.resolve(None, Some(&path)).unwrap().as_deref(),
            Some("hp_admin_from_file")
        );
    }

    #[test]
    fn a_value_is_taken_as_given() {
        assert_eq!(
            ADMIN.resolve(Some("hp_admin_x"), None).unwrap().as_deref(),
            Some("hp_admin_x")
        );
    }

    #[test]
    fn neither_or_an_empty_value_is_none() {
        assert!(ADMIN.resolve(None, None).unwrap().is_none());
        assert!(ADMIN.resolve(Some("  "), None).unwrap().is_none());
    }

    #[test]
    fn both_given_is_an_error_naming_both_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "x").unwrap();
        let err = ADMIN
            .resolve(Some("y"), Some(&path))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--admin-token ") && err.contains("--admin-token-file"),
            "{err}"
        );
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.token");
        let err = ADMIN.resolve(None, Some(&path)).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("--admin-token-file"), "{err}");
    }

    #[test]
    fn an_empty_file_is_an_error_naming_its_path_not_a_missing_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.token");
        std::fs::write(&path, "\n").unwrap();
        let err = ADMIN.resolve(None, Some(&path)).unwrap_err().to_string();
        assert!(
            err.contains("is empty") && err.contains("empty.token"),
            "{err}"
        );
    }
}
