//! Write-behind to the disk tier: a bounded queue drained by a task on a
//! small tokio runtime of its own, started on the first write.
//!
//! Order is kept: writes, deletes and barriers reach the disk in the order
//! they were queued, so an older value can never overwrite a newer one.
//! For that reason a full queue neither writes synchronously (the direct
//! write could be overtaken by an older queued one) nor drops the oldest
//! (the disk would keep a stale value): the caller waits for a free slot
//! (callers from Python have released the GIL), counted in `waits`.
//!
//! A process forked while a worker runs gets a fresh worker on its next
//! write (the parent's thread does not exist in the child).
//!
//! Reads see the queue: the latest queued write or delete of each key is kept
//! in a pending map ([`WriteBehind::pending`]) until the worker has applied
//! it, so a read that misses memory never gets an older value from the disk
//! while a newer one (or a delete) is still queued, and a value the worker is
//! writing just after a delete removed it from the disk is not served (and
//! promoted back into memory) before the queued delete lands.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::disk::DiskCache;

/// One queued disk operation.
pub(crate) enum Op {
    Set {
        key: Box<[u8]>,
        value: Arc<[u8]>,
        expires_at_ns: u64,
    },
    Delete(Box<[u8]>),
    Barrier(oneshot::Sender<()>),
}

/// What a key's latest queued operation will leave on the disk.
#[derive(Clone)]
pub(crate) enum Pending {
    /// This value, until the disk clock's `expires_at_ns`.
    Value(Arc<[u8]>, u64),
    /// Nothing (a delete).
    Deleted,
}

/// The latest queued operation of each key, with its sequence number.
type PendingMap = Arc<Mutex<HashMap<Box<[u8]>, (u64, Pending)>>>;

/// An operation as queued: its sequence number (0 for a barrier) and the op.
type Queued = (u64, Op);

struct Worker {
    tx: mpsc::Sender<Queued>,
    thread: Option<JoinHandle<()>>,
    pid: u32,
}

/// Counters of the queue.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueStats {
    pub queued: u64,
    pub waits: u64,
    pub dropped: u64,
    pub written: u64,
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    waits: AtomicU64,
    dropped: AtomicU64,
    written: Arc<AtomicU64>,
}

/// The write-behind queue in front of one disk tier.
pub(crate) struct WriteBehind {
    disk: Arc<DiskCache>,
    capacity: usize,
    worker: Mutex<Option<Worker>>,
    closed: AtomicBool,
    counters: Counters,
    pending: PendingMap,
    seq: AtomicU64,
}

const BATCH: usize = 256;

/// Forget `key`'s pending entry if operation `seq` is still its latest.
fn settled(pending: &PendingMap, key: &[u8], seq: u64) {
    let mut map = pending.lock();
    if map.get(key).is_some_and(|(s, _)| *s == seq) {
        map.remove(key);
    }
}

fn start(
    disk: Arc<DiskCache>,
    capacity: usize,
    written: Arc<AtomicU64>,
    pending: PendingMap,
) -> std::io::Result<Worker> {
    let (tx, mut rx) = mpsc::channel::<Queued>(capacity);
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let thread = std::thread::Builder::new()
        .name("llmrelay-cache-wb".into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut batch = Vec::with_capacity(BATCH);
                while rx.recv_many(&mut batch, BATCH).await > 0 {
                    for (seq, op) in batch.drain(..) {
                        match op {
                            Op::Set {
                                key,
                                value,
                                expires_at_ns,
                            } => {
                                disk.set(&key, &value, expires_at_ns);
                                written.fetch_add(1, Relaxed);
                                settled(&pending, &key, seq);
                            }
                            Op::Delete(key) => {
                                disk.delete(&key);
                                settled(&pending, &key, seq);
                            }
                            Op::Barrier(done) => {
                                let _ = done.send(());
                            }
                        }
                    }
                }
            });
        })?;
    Ok(Worker {
        tx,
        thread: Some(thread),
        pid: std::process::id(),
    })
}

impl WriteBehind {
    /// A queue of `capacity` operations in front of `disk`; no thread yet.
    pub(crate) fn new(disk: Arc<DiskCache>, capacity: usize) -> Self {
        Self {
            disk,
            capacity: capacity.max(1),
            worker: Mutex::new(None),
            closed: AtomicBool::new(false),
            counters: Counters::default(),
            pending: Arc::default(),
            seq: AtomicU64::new(0),
        }
    }

    /// What `key`'s queued operations will leave on the disk, if any is still
    /// queued (reads consult this before the disk).
    pub(crate) fn pending(&self, key: &[u8]) -> Option<Pending> {
        self.pending.lock().get(key).map(|(_, p)| p.clone())
    }

