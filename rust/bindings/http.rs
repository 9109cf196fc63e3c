//! `HttpClient`, `HttpRequest`, `HttpBody`, `Completions`, `StreamFramer`: the
//! core's HTTP client, bridged to asyncio. A request runs on the tokio runtime; its
//! result is queued on a `Completions` (one per event loop) that wakes the
//! loop through a socket, and the loop settles the request's future. The
//! runtime's threads never wait for the GIL.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use pyo3::exceptions::PyBaseException;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::error::{positive, Error};
use crate::http::body::{Batch, BodyStream};
use crate::http::sse::{Event, Framer, Framing, TooLong, MAX_EVENT};
use crate::http::{
    build_request, version_str, HttpClient, HttpConfig, HttpError, Job, Reply, ReplyBody,
};

pyo3::create_exception!(
    llmrelay._core,
    HttpTransportError,
    pyo3::exceptions::PyException,
    "A request of `HttpClient` failed; `args` is `(kind, message)`."
);

fn py_error(e: HttpError) -> PyErr {
    HttpTransportError::new_err((e.kind.as_str(), e.message))
}

/// What a finished operation hands back, converted to Python on the loop's thread.
pub(super) enum Outcome {
    Reply(Result<Reply, HttpError>),
    Chunk(Result<Bytes, HttpError>),
    Events(Batch),
    /// Any other result, built on the loop's thread (a value or an exception).
    Value(Box<dyn FnOnce(Python<'_>) -> PyResult<PyObject> + Send>),
    /// A parked waiter's turn (`Waker`): the future's result is `None`.
    Wake,
}

impl Outcome {
    fn into_py(self, py: Python<'_>) -> PyResult<PyObject> {
        match self {
            Outcome::Reply(Ok(reply)) => reply_to_py(py, reply),
            Outcome::Chunk(Ok(b)) => Ok(PyBytes::new(py, &b).into_any().unbind()),
            Outcome::Events(Ok(events)) => Ok(events_to_py(py, &events)?.into_any().unbind()),
            Outcome::Wake => Ok(py.None()),
            Outcome::Reply(Err(e)) | Outcome::Chunk(Err(e)) | Outcome::Events(Err(e)) => {
                Ok(py_error(e).into_value(py).into_any())
            }
            Outcome::Value(build) => build(py).or_else(|e| Ok(e.into_value(py).into_any())),
        }
    }
}

/// The queue behind `Completions`: filled by the runtime without the GIL,
/// drained on the event loop's thread.
pub(super) struct Queue {
    items: Mutex<Vec<(Py<PyAny>, Outcome)>>,
    /// Written (one byte) when the queue becomes non-empty.
    wake: UnixStream,
    /// Watched by the event loop (`loop.add_reader`).
    watch: UnixStream,
}

impl Queue {
    pub(super) fn push(&self, future: Py<PyAny>, outcome: Outcome) {
        let was_empty = {
            let mut items = self.items.lock();
            items.push((future, outcome));
            items.len() == 1
        };
        if was_empty {
            // A full socket buffer means a wake-up is pending already.
            let _ = (&self.wake).write(&[1]);
        }
    }
}

/// Complete `future` with `outcome` unless it is done (cancelled) already.
/// An asyncio future parked on its loop's `Completions`: `wake` settles it
/// with `None` through that loop's queue, from any thread or loop.
pub(super) struct Waker {
    future: Py<PyAny>,
    queue: Arc<Queue>,
}

impl Waker {
    /// Park `future`, to be woken through `completions` (its loop's queue).
    pub(super) fn new(future: Py<PyAny>, completions: &PyCompletions) -> Self {
        Self {
            future,
            queue: completions.queue.clone(),
        }
    }

    /// Settle the future with `None` on its loop (a future already done is left alone).
    pub(super) fn wake(self) {
        self.queue.push(self.future, Outcome::Wake);
    }
}

fn settle(py: Python<'_>, future: &Bound<'_, PyAny>, outcome: Outcome) -> PyResult<()> {
    if future.call_method0(intern!(py, "done"))?.is_truthy()? {
        return Ok(());
    }
    let value = outcome.into_py(py)?;
    let method = if value.bind(py).is_instance_of::<PyBaseException>() {
        intern!(py, "set_exception")
    } else {
        intern!(py, "set_result")
    };
    future.call_method1(method, (value,))?;
    Ok(())
}

/// Completes asyncio futures from the runtime: the runtime queues results
/// and writes a byte to a socket the event loop watches; `drain()` (the
/// loop's reader callback) settles every queued future in one go. The runtime
/// never takes the GIL, and a burst of replies costs one loop wake-up.
///
/// Given the loop's `call_soon`, it also batches submissions: requests started
/// during one turn of the loop are spawned together by `flush()` (scheduled
/// with `call_soon`), from one task on the runtime, so the runtime's thread
/// is woken once per turn rather than once per request.
#[pyclass(name = "Completions", module = "llmrelay._core", frozen)]
pub struct PyCompletions {
    queue: Arc<Queue>,
    call_soon: Option<Py<PyAny>>,
    submitted: Mutex<Vec<Submission>>,
}

/// A request waiting for the next `flush()`.
struct Submission {
    rt: tokio::runtime::Handle,
    job: Job,
    ctl: Arc<Ctl>,
}

/// Abort control of a request that may not have been spawned yet.
#[derive(Default)]
struct Ctl {
    aborted: AtomicBool,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Ctl {
    fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.lock().as_ref() {
            task.abort();
        }
    }

    fn started(&self, task: tokio::task::AbortHandle) {
        let mut slot = self.task.lock();
        if self.aborted.load(Ordering::SeqCst) {
            task.abort();
        }
        *slot = Some(task);
    }

    fn finished(&self) -> bool {
        self.task.lock().as_ref().is_some_and(|t| t.is_finished())
    }
}

#[pymethods]
impl PyCompletions {
    #[new]
    #[pyo3(signature = (call_soon = None))]
    fn new(call_soon: Option<Py<PyAny>>) -> PyResult<Self> {
        let (wake, watch) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        watch.set_nonblocking(true)?;
        Ok(Self {
            queue: Arc::new(Queue {
                items: Mutex::new(Vec::new()),
                wake,
                watch,
            }),
            call_soon,
            submitted: Mutex::new(Vec::new()),
        })
    }

    /// Spawn the requests submitted since the last flush; returns how many.
    fn flush(&self) -> usize {
        let batch = std::mem::take(&mut *self.submitted.lock());
        let Some(first) = batch.first() else {
            return 0;
        };
        let count = batch.len();
        let rt = first.rt.clone();
        rt.spawn(async move {
            for sub in batch {
                if !sub.ctl.aborted.load(Ordering::SeqCst) {
                    let task = sub.rt.spawn(sub.job);
                    sub.ctl.started(task.abort_handle());
                }
            }
        });
        count
    }

    /// The descriptor to watch for readability (`loop.add_reader(fd, drain)`).
    fn fileno(&self) -> i32 {
        self.queue.watch.as_raw_fd()
    }

    /// Settle every queued future (skipping cancelled ones); returns how many.
    fn drain(&self, py: Python<'_>) -> PyResult<usize> {
        // Clear the wake-ups first: a push after this writes a new one.
        let mut sink = [0u8; 256];
        while matches!((&self.queue.watch).read(&mut sink), Ok(n) if n == sink.len()) {}
        let items = std::mem::take(&mut *self.queue.items.lock());
        let count = items.len();
        let mut first_error = None;
        for (future, outcome) in items {
            if let Err(e) = settle(py, future.bind(py), outcome) {
                first_error.get_or_insert(e);
            }
        }
        // Every future was visited; report the first failure (a bug) if any.
        first_error.map_or(Ok(count), Err)
    }

    /// Results queued and not yet drained.
    fn pending(&self) -> usize {
        self.queue.items.lock().len()
    }
}

impl PyCompletions {
    /// The queue, for other bindings that complete futures through it.
    pub(super) fn queue(&self) -> Arc<Queue> {
        self.queue.clone()
    }
}

/// Events as a list of `(event, data)`: `str` names, `bytes` data.
fn events_to_py<'py>(py: Python<'py>, events: &[Event]) -> PyResult<Bound<'py, PyList>> {
    let message = intern!(py, "message");
    let empty = intern!(py, "");
    let items = events.iter().map(|e| {
        let name = match &e.event[..] {
            b"message" => message.clone(),
            b"" => empty.clone(),
            other => PyString::new(py, &String::from_utf8_lossy(other)),
        };
        PyTuple::new(py, [name.into_any(), PyBytes::new(py, &e.data).into_any()])
    });
    let list = PyList::empty(py);
    for item in items {
        list.append(item?)?;
    }
    Ok(list)
}

