//! Shared state on Redis (or Valkey): limits that hold across every process
//! of a deployment.
//!
//! [`SharedLimiter`] has the operations of the keyed [`RateLimiter`]
//! (configure, reserve on several keys with costs, refund, reconcile,
//! observe_headers, available) with the cells kept in Redis, so the gate of
//! a deployment can use either. Every Redis call is one Lua script (see
//! [`scripts`]) on the server's clock, bounded by the op timeout and never
//! retried; when Redis does not answer in time the call follows
//! [`OnUnavailable`].
//!
//! Keys: a limiter key `"<deployment>/<model>:<dimension>"` lives at
//! `"<namespace>:{<deployment>/<model>}:c:<dimension>"`; the braces are a
//! Redis Cluster hash tag, so every key of one (deployment, model) — its
//! cells, its 429 pause and its reservations — is on one shard, and the
//! keys of one call never cross slots.

pub mod cache;
pub mod client;
pub mod dedup;
pub mod scripts;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use redis::Value;

use crate::clock;
use crate::error::{positive, Error, Result};
use crate::limiter::RateLimiter;
use client::{Connection, Script};

/// Share of the limit the live processes split among them while Redis is away.
pub const LOCAL_SHARE_FACTOR: f64 = 0.9;
/// A process is live while its heartbeat is younger than this.
const HEARTBEAT_TTL_MS: u64 = 5_000;
/// How often a busy process renews its heartbeat.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How long a reservation's booking is kept for `reconcile`.
const RESERVATION_TTL_MS: u64 = 600_000;

/// What a call does when Redis does not answer within the op timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// Enforce `limit * 0.9 / live processes` in this process.
    LocalShare,
    /// Refuse.
    Closed,
    /// Admit.
    Open,
}

impl OnUnavailable {
    /// Parse `"local_share" | "closed" | "open"`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "local_share" => Ok(Self::LocalShare),
            "closed" => Ok(Self::Closed),
            "open" => Ok(Self::Open),
            _ => Err(Error::config(
                "on_unavailable",
                s,
                "must be 'local_share', 'closed' or 'open'",
            )),
        }
    }
}

/// Who decided a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Redis (cluster-wide, exact).
    Redis,
    /// This process's share of the limit (Redis unavailable).
    LocalShare,
    /// Admitted without a check (Redis unavailable, `open`).
    Open,
    /// Refused without a check (Redis unavailable, `closed`).
    Closed,
}

impl Source {
    /// The stable name, as Python sees it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::LocalShare => "local_share",
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

/// The outcome of a reservation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Admission {
    /// Whether the costs were booked.
    pub admitted: bool,
    /// Seconds to wait before going (admitted) or until it could be (refused).
    pub wait_s: f64,
    /// Who decided.
    pub source: Source,
}

/// A snapshot of the shared state's health.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// A connection is open.
    pub connected: bool,
    /// The last call went to the fallback.
    pub degraded: bool,
    /// Calls answered by Redis.
    pub ok: u64,
    /// Calls cut by the op timeout.
    pub timeouts: u64,
    /// Calls without a connection.
    pub unavailable: u64,
    /// Calls Redis answered with an error.
    pub script_errors: u64,
    /// Scripts sent again after `NOSCRIPT`.
    pub script_loads: u64,
    /// Connections opened.
    pub connects: u64,
    /// Calls decided by the fallback.
    pub fallback_calls: u64,
    /// Times the limiter went from healthy to degraded.
    pub degraded_episodes: u64,
    /// Live processes as last seen in Redis (1 if never).
    pub live_processes: u64,
    /// The longest Redis call so far (seconds, timed in the core).
    pub slowest_call_s: f64,
    /// Reservations Redis admitted.
    pub reservations: u64,
    /// Reservations Redis refused (no room within the wait, or paused).
    pub refusals: u64,
    /// Refunds sent (a booking that sent nothing).
    pub refunds: u64,
    /// Reconciles Redis applied.
    pub reconciles: u64,
    /// Reconciles that found nothing to settle (a repeat, or expired).
    pub reconcile_noops: u64,
    /// 429 pauses published.
    pub pauses: u64,
    /// Header observations sent to Redis (one that could not tighten is not sent).
    pub tightens: u64,
}

