//! The embedded bus: four append-only log files in one folder.
//!
//! Each stream is one file, `<stream>.log`, of framed records: a
//! little-endian `u32` length, a little-endian `u32` CRC-32 of the length
//! bytes and the record together, then the record. A record's offset is its
//! number in the file. An append writes every frame at the file's end under
//! one lock and syncs each file it wrote before it is acknowledged; readers
//! see a record only once it is synced, so nothing a reader acted on can be
//! lost in a crash and its offset reused. Readers in the same process are
//! woken by a condition variable; readers never write.
//!
//! Opening a log reads each file through, checking every frame, and cuts off
//! what follows the last whole one: the tail of an append that a crash
//! interrupted before it was synced, so never acknowledged. The CRC covers
//! the length, so a run of zeros (a file the system extended but never
//! wrote) is not a record. Damage where records were acknowledged is not a
//! torn append and is not cut: at most once a second an append also records
//! the synced end of each file it wrote in `<stream>.synced` (the recovery
//! point, as Kafka keeps one), and a log damaged before its recovery point
//! is refused at open, naming the stream and the record.
//!
//! Why files and not sled trees, as this log was until it was measured: a
//! sled leaf holds up to 16 values and is rewritten whole when it splits or
//! after ten changes, so a log of 64 KiB record groups wrote about 5.5 bytes
//! for every byte appended (8.4 KB an event for 1.3 KB of records, in
//! `clew-bench kafka`). A file written at its end writes each byte once.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::codec::{decode, encode, stream_of};
use crate::{
    Bus, BusError, FollowFrom, Follower, InboundReader, InboundRecord, OutboundWriter, Outgoing,
    Published, Stream,
};

/// The single source name of the embedded inbound stream.
pub const EMBEDDED_SOURCE: &str = "embedded";

const INBOUND: &str = "inbound";

/// Bytes before each record: its length and the CRC.
const FRAME_HEADER: u64 = 8;

/// Every this many records the index keeps a record's byte position, so a
/// read from any offset starts at most this many records before it.
const INDEX_EVERY: u64 = 256;

/// Most bytes a read takes from a file at once (more when one record is
/// larger).
const READ_CHUNK: u64 = 1 << 20;

/// At most this often an append records a file's synced end.
const RECOVERY_POINT_EVERY: Duration = Duration::from_secs(1);

/// Files of the sled database this log was kept in before; a folder that
/// holds them is refused rather than silently started afresh.
const EARLIER_FORMAT: [&str; 2] = ["conf", "db"];

/// A durable log in its own folder, shared by the threads of one process
/// (a lock file keeps other processes out).
#[derive(Clone)]
pub struct EmbeddedBus {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// Held (locked) for as long as the log is open.
    _lock: File,
    logs: HashMap<&'static str, Arc<LogFile>>,
    /// Serialises appends; each stream's end.
    append: Mutex<HashMap<&'static str, End>>,
    /// What readers may see; waited on through `appended`.
    visible: Mutex<Visible>,
    appended: Condvar,
}

/// One stream's file and where its records start.
struct LogFile {
    name: &'static str,
    file: File,
    /// `<stream>.synced`: a byte position below which every frame was
    /// synced, as a little-endian `u64` and its CRC-32.
    recovery_point: PathBuf,
    /// When this process last recorded it (under the append lock).
    recorded: Mutex<Option<Instant>>,
    /// `index[k]` is the byte position of record `k * INDEX_EVERY`.
    index: RwLock<Vec<u64>>,
}

/// The end of a stream: its next offset and the byte position it goes at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct End {
    offset: u64,
    position: u64,
}

/// Bumped on every durable append, with each stream's synced end.
#[derive(Default)]
struct Visible {
    generation: u64,
    durable: HashMap<&'static str, End>,
}

impl std::fmt::Debug for EmbeddedBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBus")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> BusError {
    BusError::Storage(format!("{what} {}: {e}", path.display()))
}