fn framing_arg(framing: Option<&str>) -> PyResult<Option<Framing>> {
    match framing {
        None => Ok(None),
        Some(name) => Framing::parse(name)
            .map(Some)
            .ok_or_else(|| Error::config("framing", name, "expected 'sse' or 'ndjson'").into()),
    }
}

fn reply_to_py(py: Python<'_>, reply: Reply) -> PyResult<PyObject> {
    let headers = PyList::empty(py);
    for (name, value) in &reply.headers {
        let pair = (
            PyBytes::new(py, name.as_str().as_bytes()),
            PyBytes::new(py, value.as_bytes()),
        );
        headers.append(pair)?;
    }
    let (body, stream): (Bound<'_, PyBytes>, Option<Py<PyHttpBody>>) = match reply.body {
        ReplyBody::Full(b) => (PyBytes::new(py, &b), None),
        ReplyBody::Stream(s) => (
            PyBytes::new(py, b""),
            Some(Py::new(py, PyHttpBody { inner: s })?),
        ),
    };
    let version = version_str(reply.version);
    let tuple = PyTuple::new(
        py,
        [
            reply.status.into_pyobject(py)?.into_any(),
            headers.into_any(),
            body.into_any(),
            version.into_pyobject(py)?.into_any(),
            stream.into_pyobject(py)?.into_any(),
        ],
    )?;
    Ok(tuple.into_any().unbind())
}

