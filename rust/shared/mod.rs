//! Shared state on Redis (or Valkey): limits that hold across every process
//! of a deployment.
//!
//! [`SharedLimiter`] has the operations of the keyed [`RateLimiter`]
//! (configure, reserve on several keys with costs, refund, reconcile,
//! observe_headers, available) with the cells kept in Redis, so the gate of
//! a deployment can use either. Every Redis call is one Lua script (see
//! [`scripts`]) on the server's clock, bounded by the op timeout and never
//! retried; when Redis does not answer in time the call follows
//! [`OnUnavailable`], and what `local_share` admitted meanwhile is charged
//! back on the first reply for its (deployment, model) ([`chargeback`]).
//!
//! Keys: a limiter key `"<deployment>/<model>:<dimension>"` lives at
//! `"<namespace>:{<deployment>/<model>}:c:<dimension>"`; the braces are a
//! Redis Cluster hash tag, so every key of one (deployment, model) — its
//! cells, its 429 pause and its reservations — is on one shard, and the
//! keys of one call never cross slots.

pub mod breaker;
pub mod cache;
pub mod chargeback;
pub mod client;
pub mod dedup;
pub mod lease;
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
    /// Enforce `limit * 0.9 / live processes` in this process; what it admits
    /// is charged back into the cluster-wide cells on recovery (see
    /// [`chargeback`]).
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
    /// Admitted from a slice this process leased (leased mode): booked in
    /// Redis beforehand, decided here without a round trip.
    Lease,
}

