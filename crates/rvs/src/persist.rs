//! The daemon's persistent configuration: a snapshot plus an append-only journal, so a
//! change costs one appended line and a shared fdatasync instead of a rewrite of the whole
//! state file (docs/control-api.md, "Persistence").
//!
//! Files, for the state path `P`:
//! * `P`: the snapshot (JSON, [`PersistedConfig`]), as of journal record `journal_seq`.
//!   Replaced with write-temp (`.P.tmp`) / fsync / rename / fsync-directory.
//! * `P.journal`: the journal, one JSON line per acknowledged change, each with its sequence
//!   number and a CRC-32 of the line ([`Record`]).
//! * `P.journal.old`: the previous journal segment while a compaction folds it into the
//!   snapshot; deleted when the new snapshot is durable.
//! * `P.dropped`: entries left out by a `drop_invalid` restore (JSON lines, appended).
//!
//! Crash safety of compaction: (1) fdatasync the journal, rename it to `P.journal.old`,
//! create an empty `P.journal`, fsync the directory; (2) snapshot + old segment -> new
//! snapshot whose `journal_seq` is the old segment's last record, written atomically;
//! (3) delete `P.journal.old`. Recovery replays `P.journal.old` (if any) and then
//! `P.journal`, skipping records the snapshot already covers, and demands consecutive
//! sequence numbers, so a crash between any two steps loses and doubles nothing.

// The daemon is switched to `Store` by a parallel change; until then only tests use it.
#![cfg_attr(not(test), allow(dead_code))]

use crate::state::{ApplyError, DroppedEntry, PersistedConfig, STATE_FORMAT, STATE_VERSION};
use rvs_core::Op;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

/// The temporary file used while `path` is rewritten.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    path.with_file_name(format!(".{name}.tmp"))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Replace `path` with `bytes` atomically and durably. With `durable` false the fsyncs are
/// skipped (still atomic for readers, not across power loss).
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let tmp = temp_path(path);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
    }
    fs::rename(&tmp, path)?;
    if durable {
        File::open(parent_dir(path))?.sync_all()?;
    }
    Ok(())
}

/// Read the state file. `Ok(None)`: there is none (first start).
///
/// To be removed once the daemon uses [`Store`] (it ignores the journal).
pub fn load_state(path: &Path) -> Result<Option<PersistedConfig>, String> {
    // A leftover temporary file is a write that was never acknowledged.
    let _ = fs::remove_file(temp_path(path));
    read_snapshot(path)
}

/// Write the state file durably (the whole configuration).
///
/// To be removed once the daemon uses [`Store`].
pub fn save_state(path: &Path, cfg: &PersistedConfig) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(cfg).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes, true)
}

// ----- the journal -----

/// One acknowledged change: one line of the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// Control operations, applied in order (a batch is one record: all or nothing).
    Ops(Vec<Op>),
    /// A sysctl write, value as written.
    Sysctl { name: String, value: String },
}

impl Record {
    /// The JSON of `Record::Ops` made of operations already serialised one by one.
    pub fn ops_json<'a>(ops: impl Iterator<Item = &'a str>) -> String {
        let mut s = String::from("{\"ops\":[");
        for (i, op) in ops.enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(op);
        }
        s.push_str("]}");
        s
    }

    /// Make the change on a saved configuration.
    pub fn apply_to(&self, cfg: &mut PersistedConfig) -> Result<(), ApplyError> {
        match self {
            Record::Ops(ops) => ops.iter().try_for_each(|op| cfg.apply(op)),
            Record::Sysctl { name, value } => cfg.apply_sysctl(name, value),
        }
    }
}

/// A journal line is `{"seq":N,"rec":RECORD,"crc":"XXXXXXXX"}`: the CRC-32 (hex) of every
/// byte before `,"crc":`. Valid JSON, and a line cut short or garbled is recognised.
#[derive(Deserialize)]
struct Line {
    seq: u64,
    rec: Record,
    #[allow(dead_code)]
    crc: String,
}

const CRC_PREFIX: &[u8] = b",\"crc\":\"";
const CRC_SUFFIX: &[u8] = b"\"}";
const CRC_TRAILER: usize = CRC_PREFIX.len() + 8 + CRC_SUFFIX.len();

fn encode_line(seq: u64, rec_json: &str) -> Vec<u8> {
    let mut line = format!("{{\"seq\":{seq},\"rec\":{rec_json}").into_bytes();
    let crc = crc32fast::hash(&line);
    line.extend_from_slice(CRC_PREFIX);
    line.extend_from_slice(format!("{crc:08x}").as_bytes());
    line.extend_from_slice(CRC_SUFFIX);
    line.push(b'\n');
    line
}

/// A line without its newline.
fn decode_line(line: &[u8]) -> Result<(u64, Record), String> {
    if line.len() < CRC_TRAILER {
        return Err("too short for a record".into());
    }
    let (body, trailer) = line.split_at(line.len() - CRC_TRAILER);
    let hex = trailer
        .strip_prefix(CRC_PREFIX)
        .and_then(|t| t.strip_suffix(CRC_SUFFIX))
        .ok_or("no checksum at the end")?;
    let want = std::str::from_utf8(hex)
        .ok()
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or("checksum is not hexadecimal")?;
    if crc32fast::hash(body) != want {
        return Err("checksum mismatch".into());
    }
    let l: Line = serde_json::from_slice(line).map_err(|e| format!("not a record: {e}"))?;
    Ok((l.seq, l.rec))
}

