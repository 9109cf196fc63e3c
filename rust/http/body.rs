//! A streamed response body that crosses to its reader in large pieces.
//!
//! A pump task on the runtime reads the body off the connection as fast as it
//! arrives into a bounded buffer (backpressure above [`HIGH_WATER`] bytes).
//! The reader asks with [`BodyStream::next_or_wait`]: it gets everything
//! buffered so far (up to a cap) at once, or registers a waiter that the pump
//! calls with the next coalesced piece. So an SSE stream costs one crossing per
//! burst of network data, never one per line or byte.
//!
//! A body started with a [`Framing`] is framed by the pump, as it arrives, into
//! whole SSE / NDJSON events ([`super::sse`]); its reader asks with
//! [`BodyStream::next_events_or_wait`] and gets every whole event buffered so
//! far (up to a count) at once. A partial event never crosses.

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

use super::sse::{Event, Framer, Framing};
use super::{classify_body_error, HttpError, HttpErrorKind};

/// Buffered bytes above which the pump stops reading until the reader drains.
pub const HIGH_WATER: usize = 256 * 1024;

/// Most bytes the pump gathers from ready frames before waking the reader.
const BATCH: usize = 64 * 1024;

/// What a reader gets: a piece of the body, `Ok(empty)` at the end, or the error.
pub type Chunk = Result<Bytes, HttpError>;

/// A callback that receives the next piece when none was ready.
pub type Waiter = Box<dyn FnOnce(Chunk) + Send>;

/// What a reader of a framed body gets: whole events, none at the end, or the error.
pub type Batch = Result<Vec<Event>, HttpError>;

/// A callback that receives the next events when none were ready.
pub type EventWaiter = Box<dyn FnOnce(Batch) + Send>;

/// A reader waiting for bytes (at most that many) or events (at most that many).
enum Pending {
    Bytes(usize, Waiter),
    Events(usize, EventWaiter),
}

#[derive(Default)]
struct State {
    queue: VecDeque<Bytes>,
    /// Whole events of a framed body, not yet read.
    events: VecDeque<Event>,
    /// Bytes of `queue` and `events`.
    buffered: usize,
    /// `Some` once the body ended (`Ok`) or failed.
    end: Option<Result<(), HttpError>>,
    waiter: Option<Pending>,
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

