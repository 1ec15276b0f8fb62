-- tests/risk/distinct_ops.lua: exposes the velocity.lua functions one call at a time.
-- KEYS[1] the set; ARGV[1] op ('peek' | 'record' | 'hit'), ARGV[2] member, ARGV[3] window_ms,
-- ARGV[4] now_ms. Returns {count, is_new} for peek and hit ('hit' records after peeking),
-- {} for record.
local op, member, window_ms, now_ms = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if op == 'record' then
  distinct_record(KEYS[1], member, window_ms, now_ms)
  return {}
end
local count, is_new = distinct_peek(KEYS[1], member, window_ms, now_ms)
if op == 'hit' then
  distinct_record(KEYS[1], member, window_ms, now_ms)
end
return {count, is_new}
