//! Cross-process dedup: the local dedup leader of each process asks here
//! before calling the provider, so one process in the cluster makes the call
//! and the others take its result.
//!
//! - [`SharedDedup::join`] runs one script: `SET lease token NX PX` makes
//!   this process the leader ([`Joined::Lead`], whose [`Lease`] is renewed on the runtime while
//!   the call runs); else the lease is held elsewhere and this process waits
//!   (and marks the request as waited on). Once waiting, a join first takes
//!   the stored result ([`Joined::Done`]); a new call never gets an old one.
//! - The leader's [`Lease::complete`] drops the lease and, when someone waits,
//!   stores the (sealed) result for a short while and `PUBLISH`es a notice.
//!   [`Lease::abandon`] (or dropping the lease) drops it and tells the waiters.
//! - Waiting processes listen on one pattern subscription per process (not
//!   one per call), started at the first wait; each notice wakes that key's
//!   waiters, which join again. A waiter also joins again when the lease's
//!   TTL runs out, so a dead leader (SIGKILL) is taken over within one lease
//!   TTL even if a notice is lost; the caller's `max_wait` bounds it all.
//! - Redis down or slow: [`Joined::Unavailable`] within the op timeout; the
//!   caller calls the provider itself.
//!
//! Keys share one hash tag per request: `<ns>:{d:<hex>}:l` (lease), `:r`
//! (result), `:w` (someone waits); notices go to `<ns>:dn:<hex>`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::cache::{check_namespace, hex, nonce, open, open_client, seal};
use super::client::{Connection, Script};
use crate::error::{positive, Result};

/// A stored result is kept this long (for waiters that wake late).
pub const RESULT_TTL_MS: u64 = 5_000;
/// A waiter joins again at least this often, notice or not.
pub const MAX_POLL: Duration = Duration::from_millis(500);
/// ... and no sooner than this after a join that found the lease held.
pub const MIN_POLL: Duration = Duration::from_millis(20);
/// The listener waits this long before connecting again after a failure.
const LISTEN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest a listener connect may take.
const LISTEN_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One join: takes a stored result (only a caller that waited: a new call is
/// never answered by an old result), wins the lease, or finds it held.
///
/// KEYS: lease, result, waiting flag. ARGV: token, lease_ms, flag_ms, waited (0/1).
/// Returns `{1, ''}` (lead), `{2, result}` (done) or `{0, pttl_ms}` (held).
pub const JOIN: &str = r#"
if ARGV[4] == '1' then
  local r = redis.call('GET', KEYS[2])
  if r then return {2, r} end
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1, ''} end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])
return {0, redis.call('PTTL', KEYS[1])}
"#;

/// Renew the lease if this token still holds it.
///
/// KEYS: lease. ARGV: token, lease_ms. Returns 1 when renewed, 0 when lost.
pub const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// Drop the lease (if still ours) and, when someone waits, store the result
/// for them and tell them. Nobody waiting: nothing is stored.
///
/// KEYS: lease, result, waiting flag. ARGV: token, result, result_ttl_ms,
/// channel. Returns 1 when a notice was published.
pub const DONE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('DEL', KEYS[3]) == 1 then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  redis.call('PUBLISH', ARGV[4], '1')
  return 1
end
return 0
"#;

/// Drop the lease (if still ours) and tell any waiter to take over.
///
/// KEYS: lease, waiting flag. ARGV: token, channel. Returns 1 when dropped.
pub const ABANDON: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if redis.call('DEL', KEYS[2]) == 1 then redis.call('PUBLISH', ARGV[2], '0') end
  return 1
end
return 0
"#;

/// How long a waiter sleeps after a join that found the lease held with
/// `pttl_ms` left, when `remaining` of the caller's wait is left: until the
/// lease would expire, within [`MIN_POLL`]..[`MAX_POLL`], never past the end.
pub fn next_wait(pttl_ms: i64, remaining: Duration) -> Duration {
    let until_expiry = if pttl_ms > 0 {
        Duration::from_millis(pttl_ms as u64 + 5)
    } else {
        MIN_POLL
    };
    until_expiry.clamp(MIN_POLL, MAX_POLL).min(remaining)
}

