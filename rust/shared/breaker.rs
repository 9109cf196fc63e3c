//! Shared circuit breakers: every process keeps its own [`CircuitBreaker`]
//! and also publishes the outcome of each settled attempt to Redis, where
//! one cluster-wide window per deployment decides whether the deployment
//! opens for everyone.
//!
//! * **Window.** A count-based window of the last `window_size` outcomes of
//!   the whole cluster (a list of `member|bits`, with running counts in a
//!   hash: calls, failures, slow calls, and per process its bad outcomes).
//!   It trips like the local breaker (`min(minimum_calls, window_size)`
//!   calls judged, failure or slow-call rate at or above its threshold, a
//!   zero rate never trips) **and** only when the bad outcomes came from at
//!   least [`MIN_PROCESSES`] distinct processes: one sick process opens its
//!   own breaker, not the deployment's.
//! * **Open.** The tripping script writes the state hash (`until` on the
//!   server clock, an episode id `ep`, the trip count for the backoff) and
//!   `PUBLISH`es it. Every process learns it from the script reply (the
//!   publisher) or from its one subscription (the others) and keeps it in a
//!   local [`View`]: admission reads the view, never Redis.
//! * **Half-open.** When `until` passes, a process that wants to call claims
//!   a probe permit with one script (at most `half_open_max_calls` across
//!   the cluster). The claim runs in the background: the call that finds no
//!   permit is refused (`retry_after_s` 0) and the next call of this process
//!   is the probe once the permit arrives. When the probes of the episode
//!   are all settled, the script judges them like the local breaker: the
//!   deployment closes (keys deleted, published) or opens again with the
//!   next backoff step. A permit not settled within [`PROBE_LEASE_MS`] is
//!   presumed lost and handed out again.
//! * **Redis unavailable.** Nothing waits on Redis: outcomes are published
//!   from spawned tasks (a failure is counted), a claim that gets no answer
//!   leaves this process on its local breaker alone (counted as a fallback)
//!   until Redis answers again. A cluster-open state already learnt holds
//!   until its `until`.
//!
//! Keys share the limiter's hash tag: `<ns>:{<deployment>}:b:w` (window),
//! `:b:n` (counts), `:b:s` (state); notices go to `<ns>:bk`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::Value;
use tokio::sync::Notify;

use super::cache::{check_namespace, nonce, open_client};
use super::client::{Connection, Script};
use super::scripts;
use crate::breaker::{self, Config};
use crate::clock::{self, SharedClock};
use crate::error::{positive, Error, Result};

/// Bad outcomes must come from at least this many processes to open cluster-wide.
pub const MIN_PROCESSES: u32 = 2;
/// A probe permit not settled within this long is handed out again.
pub const PROBE_LEASE_MS: u64 = 30_000;
/// A window no process published to for this long is forgotten.
pub const WINDOW_TTL_MS: u64 = 600_000;
/// A state left after its open period (nobody probed) is forgotten after this long.
pub const KEEP_AFTER_OPEN_MS: u64 = 600_000;
/// Publishes of one deployment in flight at most; more are dropped and counted
/// (a probe's outcome is never dropped).
pub const MAX_IN_FLIGHT: u64 = 1024;
/// A probe permit this process did not use within this long goes back to the cluster.
pub const PERMIT_IDLE: Duration = Duration::from_secs(1);
/// A process refused a probe permit asks again after this long (notices may be lost).
pub const CLAIM_RETRY: Duration = Duration::from_millis(500);
const LISTEN_BACKOFF: Duration = Duration::from_millis(100);
const LISTEN_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The cluster-wide state of a deployment, as this process knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// Calls flow (the local breaker still judges this process's calls).
    Closed,
    /// Every process refuses until the open period ends.
    Open,
    /// A few probes, cluster-wide, decide.
    HalfOpen,
}

impl ClusterState {
    /// `"closed"`, `"open"` or `"half_open"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(Self::Closed),
            1 => Some(Self::Open),
            2 => Some(Self::HalfOpen),
            _ => None,
        }
    }
}

/// One answer of Redis about a deployment: a script reply or a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// The server time it was true at (µs).
    pub at_us: u64,
    /// The state.
    pub state: ClusterState,
    /// The open episode (0 when closed).
    pub ep: u64,
    /// Milliseconds of the open period left (open only).
    pub left_ms: u64,
    /// A probe claim: whether this process got the permit. An outcome: whether
    /// this outcome changed the state (opened, closed or re-opened it).
    pub flag: bool,
}

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