impl EmbeddedBus {
    /// Opens (or creates) the log in `dir`, cutting off the unacknowledged
    /// tail a crash may have left.
    pub fn open(dir: &Path) -> Result<Self, BusError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
        if let Some(old) = EARLIER_FORMAT.iter().find(|f| dir.join(f).exists()) {
            return Err(BusError::Setup(format!(
                "{} holds an embedded log in the earlier sled format ({old}); this version keeps \
                 one file per stream and does not read it: move the folder away",
                dir.display()
            )));
        }
        let lock = lock(&dir.join("lock"))?;
        let mut logs = HashMap::new();
        let mut ends = HashMap::new();
        let mut created = false;
        for name in std::iter::once(INBOUND).chain(Stream::ALL.iter().map(|s| s.name())) {
            let path = dir.join(format!("{name}.log"));
            created |= !path.exists();
            let (log, end) = LogFile::open(name, &path, dir.join(format!("{name}.synced")))?;
            logs.insert(name, Arc::new(log));
            ends.insert(name, end);
        }
        if created {
            // A new file's name is durable once its folder is synced.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error("cannot sync", dir, e))?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                _lock: lock,
                logs,
                append: Mutex::new(ends.clone()),
                visible: Mutex::new(Visible {
                    generation: 0,
                    durable: ends,
                }),
                appended: Condvar::new(),
            }),
        })
    }

    /// Number of records on the inbound stream (its synced end, kept in
    /// memory since the log was opened).
    pub fn inbound_len(&self) -> u64 {
        self.visible().1.get(INBOUND).map_or(0, |end| end.offset)
    }

    fn log(&self, name: &'static str) -> Result<Arc<LogFile>, BusError> {
        self.inner
            .logs
            .get(name)
            .cloned()
            .ok_or_else(|| BusError::Setup(format!("the embedded log has no stream {name}")))
    }

    /// Appends each stream's records (in order) and syncs every file
    /// written; returns once they are durable and visible to readers.
    fn append(&self, streams: &[(&'static str, Vec<&[u8]>)]) -> Result<(), BusError> {
        if streams.iter().all(|(_, values)| values.is_empty()) {
            return Ok(());
        }
        let written = {
            let mut ends = self
                .inner
                .append
                .lock()
                .map_err(|_| BusError::Setup("embedded log lock poisoned".into()))?;
            let mut written: Vec<(Arc<LogFile>, End, End)> = Vec::new();
            let outcome = (|| {
                for (name, values) in streams {
                    if values.is_empty() {
                        continue;
                    }
                    let log = self.log(name)?;
                    let before = ends.get(name).copied().unwrap_or_default();
                    let after = log.write(before, values)?;
                    written.push((log, before, after));
                }
                // Durable before acknowledged; only then does the end move.
                for (log, _, _) in &written {
                    log.file
                        .sync_data()
                        .map_err(|e| BusError::Storage(format!("cannot sync {}: {e}", log.name)))?;
                }
                Ok(())
            })();
            if let Err(e) = outcome {
                // Nothing of a failed append may be read back after a
                // restart: each file goes back to where it ended.
                for (log, before, _) in &written {
                    let _ = log.file.set_len(before.position);
                }
                return Err(e);
            }
            for (log, _, end) in &written {
                ends.insert(log.name, *end);
                // The records are durable whatever happens here: a recovery
                // point not recorded only narrows what opening can tell
                // from a torn tail.
                if let Err(e) = log.record_recovery_point(*end) {
                    tracing::warn!(stream = log.name, error = %e, "cannot record the embedded log's recovery point");
                }
            }
            written
        };
        if let Ok(mut v) = self.inner.visible.lock() {
            for (log, _, end) in written {
                let durable = v.durable.entry(log.name).or_default();
                if end.offset > durable.offset {
                    *durable = end;
                }
            }
            v.generation += 1;
        }
        self.inner.appended.notify_all();
        Ok(())
    }

    /// The current generation and every stream's synced end.
    fn visible(&self) -> (u64, HashMap<&'static str, End>) {
        self.inner
            .visible
            .lock()
            .map(|v| (v.generation, v.durable.clone()))
            .unwrap_or_default()
    }

    fn wait_past(&self, seen: u64, deadline: Instant) {
        let Ok(mut v) = self.inner.visible.lock() else {
            return;
        };
        while v.generation == seen {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            match self.inner.appended.wait_timeout(v, deadline - now) {
                Ok((next, _)) => v = next,
                Err(_) => return,
            }
        }
    }
}

/// Locks `path` against other processes, waiting a little for a handle this
/// process dropped moments ago.
fn lock(path: &Path) -> Result<File, BusError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| io_error("cannot open", path, e))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs4::fs_std::FileExt::try_lock_exclusive(&file) {
            Ok(true) => return Ok(file),
            Ok(false) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(false) => {
                return Err(BusError::Setup(format!(
                    "the embedded log in {} is open in another process",
                    path.parent().unwrap_or(path).display()
                )))
            }
            Err(e) => return Err(io_error("cannot lock", path, e)),
        }
    }
}

