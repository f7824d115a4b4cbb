//! The spool's records on disk: an append-only log of segment files in `<spool>/journal/`, and
//! in memory the place of each key's latest record.
//!
//! sled copied a B-tree node on every insert and every removal, and the spool makes both for
//! every delivery: the copies and the allocations behind them were most of what a delivery cost
//! the node (docs/BENCHMARKS.md). Here a put or a removal appends one record of its own size.
//! Appends gather in memory and are written out in a batch; [`Journal::sync`] makes everything
//! appended before it durable, one `fdatasync` shared by every caller that waits meanwhile.
//!
//! Space comes back by segment. Segments are deleted oldest first, once none of their records is
//! the latest for its key, and only after the active segment is synced, so a record that
//! superseded them is durable when they go. Deleting only the oldest keeps every removal record
//! on disk as long as the put it cancels. A segment kept alive by a few long-held jobs among
//! many settled ones is copied forward: its live records are appended again and it is deleted.
//!
//! A record: `len u32 | crc32 u32 | op u8 | space u8 | key_len u16 | key | value`, little-endian,
//! `len` and the CRC covering everything after the CRC. A record that is torn or fails its CRC
//! at the end of a segment is what a crash in the middle of a write leaves, and is ignored. One
//! in the middle (a bad sector, a stray write) is skipped: replay looks for the next place where
//! a whole record holds its CRC and reads on from there, so the records after it are not lost;
//! the bytes skipped are logged and counted ([`Journal::skipped_bytes`], exported by the node).
//!
//! The records hold LINE users' messages: the directory is made 0700 and segments 0600. Space
//! coming back in its own time is not enough when a body must be gone (a tenant's data purged,
//! a body past `--payload-retention`): [`Journal::erase_settled`] copies every live record of the
//! closed segments forward and deletes them all, so no settled record stays in a file. It runs at
//! once for a purge; after bodies aged out ([`Journal::erase_soon`]) the maintenance thread runs
//! it, at most a tenth of its time, so a stream of expiries does not keep the disk rewriting.
//!
//! A write or a sync can fail (a full disk, a failing one). A failed write leaves the appends
//! gathered in memory and is tried again; nothing before it was lost. A failed `fdatasync` is
//! not tried again on the same file: Linux may have dropped the pages it could not write and
//! report the next sync of that file as a success. The segment is abandoned at the point its
//! last good sync reached, every record behind that point that is still the latest for its key
//! is appended again to a new segment, and the node says so (an error log, a count it exports).
//! Either way the caller of the failed sync gets the error; the records stay in the index, so a
//! later sync that succeeds makes them durable and a caller that enqueues the same keys again is
//! told the truth. Until a sync succeeds again the journal takes no new enqueues
//! ([`Journal::writable`]): the node answers 503 and uses no memory for work it cannot store.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak, mpsc},
    thread::JoinHandle,
    time::Duration,
};

use tracing::warn;

use super::{
    Storage,
    key_index::{KeyIndex, Loc},
};
use crate::Error;

/// A segment is closed and a new one begun beyond this size.
pub(super) const SEGMENT_BYTES: u64 = 64 << 20;
/// Appends gathered in memory beyond this are written out at once.
const WRITE_BEHIND: usize = 256 << 10;
/// How often gathered appends are written out (without a sync) and segments are reclaimed: a
/// `kill -9` forgets at most this much of the settling that was never synced.
const MAINTENANCE_EVERY: Duration = Duration::from_millis(100);
const HEADER: usize = 12;
/// Bytes between two wanted records that a batched read reads through rather than reading each
/// record apart ([`Journal::get_many`]).
const READ_GAP: u64 = 16 << 10;
/// The most one batched read spans.
const READ_SPAN: u64 = 256 << 10;
/// The longest wait between tries to write and sync again after a failure.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);
const OP_PUT: u8 = 1;
const OP_REMOVE: u8 = 2;

/// The key spaces of the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Space {
    /// Delivery id to the job's record.
    Jobs = 0,
    /// Body key to the body and headers many jobs share.
    Bodies = 1,
}

impl Space {
    fn from_byte(b: u8) -> Option<Space> {
        match b {
            0 => Some(Space::Jobs),
            1 => Some(Space::Bodies),
            _ => None,
        }
    }
}

/// Where a record is read from: a copy of its bytes still gathered, or its file (read after
/// the lock is let go).
enum Source {
    Read(Vec<u8>),
    File(Arc<File>),
}

impl Source {
    fn value(self, loc: Loc) -> Result<Vec<u8>, Error> {
        let (_, value) = match self {
            Source::Read(record) => decoded(&record, loc)?,
            Source::File(file) => read_record(&file, loc)?,
        };
        Ok(value)
    }
}

struct Segment {
    file: Arc<File>,
    /// Bytes of records in it (written or gathered).
    bytes: u64,
    /// Bytes of its records that are the latest for their key.
    live: u64,
}

struct Inner {
    dir: PathBuf,
    segments: BTreeMap<u64, Segment>,
    active: u64,
    /// Bytes of the active segment already in its file.
    written: u64,
    /// Appended to the active segment and not yet written.
    gathered: Vec<u8>,
    index: [KeyIndex; 2],
    /// Appends so far, for the group commit.
    appended: u64,
    /// Bytes of the active segment that a sync made durable.
    synced_len: u64,
    /// Why the last write or sync failed, while no sync has succeeded since.
    failure: Option<String>,
    /// A sync failed and the active segment is still to be abandoned (the next one could not be
    /// made yet).
    abandon_pending: bool,
    /// When the maintenance thread next tries to write out and sync after a failure.
    retry_at: Option<std::time::Instant>,
    retry_wait: Duration,
    /// Writes and syncs that failed, and segments abandoned, since the journal was opened.
    failures: u64,
    abandoned: u64,
    /// Records that must leave the disk were settled: erase soon (see the module comment).
    erase_wanted: bool,
    /// When the maintenance thread may erase again, and how long the last erase took.
    erase_after: Option<std::time::Instant>,
    /// Tests: the next sync fails as a failing disk's would.
    #[cfg(test)]
    fail_next_sync: bool,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Appends known to be durable.
    synced: tokio::sync::Mutex<u64>,
}

pub(super) struct Journal {
    shared: Arc<Shared>,
    stop: Option<mpsc::Sender<()>>,
    maintenance: Option<JoinHandle<()>>,
    /// Bytes of corrupt records skipped in the middle of segments when it was opened.
    skipped_bytes: u64,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.seg"))
}

fn encode(op: u8, space: Space, key: &[u8], value: &[u8], out: &mut Vec<u8>) -> Result<u32, Error> {
    let key_len = u16::try_from(key.len())
        .map_err(|_| Error::InvalidSetting(format!("spool key of {} bytes", key.len())))?;
    let len = u32::try_from(4 + key.len() + value.len())
        .map_err(|_| Error::InvalidSetting(format!("spool record of {} bytes", value.len())))?;
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(op);
    out.push(space as u8);
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(len + 8)
}