/// The outcome of [`SharedDedup::join`].
#[derive(Debug)]
pub enum Joined {
    /// This process leads: call the provider, then complete (or abandon) the lease.
    Lead(Lease),
    /// Another process's result (the payload it completed with).
    Done(Vec<u8>),
    /// The caller's wait ran out while another process held the lease.
    Timeout,
    /// Redis did not answer: call the provider without a lease.
    Unavailable,
}

/// What cross-process dedup has seen (read by `stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DedupStats {
    /// Leases won (takeovers included).
    pub leads: u64,
    /// Leases won after waiting on another process's (its leader died or gave up).
    pub takeovers: u64,
    /// Joins answered with another process's result.
    pub joins: u64,
    /// Joins that found the lease held and waited.
    pub waits: u64,
    /// Waits cut by the caller's deadline.
    pub timeouts: u64,
    /// Joins Redis did not answer (the caller went alone).
    pub unavailable: u64,
    /// Stored results that did not open (a miss each: the caller went alone).
    pub bad_results: u64,
    /// Leases lost while the call ran (renewal found another holder or none).
    pub leases_lost: u64,
    /// Results published with a notice to waiters.
    pub notices_sent: u64,
    /// Notices received by this process's subscription.
    pub notices_received: u64,
    /// Whether this process's subscription is connected.
    pub listening: bool,
}

#[derive(Debug, Default)]
struct Counters {
    leads: AtomicU64,
    takeovers: AtomicU64,
    joins: AtomicU64,
    waits: AtomicU64,
    timeouts: AtomicU64,
    unavailable: AtomicU64,
    bad_results: AtomicU64,
    leases_lost: AtomicU64,
    notices_sent: AtomicU64,
    notices_received: AtomicU64,
}

struct Scripts {
    join: Script,
    renew: Script,
    done: Script,
    abandon: Script,
}

/// Waiters of this process by request (hex key), woken by the listener.
#[derive(Default)]
struct Waiters {
    by_key: HashMap<String, (Arc<Notify>, usize)>,
    /// The pid whose listener task runs (0: none).
    listener_pid: u32,
}

/// Cross-process dedup on Redis (see the module docs).
pub struct SharedDedup {
    conn: Arc<Connection>,
    namespace: String,
    lease_ms: u64,
    scripts: Scripts,
    waiters: Mutex<Waiters>,
    listening: AtomicBool,
    stop: Arc<Notify>,
    seq: AtomicU64,
    nonce: u64,
    counters: Counters,
}

impl std::fmt::Debug for SharedDedup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedDedup")
            .field("namespace", &self.namespace)
            .field("lease_ms", &self.lease_ms)
            .finish_non_exhaustive()
    }
}

impl Drop for SharedDedup {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

/// The Redis keys of one request.
struct Keys {
    lease: String,
    result: String,
    flag: String,
    channel: String,
}

impl SharedDedup {
    /// Dedup on the Redis at `url`; a leader's lease lives `lease_s` and is
    /// renewed every third of it. No connection is opened until the first call.
    pub fn new(url: &str, namespace: &str, op_timeout_s: f64, lease_s: f64) -> Result<Self> {
        let op_timeout = Duration::from_secs_f64(positive("op_timeout_s", op_timeout_s)?);
        check_namespace(namespace)?;
        let lease_ms = ((positive("lease_s", lease_s)? * 1000.0).ceil() as u64).max(30);
        let target = open_client(url)?;
        Ok(Self {
            conn: Connection::new(target, op_timeout),
            namespace: namespace.to_string(),
            lease_ms,
            scripts: Scripts {
                join: Script::new(JOIN),
                renew: Script::new(RENEW),
                done: Script::new(DONE),
                abandon: Script::new(ABANDON),
            },
            waiters: Mutex::new(Waiters::default()),
            listening: AtomicBool::new(false),
            stop: Arc::new(Notify::new()),
            seq: AtomicU64::new(0),
            nonce: nonce(),
            counters: Counters::default(),
        })
    }

