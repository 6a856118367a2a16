//! The writer: [`AuditLog`].

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{Map, Value};

use super::chain::{build_line, now_rfc3339, record_hash, GENESIS};
use super::checkpoint::CheckpointSigner;
use super::revlines::{complete_len, RevLines};
use super::{closes, AuditConfig};
use crate::devstack::certs::{prepare_dir, KEY_MODE};

/// Room kept allocated past the log's end (`fallocate`, the file's size unchanged) for the
/// records that close what is open ([`super::closes`]: a job's end, its sandbox's end). Any
/// other record is appended only if this much can stay allocated after it, so on a full (or
/// read-only) disk the runner refuses a call before its job starts, instead of running a job
/// whose end it cannot record. 1 MiB holds the end records of hundreds of jobs, far more than
/// the job queues let run at once.
pub const CLOSING_HEADROOM: u64 = 1 << 20;
/// Allocation past the end grows by this much beyond what is needed, so `fallocate` runs
/// about once per this many bytes of records.
const ALLOCATION_STEP: u64 = 64 << 10;

/// The audit log, open for appending. Share it as `Arc<AuditLog>`; every method is
/// thread-safe (one mutex orders the records).
pub struct AuditLog {
    path: PathBuf,
    checkpoints_path: PathBuf,
    every_records: u64,
    every: Duration,
    signer: CheckpointSigner,
    state: Mutex<State>,
}

struct State {
    file: File,
    /// Length of the log: all of it complete, durable lines.
    len: u64,
    /// The last record's seq (0: empty log) and hash.
    seq: u64,
    head: String,
    checkpoints: File,
    checkpoints_len: u64,
    /// Records covered by the last checkpoint written.
    checkpointed: u64,
    /// The file's blocks are allocated up to here (at least `len`).
    allocated: u64,
    /// Set when a failed write could not be undone: appending after half a line would break
    /// the chain, so every later append fails instead.
    broken: Option<String>,
}

