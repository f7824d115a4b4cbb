//! Where the admin token comes from: the flag or its environment variable, else the file the
//! control plane writes into its data directory on first start.

use std::{fs, io, path::Path};

use anyhow::{Context, bail};

/// Relative to the working directory, the control plane's default data directory.
pub const DEFAULT_TOKEN_FILE: &str = "hookplane-data/admin.token";

pub fn resolve(flag: Option<&str>, file: &Path) -> anyhow::Result<String> {
    if let Some(token) = flag.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(token.to_owned());
    }
    match fs::read_to_string(file) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Ok(_) => bail!(
            "{} is empty; pass --token or set HOOKPLANE_ADMIN_TOKEN",
            file.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
            "no admin token: pass --token TOKEN, set HOOKPLANE_ADMIN_TOKEN, or run hookctl in \
             the directory that holds {DEFAULT_TOKEN_FILE}"
        ),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin.token");
        fs::write(&file, "from-file").unwrap();
        assert_eq!(resolve(Some("from-flag"), &file).unwrap(), "from-flag");
    }

    #[test]
    fn the_file_is_read_when_no_flag_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin.token");
        fs::write(&file, "from-file\n").unwrap();
        assert_eq!(resolve(None, &file).unwrap(), "from-file");
    }

    #[test]
    fn an_empty_flag_counts_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin.token");
        fs::write(&file, "from-file").unwrap();
        assert_eq!(resolve(Some(""), &file).unwrap(), "from-file");
    }

    #[test]
    fn without_flag_or_file_the_error_says_how_to_pass_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(None, &dir.path().join("missing")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--token") && text.contains("HOOKPLANE_ADMIN_TOKEN"));
    }
}
