//! A streamed response body that crosses to its reader in large pieces.
//!
//! A pump task on the runtime reads the body off the connection as fast as it
//! arrives into a bounded buffer (backpressure above [`HIGH_WATER`] bytes).
//! The reader asks with [`BodyStream::next_or_wait`]: it gets everything
//! buffered so far (up to a cap) at once, or registers a waiter that the pump
//! calls with the next coalesced piece. So an SSE stream costs one crossing per
//! burst of network data, never one per line or byte.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::{classify_body_error, HttpError, HttpErrorKind};

/// Buffered bytes above which the pump stops reading until the reader drains.
pub const HIGH_WATER: usize = 256 * 1024;

/// Most bytes the pump gathers from ready frames before waking the reader.
const BATCH: usize = 64 * 1024;

/// What a reader gets: a piece of the body, `Ok(empty)` at the end, or the error.
pub type Chunk = Result<Bytes, HttpError>;

/// A callback that receives the next piece when none was ready.
pub type Waiter = Box<dyn FnOnce(Chunk) + Send>;

#[derive(Default)]
struct State {
    queue: VecDeque<Bytes>,
    buffered: usize,
    /// `Some` once the body ended (`Ok`) or failed.
    end: Option<Result<(), HttpError>>,
    waiter: Option<(usize, Waiter)>,
}

impl State {
    /// Up to `max` bytes from the front of the queue, in one piece.
    fn take(&mut self, max: usize) -> Bytes {
        let max = max.max(1);
        if let Some(front) = self.queue.front() {
            if front.len() >= max || self.queue.len() == 1 {
                let mut front = self.queue.pop_front().unwrap_or_default();
                let piece = if front.len() > max {
                    let piece = front.split_to(max);
                    self.queue.push_front(front);
                    piece
                } else {
                    front
                };
                self.buffered -= piece.len();
                return piece;
            }
        }
        let mut out = BytesMut::with_capacity(self.buffered.min(max));
        while let Some(mut front) = self.queue.pop_front() {
            let room = max - out.len();
            if front.len() > room {
                out.extend_from_slice(&front.split_to(room));
                self.queue.push_front(front);
                break;
            }
            out.extend_from_slice(&front);
            if out.len() == max {
                break;
            }
        }
        self.buffered -= out.len();
        out.freeze()
    }

    /// The next piece if one is ready now.
    fn ready(&mut self, max: usize) -> Option<Chunk> {
        if self.buffered > 0 {
            return Some(Ok(self.take(max)));
        }
        match &self.end {
            Some(Ok(())) => Some(Ok(Bytes::new())),
            Some(Err(e)) => Some(Err(e.clone())),
            None => None,
        }
    }
}

/// The part shared by the pump and the reader.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when the reader drained the buffer (the pump may go on).
    space: Notify,
}

impl Shared {
    fn push_all(&self, batch: Vec<Bytes>) {
        let mut st = self.state.lock();
        for data in batch.into_iter().filter(|d| !d.is_empty()) {
            st.buffered += data.len();
            st.queue.push_back(data);
        }
        self.wake(st);
    }

    fn finish(&self, end: Result<(), HttpError>) {
        let mut st = self.state.lock();
        if st.end.is_none() {
            st.end = Some(end);
        }
        self.wake(st);
    }

    /// Hand the next piece to a waiting reader, outside the lock.
    fn wake(&self, mut st: parking_lot::MutexGuard<'_, State>) {
        if let Some((max, waiter)) = st.waiter.take() {
            match st.ready(max) {
                Some(chunk) => {
                    drop(st);
                    self.space.notify_one();
                    waiter(chunk);
                }
                None => st.waiter = Some((max, waiter)),
            }
        }
    }
}

/// A response body being streamed; dropping it stops the pump.
pub struct BodyStream {
    shared: Arc<Shared>,
    pump: AbortHandle,
}

impl BodyStream {
    /// Start pumping `body` on `rt`; `idle_timeout` bounds each wait for data.
    pub fn spawn(
        rt: &tokio::runtime::Handle,
        body: Incoming,
        idle_timeout: Option<Duration>,
    ) -> Self {
        let shared = Arc::new(Shared::default());
        let task = rt.spawn(pump(body, shared.clone(), idle_timeout));
        BodyStream {
            shared,
            pump: task.abort_handle(),
        }
    }

    /// Everything buffered (up to `max` bytes) now, `Ok(empty)` at the end, the
    /// error if the body failed; or `None` after registering `waiter`, which
    /// then receives the next piece from the runtime.
    pub fn next_or_wait(&self, max: usize, waiter: Waiter) -> Option<Chunk> {
        let mut st = self.shared.state.lock();
        if let Some(chunk) = st.ready(max) {
            drop(st);
            self.shared.space.notify_one();
            return Some(chunk);
        }
        if st.waiter.is_some() {
            return Some(Err(HttpError::new(
                HttpErrorKind::InvalidRequest,
                "the body is already being read",
            )));
        }
        st.waiter = Some((max, waiter));
        None
    }