impl AuditLog {
    /// Opens (or creates, 0600 in a 0700 directory) the log and the checkpoints file, and
    /// recovers the last seq and head hash from the log's last line.
    ///
    /// A last line without its `\n` is a write that a crash cut short. [`AuditLog::append`]
    /// returns only after the whole line is durable, so nothing that line recorded was ever
    /// acknowledged (no response that it records left the runner): it is moved to
    /// `<log>.torn` (kept for inspection) and cut from the log, and the chain continues from
    /// the last complete record. The same holds for the checkpoints file. A complete last
    /// line that does not match its own hash refuses to open: run `portcullis audit verify`.
    pub fn open(cfg: AuditConfig) -> anyhow::Result<Arc<AuditLog>> {
        let signer = CheckpointSigner::from_pem(&cfg.signing_key_pem)?;
        let (file, len) = open_repaired(&cfg.log)?;
        match allocate(&file, len, len + 1) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                bail!("the file system of the audit log {} cannot preallocate (fallocate): the runner keeps room for the records that end running jobs, and cannot here", cfg.log.display())
            }
            // A full disk refuses calls (with a clear error) rather than the runner's start.
            _ => {}
        }
        let (seq, head) = match RevLines::new(&file, len).next().transpose()? {
            None => (0, GENESIS.to_owned()),
            Some((_, line)) => last_record(&line).with_context(|| format!("recovering the audit log {}: its last record is damaged; run `portcullis audit verify`", cfg.log.display()))?,
        };
        let (checkpoints, checkpoints_len) = open_repaired(&cfg.checkpoints)?;
        let checkpointed = match RevLines::new(&checkpoints, checkpoints_len).next().transpose()? {
            None => 0,
            Some((_, line)) => serde_json::from_slice::<Value>(&line).ok().and_then(|v| v.get("count").and_then(Value::as_u64)).unwrap_or(0),
        };
        if checkpointed > seq {
            bail!(
                "the audit log {} has {seq} records but its last checkpoint in {} covers {checkpointed}: records were removed; run `portcullis audit verify`",
                cfg.log.display(),
                cfg.checkpoints.display()
            );
        }
        tracing::info!(log = %cfg.log.display(), checkpoints = %cfg.checkpoints.display(), records = seq, "audit log open");
        Ok(Arc::new(AuditLog {
            path: cfg.log,
            checkpoints_path: cfg.checkpoints,
            every_records: cfg.checkpoint_every_records,
            every: cfg.checkpoint_every,
            signer,
            state: Mutex::new(State { file, len, seq, head, checkpoints, checkpoints_len, checkpointed, allocated: len, broken: None }),
        }))
    }

    /// Appends one record and makes it durable (write + `fdatasync`) before returning its seq.
    ///
    /// It blocks the calling thread for one write and one `fdatasync` (tens of microseconds on
    /// tmpfs, typically well under a few milliseconds on an SSD), under a mutex that orders
    /// the records. That is cheap enough to call directly from async request handlers on
    /// tokio's multi-threaded runtime; call it before sending the response it records.
    /// `fields` may not use `seq`, `time`, `event`, `prev` or `hash`.
    pub fn append(&self, event: &str, fields: Map<String, Value>) -> io::Result<u64> {
        self.append_many(&[(event, fields)])
    }

    /// Appends several records with one write and one `fdatasync`; returns the last seq.
    ///
    /// Unless every record closes something ([`super::closes`]), the append fails (and writes
    /// nothing) when [`CLOSING_HEADROOM`] cannot stay allocated past the records.
    pub fn append_many(&self, records: &[(&str, Map<String, Value>)]) -> io::Result<u64> {
        let mut st = self.lock();
        if let Some(why) = &st.broken {
            return Err(io::Error::other(format!("the audit log is unusable: {why}")));
        }
        let time = now_rfc3339();
        let (mut seq, mut head) = (st.seq, st.head.clone());
        let mut buf = String::new();
        for (event, fields) in records {
            seq += 1;
            let (line, hash) = build_line(seq, &time, event, fields, &head)?;
            buf.push_str(&line);
            head = hash;
        }
        let old_len = st.len;
        let end = old_len + buf.len() as u64;
        let closing = records.iter().all(|(event, _)| closes(event));
        make_room(&mut st, if closing { end } else { end + CLOSING_HEADROOM })?;
        let st_ref = &mut *st;
        if let Err(e) = append_durably(&mut st_ref.file, old_len, buf.as_bytes()) {
            // The undo cut the file back, and with it what was allocated past its end.
            st_ref.allocated = old_len;
            if let Some(why) = e.1 {
                st_ref.broken = Some(why);
            }
            return Err(e.0);
        }
        st.len += buf.len() as u64;
        st.seq = seq;
        st.head = head;
        if self.every_records > 0 && st.seq - st.checkpointed >= self.every_records {
            if let Err(e) = self.write_checkpoint(&mut st) {
                tracing::error!(error = %e, "audit: writing a checkpoint failed; retried later");
            }
        }
        Ok(seq)
    }

    /// Writes a checkpoint if records were appended since the last one; returns its count.
    pub fn checkpoint_if_new(&self) -> io::Result<Option<u64>> {
        let mut st = self.lock();
        if st.seq == st.checkpointed {
            return Ok(None);
        }
        self.write_checkpoint(&mut st).map(Some)
    }

    fn write_checkpoint(&self, st: &mut State) -> io::Result<u64> {
        let line = self.signer.line(st.seq, &st.head, &now_rfc3339())?;
        append_durably(&mut st.checkpoints, st.checkpoints_len, line.as_bytes()).map_err(|e| e.0)?;
        st.checkpoints_len += line.len() as u64;
        st.checkpointed = st.seq;
        Ok(st.seq)
    }

    /// The last record (newest first) for which `matches` holds, searching back from the end.
    pub fn last_record_where(&self, matches: impl Fn(&Map<String, Value>) -> bool) -> io::Result<Option<Map<String, Value>>> {
        let mut found = None;
        self.each_record_back(|record| {
            if matches(&record) {
                found = Some(record);
            }
            found.is_none()
        })?;
        Ok(found)
    }

    /// The records after the last one for which `stop` holds (all of them if none does),
    /// newest first: a search back from the end that reads no further than it must.
    pub fn records_since_last(&self, stop: impl Fn(&Map<String, Value>) -> bool) -> io::Result<Vec<Map<String, Value>>> {
        let mut records = Vec::new();
        self.each_record_back(|record| {
            let go_on = !stop(&record);
            if go_on {
                records.push(record);
            }
            go_on
        })?;
        Ok(records)
    }

    /// Hands `visit` the log's records, newest first, while it returns true.
    fn each_record_back(&self, mut visit: impl FnMut(Map<String, Value>) -> bool) -> io::Result<()> {
        let (file, len) = {
            let st = self.lock();
            (st.file.try_clone()?, st.len)
        };
        for line in RevLines::new(&file, len) {
            let (_, line) = line?;
            if let Ok(Value::Object(record)) = serde_json::from_slice(&line) {
                if !visit(record) {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The number of records (the last seq).
    pub fn records(&self) -> u64 {
        self.lock().seq
    }

    /// The last record's hash (the [`GENESIS`] value when empty).
    pub fn head(&self) -> String {
        self.lock().head.clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn checkpoints_path(&self) -> &Path {
        &self.checkpoints_path
    }

    pub fn checkpoint_every(&self) -> Duration {
        self.every.max(Duration::from_millis(10))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // State changes only after a write succeeded, so a panic elsewhere leaves it whole.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Makes sure the log's blocks are allocated up to `need`: a step beyond it when there is room
/// for that, or exactly up to it; if not even that, the disk has no room (or is read-only).
fn make_room(st: &mut State, need: u64) -> io::Result<()> {
    if need <= st.allocated {
        return Ok(());
    }
    let step = allocate(&st.file, st.len, need + ALLOCATION_STEP).map(|()| need + ALLOCATION_STEP);
    match step.or_else(|_| allocate(&st.file, st.len, need).map(|()| need)) {
        Ok(allocated) => {
            st.allocated = allocated;
            Ok(())
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("no room for the record and the {} KiB kept for the records that end running jobs ({e})", CLOSING_HEADROOM >> 10),
        )),
    }
}

/// Allocates the file's blocks from `from` up to `to`, keeping its size.
fn allocate(file: &File, from: u64, to: u64) -> io::Result<()> {
    let (offset, len) = (i64::try_from(from).map_err(io::Error::other)?, i64::try_from(to.saturating_sub(from)).map_err(io::Error::other)?);
    nix::fcntl::fallocate(file, nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE, offset, len).map_err(io::Error::from)
}

/// Appends `bytes` at `len` and syncs. On failure, cuts the file back to `len` so the next
/// append does not follow a partial line; if that fails too, the second value says why the
/// file is unusable.
fn append_durably(file: &mut File, len: u64, bytes: &[u8]) -> Result<(), (io::Error, Option<String>)> {
    match file.write_all(bytes).and_then(|()| file.sync_data()) {
        Ok(()) => Ok(()),
        Err(e) => {
            let undo = file.set_len(len).and_then(|()| file.sync_data());
            Err((e, undo.err().map(|u| format!("a failed write could not be undone: {u}"))))
        }
    }
}

/// The seq and hash of a log's last line, which must match its own hash.
fn last_record(line: &[u8]) -> anyhow::Result<(u64, String)> {
    let Value::Object(mut record) = serde_json::from_slice(line)? else { bail!("not a JSON object") };
    let seq = record.get("seq").and_then(Value::as_u64).context("no seq")?;
    let hash = match record.remove("hash") {
        Some(Value::String(h)) => h,
        _ => bail!("no hash"),
    };
    let computed = record_hash(&record).map_err(anyhow::Error::msg)?;
    if computed != hash {
        bail!("record {seq} carries hash {hash} but its content hashes to {computed}");
    }
    Ok((seq, hash))
}

/// Opens `path` for appending (creating it 0600, and its directory 0700), removes a torn last
/// line (see [`AuditLog::open`]), and returns it with its length.
fn open_repaired(path: &Path) -> anyhow::Result<(File, u64)> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    prepare_dir(dir)?;
    let existed = path.exists();
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(KEY_MODE)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let meta = file.metadata()?;
    if meta.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(KEY_MODE))?;
    }
    if !existed {
        // The new file's name must survive a crash too.
        File::open(dir)?.sync_all()?;
    }
    let len = meta.len();
    let complete = complete_len(&file, len)?;
    if complete < len {
        use std::os::unix::fs::FileExt;
        let mut torn = vec![0u8; (len - complete) as usize];
        file.read_exact_at(&mut torn, complete)?;
        let mut aside = path.as_os_str().to_owned();
        aside.push(".torn");
        let mut out = OpenOptions::new().append(true).create(true).mode(KEY_MODE).open(&aside)?;
        out.write_all(&torn)?;
        out.write_all(b"\n")?;
        out.sync_all()?;
        file.set_len(complete)?;
        file.sync_all()?;
        tracing::warn!(file = %path.display(), bytes = torn.len(), kept_in = %Path::new(&aside).display(), "audit: removed a torn last line (a write cut short by a crash; never acknowledged)");
    }
    Ok((file, complete))
}
