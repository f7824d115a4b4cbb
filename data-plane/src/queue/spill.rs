//! A lane's waiting jobs beyond the few it keeps in memory: on disk, handed back in time order.
//!
//! A target that is down for a day at a few hundred requests a second has millions of jobs
//! waiting. The schedule keeps a window of each lane's earliest jobs in memory (`spool.rs`); the
//! rest are here, as (due time, sequence number, delivery id) entries in a file of the lane's
//! own. Entries gather in memory, sorted, and are written out as a sorted run when enough have
//! gathered; each run keeps its first entries in memory, and a heap of the runs' first entries
//! says which entry is next. So a lane costs memory in proportion to its runs, not its jobs, and
//! handing out the next entry is a pop and, now and then, one read of a block of a run.
//!
//! The file is not durable and need not be: the jobs' records are in the journal, and at start
//! the schedule is rebuilt from them. When everything written has been handed back the file is
//! emptied; a file mostly handed back is rewritten with what is left, so a lane that spills and
//! refills for days does not grow it without end.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, VecDeque},
    fs::{File, OpenOptions},
    io,
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::PathBuf,
};

use crate::Error;

/// A place in time order: (unix ms, tie-breaking sequence number); unique within a spool.
pub(super) type Slot = (u64, u64);

/// Entries gathered before they are written out as a run, at most (the schedule asks for
/// shorter runs when many lanes spill, so what they gather stays bounded across lanes).
pub(super) const RUN_LEN: usize = 4096;
/// Entries of a run kept in memory at a time.
const BLOCK_LEN: usize = 64;
/// Bytes read from a run at a time: room for a block of entries with ids of 100 bytes.
const BLOCK_BYTES: usize = BLOCK_LEN * 128;
/// A file is rewritten once this much of it was handed back and that is most of it.
const REWRITE_AFTER: u64 = 64 << 20;
/// Bytes written at a time when a file is rewritten.
const REWRITE_BUFFER: usize = 256 << 10;
/// Bytes before an entry's id: due ms, sequence number, id length.
const ENTRY_HEADER: usize = 18;

struct Run {
    /// Its next entries, in order.
    head: VecDeque<(Slot, Box<str>)>,
    /// Where its entries not yet in `head` begin in the file, and where they end.
    next: u64,
    end: u64,
}

pub(super) struct Spill {
    path: PathBuf,
    file: Option<File>,
    /// Bytes written to the file.
    written: u64,
    /// Bytes of the file whose entries were handed back.
    consumed: u64,
    gathered: BTreeMap<Slot, Box<str>>,
    runs: Vec<Option<Run>>,
    /// Each run's first entry's slot, earliest on top.
    firsts: BinaryHeap<Reverse<(Slot, usize)>>,
    len: usize,
    /// [`REWRITE_AFTER`], smaller in tests.
    rewrite_after: u64,
}

fn encode(slot: Slot, id: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&slot.0.to_le_bytes());
    out.extend_from_slice(&slot.1.to_le_bytes());
    // Delivery ids are short; a longer one is cut (the journal keys it in full).
    let id = &id.as_bytes()[..id.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(id.len() as u16).to_le_bytes());
    out.extend_from_slice(id);
}

/// The entries at the start of `bytes` (whole ones only) and the bytes they take.
fn decode(bytes: &[u8], max: usize) -> (Vec<(Slot, Box<str>)>, usize) {
    let mut entries = Vec::new();
    let mut at = 0;
    while entries.len() < max {
        let Some(header) = bytes.get(at..at + ENTRY_HEADER) else {
            break;
        };
        let due = u64::from_le_bytes(header[0..8].try_into().unwrap_or_default());
        let seq = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        let len = usize::from(u16::from_le_bytes([header[16], header[17]]));
        let Some(id) = bytes.get(at + ENTRY_HEADER..at + ENTRY_HEADER + len) else {
            break;
        };
        entries.push(((due, seq), String::from_utf8_lossy(id).into()));
        at += ENTRY_HEADER + len;
    }
    (entries, at)
}