/// Counts of the limiter's operations (read by `stats`).
#[derive(Debug, Default)]
struct OpCounters {
    reservations: AtomicU64,
    refusals: AtomicU64,
    refunds: AtomicU64,
    reconciles: AtomicU64,
    reconcile_noops: AtomicU64,
    pauses: AtomicU64,
    tightens: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// One configured cell: its rate and burst.
#[derive(Debug, Clone, Copy)]
struct CellConfig {
    rate: f64,
    burst: f64,
}

impl CellConfig {
    fn interval_us(self) -> f64 {
        1e6 / self.rate
    }
}

struct Scripts {
    reserve: Script,
    adjust: Script,
    reconcile: Script,
    tighten: Script,
    pause: Script,
    booked: Script,
    heartbeat: Script,
}

/// A keyed GCRA limiter whose cells live in Redis (see the module docs).
pub struct SharedLimiter {
    conn: Arc<Connection>,
    namespace: String,
    on_unavailable: OnUnavailable,
    cells: RwLock<HashMap<String, CellConfig>>,
    local: RateLimiter,
    live: AtomicU64,
    nonce: u64,
    ops: OpCounters,
    last_heartbeat: Mutex<Option<(u32, Instant)>>,
    degraded: AtomicBool,
    fallback_calls: AtomicU64,
    episodes: AtomicU64,
    scripts: Scripts,
}

impl std::fmt::Debug for SharedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimiter")
            .field("namespace", &self.namespace)
            .field("on_unavailable", &self.on_unavailable)
            .finish_non_exhaustive()
    }
}

/// Check a cost-like argument: finite and >= 0.
fn check_cost(what: &'static str, cost: f64) -> Result<f64> {
    if cost.is_finite() && cost >= 0.0 {
        Ok(cost)
    } else {
        Err(Error::InvalidArgument {
            what,
            detail: format!("{what}={cost} must be a finite number >= 0"),
        })
    }
}

/// The (deployment, model) scope and the dimension of a limiter key.
fn split_key(key: &str) -> Result<(&str, &str)> {
    if key.is_empty() || key.contains(['{', '}']) {
        return Err(Error::InvalidArgument {
            what: "key",
            detail: format!("key={key:?} must be non-empty and contain no '{{' or '}}'"),
        });
    }
    Ok(key.rsplit_once(':').unwrap_or((key, "")))
}

fn value_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        Value::Double(d) => Some(*d),
        _ => None,
    }
}

#[cfg(test)]
use client::redact;

impl SharedLimiter {
    /// A limiter on the Redis at `url` (`redis://`, `unix://`); no connection
    /// is opened until the first call.
    pub fn new(
        url: &str,
        namespace: &str,
        on_unavailable: OnUnavailable,
        op_timeout_s: f64,
    ) -> Result<Self> {
        let op_timeout = Duration::from_secs_f64(positive("op_timeout_s", op_timeout_s)?);
        if namespace.is_empty() || namespace.contains(['{', '}']) {
            return Err(Error::config(
                "namespace",
                namespace,
                "must be non-empty without '{' or '}'",
            ));
        }
        let target = client::Target::open(url)?;
        let nonce = xxhash_rust::xxh3::xxh3_64(
            format!("{:?}{}", Instant::now(), std::process::id()).as_bytes(),
        );
        Ok(Self {
            conn: Connection::new(target, op_timeout),
            namespace: namespace.to_string(),
            on_unavailable,
            cells: RwLock::new(HashMap::new()),
            local: RateLimiter::new(f64::INFINITY, clock::system())?,
            live: AtomicU64::new(1),
            nonce,
            ops: OpCounters::default(),
            last_heartbeat: Mutex::new(None),
            degraded: AtomicBool::new(false),
            fallback_calls: AtomicU64::new(0),
            episodes: AtomicU64::new(0),
            scripts: Scripts {
                reserve: Script::new(scripts::RESERVE),
                adjust: Script::new(scripts::ADJUST),
                reconcile: Script::new(scripts::RECONCILE),
                tighten: Script::new(scripts::TIGHTEN),
                pause: Script::new(scripts::PAUSE),
                booked: Script::new(scripts::BOOKED),
                heartbeat: Script::new(scripts::HEARTBEAT),
            },
        })
    }

