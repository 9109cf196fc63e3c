//! The HTTP client behind llmrelay's default transport: hyper 1 with
//! hyper-util's pooled client on the shared tokio runtime.
//!
//! Connection pooling with keep-alive, HTTP/2 when a TLS server offers it by
//! ALPN, rustls with the webpki roots (no system OpenSSL). A request is
//! [`spawn`](HttpClient::spawn)ed with a callback that receives the whole
//! [`Reply`]: small bodies (known length up to [`FULL_BODY_LIMIT`]) are read
//! completely before the callback runs, so a chat completion costs one
//! crossing into Python; longer or open-ended bodies come as a
//! [`BodyStream`]. A request sent with a [`Framing`] (SSE or NDJSON) gets its
//! successful (2xx) body as a stream framed into whole events on the runtime
//! ([`sse`]), whatever its length.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri, Version};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parking_lot::Mutex;
use tokio::task::AbortHandle;

use crate::error::{positive, Result};
use crate::runtime;

pub mod body;
pub mod sse;

use body::BodyStream;
use sse::Framing;
/// Bodies with a declared length up to this many bytes are read whole.
pub const FULL_BODY_LIMIT: u64 = 1 << 20;

/// What kind of failure a request met (the Python layer maps each to an httpx
/// exception).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpErrorKind {
    /// The request could not be built (bad method, URL, header).
    InvalidRequest,
    /// The URL's scheme is not http or https.
    UnsupportedProtocol,
    /// The connection could not be opened (refused, DNS, TLS handshake).
    Connect,
    /// Opening the connection took longer than the connect timeout.
    ConnectTimeout,
    /// The response (head or next body piece) took longer than the read timeout.
    ReadTimeout,
    /// The connection failed while sending the request.
    Write,
    /// The connection failed while reading the response (reset, I/O error).
    Read,
    /// The peer broke HTTP (bad response, closed before a complete message).
    Protocol,
    /// The response body was closed by its reader.
    Closed,
    /// The request's task ended without a result (a bug).
    Internal,
}

impl HttpErrorKind {
    /// The kind's stable name, as Python sees it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::UnsupportedProtocol => "unsupported_protocol",
            Self::Connect => "connect",
            Self::ConnectTimeout => "connect_timeout",
            Self::ReadTimeout => "read_timeout",
            Self::Write => "write",
            Self::Read => "read",
            Self::Protocol => "protocol",
            Self::Closed => "closed",
            Self::Internal => "internal",
        }
    }
}

/// A failed request: its kind and a message with the causes.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpError {
    /// What kind of failure.
    pub kind: HttpErrorKind,
    /// Human-readable detail, the chain of causes joined by ": ".
    pub message: String,
}

impl HttpError {
    /// An error of `kind` with `message`.
    pub fn new(kind: HttpErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

/// The client's settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Longest wait for a TCP connect (TLS handshake not included).
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per host.
    pub max_idle_per_host: usize,
    /// Offer HTTP/2 by ALPN on TLS connections.
    pub http2: bool,
}

impl HttpConfig {
    /// Validated settings (seconds as floats), or `Error::Config` naming the bad one.
    pub fn new(
        connect_timeout_s: f64,
        pool_idle_timeout_s: f64,
        max_idle_per_host: usize,
        http2: bool,
    ) -> Result<Self> {
        Ok(Self {
            connect_timeout: Duration::from_secs_f64(positive(
                "connect_timeout_s",
                connect_timeout_s,
            )?),
            pool_idle_timeout: Duration::from_secs_f64(positive(
                "pool_idle_timeout_s",
                pool_idle_timeout_s,
            )?),
            max_idle_per_host,
            http2,
        })
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(90),
            max_idle_per_host: 64,
            http2: true,
        }
    }
}

/// A response's body: all of it, or a stream of it.
pub enum ReplyBody {
    /// The whole body.
    Full(Bytes),
    /// The body still arriving.
    Stream(BodyStream),
}

/// A response: status, headers in wire order, version and body.
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers (names lowercase), repeated names kept.
    pub headers: HeaderMap,
    /// The HTTP version the response came in.
    pub version: Version,
    /// The body.
    pub body: ReplyBody,
}

/// The HTTP version as httpx spells it.
pub fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// A request's task, ready to spawn on the runtime.
pub type Job = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

type Pool = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A pooled HTTP/1.1 + HTTP/2 client; cheap to share, thread-safe, and safe
/// across fork (a child starts with an empty pool on its own runtime).
pub struct HttpClient {
    config: HttpConfig,
    /// The pool and the process id it belongs to.
    slot: Mutex<Option<(u32, Pool)>>,
}