/// One record read back from a segment's bytes.
struct Decoded<'a> {
    op: u8,
    space: Space,
    key: &'a [u8],
    value: &'a [u8],
    len: u32,
}

/// The record at the start of `bytes`; `None` when it is torn, fails its CRC or is unknown.
fn decode(bytes: &[u8]) -> Option<Decoded<'_>> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?);
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let body = bytes.get(8..8 + usize::try_from(len).ok()?)?;
    if len < 4 || crc32fast::hash(body) != crc {
        return None;
    }
    let key_len = usize::from(u16::from_le_bytes([body[2], body[3]]));
    let key = body.get(4..4 + key_len)?;
    Some(Decoded {
        op: body[0],
        space: Space::from_byte(body[1])?,
        key,
        value: &body[4 + key_len..],
        len: len + 8,
    })
}

/// How much of a segment a walk reads at a time ([`walk_segment`]). A whole segment read at once
/// (64 MiB) was, when a drain of two million queued deliveries copied its oldest segments
/// forward, a spike of as much again over the node's memory.
const WALK_WINDOW: usize = if cfg!(test) { 4 << 10 } else { 4 << 20 };

/// What a walk of a segment passed over. Past a record that is torn or fails its CRC, reading
/// goes on at the next offset where a whole record holds its CRC.
#[derive(Default)]
struct Walked {
    /// Bytes skipped between records that hold (corruption in the middle).
    skipped: u64,
    /// Places where reading had to skip.
    gaps: u64,
    /// Bytes at the end after the last record that holds (a write a crash cut short).
    torn_tail: u64,
}

/// The whole length of the record at the start of `rest`, when `rest` does not hold all of it
/// and the `left` bytes of the segment from there do: a claimed length past the segment's end is
/// no record, and is passed over as a read of the whole segment would pass it.
fn needs_more(rest: &[u8], left: u64) -> Option<usize> {
    let Some(header) = rest.get(0..4) else {
        return (left >= 8).then_some(8);
    };
    let need = u64::from(u32::from_le_bytes(header.try_into().ok()?)) + 8;
    (need > rest.len() as u64 && need <= left).then(|| usize::try_from(need).ok())?
}

