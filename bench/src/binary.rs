//! The release `hookplane` binary, rebuilt first so a run never measures stale code (cargo makes
//! that a no-op when nothing changed), and the workspace paths the scenarios read.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, ensure};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ sits inside the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Builds `hookplane` with the release profile and returns the path of the binary.
pub fn hookplane_release() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building the release hookplane binary (cargo build --release -p hookplane)");
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--release", "--quiet", "-p", "hookplane"])
        .status()
        .context("running cargo build")?;
    ensure!(
        status.success(),
        "cargo build --release -p hookplane failed"
    );
    let path = target_dir().join("release").join("hookplane");
    ensure!(
        path.exists(),
        "{} is missing after the build",
        path.display()
    );
    Ok(path)
}

/// This very binary, which also is the baseline forwarder.
pub fn myself() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("locating the bench binary")
}

/// A LINE fixture's bytes, e.g. `fixture("text.json")`.
pub fn fixture(name: &str) -> anyhow::Result<Vec<u8>> {
    let path = workspace_root().join("tests/fixtures/line").join(name);
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}
