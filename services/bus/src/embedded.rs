//! The embedded bus: four append-only logs in one sled database.
//!
//! Each stream is a sled tree keyed by its big-endian offset; an append takes
//! the next offset under a lock and is flushed before it is acknowledged, so
//! the log survives a crash exactly as far as it was acknowledged. Readers in
//! the same process are woken by a condition variable; readers never write.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::codec::{decode, encode, stream_of};
use crate::{
    Bus, BusError, FollowFrom, Follower, InboundReader, InboundRecord, OutboundWriter, Outgoing,
    Published, Stream,
};

/// The single source name of the embedded inbound stream.
pub const EMBEDDED_SOURCE: &str = "embedded";

const INBOUND: &str = "inbound";

/// A durable log in its own sled database, shared by the threads of one
/// process (sled locks its database against other processes).
#[derive(Clone)]
pub struct EmbeddedBus {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    dir: String,
    /// Serialises appends (offset allocation) across all streams.
    append: Mutex<()>,
    /// Bumped on every append; readers wait for it to change.
    generation: Mutex<u64>,
    appended: Condvar,
}

impl std::fmt::Debug for EmbeddedBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBus")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

impl EmbeddedBus {
    /// Opens (or creates) the log in `dir`.
    pub fn open(dir: &Path) -> Result<Self, BusError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| BusError::Setup(format!("cannot create {}: {e}", dir.display())))?;
        let config = sled::Config::new().path(dir).flush_every_ms(None);
        // A handle dropped moments ago (this process reopening its log) may
        // still hold sled's file lock while its I/O threads finish.
        let deadline = Instant::now() + Duration::from_secs(5);
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                dir: dir.display().to_string(),
                append: Mutex::new(()),
                generation: Mutex::new(0),
                appended: Condvar::new(),
            }),
        })
    }

    /// Number of records on the inbound stream.
    pub fn inbound_len(&self) -> Result<u64, BusError> {
        next_offset(&self.inner.db.open_tree(INBOUND)?)
    }

    fn append(&self, tree: &str, values: Vec<Vec<u8>>) -> Result<(), BusError> {
        if values.is_empty() {
            return Ok(());
        }
        let tree = self.inner.db.open_tree(tree)?;
        {
            let _guard = self
                .inner
                .append
                .lock()
                .map_err(|_| BusError::Setup("embedded log lock poisoned".into()))?;
            let mut batch = sled::Batch::default();
            for (offset, v) in (next_offset(&tree)?..).zip(values) {
                batch.insert(&offset.to_be_bytes()[..], v);
            }
            tree.apply_batch(batch)?;
            self.inner.db.flush()?;
        }
        if let Ok(mut g) = self.inner.generation.lock() {
            *g += 1;
        }
        self.inner.appended.notify_all();
        Ok(())
    }

    /// Reads up to `max` records from `tree` starting at `from`; waits up to
    /// `timeout` for at least one.
    fn read(
        &self,
        tree: &sled::Tree,
        from: u64,
        max: usize,
        deadline: Instant,
    ) -> Result<Vec<(u64, Vec<u8>)>, BusError> {
        loop {
            let generation = self.generation();
            let out = scan(tree, from, max)?;
            if !out.is_empty() || Instant::now() >= deadline {
                return Ok(out);
            }
            self.wait_past(generation, deadline);
        }
    }

    fn generation(&self) -> u64 {
        self.inner.generation.lock().map(|g| *g).unwrap_or(0)
    }

    fn wait_past(&self, seen: u64, deadline: Instant) {
        let Ok(mut g) = self.inner.generation.lock() else {
            return;
        };
        while *g == seen {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            match self.inner.appended.wait_timeout(g, deadline - now) {
                Ok((next, _)) => g = next,
                Err(_) => return,
            }
        }
    }
}

fn next_offset(tree: &sled::Tree) -> Result<u64, BusError> {
    Ok(match tree.last()? {
        Some((k, _)) => offset_of(&k) + 1,
        None => 0,
    })
}

fn offset_of(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[8 - n..].copy_from_slice(&key[key.len() - n..]);
    u64::from_be_bytes(b)
}

fn scan(tree: &sled::Tree, from: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>, BusError> {
    tree.range(from.to_be_bytes()..)
        .take(max)
        .map(|item| {
            let (k, v) = item?;
            Ok((offset_of(&k), v.to_vec()))
        })
        .collect()
}

impl Bus for EmbeddedBus {
    fn describe(&self) -> String {
        format!("embedded log at {}", self.inner.dir)
    }

    fn submit(&self, records: &[(&str, &[u8])]) -> Result<(), BusError> {
        self.append(INBOUND, records.iter().map(|(_, b)| b.to_vec()).collect())
    }

    fn inbound(
        &self,
        start: &(dyn Fn(&str) -> u64 + Sync),
    ) -> Result<Box<dyn InboundReader>, BusError> {
        Ok(Box::new(EmbeddedInbound {
            bus: self.clone(),
            tree: self.inner.db.open_tree(INBOUND)?,
            next: start(EMBEDDED_SOURCE),
        }))
    }

    fn outbound(&self) -> Result<Box<dyn OutboundWriter>, BusError> {
        Ok(Box::new(EmbeddedOutbound { bus: self.clone() }))
    }

    fn ends(&self) -> Result<FollowFrom, BusError> {
        let end = |s: Stream| -> Result<u64, BusError> {
            next_offset(&self.inner.db.open_tree(s.name())?)
        };
        Ok(FollowFrom {
            sequenced: end(Stream::Sequenced)?,
            checkpoints: end(Stream::Checkpoints)?,
            rejected: end(Stream::Rejected)?,
        })
    }

    fn follow(&self, _group: &str, from: FollowFrom) -> Result<Box<dyn Follower>, BusError> {
        let mut streams = Vec::new();
        for s in Stream::ALL {
            streams.push((s, self.inner.db.open_tree(s.name())?, from.of(s)));
        }
        Ok(Box::new(EmbeddedFollower {
            bus: self.clone(),
            streams,
        }))
    }
}

struct EmbeddedInbound {
    bus: EmbeddedBus,
    tree: sled::Tree,
    next: u64,
}

impl InboundReader for EmbeddedInbound {
    fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<InboundRecord>, BusError> {
        let got = self
            .bus
            .read(&self.tree, self.next, max, Instant::now() + timeout)?;
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
        // Appends stream by stream, preserving each stream's order.
        for stream in Stream::ALL {
            let values: Vec<Vec<u8>> = records
                .iter()
                .filter(|r| stream_of(r) == stream)
                .map(encode)
                .collect();
            self.bus.append(stream.name(), values)?;
        }
        Ok(())
    }
}

struct EmbeddedFollower {
    bus: EmbeddedBus,
    streams: Vec<(Stream, sled::Tree, u64)>,
}

impl Follower for EmbeddedFollower {
    fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<Published>, BusError> {
        let deadline = Instant::now() + timeout;
        loop {
            let generation = self.bus.generation();
            let mut out = Vec::new();
            for (stream, tree, next) in &mut self.streams {
                let room = max.saturating_sub(out.len());
                if room == 0 {
                    break;
                }
                for (offset, bytes) in scan(tree, *next, room)? {
                    out.push(decode(*stream, offset, &bytes)?);
                    *next = offset + 1;
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
