-- ratelimit/field_window.lua: a small sliding-window log kept in a string, a library chunk.
--
-- For limits counted per identity whose caller already reads and writes one hash field per
-- identity in the same call (the claim script's allowance fields): the log rides in that
-- field, so the limit costs no Redis call of its own, where a list log (sliding_window.lua)
-- costs an RPUSH and a LINDEX per hit and a key per identity. Only small limits fit: the
-- caller keeps a log here when every limit of the dimension is at most a few dozen hits.
--
-- The string is a counter of the caller's, then the hits in ms, oldest first, comma
-- separated: "2" or "2,1700000000123,1700000004567". The decisions are the list log's: a hit
-- at t is inside the window at now_ms iff t > now_ms - window_ms; a request is admitted iff
-- fewer than `limit` hits lie inside; a hit goes at max(now_ms, newest hit), so the log stays
-- ordered when a caller's clock steps back; the retry-after of a full log is the ms until
-- the hit that frees a slot leaves. One log serves every limit of its dimension: it keeps the
-- hits inside the longest window, at most as many as the largest limit, which are all any of
-- them can need. A hit leaves the log FW_SKEW_MS after it left the longest window on the
-- writer's clock, so a caller whose clock is up to that much behind still counts it, as it
-- would in a list log. Pure functions: no redis.call, the caller reads and writes the field.
--
-- fw_parse(value) -> counter, hits   value may be false/nil (no field): 0 and no hits. hits
--                                    is a table of numbers; treat it as read-only.
-- fw_check(hits, limit, window_ms, now_ms) -> retry_after_ms, 0 when the hit is admitted.
-- fw_value(counter, hits, now_ms, keep, longest_ms) -> the string holding `counter` and the
--                                    log with this hit added: the newest `keep` hits inside
--                                    `longest_ms` (the caller's largest limit and window),
--                                    give or take FW_SKEW_MS.

local FW_NO_HITS = {}
local FW_SKEW_MS = 1000

local function fw_parse(value)
  if not value then
    return 0, FW_NO_HITS
  end
  local comma = string.find(value, ',', 1, true)
  if not comma then
    return value + 0, FW_NO_HITS
  end
  local hits = {}
  for t in string.gmatch(string.sub(value, comma + 1), '%d+') do
    hits[#hits + 1] = t + 0
  end
  return string.sub(value, 1, comma - 1) + 0, hits
end

local function fw_check(hits, limit, window_ms, now_ms)
  local n = #hits
  if n < limit then
    return 0
  end
  -- The log is ordered, so the hit `limit` places from the newest decides: inside the window,
  -- `limit` hits are, and the request waits until it leaves.
  local deciding = hits[n - limit + 1]
  if deciding <= now_ms - window_ms then
    return 0
  end
  return deciding + window_ms - now_ms
end

local function fw_value(counter, hits, now_ms, keep, longest_ms)
  local n = #hits
  local at = now_ms
  if n > 0 and hits[n] > at then
    at = hits[n]
  end
  local first = n - keep + 2 -- the newest keep - 1 hits, and this one
  if first < 1 then
    first = 1
  end
  local horizon = now_ms - longest_ms - FW_SKEW_MS
  while first <= n and hits[first] <= horizon do
    first = first + 1
  end
  if first > n then -- no earlier hit kept (a claimant's first claim): the common case
    return string.format('%d,%d', counter, at)
  end
  local parts = {string.format('%d', counter)}
  for i = first, n do
    parts[#parts + 1] = string.format('%d', hits[i])
  end
  parts[#parts + 1] = string.format('%d', at)
  return table.concat(parts, ',')
end