/// The records of one journal file.
#[derive(Debug, Default)]
struct Segment {
    records: Vec<(u64, Record)>,
    /// Bytes up to the end of the last valid record.
    valid_len: u64,
    /// An unfinished last line was found (and is not in `records`).
    torn: bool,
}

/// Parse a journal file. With `tail_may_be_torn` (the active journal) an invalid *last* line
/// is a write that a crash interrupted — never acknowledged, since acknowledgement follows
/// the fdatasync of every byte before it — and is left out. An invalid line anywhere else
/// is damage to acknowledged data: an error.
fn parse_segment(bytes: &[u8], tail_may_be_torn: bool, what: &Path) -> Result<Segment, String> {
    let mut seg = Segment::default();
    let mut pos = 0;
    let mut line_no = 0;
    while pos < bytes.len() {
        line_no += 1;
        let (line, next, complete) = match bytes[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => (&bytes[pos..pos + i], pos + i + 1, true),
            None => (&bytes[pos..], bytes.len(), false),
        };
        let decoded = if complete {
            decode_line(line)
        } else {
            Err("the line has no end".into())
        };
        match decoded {
            Ok(r) => {
                seg.records.push(r);
                seg.valid_len = next as u64;
            }
            Err(_) if tail_may_be_torn && next == bytes.len() => {
                seg.torn = true;
                break;
            }
            Err(e) => {
                return Err(format!(
                    "journal {} is damaged at line {line_no} (byte {pos}): {e}; \
                     acknowledged changes follow it, so the daemon will not start without it",
                    what.display()
                ));
            }
        }
        pos = next;
    }
    Ok(seg)
}

/// Applies journal records in sequence order on top of a snapshot.
struct Replay<'a> {
    cfg: &'a mut PersistedConfig,
    /// The last record the snapshot includes.
    covered: u64,
    last: Option<u64>,
    applied: u64,
}

impl Replay<'_> {
    fn apply(&mut self, seg: Segment, what: &Path) -> Result<(), String> {
        for (seq, rec) in seg.records {
            match self.last {
                Some(l) if seq != l + 1 => {
                    return Err(format!(
                        "journal {}: record {seq} follows record {l}: records are missing",
                        what.display()
                    ));
                }
                None if seq > self.covered + 1 => {
                    return Err(format!(
                        "journal {} starts at record {seq}, the snapshot includes records up \
                         to {}: records are missing",
                        what.display(),
                        self.covered
                    ));
                }
                _ => {}
            }
            self.last = Some(seq);
            if seq <= self.covered {
                continue;
            }
            rec.apply_to(self.cfg).map_err(|e| {
                format!(
                    "journal {}: record {seq} does not fit the saved configuration: {e}",
                    what.display()
                )
            })?;
            self.applied += 1;
        }
        Ok(())
    }

    /// The last record the configuration now includes.
    fn end(&self) -> u64 {
        self.last.unwrap_or(0).max(self.covered)
    }
}

/// When the background compaction starts.
#[derive(Copy, Clone, Debug)]
pub struct StoreOptions {
    /// Records in the journal.
    pub compact_records: u64,
    /// Bytes in the journal.
    pub compact_bytes: u64,
    /// Run compactions on a thread of the store (else only [`Store::compact`] does).
    pub background: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            compact_records: 100_000,
            compact_bytes: 64 << 20,
            background: true,
        }
    }
}

/// What [`Store::open`] found.
#[derive(Debug)]
pub struct Recovered {
    /// Snapshot with the journal applied.
    pub config: PersistedConfig,
    /// Journal records applied on top of the snapshot.
    pub replayed: u64,
    /// An unfinished last journal line (a write a crash interrupted) was cut off.
    pub torn_tail: bool,
    /// A snapshot or journal existed (false: first start).
    pub existed: bool,
}

/// Proof of an append: pass it to [`Store::wait_durable`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(pub u64);