impl Report {
    /// Parse a script reply `{state, ep, left_ms, at_us, flag}`.
    pub fn from_reply(v: &Value) -> Option<Self> {
        let Value::Array(a) = v else { return None };
        if a.len() != 5 {
            return None;
        }
        Some(Self {
            state: ClusterState::from_code(int_of(&a[0])?)?,
            ep: u64::try_from(int_of(&a[1])?).ok()?,
            left_ms: u64::try_from(int_of(&a[2])?).ok()?,
            at_us: u64::try_from(int_of(&a[3])?).ok()?,
            flag: int_of(&a[4])? != 0,
        })
    }

    /// Parse a notice `"<at_us> <state> <ep> <left_ms> <deployment>"`.
    pub fn from_notice(payload: &str) -> Option<(Self, &str)> {
        let mut it = payload.splitn(5, ' ');
        let at_us = it.next()?.parse().ok()?;
        let state = ClusterState::from_code(it.next()?.parse().ok()?)?;
        let ep = it.next()?.parse().ok()?;
        let left_ms = it.next()?.parse().ok()?;
        let name = it.next()?;
        Some((
            Self {
                at_us,
                state,
                ep,
                left_ms,
                flag: false,
            },
            name,
        ))
    }
}

/// What admission may do, per the cluster-wide state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Closed cluster-wide: go (the local breaker decides).
    Go,
    /// Go as a cluster probe of episode `ep` (settle or give it back).
    Probe(u64),
    /// Refuse: open cluster-wide (`retry_after_s` left), or half-open with
    /// no permit here (0).
    Refuse(f64),
    /// Refuse (`retry_after_s` 0), and claim a probe permit in the background.
    RefuseAndClaim,
}

/// The cached cluster state of one deployment in this process: the pure
/// decision part, driven by an injected time (`now_ns`, the gate's clock).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    state: Option<ClusterState>,
    ep: u64,
    until_ns: u64,
    seen_at_us: u64,
    permits: usize,
    claiming: bool,
    next_claim_ns: u64,
    /// `seen_at_us` when the claim in flight started.
    claim_from_us: u64,
}

impl View {
    /// The state now (an open period that ended reads half-open).
    pub fn state(&self, now_ns: u64) -> ClusterState {
        match self.state.unwrap_or(ClusterState::Closed) {
            ClusterState::Open if now_ns >= self.until_ns => ClusterState::HalfOpen,
            s => s,
        }
    }

    /// Seconds of the open period left, if open now.
    pub fn open_for(&self, now_ns: u64) -> Option<f64> {
        (self.state(now_ns) == ClusterState::Open)
            .then(|| clock::ns_to_secs(self.until_ns - now_ns))
    }

    /// Probe permits held here and not used yet.
    pub fn permits(&self) -> usize {
        self.permits
    }

    /// Apply what Redis said at `r.at_us`, heard at `now_ns`. An answer older
    /// than one already applied is dropped, except that a probe permit granted
    /// for the episode in force is kept. Returns whether it was applied.
    pub fn apply(&mut self, r: Report, granted: bool, now_ns: u64) -> bool {
        if r.at_us < self.seen_at_us {
            if granted && r.ep == self.ep && self.state(now_ns) == ClusterState::HalfOpen {
                self.permits += 1;
            }
            return false;
        }
        self.seen_at_us = r.at_us;
        if r.ep != self.ep {
            self.permits = 0;
        }
        self.ep = r.ep;
        match r.state {
            ClusterState::Closed => {
                self.permits = 0;
                self.state = Some(ClusterState::Closed);
            }
            ClusterState::Open => {
                self.permits = 0;
                self.state = Some(ClusterState::Open);
                self.until_ns = now_ns.saturating_add(r.left_ms.saturating_mul(1_000_000));
            }
            ClusterState::HalfOpen => {
                self.state = Some(ClusterState::HalfOpen);
                self.until_ns = now_ns;
                if granted {
                    self.permits += 1;
                }
            }
        }
        true
    }

