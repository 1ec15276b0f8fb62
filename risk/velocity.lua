-- risk/velocity.lua: distinct-member counts over a sliding window, a library chunk.
--
-- Put after ratelimit/sliding_window.lua and in front of script bodies, so it only defines
-- local functions: no KEYS/ARGV, no top-level return, no TIME. The caller passes its clock;
-- every time is an integer count of milliseconds. Arguments may be numbers or numeric strings
-- (converted by arithmetic, `s + 0`, as in sliding_window.lua); member is a string. Keys are
-- built (and hash-tagged) by the caller.
--
-- A key is a sorted set member -> last-seen ms (e.g. the users seen on one device). A member is
-- inside the window at now_ms iff last_seen > now_ms - window_ms; members a caller with a fast
-- clock stamped after now_ms still count.
--
-- distinct_peek(key, member, window_ms, now_ms) -> count, is_new
--   Drops members that have left the window (its only write) and returns:
--   count   distinct members still inside the window;
--   is_new  1 if member is not among them, else 0 (recording it would make count + is_new).
--
-- distinct_record(key, member, window_ms, now_ms) -> nothing
--   Sets member's last-seen to max(now_ms, its last-seen) and sets PEXPIRE to the ms until the
--   newest member leaves the window (window_ms when clocks agree).

local function distinct_peek(key, member, window_ms, now_ms)
  window_ms, now_ms = window_ms + 0, now_ms + 0
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms - window_ms)
  local count = redis.call('ZCARD', key)
  if redis.call('ZSCORE', key, member) then
    return count, 0
  end
  return count, 1
end

local function distinct_record(key, member, window_ms, now_ms)
  window_ms, now_ms = window_ms + 0, now_ms + 0
  -- GT keeps a later last-seen a caller with a fast clock wrote. (RESP2 replies, the default.)
  redis.call('ZADD', key, 'GT', now_ms, member)
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2] + 0
  redis.call('PEXPIRE', key, math.max(newest, now_ms) - now_ms + window_ms)
end