    /// Bytes received and not yet read.
    pub fn buffered(&self) -> usize {
        self.shared.state.lock().buffered
    }

    /// Stop reading: the connection is dropped; a pending reader gets an error.
    pub fn close(&self) {
        self.pump.abort();
        self.shared.finish(Err(HttpError::new(
            HttpErrorKind::Closed,
            "the response body was closed",
        )));
    }
}

impl Drop for BodyStream {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

async fn pump(mut body: Incoming, shared: Arc<Shared>, idle_timeout: Option<Duration>) {
    loop {
        while shared.state.lock().buffered >= HIGH_WATER {
            shared.space.notified().await;
        }
        let frame = match idle_timeout {
            Some(t) => match tokio::time::timeout(t, body.frame()).await {
                Ok(frame) => frame,
                Err(_) => {
                    let msg = "timed out waiting for the response body";
                    shared.finish(Err(HttpError::new(HttpErrorKind::ReadTimeout, msg)));
                    return;
                }
            },
            None => body.frame().await,
        };
        match frame {
            None => {
                shared.finish(Ok(()));
                return;
            }
            Some(Ok(frame)) => {
                let mut batch = Vec::new();
                if let Ok(data) = frame.into_data() {
                    batch.push(data);
                }
                let end = gather(&mut body, &mut batch).await;
                shared.push_all(batch);
                if let Some(end) = end {
                    shared.finish(end);
                    return;
                }
            }
            Some(Err(e)) => {
                shared.finish(Err(classify_body_error(&e)));
                return;
            }
        }
    }
}

/// Gather the frames that are ready now into `batch`, so the reader is woken
/// once per burst of data. HTTP/1 hands over one frame per turn of the
/// connection task, so yield to it between polls until no new frame comes.
async fn gather(body: &mut Incoming, batch: &mut Vec<Bytes>) -> Option<Result<(), HttpError>> {
    let mut yielded = false;
    loop {
        let before = batch.len();
        let end = poll_fn(|cx| Poll::Ready(ready_frames(body, cx, batch))).await;
        if end.is_some() {
            return end;
        }
        let size: usize = batch.iter().map(Bytes::len).sum();
        if size >= BATCH || (yielded && batch.len() == before) {
            return None;
        }
        tokio::task::yield_now().await;
        yielded = true;
    }
}

/// Append the frames `body` has ready without waiting (up to [`BATCH`] bytes);
/// `Some` if the body ended or failed meanwhile.
fn ready_frames(
    body: &mut Incoming,
    cx: &mut Context<'_>,
    batch: &mut Vec<Bytes>,
) -> Option<Result<(), HttpError>> {
    let mut size: usize = batch.iter().map(Bytes::len).sum();
    while size < BATCH {
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Pending => return None,
            Poll::Ready(None) => return Some(Ok(())),
            Poll::Ready(Some(Err(e))) => return Some(Err(classify_body_error(&e))),
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    size += data.len();
                    batch.push(data);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(pieces: &[&'static [u8]]) -> State {
        let mut st = State::default();
        for p in pieces {
            st.buffered += p.len();
            st.queue.push_back(Bytes::from_static(p));
        }
        st
    }

    #[test]
    fn take_coalesces_up_to_max() {
        let mut st = state(&[b"ab", b"cd", b"efg"]);
        assert_eq!(&st.take(100)[..], b"abcdefg");
        assert_eq!(st.buffered, 0);
        let mut st = state(&[b"ab", b"cd", b"efg"]);
        assert_eq!(&st.take(3)[..], b"abc");
        assert_eq!(&st.take(3)[..], b"def");
        assert_eq!(&st.take(3)[..], b"g");
        assert_eq!(st.buffered, 0);
        let mut st = state(&[b"abcdef"]);
        assert_eq!(&st.take(4)[..], b"abcd");
        assert_eq!(&st.take(4)[..], b"ef");
    }

    #[test]
    fn ready_reports_end_and_error_after_data() {
        let mut st = state(&[b"x"]);
        st.end = Some(Ok(()));
        assert_eq!(&st.ready(10).unwrap().unwrap()[..], b"x");
        assert!(st.ready(10).unwrap().unwrap().is_empty());
        let mut st = State {
            end: Some(Err(HttpError::new(HttpErrorKind::Read, "reset"))),
            ..State::default()
        };
        assert_eq!(st.ready(10).unwrap().unwrap_err().kind, HttpErrorKind::Read);
        assert!(State::default().ready(10).is_none());
    }
}
