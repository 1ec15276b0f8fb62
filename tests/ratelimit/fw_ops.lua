-- tests/ratelimit/fw_ops.lua: one claimant's hit against limits kept in a field log.
-- KEYS[1] a hash whose field 'f' holds the counter "0" and a field_window.lua log. ARGV[1]
-- now_ms, then (limit, window_ms) pairs. As the claim script does: each limit checks the log
-- in turn, and the hit goes in only when every limit admits. Returns {retry_after_ms, the
-- refusing limit's 1-based index}, {0, 0} when admitted.
local now = ARGV[1] + 0
local n = (#ARGV - 1) / 2
local keep, longest = 0, 0
for i = 1, n do
  keep = math.max(keep, ARGV[2 * i] + 0)
  longest = math.max(longest, ARGV[2 * i + 1] + 0)
end
local counter, hits = fw_parse(redis.call('HGET', KEYS[1], 'f'))
for i = 1, n do
  local retry = fw_check(hits, ARGV[2 * i] + 0, ARGV[2 * i + 1] + 0, now)
  if retry > 0 then
    return {retry, i}
  end
end
redis.call('HSET', KEYS[1], 'f', fw_value(counter, hits, now, keep, longest))
return {0, 0}