    /// Up to `max` whole events if any are ready now (none: the end).
    fn ready_events(&mut self, max: usize) -> Option<Batch> {
        if !self.events.is_empty() {
            let n = self.events.len().min(max.max(1));
            let batch: Vec<Event> = self.events.drain(..n).collect();
            self.buffered -= batch.iter().map(Event::size).sum::<usize>();
            return Some(Ok(batch));
        }
        match &self.end {
            Some(Ok(())) => Some(Ok(Vec::new())),
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

    fn push_events(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut st = self.state.lock();
        for ev in events {
            st.buffered += ev.size();
            st.events.push_back(ev);
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
        match st.waiter.take() {
            None => {}
            Some(Pending::Bytes(max, waiter)) => match st.ready(max) {
                Some(chunk) => {
                    drop(st);
                    self.space.notify_one();
                    waiter(chunk);
                }
                None => st.waiter = Some(Pending::Bytes(max, waiter)),
            },
            Some(Pending::Events(max, waiter)) => match st.ready_events(max) {
                Some(batch) => {
                    drop(st);
                    self.space.notify_one();
                    waiter(batch);
                }
                None => st.waiter = Some(Pending::Events(max, waiter)),
            },
        }
    }
}

/// A response body being streamed; dropping it stops the pump.
pub struct BodyStream {
    shared: Arc<Shared>,
    pump: AbortHandle,
    framing: Option<Framing>,
}

impl BodyStream {
    /// Start pumping `body` on `rt`; `idle_timeout` bounds each wait for data.
    pub fn spawn(
        rt: &tokio::runtime::Handle,
        body: Incoming,
        idle_timeout: Option<Duration>,
    ) -> Self {
        Self::spawn_framed(rt, body, idle_timeout, None)
    }

    /// Start pumping `body` on `rt`, framed into events when `framing` is given.
    pub fn spawn_framed(
        rt: &tokio::runtime::Handle,
        body: Incoming,
        idle_timeout: Option<Duration>,
        framing: Option<Framing>,
    ) -> Self {
        let shared = Arc::new(Shared::default());
        let framer = framing.map(Framer::new);
        let task = rt.spawn(pump(body, shared.clone(), idle_timeout, framer));
        BodyStream {
            shared,
            pump: task.abort_handle(),
            framing,
        }
    }

    /// How the body is framed (`None`: read as bytes).
    pub fn framing(&self) -> Option<Framing> {
        self.framing
    }

    /// Everything buffered (up to `max` bytes) now, `Ok(empty)` at the end, the
    /// error if the body failed; or `None` after registering `waiter`, which
    /// then receives the next piece from the runtime.
    pub fn next_or_wait(&self, max: usize, waiter: Waiter) -> Option<Chunk> {
        if self.framing.is_some() {
            let msg = "the body is framed into events: read it with next_events";
            return Some(Err(HttpError::new(HttpErrorKind::InvalidRequest, msg)));
        }
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
        st.waiter = Some(Pending::Bytes(max, waiter));
        None
    }

    /// Every whole event buffered (up to `max`) now, an empty batch at the end,
    /// the error if the body failed; or `None` after registering `waiter`, which
    /// then receives the next events from the runtime.
    pub fn next_events_or_wait(&self, max: usize, waiter: EventWaiter) -> Option<Batch> {
        if self.framing.is_none() {
            let msg = "the body is not framed: read it with next_chunk";
            return Some(Err(HttpError::new(HttpErrorKind::InvalidRequest, msg)));
        }
        let mut st = self.shared.state.lock();
        if let Some(batch) = st.ready_events(max) {
            drop(st);
            self.shared.space.notify_one();
            return Some(batch);
        }
        if st.waiter.is_some() {
            return Some(Err(HttpError::new(
                HttpErrorKind::InvalidRequest,
                "the body is already being read",
            )));
        }
        st.waiter = Some(Pending::Events(max, waiter));
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

async fn pump(
    mut body: Incoming,
    shared: Arc<Shared>,
    idle_timeout: Option<Duration>,
    mut framer: Option<Framer>,
) {
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
                if let Some(framer) = framer.as_mut() {
                    match frame_batch(framer, &[], true) {
                        Ok(events) => shared.push_events(events),
                        Err(e) => {
                            shared.finish(Err(e));
                            return;
                        }
                    }
                }
                shared.finish(Ok(()));
                return;
            }
            Some(Ok(frame)) => {
                let mut batch = Vec::new();
                if let Ok(data) = frame.into_data() {
                    batch.push(data);
                }
                let mut end = gather(&mut body, &mut batch).await;
                match framer.as_mut() {
                    None => shared.push_all(batch),
                    Some(framer) => {
                        let framed = frame_batch(framer, &batch, matches!(end, Some(Ok(()))));
                        match framed {
                            Ok(events) => shared.push_events(events),
                            Err(e) => end = Some(Err(e)),
                        }
                    }
                }
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

/// The events `batch` completes (and, at the `end`, what the rest completes).
fn frame_batch(framer: &mut Framer, batch: &[Bytes], end: bool) -> Result<Vec<Event>, HttpError> {
    let mut events = Vec::new();
    let too_long = |_| {
        let msg = format!("a stream event exceeds {} bytes", super::sse::MAX_EVENT);
        HttpError::new(HttpErrorKind::Protocol, msg)
    };
    for data in batch {
        framer.feed(data, &mut events).map_err(too_long)?;
    }
    if end {
        framer.finish(&mut events).map_err(too_long)?;
    }
    Ok(events)
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

    #[test]
    fn ready_events_caps_the_batch_and_counts_bytes() {
        let mut st = State::default();
        for data in [&b"one"[..], b"two", b"three"] {
            let ev = Event {
                event: Bytes::from_static(b"message"),
                data: Bytes::copy_from_slice(data),
            };
            st.buffered += ev.size();
            st.events.push_back(ev);
        }
        let first = st.ready_events(2).unwrap().unwrap();
        assert_eq!(first.len(), 2);
        assert_eq!(st.buffered, 7 + 5);
        assert!(st.ready_events(0).unwrap().unwrap().len() == 1); // at least one
        assert_eq!(st.buffered, 0);
        assert!(st.ready_events(2).is_none());
        st.end = Some(Err(HttpError::new(HttpErrorKind::Read, "reset")));
        assert_eq!(
            st.ready_events(2).unwrap().unwrap_err().kind,
            HttpErrorKind::Read
        );
    }
}