/// A pooled HTTP/1.1 + HTTP/2 client (rustls TLS) on the core's tokio runtime.
#[pyclass(name = "HttpClient", module = "llmrelay._core", frozen)]
pub struct PyHttpClient {
    inner: HttpClient,
}

#[pymethods]
impl PyHttpClient {
    #[new]
    #[pyo3(signature = (connect_timeout_s = 10.0, pool_idle_timeout_s = 90.0, max_idle_per_host = 64, http2 = true))]
    fn new(
        connect_timeout_s: f64,
        pool_idle_timeout_s: f64,
        max_idle_per_host: usize,
        http2: bool,
    ) -> PyResult<Self> {
        let config = HttpConfig::new(
            connect_timeout_s,
            pool_idle_timeout_s,
            max_idle_per_host,
            http2,
        )?;
        Ok(Self {
            inner: HttpClient::new(config),
        })
    }

    /// Start a request; `future` (an asyncio future) gets
    /// `(status, headers, body, http_version, stream)` or an `HttpTransportError`
    /// through `completions`. `timeout_s` bounds the wait for the response head
    /// (and each piece of the body); `body_idle_s`, when given, bounds each wait
    /// for a piece of a streamed body instead, timed on the runtime. With
    /// `framing` (`"sse"` or `"ndjson"`) a 2xx body always streams, framed into
    /// whole events on the runtime: read it with `HttpBody.next_events`.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (method, url, headers, body, timeout_s, completions, future, body_idle_s=None, framing=None))]
    fn request(
        &self,
        method: &str,
        url: &str,
        headers: Vec<(PyBackedBytes, PyBackedBytes)>,
        body: &[u8],
        timeout_s: Option<f64>,
        completions: &Bound<'_, PyCompletions>,
        future: Py<PyAny>,
        body_idle_s: Option<f64>,
        framing: Option<&str>,
    ) -> PyResult<PyHttpRequest> {
        let framing = framing_arg(framing)?;
        let timeout = match timeout_s {
            Some(t) => Some(Duration::from_secs_f64(positive("timeout_s", t)?)),
            None => None,
        };
        let body_idle = match body_idle_s {
            Some(t) => Some(Duration::from_secs_f64(positive("body_idle_s", t)?)),
            None => None,
        };
        let pairs = headers.iter().map(|(n, v)| (&n[..], &v[..]));
        let req =
            build_request(method, url, pairs, Bytes::copy_from_slice(body)).map_err(py_error)?;
        let queue = completions.get().queue.clone();
        let (rt, job) = self
            .inner
            .prepare(req, timeout, body_idle, framing, move |result| {
                queue.push(future, Outcome::Reply(result))
            })
            .map_err(py_error)?;
        let ctl = Arc::new(Ctl::default());
        let owner = completions.get();
        match &owner.call_soon {
            None => ctl.started(rt.spawn(job).abort_handle()),
            Some(call_soon) => {
                let first = {
                    let mut submitted = owner.submitted.lock();
                    submitted.push(Submission {
                        rt,
                        job,
                        ctl: ctl.clone(),
                    });
                    submitted.len() == 1
                };
                if first {
                    let py = completions.py();
                    call_soon.call1(py, (completions.getattr(intern!(py, "flush"))?,))?;
                }
            }
        }
        Ok(PyHttpRequest { ctl })
    }

    /// Drop the idle pooled connections.
    fn close(&self) {
        self.inner.close();
    }

    fn __repr__(&self) -> String {
        let c = self.inner.config();
        format!(
            "HttpClient(connect_timeout_s={}, pool_idle_timeout_s={}, max_idle_per_host={}, http2={})",
            c.connect_timeout.as_secs_f64(),
            c.pool_idle_timeout.as_secs_f64(),
            c.max_idle_per_host,
            if c.http2 { "True" } else { "False" }
        )
    }
}