/// Calls `f` with each record of segment `n` (its first `bytes` in `file`) that holds, with its
/// place, in order, reading [`WALK_WINDOW`] at a time (more when one record is larger).
fn walk_segment(
    file: &File,
    n: u64,
    bytes: u64,
    mut f: impl FnMut(Loc, Decoded<'_>) -> Result<(), Error>,
) -> Result<Walked, Error> {
    let mut walked = Walked::default();
    let mut window = Vec::new();
    // The end of the last record that held: where skipped bytes are counted from.
    let mut held_to = 0u64;
    let mut at = 0u64;
    // What the record at `at` needs when the last window ended inside it.
    let mut need = 0;
    while at < bytes {
        let want =
            usize::try_from((bytes - at).min(WALK_WINDOW as u64)).map_err(io::Error::other)?;
        window.resize(want.max(need), 0);
        need = 0;
        file.read_exact_at(&mut window, at)?;
        let complete = at + window.len() as u64 == bytes;
        let mut i = 0;
        while i < window.len() {
            let rest = &window[i..];
            if !complete && let Some(whole) = needs_more(rest, bytes - (at + i as u64)) {
                // Read on from this record, with all of it in the next window.
                need = whole;
                break;
            }
            match decode(rest) {
                Some(record) if record.op == OP_PUT || record.op == OP_REMOVE => {
                    let offset = at + i as u64;
                    if offset > held_to {
                        walked.skipped += offset - held_to;
                        walked.gaps += 1;
                    }
                    let len = record.len;
                    f(
                        Loc {
                            segment: n,
                            offset,
                            len,
                        },
                        record,
                    )?;
                    i += len as usize;
                    held_to = at + i as u64;
                }
                _ => i += 1,
            }
        }
        at += i as u64;
        if complete {
            break;
        }
    }
    walked.torn_tail = bytes - held_to;
    Ok(walked)
}

impl Inner {
    /// True when the record at `loc` is the latest for its key.
    fn is_current(&mut self, space: Space, key: &[u8], loc: Loc) -> bool {
        self.index(space).get(key) == Some(loc)
    }

    fn index(&mut self, space: Space) -> &mut KeyIndex {
        &mut self.index[space as usize]
    }

    /// The record at `loc` is no longer the latest for its key.
    fn superseded(&mut self, loc: Loc) {
        if let Some(segment) = self.segments.get_mut(&loc.segment) {
            segment.live = segment.live.saturating_sub(u64::from(loc.len));
        }
    }

    fn append(&mut self, op: u8, space: Space, key: &[u8], value: &[u8]) -> Result<Loc, Error> {
        let size = (HEADER + key.len() + value.len()) as u64;
        let end = self.written + self.gathered.len() as u64;
        if end > 0 && end + size > SEGMENT_BYTES {
            self.roll()?;
        }
        let offset = self.written + self.gathered.len() as u64;
        if offset + size > u64::from(u32::MAX) {
            // The index packs offsets in 32 bits; only appends that cannot be written for
            // a long while grow a segment this far.
            return Err(io::Error::other("the spool journal's segment is full").into());
        }
        let len = encode(op, space, key, value, &mut self.gathered)?;
        if let Some(segment) = self.segments.get_mut(&self.active) {
            segment.bytes += u64::from(len);
        }
        self.appended += 1;
        if self.gathered.len() >= WRITE_BEHIND && self.failure.is_none() {
            // A failure is noted and the appends stay gathered; the next sync reports it.
            if let Err(e) = self.write_out() {
                self.failed("write", &e);
            }
        }
        Ok(Loc {
            segment: self.active,
            offset,
            len,
        })
    }

    /// Puts only if `key` holds nothing; true when it put.
    fn put_new(&mut self, space: Space, key: &[u8], value: &[u8]) -> Result<bool, Error> {
        if self.index(space).contains(key) {
            return Ok(false);
        }
        self.put(space, key, value)?;
        Ok(true)
    }

    fn put(&mut self, space: Space, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let loc = self.append(OP_PUT, space, key, value)?;
        if let Some(segment) = self.segments.get_mut(&loc.segment) {
            segment.live += u64::from(loc.len);
        }
        if let Some(old) = self.index(space).insert(key, loc) {
            self.superseded(old);
        }
        Ok(())
    }

    /// Where the record at `loc` is read.
    fn source(&self, loc: Loc) -> Result<Source, Error> {
        if loc.segment == self.active && loc.offset >= self.written {
            let start = usize::try_from(loc.offset - self.written).map_err(io::Error::other)?;
            let record = self
                .gathered
                .get(start..start + loc.len as usize)
                .ok_or_else(|| io::Error::other("a gathered journal record is out of range"))?;
            return Ok(Source::Read(record.to_vec()));
        }
        self.segments
            .get(&loc.segment)
            .map(|s| Source::File(Arc::clone(&s.file)))
            .ok_or_else(|| {
                io::Error::other(format!("journal segment {} is gone", loc.segment)).into()
            })
    }

    /// Writes the gathered appends into the active segment's file (no sync).
    fn write_out(&mut self) -> Result<(), Error> {
        if self.gathered.is_empty() {
            return Ok(());
        }
        let file = self
            .segments
            .get(&self.active)
            .map(|s| Arc::clone(&s.file))
            .ok_or_else(|| io::Error::other("the active journal segment is gone"))?;
        file.write_all_at(&self.gathered, self.written)?;
        self.written += self.gathered.len() as u64;
        self.gathered.clear();
        Ok(())
    }

    fn active_file(&self) -> Option<Arc<File>> {
        self.segments.get(&self.active).map(|s| Arc::clone(&s.file))
    }

    /// Closes the active segment (durable first: syncs cover only the active one) and begins
    /// the next. While writes fail the active segment grows past its size instead.
    fn roll(&mut self) -> Result<(), Error> {
        if self.failure.is_some() {
            return Ok(());
        }
        if let Err(e) = self.write_out() {
            self.failed("write", &e);
            return Ok(());
        }
        if let Some(file) = self.active_file()
            && let Err(e) = file.sync_data()
        {
            self.failed("sync", &e.into());
            // Abandoning begins the next segment.
            return self.abandon();
        }
        self.begin_next()
    }

    fn begin_next(&mut self) -> Result<(), Error> {
        let file = create_segment(&self.dir, self.active + 1)?;
        self.install_next(file);
        Ok(())
    }

    /// Makes `file` (the segment after the active one) the one appended to.
    fn install_next(&mut self, file: File) {
        let next = self.active + 1;
        self.segments.insert(
            next,
            Segment {
                file: Arc::new(file),
                bytes: 0,
                live: 0,
            },
        );
        self.active = next;
        self.written = 0;
        self.synced_len = 0;
    }

    /// Notes a failed write or sync: no new enqueues until a sync succeeds again.
    fn failed(&mut self, what: &'static str, e: &Error) {
        self.failures += 1;
        if self.failure.is_none() {
            tracing::error!(
                error = %e,
                "the spool journal could not {what} its records; new work is refused (503) \
                 until it can"
            );
            self.retry_wait = MAINTENANCE_EVERY;
        }
        self.failure = Some(format!("{what}: {e}"));
        self.retry_at = Some(std::time::Instant::now() + self.retry_wait);
        self.retry_wait = (self.retry_wait * 2).min(MAX_RETRY_WAIT);
        if what == "sync" {
            self.abandon_pending = true;
        }
    }

    /// A sync succeeded: everything appended before it is durable.
    fn recovered(&mut self, segment: u64, upto: u64) {
        if self.active == segment {
            self.synced_len = self.synced_len.max(upto);
        }
        if self.failure.take().is_some() && !self.abandon_pending {
            tracing::warn!("the spool journal writes and syncs again; new work is taken");
        }
        self.retry_at = None;
    }

    /// Leaves the active segment after a failed sync: its records past the last good sync are
    /// appended again to a new segment, from memory where they were never written and from the
    /// file (still in the page cache) where they were.
    fn abandon(&mut self) -> Result<(), Error> {
        let segment = self.active;
        let from = self.synced_len;
        let mut behind = Vec::new();
        for space in [Space::Jobs, Space::Bodies] {
            behind.extend(
                self.index(space)
                    .locs()
                    .filter(|loc| loc.segment == segment && loc.offset >= from)
                    .map(|loc| (space, loc)),
            );
        }
        let mut again = Vec::with_capacity(behind.len());
        let mut unreadable = 0_usize;
        for (space, loc) in behind {
            match self.read_local_record(loc) {
                Ok((key, value)) => again.push((space, key, value)),
                // Left where it is: a restart reads whatever of it reached the disk.
                Err(_) => unreadable += 1,
            }
        }
        // Nothing changes until the next segment exists: a failure here is tried again.
        let file = create_segment(&self.dir, segment + 1)?;
        self.drop_unwritten();
        self.install_next(file);
        self.abandon_pending = false;
        self.abandoned += 1;
        for (space, key, value) in &again {
            self.put(*space, key, value)?;
        }
        tracing::error!(
            segment = %segment_path(&self.dir, segment).display(),
            durable_bytes = from,
            appended_again = again.len(),
            unreadable,
            "a sync of the spool journal failed: the segment is abandoned at its last good sync \
             and its later records are appended again to a new one \
             (see hookplane_spool_segments_abandoned_total)"
        );
        Ok(())
    }

    /// Forgets the appends that were never written: the abandoned segment keeps what reached
    /// its file, and its records that matter are appended again.
    fn drop_unwritten(&mut self) {
        if let Some(s) = self.segments.get_mut(&self.active) {
            s.bytes = self.written;
        }
        self.gathered.clear();
    }

    /// The key and value of the record at `loc`, read under the lock: from the gathered
    /// appends, or from its file.
    fn read_local_record(&self, loc: Loc) -> Result<(Vec<u8>, Vec<u8>), Error> {
        match self.source(loc)? {
            Source::Read(record) => decoded(&record, loc),
            Source::File(file) => read_record(&file, loc),
        }
    }

    /// The oldest segments with nothing live in them, to delete once the active one is synced.
    fn reclaimable(&self) -> Vec<u64> {
        self.segments
            .iter()
            .take_while(|(n, s)| **n != self.active && s.live == 0)
            .map(|(n, _)| *n)
            .collect()
    }

    /// The oldest closed segment, when it is worth copying forward: the journal holds more than
    /// twice its live bytes and a segment besides.
    fn to_compact(&self) -> Option<(u64, Arc<File>, u64)> {
        let (total, live) = self
            .segments
            .values()
            .fold((0, 0), |(t, l), s| (t + s.bytes, l + s.live));
        if total <= 2 * live + SEGMENT_BYTES {
            return None;
        }
        let (n, segment) = self.segments.first_key_value()?;
        (*n != self.active && segment.live > 0)
            .then(|| (*n, Arc::clone(&segment.file), segment.bytes))
    }
}

fn create_segment(dir: &Path, n: u64) -> Result<File, Error> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(segment_path(dir, n))?;
    // The new name must survive a crash too, or its records would be lost with it.
    File::open(dir)?.sync_all()?;
    Ok(file)
}

