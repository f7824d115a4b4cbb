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
        let status = Command::new(cargo)
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