/// The recovery point recorded in `path`: 0 when there is none yet, or
/// when it does not check out (then the whole file is checked as a tail
/// would be, and an operator is told).
fn read_recovery_point(stream: &'static str, path: &Path) -> u64 {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return 0,
        Err(e) => {
            tracing::warn!(stream, error = %e, "cannot read the embedded log's recovery point");
            return 0;
        }
    };
    let parsed = <[u8; 12]>::try_from(bytes.as_slice()).ok().and_then(|b| {
        let position = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
        let crc = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        (crc32fast::hash(&position) == crc).then(|| u64::from_le_bytes(position))
    });
    parsed.unwrap_or_else(|| {
        tracing::warn!(stream, path = %path.display(), "the embedded log's recovery point is damaged; ignoring it");
        0
    })
}

/// A record framed for its file: length, CRC of the length and the record,
/// the record.
fn frame_into(out: &mut Vec<u8>, record: &[u8]) -> Result<(), BusError> {
    let len = u32::try_from(record.len())
        .map_err(|_| BusError::Setup(format!("a record of {} bytes is too large", record.len())))?;
    let len = len.to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&frame_crc(len, record).to_le_bytes());
    out.extend_from_slice(record);
    Ok(())
}

/// A frame's CRC-32: of its length bytes and its record together.
fn frame_crc(len: [u8; 4], record: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(record);
    crc.finalize()
}

/// What the bytes at the start of `buf` hold.
#[derive(Debug, PartialEq, Eq)]
enum Frame<'a> {
    /// A whole record, checked, and the frame's length.
    Record(&'a [u8], u64),
    /// The frame goes on past `buf`: this many bytes hold all of it.
    Needs(u64),
    /// The bytes are not a record (a torn or damaged frame).
    Damaged,
}

fn frame_at(buf: &[u8]) -> Frame<'_> {
    let Some((header, rest)) = buf.split_first_chunk::<8>() else {
        return Frame::Needs(FRAME_HEADER);
    };
    let len_bytes = [header[0], header[1], header[2], header[3]];
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let len = u32::from_le_bytes(len_bytes) as usize;
    let Some(record) = rest.get(..len) else {
        return Frame::Needs(FRAME_HEADER + len as u64);
    };
    if frame_crc(len_bytes, record) == crc {
        Frame::Record(record, FRAME_HEADER + len as u64)
    } else {
        Frame::Damaged
    }
}