    /// What a call does when Redis is unavailable.
    pub fn on_unavailable(&self) -> OnUnavailable {
        self.on_unavailable
    }

    /// This process's name in Redis: its pid (read on every call, so a forked
    /// child is a process of its own) and a random nonce.
    pub fn member(&self) -> String {
        format!("{}:{:016x}", std::process::id(), self.nonce)
    }

    /// A reservation id unique to entry `n` of this process, cluster-wide.
    pub fn reservation_id(&self, n: u64) -> String {
        format!("{}:{n}", self.member())
    }

    /// Whether `key` has a cell configured here.
    pub fn is_configured(&self, key: &str) -> bool {
        self.cells.read().contains_key(key)
    }

    /// The rate (per second) and burst configured for `key`.
    pub fn cell_config(&self, key: &str) -> Option<(f64, f64)> {
        self.cell(key).map(|c| (c.rate, c.burst))
    }

    fn cell_key(&self, key: &str) -> Result<String> {
        let (scope, dim) = split_key(key)?;
        Ok(format!("{}:{{{scope}}}:c:{dim}", self.namespace))
    }

    fn scope_key(&self, key: &str, what: &str) -> Result<String> {
        let (scope, _) = split_key(key)?;
        Ok(format!("{}:{{{scope}}}:{what}", self.namespace))
    }

    /// (Re)configure `key`: `rate_per_s` > 0 units per second, bursts up to
    /// `burst` >= 1, cluster-wide. Every process must configure the same.
    pub fn configure(&self, key: &str, rate_per_s: f64, burst: f64) -> Result<()> {
        split_key(key)?;
        positive("rate_per_s", rate_per_s)?;
        if !(burst.is_finite() && burst >= 1.0) {
            return Err(Error::config(
                "burst",
                burst,
                "must be a finite number >= 1",
            ));
        }
        let cell = CellConfig {
            rate: rate_per_s,
            burst,
        };
        self.configure_local(key, cell)?;
        self.cells.write().insert(key.to_string(), cell);
        Ok(())
    }

    fn configure_local(&self, key: &str, cell: CellConfig) -> Result<()> {
        let share = LOCAL_SHARE_FACTOR / self.live.load(Ordering::Relaxed).max(1) as f64;
        self.local
            .configure(key, cell.rate * share, (cell.burst * share).max(1.0))
    }

    fn cell(&self, key: &str) -> Option<CellConfig> {
        self.cells.read().get(key).copied()
    }