/// A request in flight; `abort()` drops it (and its connection) on the runtime.
#[pyclass(name = "HttpRequest", module = "llmrelay._core", frozen)]
pub struct PyHttpRequest {
    ctl: Arc<Ctl>,
}

#[pymethods]
impl PyHttpRequest {
    /// Abort the request; its callback then gets an `internal` error (ignore it).
    fn abort(&self) {
        self.ctl.abort();
    }

    /// Whether the request's task has ended.
    fn finished(&self) -> bool {
        self.ctl.finished()
    }
}

/// A streamed response body; each read returns everything buffered so far.
#[pyclass(name = "HttpBody", module = "llmrelay._core", frozen)]
pub struct PyHttpBody {
    inner: BodyStream,
}

#[pymethods]
impl PyHttpBody {
    /// The buffered bytes (up to `max_bytes`) now, `b""` at the end; or
    /// `None`, and `future` later gets the next piece through `completions`.
    #[pyo3(signature = (completions, future, max_bytes = 65536))]
    fn next_chunk(
        &self,
        py: Python<'_>,
        completions: &PyCompletions,
        future: Py<PyAny>,
        max_bytes: usize,
    ) -> PyResult<Option<Py<PyBytes>>> {
        let queue = completions.queue.clone();
        let waiter = Box::new(move |chunk: Result<Bytes, HttpError>| {
            queue.push(future, Outcome::Chunk(chunk))
        });
        match self.inner.next_or_wait(max_bytes, waiter) {
            None => Ok(None),
            Some(Ok(b)) => Ok(Some(PyBytes::new(py, &b).unbind())),
            Some(Err(e)) => Err(py_error(e)),
        }
    }

    /// Every whole event buffered (up to `max_events`) now as `(event, data)`
    /// pairs, `[]` at the end; or `None`, and `future` later gets the next
    /// events through `completions`. Only for a body requested with `framing`.
    #[pyo3(signature = (completions, future, max_events = 1024))]
    fn next_events<'py>(
        &self,
        py: Python<'py>,
        completions: &PyCompletions,
        future: Py<PyAny>,
        max_events: usize,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        let queue = completions.queue.clone();
        let waiter = Box::new(move |batch: Batch| queue.push(future, Outcome::Events(batch)));
        match self.inner.next_events_or_wait(max_events, waiter) {
            None => Ok(None),
            Some(Ok(events)) => Ok(Some(events_to_py(py, &events)?)),
            Some(Err(e)) => Err(py_error(e)),
        }
    }

    /// How the body is framed: `"sse"`, `"ndjson"`, or `None` (bytes).
    #[getter]
    fn framing(&self) -> Option<&'static str> {
        self.inner.framing().map(framing_name)
    }

    /// Bytes received and not yet read.
    #[getter]
    fn buffered(&self) -> usize {
        self.inner.buffered()
    }

    /// Stop reading and drop the connection; a pending read gets an error.
    fn close(&self) {
        self.inner.close();
    }
}

fn framing_name(f: Framing) -> &'static str {
    match f {
        Framing::Sse => "sse",
        Framing::Ndjson => "ndjson",
    }
}

fn too_long(_: TooLong) -> PyErr {
    let msg = format!("a stream event exceeds {MAX_EVENT} bytes");
    HttpTransportError::new_err(("protocol", msg))
}

/// The core's SSE / NDJSON framer over bytes read elsewhere (a user-supplied
/// httpx transport): `feed` returns the `(event, data)` pairs the bytes complete.
#[pyclass(name = "StreamFramer", module = "llmrelay._core", frozen)]
pub struct PyStreamFramer {
    inner: Mutex<Framer>,
}

#[pymethods]
impl PyStreamFramer {
    #[new]
    fn new(framing: &str) -> PyResult<Self> {
        let framing = framing_arg(Some(framing))?.unwrap_or(Framing::Sse);
        Ok(Self {
            inner: Mutex::new(Framer::new(framing)),
        })
    }

    /// The events `data` completes; an over-long event raises `HttpTransportError`.
    fn feed<'py>(&self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyList>> {
        let mut events = Vec::new();
        self.inner
            .lock()
            .feed(data, &mut events)
            .map_err(too_long)?;
        events_to_py(py, &events)
    }

    /// End of the stream: what the rest completes (never a partial SSE event).
    fn finish<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut events = Vec::new();
        self.inner.lock().finish(&mut events).map_err(too_long)?;
        events_to_py(py, &events)
    }

    /// `"sse"` or `"ndjson"`.
    #[getter]
    fn framing(&self) -> &'static str {
        framing_name(self.inner.lock().framing())
    }
}