impl HttpClient {
    /// A client with `config`; nothing starts until the first request.
    pub fn new(config: HttpConfig) -> Self {
        Self {
            config,
            slot: Mutex::new(None),
        }
    }

    /// The client's settings.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    fn pool(&self, pid: u32) -> Pool {
        let mut slot = self.slot.lock();
        match slot.as_ref() {
            Some((owner, pool)) if *owner == pid => pool.clone(),
            _ => {
                let pool = build_pool(&self.config);
                *slot = Some((pid, pool.clone()));
                pool
            }
        }
    }

    /// Drop idle pooled connections (new requests open new ones).
    pub fn close(&self) {
        self.slot.lock().take();
    }

    /// Send `req` on the runtime and call `done` with the result. `read_timeout`
    /// bounds the wait for the response head and for each piece of the body.
    /// The returned handle aborts the request (dropping its connection).
    pub fn spawn<F>(
        &self,
        req: Request<Full<Bytes>>,
        read_timeout: Option<Duration>,
        done: F,
    ) -> std::result::Result<AbortHandle, HttpError>
    where
        F: FnOnce(std::result::Result<Reply, HttpError>) + Send + 'static,
    {
        let (rt, job) = self.prepare(req, read_timeout, None, None, done)?;
        Ok(rt.spawn(job).abort_handle())
    }

    /// The runtime and the task that sends `req` and calls `done`, not yet
    /// spawned: a caller submitting many requests at once spawns them from
    /// one task on the runtime, so the runtime is woken once for all.
    /// `body_idle` bounds each wait for a piece of a streamed body (default:
    /// `read_timeout`); it is timed here, where the bytes arrive, so a stall of
    /// the reader's thread (a GC pause) never counts as the provider's silence.
    /// With `framing`, a 2xx body is always streamed, framed into events.
    pub fn prepare<F>(
        &self,
        req: Request<Full<Bytes>>,
        read_timeout: Option<Duration>,
        body_idle: Option<Duration>,
        framing: Option<Framing>,
        done: F,
    ) -> std::result::Result<(tokio::runtime::Handle, Job), HttpError>
    where
        F: FnOnce(std::result::Result<Reply, HttpError>) + Send + 'static,
    {
        let pid = std::process::id();
        let rt = runtime::handle_for(pid)
            .map_err(|e| HttpError::new(HttpErrorKind::Internal, e.to_string()))?;
        let pool = self.pool(pid);
        let guard = DoneGuard(Some(done));
        let inner = rt.clone();
        let job = Box::pin(async move {
            let mut guard = guard;
            let result = execute(pool, req, read_timeout, body_idle, framing, &inner).await;
            if let Some(done) = guard.0.take() {
                done(result);
            }
        });
        Ok((rt, job))
    }

    /// Send `req` and wait for the reply (for Rust callers and tests).
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
        read_timeout: Option<Duration>,
    ) -> std::result::Result<Reply, HttpError> {
        let pid = std::process::id();
        let rt = runtime::handle_for(pid)
            .map_err(|e| HttpError::new(HttpErrorKind::Internal, e.to_string()))?;
        execute(self.pool(pid), req, read_timeout, None, None, &rt).await
    }

    /// Send `req` and wait for the reply, its 2xx body framed into events
    /// (for Rust callers and tests).
    pub async fn send_framed(
        &self,
        req: Request<Full<Bytes>>,
        read_timeout: Option<Duration>,
        body_idle: Option<Duration>,
        framing: Framing,
    ) -> std::result::Result<Reply, HttpError> {
        let pid = std::process::id();
        let rt = runtime::handle_for(pid)
            .map_err(|e| HttpError::new(HttpErrorKind::Internal, e.to_string()))?;
        let pool = self.pool(pid);
        execute(pool, req, read_timeout, body_idle, Some(framing), &rt).await
    }
}

/// Calls the callback with an `Internal` error if the task ends without a
/// result (a panic, or an abort), so no caller waits forever.
struct DoneGuard<F: FnOnce(std::result::Result<Reply, HttpError>)>(Option<F>);

impl<F: FnOnce(std::result::Result<Reply, HttpError>)> Drop for DoneGuard<F> {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            let msg = "the request ended without a result (aborted)";
            done(Err(HttpError::new(HttpErrorKind::Internal, msg)));
        }
    }
}