    /// The configured items of a call, checked; unconfigured keys are unlimited.
    fn configured<'a>(
        &self,
        items: &'a [(String, f64)],
    ) -> Result<Vec<(&'a str, f64, CellConfig)>> {
        let mut scope: Option<&str> = None;
        let mut out = Vec::with_capacity(items.len());
        for (key, cost) in items {
            check_cost("cost", *cost)?;
            let (s, _) = split_key(key)?;
            if *scope.get_or_insert(s) != s {
                return Err(Error::InvalidArgument {
                    what: "key",
                    detail: format!(
                        "keys of one call must share one (deployment, model): {:?} and {key:?}",
                        scope.unwrap_or_default()
                    ),
                });
            }
            if let Some(cell) = self.cell(key) {
                out.push((key.as_str(), *cost, cell));
            }
        }
        Ok(out)
    }

    /// Note a Redis reply or a failure; keep the heartbeat fresh.
    fn note(self: &Arc<Self>, ok: bool) {
        if ok {
            self.degraded.store(false, Ordering::Relaxed);
            self.maybe_heartbeat();
        } else {
            self.fallback_calls.fetch_add(1, Ordering::Relaxed);
            if !self.degraded.swap(true, Ordering::Relaxed) {
                self.episodes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn maybe_heartbeat(self: &Arc<Self>) {
        let pid = std::process::id();
        {
            let mut last = self.last_heartbeat.lock();
            if last.is_some_and(|(p, t)| p == pid && t.elapsed() < HEARTBEAT_EVERY) {
                return;
            }
            *last = Some((pid, Instant::now()));
        }
        let this = self.clone();
        tokio::spawn(async move { this.heartbeat().await });
    }

    /// Record this process in Redis and learn how many are live.
    pub async fn heartbeat(self: &Arc<Self>) -> Option<u64> {
        let keys = [format!("{}:procs", self.namespace)];
        let args = [self.member(), HEARTBEAT_TTL_MS.to_string()];
        let reply = self
            .conn
            .eval(&self.scripts.heartbeat, &keys, &args)
            .await
            .ok()?;
        let live = value_f64(&reply)?.max(1.0) as u64;
        if self.live.swap(live, Ordering::Relaxed) != live {
            let cells: Vec<_> = self
                .cells
                .read()
                .iter()
                .map(|(k, c)| (k.clone(), *c))
                .collect();
            for (key, cell) in cells {
                let _ = self.configure_local(&key, cell);
            }
        }
        Some(live)
    }

    /// Book `cost` on every `(key, cost)` of one (deployment, model) if all
    /// of them (and the scope's pause) allow it within `max_wait_s`; else
    /// book nothing. With `reservation`, the booking is kept under that id
    /// for [`Self::reconcile`].
    pub async fn reserve_many(
        self: &Arc<Self>,
        items: &[(String, f64)],
        max_wait_s: f64,
        reservation: Option<&str>,
    ) -> Result<Admission> {
        let max_wait_s = check_cost("max_wait_s", max_wait_s)?;
        let cells = self.configured(items)?;
        if let Some(id) = reservation {
            check_id(id)?;
        }
        let Some((first, _)) = items.first() else {
            return Ok(Admission {
                admitted: true,
                wait_s: 0.0,
                source: Source::Redis,
            });
        };
        let mut keys = Vec::with_capacity(cells.len() + 2);
        let mut args = Vec::with_capacity(3 + 3 * cells.len());
        args.push(cells.len().to_string());
        args.push(format!("{:.3}", max_wait_s * 1e6));
        args.push(if reservation.is_some() {
            RESERVATION_TTL_MS.to_string()
        } else {
            "0".into()
        });
        for (key, cost, cell) in &cells {
            keys.push(self.cell_key(key)?);
            args.push(format!("{:.6}", cell.interval_us()));
            args.push(cell.burst.to_string());
            args.push(cost.to_string());
        }
        keys.push(self.scope_key(first, "pause")?);
        keys.push(self.scope_key(first, &format!("r:{}", reservation.unwrap_or("-")))?);
        match self.conn.eval(&self.scripts.reserve, &keys, &args).await {
            Ok(Value::Array(v)) if v.len() == 2 => {
                self.note(true);
                let admitted = value_f64(&v[0]).unwrap_or(0.0) > 0.0;
                let wait_s = value_f64(&v[1]).unwrap_or(0.0) / 1e6;
                bump(if admitted {
                    &self.ops.reservations
                } else {
                    &self.ops.refusals
                });
                Ok(Admission {
                    admitted,
                    wait_s,
                    source: Source::Redis,
                })
            }
            Ok(_) | Err(_) => {
                self.note(false);
                Ok(self.fallback_reserve(&cells, max_wait_s))
            }
        }
    }

    fn fallback_reserve(&self, cells: &[(&str, f64, CellConfig)], max_wait_s: f64) -> Admission {
        match self.on_unavailable {
            OnUnavailable::Open => Admission {
                admitted: true,
                wait_s: 0.0,
                source: Source::Open,
            },
            OnUnavailable::Closed => Admission {
                admitted: false,
                wait_s: self.conn.op_timeout().as_secs_f64(),
                source: Source::Closed,
            },
            OnUnavailable::LocalShare => {
                let items = cells.iter().map(|(k, c, _)| (*k, *c));
                let wait_s = self.local.reserve_many(items.clone()).unwrap_or(0.0);
                let admitted = wait_s <= max_wait_s + 1e-9;
                if !admitted {
                    for (key, cost) in items {
                        let _ = self.local.refund(key, cost);
                    }
                }
                Admission {
                    admitted,
                    wait_s,
                    source: Source::LocalShare,
                }
            }
        }
    }

    /// Give back `cost` on every `(key, cost)` (an unused booking).
    pub async fn refund(self: &Arc<Self>, items: &[(String, f64)]) -> Result<Source> {
        let cells = self.configured(items)?;
        let deltas: Vec<_> = cells.iter().map(|(k, c, cell)| (*k, -*c, *cell)).collect();
        if !deltas.is_empty() {
            bump(&self.ops.refunds);
        }
        self.adjust(&deltas).await
    }

    async fn adjust(self: &Arc<Self>, deltas: &[(&str, f64, CellConfig)]) -> Result<Source> {
        if deltas.is_empty() {
            return Ok(Source::Redis);
        }
        let mut keys = Vec::with_capacity(deltas.len());
        let mut args = vec![deltas.len().to_string()];
        for (key, delta, cell) in deltas {
            keys.push(self.cell_key(key)?);
            args.push(format!("{:.6}", cell.interval_us()));
            args.push(delta.to_string());
        }
        match self.conn.eval(&self.scripts.adjust, &keys, &args).await {
            Ok(_) => {
                self.note(true);
                Ok(Source::Redis)
            }
            Err(_) => {
                self.note(false);
                Ok(self.fallback_adjust(deltas))
            }
        }
    }

    fn fallback_adjust(&self, deltas: &[(&str, f64, CellConfig)]) -> Source {
        match self.on_unavailable {
            OnUnavailable::Open => Source::Open,
            OnUnavailable::Closed => Source::Closed,
            OnUnavailable::LocalShare => {
                for (key, delta, _) in deltas {
                    let _ = if *delta < 0.0 {
                        self.local.refund(key, -delta)
                    } else {
                        self.local.reconcile(key, 0.0, *delta)
                    };
                }
                Source::LocalShare
            }
        }
    }

    /// Settle reservation `reservation` with the real costs `items`: each
    /// key booked under it is charged or given back `actual - booked`, once.
    /// `Ok((true, _))` when applied now, `(false, _)` when it was settled
    /// already (or expired, or Redis was unavailable: see the source).
    pub async fn reconcile(
        self: &Arc<Self>,
        reservation: &str,
        items: &[(String, f64)],
    ) -> Result<(bool, Source)> {
        check_id(reservation)?;
        let cells = self.configured(items)?;
        let Some((first, _)) = items.first() else {
            return Ok((false, Source::Redis));
        };
        let mut keys = Vec::with_capacity(cells.len() + 1);
        let mut args = vec![cells.len().to_string()];
        for (key, actual, cell) in &cells {
            keys.push(self.cell_key(key)?);
            args.push(format!("{:.6}", cell.interval_us()));
            args.push(actual.to_string());
        }
        keys.push(self.scope_key(first, &format!("r:{reservation}"))?);
        match self.conn.eval(&self.scripts.reconcile, &keys, &args).await {
            Ok(v) => {
                self.note(true);
                let applied = value_f64(&v).unwrap_or(0.0) > 0.0;
                bump(if applied {
                    &self.ops.reconciles
                } else {
                    &self.ops.reconcile_noops
                });
                Ok((applied, Source::Redis))
            }
            Err(_) => {
                self.note(false);
                Ok((false, self.fallback_adjust(&[])))
            }
        }
    }

    /// The provider says `remaining` of `limit` are left until its window
    /// resets in `reset_s`: tighten the cell cluster-wide (never loosen).
    pub async fn observe_headers(
        self: &Arc<Self>,
        key: &str,
        remaining: f64,
        limit: Option<f64>,
        reset_s: f64,
    ) -> Result<Source> {
        check_cost("remaining", remaining)?;
        check_cost("reset_s", reset_s)?;
        let remaining = match limit {
            Some(l) if !(l.is_finite() && l > 0.0) => {
                return Err(Error::InvalidArgument {
                    what: "limit",
                    detail: format!("limit={l} must be a finite number > 0"),
                })
            }
            Some(l) => remaining.min(l),
            None => remaining,
        };
        let cell_key = self.cell_key(key)?;
        let Some(cell) = self.cell(key) else {
            return Ok(Source::Redis);
        };
        let capacity = remaining - reset_s * cell.rate;
        if capacity >= cell.burst {
            // the cell never holds more than a burst: nothing to tighten
            return Ok(Source::Redis);
        }
        bump(&self.ops.tightens);
        let args = [
            format!("{:.6}", cell.interval_us()),
            cell.burst.to_string(),
            capacity.to_string(),
        ];
        match self
            .conn
            .eval(&self.scripts.tighten, &[cell_key], &args)
            .await
        {
            Ok(_) => {
                self.note(true);
                Ok(Source::Redis)
            }
            Err(_) => {
                self.note(false);
                if self.on_unavailable == OnUnavailable::LocalShare {
                    let share =
                        LOCAL_SHARE_FACTOR / self.live.load(Ordering::Relaxed).max(1) as f64;
                    let _ = self
                        .local
                        .observe_headers(key, remaining * share, None, reset_s);
                }
                Ok(self.fallback_adjust(&[]))
            }
        }
    }

    /// A 429 said to wait `retry_after_s`: pause `key`'s (deployment, model)
    /// in every process; the later deadline wins. Returns the seconds left.
    pub async fn pause(self: &Arc<Self>, key: &str, retry_after_s: f64) -> Result<f64> {
        let retry_after_s = check_cost("retry_after_s", retry_after_s)?;
        let keys = [self.scope_key(key, "pause")?];
        let args = [format!("{:.3}", retry_after_s * 1e6)];
        bump(&self.ops.pauses);
        match self.conn.eval(&self.scripts.pause, &keys, &args).await {
            Ok(v) => {
                self.note(true);
                Ok(value_f64(&v).unwrap_or(0.0) / 1e6)
            }
            Err(_) => {
                self.note(false);
                Ok(retry_after_s)
            }
        }
    }

    /// Capacity that could be taken now on `key` (`inf` if unconfigured).
    pub async fn available(self: &Arc<Self>, key: &str) -> Result<(f64, Source)> {
        let cell_key = self.cell_key(key)?;
        let Some(cell) = self.cell(key) else {
            return Ok((f64::INFINITY, Source::Redis));
        };
        match self.conn.eval(&self.scripts.booked, &[cell_key], &[]).await {
            Ok(v) => {
                self.note(true);
                let booked = value_f64(&v).unwrap_or(0.0) / cell.interval_us();
                Ok(((cell.burst - booked).max(0.0), Source::Redis))
            }
            Err(_) => {
                self.note(false);
                Ok(match self.on_unavailable {
                    OnUnavailable::LocalShare => (self.local.available(key), Source::LocalShare),
                    OnUnavailable::Open => (f64::INFINITY, Source::Open),
                    OnUnavailable::Closed => (0.0, Source::Closed),
                })
            }
        }
    }

    /// The shared state's health.
    pub fn stats(&self) -> Stats {
        let c = &self.conn.counters;
        Stats {
            connected: self.conn.connected(),
            degraded: self.degraded.load(Ordering::Relaxed),
            ok: c.ok.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            unavailable: c.unavailable.load(Ordering::Relaxed),
            script_errors: c.script_errors.load(Ordering::Relaxed),
            script_loads: c.script_loads.load(Ordering::Relaxed),
            connects: c.connects.load(Ordering::Relaxed),
            fallback_calls: self.fallback_calls.load(Ordering::Relaxed),
            degraded_episodes: self.episodes.load(Ordering::Relaxed),
            live_processes: self.live.load(Ordering::Relaxed),
            slowest_call_s: c.slowest_us.load(Ordering::Relaxed) as f64 / 1e6,
            reservations: self.ops.reservations.load(Ordering::Relaxed),
            refusals: self.ops.refusals.load(Ordering::Relaxed),
            refunds: self.ops.refunds.load(Ordering::Relaxed),
            reconciles: self.ops.reconciles.load(Ordering::Relaxed),
            reconcile_noops: self.ops.reconcile_noops.load(Ordering::Relaxed),
            pauses: self.ops.pauses.load(Ordering::Relaxed),
            tightens: self.ops.tightens.load(Ordering::Relaxed),
        }
    }

    /// This process's share factor while Redis is unavailable.
    pub fn local_share(&self) -> f64 {
        LOCAL_SHARE_FACTOR / self.live.load(Ordering::Relaxed).max(1) as f64
    }
}

fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 128 || id.contains(['{', '}']) {
        return Err(Error::InvalidArgument {
            what: "reservation",
            detail: format!("reservation={id:?} must be 1-128 characters without '{{' or '}}'"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_one_hash_tag_per_deployment_model() {
        let lim =
            SharedLimiter::new("redis://127.0.0.1:1", "ns", OnUnavailable::Open, 0.01).unwrap();
        assert_eq!(
            lim.cell_key("openai/gpt-4o:rpm").unwrap(),
            "ns:{openai/gpt-4o}:c:rpm"
        );
        assert_eq!(
            lim.scope_key("openai/gpt-4o:tpm_in", "pause").unwrap(),
            "ns:{openai/gpt-4o}:pause"
        );
        assert!(lim.cell_key("bad{key}:rpm").is_err());
    }

    #[test]
    fn bad_arguments_are_typed_errors() {
        assert!(matches!(
            OnUnavailable::parse("x"),
            Err(Error::Config { .. })
        ));
        assert!(SharedLimiter::new("http://x", "ns", OnUnavailable::Open, 0.01).is_err());
        assert!(SharedLimiter::new("redis://x", "ns", OnUnavailable::Open, 0.0).is_err());
        assert!(SharedLimiter::new("redis://x", "", OnUnavailable::Open, 0.01).is_err());
        let lim = SharedLimiter::new("redis://x", "ns", OnUnavailable::Open, 0.01).unwrap();
        assert!(lim.configure("d/m:rpm", 0.0, 1.0).is_err());
        assert!(lim.configure("d/m:rpm", 1.0, 0.5).is_err());
        assert!(redact("redis://u:secret@h:1/0").contains("***"));
        assert!(!redact("redis://u:secret@h:1/0").contains("secret"));
    }

    #[test]
    fn redis_absent_follows_the_policy_quickly() {
        let rt = crate::runtime::handle().unwrap();
        for (policy, admitted, source) in [
            (OnUnavailable::Open, true, Source::Open),
            (OnUnavailable::Closed, false, Source::Closed),
            (OnUnavailable::LocalShare, true, Source::LocalShare),
        ] {
            // Port 1 on loopback: refused at once.
            let lim =
                Arc::new(SharedLimiter::new("redis://127.0.0.1:1", "ns", policy, 0.02).unwrap());
            lim.configure("d/m:rpm", 1.0, 10.0).unwrap();
            let items = vec![("d/m:rpm".to_string(), 1.0)];
            let started = Instant::now();
            let a = rt.block_on({
                let lim = lim.clone();
                async move { lim.reserve_many(&items, 0.0, None).await.unwrap() }
            });
            assert!(
                started.elapsed() < Duration::from_millis(200),
                "{:?}",
                started.elapsed()
            );
            assert_eq!((a.admitted, a.source), (admitted, source));
            assert_eq!(lim.stats().degraded_episodes, 1);
        }
    }

    #[test]
    fn local_share_enforces_the_share() {
        let rt = crate::runtime::handle().unwrap();
        let lim = Arc::new(
            SharedLimiter::new("redis://127.0.0.1:1", "ns", OnUnavailable::LocalShare, 0.02)
                .unwrap(),
        );
        lim.configure("d/m:rpm", 0.001, 20.0).unwrap();
        let admitted = rt.block_on({
            let lim = lim.clone();
            async move {
                let items = vec![("d/m:rpm".to_string(), 1.0)];
                let mut n = 0;
                for _ in 0..40 {
                    if lim.reserve_many(&items, 0.0, None).await.unwrap().admitted {
                        n += 1;
                    }
                }
                n
            }
        });
        assert_eq!(admitted, 18); // 20 * 0.9 / 1 live process
    }
}