    /// Ask to send one call at `now_ns`.
    pub fn acquire(&mut self, now_ns: u64) -> Verdict {
        match self.state(now_ns) {
            ClusterState::Closed => Verdict::Go,
            ClusterState::Open => Verdict::Refuse(clock::ns_to_secs(self.until_ns - now_ns)),
            ClusterState::HalfOpen if self.permits > 0 => {
                self.permits -= 1;
                Verdict::Probe(self.ep)
            }
            ClusterState::HalfOpen if !self.claiming && now_ns >= self.next_claim_ns => {
                self.claiming = true;
                self.claim_from_us = self.seen_at_us;
                Verdict::RefuseAndClaim
            }
            ClusterState::HalfOpen => Verdict::Refuse(0.0),
        }
    }

    /// A probe permit of episode `ep` taken by [`Self::acquire`] and not used.
    pub fn give_back(&mut self, ep: u64, now_ns: u64) {
        if ep == self.ep && self.state(now_ns) == ClusterState::HalfOpen {
            self.permits += 1;
        }
    }

    /// The claim came back: `r` (applied), or `None` when Redis did not answer
    /// (this process goes on its local breaker alone until Redis answers,
    /// unless fresher news arrived meanwhile).
    pub fn claimed(&mut self, r: Option<Report>, now_ns: u64) {
        self.claiming = false;
        match r {
            Some(r) => {
                let granted = r.state == ClusterState::HalfOpen && r.flag;
                self.apply(r, granted, now_ns);
                if r.state == ClusterState::HalfOpen && !granted {
                    self.next_claim_ns = now_ns.saturating_add(CLAIM_RETRY.as_nanos() as u64);
                }
            }
            None if self.seen_at_us == self.claim_from_us => {
                self.state = Some(ClusterState::Closed);
                self.permits = 0;
            }
            None => {}
        }
    }

    /// Take back one unused permit of episode `ep` (to return it to the cluster).
    pub fn take_unused(&mut self, ep: u64) -> bool {
        if ep == self.ep && self.permits > 0 {
            self.permits -= 1;
            true
        } else {
            false
        }
    }

    /// In a forked child: no claim runs here and the parent's permits are not ours.
    pub fn after_fork(&mut self) {
        self.claiming = false;
        self.permits = 0;
    }
}

/// Outcome bits as the scripts read them.
pub fn outcome_bits(outcome: breaker::Outcome, slow: bool) -> u8 {
    match outcome {
        breaker::Outcome::Ignored => 4,
        breaker::Outcome::Failure => 1 | if slow { 2 } else { 0 },
        breaker::Outcome::Success => {
            if slow {
                2
            } else {
                0
            }
        }
    }
}

/// Counts of one deployment's shared breaker (read by `stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BreakerStats {
    /// Outcomes published (Redis answered).
    pub published: u64,
    /// Publishes Redis did not answer (timeout, no connection, error).
    pub publish_errors: u64,
    /// Publishes dropped because [`MAX_IN_FLIGHT`] were in flight.
    pub publish_dropped: u64,
    /// Times an outcome of this process opened the deployment cluster-wide.
    pub opens: u64,
    /// Times a probe of this process opened it again.
    pub reopens: u64,
    /// Times a probe of this process closed it.
    pub closes: u64,
    /// Probe permits granted to this process.
    pub probes: u64,
    /// Probe claims refused (the cluster's probes were out).
    pub probe_denials: u64,
    /// Probe permits given back unused (no call here within [`PERMIT_IDLE`]).
    pub permits_returned: u64,
    /// Claims Redis did not answer (this process went on its local breaker alone).
    pub fallbacks: u64,
    /// Admissions refused by the cluster-wide state.
    pub refused: u64,
    /// Notices applied from the subscription.
    pub notices: u64,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    publish_errors: AtomicU64,
    publish_dropped: AtomicU64,
    in_flight: AtomicU64,
    opens: AtomicU64,
    reopens: AtomicU64,
    closes: AtomicU64,
    probes: AtomicU64,
    probe_denials: AtomicU64,
    permits_returned: AtomicU64,
    fallbacks: AtomicU64,
    refused: AtomicU64,
    notices: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct Scripts {
    outcome: Script,
    probe: Script,
    state: Script,
}

#[derive(Default)]
struct Registry {
    by_name: HashMap<String, Weak<SharedBreaker>>,
    listener_pid: u32,
}

/// The shared breakers of one service: one connection, one subscription.
pub struct SharedBreakers {
    conn: Arc<Connection>,
    namespace: String,
    channel: String,
    nonce: u64,
    scripts: Scripts,
    registry: Mutex<Registry>,
    listening: AtomicBool,
    notices: AtomicU64,
    stop: Arc<Notify>,
}

