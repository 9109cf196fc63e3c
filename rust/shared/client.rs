//! The Redis connection of one shared-state user: opened lazily on the core's
//! runtime, opened again after `fork` (the pid is checked on every call) or
//! after a broken connection, never retried on the hot path. Scripts go by
//! SHA (`EVALSHA`); a `NOSCRIPT` reply (a restarted or flushed server) sends
//! the body once with `EVAL`, which also caches it on the server.
//!
//! The server is one node or a Redis Cluster ([`Target`]): the users (the
//! limiter, the cache tier, dedup) see the same [`Connection`] either way.
//! On a cluster each script goes to the master of its first key's slot, so
//! every script's keys must share one hash tag (`{...}`); pub/sub uses a
//! plain connection to one seed, since a cluster broadcasts every `PUBLISH`
//! to all its nodes.
//!
//! `rediss://` is TLS (rustls, ring): the server's certificate is checked
//! against the system's roots (`rustls-native-certs`, which also reads
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` when a connection opens), never skipped;
//! a certificate that does not check out is a failed connect (unavailable).
//!
//! The core's URL spec (what the bindings take): one `redis://`,
//! `rediss://` or `unix://` URL for one node, or `cluster:` and a comma-
//! separated list of seed URLs (`cluster:redis://h1:7000,redis://h2:7000`)
//! for a Redis Cluster (the Python config writes it from `cluster=True`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, Value};
use tokio::sync::Notify;

use crate::error::Error;

type ConfigResult<T> = crate::error::Result<T>;

/// After a failed connect, calls go to the fallback at once for this long.
const CONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// The longest a background connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A connection with no reply for this long, whose last call timed out, is dropped.
const STALE_AFTER: Duration = Duration::from_secs(1);

/// The prefix of a cluster seed list in the core's URL spec.
pub const CLUSTER_PREFIX: &str = "cluster:";
/// Redirections (`MOVED`, `ASK`) and reconnects a cluster call may follow,
/// all within the op timeout.
const CLUSTER_RETRIES: u32 = 2;

/// `url` with the password of `redis://user:pass@host` replaced by `***`
/// (each seed of a cluster list on its own).
pub fn redact(url: &str) -> String {
    if let Some(seeds) = url.strip_prefix(CLUSTER_PREFIX) {
        let parts: Vec<String> = seeds.split(',').map(redact).collect();
        return format!("{CLUSTER_PREFIX}{}", parts.join(","));
    }
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

fn bad_url(url: &str, reason: &'static str) -> Error {
    Error::Config {
        param: "url",
        value: redact(url),
        reason,
    }
}

fn open_node(url: &str) -> ConfigResult<Client> {
    Client::open(url).map_err(|_| bad_url(url, "not a Redis URL the client can open"))
}

/// Where the shared state lives: one Redis node, or a Redis Cluster.
#[derive(Clone)]
pub enum Target {
    /// One server (or a proxy in front of several).
    Node(Client),
    /// A Redis Cluster found from its seeds.
    Cluster {
        /// The cluster client (routes each command by its key's slot).
        client: ClusterClient,
        /// A client per seed, for pub/sub (any node hears every `PUBLISH`).
        seeds: Vec<Client>,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Node(_) => f.write_str("Target::Node"),
            Self::Cluster { seeds, .. } => write!(f, "Target::Cluster({} seeds)", seeds.len()),
        }
    }
}

impl From<Client> for Target {
    fn from(client: Client) -> Self {
        Self::Node(client)
    }
}

impl Target {
    /// The target of the core's URL spec `url` (see the module docs); a
    /// typed config error naming `url` (password hidden) when it is not one.
    pub fn open(url: &str) -> ConfigResult<Self> {
        let Some(list) = url.strip_prefix(CLUSTER_PREFIX) else {
            return Ok(Self::Node(open_node(url)?));
        };
        let mut seeds = Vec::new();
        for seed in list.split(',').map(str::trim) {
            if seed.is_empty() {
                return Err(bad_url(url, "a cluster seed list has an empty entry"));
            }
            if seed.starts_with("unix:") || seed.starts_with("redis+unix:") {
                return Err(bad_url(
                    url,
                    "cluster seeds must be TCP (redis:// or rediss://)",
                ));
            }
            seeds.push(open_node(seed)?);
        }
        let infos: Vec<_> = seeds
            .iter()
            .map(|c| c.get_connection_info().clone())
            .collect();
        let client = ClusterClient::builder(infos)
            .retries(CLUSTER_RETRIES)
            .min_retry_wait(1)
            .max_retry_wait(20)
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|_| {
                bad_url(
                    url,
                    "cluster seeds must share one scheme, user and password",
                )
            })?;
        Ok(Self::Cluster { client, seeds })
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }

    /// A plain client for pub/sub: the node, or seed `attempt % seeds` of a
    /// cluster (a caller that failed on one tries the next).
    pub fn pubsub_client(&self, attempt: usize) -> Client {
        match self {
            Self::Node(c) => c.clone(),
            Self::Cluster { seeds, .. } => seeds[attempt % seeds.len()].clone(),
        }
    }
}

