//! The Redis connection of one shared-state user: opened lazily on the core's
//! runtime, opened again after `fork` (the pid is checked on every call) or
//! after a broken connection, never retried on the hot path. Scripts go by
//! SHA (`EVALSHA`); a `NOSCRIPT` reply (a restarted or flushed server) sends
//! the body once with `EVAL`, which also caches it on the server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};
use tokio::sync::Notify;

/// After a failed connect, calls go to the fallback at once for this long.
const CONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// The longest a background connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A connection with no reply for this long, whose last call timed out, is dropped.
const STALE_AFTER: Duration = Duration::from_secs(1);

/// Why a call did not get a reply from Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No reply within the op timeout.
    Timeout,
    /// No connection (refused, reset, closed, not yet open).
    Unavailable,
    /// Redis answered with an error (a script error, a wrong type).
    Script,
}

/// A Lua script with its SHA1.
#[derive(Debug)]
pub struct Script {
    body: &'static str,
    sha: String,
}

impl Script {
    /// The script with body `body`.
    pub fn new(body: &'static str) -> Self {
        Self {
            body,
            sha: redis::Script::new(body).get_hash().to_string(),
        }
    }
}

/// Counters of the connection (read by `stats`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Calls answered by Redis.
    pub ok: AtomicU64,
    /// Calls cut by the op timeout.
    pub timeouts: AtomicU64,
    /// Calls without a connection.
    pub unavailable: AtomicU64,
    /// Calls Redis answered with an error.
    pub script_errors: AtomicU64,
    /// `NOSCRIPT` replies answered with `EVAL`.
    pub script_loads: AtomicU64,
    /// Connections opened.
    pub connects: AtomicU64,
    /// The longest call so far, in µs (timed in the core, from start to result).
    pub slowest_us: AtomicU64,
}

#[derive(Default)]
struct State {
    pid: u32,
    conn: Option<MultiplexedConnection>,
    connecting: bool,
    failed_at: Option<Instant>,
    last_ok: Option<Instant>,
}

/// A lazily opened, fork-aware multiplexed connection with an op timeout.
pub struct Connection {
    client: Client,
    op_timeout: Duration,
    state: Mutex<State>,
    ready: Notify,
    /// What happened to calls so far.
    pub counters: Counters,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection to `client`'s server; nothing is opened until the first call.
    pub fn new(client: Client, op_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            client,
            op_timeout,
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            counters: Counters::default(),
        })
    }

    /// The op timeout.
    pub fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// Whether a connection is open now (in this process).
    pub fn connected(&self) -> bool {
        let s = self.state.lock();
        s.pid == std::process::id() && s.conn.is_some()
    }

    /// The open connection, or start opening one; `None` when there is none now.
    fn current(self: &Arc<Self>) -> Option<MultiplexedConnection> {
        let pid = std::process::id();
        let mut s = self.state.lock();
        if s.pid != pid {
            // Forked: the parent's connection belongs to its (leaked) runtime.
            if let Some(conn) = s.conn.take() {
                std::mem::forget(conn);
            }
            *s = State {
                pid,
                ..State::default()
            };
        }
        if let Some(conn) = &s.conn {
            return Some(conn.clone());
        }
        let backing_off = s.failed_at.is_some_and(|t| t.elapsed() < CONNECT_BACKOFF);
        if !s.connecting && !backing_off {
            s.connecting = true;
            let this = self.clone();
            tokio::spawn(async move { this.connect(pid).await });
        }
        None
    }

    async fn connect(self: Arc<Self>, pid: u32) {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(CONNECT_TIMEOUT);
        let opened = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        {
            let mut s = self.state.lock();
            if s.pid == pid {
                s.connecting = false;
                match opened {
                    Ok(Ok(conn)) => {
                        s.conn = Some(conn);
                        s.failed_at = None;
                        s.last_ok = Some(Instant::now());
                        self.counters.connects.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => s.failed_at = Some(Instant::now()),
                }
            }
        }
        self.ready.notify_waiters();
    }

    /// Forget a connection that failed (the next call opens a new one).
    fn drop_conn(&self, stale_only: bool) {
        let mut s = self.state.lock();
        let stale = s.last_ok.map_or(true, |t| t.elapsed() > STALE_AFTER);
        if !stale_only || stale {
            s.conn = None;
            s.failed_at = Some(Instant::now());
        }
    }

    /// Run `script` with `keys` and `args` within the op timeout. Waits for a
    /// connection being opened only within that timeout; never retries.
    pub async fn eval(
        self: &Arc<Self>,
        script: &Script,
        keys: &[String],
        args: &[String],
    ) -> Result<Value, Failure> {
        self.eval_args(script, keys, args).await
    }

    /// [`Self::eval`] with arguments of any Redis argument type (binary values).
    pub async fn eval_args<A: redis::ToRedisArgs + Sync>(
        self: &Arc<Self>,
        script: &Script,
        keys: &[String],
        args: &[A],
    ) -> Result<Value, Failure> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.op_timeout, self.eval_inner(script, keys, args))
            .await
            .unwrap_or(Err(Failure::Timeout));
        match result {
            Ok(_) => {
                self.state.lock().last_ok = Some(Instant::now());
                self.counters.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(Failure::Timeout) => {
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                self.drop_conn(true);
            }
            Err(Failure::Unavailable) => {
                self.counters.unavailable.fetch_add(1, Ordering::Relaxed);
            }
            Err(Failure::Script) => {
                self.counters.script_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.counters.slowest_us.fetch_max(took, Ordering::Relaxed);
        result
    }

    async fn eval_inner<A: redis::ToRedisArgs + Sync>(
        self: &Arc<Self>,
        script: &Script,
        keys: &[String],
        args: &[A],
    ) -> Result<Value, Failure> {
        let mut conn = loop {
            let waiting = self.ready.notified();
            if let Some(conn) = self.current() {
                break conn;
            }
            if !self.state.lock().connecting {
                return Err(Failure::Unavailable);
            }
            waiting.await;
        };
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&script.sha).arg(keys.len()).arg(keys).arg(args);
        match cmd.query_async::<Value>(&mut conn).await {
            Ok(v) => Ok(v),
            Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                self.counters.script_loads.fetch_add(1, Ordering::Relaxed);
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(script.body).arg(keys.len()).arg(keys).arg(args);
                cmd.query_async::<Value>(&mut conn)
                    .await
                    .map_err(|e| self.classify(&e))
            }
            Err(e) => Err(self.classify(&e)),
        }
    }

    fn classify(&self, e: &redis::RedisError) -> Failure {
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
        {
            self.drop_conn(false);
            Failure::Unavailable
        } else if e.is_timeout() {
            Failure::Timeout
        } else {
            Failure::Script
        }
    }
}