impl std::fmt::Debug for SharedBreakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBreakers")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Drop for SharedBreakers {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

impl SharedBreakers {
    /// Shared breakers on the Redis at `url`; nothing is opened until used.
    pub fn new(url: &str, namespace: &str, op_timeout_s: f64) -> Result<Self> {
        let op_timeout = Duration::from_secs_f64(positive("op_timeout_s", op_timeout_s)?);
        check_namespace(namespace)?;
        let target = open_client(url)?;
        Ok(Self {
            conn: Connection::new(target, op_timeout),
            namespace: namespace.to_string(),
            channel: format!("{namespace}:bk"),
            nonce: nonce(),
            scripts: Scripts {
                outcome: Script::new(scripts::BREAKER_OUTCOME),
                probe: Script::new(scripts::BREAKER_PROBE),
                state: Script::new(scripts::BREAKER_STATE),
            },
            registry: Mutex::new(Registry::default()),
            listening: AtomicBool::new(false),
            notices: AtomicU64::new(0),
            stop: Arc::new(Notify::new()),
        })
    }

    /// This process's name in the window (its pid, read on every call, and a nonce).
    pub fn member(&self) -> String {
        format!("{}:{:016x}", std::process::id(), self.nonce)
    }

    /// The shared breaker of deployment `name` with the local breaker's
    /// settings `cfg`, timed by `clock`.
    pub fn breaker(
        self: &Arc<Self>,
        name: &str,
        cfg: Config,
        clock: SharedClock,
    ) -> Result<Arc<SharedBreaker>> {
        cfg.validate()?;
        if name.is_empty() || name.contains(['{', '}', '\n']) {
            return Err(Error::InvalidArgument {
                what: "name",
                detail: format!("name={name:?} must be non-empty without braces or newlines"),
            });
        }
        let tag = format!("{}:{{{name}}}", self.namespace);
        let b = Arc::new(SharedBreaker {
            hub: self.clone(),
            name: name.to_string(),
            slow_ns: cfg.slow_call_duration_s.map_or(u64::MAX, clock::secs_to_ns),
            cfg,
            clock,
            keys: [
                format!("{tag}:b:w"),
                format!("{tag}:b:n"),
                format!("{tag}:b:s"),
            ],
            view: Mutex::new(View::default()),
            counters: Counters::default(),
        });
        self.registry
            .lock()
            .by_name
            .insert(name.to_string(), Arc::downgrade(&b));
        Ok(b)
    }

    /// Start the subscription (and, through it, learn every registered
    /// deployment's state) in the background; again after a fork.
    pub fn warm(self: &Arc<Self>) {
        let pid = std::process::id();
        {
            let mut r = self.registry.lock();
            if r.listener_pid == pid {
                return;
            }
            r.listener_pid = pid;
        }
        if let Ok(rt) = crate::runtime::handle() {
            let this = Arc::downgrade(self);
            let stop = self.stop.clone();
            rt.spawn(async move { listen(this, stop, pid).await });
        }
    }

    /// Whether this process's subscription is connected.
    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    /// Notices received by the subscription.
    pub fn notices(&self) -> u64 {
        self.notices.load(Ordering::Relaxed)
    }

    /// Whether the command connection is open.
    pub fn connected(&self) -> bool {
        self.conn.connected()
    }

    fn notice(&self, payload: &str) {
        self.notices.fetch_add(1, Ordering::Relaxed);
        let Some((r, name)) = Report::from_notice(payload) else {
            return;
        };
        let b = self
            .registry
            .lock()
            .by_name
            .get(name)
            .and_then(Weak::upgrade);
        if let Some(b) = b {
            let now = b.clock.now_ns();
            if b.view.lock().apply(r, false, now) {
                bump(&b.counters.notices);
            }
        }
    }

    fn registered(&self) -> Vec<Arc<SharedBreaker>> {
        self.registry
            .lock()
            .by_name
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }
}