impl Journal {
    /// Opens the journal in `dir` (created if missing), replaying its segments, and starts a
    /// fresh segment to append to and the thread that writes out and reclaims.
    pub fn open(dir: &Path) -> Result<Journal, Error> {
        Self::open_with(dir, true)
    }

    /// Without the maintenance thread, for tests that run its rounds themselves.
    #[cfg(test)]
    pub fn open_unattended(dir: &Path) -> Result<Journal, Error> {
        Self::open_with(dir, false)
    }

    fn open_with(dir: &Path, attended: bool) -> Result<Journal, Error> {
        private_dir(dir)?;
        let mut numbers = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u64>().ok())
            {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        let mut inner = Inner {
            dir: dir.to_owned(),
            segments: BTreeMap::new(),
            active: 0,
            written: 0,
            gathered: Vec::new(),
            index: [KeyIndex::default(), KeyIndex::default()],
            appended: 0,
            synced_len: 0,
            failure: None,
            abandon_pending: false,
            retry_at: None,
            retry_wait: MAINTENANCE_EVERY,
            failures: 0,
            abandoned: 0,
            erase_wanted: false,
            erase_after: None,
            #[cfg(test)]
            fail_next_sync: false,
        };
        let mut skipped_bytes = 0;
        for n in &numbers {
            skipped_bytes += replay(&mut inner, *n)?;
        }
        let next = numbers.last().map_or(1, |n| n + 1);
        inner.segments.insert(
            next,
            Segment {
                file: Arc::new(create_segment(dir, next)?),
                bytes: 0,
                live: 0,
            },
        );
        inner.active = next;
        let shared = Arc::new(Shared {
            inner: Mutex::new(inner),
            synced: tokio::sync::Mutex::new(0),
        });
        let (stop, stopped) = mpsc::channel();
        let weak = Arc::downgrade(&shared);
        let maintenance = attended
            .then(|| {
                std::thread::Builder::new()
                    .name("hookplane-spool-journal".to_owned())
                    .spawn(move || maintain(&weak, &stopped))
            })
            .transpose()?;
        let journal = Journal {
            shared,
            stop: Some(stop),
            maintenance,
            skipped_bytes,
        };
        // Segments a previous run could not reclaim before it stopped.
        journal.shared.reclaim()?;
        Ok(journal)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.lock()
    }