#[derive(Clone, Debug)]
struct Paths {
    state: PathBuf,
    journal: PathBuf,
    old: PathBuf,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

impl Paths {
    fn new(state: &Path) -> Paths {
        Paths {
            state: state.to_path_buf(),
            journal: with_suffix(state, ".journal"),
            old: with_suffix(state, ".journal.old"),
        }
    }
}

/// The side file of a `drop_invalid` restore.
pub fn dropped_path(state: &Path) -> PathBuf {
    with_suffix(state, ".dropped")
}

/// Append the entries a restore left out to `STATE.dropped` (JSON lines), durably.
pub fn append_dropped(state: &Path, entries: &[DroppedEntry]) -> io::Result<()> {
    let mut text = Vec::new();
    for e in entries {
        serde_json::to_writer(&mut text, e).map_err(io::Error::other)?;
        text.push(b'\n');
    }
    let path = dropped_path(state);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(&text)?;
    f.sync_all()?;
    sync_dir(&path)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(parent_dir(path))?.sync_all()
}

fn open_journal(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// The snapshot file. `Ok(None)`: there is none.
fn read_snapshot(path: &Path) -> Result<Option<PersistedConfig>, String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read state file {}: {e}", path.display())),
    };
    let cfg: PersistedConfig = serde_json::from_slice(&bytes)
        .map_err(|e| format!("state file {} is not valid: {e}", path.display()))?;
    if cfg.format != STATE_FORMAT {
        return Err(format!(
            "state file {} has format {:?}, expected {STATE_FORMAT:?}",
            path.display(),
            cfg.format
        ));
    }
    // A newer rvs may have written what this one cannot honour: refuse rather than drop it.
    if cfg.version > STATE_VERSION {
        return Err(format!(
            "state file {} has version {}, newer than this rvs understands ({STATE_VERSION})",
            path.display(),
            cfg.version
        ));
    }
    Ok(Some(cfg))
}

fn write_snapshot(path: &Path, cfg: &PersistedConfig) -> io::Result<()> {
    let mut cfg_bytes = serde_json::to_vec(cfg).map_err(io::Error::other)?;
    cfg_bytes.push(b'\n');
    write_atomic(path, &cfg_bytes, true)
}

/// The active journal file.
struct Journal {
    file: Arc<File>,
    /// Bytes of whole records in the file.
    len: u64,
    next_seq: u64,
    /// Records in the file.
    records: u64,
    /// Compaction starts when `records`/`len` reach these.
    trigger_records: u64,
    trigger_bytes: u64,
    /// After a failure whose effect on the file is unknown, nothing more is written.
    failed: Option<String>,
    /// Test hook: the next write stops with an error after this many bytes.
    #[cfg(test)]
    fail_write_after: Option<usize>,
}

impl Journal {
    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if let Some(n) = self.fail_write_after.take() {
            (&*self.file).write_all(&line[..n.min(line.len())])?;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        (&*self.file).write_all(line)
    }

    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some(e) => Err(io::Error::other(format!(
                "the journal is unusable after an earlier error: {e}"
            ))),
            None => Ok(()),
        }
    }
}

struct SyncState {
    /// Every record up to this one is on disk.
    durable: u64,
    /// A caller is in fdatasync for everyone.
    leader: bool,
    failed: Option<String>,
}

#[derive(Default)]
struct Wake {
    requested: bool,
    stop: bool,
}

struct Shared {
    paths: Paths,
    opts: StoreOptions,
    journal: Mutex<Journal>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    fsyncs: AtomicU64,
    /// One compaction (or snapshot replacement) at a time.
    compacting: Mutex<()>,
    wake: Mutex<Wake>,
    wake_cv: Condvar,
}

/// The locks guard no invariant a panicking holder could break halfway (counters are
/// updated after the I/O they describe), so a poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The snapshot + journal store. Shareable between threads (`&self` methods).
pub struct Store {
    shared: Arc<Shared>,
    compactor: Option<JoinHandle<()>>,
}

impl Store {
    /// Open (or create) the store at the state path with the default options.
    pub fn open(path: &Path) -> Result<(Store, Recovered), String> {
        Store::open_with(path, StoreOptions::default())
    }

    /// Load the snapshot and replay the journal. A leftover temporary snapshot is a write
    /// that was never acknowledged and is deleted; an unfinished last journal line is cut
    /// off; any other damage, a gap in the sequence numbers or a record that does not fit
    /// is an error (never silent loss).
    pub fn open_with(path: &Path, opts: StoreOptions) -> Result<(Store, Recovered), String> {
        let paths = Paths::new(path);
        let _ = fs::remove_file(temp_path(&paths.state));
        let snapshot = read_snapshot(&paths.state)?;
        let mut existed = snapshot.is_some();
        let mut config = snapshot.unwrap_or_else(PersistedConfig::empty);
        let covered = config.journal_seq;
        let mut replay = Replay {
            cfg: &mut config,
            covered,
            last: None,
            applied: 0,
        };
        let read = |p: &Path| match fs::read(p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read journal {}: {e}", p.display())),
        };
        // The old segment was fdatasynced before it was renamed: no torn tail there.
        let old_exists = match read(&paths.old)? {
            Some(bytes) => {
                replay.apply(parse_segment(&bytes, false, &paths.old)?, &paths.old)?;
                true
            }
            None => false,
        };
        let active = read(&paths.journal)?;
        existed |= old_exists || active.is_some();
        let seg = match &active {
            Some(bytes) => parse_segment(bytes, true, &paths.journal)?,
            None => Segment::default(),
        };
        let (torn_tail, valid_len, records) = (seg.torn, seg.valid_len, seg.records.len());
        replay.apply(seg, &paths.journal)?;
        let (end, replayed) = (replay.end(), replay.applied);
        config.journal_seq = end;

        let err = |e: io::Error| format!("cannot open journal {}: {e}", paths.journal.display());
        let file = open_journal(&paths.journal).map_err(err)?;
        if torn_tail {
            // The next record must follow the last valid one directly.
            file.set_len(valid_len).map_err(err)?;
            file.sync_all().map_err(err)?;
        }
        if active.is_none() {
            sync_dir(&paths.journal).map_err(err)?;
        }
        let journal = Journal {
            file: Arc::new(file),
            len: valid_len,
            next_seq: end + 1,
            records: records as u64,
            trigger_records: opts.compact_records.max(1),
            trigger_bytes: opts.compact_bytes.max(1),
            failed: None,
            #[cfg(test)]
            fail_write_after: None,
        };
        let shared = Arc::new(Shared {
            paths,
            opts,
            journal: Mutex::new(journal),
            sync: Mutex::new(SyncState {
                durable: end,
                leader: false,
                failed: None,
            }),
            synced: Condvar::new(),
            fsyncs: AtomicU64::new(0),
            compacting: Mutex::new(()),
            wake: Mutex::new(Wake::default()),
            wake_cv: Condvar::new(),
        });
        let compactor = if opts.background {
            let sh = shared.clone();
            let handle = std::thread::Builder::new()
                .name("rvs-compact".into())
                .spawn(move || sh.compactor_loop())
                .map_err(|e| format!("cannot start the compaction thread: {e}"))?;
            // A compaction a crash interrupted is finished first.
            if old_exists {
                shared.request_compaction();
            }
            Some(handle)
        } else {
            None
        };
        let store = Store { shared, compactor };
        Ok((
            store,
            Recovered {
                config,
                replayed,
                torn_tail,
                existed,
            },
        ))
    }