impl LogFile {
    /// Opens `path`, checks every frame, indexes the records and cuts off
    /// anything after the last whole one; refuses a file damaged before its
    /// recovery point.
    fn open(
        name: &'static str,
        path: &Path,
        recovery_point: PathBuf,
    ) -> Result<(Self, End), BusError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io_error("cannot open", path, e))?;
        let length = file
            .metadata()
            .map_err(|e| io_error("cannot read", path, e))?
            .len();
        let mut index = Vec::new();
        let mut end = End::default();
        let mut reader = std::io::BufReader::with_capacity(READ_CHUNK as usize, &file);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            (&mut reader)
                .take(FRAME_HEADER)
                .read_to_end(&mut buf)
                .map_err(|e| io_error("cannot read", path, e))?;
            if buf.is_empty() {
                break;
            }
            let want = match frame_at(&buf) {
                Frame::Needs(total) => total,
                _ => FRAME_HEADER,
            };
            if end.position + want > length {
                break;
            }
            (&mut reader)
                .take(want - buf.len() as u64)
                .read_to_end(&mut buf)
                .map_err(|e| io_error("cannot read", path, e))?;
            let Frame::Record(_, framed) = frame_at(&buf) else {
                break;
            };
            if end.offset.is_multiple_of(INDEX_EVERY) {
                index.push(end.position);
            }
            end.offset += 1;
            end.position += framed;
        }
        drop(reader);
        let synced = read_recovery_point(name, &recovery_point);
        if end.position < synced {
            // Acknowledged records are damaged or gone: not a torn append.
            return Err(BusError::Corrupt {
                stream: name,
                offset: end.offset,
            });
        }
        if end.position < length {
            tracing::warn!(
                stream = name,
                records = end.offset,
                bytes_cut = length - end.position,
                "the embedded log ended in an unacknowledged, partly written append; cutting it off"
            );
            file.set_len(end.position)
                .and_then(|()| file.sync_all())
                .map_err(|e| io_error("cannot cut the tail of", path, e))?;
        }
        Ok((
            Self {
                name,
                file,
                recovery_point,
                recorded: Mutex::new(None),
                index: RwLock::new(index),
            },
            end,
        ))
    }

    /// Records `end` (synced) as the recovery point if the last was recorded
    /// long enough ago: written beside it, synced, renamed over it.
    fn record_recovery_point(&self, end: End) -> Result<(), BusError> {
        let mut recorded = self
            .recorded
            .lock()
            .map_err(|_| BusError::Setup("embedded log lock poisoned".into()))?;
        if recorded.is_some_and(|at| at.elapsed() < RECOVERY_POINT_EVERY) {
            return Ok(());
        }
        let bytes = end.position.to_le_bytes();
        let mut content = bytes.to_vec();
        content.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
        let fresh = self.recovery_point.with_extension("synced.new");
        let dir = self.recovery_point.parent().unwrap_or(Path::new("."));
        std::fs::write(&fresh, &content)
            .and_then(|()| File::open(&fresh)?.sync_data())
            .and_then(|()| std::fs::rename(&fresh, &self.recovery_point))
            .and_then(|()| File::open(dir)?.sync_all())
            .map_err(|e| io_error("cannot record", &self.recovery_point, e))?;
        *recorded = Some(Instant::now());
        Ok(())
    }

    /// Writes `records` at `end` (not yet synced) and indexes them; returns
    /// the new end.
    fn write(&self, end: End, records: &[&[u8]]) -> Result<End, BusError> {
        let mut buf =
            Vec::with_capacity(records.iter().map(|r| r.len()).sum::<usize>() + 8 * records.len());
        let mut positions = Vec::new();
        let mut next = end;
        for r in records {
            if next.offset.is_multiple_of(INDEX_EVERY) {
                positions.push(next.position);
            }
            let before = buf.len();
            frame_into(&mut buf, r)?;
            next.offset += 1;
            next.position += (buf.len() - before) as u64;
        }
        self.file.write_all_at(&buf, end.position).map_err(|e| {
            // What part of it was written is not a record.
            let _ = self.file.set_len(end.position);
            BusError::Storage(format!("cannot write {}: {e}", self.name))
        })?;
        let mut index = self
            .index
            .write()
            .map_err(|_| BusError::Setup("embedded log index lock poisoned".into()))?;
        // Entries of an append that failed before its sync are replaced.
        index.truncate(end.offset.div_ceil(INDEX_EVERY) as usize);
        index.extend(positions);
        Ok(next)
    }

    /// Where to start reading for offset `from`: the indexed record at or
    /// before it.
    fn start_for(&self, from: u64) -> Result<End, BusError> {
        let index = self
            .index
            .read()
            .map_err(|_| BusError::Setup("embedded log index lock poisoned".into()))?;
        let k = (from / INDEX_EVERY) as usize;
        let position = index.get(k).copied().ok_or(BusError::Corrupt {
            stream: self.name,
            offset: from,
        })?;
        Ok(End {
            offset: k as u64 * INDEX_EVERY,
            position,
        })
    }

    /// Up to `max` records from offset `from`, below the synced `end`;
    /// `at` is where the reader stopped last (its next offset and byte
    /// position), kept for the next read.
    fn scan(
        &self,
        from: u64,
        end: End,
        max: usize,
        at: &mut Option<End>,
    ) -> Result<Vec<(u64, Vec<u8>)>, BusError> {
        let mut out = Vec::new();
        if from >= end.offset || max == 0 {
            return Ok(out);
        }
        let mut cursor = match *at {
            Some(c) if c.offset == from => c,
            _ => self.start_for(from)?,
        };
        let corrupt = |offset| BusError::Corrupt {
            stream: self.name,
            offset,
        };
        let mut buf = Vec::new();
        while cursor.offset < end.offset && out.len() < max {
            let room = end.position.saturating_sub(cursor.position);
            let mut want = room.min(READ_CHUNK);
            loop {
                buf.resize(want as usize, 0);
                self.file
                    .read_exact_at(&mut buf, cursor.position)
                    .map_err(|e| BusError::Storage(format!("cannot read {}: {e}", self.name)))?;
                match frame_at(&buf) {
                    Frame::Needs(total) if total <= room && total > want => want = total,
                    Frame::Record(..) => break,
                    _ => return Err(corrupt(cursor.offset)),
                }
            }
            let mut rest = &buf[..];
            while cursor.offset < end.offset && out.len() < max {
                let Frame::Record(record, framed) = frame_at(rest) else {
                    break;
                };
                if cursor.offset >= from {
                    out.push((cursor.offset, record.to_vec()));
                }
                rest = &rest[framed as usize..];
                cursor.offset += 1;
                cursor.position += framed;
            }
        }
        *at = Some(cursor);
        Ok(out)
    }
}

