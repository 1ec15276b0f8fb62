-- ratelimit/sliding_window.lua: exact sliding-window LOG, a library chunk.
--
-- Joined in front of a script body (the gateway's claim/redeem scripts, ratelimit/limiter.lua),
-- so it only defines local functions: no KEYS/ARGV, no top-level return, no TIME. The caller
-- passes its clock; every time is an integer count of milliseconds. Arguments may be numbers
-- or numeric strings. Keys are built (and hash-tagged) by the caller.
--
-- A key is a Redis list of the admitted hits' timestamps (ms), oldest first. A hit at t is
-- inside the window at now_ms iff t > now_ms - window_ms. Hits a caller with a fast clock put
-- after now_ms still count: a limiter must not forget hits because clocks disagree.
--
-- sw_peek(key, limit, window_ms, now_ms) -> count, retry_after_ms
--   Drops the hits that have left the window (its only write) and returns:
--   count           hits still inside the window;
--   retry_after_ms  0 when count < limit; else the ms until enough old hits leave for count to
--                   drop below limit (>= 1). With count == limit that is the oldest hit.
--   A request is admitted iff count < limit; only an admitted request is then recorded.
--
-- sw_record(key, window_ms, now_ms) -> nothing
--   Appends one hit at max(now_ms, newest hit), so the list stays ordered when a caller's clock
--   steps back, and sets PEXPIRE to the ms until that hit leaves the window (window_ms when
--   clocks agree): the key never outlives its newest hit.

local function sw_peek(key, limit, window_ms, now_ms)
  limit, window_ms, now_ms = tonumber(limit), tonumber(window_ms), tonumber(now_ms)
  local horizon = now_ms - window_ms
  local oldest = redis.call('LINDEX', key, 0)
  while oldest and tonumber(oldest) <= horizon do
    redis.call('LPOP', key)
    oldest = redis.call('LINDEX', key, 0)
  end
  local count = redis.call('LLEN', key)
  if count < limit then
    return count, 0
  end
  -- count - limit + 1 hits must leave; the last of them sits at index count - limit.
  local freeing = tonumber(redis.call('LINDEX', key, count - limit))
  return count, freeing + window_ms - now_ms
end

local function sw_record(key, window_ms, now_ms)
  window_ms, now_ms = tonumber(window_ms), tonumber(now_ms)
  local at = now_ms
  local newest = redis.call('LINDEX', key, -1)
  if newest and tonumber(newest) > at then
    at = tonumber(newest)
  end
  redis.call('RPUSH', key, at)
  redis.call('PEXPIRE', key, at - now_ms + window_ms)
end
