-- ratelimit/coarse_window.lua: a sliding-window log of GROUPS of hits, a library chunk, for
-- limits too large to log every hit. Defines local functions only (no KEYS/ARGV, no return);
-- times are integer ms on the caller's clock; numeric strings become numbers by `s + 0`.
--
-- A key is a Redis list: the start time of each group of `group` admitted hits, oldest first,
-- then one last element "c:s": how many hits the newest group holds (1..group) and the expiry
-- step it last set. Every group but the newest holds exactly `group` hits.
-- cw_admit(key, limit, window_ms, now_ms, group) -> count, retry_after_ms
--   count: the hits counted before this one, every group still reaching into the window
--   (a group reaches in while the next group starts after now_ms - window_ms). Admitted iff
--   count < limit; then recorded, else retry_after_ms (>= 1) is when the oldest group leaves.
--   Bounds: at most `limit` admitted in any window, exactly; never refused while fewer than
--   limit - group lie in the window (only the oldest group may hold hits from before it).
-- cw_unadmit(key, group): takes back the hit cw_admit just recorded (another limit refused).

local function cw_tail(key)
  local tail = redis.call('LINDEX', key, -1)
  local c, step = string.match(tail, '^(%d+):(%d+)$')
  return c + 0, step + 0
end

local function cw_admit(key, limit, window_ms, now_ms, group)
  limit, window_ms, now_ms, group = limit + 0, window_ms + 0, now_ms + 0, group + 0
  local step = math.ceil(window_ms / 8)
  local n = redis.call('LLEN', key)
  if n == 0 then
    redis.call('RPUSH', key, now_ms, '1:' .. math.floor(now_ms / step))
    redis.call('PEXPIRE', key, (math.floor(now_ms / step) + 2) * step - now_ms + window_ms)
    return 0, 0
  end
  local groups = n - 1
  while groups >= 2 and redis.call('LINDEX', key, 1) + 0 <= now_ms - window_ms do
    redis.call('LPOP', key)
    groups = groups - 1
  end
  local c, expiry_step = cw_tail(key)
  local count = (groups - 1) * group + c
  if count >= limit then
    return count, redis.call('LINDEX', key, 1) + window_ms - now_ms
  end
  local opened = math.floor(now_ms / step)
  if opened > expiry_step then -- the key lives a window past its newest hit, moved per step
    redis.call('PEXPIRE', key, (opened + 2) * step - now_ms + window_ms)
    expiry_step = opened
  end
  if c < group then
    redis.call('LSET', key, -1, (c + 1) .. ':' .. expiry_step)
  else -- the newest group is full: a new one starts (never before the last, if clocks step back)
    local newest = redis.call('LINDEX', key, -2) + 0
    redis.call('LSET', key, -1, math.max(now_ms, newest))
    redis.call('RPUSH', key, '1:' .. expiry_step)
  end
  return count, 0
end

local function cw_unadmit(key, group)
  local c, expiry_step = cw_tail(key)
  if c > 1 then
    redis.call('LSET', key, -1, (c - 1) .. ':' .. expiry_step)
  elseif redis.call('LLEN', key) == 2 then
    redis.call('DEL', key)
  else
    redis.call('RPOP', key)
    redis.call('LSET', key, -1, group .. ':' .. expiry_step)
  end
end