impl Bus for EmbeddedBus {
    fn describe(&self) -> String {
        format!("embedded log at {}", self.inner.dir.display())
    }

    fn submit(&self, records: &[(&str, &[u8])]) -> Result<(), BusError> {
        self.append(&[(INBOUND, records.iter().map(|(_, b)| *b).collect())])
    }

    fn inbound(
        &self,
        start: &(dyn Fn(&str) -> u64 + Sync),
    ) -> Result<Box<dyn InboundReader>, BusError> {
        Ok(Box::new(EmbeddedInbound {
            bus: self.clone(),
            log: self.log(INBOUND)?,
            next: start(EMBEDDED_SOURCE),
            at: None,
        }))
    }

    fn outbound(&self) -> Result<Box<dyn OutboundWriter>, BusError> {
        Ok(Box::new(EmbeddedOutbound { bus: self.clone() }))
    }

    fn ends(&self) -> Result<FollowFrom, BusError> {
        let (_, ends) = self.visible();
        let end = |s: Stream| ends.get(s.name()).map_or(0, |e| e.offset);
        Ok(FollowFrom {
            sequenced: end(Stream::Sequenced),
            checkpoints: end(Stream::Checkpoints),
            rejected: end(Stream::Rejected),
        })
    }

    fn follow(&self, _group: &str, from: FollowFrom) -> Result<Box<dyn Follower>, BusError> {
        let mut streams = Vec::new();
        for s in Stream::ALL {
            streams.push(FollowedStream {
                stream: s,
                log: self.log(s.name())?,
                next: from.of(s),
                at: None,
            });
        }
        Ok(Box::new(EmbeddedFollower {
            bus: self.clone(),
            streams,
        }))
    }
}

struct EmbeddedInbound {
    bus: EmbeddedBus,
    log: Arc<LogFile>,
    next: u64,
    at: Option<End>,
}

impl InboundReader for EmbeddedInbound {
    fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<InboundRecord>, BusError> {
        let deadline = Instant::now() + timeout;
        let got = loop {
            let (generation, ends) = self.bus.visible();
            let end = ends.get(INBOUND).copied().unwrap_or_default();
            let got = self.log.scan(self.next, end, max, &mut self.at)?;
            if !got.is_empty() || Instant::now() >= deadline {
                break got;
            }
            self.bus.wait_past(generation, deadline);
        };
        if let Some((last, _)) = got.last() {
            self.next = last + 1;
        }
        Ok(got
            .into_iter()
            .map(|(offset, bytes)| InboundRecord {
                source: EMBEDDED_SOURCE.to_string(),
                offset,
                bytes,
            })
            .collect())
    }

    fn consumed(&mut self, _positions: &[(String, u64)]) {}
}