impl Spill {
    pub fn new(path: PathBuf) -> Spill {
        Spill {
            path,
            file: None,
            written: 0,
            consumed: 0,
            gathered: BTreeMap::new(),
            runs: Vec::new(),
            firsts: BinaryHeap::new(),
            len: 0,
            rewrite_after: REWRITE_AFTER,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The earliest entry's slot.
    pub fn first(&self) -> Option<Slot> {
        let gathered = self.gathered.first_key_value().map(|(slot, _)| *slot);
        let run = self.firsts.peek().map(|Reverse((slot, _))| *slot);
        gathered.into_iter().chain(run).min()
    }

    /// Adds an entry, writing out what was gathered as a run once `run_len` entries are. An
    /// error (the disk is full) leaves it out: the caller keeps it.
    pub fn push(&mut self, slot: Slot, id: &str, run_len: usize) -> Result<(), Error> {
        if self.gathered.len() >= run_len.clamp(1, RUN_LEN) {
            self.write_run()?;
        }
        self.gathered.insert(slot, id.into());
        self.len += 1;
        Ok(())
    }

    /// Takes the earliest entry out.
    pub fn pop(&mut self) -> Result<Option<(Slot, Box<str>)>, Error> {
        let gathered = self.gathered.first_key_value().map(|(slot, _)| *slot);
        let run = self.firsts.peek().map(|Reverse(first)| *first);
        let taken = match (gathered, run) {
            (None, None) => return Ok(None),
            (Some(g), Some((r, _))) if g < r => self.gathered.pop_first(),
            (Some(_), None) => self.gathered.pop_first(),
            (_, Some((_, i))) => {
                self.firsts.pop();
                let taken = self.take_from_run(i)?;
                Some(taken)
            }
        };
        self.len -= usize::from(taken.is_some());
        if self.len == 0 {
            self.empty_file()?;
        }
        Ok(taken)
    }

    /// Run `i`'s first entry, reading its next block when its head runs out.
    fn take_from_run(&mut self, i: usize) -> Result<(Slot, Box<str>), Error> {
        let run = self.runs[i]
            .as_mut()
            .ok_or_else(|| io::Error::other("a lane spill's run is gone"))?;
        let taken = run
            .head
            .pop_front()
            .ok_or_else(|| io::Error::other("a lane spill's run is empty"))?;
        if run.head.is_empty() && run.next < run.end {
            let file = self
                .file
                .as_ref()
                .ok_or_else(|| io::Error::other("a lane spill's file is gone"))?;
            let want = usize::try_from(run.end - run.next)
                .unwrap_or(usize::MAX)
                .min(BLOCK_BYTES);
            let mut bytes = vec![0; want];
            file.read_exact_at(&mut bytes, run.next)?;
            let (entries, used) = decode(&bytes, BLOCK_LEN);
            if entries.is_empty() {
                return Err(io::Error::other("a lane spill's entry is longer than a block").into());
            }
            run.next += used as u64;
            self.consumed += used as u64;
            run.head.extend(entries);
        }
        match run.head.front() {
            Some((slot, _)) => self.firsts.push(Reverse((*slot, i))),
            None => self.runs[i] = None,
        }
        Ok(taken)
    }

    /// Writes the gathered entries out as a run, keeping its first block in memory.
    fn write_run(&mut self) -> Result<(), Error> {
        // A short run keeps a quarter of itself in memory until it is read.
        let keep = BLOCK_LEN.min(self.gathered.len().div_ceil(4)).max(1);
        let mut entries = std::mem::take(&mut self.gathered).into_iter();
        let head: VecDeque<_> = entries.by_ref().take(keep).collect();
        let mut bytes = Vec::new();
        for (slot, id) in entries {
            encode(slot, &id, &mut bytes);
        }
        let start = self.written;
        if !bytes.is_empty()
            && let Err(e) = self.write(&bytes)
        {
            // Nothing is lost: back to where they were gathered.
            let (kept, _) = decode(&bytes, usize::MAX);
            self.gathered.extend(head);
            self.gathered.extend(kept);
            return Err(e);
        }
        let Some((first, _)) = head.front().map(|(slot, id)| (*slot, id)) else {
            return Ok(());
        };
        let i = match self.runs.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.runs.push(None);
                self.runs.len() - 1
            }
        };
        self.runs[i] = Some(Run {
            head,
            next: start,
            end: self.written,
        });
        self.firsts.push(Reverse((first, i)));
        self.rewrite_if_sparse()
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if self.file.is_none() {
            self.file = Some(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&self.path)?,
            );
        }
        if let Some(file) = &self.file {
            file.write_all_at(bytes, self.written)?;
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Everything was handed back: the file is emptied.
    fn empty_file(&mut self) -> Result<(), Error> {
        self.runs.clear();
        self.firsts.clear();
        if self.written > 0
            && let Some(file) = &self.file
        {
            file.set_len(0)?;
        }
        self.written = 0;
        self.consumed = 0;
        Ok(())
    }

    /// Rewrites the file with the entries still in it when most of it was handed back: streamed,
    /// in order, into a fresh file as one run, so memory stays a block a run however many are
    /// left.
    fn rewrite_if_sparse(&mut self) -> Result<(), Error> {
        if self.consumed < self.rewrite_after || self.consumed < self.written / 2 {
            return Ok(());
        }
        let fresh_path = self.path.with_extension("rewrite");
        let fresh = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&fresh_path)?;
        let mut head = VecDeque::new();
        let mut buffer = Vec::new();
        let mut written = 0_u64;
        while let Some(Reverse((_, i))) = self.firsts.pop() {
            let (slot, id) = self.take_from_run(i)?;
            if head.len() < BLOCK_LEN {
                head.push_back((slot, id));
                continue;
            }
            encode(slot, &id, &mut buffer);
            if buffer.len() >= REWRITE_BUFFER {
                fresh.write_all_at(&buffer, written)?;
                written += buffer.len() as u64;
                buffer.clear();
            }
        }
        fresh.write_all_at(&buffer, written)?;
        written += buffer.len() as u64;
        std::fs::rename(&fresh_path, &self.path)?;
        self.file = Some(fresh);
        self.runs.clear();
        self.written = written;
        self.consumed = 0;
        if let Some((first, _)) = head.front() {
            self.firsts.push(Reverse((*first, 0)));
            self.runs.push(Some(Run {
                head,
                next: 0,
                end: written,
            }));
        }
        Ok(())
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spill() -> (tempfile::TempDir, Spill) {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::new(dir.path().join("lane.spill"));
        (dir, spill)
    }

    fn drain(spill: &mut Spill) -> Vec<Slot> {
        std::iter::from_fn(|| spill.pop().unwrap().map(|(slot, _)| slot)).collect()
    }

    #[test]
    fn entries_come_back_in_time_order_whatever_order_they_went_in() {
        let (_dir, mut spill) = spill();
        // Several runs' worth, interleaved: later retries among earlier first attempts.
        let n = RUN_LEN * 3 + 100;
        for i in 0..n as u64 {
            let due = if i % 3 == 0 { 1_000_000 - i } else { i };
            spill.push((due, i), &format!("dlv_{i}"), RUN_LEN).unwrap();
        }
        assert_eq!(spill.len(), n);
        let mut expected: Vec<Slot> = (0..n as u64)
            .map(|i| (if i % 3 == 0 { 1_000_000 - i } else { i }, i))
            .collect();
        expected.sort_unstable();
        assert_eq!(spill.first(), Some(expected[0]));
        assert_eq!(drain(&mut spill), expected);
        assert!(spill.is_empty());
    }

    #[test]
    fn an_entry_keeps_its_delivery_id() {
        let (_dir, mut spill) = spill();
        for i in 0..(RUN_LEN + 10) as u64 {
            spill.push((i, i), &format!("dlv_{i}"), RUN_LEN).unwrap();
        }
        for i in 0..(RUN_LEN + 10) as u64 {
            let (slot, id) = spill.pop().unwrap().unwrap();
            assert_eq!(slot, (i, i));
            assert_eq!(&*id, format!("dlv_{i}"));
        }
    }

    #[test]
    fn only_a_block_of_each_run_is_kept_in_memory() {
        let (_dir, mut spill) = spill();
        for i in 0..(RUN_LEN * 4) as u64 {
            spill.push((i, i), "dlv_x", RUN_LEN).unwrap();
        }
        let in_memory: usize = spill
            .runs
            .iter()
            .flatten()
            .map(|run| run.head.len())
            .sum::<usize>()
            + spill.gathered.len();
        assert!(in_memory <= 3 * BLOCK_LEN + RUN_LEN, "{in_memory}");
    }

    #[test]
    fn short_runs_keep_a_quarter_in_memory_and_still_come_back_in_order() {
        let (_dir, mut spill) = spill();
        for i in (0..1000_u64).rev() {
            spill.push((i, i), "dlv_x", 64).unwrap();
        }
        assert!(spill.gathered.len() <= 64);
        let heads: usize = spill.runs.iter().flatten().map(|run| run.head.len()).sum();
        assert!(heads <= spill.runs.len() * 16, "{heads}");
        assert_eq!(
            drain(&mut spill),
            (0..1000).map(|i| (i, i)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_file_mostly_handed_back_is_rewritten_smaller_and_keeps_the_order() {
        let (dir, mut spill) = spill();
        spill.rewrite_after = 64 << 10;
        let mut next = 0_u64;
        let mut out = Vec::new();
        let mut largest = 0;
        // A lane that never empties: it keeps spilling and handing back.
        for _ in 0..20 {
            for _ in 0..RUN_LEN {
                spill.push((next, next), "dlv_x", RUN_LEN).unwrap();
                next += 1;
            }
            for _ in 0..RUN_LEN - 100 {
                out.push(spill.pop().unwrap().unwrap().0);
            }
            let size = std::fs::metadata(dir.path().join("lane.spill")).map_or(0, |m| m.len());
            largest = largest.max(size);
        }
        assert!(
            largest < 4 * (RUN_LEN as u64) * 24,
            "the file grew to {largest} bytes"
        );
        out.extend(drain(&mut spill));
        assert_eq!(out.len() as u64, next);
        assert!(out.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn the_file_is_emptied_once_everything_was_handed_back() {
        let (dir, mut spill) = spill();
        for i in 0..(RUN_LEN * 2) as u64 {
            spill.push((i, i), "dlv_x", RUN_LEN).unwrap();
        }
        assert!(
            std::fs::metadata(dir.path().join("lane.spill"))
                .unwrap()
                .len()
                > 0
        );
        drain(&mut spill);
        assert_eq!(
            std::fs::metadata(dir.path().join("lane.spill"))
                .unwrap()
                .len(),
            0
        );
        drop(spill);
        assert!(!dir.path().join("lane.spill").exists());
    }

    #[test]
    fn entries_pushed_while_others_are_handed_back_keep_the_order() {
        let (_dir, mut spill) = spill();
        let mut next = 0_u64;
        let mut out = Vec::new();
        for _ in 0..5 {
            for _ in 0..RUN_LEN {
                spill.push((next, next), "dlv_x", RUN_LEN).unwrap();
                next += 1;
            }
            for _ in 0..RUN_LEN / 2 {
                out.push(spill.pop().unwrap().unwrap().0);
            }
        }
        out.extend(drain(&mut spill));
        assert_eq!(out.len() as u64, next);
        assert!(out.windows(2).all(|w| w[0] < w[1]));
    }
}
