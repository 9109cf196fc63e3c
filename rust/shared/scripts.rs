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

/// Shared breakers: one settled outcome enters the deployment's cluster-wide
/// window (closed), or is judged as a probe (half-open), or is dropped (open,
/// or half-open and not a probe of the episode). Replies, and notices on the
/// channel, carry the server time, so a process applies only fresher news.
///
/// KEYS: window list, counts hash, state hash. ARGV: 1 member, 2 bits (1
/// failure, 2 slow, 4 ignored: gives a probe permit back), 3 probe episode
/// ('0': not a probe), 4 window_size, 5 calls judged, 6 failure threshold,
/// 7 slow threshold, 8 processes needed, 9 open_ms, 10 backoff multiplier,
/// 11 max_open_ms, 12 half_open_max_calls, 13 window_ttl_ms, 14 keep_ms,
/// 15 channel, 16 deployment. Returns `{state (0 closed, 1 open, 2 half-open),
/// ep, left_ms, at_us, changed (0/1)}`; a notice is `"at state ep left_ms name"`.
pub const BREAKER_OUTCOME: &str = r#"
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = math.floor(now_us / 1000)
local at = string.format('%.0f', now_us)
local bits = tonumber(ARGV[2])
local fail = bits % 2 == 1
local slow = math.floor(bits / 2) % 2 == 1
local ignored = bits >= 4
local fth = tonumber(ARGV[6])
local sth = tonumber(ARGV[7])
local function hits(bad, n, th) return bad > 0 and n > 0 and bad / n >= th end
local function open(trips)
  local dur = tonumber(ARGV[9]) * tonumber(ARGV[10]) ^ (trips - 1)
  local cap = tonumber(ARGV[11])
  if dur > cap then dur = cap end
  dur = math.ceil(dur)
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  redis.call('HSET', KEYS[3], 'until', now + dur, 'ep', at, 'trips', trips,
    'issued', 0, 'done', 0, 'bad', 0, 'slow', 0, 'probe_at', 0)
  redis.call('PEXPIRE', KEYS[3], dur + tonumber(ARGV[14]))
  redis.call('PUBLISH', ARGV[15], at .. ' 1 ' .. at .. ' ' .. dur .. ' ' .. ARGV[16])
  return {1, at, dur, at, 1}
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  local s = redis.call('HMGET', KEYS[3], 'until', 'ep', 'trips', 'issued', 'done', 'bad', 'slow')
  local until_ms = tonumber(s[1])
  local ep = s[2]
  if now < until_ms then return {1, ep, until_ms - now, at, 0} end
  if ARGV[3] ~= ep then return {2, ep, 0, at, 0} end
  if ignored then
    if tonumber(s[4]) > tonumber(s[5]) then redis.call('HINCRBY', KEYS[3], 'issued', -1) end
    return {2, ep, 0, at, 0}
  end
  local done = redis.call('HINCRBY', KEYS[3], 'done', 1)
  local bad = tonumber(s[6])
  local sl = tonumber(s[7])
  if fail then bad = redis.call('HINCRBY', KEYS[3], 'bad', 1) end
  if slow then sl = redis.call('HINCRBY', KEYS[3], 'slow', 1) end
  if done < tonumber(ARGV[12]) then return {2, ep, 0, at, 0} end
  if hits(bad, done, fth) or hits(sl, done, sth) then
    return open(tonumber(s[3]) + 1)
  end
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  redis.call('PUBLISH', ARGV[15], at .. ' 0 ' .. ep .. ' 0 ' .. ARGV[16])
  return {0, ep, 0, at, 1}
end
if ignored then return {0, '0', 0, at, 0} end
local member = ARGV[1]
redis.call('RPUSH', KEYS[1], member .. '|' .. bits)
local c = redis.call('HINCRBY', KEYS[2], 'c', 1)
local f = tonumber(redis.call('HGET', KEYS[2], 'f') or '0')
local sl = tonumber(redis.call('HGET', KEYS[2], 's') or '0')
local procs = tonumber(redis.call('HGET', KEYS[2], 'p') or '0')
if fail then f = redis.call('HINCRBY', KEYS[2], 'f', 1) end
if slow then sl = redis.call('HINCRBY', KEYS[2], 's', 1) end
if fail or slow then
  if redis.call('HINCRBY', KEYS[2], 'b:' .. member, 1) == 1 then
    procs = redis.call('HINCRBY', KEYS[2], 'p', 1)
  end