    /// Write a record to the journal (write(2), no fsync): the change is ordered but not yet
    /// durable, see [`Store::wait_durable`]. Records must be appended in the order the changes
    /// are made. On a write error the journal is cut back to its previous length and the
    /// error returned: the change must then not be made.
    pub fn append(&self, rec: &Record) -> io::Result<Ticket> {
        let json = serde_json::to_string(rec).map_err(io::Error::other)?;
        self.append_json(&json)
    }

    /// [`Store::append`] of a record serialised by the caller (as [`Record::ops_json`]
    /// does), so that the serialisation can happen outside the caller's locks.
    pub fn append_json(&self, json: &str) -> io::Result<Ticket> {
        let mut j = lock(&self.shared.journal);
        j.check()?;
        let seq = j.next_seq;
        let line = encode_line(seq, json);
        if let Err(e) = j.write(&line) {
            if let Err(t) = j.file.set_len(j.len) {
                j.failed = Some(format!("cannot cut off a failed write ({e}): {t}"));
            }
            return Err(e);
        }
        j.len += line.len() as u64;
        j.next_seq += 1;
        j.records += 1;
        if j.records >= j.trigger_records || j.len >= j.trigger_bytes {
            // Ask once per threshold; a failed compaction is retried a threshold later.
            j.trigger_records = j
                .records
                .saturating_add(self.shared.opts.compact_records.max(1));
            j.trigger_bytes = j.len.saturating_add(self.shared.opts.compact_bytes.max(1));
            drop(j);
            self.shared.request_compaction();
        }
        Ok(Ticket(seq))
    }

    /// Return once the ticket's record (and every earlier one) is on disk. Group commit:
    /// one caller at a time runs fdatasync for every record written so far while the others
    /// wait for it, so concurrent changes share one flush. After an fdatasync error the
    /// store fails every later call: what reached the disk is unknown.
    pub fn wait_durable(&self, t: Ticket) -> io::Result<()> {
        let sh = &*self.shared;
        let mut s = lock(&sh.sync);
        loop {
            if s.durable >= t.0 {
                return Ok(());
            }
            if let Some(e) = &s.failed {
                return Err(io::Error::other(e.clone()));
            }
            if s.leader {
                s = sh.synced.wait(s).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            s.leader = true;
            drop(s);
            let (file, upto) = {
                let j = lock(&sh.journal);
                (j.file.clone(), j.next_seq - 1)
            };
            let r = file.sync_data();
            sh.fsyncs.fetch_add(1, Ordering::Relaxed);
            s = lock(&sh.sync);
            s.leader = false;
            sh.synced.notify_all();
            if let Err(e) = r {
                let msg = format!("fdatasync of {}: {e}", sh.paths.journal.display());
                s.failed = Some(msg.clone());
                drop(s);
                lock(&sh.journal).failed = Some(msg);
                return Err(e);
            }
            s.durable = s.durable.max(upto);
        }
    }

    /// fdatasync calls made by [`Store::wait_durable`].
    pub fn fsync_count(&self) -> u64 {
        self.shared.fsyncs.load(Ordering::Relaxed)
    }

    /// Records in the active journal file.
    pub fn journal_records(&self) -> u64 {
        lock(&self.shared.journal).records
    }

    /// Fold the journal into a new snapshot now, in the caller's thread.
    pub fn compact(&self) -> Result<(), String> {
        self.shared.compact()
    }

    /// Replace the saved configuration (after a restore dropped entries): a snapshot that
    /// includes every journal record so far. Appends wait while it is written.
    pub fn replace(&self, cfg: &PersistedConfig) -> Result<(), String> {
        let sh = &*self.shared;
        let _c = lock(&sh.compacting);
        let j = lock(&sh.journal);
        j.check().map_err(|e| e.to_string())?;
        let mut cfg = cfg.clone();
        cfg.journal_seq = j.next_seq - 1;
        write_snapshot(&sh.paths.state, &cfg)
            .map_err(|e| format!("cannot write state file {}: {e}", sh.paths.state.display()))?;
        // Every record of an old segment is now in the snapshot.
        remove_durably(&sh.paths.old)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        lock(&self.shared.wake).stop = true;
        self.shared.wake_cv.notify_all();
        if let Some(h) = self.compactor.take() {
            let _ = h.join();
        }
    }
}

fn remove_durably(path: &Path) -> Result<(), String> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(path)
            .map_err(|e| format!("cannot sync the directory of {}: {e}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot delete {}: {e}", path.display())),
    }
}