/// The process's one subscription to `<ns>:bk`: on every (re)connect it
/// refreshes the state of each registered deployment, then applies notices.
async fn listen(hub: Weak<SharedBreakers>, stop: Arc<Notify>, pid: u32) {
    // on a cluster, each (re)connect tries the next seed (PUBLISH is broadcast)
    let mut attempt = 0usize;
    loop {
        let Some(h) = hub.upgrade() else { return };
        if h.registry.lock().listener_pid != pid {
            return;
        }
        let client = h.conn.target().pubsub_client(attempt);
        attempt = attempt.wrapping_add(1);
        let channel = h.channel.clone();
        drop(h);
        let opened = tokio::time::timeout(LISTEN_CONNECT_TIMEOUT, async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(ps)
        })
        .await;
        if let Ok(Ok(ps)) = opened {
            if let Some(h) = hub.upgrade() {
                h.listening.store(true, Ordering::Relaxed);
                for b in h.registered() {
                    tokio::spawn(async move { b.refresh().await });
                }
            }
            let mut messages = ps.into_on_message();
            loop {
                let msg = tokio::select! {
                    m = messages.next() => m,
                    _ = stop.notified() => return,
                };
                let Some(msg) = msg else { break };
                let Some(h) = hub.upgrade() else { return };
                if let Ok(payload) = msg.get_payload::<String>() {
                    h.notice(&payload);
                }
            }
            if let Some(h) = hub.upgrade() {
                h.listening.store(false, Ordering::Relaxed);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(LISTEN_BACKOFF) => {}
            _ = stop.notified() => return,
        }
    }
}

/// One deployment's shared breaker (see the module docs).
pub struct SharedBreaker {
    hub: Arc<SharedBreakers>,
    name: String,
    cfg: Config,
    slow_ns: u64,
    clock: SharedClock,
    keys: [String; 3],
    view: Mutex<View>,
    counters: Counters,
}