    /// The lease's time to live.
    pub fn lease_ms(&self) -> u64 {
        self.lease_ms
    }

    fn keys(&self, hexkey: &str) -> Keys {
        let tag = format!("{}:{{d:{hexkey}}}", self.namespace);
        Keys {
            lease: format!("{tag}:l"),
            result: format!("{tag}:r"),
            flag: format!("{tag}:w"),
            channel: format!("{}:dn:{hexkey}", self.namespace),
        }
    }

    fn token(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{}:{:016x}:{n}", std::process::id(), self.nonce)
    }

    /// Lead, take a result, or wait (at most `max_wait`) for the process
    /// that holds the lease of cache key `key` (see [`Joined`]).
    pub async fn join(self: &Arc<Self>, key: &[u8], max_wait: Duration) -> Joined {
        let hexkey = hex(key);
        let keys = self.keys(&hexkey);
        let token = self.token();
        let end = tokio::time::Instant::now() + max_wait;
        let mut registered: Option<WaiterGuard> = None;
        loop {
            // Armed before the join, so a notice sent after it is not lost.
            let notify = registered.as_ref().map(|g| g.notify.clone());
            let notified = notify.as_ref().map(|n| {
                let mut f = Box::pin(n.notified());
                f.as_mut().enable();
                f
            });
            let args = [
                token.clone(),
                self.lease_ms.to_string(),
                (self.lease_ms * 2).to_string(),
                if registered.is_some() { "1" } else { "0" }.to_string(),
            ];
            let k = [keys.lease.clone(), keys.result.clone(), keys.flag.clone()];
            let step = match self.conn.eval(&self.scripts.join, &k, &args).await {
                Ok(Value::Array(v)) if v.len() == 2 => v,
                _ => {
                    self.counters.unavailable.fetch_add(1, Ordering::Relaxed);
                    return Joined::Unavailable;
                }
            };
            match (&step[0], &step[1]) {
                (Value::Int(1), _) => {
                    self.counters.leads.fetch_add(1, Ordering::Relaxed);
                    if registered.is_some() {
                        self.counters.takeovers.fetch_add(1, Ordering::Relaxed);
                    }
                    return Joined::Lead(self.lease(hexkey, keys, token));
                }
                (Value::Int(2), Value::BulkString(b)) => {
                    return match open(key, b) {
                        Ok(payload) => {
                            self.counters.joins.fetch_add(1, Ordering::Relaxed);
                            Joined::Done(payload)
                        }
                        Err(_) => {
                            self.counters.bad_results.fetch_add(1, Ordering::Relaxed);
                            Joined::Unavailable
                        }
                    };
                }
                (Value::Int(0), Value::Int(pttl)) => {
                    let now = tokio::time::Instant::now();
                    if now >= end {
                        self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                        return Joined::Timeout;
                    }
                    if registered.is_none() {
                        // First sight of another leader: listen, then join again
                        // at once (a result published meanwhile is stored).
                        self.counters.waits.fetch_add(1, Ordering::Relaxed);
                        registered = Some(self.register(&hexkey));
                        continue;
                    }
                    let wait = next_wait(*pttl, end - now);
                    if let Some(n) = notified {
                        let _ = tokio::time::timeout(wait, n).await;
                    } else {
                        tokio::time::sleep(wait).await;
                    }
                }
                _ => {
                    self.counters.unavailable.fetch_add(1, Ordering::Relaxed);
                    return Joined::Unavailable;
                }
            }
        }
    }