    /// A sender to the running worker, starting one if there is none (or
    /// the process forked since). `None` once closed or if no thread starts.
    fn sender(&self) -> Option<mpsc::Sender<Queued>> {
        if self.closed.load(Relaxed) {
            return None;
        }
        let mut guard = self.worker.lock();
        let pid = std::process::id();
        if guard.as_ref().is_some_and(|w| w.pid != pid) {
            // forked: the worker thread is not in this process; leak it, and
            // forget what it had queued (it never reaches the disk from here)
            std::mem::forget(guard.take());
            self.pending.lock().clear();
        }
        if guard.is_none() {
            let written = Arc::clone(&self.counters.written);
            let pending = Arc::clone(&self.pending);
            *guard = start(Arc::clone(&self.disk), self.capacity, written, pending).ok();
        }
        guard.as_ref().map(|w| w.tx.clone())
    }

    /// Queue `op`, waiting for room if the queue is full. Returns whether
    /// it was queued.
    pub(crate) fn submit(&self, op: Op) -> bool {
        let Some(tx) = self.sender() else {
            if !self.closed.load(Relaxed) {
                self.counters.dropped.fetch_add(1, Relaxed);
            }
            return false;
        };
        let seq = self.seq.fetch_add(1, Relaxed) + 1;
        // recorded before it is queued, so the worker's settle always finds it
        let key = match &op {
            Op::Set {
                key,
                value,
                expires_at_ns,
            } => {
                let p = Pending::Value(Arc::clone(value), *expires_at_ns);
                self.pending.lock().insert(key.clone(), (seq, p));
                Some(key.clone())
            }
            Op::Delete(key) => {
                self.pending
                    .lock()
                    .insert(key.clone(), (seq, Pending::Deleted));
                Some(key.clone())
            }
            Op::Barrier(_) => None,
        };
        let sent = match tx.try_send((seq, op)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(queued)) => {
                self.counters.waits.fetch_add(1, Relaxed);
                // blocking_send panics inside a runtime; never wait there
                tokio::runtime::Handle::try_current().is_err() && tx.blocking_send(queued).is_ok()
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        };
        if !sent {
            if let Some(key) = key {
                settled(&self.pending, &key, seq);
            }
        }
        let counter = if sent {
            &self.counters.queued
        } else {
            &self.counters.dropped
        };
        counter.fetch_add(1, Relaxed);
        sent
    }

    /// Wait until everything queued before this call has reached the disk.
    pub(crate) fn drain(&self) {
        let running = self.worker.lock().as_ref().map(|w| w.tx.clone());
        let Some(tx) = running else { return };
        let (done, wait) = oneshot::channel();
        if tokio::runtime::Handle::try_current().is_err()
            && tx.blocking_send((0, Op::Barrier(done))).is_ok()
        {
            let _ = wait.blocking_recv();
        }
    }

    /// Drain the queue and stop the worker. Later submissions are ignored.
    /// Idempotent.
    pub(crate) fn close(&self) {
        self.closed.store(true, Relaxed);
        let worker = self.worker.lock().take();
        if let Some(mut w) = worker {
            let same_process = w.pid == std::process::id();
            drop(w.tx);
            if let Some(t) = w.thread.take().filter(|_| same_process) {
                let _ = t.join();
            }
        }
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> QueueStats {
        let c = &self.counters;
        QueueStats {
            queued: c.queued.load(Relaxed),
            waits: c.waits.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
            written: c.written.load(Relaxed),
        }
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::disk::{DiskConfig, WallClock};

    fn disk(dir: &std::path::Path) -> Arc<DiskCache> {
        let cfg = DiskConfig::new("path", dir.to_str().unwrap(), "max_bytes", None, None).unwrap();
        Arc::new(DiskCache::open(&cfg, Arc::new(WallClock)).unwrap())
    }

    fn set(key: &[u8], value: &[u8]) -> Op {
        Op::Set {
            key: key.into(),
            value: value.into(),
            expires_at_ns: u64::MAX,
        }
    }

    #[test]
    fn drains_in_order_and_closes() {
        let dir = tempfile::tempdir().unwrap();
        let d = disk(dir.path());
        let wb = WriteBehind::new(Arc::clone(&d), 4);
        wb.drain(); // no worker yet: returns at once
        for i in 0..50u8 {
            assert!(wb.submit(set(b"k", &[i])));
        }
        assert!(wb.submit(set(b"gone", b"x")));
        assert!(wb.submit(Op::Delete(b"gone"[..].into())));
        wb.drain();
        assert_eq!(d.get(b"k").unwrap().payload(), &[49]);
        assert!(d.get(b"gone").is_none());
        let s = wb.stats();
        assert_eq!((s.queued, s.written, s.dropped), (52, 51, 0));
        assert!(s.waits <= 52);
        wb.submit(set(b"last", b"y"));
        wb.close();
        wb.close();
        assert_eq!(d.get(b"last").unwrap().payload(), b"y", "close drains");
        assert!(!wb.submit(set(b"after", b"z")));
        assert_eq!(
            wb.stats().dropped,
            0,
            "writes after close are not counted as drops"
        );
        assert!(d.get(b"after").is_none());
    }
}
