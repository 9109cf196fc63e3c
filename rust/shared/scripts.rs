//! The Lua scripts of the shared limiter. Each runs atomically on the server,
//! reads the server's clock (`TIME`, microseconds) and touches only keys of
//! one hash tag, so it runs unchanged on Redis Cluster.
//!
//! A cell key holds its theoretical arrival time `tat` (µs, server clock) and
//! expires when `tat` passes: an expired key is a full cell. Configuration
//! (interval, burst) travels with every call, so the server holds no config.

/// Admission over several cells and the pause key, writing nothing on refusal.
///
/// KEYS: cells 1..n, then the pause key, then the reservation key.
/// ARGV: n, max_wait_us, reservation_ttl_ms (0: no reservation), then per cell
/// interval_us, burst, cost. Returns `{admitted (0/1), wait_us as a string}`.
pub const RESERVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local max_wait = tonumber(ARGV[2])
local res_ttl = tonumber(ARGV[3])
local wait = 0
local pause = tonumber(redis.call('GET', KEYS[n + 1]) or '0')
if pause > now then wait = pause - now end
local tats = {}
for i = 1, n do
  local interval = tonumber(ARGV[1 + 3 * i])
  local burst = tonumber(ARGV[2 + 3 * i])
  local cost = tonumber(ARGV[3 + 3 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  local go = new_tat - burst * interval
  if go - now > wait then wait = go - now end
  tats[i] = new_tat
end
if wait > max_wait + 0.001 then
  return {0, string.format('%.3f', wait)}
end
for i = 1, n do
  local ttl = math.ceil((tats[i] - now) / 1000) + 1
  redis.call('SET', KEYS[i], string.format('%.3f', tats[i]), 'PX', ttl)
end
if res_ttl > 0 then
  for i = 1, n do
    redis.call('HSET', KEYS[n + 2], KEYS[i], ARGV[3 + 3 * i])
  end
  redis.call('PEXPIRE', KEYS[n + 2], res_ttl)
end
return {1, string.format('%.3f', wait)}
"#;

/// Give back (negative delta) or charge (positive delta) on cells.
///
/// KEYS: cells 1..n. ARGV: n, then per cell interval_us, delta. A give-back
/// never raises a cell above full; a charge may put it in debt.
pub const ADJUST: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
for i = 1, n do
  local interval = tonumber(ARGV[2 * i])
  local delta = tonumber(ARGV[1 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tat = tat + delta * interval
  if tat > now then
    redis.call('SET', KEYS[i], string.format('%.3f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
  else
    redis.call('DEL', KEYS[i])
  end
end
return n
"#;

/// Settle a reservation once: charge or give back `actual - booked` per cell,
/// then delete the reservation. A second call finds no reservation: no-op.
///
/// KEYS: cells 1..n, then the reservation key. ARGV: n, then per cell
/// interval_us, actual. Returns 1 when applied, 0 when already settled or expired.
pub const RECONCILE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local res = KEYS[n + 1]
if redis.call('EXISTS', res) == 0 then return 0 end
for i = 1, n do
  local booked = redis.call('HGET', res, KEYS[i])
  if booked then
    local interval = tonumber(ARGV[2 * i])
    local delta = tonumber(ARGV[1 + 2 * i]) - tonumber(booked)
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tat < now then tat = now end
    tat = tat + delta * interval
    if tat > now then
      redis.call('SET', KEYS[i], string.format('%.3f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
    else
      redis.call('DEL', KEYS[i])
    end
  end
end
redis.call('DEL', res)
return 1
"#;

/// Tighten a cell so it admits at most `capacity_now` now (never loosens).
///
/// KEYS: the cell. ARGV: interval_us, burst, capacity_now.
pub const TIGHTEN: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local capacity = tonumber(ARGV[3])
local target = now + (burst - capacity) * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if target > tat and target > now then
  redis.call('SET', KEYS[1], string.format('%.3f', target), 'PX', math.ceil((target - now) / 1000) + 1)
  return 1
end
return 0
"#;

/// Push the pause deadline to `now + seconds` unless a later one is set.
///
/// KEYS: the pause key. ARGV: pause_us. Returns the deadline's µs from now.
pub const PAUSE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_us = now + tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_us > cur then
  redis.call('SET', KEYS[1], string.format('%.3f', until_us), 'PX', math.ceil((until_us - now) / 1000) + 1)
  cur = until_us
end
return string.format('%.3f', cur - now)
"#;

/// Seconds of wait a cell is booked ahead of now (`0` for a full cell).
///
/// KEYS: the cell. Returns µs of `tat - now` as a string.
pub const BOOKED: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
return string.format('%.3f', tat - now)
"#;

/// Record this process's heartbeat and count the live ones.
///
/// KEYS: the process set. ARGV: member, ttl_ms. Returns the live count.
pub const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now_ms, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - ttl)
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return redis.call('ZCARD', KEYS[1])
"#;

/// Leased mode: book a call's costs as [`RESERVE`] does (all-or-nothing,
/// within the wait, the pause respected), and, when it goes at once, lease up
/// to `extra` more units of each cell from the room left now (booked in the
/// cell like any reservation, so the cluster never admits above the limit).
///
/// KEYS: cells 1..n, then the pause key. ARGV: n, max_wait_us, then per cell
/// interval_us, burst, cost, extra. Returns `{admitted (0/1), wait_us, granted
/// units per cell...}` (strings); nothing is written on refusal.
pub const LEASE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local max_wait = tonumber(ARGV[2])
local wait = 0
local pause = tonumber(redis.call('GET', KEYS[n + 1]) or '0')
if pause > now then wait = pause - now end
local tats = {}
for i = 1, n do
  local b = 2 + 4 * (i - 1)
  local interval = tonumber(ARGV[b + 1])
  local burst = tonumber(ARGV[b + 2])
  local cost = tonumber(ARGV[b + 3])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  local go = new_tat - burst * interval
  if go - now > wait then wait = go - now end
  tats[i] = new_tat
end
if wait > max_wait + 0.001 then
  return {0, string.format('%.3f', wait)}
end
local out = {1, string.format('%.3f', wait)}
for i = 1, n do
  local b = 2 + 4 * (i - 1)
  local interval = tonumber(ARGV[b + 1])
  local burst = tonumber(ARGV[b + 2])
  local extra = tonumber(ARGV[b + 4])
  local new_tat = tats[i]
  local granted = 0
  if wait <= 0 and extra > 0 then
    local room = (burst * interval - (new_tat - now)) / interval
    if room > 0 then
      granted = math.min(extra, room)
      new_tat = new_tat + granted * interval
    end
  end
  if new_tat > now then
    redis.call('SET', KEYS[i], string.format('%.3f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
  end
  out[2 + i] = string.format('%.6f', granted)
end
return out
"#;
