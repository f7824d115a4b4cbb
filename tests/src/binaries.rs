//! Builds `hookplane` and `hookctl` once per test process, so a test never runs a stale binary.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits inside the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn build_once() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        // Without the variables cargo sets for this test process: build scripts that read one
        // (ring reads CARGO_MANIFEST_DIR) would see it change between `cargo test`'s own build and
        // this one, and each would rebuild ring and everything above it for the other.
        for (name, _) in std::env::vars_os() {
            let name_text = name.to_string_lossy();
            if name_text.starts_with("CARGO_PKG_")
                || name_text.starts_with("CARGO_BIN_EXE_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "OUT_DIR",
                ]
                .contains(&name_text.as_ref())
            {
                build.env_remove(&name);
            }
        }
        let status = build
            .current_dir(workspace_root())
            .args(["build", "--quiet", "-p", "hookplane", "-p", "hookctl"])
            .status()
            .expect("running cargo build");
        assert!(status.success(), "cargo build of the binaries failed");
        target_dir().join("debug")
    })
}

/// Path of the freshly built `hookplane` binary.
pub fn hookplane() -> PathBuf {
    build_once().join("hookplane")
}

/// Path of the freshly built `hookctl` binary.
pub fn hookctl() -> PathBuf {
    build_once().join("hookctl")
}

/// Where the repository's files are (fixtures, receivers).
/// A path inside the workspace's target directory (where the tests keep what they make).
pub fn target_path(relative: &str) -> PathBuf {
    target_dir().join(relative)
}

pub fn repo_path(relative: &str) -> PathBuf {
    workspace_root().join(relative)
}