    fn lease(self: &Arc<Self>, hexkey: String, keys: Keys, token: String) -> Lease {
        let renew = crate::runtime::handle().ok().map(|rt| {
            let this = Arc::downgrade(self);
            let (lease, token) = (keys.lease.clone(), token.clone());
            let every = Duration::from_millis((self.lease_ms / 3).max(10));
            rt.spawn(async move { renew_loop(this, lease, token, every).await })
        });
        Lease {
            dedup: self.clone(),
            hexkey,
            keys,
            token,
            renew: Mutex::new(renew),
            settled: AtomicBool::new(false),
        }
    }

    fn register(self: &Arc<Self>, hexkey: &str) -> WaiterGuard {
        let pid = std::process::id();
        let mut w = self.waiters.lock();
        let entry = w
            .by_key
            .entry(hexkey.to_string())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        let notify = entry.0.clone();
        if w.listener_pid != pid {
            w.listener_pid = pid;
            if let Ok(rt) = crate::runtime::handle() {
                let this = Arc::downgrade(self);
                let stop = self.stop.clone();
                rt.spawn(async move { listen(this, stop, pid).await });
            }
        }
        WaiterGuard {
            dedup: Arc::downgrade(self),
            hexkey: hexkey.to_string(),
            notify,
        }
    }

    fn wake(&self, hexkey: &str) {
        self.counters
            .notices_received
            .fetch_add(1, Ordering::Relaxed);
        if let Some((n, _)) = self.waiters.lock().by_key.get(hexkey) {
            n.notify_waiters();
        }
    }

    /// What cross-process dedup has seen.
    pub fn stats(&self) -> DedupStats {
        let c = &self.counters;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DedupStats {
            leads: r(&c.leads),
            takeovers: r(&c.takeovers),
            joins: r(&c.joins),
            waits: r(&c.waits),
            timeouts: r(&c.timeouts),
            unavailable: r(&c.unavailable),
            bad_results: r(&c.bad_results),
            leases_lost: r(&c.leases_lost),
            notices_sent: r(&c.notices_sent),
            notices_received: r(&c.notices_received),
            listening: self.listening.load(Ordering::Relaxed),
        }
    }

    /// Waiters registered now (all keys).
    pub fn waiting(&self) -> usize {
        self.waiters.lock().by_key.values().map(|(_, n)| n).sum()
    }
}

/// Removes a waiter's registration when its join ends.
struct WaiterGuard {
    dedup: Weak<SharedDedup>,
    hexkey: String,
    notify: Arc<Notify>,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        let Some(d) = self.dedup.upgrade() else {
            return;
        };
        let mut w = d.waiters.lock();
        if let Some(entry) = w.by_key.get_mut(&self.hexkey) {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                w.by_key.remove(&self.hexkey);
            }
        }
    }
}