impl Source {
    /// The stable name, as Python sees it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::LocalShare => "local_share",
            Self::Open => "open",
            Self::Closed => "closed",
            Self::Lease => "lease",
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
    /// Charge-back batches Redis applied (what `local_share` admitted during
    /// an outage, charged into the cluster-wide cells on recovery).
    pub chargebacks: u64,
    /// Units those batches charged (summed over keys; after the debt cap).
    pub units_charged_back: f64,
    /// Charge-back batches Redis did not confirm (kept for the next recovery).
    pub chargeback_failures: u64,
    /// Units admitted by `local_share` not yet charged back.
    pub units_owed: f64,
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
    chargebacks: AtomicU64,
    chargeback_failures: AtomicU64,
    /// Units charged back, in millionths (an atomic f64 would need a CAS loop).
    micro_units_charged_back: AtomicU64,
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
    charge: Script,
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
    /// Leased mode's slices (None: exact mode).
    leasing: Option<Leasing>,
    /// What `local_share` admitted while Redis was away, to charge back.
    owed: Mutex<chargeback::ChargeBook>,
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
            leasing: None,
            owed: Mutex::new(chargeback::ChargeBook::new()),
            scripts: Scripts {
                reserve: Script::new(scripts::RESERVE),
                adjust: Script::new(scripts::ADJUST),
                reconcile: Script::new(scripts::RECONCILE),
                tighten: Script::new(scripts::TIGHTEN),
                pause: Script::new(scripts::PAUSE),
                booked: Script::new(scripts::BOOKED),
                heartbeat: Script::new(scripts::HEARTBEAT),
                charge: Script::new(scripts::CHARGE),
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

    /// Note a Redis reply for `key`'s (deployment, model): as [`Self::note`],
    /// and charge back what the local share admitted on it meanwhile.
    fn note_ok(self: &Arc<Self>, key: &str) {
        self.note(true);
        if let Ok((scope, _)) = split_key(key) {
            self.maybe_charge_back(scope);
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
        if self.leasing.is_some() {
            return self.reserve_leased(&cells, max_wait_s, reservation).await;
        }
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
                self.note_ok(first);
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
                if admitted {
                    self.owe(cells);
                } else {
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
        if self.leasing.is_some() {
            self.refund_leased(items)?;
            return Ok(Source::Lease);
        }
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
                self.note_ok(deltas[0].0);
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
                        if let Ok((scope, _)) = split_key(key) {
                            self.owed.lock().give_back(scope, key, -delta);
                        }
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
        if self.leasing.is_some() {
            return self.reconcile_leased(reservation, &cells);
        }
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
                self.note_ok(first);
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
                self.note_ok(key);
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
        if let Some(l) = &self.leasing {
            // no local admission on the scope meanwhile: its calls go to Redis,
            // which holds them for the pause
            l.book.lock().pause(key, retry_after_s);
        }
        match self.conn.eval(&self.scripts.pause, &keys, &args).await {
            Ok(v) => {
                self.note_ok(key);
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
                self.note_ok(key);
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
            chargebacks: self.ops.chargebacks.load(Ordering::Relaxed),
            units_charged_back: self.ops.micro_units_charged_back.load(Ordering::Relaxed) as f64
                / 1e6,
            chargeback_failures: self.ops.chargeback_failures.load(Ordering::Relaxed),
            units_owed: self.owed.lock().units_owed(),
        }
    }

    /// This process's share factor while Redis is unavailable.
    pub fn local_share(&self) -> f64 {
        LOCAL_SHARE_FACTOR / self.live.load(Ordering::Relaxed).max(1) as f64
    }
}

impl SharedLimiter {
    /// Note what the local share admitted, to charge it back on recovery.
    fn owe(&self, cells: &[(&str, f64, CellConfig)]) {
        let mut book = self.owed.lock();
        for (key, cost, _) in cells {
            if let Ok((scope, _)) = split_key(key) {
                book.add(scope, key, *cost);
            }
        }
    }

    /// Redis answered: if the local share admitted anything while it was
    /// away, charge it back in the background (on the core's runtime, one
    /// charge at a time; the caller does not wait).
    fn maybe_charge_back(self: &Arc<Self>, scope: &str) {
        if !self.owed.lock().ready(scope) {
            return;
        }
        let Ok(rt) = crate::runtime::handle() else {
            return;
        };
        let this = self.clone();
        let scope = scope.to_string();
        rt.spawn(async move { this.charge_back_owed(&scope).await });
    }

    /// Charge what is owed on `scope` (`<deployment>/<model>`) into the
    /// cluster-wide cells now: one `CHARGE` script per batch, each applied
    /// once by Redis. A batch Redis does not confirm (and every one after it)
    /// is kept, with its id, for the next recovery. Returns (batches applied,
    /// kept); (0, 0) when nothing is owed or a charge of it is running.
    pub async fn charge_back_owed(self: &Arc<Self>, scope: &str) -> (usize, usize) {
        let batches = self.owed.lock().take(&self.member(), scope);
        if batches.is_empty() {
            return (0, 0); // nothing owed, or a charge is running
        }
        let (mut applied, mut kept) = (0, 0);
        let mut gone = false;
        for batch in batches {
            let charged = if gone {
                None
            } else {
                self.charge(&batch).await
            };
            match charged {
                Some(units) => {
                    applied += 1;
                    bump(&self.ops.chargebacks);
                    self.ops
                        .micro_units_charged_back
                        .fetch_add((units * 1e6).round() as u64, Ordering::Relaxed);
                }
                None => {
                    gone = true;
                    kept += 1;
                    bump(&self.ops.chargeback_failures);
                    self.owed.lock().failed(batch);
                }
            }
        }
        self.owed.lock().finish(scope);
        (applied, kept)
    }

    /// One batch's `CHARGE`: the units charged (0 for a batch Redis applied
    /// before), or None when Redis did not confirm it.
    async fn charge(&self, batch: &chargeback::Batch) -> Option<f64> {
        let mut keys = Vec::with_capacity(batch.units.len() + 1);
        let mut args = vec![String::new(), RESERVATION_TTL_MS.to_string()];
        for (key, units) in &batch.units {
            // a key no longer configured here is not charged
            let (Some(cell), Ok(k)) = (self.cell(key), self.cell_key(key)) else {
                continue;
            };
            keys.push(k);
            args.push(format!("{:.6}", cell.interval_us()));
            args.push(cell.burst.to_string());
            args.push(units.to_string());
        }
        let Some((first, _)) = batch.units.first() else {
            return Some(0.0);
        };
        if keys.is_empty() {
            return Some(0.0);
        }
        args[0] = keys.len().to_string();
        keys.push(self.scope_key(first, &format!("cb:{}", batch.id)).ok()?);
        match self.conn.eval(&self.scripts.charge, &keys, &args).await {
            Ok(Value::Array(v)) if !v.is_empty() => {
                if value_f64(&v[0]).unwrap_or(0.0) > 0.0 {
                    Some(v[1..].iter().filter_map(value_f64).sum())
                } else {
                    Some(0.0)
                }
            }
            Ok(_) | Err(_) => None,
        }
    }
}

/// Most reservations of leased mode remembered for `reconcile` at once.
const LEASED_RECORDS_MAX: usize = 100_000;

/// Leased mode's state (see [`lease`] and [`SharedLimiter::with_leases`]).
struct Leasing {
    ttl_s: f64,
    book: Mutex<lease::LeaseBook>,
    /// Scopes with a refill in flight (one at a time per scope).
    refilling: Mutex<std::collections::HashSet<String>>,
    /// Reservation id -> what it booked, for `reconcile` (local in leased mode).
    records: Mutex<HashMap<String, LeasedRecord>>,
    lease: Script,
    give_back: Arc<Script>,
    /// `LEASE` scripts sent (a miss or a refill).
    lease_calls: AtomicU64,
    /// Refills started at the low-water mark.
    refills: AtomicU64,
}

/// Leased-mode counts (see [`SharedLimiter::lease_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LeasedStats {
    /// The slice accounting's counts.
    pub book: lease::LeaseStats,
    /// `LEASE` scripts sent.
    pub lease_calls: u64,
    /// Refills started at the low-water mark.
    pub refills: u64,
    /// The slices' time to live, in seconds.
    pub lease_ttl_s: f64,
}

/// What a leased reservation booked (when, and per key) for its `reconcile`.
type LeasedRecord = (Instant, Vec<(String, f64)>);

/// One `ADJUST` per key giving `units` back: `(keys, args)` to evaluate.
type GiveBack = Vec<(Vec<String>, Vec<String>)>;

impl SharedLimiter {
    /// This limiter in leased mode: each process leases slices of the cells
    /// that live `lease_ttl_s` (0.01..=60 s) and admits from them locally.
    pub fn with_leases(self, lease_ttl_s: f64) -> Result<Self> {
        self.with_leases_on(lease_ttl_s, clock::system())
    }

    /// [`Self::with_leases`] with the slices' lifetimes read on `clock`.
    pub fn with_leases_on(mut self, lease_ttl_s: f64, clock: clock::SharedClock) -> Result<Self> {
        if !(lease_ttl_s.is_finite() && (0.01..=60.0).contains(&lease_ttl_s)) {
            return Err(Error::config(
                "lease_ttl_s",
                lease_ttl_s,
                "must be a number of seconds in 0.01..=60",
            ));
        }
        self.leasing = Some(Leasing {
            ttl_s: lease_ttl_s,
            book: Mutex::new(lease::LeaseBook::new(clock, clock::secs_to_ns(lease_ttl_s))),
            refilling: Mutex::new(std::collections::HashSet::new()),
            records: Mutex::new(HashMap::new()),
            lease: Script::new(scripts::LEASE),
            give_back: Arc::new(Script::new(scripts::ADJUST)),
            lease_calls: AtomicU64::new(0),
            refills: AtomicU64::new(0),
        });
        Ok(self)
    }

    /// Whether the limiter admits from leased slices.
    pub fn is_leased(&self) -> bool {
        self.leasing.is_some()
    }

    /// Leased mode's counts (None in exact mode).
    pub fn lease_stats(&self) -> Option<LeasedStats> {
        let l = self.leasing.as_ref()?;
        Some(LeasedStats {
            book: l.book.lock().stats(),
            lease_calls: l.lease_calls.load(Ordering::Relaxed),
            refills: l.refills.load(Ordering::Relaxed),
            lease_ttl_s: l.ttl_s,
        })
    }

    /// Put a slice of `units` of `key` in the book as if Redis had granted it
    /// (unit tests of the callers, with no Redis).
    #[cfg(test)]
    pub(crate) fn grant_for_test(&self, key: &str, units: f64) {
        if let Some(l) = &self.leasing {
            l.book.lock().add(key, units);
        }
    }

    /// Units `key` holds in this process's live slices.
    pub fn leased_units(&self, key: &str) -> f64 {
        self.leasing
            .as_ref()
            .map_or(0.0, |l| l.book.lock().remaining(key))
    }

    /// The slice to lease of `cell`: the units its rate refills in a lease's
    /// TTL (at most a burst), split among the live processes.
    fn slice_units(&self, cell: CellConfig) -> f64 {
        let ttl = self.leasing.as_ref().map_or(0.0, |l| l.ttl_s);
        let live = self.live.load(Ordering::Relaxed).max(1) as f64;
        (cell.rate * ttl).min(cell.burst) / live
    }

    /// What to lease of `key` beyond a call's `cost`: its slice less what is
    /// held. Nothing when the slice could not cover a call like this one (a
    /// slow cell): such a cell is booked per call, as in exact mode.
    fn extra_units(&self, key: &str, cost: f64, cell: CellConfig) -> f64 {
        let slice = self.slice_units(cell);
        if slice < cost.max(1e-9) {
            return 0.0;
        }
        (slice - self.leased_units(key)).max(0.0)
    }

    /// Leased mode's hot path: take every `(key, cost)` from this process's
    /// slices if they cover all of them (no Redis round trip), else nothing.
    /// Starts a refill in the background when a slice runs low, and returns
    /// expired remainders. `Ok(false)` in exact mode.
    pub fn take_leased(self: &Arc<Self>, items: &[(String, f64)]) -> Result<bool> {
        if self.leasing.is_none() {
            return Ok(false);
        }
        let cells = self.configured(items)?;
        Ok(self.take_cells(&cells))
    }

    fn take_cells(self: &Arc<Self>, cells: &[(&str, f64, CellConfig)]) -> bool {
        let Some(l) = &self.leasing else {
            return false;
        };
        if cells.is_empty() {
            return true;
        }
        let refs: Vec<(&str, f64)> = cells.iter().map(|(k, c, _)| (*k, *c)).collect();
        let take = {
            let mut book = l.book.lock();
            for (key, _, cell) in cells {
                book.set_low_water(key, self.slice_units(*cell) / 2.0);
            }
            book.take(&refs)
        };
        if !take.expired.is_empty() {
            self.spawn_give_back(take.expired);
        }
        if take.covered && !take.low.is_empty() {
            self.spawn_refill(cells, &take.low);
        }
        take.covered
    }

    /// Book `cells` in Redis and lease `extras` more of each (when it goes at
    /// once); the granted slices go into the book. `Err` when Redis did not
    /// answer.
    async fn lease_call(
        self: &Arc<Self>,
        cells: &[(&str, f64, CellConfig)],
        extras: &[f64],
        max_wait_s: f64,
    ) -> std::result::Result<(bool, f64), ()> {
        let Some(l) = &self.leasing else {
            return Err(());
        };
        let Some((first, _, _)) = cells.first() else {
            return Ok((true, 0.0));
        };
        let mut keys = Vec::with_capacity(cells.len() + 1);
        let mut args = Vec::with_capacity(2 + 4 * cells.len());
        args.push(cells.len().to_string());
        args.push(format!("{:.3}", max_wait_s.min(1e9) * 1e6));
        for ((key, cost, cell), extra) in cells.iter().zip(extras) {
            keys.push(self.cell_key(key).map_err(|_| ())?);
            args.push(format!("{:.6}", cell.interval_us()));
            args.push(cell.burst.to_string());
            args.push(cost.to_string());
            args.push(format!("{:.6}", extra.max(0.0)));
        }
        keys.push(self.scope_key(first, "pause").map_err(|_| ())?);
        bump(&l.lease_calls);
        match self.conn.eval(&l.lease, &keys, &args).await {
            Ok(Value::Array(v)) if v.len() >= 2 => {
                self.note_ok(first);
                let admitted = value_f64(&v[0]).unwrap_or(0.0) > 0.0;
                let wait_s = value_f64(&v[1]).unwrap_or(0.0) / 1e6;
                if admitted {
                    let mut any = false;
                    let mut book = l.book.lock();
                    for ((key, _, _), granted) in cells.iter().zip(&v[2..]) {
                        let units = value_f64(granted).unwrap_or(0.0);
                        any |= units > 0.0;
                        book.add(key, units);
                    }
                    drop(book);
                    if any {
                        self.expire_later();
                    }
                }
                Ok((admitted, wait_s))
            }
            Ok(_) | Err(_) => {
                self.note(false);
                Err(())
            }
        }
    }

    /// Leased `reserve_many`: from the slices when they cover it, else one
    /// `LEASE` call booking the costs and a fresh slice of every cell.
    async fn reserve_leased(
        self: &Arc<Self>,
        cells: &[(&str, f64, CellConfig)],
        max_wait_s: f64,
        reservation: Option<&str>,
    ) -> Result<Admission> {
        if self.take_cells(cells) {
            bump(&self.ops.reservations);
            self.record_leased(reservation, cells);
            return Ok(Admission {
                admitted: true,
                wait_s: 0.0,
                source: Source::Lease,
            });
        }
        let extras: Vec<f64> = cells
            .iter()
            .map(|(key, cost, cell)| self.extra_units(key, *cost, *cell))
            .collect();
        match self.lease_call(cells, &extras, max_wait_s).await {
            Ok((admitted, wait_s)) => {
                bump(if admitted {
                    &self.ops.reservations
                } else {
                    &self.ops.refusals
                });
                if admitted {
                    self.record_leased(reservation, cells);
                }
                Ok(Admission {
                    admitted,
                    wait_s,
                    source: Source::Redis,
                })
            }
            Err(()) => Ok(self.fallback_reserve(cells, max_wait_s)),
        }
    }

    fn record_leased(&self, reservation: Option<&str>, cells: &[(&str, f64, CellConfig)]) {
        let (Some(l), Some(id)) = (&self.leasing, reservation) else {
            return;
        };
        let mut records = l.records.lock();
        if records.len() >= LEASED_RECORDS_MAX {
            let ttl = Duration::from_millis(RESERVATION_TTL_MS);
            records.retain(|_, (t, _)| t.elapsed() < ttl);
            if records.len() >= LEASED_RECORDS_MAX {
                return; // full of live ones: its reconcile will be a no-op
            }
        }
        let booked = cells.iter().map(|(k, c, _)| (k.to_string(), *c)).collect();
        records.insert(id.to_string(), (Instant::now(), booked));
    }

    fn reconcile_leased(
        self: &Arc<Self>,
        reservation: &str,
        cells: &[(&str, f64, CellConfig)],
    ) -> Result<(bool, Source)> {
        let booked = self
            .leasing
            .as_ref()
            .and_then(|l| l.records.lock().remove(reservation));
        let Some((_, booked)) = booked else {
            bump(&self.ops.reconcile_noops);
            return Ok((false, Source::Lease));
        };
        let deltas: Vec<(String, f64)> = cells
            .iter()
            .filter_map(|(key, actual, _)| {
                booked
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(k, b)| (k.clone(), actual - b))
            })
            .collect();
        bump(&self.ops.reconciles);
        self.adjust_leased(&deltas)?;
        Ok((true, Source::Lease))
    }

    /// Give back `(key, cost)`s booked in leased mode: into a live slice,
    /// the rest refunded in Redis in the background.
    pub fn refund_leased(self: &Arc<Self>, items: &[(String, f64)]) -> Result<()> {
        let deltas: Vec<(String, f64)> = items.iter().map(|(k, c)| (k.clone(), -c)).collect();
        if !deltas.is_empty() {
            bump(&self.ops.refunds);
        }
        self.adjust_leased(&deltas)
    }

    /// Apply `(key, delta)`s to what leased mode booked: a charge (`delta >
    /// 0`) comes from the slices as far as they go, a give-back (`< 0`) goes
    /// into a live slice; what the slices cannot settle is sent to Redis in
    /// the background (a charge may put the cell in debt, as in exact mode).
    pub fn adjust_leased(self: &Arc<Self>, deltas: &[(String, f64)]) -> Result<()> {
        let Some(l) = &self.leasing else {
            return Ok(());
        };
        let mut rest: Vec<(String, f64)> = Vec::new();
        {
            let mut book = l.book.lock();
            for (key, delta) in deltas {
                check_cost("delta", delta.abs())?;
                if !self.is_configured(key) {
                    continue;
                }
                let left = if *delta > 0.0 {
                    book.debit(key, *delta)
                } else {
                    -book.credit(key, -delta)
                };
                if left != 0.0 {
                    rest.push((key.clone(), left));
                }
            }
        }
        if !rest.is_empty() {
            let jobs = self.adjust_jobs(&rest);
            self.spawn_jobs(jobs);
        }
        Ok(())
    }

    /// `ADJUST` calls applying `(key, delta)` (negative: give back).
    fn adjust_jobs(&self, deltas: &[(String, f64)]) -> GiveBack {
        deltas
            .iter()
            .filter_map(|(key, delta)| {
                let cell = self.cell(key)?;
                let k = self.cell_key(key).ok()?;
                let args = vec![
                    "1".to_string(),
                    format!("{:.6}", cell.interval_us()),
                    delta.to_string(),
                ];
                Some((vec![k], args))
            })
            .collect()
    }

    fn spawn_jobs(&self, jobs: GiveBack) {
        let (Some(l), Ok(rt)) = (&self.leasing, crate::runtime::handle()) else {
            return;
        };
        if jobs.is_empty() {
            return;
        }
        let conn = self.conn.clone();
        let script = l.give_back.clone();
        rt.spawn(async move {
            for (keys, args) in jobs {
                // a give-back Redis misses is lost: the cell refills by itself
                let _ = conn.eval(&script, &keys, &args).await;
            }
        });
    }

    fn spawn_give_back(&self, units: Vec<(String, f64)>) {
        let deltas: Vec<(String, f64)> = units.into_iter().map(|(k, u)| (k, -u)).collect();
        let jobs = self.adjust_jobs(&deltas);
        self.spawn_jobs(jobs);
    }

    /// Lease fresh slices of `low` keys (of `cells`' scope) in the background,
    /// one refill per scope at a time.
    fn spawn_refill(self: &Arc<Self>, cells: &[(&str, f64, CellConfig)], low: &[String]) {
        let Some(l) = &self.leasing else {
            return;
        };
        let Some(scope) = cells.first().and_then(|(k, _, _)| split_key(k).ok()) else {
            return;
        };
        if !l.refilling.lock().insert(scope.0.to_string()) {
            return;
        }
        let Ok(rt) = crate::runtime::handle() else {
            l.refilling.lock().remove(scope.0);
            return;
        };
        bump(&l.refills);
        let scope = scope.0.to_string();
        let todo: Vec<(String, f64, CellConfig)> = cells
            .iter()
            .filter(|(k, _, _)| low.iter().any(|l| l == k))
            .map(|(k, cost, c)| (k.to_string(), *cost, *c))
            .collect();
        let this = self.clone();
        rt.spawn(async move {
            let refs: Vec<(&str, f64, CellConfig)> =
                todo.iter().map(|(k, _, c)| (k.as_str(), 0.0, *c)).collect();
            let extras: Vec<f64> = todo
                .iter()
                .map(|(k, cost, c)| this.extra_units(k, *cost, *c))
                .collect();
            let _ = this.lease_call(&refs, &extras, 0.0).await;
            if let Some(l) = &this.leasing {
                l.refilling.lock().remove(&scope);
            }
        });
    }

    /// Return what is left of the slices just granted once they expire, even
    /// if this process takes nothing more (an idle process holds nothing past
    /// a TTL). Holds the limiter weakly: a dropped one returns on drop.
    fn expire_later(self: &Arc<Self>) {
        let Some(l) = &self.leasing else {
            return;
        };
        let after = Duration::from_secs_f64(l.ttl_s) + Duration::from_millis(5);
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Some(lim) = this.upgrade() {
                if let Some(l) = &lim.leasing {
                    let expired = l.book.lock().expire();
                    if !expired.is_empty() {
                        lim.spawn_give_back(expired);
                    }
                }
            }
        });
    }