impl Shared {
    fn request_compaction(&self) {
        lock(&self.wake).requested = true;
        self.wake_cv.notify_all();
    }

    fn compactor_loop(&self) {
        loop {
            {
                let mut w = lock(&self.wake);
                while !w.requested && !w.stop {
                    w = self.wake_cv.wait(w).unwrap_or_else(PoisonError::into_inner);
                }
                if w.stop {
                    return;
                }
                w.requested = false;
            }
            if let Err(e) = self.compact() {
                eprintln!("rvs: journal compaction failed (retried later): {e}");
            }
        }
    }

    /// Steps (1) to (3) of the module comment. A segment left by an interrupted compaction
    /// is folded first, without a new rotation.
    fn compact(&self) -> Result<(), String> {
        let _c = lock(&self.compacting);
        if !self.paths.old.exists() && !self.rotate()? {
            return Ok(());
        }
        self.write_compacted_snapshot()?;
        remove_durably(&self.paths.old)
    }

    /// Step (1): the journal becomes the old segment, an empty journal takes its place.
    /// `false`: the journal is empty, nothing to compact.
    fn rotate(&self) -> Result<bool, String> {
        let p = &self.paths;
        let mut j = lock(&self.journal);
        j.check().map_err(|e| e.to_string())?;
        if j.len == 0 {
            return Ok(false);
        }
        // Durable first, so no later record (in the new file) can outlive an earlier one.
        if let Err(e) = j.file.sync_data() {
            let msg = format!("fdatasync of {}: {e}", p.journal.display());
            j.failed = Some(msg.clone());
            return Err(msg);
        }
        let last = j.next_seq - 1;
        fs::rename(&p.journal, &p.old)
            .map_err(|e| format!("cannot rename {}: {e}", p.journal.display()))?;
        // From here until the new file is in place, appends would go to the old segment:
        // a failure leaves the store unusable (a restart recovers from the files).
        let fresh = open_journal(&p.journal).and_then(|f| sync_dir(&p.journal).map(|()| f));
        let f = match fresh {
            Ok(f) => f,
            Err(e) => {
                let msg = format!("cannot create {}: {e}", p.journal.display());
                j.failed = Some(msg.clone());
                return Err(msg);
            }
        };
        j.file = Arc::new(f);
        j.len = 0;
        j.records = 0;
        j.trigger_records = self.opts.compact_records.max(1);
        j.trigger_bytes = self.opts.compact_bytes.max(1);
        let mut s = lock(&self.sync);
        s.durable = s.durable.max(last);
        self.synced.notify_all();
        Ok(true)
    }