struct EmbeddedOutbound {
    bus: EmbeddedBus,
}

impl OutboundWriter for EmbeddedOutbound {
    fn publish(&mut self, records: &[Outgoing]) -> Result<(), BusError> {
        // Every stream in one append (one sync each), each in its order.
        let encoded: Vec<(Stream, Vec<u8>)> =
            records.iter().map(|r| (stream_of(r), encode(r))).collect();
        let streams: Vec<(&'static str, Vec<&[u8]>)> = Stream::ALL
            .iter()
            .map(|stream| {
                let values = encoded
                    .iter()
                    .filter(|(s, _)| s == stream)
                    .map(|(_, bytes)| bytes.as_slice())
                    .collect();
                (stream.name(), values)
            })
            .collect();
        self.bus.append(&streams)
    }
}

struct FollowedStream {
    stream: Stream,
    log: Arc<LogFile>,
    next: u64,
    at: Option<End>,
}

struct EmbeddedFollower {
    bus: EmbeddedBus,
    streams: Vec<FollowedStream>,
}

impl Follower for EmbeddedFollower {
    fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Published>, BusError> {
        let deadline = Instant::now() + timeout;
        loop {
            let (generation, ends) = self.bus.visible();
            let mut out = Vec::new();
            for s in &mut self.streams {
                let room = max.saturating_sub(out.len());
                if room == 0 {
                    break;
                }
                let end = ends.get(s.stream.name()).copied().unwrap_or_default();
                for (offset, bytes) in s.log.scan(s.next, end, room, &mut s.at)? {
                    out.push(decode(s.stream, offset, &bytes)?);
                    s.next = offset + 1;
                }
            }
            if !out.is_empty() || Instant::now() >= deadline {
                return Ok(out);
            }
            self.bus.wait_past(generation, deadline);
        }
    }