    /// The latest value of `key`.
    pub fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let (source, loc) = {
            let mut inner = self.lock();
            let Some(loc) = inner.index(space).get(key) else {
                return Ok(None);
            };
            (inner.source(loc)?, loc)
        };
        source.value(loc).map(Some)
    }

    /// The latest values of `keys`, in their order, each `None` where the key holds nothing.
    /// Records near each other in a segment come in one read: a lease takes each lane's next
    /// jobs, and a request's fan-out put one job into each lane side by side. A read per job was
    /// half of what leasing cost in the drain of a spilled backlog (docs/BENCHMARKS.md, change
    /// 37).
    pub fn get_many<K: AsRef<[u8]>>(
        &self,
        space: Space,
        keys: &[K],
    ) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let mut values = vec![None; keys.len()];
        let mut reads = Vec::new();
        {
            let mut inner = self.lock();
            for (at, key) in keys.iter().enumerate() {
                let Some(loc) = inner.index(space).get(key.as_ref()) else {
                    continue;
                };
                match inner.source(loc)? {
                    Source::Read(record) => values[at] = Some(decoded(&record, loc)?.1),
                    Source::File(file) => reads.push((loc, at, file)),
                }
            }
        }
        reads.sort_unstable_by_key(|(loc, ..)| (loc.segment, loc.offset));
        let mut first = 0;
        while let Some((head, _, file)) = reads.get(first) {
            let start = head.offset;
            let mut end = start + u64::from(head.len);
            let mut next = first + 1;
            while let Some((loc, ..)) = reads.get(next)
                && loc.segment == head.segment
                && loc.offset <= end + READ_GAP
                && loc.offset + u64::from(loc.len) - start <= READ_SPAN
            {
                end = end.max(loc.offset + u64::from(loc.len));
                next += 1;
            }
            let mut span = vec![0; usize::try_from(end - start).map_err(io::Error::other)?];
            file.read_exact_at(&mut span, start)?;
            for (loc, at, _) in &reads[first..next] {
                let from = usize::try_from(loc.offset - start).map_err(io::Error::other)?;
                let record = span
                    .get(from..from + loc.len as usize)
                    .ok_or_else(|| io::Error::other("a journal record is out of its read"))?;
                values[*at] = Some(decoded(record, *loc)?.1);
            }
            first = next;
        }
        Ok(values)
    }

    pub fn insert(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.lock().put(space, key, value)
    }

    /// Inserts only if `key` holds nothing; true when it inserted.
    pub fn insert_new(&self, space: Space, key: &[u8], value: &[u8]) -> Result<bool, Error> {
        self.lock().put_new(space, key, value)
    }

    /// [`Journal::insert_new`] for many entries under one hold of the lock (an enqueue's
    /// fan-out: each taking of the lock may wait behind a delivery thread); true for each entry
    /// it inserted.
    pub fn insert_new_each<'a>(
        &self,
        space: Space,
        entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<Vec<bool>, Error> {
        let mut inner = self.lock();
        entries
            .into_iter()
            .map(|(key, value)| inner.put_new(space, key, value))
            .collect()
    }

    /// Removes `key`; returns the value it held.
    pub fn remove(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let mut inner = self.lock();
        let Some(loc) = inner.index(space).remove(key) else {
            return Ok(None);
        };
        let value = inner.source(loc)?.value(loc)?;
        inner.append(OP_REMOVE, space, key, &[])?;
        inner.superseded(loc);
        Ok(Some(value))
    }

    /// Removes `key` without reading what it held; true when it held something.
    pub fn delete(&self, space: Space, key: &[u8]) -> Result<bool, Error> {
        let mut inner = self.lock();
        let Some(loc) = inner.index(space).remove(key) else {
            return Ok(false);
        };
        inner.append(OP_REMOVE, space, key, &[])?;
        inner.superseded(loc);
        Ok(true)
    }

    /// Calls `f` with each key's space, the key and its latest value, reading every segment
    /// once from start to end (at start, where a read per key would cost a syscall each).
    pub fn for_each(
        &self,
        mut f: impl FnMut(Space, &[u8], &[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let segments: Vec<(u64, Arc<File>, u64)> = {
            let mut inner = self.lock();
            inner.write_out()?;
            inner
                .segments
                .iter()
                .map(|(n, s)| (*n, Arc::clone(&s.file), s.bytes))
                .collect()
        };
        for (n, file, bytes) in segments {
            walk_segment(&file, n, bytes, |loc, record| {
                if record.op == OP_PUT && self.lock().is_current(record.space, record.key, loc) {
                    f(record.space, record.key, record.value)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    // What the spool's budget reads (budget.rs): the bytes on disk, and sizes from the index
    // without a read.

    /// Bytes of every segment, written or gathered: what the journal takes on disk, settled
    /// records included until their segment goes.
    pub fn disk_bytes(&self) -> u64 {
        self.lock().segments.values().map(|s| s.bytes).sum()
    }

    /// The length of `key`'s latest value, from the index.
    pub fn value_len(&self, space: Space, key: &[u8]) -> Option<u64> {
        let loc = self.lock().index(space).get(key)?;
        Some(u64::from(loc.len).saturating_sub((HEADER + key.len()) as u64))
    }

    /// True when `key` holds a value.
    pub fn contains(&self, space: Space, key: &[u8]) -> bool {
        self.lock().index(space).contains(key)
    }

    #[cfg(test)]
    pub fn len(&self, space: Space) -> usize {
        self.lock().index(space).len()
    }

    /// Makes everything appended before the call durable. Concurrent callers share a sync.
    ///
    /// An error means what the caller appended may not be durable (it is kept and made durable
    /// by the next sync that succeeds; see the module comment).
    pub async fn sync(&self) -> Result<(), Error> {
        let mine = self.lock().appended;
        let mut synced = self.shared.synced.lock().await;
        if *synced >= mine {
            return Ok(());
        }
        let shared = Arc::clone(&self.shared);
        let covers = tokio::task::spawn_blocking(move || shared.make_durable())
            .await
            .map_err(io::Error::other)??;
        *synced = (*synced).max(covers);
        Ok(())
    }

    /// Rewrites the journal so that no record removed or replaced before the call stays in a
    /// file: the active segment is closed, every closed segment's live records are copied
    /// forward, and the closed segments are deleted once the copies are synced. Costs a write of
    /// everything live; a purge is rare. Fails while the disk fails (nothing can be copied).
    pub async fn erase_settled(&self) -> Result<(), Error> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || shared.erase_settled())
            .await
            .map_err(io::Error::other)?
    }

    /// Asks the maintenance thread to [`Journal::erase_settled`] soon.
    pub fn erase_soon(&self) {
        self.lock().erase_wanted = true;
    }

    /// Whether new work may be appended: not while writes or syncs fail (see the module
    /// comment). The error says why.
    pub fn writable(&self) -> Result<(), Error> {
        match &self.lock().failure {
            None => Ok(()),
            Some(why) => Err(io::Error::other(format!(
                "the spool cannot store new work now ({why}); try again later"
            ))
            .into()),
        }
    }

    /// Why writes or syncs fail now, if they do, and how many failed since it was opened.
    pub fn storage(&self) -> Storage {
        let inner = self.lock();
        Storage {
            failure: inner.failure.clone(),
            failures: inner.failures,
            abandoned: inner.abandoned,
        }
    }

    /// Writes out and syncs what was appended, blocking.
    pub fn sync_blocking(&self) -> Result<(), Error> {
        self.shared.make_durable().map(drop)
    }

    /// Bytes of corrupt records skipped in the middle of segments when the journal was opened
    /// (a torn record at a segment's end, what a crash leaves, is not counted).
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped_bytes
    }

    /// Segment files on disk, for tests of reclaiming.
    #[cfg(test)]
    pub fn segments(&self) -> usize {
        self.lock().segments.len()
    }

    /// Makes the next sync fail, for tests of a failing disk.
    #[cfg(test)]
    pub fn fail_next_sync(&self) {
        self.lock().fail_next_sync = true;
    }

    /// Begins a new segment now, for tests of reclaiming.
    #[cfg(test)]
    pub fn roll(&self) -> Result<(), Error> {
        self.lock().roll()
    }

    /// One round of the maintenance thread's work, for tests.
    #[cfg(test)]
    pub fn maintain_now(&self) -> Result<(), Error> {
        self.shared.maintain()
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.maintenance.take() {
            let _ = thread.join();
        }
        if let Err(e) = self.shared.make_durable() {
            warn!(error = %e, "could not write the spool journal out at close");
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes out what was appended and syncs it; the count of appends it made durable. A
    /// failed write keeps the appends gathered; a failed sync abandons the segment (see the
    /// module comment).
    fn make_durable(&self) -> Result<u64, Error> {
        self.make_durable_noting(|_| {})
    }

    /// [`Shared::make_durable`], calling `before` with the journal as it is when the sync
    /// begins (under the same hold of the lock).
    fn make_durable_noting(&self, before: impl FnOnce(&Inner)) -> Result<u64, Error> {
        let (file, segment, upto, covers) = {
            let mut inner = self.lock();
            if inner.abandon_pending {
                inner.abandon()?;
            }
            if let Err(e) = inner.write_out() {
                inner.failed("write", &e);
                return Err(e);
            }
            before(&inner);
            (
                inner.active_file(),
                inner.active,
                inner.written,
                inner.appended,
            )
        };
        let result = file.map_or(Ok(()), |file| file.sync_data());
        let mut inner = self.lock();
        #[cfg(test)]
        let result = if std::mem::take(&mut inner.fail_next_sync) {
            Err(io::Error::from_raw_os_error(5))
        } else {
            result
        };
        match result {
            Ok(()) => {
                inner.recovered(segment, upto);
                Ok(covers)
            }
            Err(e) => {
                let e = Error::from(e);
                if inner.active == segment {
                    inner.failed("sync", &e);
                    if let Err(again) = inner.abandon() {
                        tracing::error!(
                            error = %again,
                            "the spool journal could not begin a new segment; tried again later"
                        );
                    }
                }
                Err(e)
            }
        }
    }

    /// Deletes the oldest segments with nothing live, after syncing what superseded them:
    /// only those that had nothing live when the sync began, since whatever superseded their
    /// records since may not be durable yet.
    fn reclaim(&self) -> Result<(), Error> {
        if self.lock().reclaimable().is_empty() {
            return Ok(());
        }
        let mut before = Vec::new();
        self.make_durable_noting(|inner| before = inner.reclaimable())?;
        let mut inner = self.lock();
        let now = inner.reclaimable();
        for n in before.into_iter().filter(|n| now.contains(n)) {
            std::fs::remove_file(segment_path(&inner.dir, n))?;
            inner.segments.remove(&n);
        }
        Ok(())
    }

    /// Copies the live records of the oldest segment forward, taking the lock a record at a
    /// time (never across a read of the segment), so enqueues wait little.
    fn compact(&self, n: u64, file: &File, bytes: u64) -> Result<(), Error> {
        walk_segment(file, n, bytes, |loc, record| {
            let mut inner = self.lock();
            if record.op == OP_PUT && inner.is_current(record.space, record.key, loc) {
                inner.put(record.space, record.key, record.value)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    fn erase_settled(&self) -> Result<(), Error> {
        let closed: Vec<(u64, Arc<File>, u64)> = {
            let mut inner = self.lock();
            if let Some(why) = &inner.failure {
                return Err(io::Error::other(format!(
                    "the spool cannot erase settled records now ({why})"
                ))
                .into());
            }
            inner.erase_wanted = false;
            let before = inner.active;
            inner.roll()?;
            if inner.active == before {
                return Err(io::Error::other("the spool journal could not begin a segment").into());
            }
            inner
                .segments
                .range(..inner.active)
                .map(|(n, s)| (*n, Arc::clone(&s.file), s.bytes))
                .collect()
        };
        for (n, file, bytes) in &closed {
            self.compact(*n, file, *bytes)?;
        }
        self.reclaim()
    }

    /// An erase asked for by [`Journal::erase_soon`], unless the last one ended too recently
    /// (at most a tenth of the time goes to erasing).
    fn erase_if_wanted(&self) -> Result<(), Error> {
        {
            let inner = self.lock();
            let due = inner
                .erase_after
                .is_none_or(|at| std::time::Instant::now() >= at);
            if !inner.erase_wanted || !due {
                return Ok(());
            }
        }
        let started = std::time::Instant::now();
        let erased = self.erase_settled();
        let took = started.elapsed();
        self.lock().erase_after = Some(std::time::Instant::now() + took * 9);
        erased
    }

    fn maintain(&self) -> Result<(), Error> {
        let retry_at = {
            let inner = self.lock();
            inner.failure.as_ref().and(inner.retry_at)
        };
        if let Some(at) = retry_at {
            // After a failure: try again now and then, and nothing else until it works.
            if std::time::Instant::now() < at {
                return Ok(());
            }
            self.make_durable()?;
        }
        {
            let mut inner = self.lock();
            if let Err(e) = inner.write_out() {
                inner.failed("write", &e);
                return Err(e);
            }
        }
        let compact = self.lock().to_compact();
        if let Some((n, file, bytes)) = compact {
            self.compact(n, &file, bytes)?;
        }
        self.erase_if_wanted()?;
        self.reclaim()
    }
}

fn maintain(shared: &Weak<Shared>, stopped: &mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(MAINTENANCE_EVERY) {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Err(e) = shared.maintain() {
            warn!(error = %e, "spool journal maintenance failed");
        }
    }
}

/// The key and value of the record at `loc` in `file`.
fn read_record(file: &File, loc: Loc) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let mut record = vec![0; loc.len as usize];
    file.read_exact_at(&mut record, loc.offset)?;
    decoded(&record, loc)
}

fn decoded(record: &[u8], loc: Loc) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let decoded = decode(record).ok_or_else(|| {
        io::Error::other(format!(
            "journal segment {} holds a corrupt record at {}",
            loc.segment, loc.offset
        ))
    })?;
    Ok((decoded.key.to_vec(), decoded.value.to_vec()))
}

/// Makes `dir` (and what is missing above it) with only its owner allowed in, and takes the
/// others' access away from one that exists.
pub(crate) fn private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Reads segment `n` into the index; the bytes skipped in its middle.
fn replay(inner: &mut Inner, n: u64) -> Result<u64, Error> {
    let path = segment_path(&inner.dir, n);
    let file = Arc::new(OpenOptions::new().read(true).write(true).open(&path)?);
    let bytes = file.metadata()?.len();
    inner.segments.insert(
        n,
        Segment {
            file: Arc::clone(&file),
            bytes: 0,
            live: 0,
        },
    );
    let records = walk_segment(&file, n, bytes, |loc, record| {
        let old = match record.op {
            OP_PUT => {
                if let Some(segment) = inner.segments.get_mut(&n) {
                    segment.live += u64::from(record.len);
                }
                inner.index(record.space).insert(record.key, loc)
            }
            OP_REMOVE => inner.index(record.space).remove(record.key),
            _ => None,
        };
        if let Some(old) = old {
            inner.superseded(old);
        }
        Ok(())
    })?;
    // Compaction reads the segment back up to `bytes`: all of it, since records that hold may
    // follow a corrupt one.
    if let Some(segment) = inner.segments.get_mut(&n) {
        segment.bytes = bytes;
    }
    if records.skipped > 0 {
        tracing::error!(
            segment = %path.display(),
            gaps = records.gaps,
            skipped_bytes = records.skipped,
            "the spool journal has corrupt records in the middle of a segment; they are skipped \
             and the records after them kept (see hookplane_spool_corrupt_bytes)"
        );
    }
    if records.torn_tail > 0 {
        warn!(
            segment = %path.display(),
            ignored = records.torn_tail,
            "the spool journal ends in a torn or corrupt record (a write a crash cut short); \
             it is ignored"
        );
    }
    Ok(records.skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_put_is_read_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = Journal::open(dir.path()).unwrap();
            journal.insert(Space::Jobs, b"a", b"one").unwrap();
            journal.insert(Space::Jobs, b"a", b"two").unwrap();
            journal.insert(Space::Bodies, b"a", b"body").unwrap();
        }
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.get(Space::Jobs, b"a").unwrap().unwrap(), b"two");
        assert_eq!(journal.get(Space::Bodies, b"a").unwrap().unwrap(), b"body");
    }

    #[test]
    fn many_values_come_back_in_the_order_asked_near_or_far_written_or_not_or_missing() {
        let dir = tempfile::tempdir().unwrap();
        let value = |n: usize| format!("{n:>1000}").into_bytes();
        let key = |n: usize| format!("k{n}").into_bytes();
        let check = |journal: &Journal, wanted: &[Vec<u8>]| {
            let got = journal.get_many(Space::Jobs, wanted).unwrap();
            assert_eq!(got.len(), wanted.len());
            for (key, got) in wanted.iter().zip(got) {
                assert_eq!(got, journal.get(Space::Jobs, key).unwrap(), "{key:?}");
            }
        };
        // Several spans' worth written out, the newest still gathered, some keys written twice
        // (the later wins), some removed, some never there, some asked for twice.
        let journal = Journal::open_unattended(dir.path()).unwrap();
        for n in 0..1200 {
            journal.insert(Space::Jobs, &key(n), &value(n)).unwrap();
        }
        for n in (0..1200).step_by(7) {
            journal
                .insert(Space::Jobs, &key(n), &value(n + 5000))
                .unwrap();
        }
        for n in (0..1200).step_by(11) {
            journal.remove(Space::Jobs, &key(n)).unwrap();
        }
        journal
            .insert(Space::Bodies, &key(3), b"another space")
            .unwrap();
        let mut wanted: Vec<Vec<u8>> = (0..1300).rev().step_by(3).map(key).collect();
        wanted.extend((0..1200).step_by(97).map(key));
        check(&journal, &wanted);
        assert_eq!(
            journal.get_many(Space::Jobs, &[key(8)]).unwrap(),
            vec![Some(value(8))]
        );
        assert_eq!(
            journal.get_many(Space::Jobs, &[key(11)]).unwrap(),
            vec![None]
        );
        journal.sync_blocking().unwrap();
        drop(journal);
        // All from the files now.
        let journal = Journal::open_unattended(dir.path()).unwrap();
        check(&journal, &wanted);
        assert_eq!(
            journal.get_many(Space::Jobs, &[key(7), key(1299)]).unwrap(),
            vec![Some(value(5007)), None]
        );
    }

    /// The journal's one segment with records in it.
    fn written_segment(dir: &Path) -> PathBuf {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| std::fs::metadata(p).unwrap().len() > 0)
            .unwrap()
    }

    /// Records of many sizes, some larger than a walk's window (4 KiB in tests), so the
    /// windows' edges fall inside records; one of them, across an edge, is damaged.
    #[test]
    fn a_segment_is_read_a_window_at_a_time_with_records_across_the_edges_kept_whole() {
        let dir = tempfile::tempdir().unwrap();
        let sizes: Vec<usize> = (0..40)
            .map(|i| [100, 3_000, 9_000, 700][i % 4] + i)
            .collect();
        {
            let journal = Journal::open_unattended(dir.path()).unwrap();
            for (i, size) in sizes.iter().enumerate() {
                journal
                    .insert(
                        Space::Jobs,
                        format!("k{i}").as_bytes(),
                        &vec![i as u8; *size],
                    )
                    .unwrap();
            }
            journal.sync_blocking().unwrap();
        }
        let segment = written_segment(dir.path());
        let mut bytes = std::fs::read(&segment).unwrap();
        assert!(bytes.len() > 20 * WALK_WINDOW);
        // The record that crosses the 8th window's edge: a flipped byte past the edge.
        let edge = 8 * WALK_WINDOW;
        let (mut start, mut damaged) = (0, None);
        for (i, size) in sizes.iter().enumerate() {
            let len = HEADER + format!("k{i}").len() + size;
            if start < edge && start + len > edge {
                damaged = Some((i, len));
                bytes[edge + 1] ^= 0xff;
                break;
            }
            start += len;
        }
        let (damaged, damaged_len) = damaged.expect("a record across the edge");
        std::fs::write(&segment, &bytes).unwrap();

        let journal = Journal::open_unattended(dir.path()).unwrap();
        for (i, size) in sizes.iter().enumerate() {
            let read = journal
                .get(Space::Jobs, format!("k{i}").as_bytes())
                .unwrap();
            if i == damaged {
                assert_eq!(read, None, "the damaged record");
            } else {
                assert_eq!(read, Some(vec![i as u8; *size]), "record {i}");
            }
        }
        assert_eq!(journal.skipped_bytes(), damaged_len as u64);
    }

    #[test]
    fn a_corrupt_record_in_the_middle_is_skipped_and_the_records_after_it_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = Journal::open_unattended(dir.path()).unwrap();
            for i in 0..3u8 {
                journal.insert(Space::Jobs, &[b'k', i], &[i; 100]).unwrap();
            }
            journal.sync_blocking().unwrap();
        }
        let segment = written_segment(dir.path());
        let mut bytes = std::fs::read(&segment).unwrap();
        // The middle record's value: a flipped byte fails its CRC.
        let record = bytes.len() / 3;
        bytes[record + record / 2] ^= 0xff;
        std::fs::write(&segment, &bytes).unwrap();
        let journal = Journal::open_unattended(dir.path()).unwrap();
        assert_eq!(
            journal.get(Space::Jobs, b"k\x00").unwrap(),
            Some(vec![0; 100])
        );
        assert_eq!(journal.get(Space::Jobs, b"k\x01").unwrap(), None);
        assert_eq!(
            journal.get(Space::Jobs, b"k\x02").unwrap(),
            Some(vec![2; 100])
        );
        assert_eq!(journal.skipped_bytes(), (bytes.len() / 3) as u64);
        // Copied forward out of the damaged segment, the records after the gap go along.
        let (file, bytes) = {
            let inner = journal.lock();
            let damaged = &inner.segments[&1];
            (Arc::clone(&damaged.file), damaged.bytes)
        };
        journal.shared.compact(1, &file, bytes).unwrap();
        journal.shared.reclaim().unwrap();
        assert!(
            !segment.exists(),
            "the damaged segment was not copied forward"
        );
        assert_eq!(
            journal.get(Space::Jobs, b"k\x02").unwrap(),
            Some(vec![2; 100])
        );
    }

    #[tokio::test]
    async fn after_a_failed_sync_the_records_behind_it_are_written_again_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = Journal::open_unattended(dir.path()).unwrap();
            journal.insert(Space::Jobs, b"durable", b"one").unwrap();
            journal.sync().await.unwrap();
            journal.insert(Space::Jobs, b"durable", b"two").unwrap();
            journal.insert(Space::Jobs, b"new", b"three").unwrap();
            journal.insert(Space::Bodies, b"body", b"four").unwrap();
            journal.fail_next_sync();
            assert!(journal.sync().await.is_err());
            assert!(journal.writable().is_err(), "new work is refused");
            let storage = journal.storage();
            assert_eq!((storage.failures, storage.abandoned), (1, 1));
            assert_eq!(journal.segments(), 2, "the next segment was begun");
            // Read back from where they were appended again.
            assert_eq!(journal.get(Space::Jobs, b"new").unwrap().unwrap(), b"three");
            journal.sync().await.unwrap();
            journal.writable().unwrap();
        }
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(
            journal.get(Space::Jobs, b"durable").unwrap().unwrap(),
            b"two"
        );
        assert_eq!(journal.get(Space::Jobs, b"new").unwrap().unwrap(), b"three");
        assert_eq!(
            journal.get(Space::Bodies, b"body").unwrap().unwrap(),
            b"four"
        );
    }

    #[tokio::test]
    async fn a_failed_sync_is_not_retried_on_the_same_segment() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open_unattended(dir.path()).unwrap();
        journal.insert(Space::Jobs, b"a", b"one").unwrap();
        journal.fail_next_sync();
        assert!(journal.sync().await.is_err());
        let abandoned = segment_path(dir.path(), 1);
        let before = std::fs::metadata(&abandoned).unwrap().len();
        journal.insert(Space::Jobs, b"b", b"two").unwrap();
        journal.sync().await.unwrap();
        assert_eq!(
            std::fs::metadata(&abandoned).unwrap().len(),
            before,
            "nothing more was written to the abandoned segment"
        );
        assert!(
            std::fs::metadata(segment_path(dir.path(), 2))
                .unwrap()
                .len()
                > 0
        );
    }

    #[test]
    fn segments_are_private_to_the_node_in_a_private_directory() {
        use std::os::unix::fs::PermissionsExt as _;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("journal");
        let journal = Journal::open_unattended(&dir).unwrap();
        journal.insert(Space::Jobs, b"k", b"v").unwrap();
        journal.sync_blocking().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for entry in std::fs::read_dir(&dir).unwrap() {
            assert_eq!(mode(&entry.unwrap().path()), 0o600);
        }
    }

    #[test]
    fn a_removed_key_stays_removed_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = Journal::open(dir.path()).unwrap();
            journal.insert(Space::Jobs, b"a", b"one").unwrap();
            assert_eq!(journal.remove(Space::Jobs, b"a").unwrap().unwrap(), b"one");
        }
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.get(Space::Jobs, b"a").unwrap(), None);
        assert_eq!(journal.len(Space::Jobs), 0);
    }

    #[test]
    fn insert_new_leaves_a_held_key_alone() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        assert!(journal.insert_new(Space::Jobs, b"a", b"one").unwrap());
        assert!(!journal.insert_new(Space::Jobs, b"a", b"two").unwrap());
        assert_eq!(journal.get(Space::Jobs, b"a").unwrap().unwrap(), b"one");
    }

    #[test]
    fn insert_new_each_inserts_only_the_keys_that_hold_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal.insert(Space::Jobs, b"b", b"held").unwrap();
        let entries: [(&[u8], &[u8]); 4] = [(b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (b"a", b"4")];
        let inserted = journal.insert_new_each(Space::Jobs, entries).unwrap();
        assert_eq!(inserted, [true, false, true, false]);
        assert_eq!(journal.get(Space::Jobs, b"a").unwrap().unwrap(), b"1");
        assert_eq!(journal.get(Space::Jobs, b"b").unwrap().unwrap(), b"held");
        assert_eq!(journal.len(Space::Jobs), 3);
    }

    #[test]
    fn a_torn_last_record_is_ignored_and_the_ones_before_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let journal = Journal::open(dir.path()).unwrap();
            journal.insert(Space::Jobs, b"a", b"kept").unwrap();
            journal.insert(Space::Jobs, b"b", b"torn").unwrap();
        }
        let path = segment_path(dir.path(), 1);
        let len = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 2).unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.get(Space::Jobs, b"a").unwrap().unwrap(), b"kept");
        assert_eq!(journal.get(Space::Jobs, b"b").unwrap(), None);
        journal.insert(Space::Jobs, b"c", b"after").unwrap();
        drop(journal);
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.len(Space::Jobs), 2);
    }

    #[test]
    fn a_segment_whose_records_were_all_superseded_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open_unattended(dir.path()).unwrap();
        journal.insert(Space::Jobs, b"a", b"one").unwrap();
        journal.roll().unwrap();
        journal.remove(Space::Jobs, b"a").unwrap();
        journal.roll().unwrap();
        assert_eq!(journal.segments(), 3);
        journal.maintain_now().unwrap();
        assert_eq!(journal.segments(), 1);
        drop(journal);
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.get(Space::Jobs, b"a").unwrap(), None);
    }

    #[test]
    fn a_segment_still_holding_a_live_record_is_kept_until_it_is_copied_forward() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open_unattended(dir.path()).unwrap();
        journal.insert(Space::Jobs, b"held", b"long").unwrap();
        journal.roll().unwrap();
        journal.maintain_now().unwrap();
        assert_eq!(journal.segments(), 2, "a live record keeps its segment");
        // Enough settled jobs behind it that copying it forward pays.
        let value = vec![7u8; 1 << 20];
        for i in 0..70u32 {
            let key = i.to_be_bytes();
            journal.insert(Space::Jobs, &key, &value).unwrap();
            journal.remove(Space::Jobs, &key).unwrap();
        }
        journal.roll().unwrap();
        journal.maintain_now().unwrap();
        journal.maintain_now().unwrap();
        assert_eq!(journal.segments(), 1);
        drop(journal);
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.get(Space::Jobs, b"held").unwrap().unwrap(), b"long");
        assert_eq!(journal.len(Space::Jobs), 1);
    }

    /// Whether any segment file in `dir` holds `bytes`.
    fn in_a_segment(dir: &Path, bytes: &[u8]) -> bool {
        std::fs::read_dir(dir).unwrap().any(|entry| {
            let content = std::fs::read(entry.unwrap().path()).unwrap();
            content.windows(bytes.len()).any(|w| w == bytes)
        })
    }

    #[tokio::test]
    async fn an_erase_leaves_no_settled_record_in_any_file_and_keeps_every_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open_unattended(dir.path()).unwrap();
        journal
            .insert(Space::Jobs, b"kept-early", b"early-v1")
            .unwrap();
        journal
            .insert(Space::Bodies, b"gone", b"settled-body-91c2")
            .unwrap();
        journal.roll().unwrap();
        journal
            .insert(Space::Jobs, b"kept-late", b"late-body")
            .unwrap();
        journal.remove(Space::Bodies, b"gone").unwrap();
        journal
            .insert(Space::Jobs, b"kept-early", b"early-v2")
            .unwrap();
        journal.sync().await.unwrap();
        assert!(in_a_segment(dir.path(), b"settled-body-91c2"));

        journal.erase_settled().await.unwrap();

        assert!(!in_a_segment(dir.path(), b"settled-body-91c2"));
        assert!(!in_a_segment(dir.path(), b"early-v1"));
        assert!(in_a_segment(dir.path(), b"late-body"));
        drop(journal);
        let journal = Journal::open_unattended(dir.path()).unwrap();
        assert_eq!(journal.get(Space::Bodies, b"gone").unwrap(), None);
        assert_eq!(
            journal.get(Space::Jobs, b"kept-early").unwrap().unwrap(),
            b"early-v2"
        );
        assert_eq!(
            journal.get(Space::Jobs, b"kept-late").unwrap().unwrap(),
            b"late-body"
        );
    }

    #[tokio::test]
    async fn concurrent_syncs_all_return_with_their_records_written() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(dir.path()).unwrap());
        let tasks: Vec<_> = (0..16u32)
            .map(|i| {
                let journal = Arc::clone(&journal);
                tokio::spawn(async move {
                    journal.insert(Space::Jobs, &i.to_be_bytes(), b"v").unwrap();
                    journal.sync().await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let on_disk = std::fs::metadata(segment_path(dir.path(), 1))
            .unwrap()
            .len();
        assert_eq!(on_disk, 16 * (HEADER as u64 + 4 + 1));
    }
}