    /// Step (2): snapshot + old segment -> new snapshot. Reads the files, not the daemon's
    /// state: what it writes is exactly what a recovery would rebuild.
    fn write_compacted_snapshot(&self) -> Result<(), String> {
        let p = &self.paths;
        let mut cfg = read_snapshot(&p.state)?.unwrap_or_else(PersistedConfig::empty);
        let bytes =
            fs::read(&p.old).map_err(|e| format!("cannot read {}: {e}", p.old.display()))?;
        let covered = cfg.journal_seq;
        let mut replay = Replay {
            cfg: &mut cfg,
            covered,
            last: None,
            applied: 0,
        };
        replay.apply(parse_segment(&bytes, false, &p.old)?, &p.old)?;
        let end = replay.end();
        cfg.journal_seq = end;
        cfg.version = STATE_VERSION;
        write_snapshot(&p.state, &cfg)
            .map_err(|e| format!("cannot write state file {}: {e}", p.state.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{PersistedService, State};
    use rvs_core::{DestConfig, Protocol, ServiceConfig, ServiceKey};
    use std::sync::Barrier;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> TempDir {
            let d = std::env::temp_dir().join(format!("rvs-persist-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }
        fn state(&self) -> PathBuf {
            self.0.join("state.json")
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn key(port: u16) -> ServiceKey {
        ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr: "10.0.0.1".parse().unwrap(),
            port,
        }
    }

    /// Record `i`: a new service on port 1000 + i.
    fn rec(i: u16) -> Record {
        Record::Ops(vec![Op::AddService(ServiceConfig::new(key(1000 + i)))])
    }

    fn config_of(recs: &[Record]) -> PersistedConfig {
        let mut cfg = PersistedConfig::empty();
        for r in recs {
            r.apply_to(&mut cfg).unwrap();
        }
        cfg
    }

    fn manual() -> StoreOptions {
        StoreOptions {
            background: false,
            ..StoreOptions::default()
        }
    }

    fn open(p: &Path) -> (Store, Recovered) {
        Store::open_with(p, manual()).unwrap()
    }

    fn append_all(st: &Store, recs: &[Record]) {
        for r in recs {
            let t = st.append(r).unwrap();
            st.wait_durable(t).unwrap();
        }
    }

    /// The configuration without `journal_seq` (which records how it was built).
    fn content(mut c: PersistedConfig) -> PersistedConfig {
        c.journal_seq = 0;
        c
    }

    fn journal_of(p: &Path) -> PathBuf {
        with_suffix(p, ".journal")
    }

    #[test]
    fn ops_json_is_the_record_serde_writes() {
        use rvs_core::{DestConfig, Protocol, ServiceConfig, ServiceKey};
        let k = ServiceKey::Addr {
            protocol: Protocol::Udp,
            addr: "10.0.0.1".parse().unwrap(),
            port: 53,
        };
        for ops in [
            vec![],
            vec![Op::Flush],
            vec![
                Op::AddService(ServiceConfig::new(k)),
                Op::AddDest(k, DestConfig::new("10.0.1.1".parse().unwrap(), 53)),
            ],
        ] {
            let each: Vec<String> = ops
                .iter()
                .map(|o| serde_json::to_string(o).unwrap())
                .collect();
            let built = Record::ops_json(each.iter().map(String::as_str));
            assert_eq!(
                built,
                serde_json::to_string(&Record::Ops(ops.clone())).unwrap()
            );
            let back: Record = serde_json::from_str(&built).unwrap();
            assert_eq!(back, Record::Ops(ops));
        }
    }

    #[test]
    fn save_load_and_garbage() {
        let dir = TempDir::new("legacy");
        let p = dir.state();
        assert_eq!(load_state(&p).unwrap(), None);
        let cfg = State::new().config();
        save_state(&p, &cfg).unwrap();
        assert_eq!(load_state(&p).unwrap(), Some(cfg));
        // a half-written temporary file is ignored and removed
        fs::write(temp_path(&p), b"{\"format\":").unwrap();
        assert!(load_state(&p).unwrap().is_some());
        assert!(!temp_path(&p).exists());
        fs::write(&p, b"not json").unwrap();
        assert!(load_state(&p).is_err());
        // a file from a newer rvs is refused, not half-understood
        let mut newer = State::new().config();
        newer.version = STATE_VERSION + 1;
        save_state(&p, &newer).unwrap();
        assert!(load_state(&p).unwrap_err().contains("newer"));
        assert!(
            Store::open_with(&p, manual())
                .err()
                .unwrap()
                .contains("newer")
        );
    }

    #[test]
    fn journal_round_trip() {
        let dir = TempDir::new("roundtrip");
        let p = dir.state();
        let (st, rec0) = Store::open(&p).unwrap();
        assert!(!rec0.existed);
        assert_eq!(rec0.config, PersistedConfig::empty());
        let mut recs: Vec<Record> = (0..5).map(rec).collect();
        recs.push(Record::Ops(vec![
            Op::AddDest(key(1000), DestConfig::new("10.0.1.1".parse().unwrap(), 80)),
            Op::AddDest(key(1000), DestConfig::new("10.0.1.2".parse().unwrap(), 80)),
            Op::DelService(key(1001)),
        ]));
        recs.push(Record::Sysctl {
            name: "expire_quiescent_template".into(),
            value: "1".into(),
        });
        append_all(&st, &recs);
        drop(st);
        let (_st, r) = open(&p);
        assert!(r.existed);
        assert!(!r.torn_tail);
        assert_eq!(r.replayed, 7);
        assert_eq!(r.config.journal_seq, 7);
        assert_eq!(content(r.config.clone()), config_of(&recs));
        assert_eq!(r.config.services.len(), 4);
        assert_eq!(r.config.services[0].dests[0].addr.to_string(), "10.0.1.2");
        assert_eq!(r.config.sysctls["expire_quiescent_template"], "1");
        // one JSON object per line, with sequence number and checksum
        let text = fs::read_to_string(journal_of(&p)).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["seq"], 1);
        assert_eq!(first["crc"].as_str().unwrap().len(), 8);
    }

    #[test]
    fn group_commit_shares_one_fdatasync() {
        let dir = TempDir::new("group");
        let (st, _) = open(&dir.state());
        let st = Arc::new(st);
        // Every thread appends, then all wait: the first fdatasync covers every record.
        let threads = 8;
        let barrier = Arc::new(Barrier::new(threads));
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (st, barrier) = (st.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let tickets: Vec<Ticket> = (0..10)
                        .map(|i| st.append(&rec((t * 10 + i) as u16)).unwrap())
                        .collect();
                    barrier.wait();
                    for tk in tickets {
                        st.wait_durable(tk).unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(st.fsync_count(), 1);
        // Interleaved appends and waits from many threads: every wait returns, and no
        // record costs more than one flush (how many share one depends on the disk).
        let before = st.fsync_count();
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let st = st.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let tk = st.append(&rec((100 + t * 25 + i) as u16)).unwrap();
                        st.wait_durable(tk).unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let used = st.fsync_count() - before;
        eprintln!("200 records from 8 threads: {used} fdatasyncs");
        assert!((1..=200).contains(&used));
        drop(st);
        let (_st, r) = open(&dir.state());
        assert_eq!(r.replayed, 80 + 200);
        assert_eq!(r.config.services.len(), 280);
    }

    #[test]
    fn torn_tail_is_cut_off() {
        let dir = TempDir::new("torn");
        let p = dir.state();
        let recs: Vec<Record> = (0..3).map(rec).collect();
        let (st, _) = open(&p);
        append_all(&st, &recs);
        drop(st);
        let good = fs::read(journal_of(&p)).unwrap();
        // a crash in the middle of the fourth line
        let fourth = encode_line(4, &serde_json::to_string(&rec(3)).unwrap());
        let tails: [&[u8]; 3] = [
            &fourth[..fourth.len() / 2],
            // all but the newline
            &fourth[..fourth.len() - 1],
            // a file extension the data never reached
            &[0u8; 40],
        ];
        for tail in tails {
            let mut bytes = good.clone();
            bytes.extend_from_slice(tail);
            fs::write(journal_of(&p), &bytes).unwrap();
            let (st, r) = open(&p);
            assert!(r.torn_tail);
            assert_eq!(r.replayed, 3);
            assert_eq!(content(r.config), config_of(&recs));
            assert_eq!(fs::read(journal_of(&p)).unwrap(), good, "cut back");
            // the next record follows the last valid one
            append_all(&st, &[rec(9)]);
            drop(st);
            let (_st, r) = open(&p);
            assert!(!r.torn_tail);
            assert_eq!(r.replayed, 4);
            fs::write(journal_of(&p), &good).unwrap();
        }
        // a whole last line with a wrong checksum is a torn write too
        let mut bytes = good.clone();
        let mut bad = fourth.clone();
        bad[10] ^= 1;
        bytes.extend_from_slice(&bad);
        fs::write(journal_of(&p), &bytes).unwrap();
        let (_st, r) = open(&p);
        assert!(r.torn_tail);
        assert_eq!(r.replayed, 3);
    }

    #[test]
    fn corrupt_middle_or_gap_is_refused() {
        let dir = TempDir::new("corrupt");
        let p = dir.state();
        let (st, _) = open(&p);
        append_all(&st, &(0..3).map(rec).collect::<Vec<_>>());
        drop(st);
        let good = fs::read(journal_of(&p)).unwrap();
        let lines: Vec<&[u8]> = good.split_inclusive(|&b| b == b'\n').collect();
        // one flipped bit in the second line
        let mut bytes = good.clone();
        bytes[lines[0].len() + 20] ^= 0x01;
        fs::write(journal_of(&p), &bytes).unwrap();
        let e = Store::open_with(&p, manual()).err().unwrap();
        assert!(e.contains("line 2") && e.contains("checksum"), "{e}");
        // the file is left as it was
        assert_eq!(fs::read(journal_of(&p)).unwrap(), bytes);
        // a missing line in the middle
        fs::write(journal_of(&p), [lines[0], lines[2]].concat()).unwrap();
        let e = Store::open_with(&p, manual()).err().unwrap();
        assert!(e.contains("record 3 follows record 1"), "{e}");
        // a journal that starts after what the snapshot includes
        fs::write(journal_of(&p), lines[1]).unwrap();
        let e = Store::open_with(&p, manual()).err().unwrap();
        assert!(e.contains("starts at record 2"), "{e}");
        // a record that does not fit (a service added twice)
        let again = encode_line(2, &serde_json::to_string(&rec(0)).unwrap());
        fs::write(journal_of(&p), [lines[0], &again].concat()).unwrap();
        let e = Store::open_with(&p, manual()).err().unwrap();
        assert!(e.contains("record 2 does not fit"), "{e}");
    }

    #[test]
    fn failed_write_is_cut_back() {
        let dir = TempDir::new("enospc");
        let p = dir.state();
        let (st, _) = open(&p);
        append_all(&st, &[rec(0)]);
        let len = fs::metadata(journal_of(&p)).unwrap().len();
        lock(&st.shared.journal).fail_write_after = Some(15);
        let e = st.append(&rec(1)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(fs::metadata(journal_of(&p)).unwrap().len(), len);
        // the failed record's number goes to the next one
        let t = st.append(&rec(2)).unwrap();
        assert_eq!(t, Ticket(2));
        st.wait_durable(t).unwrap();
        drop(st);
        let (_st, r) = open(&p);
        assert!(!r.torn_tail);
        assert_eq!(content(r.config), config_of(&[rec(0), rec(2)]));
    }

    /// A compaction interrupted after each of its steps recovers every record exactly once.
    #[test]
    fn compaction_crash_points() {
        let all: Vec<Record> = (0..5).map(rec).collect();
        let want = config_of(&all);
        for stop_after in 0..=3 {
            let dir = TempDir::new(&format!("compact{stop_after}"));
            let p = dir.state();
            let (st, _) = open(&p);
            append_all(&st, &all[..3]);
            if stop_after >= 1 {
                assert!(st.shared.rotate().unwrap());
                assert!(with_suffix(&p, ".journal.old").exists());
            }
            // changes go on while the old segment waits
            append_all(&st, &all[3..]);
            if stop_after >= 2 {
                st.shared.write_compacted_snapshot().unwrap();
                // and a crash while a later snapshot was being written
                fs::write(temp_path(&p), b"{\"format\":\"rvs-st").unwrap();
            }
            if stop_after >= 3 {
                remove_durably(&st.shared.paths.old).unwrap();
            }
            drop(st); // the crash
            let (st, r) = open(&p);
            assert_eq!(
                content(r.config.clone()),
                want,
                "stopped after step {stop_after}"
            );
            assert_eq!(r.config.journal_seq, 5);
            assert_eq!(r.replayed, if stop_after >= 2 { 2 } else { 5 });
            assert!(!temp_path(&p).exists());
            // the next compaction finishes the job
            st.compact().unwrap();
            assert!(!with_suffix(&p, ".journal.old").exists());
            let snap = read_snapshot(&p).unwrap().unwrap();
            // a waiting old segment is folded on its own, else the whole journal
            let folded = if (1..=2).contains(&stop_after) { 3 } else { 5 };
            assert_eq!(snap.journal_seq, folded);
            append_all(&st, &[rec(7)]);
            drop(st);
            let (_st, r) = open(&p);
            let mut want7 = want.clone();
            rec(7).apply_to(&mut want7).unwrap();
            assert_eq!(content(r.config.clone()), want7);
            assert_eq!(r.config.journal_seq, 6);
        }
    }

    #[test]
    fn background_compaction_keeps_the_journal_short() {
        let dir = TempDir::new("background");
        let p = dir.state();
        let opts = StoreOptions {
            compact_records: 10,
            compact_bytes: u64::MAX,
            background: true,
        };
        let (st, _) = Store::open_with(&p, opts).unwrap();
        let recs: Vec<Record> = (0..35).map(rec).collect();
        append_all(&st, &recs);
        let t0 = std::time::Instant::now();
        while read_snapshot(&p)
            .unwrap()
            .is_none_or(|s| s.journal_seq < 30)
        {
            assert!(t0.elapsed().as_secs() < 20, "no compaction");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(st.journal_records() < 10);
        drop(st);
        let (_st, r) = Store::open_with(&p, opts).unwrap();
        assert_eq!(content(r.config), config_of(&recs));
        assert!(r.replayed < 10);
    }

    #[test]
    fn version_1_file_loads_and_continues() {
        let dir = TempDir::new("v1");
        let p = dir.state();
        let v1 = r#"{"format":"rvs-state","version":1,
 "services":[{"config":{"key":{"Addr":{"protocol":"Tcp","addr":"10.0.0.1","port":80}},
   "scheduler":"rr","flags":0,"timeout":0,"netmask":{"V4":"255.255.255.255"},"pe_name":null},
   "dests":[]}],
 "timeouts":{"tcp":900,"tcp_fin":120,"udp":300},
 "daemons":[],
 "sysctls":{"expire_quiescent_template":"1"}}"#;
        fs::write(&p, v1).unwrap();
        let (st, r) = open(&p);
        assert!(r.existed);
        assert_eq!(r.config.journal_seq, 0);
        assert_eq!(r.config.services.len(), 1);
        assert_eq!(r.config.services[0].config.scheduler, "rr");
        assert_eq!(r.config.sysctls["expire_quiescent_template"], "1");
        append_all(&st, &[rec(0)]);
        st.compact().unwrap();
        drop(st);
        let snap = read_snapshot(&p).unwrap().unwrap();
        assert_eq!((snap.version, snap.journal_seq), (STATE_VERSION, 1));
        assert_eq!(snap.services.len(), 2);
    }

    #[test]
    fn replace_and_dropped_side_file() {
        let dir = TempDir::new("replace");
        let p = dir.state();
        let (st, _) = open(&p);
        append_all(&st, &(0..3).map(rec).collect::<Vec<_>>());
        let mut cfg = config_of(&[rec(1)]);
        cfg.services.push(PersistedService {
            config: ServiceConfig::new(key(7)),
            dests: Vec::new(),
        });
        st.replace(&cfg).unwrap();
        append_all(&st, &[rec(5)]);
        drop(st);
        let (_st, r) = open(&p);
        let mut want = cfg.clone();
        rec(5).apply_to(&mut want).unwrap();
        assert_eq!(content(r.config), content(want));
        assert_eq!(r.replayed, 1);

        let entry = DroppedEntry {
            entry: "service TCP 10.0.0.1:81".into(),
            reason: "NoEnt (errno 2)".into(),
            ops: vec![Op::DelService(key(81))],
        };
        append_dropped(&p, std::slice::from_ref(&entry)).unwrap();
        append_dropped(&p, std::slice::from_ref(&entry)).unwrap();
        let text = fs::read_to_string(dropped_path(&p)).unwrap();
        assert_eq!(text.lines().count(), 2);
        let back: DroppedEntry = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(back, entry);
    }
}