end
local size = tonumber(ARGV[4])
local n = redis.call('LLEN', KEYS[1])
local k = 0
while n > size and k < 64 do
  local old = redis.call('LPOP', KEYS[1])
  n = n - 1
  k = k + 1
  local sep = string.find(old, '|', 1, true)
  local om = string.sub(old, 1, sep - 1)
  local ob = tonumber(string.sub(old, sep + 1))
  local of = ob % 2 == 1
  local os = math.floor(ob / 2) % 2 == 1
  c = redis.call('HINCRBY', KEYS[2], 'c', -1)
  if of then f = redis.call('HINCRBY', KEYS[2], 'f', -1) end
  if os then sl = redis.call('HINCRBY', KEYS[2], 's', -1) end
  if of or os then
    if redis.call('HINCRBY', KEYS[2], 'b:' .. om, -1) <= 0 then
      redis.call('HDEL', KEYS[2], 'b:' .. om)
      procs = redis.call('HINCRBY', KEYS[2], 'p', -1)
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[13])
redis.call('PEXPIRE', KEYS[2], ARGV[13])
if c >= tonumber(ARGV[5]) and procs >= tonumber(ARGV[8]) and (hits(f, c, fth) or hits(sl, c, sth)) then
  return open(1)
end
return {0, '0', 0, at, 0}
"#;

/// Shared breakers: claim one cluster-wide probe permit once the open period
/// has passed (at most `half_open_max_calls` out; a permit out longer than the
/// lease with none settled since is presumed lost and handed out again).
///
/// KEYS: the state hash. ARGV: half_open_max_calls, lease_ms. Returns
/// `{state, ep, left_ms, at_us, granted (0/1)}` as `BREAKER_OUTCOME`.
pub const BREAKER_PROBE: &str = r#"
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = math.floor(now_us / 1000)
local at = string.format('%.0f', now_us)
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, '0', 0, at, 0} end
local s = redis.call('HMGET', KEYS[1], 'until', 'ep', 'issued', 'done', 'probe_at')
local until_ms = tonumber(s[1])
if now < until_ms then return {1, s[2], until_ms - now, at, 0} end
local max = tonumber(ARGV[1])
local issued = tonumber(s[3])
local done = tonumber(s[4])
if issued >= max and now - tonumber(s[5]) > tonumber(ARGV[2]) then issued = done end
if issued < max then
  redis.call('HSET', KEYS[1], 'issued', issued + 1, 'probe_at', now)
  return {2, s[2], 0, at, 1}
end
return {2, s[2], 0, at, 0}
"#;

/// Shared breakers: the state of a deployment. KEYS: the state hash.
/// Returns `{state, ep, left_ms, at_us, 0}` as `BREAKER_OUTCOME`.
pub const BREAKER_STATE: &str = r#"
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = math.floor(now_us / 1000)
local at = string.format('%.0f', now_us)
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, '0', 0, at, 0} end
local s = redis.call('HMGET', KEYS[1], 'until', 'ep')
local until_ms = tonumber(s[1])
if now < until_ms then return {1, s[2], until_ms - now, at, 0} end
return {2, s[2], 0, at, 0}
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

/// Charge back what a process admitted from its local share while Redis was
/// away: advance each cell as a booking of `units` would, but never refuse
/// (it is debt), capped so a cell is at most one burst in debt (`tat` at most
/// `now + 2 * burst * interval`; a cell further booked is not moved). Applied
/// once per batch id: the marker key is set with the charge, so a batch sent
/// again (its reply lost) is a no-op.
///
/// KEYS: cells 1..n, then the batch's marker key. ARGV: n, marker_ttl_ms,
/// then per cell interval_us, burst, units. Returns `{1, charged units per
/// cell...}` (strings) when applied, `{0}` when this batch was applied before.
pub const CHARGE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local mark = KEYS[n + 1]
if redis.call('EXISTS', mark) == 1 then return {0} end
local out = {1}
for i = 1, n do
  local interval = tonumber(ARGV[3 * i])
  local burst = tonumber(ARGV[1 + 3 * i])
  local units = tonumber(ARGV[2 + 3 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local new_tat = tat + units * interval
  local cap = now + 2 * burst * interval
  if new_tat > cap then new_tat = cap end
  if new_tat < tat then new_tat = tat end
  if new_tat > now then
    redis.call('SET', KEYS[i], string.format('%.3f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
  end
  out[1 + i] = string.format('%.6f', (new_tat - tat) / interval)
end
redis.call('SET', mark, '1', 'PX', tonumber(ARGV[2]))
return out
"#;
