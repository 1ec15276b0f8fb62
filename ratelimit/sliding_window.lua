-- ratelimit/sliding_window.lua: exact sliding-window LOG, a library chunk.
--
-- Put in front of script bodies (the gateway's function library, ratelimit/limiter.lua's
-- script), so it only defines local functions: no KEYS/ARGV, no top-level return, no TIME. The caller
-- passes its clock; every time is an integer count of milliseconds. Arguments may be numbers
-- or numeric strings. Keys are built (and hash-tagged) by the caller. Strings become numbers by
-- arithmetic (`s + 0`), not tonumber(): Lua 5.1's tonumber parses a string twice, and these
-- functions run on every claim.
--
-- A key is a Redis list of the admitted hits' timestamps (ms), oldest first. A hit at t is
-- inside the window at now_ms iff t > now_ms - window_ms. Hits a caller with a fast clock put
-- after now_ms still count: a limiter must not forget hits because clocks disagree.
--
-- Trimming is lazy. The list holds every hit still inside the window, and maybe some that have
-- left it, so its length is an upper bound of the in-window count. A request is admitted iff
-- the in-window count is below the limit; a list shorter than the limit therefore admits as it
-- is, at the cost of one LLEN, and the expired hits are dropped only when the list is full
-- (a binary search for the first hit inside the window, then one LTRIM). A key so holds at most
-- about `limit` timestamps, and still disappears as a whole through its PEXPIRE.
--
-- The expiry moves in steps of an eighth of the window: a hit that opens a step sets the key to
-- live until the end of the next step plus the window, which covers every later hit of its
-- step by at least a step. A busy key (one IP behind a carrier NAT, say) so costs one PEXPIRE
-- per step instead of one per hit, and lives at most a quarter window past its newest hit.
--
-- sw_peek(key, limit, window_ms, now_ms[, trim_at]) -> count, retry_after_ms
--   count           the list's length after any trim; exact (the hits inside the window)
--                   whenever it is >= min(trim_at, limit), else an upper bound of them. trim_at
--                   defaults to limit; 0 always trims (an exact count, for callers that use it).
--   retry_after_ms  0 when count < limit; else the ms until enough old hits leave for count to
--                   drop below limit (>= 1). With count == limit that is the oldest hit.
--   A request is admitted iff count < limit; only an admitted request is then recorded.
--
-- sw_admit(key, limit, window_ms, now_ms[, newest]) -> count, retry_after_ms, newest
--   sw_peek, then sw_record when admitted, in fewer calls: the hit goes in first (RPUSH
--   answers the length sw_peek would read with LLEN) and is taken back out (RPOP) when the
--   log turns out full. Same answers, same log and same expiry as the pair. A caller with
--   several limits admits each in turn and, when one refuses, takes the hits it put in the
--   logs before back out with sw_unadmit(key): a refused request is recorded nowhere.
--   The third answer is the log's newest hit afterwards (false for an empty log). A caller
--   admitting several hits on one key in one call (a batch of claims from one address)
--   hands it back as `newest`, which saves reading the newest hit back (a LINDEX per hit);
--   after an sw_unadmit it must not, the newest hit it knew is gone.
--
-- sw_record(key, window_ms, now_ms[, count]) -> nothing
--   Appends one hit at max(now_ms, newest hit), so the list stays ordered when a caller's clock
--   steps back. When that hit opens a step (floor(at / step) differs from the newest hit's, or
--   the list was empty), sets PEXPIRE so the key lives until the end of the following step
--   plus the window, on the caller's clock: between window_ms and window_ms + 2 steps past
--   the hit. count is what sw_peek returned for this key earlier in the same call, if any: 0
--   means the list was empty, so the hit goes at now_ms without reading the newest one (every
--   hit this call added since is at now_ms).

-- Drops the hits at or before horizon from a list of n ordered hits; returns how many remain.
local function sw_trim(key, n, horizon)
  if n == 0 or redis.call('LINDEX', key, 0) + 0 > horizon then
    return n
  end
  -- Index lo is out of the window; hi is the first index known to be inside (or n).
  local lo, hi = 0, n
  while hi - lo > 1 do
    local mid = math.floor((lo + hi) / 2)
    if redis.call('LINDEX', key, mid) + 0 <= horizon then lo = mid else hi = mid end
  end
  redis.call('LTRIM', key, hi, -1) -- hi == n empties the list, and Redis drops the key
  return n - hi
end

-- The ms until a full log of count hits (count >= limit) admits again: count - limit + 1 hits
-- must leave, and the last of them sits at index count - limit.
local function sw_retry_after(key, count, limit, window_ms, now_ms)
  return redis.call('LINDEX', key, count - limit) + window_ms - now_ms
end

local function sw_peek(key, limit, window_ms, now_ms, trim_at)
  limit, window_ms, now_ms = limit + 0, window_ms + 0, now_ms + 0
  local count = redis.call('LLEN', key)
  if count < limit and (trim_at == nil or count < trim_at + 0) then
    return count, 0
  end
  count = sw_trim(key, count, now_ms - window_ms)
  if count < limit then
    return count, 0
  end
  return count, sw_retry_after(key, count, limit, window_ms, now_ms)
end

-- Moves the expiry of a log whose newest hit is `at`, when that hit opened a step (newest:
-- the hit before it, false for none).
local function sw_expire(key, window_ms, now_ms, at, newest)
  local step = math.ceil(window_ms / 8)
  local opened = math.floor(at / step)
  if not newest or math.floor(newest / step) ~= opened then
    redis.call('PEXPIRE', key, (opened + 2) * step - now_ms + window_ms)
  end
end

local function sw_record(key, window_ms, now_ms, count)
  window_ms, now_ms = window_ms + 0, now_ms + 0
  local at, newest = now_ms, false -- false: no newest hit (LINDEX's nil is false here too)
  if count == nil or count + 0 ~= 0 then
    newest = redis.call('LINDEX', key, -1)
    if newest then
      newest = newest + 0
      if newest > at then at = newest end
    end
  end
  redis.call('RPUSH', key, at)
  sw_expire(key, window_ms, now_ms, at, newest)
end

local function sw_admit(key, limit, window_ms, now_ms, newest)
  limit, window_ms, now_ms = limit + 0, window_ms + 0, now_ms + 0
  local at = now_ms
  if newest and newest > at then at = newest end -- known: the ordered value goes in at once
  local n = redis.call('RPUSH', key, at)
  if newest == nil then
    newest = false
    if n > 1 then
      newest = redis.call('LINDEX', key, -2) + 0
      if newest > at then -- a caller's clock stepped back: the log stays ordered
        at = newest
        redis.call('LSET', key, -1, at)
      end
    end
  end
  local count = n - 1 -- the hits before this one; an upper bound until a trim
  if count >= limit then
    count = sw_trim(key, n, now_ms - window_ms) - 1 -- this hit is inside, never trimmed
    if count >= limit then
      redis.call('RPOP', key)
      return count, sw_retry_after(key, count, limit, window_ms, now_ms), newest
    end
  end
  sw_expire(key, window_ms, now_ms, at, newest)
  return count, 0, at
end

local function sw_unadmit(key)
  redis.call('RPOP', key)
end