impl std::fmt::Debug for SharedBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBreaker")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SharedBreaker {
    /// The deployment.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Redis keys: window, counts, state.
    pub fn keys(&self) -> &[String; 3] {
        &self.keys
    }

    /// The cluster-wide state as known here now.
    pub fn state(&self) -> ClusterState {
        self.view.lock().state(self.clock.now_ns())
    }

    /// Seconds left if the deployment is open cluster-wide now.
    pub fn open_for(&self) -> Option<f64> {
        self.view.lock().open_for(self.clock.now_ns())
    }

    /// [`Self::open_for`], counting a refusal when open (admission's check).
    pub fn refuses(&self) -> Option<f64> {
        let left = self.open_for();
        if left.is_some() {
            bump(&self.counters.refused);
        }
        left
    }

    /// Ask to send one call (no Redis round trip; a needed probe claim is spawned).
    pub fn acquire(self: &Arc<Self>) -> Verdict {
        let v = self.view.lock().acquire(self.clock.now_ns());
        match v {
            Verdict::Refuse(_) => bump(&self.counters.refused),
            Verdict::RefuseAndClaim => {
                bump(&self.counters.refused);
                let this = self.clone();
                if !spawn(async move { this.claim().await }) {
                    self.view.lock().claimed(None, self.clock.now_ns());
                }
            }
            Verdict::Go | Verdict::Probe(_) => {}
        }
        v
    }

    /// A probe permit taken by `acquire` that will not be used (the local
    /// breaker refused): kept here for the next call.
    pub fn give_back(&self, ep: u64) {
        self.view.lock().give_back(ep, self.clock.now_ns());
    }

    async fn claim(self: Arc<Self>) {
        let args = [
            self.cfg.half_open_max_calls.to_string(),
            PROBE_LEASE_MS.to_string(),
        ];
        let keys = [self.keys[2].clone()];
        let reply = self
            .hub
            .conn
            .eval(&self.hub.scripts.probe, &keys, &args)
            .await;
        let report = reply.ok().as_ref().and_then(Report::from_reply);
        match report {
            Some(r) if r.state == ClusterState::HalfOpen && r.flag => {
                bump(&self.counters.probes);
                // nobody here used it in time: give it back to the cluster
                let this = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(PERMIT_IDLE).await;
                    let unused = this.view.lock().take_unused(r.ep);
                    if unused {
                        bump(&this.counters.permits_returned);
                        this.send(4, r.ep).await;
                    }
                });
            }
            Some(r) if r.state == ClusterState::HalfOpen => bump(&self.counters.probe_denials),
            Some(_) => {}
            None => bump(&self.counters.fallbacks),
        }
        self.view.lock().claimed(report, self.clock.now_ns());
    }

    /// Learn the state from Redis (on a (re)connected subscription).
    pub async fn refresh(self: &Arc<Self>) {
        let keys = [self.keys[2].clone()];
        let reply = self
            .hub
            .conn
            .eval(&self.hub.scripts.state, &keys, &[] as &[String])
            .await;
        if let Some(r) = reply.ok().as_ref().and_then(Report::from_reply) {
            self.view.lock().apply(r, false, self.clock.now_ns());
        }
    }

    /// Publish the outcome of a settled attempt that took `duration_s`
    /// (`probe`: the episode of the cluster probe it was, 0 if none), on
    /// the runtime; nobody waits. An ignored outcome is sent only to give
    /// a probe permit back.
    pub fn publish(self: &Arc<Self>, outcome: breaker::Outcome, duration_s: f64, probe: u64) {
        if outcome == breaker::Outcome::Ignored && probe == 0 {
            return;
        }
        self.hub.warm();
        let slow = clock::secs_to_ns(duration_s.max(0.0)) > self.slow_ns;
        let bits = outcome_bits(outcome, slow);
        let in_flight = &self.counters.in_flight;
        if in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT && probe == 0 {
            in_flight.fetch_sub(1, Ordering::Relaxed);
            bump(&self.counters.publish_dropped);
            return;
        }
        let this = self.clone();
        if !spawn(async move {
            this.send(bits, probe).await;
            this.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        }) {
            in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    async fn send(self: &Arc<Self>, bits: u8, probe: u64) {
        let c = &self.cfg;
        let open_ms = (c.open_duration_s * 1000.0).ceil();
        let max_open_ms = (c.max_open_duration_s * 1000.0).ceil();
        let args = [
            self.hub.member(),
            bits.to_string(),
            probe.to_string(),
            c.window_size.to_string(),
            c.minimum_calls.min(c.window_size).to_string(),
            c.failure_rate_threshold.to_string(),
            c.slow_call_rate_threshold.to_string(),
            MIN_PROCESSES.to_string(),
            open_ms.to_string(),
            c.open_backoff_multiplier.to_string(),
            max_open_ms.to_string(),
            c.half_open_max_calls.to_string(),
            WINDOW_TTL_MS.to_string(),
            KEEP_AFTER_OPEN_MS.to_string(),
            self.hub.channel.clone(),
            self.name.clone(),
        ];
        let reply = self
            .hub
            .conn
            .eval(&self.hub.scripts.outcome, &self.keys, &args)
            .await;
        let Some(r) = reply.ok().as_ref().and_then(Report::from_reply) else {
            bump(&self.counters.publish_errors);
            return;
        };
        bump(&self.counters.published);
        if r.flag {
            bump(match (r.state, probe != 0) {
                (ClusterState::Open, false) => &self.counters.opens,
                (ClusterState::Open, true) => &self.counters.reopens,
                _ => &self.counters.closes,
            });
        }
        self.view.lock().apply(r, false, self.clock.now_ns());
    }

    /// Apply a report as if Redis had sent it (`granted`: with a probe
    /// permit for this process). For tests and tools; Redis drives it otherwise.
    pub fn learn(&self, r: Report, granted: bool) {
        self.view.lock().apply(r, granted, self.clock.now_ns());
    }

    /// In a forked child: no claim of the parent runs here.
    pub fn after_fork(&self) {
        self.view.lock().after_fork();
    }

    /// Probe permits held here and not used yet.
    pub fn permits(&self) -> usize {
        self.view.lock().permits()
    }

    /// The counts.
    pub fn stats(&self) -> BreakerStats {
        let c = &self.counters;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BreakerStats {
            published: r(&c.published),
            publish_errors: r(&c.publish_errors),
            publish_dropped: r(&c.publish_dropped),
            opens: r(&c.opens),
            reopens: r(&c.reopens),
            closes: r(&c.closes),
            probes: r(&c.probes),
            probe_denials: r(&c.probe_denials),
            permits_returned: r(&c.permits_returned),
            fallbacks: r(&c.fallbacks),
            refused: r(&c.refused),
            notices: r(&c.notices),
        }
    }

    /// The shared breakers this one belongs to.
    pub fn hub(&self) -> &Arc<SharedBreakers> {
        &self.hub
    }
}

/// Run `job` on the core's runtime; false when there is none.
fn spawn<F>(job: F) -> bool
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    match crate::runtime::handle() {
        Ok(rt) => {
            rt.spawn(job);
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn report(at_us: u64, state: ClusterState, ep: u64, left_ms: u64, flag: bool) -> Report {
        Report {
            at_us,
            state,
            ep,
            left_ms,
            flag,
        }
    }

    #[test]
    fn a_fresh_view_is_closed_and_lets_calls_go() {
        let mut v = View::default();
        assert_eq!(v.state(0), ClusterState::Closed);
        assert_eq!(v.acquire(0), Verdict::Go);
        assert_eq!(v.open_for(0), None);
    }

    #[test]
    fn open_refuses_until_its_period_ends_then_claims_once() {
        let mut v = View::default();
        assert!(v.apply(report(10, ClusterState::Open, 7, 1_000, true), false, 0));
        assert_eq!(v.acquire(0), Verdict::Refuse(1.0));
        assert_eq!(v.open_for(400 * MS), Some(0.6));
        // the period ends on the local clock: half-open, one claim goes out
        assert_eq!(v.state(1_000 * MS), ClusterState::HalfOpen);
        assert_eq!(v.acquire(1_000 * MS), Verdict::RefuseAndClaim);
        assert_eq!(v.acquire(1_001 * MS), Verdict::Refuse(0.0));
        // granted: the next call is the probe, the one after is refused again
        v.claimed(
            Some(report(20, ClusterState::HalfOpen, 7, 0, true)),
            1_002 * MS,
        );
        assert_eq!(v.acquire(1_003 * MS), Verdict::Probe(7));
        assert_eq!(v.acquire(1_004 * MS), Verdict::RefuseAndClaim);
    }

    #[test]
    fn a_denied_claim_waits_before_asking_again() {
        let mut v = View::default();
        v.apply(report(10, ClusterState::HalfOpen, 7, 0, false), false, 0);
        assert_eq!(v.acquire(0), Verdict::RefuseAndClaim);
        v.claimed(Some(report(11, ClusterState::HalfOpen, 7, 0, false)), 0);
        assert_eq!(v.acquire(1), Verdict::Refuse(0.0));
        let later = CLAIM_RETRY.as_nanos() as u64;
        assert_eq!(v.acquire(later), Verdict::RefuseAndClaim);
    }

    #[test]
    fn stale_answers_are_dropped_but_a_granted_permit_is_kept() {
        let mut v = View::default();
        v.apply(report(50, ClusterState::HalfOpen, 7, 0, false), false, 0);
        // an older "closed" (sent before the open) must not close it here
        assert!(!v.apply(report(40, ClusterState::Closed, 0, 0, false), false, 0));
        assert_eq!(v.state(0), ClusterState::HalfOpen);
        // a permit granted for this episode, answered late, is still ours
        assert_eq!(v.acquire(0), Verdict::RefuseAndClaim);
        v.claimed(Some(report(45, ClusterState::HalfOpen, 7, 0, true)), 0);
        assert_eq!(v.permits(), 1);
        // a newer close drops the permit
        assert!(v.apply(report(60, ClusterState::Closed, 0, 0, false), false, 0));
        assert_eq!(v.permits(), 0);
        assert_eq!(v.acquire(0), Verdict::Go);
    }

    #[test]
    fn a_new_episode_drops_old_permits() {
        let mut v = View::default();
        v.apply(report(10, ClusterState::HalfOpen, 7, 0, false), true, 0);
        assert_eq!(v.permits(), 1);
        v.apply(report(20, ClusterState::Open, 9, 5_000, false), false, 0);
        assert_eq!(v.permits(), 0);
        v.give_back(7, 0); // an old episode's permit is not kept
        assert_eq!(v.permits(), 0);
        assert_eq!(v.acquire(0), Verdict::Refuse(5.0));
    }

    #[test]
    fn no_answer_to_a_claim_leaves_the_local_breaker_alone() {
        let mut v = View::default();
        v.apply(report(10, ClusterState::Open, 7, 100, false), false, 0);
        assert_eq!(v.acquire(100 * MS), Verdict::RefuseAndClaim);
        v.claimed(None, 100 * MS);
        assert_eq!(v.acquire(101 * MS), Verdict::Go);
    }

    #[test]
    fn fresher_news_beats_a_claim_without_answer() {
        let mut v = View::default();
        v.apply(report(10, ClusterState::HalfOpen, 7, 0, false), false, 0);
        assert_eq!(v.acquire(0), Verdict::RefuseAndClaim);
        v.apply(report(20, ClusterState::Open, 8, 1_000, false), false, 0);
        v.claimed(None, 0);
        assert_eq!(v.acquire(0), Verdict::Refuse(1.0));
    }

    #[test]
    fn a_permit_given_back_serves_the_next_call() {
        let mut v = View::default();
        v.apply(report(10, ClusterState::HalfOpen, 7, 0, false), true, 0);
        assert_eq!(v.acquire(0), Verdict::Probe(7));
        v.give_back(7, 0);
        assert_eq!(v.acquire(0), Verdict::Probe(7));
    }

    #[test]
    fn only_an_unused_permit_of_the_episode_is_taken_back() {
        let mut v = View::default();
        v.apply(report(10, ClusterState::HalfOpen, 7, 0, false), true, 0);
        assert!(!v.take_unused(6));
        assert!(v.take_unused(7));
        assert!(!v.take_unused(7));
        assert_eq!(v.acquire(0), Verdict::RefuseAndClaim);
    }

    #[test]
    fn after_fork_no_claim_or_permit_is_inherited() {
        let mut v = View::default();
        v.apply(report(10, ClusterState::HalfOpen, 7, 0, false), true, 0);
        v.after_fork();
        assert_eq!(v.permits(), 0);
        assert_eq!(v.acquire(0), Verdict::RefuseAndClaim);
        v.after_fork();
        assert_eq!(v.acquire(0), Verdict::RefuseAndClaim);
    }

    #[test]
    fn replies_and_notices_parse() {
        let v = Value::Array(vec![
            Value::Int(1),
            Value::BulkString(b"1700000000000001".to_vec()),
            Value::Int(3000),
            Value::BulkString(b"1700000000000001".to_vec()),
            Value::Int(1),
        ]);
        let r = Report::from_reply(&v).unwrap();
        assert_eq!(r.state, ClusterState::Open);
        assert_eq!(
            (r.ep, r.left_ms, r.flag),
            (1_700_000_000_000_001, 3000, true)
        );
        assert!(Report::from_reply(&Value::Int(1)).is_none());
        let (n, name) = Report::from_notice("12 0 9 0 openai/x y").unwrap();
        assert_eq!(
            (n.at_us, n.state, n.ep, name),
            (12, ClusterState::Closed, 9, "openai/x y")
        );
        assert!(Report::from_notice("12 5 9 0 d").is_none());
        assert!(Report::from_notice("garbage").is_none());
    }

    #[test]
    fn outcome_bits_match_the_scripts() {
        use breaker::Outcome as O;
        assert_eq!(outcome_bits(O::Success, false), 0);
        assert_eq!(outcome_bits(O::Failure, false), 1);
        assert_eq!(outcome_bits(O::Success, true), 2);
        assert_eq!(outcome_bits(O::Failure, true), 3);
        assert_eq!(outcome_bits(O::Ignored, true), 4);
    }

    #[test]
    fn bad_names_and_settings_are_typed_errors() {
        let hub = Arc::new(SharedBreakers::new("redis://127.0.0.1:1", "ns", 0.02).unwrap());
        assert!(hub
            .breaker("a{b}", Config::default(), clock::system())
            .is_err());
        let bad = Config {
            window_size: 0,
            ..Config::default()
        };
        assert!(hub.breaker("dep", bad, clock::system()).is_err());
        let b = hub
            .breaker("dep", Config::default(), clock::system())
            .unwrap();
        assert_eq!(b.keys()[2], "ns:{dep}:b:s");
        assert!(SharedBreakers::new("http://x", "ns", 0.02).is_err());
        assert!(SharedBreakers::new("redis://x", "", 0.02).is_err());
    }

    #[test]
    fn redis_absent_costs_nothing_and_is_counted() {
        let rt = crate::runtime::handle().unwrap();
        let hub = Arc::new(SharedBreakers::new("redis://127.0.0.1:1", "ns", 0.02).unwrap());
        let b = hub
            .breaker("dep", Config::default(), clock::system())
            .unwrap();
        assert_eq!(b.acquire(), Verdict::Go);
        b.publish(breaker::Outcome::Failure, 0.1, 0);
        // the publish runs on the runtime; wait for it, bounded
        rt.block_on(async {
            for _ in 0..200 {
                if b.stats().publish_errors == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        assert_eq!(b.stats().publish_errors, 1);
        assert_eq!(b.state(), ClusterState::Closed);
    }
}