fn build_pool(config: &HttpConfig) -> Pool {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.connect_timeout));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)
        .expect("ring supports the default protocol versions")
        .https_or_http();
    let https = if config.http2 {
        tls.enable_all_versions().wrap_connector(http)
    } else {
        tls.enable_http1().wrap_connector(http)
    };
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.max_idle_per_host)
        .build(https)
}

/// Build a request from wire parts; errors name what is wrong.
pub fn build_request<'a>(
    method: &str,
    url: &str,
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    body: Bytes,
) -> std::result::Result<Request<Full<Bytes>>, HttpError> {
    let invalid = |what: &str, e: &dyn fmt::Display| {
        HttpError::new(HttpErrorKind::InvalidRequest, format!("{what}: {e}"))
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|e| invalid("method", &e))?;
    let uri: Uri = url.parse().map_err(|e| invalid("url", &e))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        other => {
            let msg = format!("unsupported URL scheme {:?}", other.unwrap_or(""));
            return Err(HttpError::new(HttpErrorKind::UnsupportedProtocol, msg));
        }
    }
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    let map = req.headers_mut();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name).map_err(|e| invalid("header name", &e))?;
        let value = HeaderValue::from_bytes(value).map_err(|e| invalid("header value", &e))?;
        map.append(name, value);
    }
    Ok(req)
}

async fn execute(
    pool: Pool,
    req: Request<Full<Bytes>>,
    read_timeout: Option<Duration>,
    body_idle: Option<Duration>,
    framing: Option<Framing>,
    rt: &tokio::runtime::Handle,
) -> std::result::Result<Reply, HttpError> {
    let sent = pool.request(req);
    let resp = match read_timeout {
        Some(t) => tokio::time::timeout(t, sent).await.map_err(|_| {
            HttpError::new(
                HttpErrorKind::ReadTimeout,
                "timed out waiting for the response",
            )
        })?,
        None => sent.await,
    }
    .map_err(|e| classify_client_error(&e))?;
    let (parts, body) = resp.into_parts();
    let framing = framing.filter(|_| parts.status.is_success());
    let whole = framing.is_none()
        && (body.is_end_stream()
            || body
                .size_hint()
                .exact()
                .is_some_and(|n| n <= FULL_BODY_LIMIT));
    let body = if whole {
        ReplyBody::Full(read_all(body, read_timeout).await?)
    } else {
        let idle = body_idle.or(read_timeout);
        ReplyBody::Stream(BodyStream::spawn_framed(rt, body, idle, framing))
    };
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        version: parts.version,
        body,
    })
}

async fn read_all(
    mut body: Incoming,
    idle_timeout: Option<Duration>,
) -> std::result::Result<Bytes, HttpError> {
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    loop {
        let frame = match idle_timeout {
            Some(t) => tokio::time::timeout(t, body.frame()).await.map_err(|_| {
                HttpError::new(HttpErrorKind::ReadTimeout, "timed out reading the body")
            })?,
            None => body.frame().await,
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| classify_body_error(&e))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match &first {
            None if rest.is_empty() => first = Some(data),
            _ => {
                if let Some(f) = first.take() {
                    rest.extend_from_slice(&f);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}

/// The causes of `e`, joined by ": ".
fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cur = c.source();
    }
    msg
}

fn find<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(t) = c.downcast_ref::<T>() {
            return Some(t);
        }
        cur = c.source();
    }
    None
}

fn classify_client_error(e: &hyper_util::client::legacy::Error) -> HttpError {
    let msg = chain(e);
    if e.is_connect() {
        let timed_out = find::<std::io::Error>(e)
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            || msg.contains("timed out");
        let kind = if timed_out {
            HttpErrorKind::ConnectTimeout
        } else {
            HttpErrorKind::Connect
        };
        return HttpError::new(kind, msg);
    }
    match find::<hyper::Error>(e) {
        Some(h) => classify_hyper(h, msg),
        None => HttpError::new(HttpErrorKind::Read, msg),
    }
}

fn classify_hyper(h: &hyper::Error, msg: String) -> HttpError {
    let kind = if h.is_timeout() {
        HttpErrorKind::ReadTimeout
    } else if h.is_parse() || h.is_incomplete_message() || h.is_parse_status() {
        HttpErrorKind::Protocol
    } else if h.is_body_write_aborted() || h.is_user() {
        HttpErrorKind::Write
    } else {
        HttpErrorKind::Read
    };
    HttpError::new(kind, msg)
}

/// Classify an error met while reading a response body.
pub(crate) fn classify_body_error(e: &hyper::Error) -> HttpError {
    classify_hyper(e, chain(e))
}

#[cfg(test)]
mod tests;
