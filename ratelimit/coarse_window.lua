-- ratelimit/coarse_window.lua: a sliding-window log of GROUPS of hits, a library chunk, for
-- limits too large to log every hit. Defines local functions only (no KEYS/ARGV, no return);
-- times are integer ms on the caller's clock; numeric strings become numbers by `s + 0`.
--
-- A key is a Redis list: the start time of each group of `group` admitted hits, oldest first,
-- then one last element, the tail "c:s:g:t": how many hits the newest group holds (1..group),
-- the expiry step it last set, how many groups the list holds and the second group's start
-- ('' while there is one group), so one LINDEX reads all a hit needs. Every group but the
-- newest holds exactly `group` hits.
-- cw_admit(key, limit, window_ms, now_ms, group) -> count, retry_after_ms
--   count: the hits counted before this one, every group still reaching into the window
--   (a group reaches in while the next group starts after now_ms - window_ms). Admitted iff
--   count < limit; then recorded, else retry_after_ms (>= 1) is when the oldest group leaves.
--   Bounds: at most `limit` admitted in any window, exactly; never refused while fewer than
--   limit - group lie in the window (only the oldest group may hold hits from before it).
-- cw_peek(key, limit, window_ms, now_ms, group) -> count, retry_after_ms: cw_admit's answer
--   without recording the hit (a caller checking every limit before it records any).
-- cw_unadmit(key, group): takes back the hit cw_admit just recorded (another limit refused).
-- A caller admitting many hits on one key in one call (the claim function's batch) reads the
-- key once, log = cw_log(key), passes it to every cw_admit(key, limit, window_ms, now_ms,
-- group, log) and cw_unadmit(key, group, log) of the call, then writes what they left
-- pending with cw_flush(key, log) before the call ends: a hit then costs no command but the
-- rare LPOP, PEXPIRE or new group, where alone it costs a LINDEX and an LSET. Same answers,
-- same list and same expiry as one hit at a time. Without a log each function reads the key
-- and writes at once.

-- The tail's text (string.format: numbers concatenated are printed as floats, far dearer).
local function cw_tail_text(log)
  if log.second then
    return string.format('%d:%d:%d:%d', log.c, log.step, log.groups, log.second)
  end
  return string.format('%d:%d:%d:', log.c, log.step, log.groups)
end

-- The key's log, read from its tail: its groups, the second group's start (false: none), the
-- newest group's hit count, expiry step and start (false: not read yet), and whether the tail
-- awaits its LSET.
local function cw_log(key)
  local tail = redis.call('LINDEX', key, -1)
  if not tail then
    return {groups = 0, second = false, c = 0, step = 0, newest = false, pending = false}
  end
  local c, step, groups, second = string.match(tail, '^(%d+):(%d+):(%d+):(%d*)$')
  return {groups = groups + 0, second = second ~= '' and second + 0, c = c + 0,
          step = step + 0, newest = false, pending = false}
end

local function cw_flush(key, log)
  if log.pending then
    redis.call('LSET', key, -1, cw_tail_text(log))
    log.pending = false
  end
end

-- Drops the groups wholly out of the window; answers the hits counted and, at the limit, the
-- ms until the oldest group leaves (else 0). Reads only the second group's start per drop.
local function cw_count(key, limit, window_ms, now_ms, group, log)
  while log.second and log.second <= now_ms - window_ms do
    redis.call('LPOP', key)
    log.groups = log.groups - 1
    log.second = log.groups >= 2 and redis.call('LINDEX', key, 1) + 0
    log.pending = true
  end
  local count = log.groups == 0 and 0 or (log.groups - 1) * group + log.c
  if count >= limit then
    return count, log.second + window_ms - now_ms
  end
  return count, 0
end

-- cw_admit without the admission: what a hit now would count, trimming as cw_admit does.
local function cw_peek(key, limit, window_ms, now_ms, group, log)
  limit, window_ms, now_ms, group = limit + 0, window_ms + 0, now_ms + 0, group + 0
  local alone = not log
  log = log or cw_log(key)
  local count, retry = cw_count(key, limit, window_ms, now_ms, group, log)
  if alone then cw_flush(key, log) end
  return count, retry, log
end

local function cw_admit(key, limit, window_ms, now_ms, group, log)
  limit, window_ms, now_ms, group = limit + 0, window_ms + 0, now_ms + 0, group + 0
  local alone = not log
  log = log or cw_log(key)
  local step = math.ceil(window_ms / 8)
  if log.groups == 0 then
    local opened = math.floor(now_ms / step)
    log.groups, log.second, log.c, log.step, log.newest = 1, false, 1, opened, now_ms
    redis.call('RPUSH', key, now_ms, cw_tail_text(log))
    redis.call('PEXPIRE', key, (opened + 2) * step - now_ms + window_ms)
    return 0, 0, log
  end
  local count, retry = cw_count(key, limit, window_ms, now_ms, group, log)
  if retry > 0 then
    if alone then cw_flush(key, log) end
    return count, retry, log
  end
  local opened = math.floor(now_ms / step)
  if opened > log.step then -- the key lives a window past its newest hit, moved per step
    redis.call('PEXPIRE', key, (opened + 2) * step - now_ms + window_ms)
    log.step, log.pending = opened, true
  end
  if log.c < group then
    log.c, log.pending = log.c + 1, true
  else -- the newest group is full: a new one starts (never before the last, if clocks step back)
    local start = math.max(now_ms, log.newest or redis.call('LINDEX', key, -2) + 0)
    log.groups, log.c, log.newest, log.pending = log.groups + 1, 1, start, false
    if log.groups == 2 then log.second = start end
    redis.call('LSET', key, -1, start)
    redis.call('RPUSH', key, cw_tail_text(log))
  end
  if alone then cw_flush(key, log) end
  return count, 0, log
end

local function cw_unadmit(key, group, log)
  group = group + 0
  local alone = not log
  log = log or cw_log(key)
  if log.c > 1 then
    log.c, log.pending = log.c - 1, true
  elseif log.groups == 1 then
    redis.call('DEL', key)
    log.groups, log.c, log.newest, log.pending = 0, 0, false, false
  else
    log.groups, log.c, log.newest, log.pending = log.groups - 1, group, false, false
    if log.groups < 2 then log.second = false end
    redis.call('RPOP', key)
    redis.call('LSET', key, -1, cw_tail_text(log))
  end
  if alone then cw_flush(key, log) end
end