    /// Return every slice this process holds (closing); the units returned.
    /// Waits for Redis (each give-back within the op timeout).
    pub async fn release_leases(self: &Arc<Self>) -> f64 {
        let Some(l) = &self.leasing else {
            return 0.0;
        };
        let units = l.book.lock().drain();
        let total = units.iter().map(|(_, u)| u).sum();
        let deltas: Vec<(String, f64)> = units.into_iter().map(|(k, u)| (k, -u)).collect();
        for (keys, args) in self.adjust_jobs(&deltas) {
            let _ = self.conn.eval(&l.give_back, &keys, &args).await;
        }
        total
    }
}

impl Drop for SharedLimiter {
    fn drop(&mut self) {
        // leased mode: slices not returned by `release_leases` go back now
        let Some(l) = &self.leasing else {
            return;
        };
        let units = l.book.lock().drain();
        if !units.is_empty() {
            self.spawn_give_back(units);
        }
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
                                  // What the local share admitted is owed to the cluster-wide cell.
        assert_eq!(lim.stats().units_owed, 18.0);
    }

    #[test]
    fn local_share_admissions_are_owed_and_kept_while_redis_is_away() {
        let rt = crate::runtime::handle().unwrap();
        for (policy, owed) in [
            (OnUnavailable::LocalShare, 6.0), // 2 * (1 + 2) + 1 - 1
            (OnUnavailable::Open, 0.0),
            (OnUnavailable::Closed, 0.0),
        ] {
            let lim =
                Arc::new(SharedLimiter::new("redis://127.0.0.1:1", "ns", policy, 0.02).unwrap());
            lim.configure("d/m:rpm", 0.001, 10.0).unwrap();
            lim.configure("d/m:tpm_in", 0.001, 1000.0).unwrap();
            lim.configure("e/m:rpm", 0.001, 10.0).unwrap();
            let stats = rt.block_on({
                let lim = lim.clone();
                async move {
                    let call = vec![
                        ("d/m:rpm".to_string(), 1.0),
                        ("d/m:tpm_in".to_string(), 2.0),
                    ];
                    for _ in 0..2 {
                        let a = lim.reserve_many(&call, 0.0, None).await.unwrap();
                        assert_eq!(a.admitted, policy != OnUnavailable::Closed);
                    }
                    // refused by the local share: nothing owed for it
                    let big = vec![("d/m:tpm_in".to_string(), 5000.0)];
                    let refused = lim.reserve_many(&big, 0.0, None).await.unwrap();
                    assert_eq!(refused.admitted, policy == OnUnavailable::Open);
                    let other = vec![("e/m:rpm".to_string(), 1.0)];
                    lim.reserve_many(&other, 0.0, None).await.unwrap();
                    // a refund of a local booking owes less
                    lim.refund(&[("d/m:tpm_in".to_string(), 1.0)])
                        .await
                        .unwrap();
                    // Redis still away: the charge fails, everything stays owed
                    let first = lim.charge_back_owed("d/m").await;
                    let second = lim.charge_back_owed("d/m").await;
                    (first, second, lim.stats())
                }
            });
            let (first, second, stats) = stats;
            assert_eq!(stats.units_owed, owed, "{policy:?}");
            assert_eq!(stats.chargebacks, 0);
            if owed > 0.0 {
                // the batch fails; the second time it is sent again (same id)
                assert_eq!(first, (0, 1));
                assert_eq!(second, (0, 1));
                assert_eq!(stats.chargeback_failures, 2);
                let book = lim.owed.lock();
                assert!(book.ready("d/m") && book.ready("e/m"));
            } else {
                assert_eq!((first, second), ((0, 0), (0, 0)));
            }
        }
    }
}