/// An open connection of either kind (both are cheap clones of a handle).
#[derive(Clone)]
enum Conn {
    Node(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn query(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<Value> {
        match self {
            Self::Node(c) => cmd.query_async(c).await,
            Self::Cluster(c) => cmd.query_async(c).await,
        }
    }
}

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
    conn: Option<Conn>,
    connecting: bool,
    failed_at: Option<Instant>,
    last_ok: Option<Instant>,
}

/// A lazily opened, fork-aware multiplexed connection with an op timeout.
pub struct Connection {
    target: Target,
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
    /// A connection to `target` (a [`Client`] for one node, or a [`Target`]);
    /// nothing is opened until the first call.
    pub fn new(target: impl Into<Target>, op_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            target: target.into(),
            op_timeout,
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            counters: Counters::default(),
        })
    }

    /// Where the connection goes.
    pub fn target(&self) -> &Target {
        &self.target
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
    fn current(self: &Arc<Self>) -> Option<Conn> {
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
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, async {
            match &self.target {
                Target::Node(client) => {
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(CONNECT_TIMEOUT)
                        .set_response_timeout(CONNECT_TIMEOUT);
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                        .map(Conn::Node)
                }
                Target::Cluster { client, .. } => {
                    client.get_async_connection().await.map(Conn::Cluster)
                }
            }
        })
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
        match conn.query(&cmd).await {
            Ok(v) => Ok(v),
            Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                self.counters.script_loads.fetch_add(1, Ordering::Relaxed);
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(script.body).arg(keys.len()).arg(keys).arg(args);
                conn.query(&cmd).await.map_err(|e| self.classify(&e))
            }
            Err(e) => Err(self.classify(&e)),
        }
    }

    fn classify(&self, e: &redis::RedisError) -> Failure {
        use redis::ErrorKind as K;
        if matches!(
            e.kind(),
            K::Moved
                | K::Ask
                | K::TryAgain
                | K::ClusterDown
                | K::MasterDown
                | K::ReadOnly
                | K::ClusterConnectionNotFound
        ) {
            // A cluster whose slot is not served now (a master down, a slot
            // moving): unavailable for this slot only. The cluster client keeps
            // its own per-node connections and slot map, so the connection stays.
            // One node answering READONLY (a master turned replica): open again,
            // which finds the new master if the name now points at it.
            if !self.target.is_cluster() {
                self.drop_conn(false);
            }
            return Failure::Unavailable;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_is_a_node_and_a_seed_list_is_a_cluster() {
        assert!(!Target::open("redis://127.0.0.1:6379/0")
            .unwrap()
            .is_cluster());
        assert!(!Target::open("unix:///tmp/redis.sock").unwrap().is_cluster());
        let t = Target::open("cluster:redis://127.0.0.1:7000, redis://127.0.0.1:7001").unwrap();
        assert!(t.is_cluster());
        assert_eq!(format!("{t:?}"), "Target::Cluster(2 seeds)");
        let ports: Vec<_> = (0..3)
            .map(|i| t.pubsub_client(i).get_connection_info().addr.to_string())
            .collect();
        assert_eq!(
            ports,
            ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7000"]
        );
    }

    #[test]
    fn a_bad_seed_list_is_a_config_error_without_the_password() {
        for spec in [
            "cluster:",
            "cluster:redis://h:1,",
            "cluster:redis://h:1,unix:///x.sock",
            "cluster:redis://:a@h:1,redis://:b@h:2",
            "cluster:http://h:1",
            "http://h:1",
        ] {
            let err = Target::open(spec).unwrap_err();
            assert!(
                matches!(err, Error::Config { param: "url", .. }),
                "{spec}: {err}"
            );
        }
        let err = Target::open("cluster:redis://u:secret@h:1,unix:///x").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn redact_hides_every_seed_password() {
        let shown = redact("cluster:redis://u:secret@h:1,redis://:secret@h:2");
        assert_eq!(shown, "cluster:redis://***@h:1,redis://***@h:2");
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
    }
}
