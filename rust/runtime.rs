//! The one tokio runtime of the core: started lazily on first use, shared by
//! everything that does I/O (the HTTP client first of all), and safe across
//! `fork`: a child process finds the parent's runtime without its threads, so
//! it leaks that one and starts its own.

use std::io;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::runtime::{Builder, Handle, Runtime};

/// Worker threads of the runtime. One is enough to keep a Python thread fed
/// (the GIL, not tokio, is the bottleneck); a second one lets TLS handshakes
/// and body copies overlap with delivery.
pub const WORKER_THREADS: usize = 1;

/// The runtime and the process id it was started in.
static RUNTIME: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);

/// A handle to the shared runtime of process `pid` (pass `std::process::id()`),
/// starting it if this process has none yet.
pub fn handle_for(pid: u32) -> io::Result<Handle> {
    let mut slot = RUNTIME.lock();
    if let Some((owner, rt)) = slot.as_ref() {
        if *owner == pid {
            return Ok(rt.handle().clone());
        }
    }
    if let Some((_, inherited)) = slot.take() {
        // Forked: the parent's worker threads do not exist here, so dropping
        // the runtime would wait for them forever. Leak it instead.
        std::mem::forget(inherited);
    }
    let rt = Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name("llmrelay-io")
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    *slot = Some((pid, Arc::new(rt)));
    Ok(handle)
}

/// A handle to the shared runtime of the current process.
pub fn handle() -> io::Result<Handle> {
    handle_for(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_is_shared_and_restarted_for_another_pid() {
        let a = handle().unwrap();
        let b = handle().unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(a.block_on(async { 40 + 2 }), 42);
        // A different pid (as after fork) gets a fresh runtime...
        let other = handle_for(u32::MAX).unwrap();
        assert_ne!(other.id(), a.id());
        // ...and the real pid gets yet another one afterwards.
        let again = handle().unwrap();
        assert_ne!(again.id(), other.id());
        assert_eq!(again.block_on(async { 1 }), 1);
    }
}