async fn renew_loop(dedup: Weak<SharedDedup>, lease: String, token: String, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(d) = dedup.upgrade() else {
            return;
        };
        let args = [token.clone(), d.lease_ms.to_string()];
        // Renewed, or Redis did not answer: try again next time (the lease has
        // two more renewals' worth of TTL). Lost (another holder): stop.
        let renewed = d
            .conn
            .eval(&d.scripts.renew, std::slice::from_ref(&lease), &args)
            .await;
        if let Ok(Value::Int(0)) = renewed {
            d.counters.leases_lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
}

/// The process's one subscription: `PSUBSCRIBE <ns>:dn:*`, waking waiters,
/// connecting again after a failure, until the dedup is dropped or the
/// process forks (the child starts its own).
async fn listen(dedup: Weak<SharedDedup>, stop: Arc<Notify>, pid: u32) {
    // On a cluster, the seed to subscribe on: the next one after a failure
    // (every node hears every PUBLISH).
    let mut attempt = 0usize;
    loop {
        let Some(d) = dedup.upgrade() else {
            return;
        };
        if d.waiters.lock().listener_pid != pid {
            return;
        }
        let client = d.conn.target().pubsub_client(attempt);
        attempt = attempt.wrapping_add(1);
        let pattern = format!("{}:dn:*", d.namespace);
        let prefix_len = pattern.len() - 1;
        drop(d);
        let opened = tokio::time::timeout(LISTEN_CONNECT_TIMEOUT, async {
            let mut ps = client.get_async_pubsub().await?;
            ps.psubscribe(&pattern).await?;
            Ok::<_, redis::RedisError>(ps)
        })
        .await;
        if let Ok(Ok(ps)) = opened {
            if let Some(d) = dedup.upgrade() {
                d.listening.store(true, Ordering::Relaxed);
            }
            let mut messages = ps.into_on_message();
            loop {
                let msg = tokio::select! {
                    m = messages.next() => m,
                    _ = stop.notified() => return,
                };
                let Some(msg) = msg else { break };
                let Some(d) = dedup.upgrade() else {
                    return;
                };
                if let Some(hexkey) = msg.get_channel_name().get(prefix_len..) {
                    d.wake(hexkey);
                }
            }
            if let Some(d) = dedup.upgrade() {
                d.listening.store(false, Ordering::Relaxed);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(LISTEN_BACKOFF) => {}
            _ = stop.notified() => return,
        }
    }
}

/// This process's leadership of one request across the cluster. Renewed on
/// the runtime until [`Lease::complete`] or [`Lease::abandon`]; dropping it
/// unsettled abandons it.
pub struct Lease {
    dedup: Arc<SharedDedup>,
    hexkey: String,
    keys: Keys,
    token: String,
    renew: Mutex<Option<JoinHandle<()>>>,
    settled: AtomicBool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.hexkey)
            .finish_non_exhaustive()
    }
}

impl Lease {
    fn settle(&self) -> bool {
        if self.settled.swap(true, Ordering::AcqRel) {
            return false;
        }
        if let Some(h) = self.renew.lock().take() {
            h.abort();
        }
        true
    }