    fn consumed(&mut self, _positions: &FollowFrom) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` records, `record 0` to `record n-1`.
    fn numbered(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("record {i}").into_bytes()).collect()
    }

    /// `records` as a producer submits them, each under one key.
    fn keyed(records: &[Vec<u8>]) -> Vec<(&str, &[u8])> {
        records.iter().map(|p| ("k", p.as_slice())).collect()
    }

    fn framed(records: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            frame_into(&mut out, r).expect("frame");
        }
        out
    }

    #[test]
    fn a_frame_gives_back_its_record_and_zeros_are_not_a_record() {
        let stored = framed(&[b"", b"second record"]);
        assert_eq!(frame_at(&stored), Frame::Record(b"", 8));
        assert_eq!(frame_at(&stored[8..]), Frame::Record(b"second record", 21));
        assert_eq!(frame_at(&stored[8..20]), Frame::Needs(21));
        assert_eq!(frame_at(&stored[8..12]), Frame::Needs(8));
        // A file extended but never written reads as zeros: length 0, CRC 0.
        assert_eq!(frame_at(&[0u8; 64]), Frame::Damaged);
        let mut flipped = stored.clone();
        flipped[20] ^= 1;
        assert_eq!(frame_at(&flipped[8..]), Frame::Damaged);
    }

    #[test]
    fn reopening_cuts_a_torn_append_and_the_next_append_takes_its_offsets() {
        let dir = tempfile::tempdir().expect("temp dir");
        let payloads = numbered(600);
        let refs = keyed(&payloads);
        let path = dir.path().join("inbound.log");
        let whole = {
            let bus = EmbeddedBus::open(dir.path()).expect("open");
            bus.submit(&refs[..500]).expect("submit");
            std::fs::metadata(&path).expect("log file").len()
        };
        // A crash in the middle of the next append: half a frame written,
        // then zeros where the system extended the file.
        let mut torn = framed(&[b"never acknowledged"]);
        torn.truncate(torn.len() / 2);
        torn.extend_from_slice(&[0u8; 4096]);
        let file = OpenOptions::new().append(true).open(&path).expect("log");
        file.write_all_at(&torn, whole).expect("write torn tail");
        drop(file);

        let bus = EmbeddedBus::open(dir.path()).expect("reopen");
        assert_eq!(bus.inbound_len(), 500);
        assert_eq!(std::fs::metadata(&path).expect("log file").len(), whole);
        bus.submit(&refs[500..]).expect("submit after the cut");
        let mut reader = bus.inbound(&|_| 0).expect("reader");
        let got = reader
            .poll(1_000, Duration::from_millis(100))
            .expect("poll");
        let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (0..600).collect::<Vec<_>>());
        for r in &got {
            assert_eq!(r.bytes, payloads[r.offset as usize]);
        }
    }

    #[test]
    fn damage_where_records_were_acknowledged_is_refused_not_cut() {
        let dir = tempfile::tempdir().expect("temp dir");
        let payloads = numbered(300);
        let refs = keyed(&payloads);
        let path = dir.path().join("inbound.log");
        {
            let bus = EmbeddedBus::open(dir.path()).expect("open");
            bus.submit(&refs).expect("submit");
        }
        let whole = std::fs::metadata(&path).expect("log file").len();
        // Where record 100's frame ends: each frame is 8 bytes and its record.
        let at_100: u64 = payloads[..=100].iter().map(|p| 8 + p.len() as u64).sum();
        assert!(dir.path().join("inbound.synced").exists());
        // One bit of record 100 flipped on disk.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("log");
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, at_100 - 1).expect("read");
        file.write_all_at(&[byte[0] ^ 1], at_100 - 1).expect("flip");
        drop(file);

        let err = EmbeddedBus::open(dir.path()).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "embedded log corrupt: the inbound stream's record at offset 100 is cut short or damaged"
        );
        assert_eq!(
            std::fs::metadata(&path).expect("log file").len(),
            whole,
            "nothing cut"
        );
    }

    #[test]
    fn reads_start_between_index_entries_and_cross_reads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let payloads: Vec<Vec<u8>> = (0..3_000)
            .map(|i| vec![(i % 251) as u8; 1 + (i * 37) % 700])
            .collect();
        let refs = keyed(&payloads);
        {
            let bus = EmbeddedBus::open(dir.path()).expect("open");
            bus.submit(&refs[..3]).expect("submit");
            bus.submit(&refs[3..]).expect("submit");
        }
        let bus = EmbeddedBus::open(dir.path()).expect("reopen");
        assert_eq!(bus.inbound_len(), payloads.len() as u64);
        let from = 2 * INDEX_EVERY + 7;
        let mut reader = bus.inbound(&|_| from).expect("reader");
        let mut offsets = Vec::new();
        loop {
            let got = reader.poll(333, Duration::from_millis(50)).expect("poll");
            if got.is_empty() {
                break;
            }
            for r in got {
                assert_eq!(r.bytes, payloads[r.offset as usize]);
                offsets.push(r.offset);
            }
        }
        assert_eq!(offsets, (from..3_000).collect::<Vec<_>>());
    }

    #[test]
    fn a_record_larger_than_a_read_is_read_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let large = vec![7u8; READ_CHUNK as usize * 2 + 3];
        let bus = EmbeddedBus::open(dir.path()).expect("open");
        bus.submit(&[("k", b"small"), ("k", &large), ("k", b"after")])
            .expect("submit");
        let mut reader = bus.inbound(&|_| 0).expect("reader");
        let got = reader.poll(10, Duration::from_millis(100)).expect("poll");
        let lens: Vec<usize> = got.iter().map(|r| r.bytes.len()).collect();
        assert_eq!(lens, vec![5, large.len(), 5]);
    }

    #[test]
    fn a_folder_of_the_earlier_sled_format_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("conf"), b"segment_size: 524288\n").expect("conf");
        let err = EmbeddedBus::open(dir.path()).expect_err("refused");
        assert!(err.to_string().contains("earlier sled format"), "{err}");
    }

    #[test]
    fn a_second_process_handle_is_refused_while_the_log_is_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let _bus = EmbeddedBus::open(dir.path()).expect("open");
        // Another open file description on the same lock file stands for
        // another process: flock locks belong to the description.
        let other = OpenOptions::new()
            .write(true)
            .open(dir.path().join("lock"))
            .expect("lock file");
        assert!(!fs4::fs_std::FileExt::try_lock_exclusive(&other).expect("try the lock"));
    }
}
