//! `HttpClient`, `HttpRequest`, `HttpBody`: the core's HTTP client, bridged to
//! asyncio by callbacks. A request runs on the tokio runtime; when its reply
//! is complete the runtime takes the GIL once and calls
//! `schedule(done, result)` (pass the loop's `call_soon_threadsafe`), so the
//! result reaches the event loop's thread without any polling.

use std::time::Duration;

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::error::positive;
use crate::http::{
    build_request, version_str, HttpClient, HttpConfig, HttpError, Reply, ReplyBody,
};
use crate::http_body::BodyStream;

pyo3::create_exception!(
    llmrelay._core,
    HttpTransportError,
    pyo3::exceptions::PyException,
    "A request of `HttpClient` failed; `args` is `(kind, message)`."
);

fn py_error(e: HttpError) -> PyErr {
    HttpTransportError::new_err((e.kind.as_str(), e.message))
}

/// Where a result goes: `schedule(done, result)` under the GIL.
struct Callback {
    schedule: Py<PyAny>,
    done: Py<PyAny>,
}

impl Callback {
    fn fire(self, make: impl FnOnce(Python<'_>) -> PyResult<PyObject>) {
        Python::with_gil(|py| {
            let value = make(py).unwrap_or_else(|e| e.into_value(py).into_any());
            // A closed loop raises here; nobody is waiting then, so drop it.
            let _ = self.schedule.call1(py, (self.done, value));
        });
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

    /// Start a request; `schedule(done, result)` is called once with
    /// `(status, headers, body, http_version, stream)` or an `HttpTransportError`.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (method, url, headers, body, timeout_s, schedule, done))]
    fn request(
        &self,
        method: &str,
        url: &str,
        headers: Vec<(PyBackedBytes, PyBackedBytes)>,
        body: &[u8],
        timeout_s: Option<f64>,
        schedule: Py<PyAny>,
        done: Py<PyAny>,
    ) -> PyResult<PyHttpRequest> {
        let timeout = match timeout_s {
            Some(t) => Some(Duration::from_secs_f64(positive("timeout_s", t)?)),
            None => None,
        };
        let pairs = headers.iter().map(|(n, v)| (&n[..], &v[..]));
        let req =
            build_request(method, url, pairs, Bytes::copy_from_slice(body)).map_err(py_error)?;
        let cb = Callback { schedule, done };
        let abort = self
            .inner
            .spawn(req, timeout, move |result| {
                cb.fire(|py| match result {
                    Ok(reply) => reply_to_py(py, reply),
                    Err(e) => Ok(py_error(e).into_value(py).into_any()),
                })
            })
            .map_err(py_error)?;
        Ok(PyHttpRequest { abort })
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
    abort: tokio::task::AbortHandle,
}

#[pymethods]
impl PyHttpRequest {
    /// Abort the request; its callback then gets an `internal` error (ignore it).
    fn abort(&self) {
        self.abort.abort();
    }

    /// Whether the request's task has ended.
    fn finished(&self) -> bool {
        self.abort.is_finished()
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
    /// `None`, and later `schedule(done, bytes | HttpTransportError)`.
    #[pyo3(signature = (schedule, done, max_bytes = 65536))]
    fn next_chunk(
        &self,
        py: Python<'_>,
        schedule: Py<PyAny>,
        done: Py<PyAny>,
        max_bytes: usize,
    ) -> PyResult<Option<Py<PyBytes>>> {
        let cb = Callback { schedule, done };
        let waiter = Box::new(move |chunk: Result<Bytes, HttpError>| {
            cb.fire(|py| match chunk {
                Ok(b) => Ok(PyBytes::new(py, &b).into_any().unbind()),
                Err(e) => Ok(py_error(e).into_value(py).into_any()),
            })
        });
        match self.inner.next_or_wait(max_bytes, waiter) {
            None => Ok(None),
            Some(Ok(b)) => Ok(Some(PyBytes::new(py, &b).unbind())),
            Some(Err(e)) => Err(py_error(e)),
        }
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