    /// Whether complete or abandon ran.
    pub fn settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }

    /// The leader's result: store it (sealed for `key`), drop the lease, tell
    /// the waiters. Runs on the runtime and returns at once; a second
    /// settle is a no-op (false).
    pub fn complete(&self, key: &[u8], payload: &[u8]) -> bool {
        if !self.settle() {
            return false;
        }
        let d = self.dedup.clone();
        let k = [
            self.keys.lease.clone(),
            self.keys.result.clone(),
            self.keys.flag.clone(),
        ];
        let args = [
            self.token.clone().into_bytes(),
            seal(key, payload),
            RESULT_TTL_MS.to_string().into_bytes(),
            self.keys.channel.clone().into_bytes(),
        ];
        if let Ok(rt) = crate::runtime::handle() {
            rt.spawn(async move {
                if let Ok(Value::Int(1)) = d.conn.eval_args(&d.scripts.done, &k, &args).await {
                    d.counters.notices_sent.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        true
    }

    /// The call failed or was cancelled: drop the lease so a waiter takes
    /// over at once. Returns at once; a second settle is a no-op (false).
    pub fn abandon(&self) -> bool {
        if !self.settle() {
            return false;
        }
        let d = self.dedup.clone();
        let k = [self.keys.lease.clone(), self.keys.flag.clone()];
        let args = [self.token.clone(), self.keys.channel.clone()];
        if let Ok(rt) = crate::runtime::handle() {
            rt.spawn(async move {
                let _ = d.conn.eval(&d.scripts.abandon, &k, &args).await;
            });
        }
        true
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.abandon();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    #[test]
    fn a_waiter_rechecks_when_the_lease_would_expire_within_bounds() {
        let long = Duration::from_secs(30);
        assert_eq!(next_wait(100, long), Duration::from_millis(105));
        assert_eq!(next_wait(1, long), MIN_POLL);
        assert_eq!(next_wait(-2, long), MIN_POLL); // no lease: soon
        assert_eq!(next_wait(-1, long), MIN_POLL);
        assert_eq!(next_wait(60_000, long), MAX_POLL);
        assert_eq!(
            next_wait(60_000, Duration::from_millis(3)),
            Duration::from_millis(3)
        );
    }

    #[test]
    fn a_dead_leader_is_taken_over_within_one_lease_ttl_plus_a_poll() {
        // Walk the waiter's schedule on a manual clock: the leader's lease was
        // renewed last at t=0 and never again; every re-check before expiry
        // finds it held with the TTL left, the first one after finds it free.
        let clock = ManualClock::new(0);
        let lease_ms: u64 = 3_000;
        let deadline_ms: u64 = 60_000;
        let mut checks = 0;
        loop {
            let now_ms = clock.now_ns() / 1_000_000;
            if now_ms >= lease_ms {
                break; // the join's SET NX wins here
            }
            checks += 1;
            let pttl = (lease_ms - now_ms) as i64;
            let wait = next_wait(pttl, Duration::from_millis(deadline_ms - now_ms));
            clock.advance_ns(wait.as_nanos() as u64);
        }
        let taken_at_ms = clock.now_ns() / 1_000_000;
        assert!(taken_at_ms >= lease_ms && taken_at_ms <= lease_ms + MAX_POLL.as_millis() as u64);
        assert!(checks <= 8, "{checks} re-checks");
    }

    #[test]
    fn keys_share_one_hash_tag_and_hold_no_secret() {
        let d = SharedDedup::new("redis://u:secret@127.0.0.1:1", "ns", 0.01, 3.0).unwrap();
        let k = d.keys("ab01");
        assert_eq!(k.lease, "ns:{d:ab01}:l");
        assert_eq!(k.result, "ns:{d:ab01}:r");
        assert_eq!(k.flag, "ns:{d:ab01}:w");
        assert_eq!(k.channel, "ns:dn:ab01");
        assert!(!format!("{d:?}").contains("secret"));
        assert_ne!(d.token(), d.token());
        assert!(SharedDedup::new("redis://x", "ns", 0.01, 0.0).is_err());
        assert!(SharedDedup::new("redis://x", "{ns}", 0.01, 1.0).is_err());
        assert!(SharedDedup::new("nope://x", "ns", 0.01, 1.0).is_err());
    }

    #[test]
    fn redis_absent_is_unavailable_at_once() {
        let rt = crate::runtime::handle().unwrap();
        let d = Arc::new(SharedDedup::new("redis://127.0.0.1:1", "ns", 0.02, 3.0).unwrap());
        let started = std::time::Instant::now();
        let j = rt.block_on({
            let d = d.clone();
            async move { d.join(b"key", Duration::from_secs(10)).await }
        });
        assert!(matches!(j, Joined::Unavailable));
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(d.stats().unavailable, 1);
        assert_eq!(d.waiting(), 0);
    }

    /// A throwaway `redis-server` on a free loopback port (None if not installed).
    pub(crate) struct TestRedis {
        child: std::process::Child,
        pub url: String,
    }

    impl TestRedis {
        pub fn start() -> Option<Self> {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .ok()?
                .local_addr()
                .ok()?
                .port();
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .ok()?;
            let started = std::time::Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if started.elapsed() > Duration::from_secs(10) {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Some(Self {
                child,
                url: format!("redis://127.0.0.1:{port}/0"),
            })
        }
    }

    impl Drop for TestRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn dedup(url: &str, ns: &str, lease_s: f64) -> Arc<SharedDedup> {
        Arc::new(SharedDedup::new(url, ns, 0.5, lease_s).unwrap())
    }

    #[test]
    fn on_redis_one_leads_the_others_take_its_result_or_take_over() {
        let Some(redis) = TestRedis::start() else {
            eprintln!("redis-server not installed: skipped");
            return;
        };
        let rt = crate::runtime::handle().unwrap();
        rt.block_on(async {
            // A leads; B (another process's worth) waits and gets A's result.
            let (a, b) = (dedup(&redis.url, "t1", 3.0), dedup(&redis.url, "t1", 3.0));
            let Joined::Lead(lease) = a.join(b"k1", Duration::from_secs(10)).await else {
                panic!("A should lead");
            };
            let waiter = tokio::spawn({
                let b = b.clone();
                async move { b.join(b"k1", Duration::from_secs(10)).await }
            });
            while b.stats().waits == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let t0 = std::time::Instant::now();
            assert!(lease.complete(b"k1", b"the answer"));
            assert!(!lease.complete(b"k1", b"again"));
            match waiter.await.unwrap() {
                Joined::Done(v) => assert_eq!(v, b"the answer"),
                other => panic!("{other:?}"),
            }
            // Woken by the notice (or a poll), long before the lease's TTL.
            assert!(
                t0.elapsed() < Duration::from_millis(1500),
                "{:?}",
                t0.elapsed()
            );
            assert_eq!(b.stats().joins, 1);

            // A leader that gives up: the waiter takes over at once.
            let Joined::Lead(lease) = a.join(b"k2", Duration::from_secs(10)).await else {
                panic!("A should lead k2");
            };
            let waiter = tokio::spawn({
                let b = b.clone();
                async move { b.join(b"k2", Duration::from_secs(10)).await }
            });
            while b.stats().waits < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            lease.abandon();
            let Joined::Lead(taken) = waiter.await.unwrap() else {
                panic!("B should take over k2");
            };
            assert_eq!(b.stats().takeovers, 1);
            drop(taken);

            // A dead leader (no renewal, no abandon): taken over after its TTL.
            let c = dedup(&redis.url, "t1", 0.3);
            let Joined::Lead(lease) = c.join(b"k3", Duration::from_secs(10)).await else {
                panic!("C should lead k3");
            };
            if let Some(h) = lease.renew.lock().take() {
                h.abort();
            }
            lease.settled.store(true, Ordering::Release); // its Drop does nothing now
            drop(lease);
            let t0 = std::time::Instant::now();
            let Joined::Lead(_taken) = b.join(b"k3", Duration::from_secs(10)).await else {
                panic!("B should take over k3");
            };
            assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());

            // A live leader is renewed past its TTL; the waiter's deadline ends its wait.
            let Joined::Lead(held) = c.join(b"k4", Duration::from_secs(10)).await else {
                panic!("C should lead k4");
            };
            let t0 = std::time::Instant::now();
            assert!(matches!(
                b.join(b"k4", Duration::from_millis(900)).await,
                Joined::Timeout
            ));
            assert!(t0.elapsed() >= Duration::from_millis(850));
            assert_eq!(c.stats().leases_lost, 0);
            drop(held);
            assert_eq!(b.waiting(), 0);
        });
    }

    #[test]
    fn on_redis_the_cache_tier_hits_and_a_corrupt_entry_is_a_miss() {
        let Some(redis) = TestRedis::start() else {
            eprintln!("redis-server not installed: skipped");
            return;
        };
        let rt = crate::runtime::handle().unwrap();
        rt.block_on(async {
            use super::super::cache::SharedCache;
            let c = SharedCache::new(&redis.url, "t2", 0.5, 60.0).unwrap();
            let big: Vec<u8> = (0..16384).map(|i| (i % 251) as u8).collect();
            assert!(c.put(b"key", &big, 60_000).await);
            let (got, ttl) = c.get(b"key").await.unwrap();
            assert_eq!(got, big);
            assert!(ttl.is_some_and(|t| t > 50.0 && t <= 60.0));
            assert!(c.get(b"absent").await.is_none());
            let client = redis::Client::open(redis.url.as_str()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let _: i64 = redis::cmd("SETRANGE")
                .arg(c.redis_key(b"key"))
                .arg(40)
                .arg("XX")
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(c.get(b"key").await.is_none());
            let _: () = redis::cmd("SET")
                .arg(c.redis_key(b"other"))
                .arg("not ours")
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(c.get(b"other").await.is_none());
            let s = c.stats();
            assert_eq!((s.hits, s.misses, s.corrupt, s.foreign), (1, 3, 1, 1));
        });
    }
}
