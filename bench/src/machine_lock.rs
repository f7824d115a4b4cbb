//! One bench at a time on a machine. Two runs side by side share its cores and spoil each
//! other's figures, and nothing in either run's output says so (it happened: both runs were
//! thrown away). The lock is an advisory `flock` on a file in the system's temporary directory,
//! so it holds across checkouts, and it goes with the process: a killed run leaves nothing to
//! clean up.

use std::{
    fs::{File, OpenOptions, TryLockError},
    path::Path,
};

use anyhow::bail;

/// Held for as long as the bench runs.
pub struct MachineLock {
    _file: File,
}

/// Takes the machine, or says which run has it.
pub fn take() -> anyhow::Result<MachineLock> {
    take_at(&std::env::temp_dir().join("hookplane-bench.lock"))
}

fn take_at(path: &Path) -> anyhow::Result<MachineLock> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(MachineLock { _file: file }),
        Err(TryLockError::WouldBlock) => bail!(
            "another hookplane-bench is running on this machine (it holds {}): two runs at once \
             share the cores and both runs' figures would be wrong",
            path.display()
        ),
        Err(TryLockError::Error(e)) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_bench_is_refused_while_the_first_holds_the_machine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookplane-bench.lock");
        let first = take_at(&path).unwrap();
        let Err(refused) = take_at(&path) else {
            panic!("a second run took the machine too");
        };
        assert!(
            refused
                .to_string()
                .contains("another hookplane-bench is running on this machine"),
            "{refused}"
        );
        drop(first);
        take_at(&path).unwrap();
    }
}
