-- ratelimit/limiter.lua: body of SlidingWindowLimiter's script, run after sliding_window.lua.
--
-- KEYS[i]                  the sliding-window log of limit i (i = 1..n)
-- ARGV[1]                  now_ms, the caller's clock (integer ms)
-- ARGV[2i], ARGV[2i + 1]   limit and window_ms of KEYS[i]
-- Checks every limit before any record (Lua does not roll back); records one hit in every log
-- only when all admit, so a rejected request costs no quota.
-- Returns {allowed, index, remaining, retry_after_ms}:
--   allowed = 1: index is the limit with the fewest hits left after this one (remaining >= 0),
--                retry_after_ms = 0;
--   allowed = 0: index is the blocking limit that frees last, remaining = 0,
--                retry_after_ms >= 1 is when every blocking limit admits again.
-- Ties pick the lowest index. The keys must be distinct (one log is recorded once).
-- Every peek trims (trim_at 0), so each count is exact and `remaining` with it.

local now_ms = tonumber(ARGV[1])
local counts = {}
local pick, retry_after_ms = 0, 0
for i, key in ipairs(KEYS) do
  local count, wait = sw_peek(key, ARGV[2 * i], ARGV[2 * i + 1], now_ms, 0)
  counts[i] = count
  if wait > retry_after_ms then
    pick, retry_after_ms = i, wait
  end
end
if pick > 0 then
  return {0, pick, 0, retry_after_ms}
end

local remaining = -1
for i, key in ipairs(KEYS) do
  sw_record(key, ARGV[2 * i + 1], now_ms, counts[i])
  local left = tonumber(ARGV[2 * i]) - counts[i] - 1
  if remaining < 0 or left < remaining then
    pick, remaining = i, left
  end
end
return {1, pick, remaining, 0}
