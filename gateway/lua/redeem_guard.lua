-- redeem_guard.lua: the redeem route's defences, before any voucher is looked at.
-- Joined after ratelimit/sliding_window.lua. Every key shares the guard tag {rg}, so failed
-- attempts from one IP or device are counted in one place whatever codes they guess.
--
-- KEYS[1] nonce key (unused unless ARGV[3] == '1')   KEYS[2] event stream
-- KEYS[3 .. 2+L]       one sliding-window key per redeem-route limit
-- KEYS[3+L .. 2+L+R]   one failure log per failed-redemption rule
--
-- ARGV[1] now (ms)   ARGV[2] mode: 'check' | 'check_fail' (check, then count one failure:
--         a code refused locally) | 'fail' (only count one failure: an unknown or foreign code)
-- ARGV[3] '1' to spend the nonce   ARGV[4] nonce ttl (ms)   ARGV[5] L   ARGV[6] R
-- ARGV[7] now as RFC 3339   ARGV[8] stream max length
-- ARGV[9] user id  ARGV[10] device id  ARGV[11] ip  ARGV[12] request id  ARGV[13] client id
-- then L pairs  (limit, window ms)
-- then R tuples (rule id, threshold, window ms, effect 'deny'|'challenge'|'shadow')
--
-- Returns {outcome, a, b, fired}: fired lists the 1-based indexes of rules that hit.
--   0 go on   3 nonce already spent   5 rate limited: a = limit index, b = retry after (ms)
--   6 locked out (deny): b = retry after (ms)   7 challenge required

local now = tonumber(ARGV[1])
local mode = ARGV[2]
local L, R = tonumber(ARGV[5]), tonumber(ARGV[6])
local limit_base = 14
local rule_base = limit_base + L * 2

local function emit(kind, extra)
  local fields = {'type', kind, 'ts', ARGV[7], 'campaign_id', '', 'user_id', ARGV[9],
                  'device_id', ARGV[10], 'ip', ARGV[11], 'request_id', ARGV[12],
                  'client_id', ARGV[13]}
  for i = 1, #extra do fields[#fields + 1] = extra[i] end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', unpack(fields))
end

local function count_failure()
  for r = 1, R do
    sw_record(KEYS[2 + L + r], tonumber(ARGV[rule_base + (r - 1) * 4 + 2]), now)
  end
end

if mode == 'fail' then
  count_failure()
  return {0, 0, 0, {}}
end

if ARGV[3] == '1' then
  if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[4]) then
    return {3, 0, 0, {}}
  end
end

for i = 1, L do
  local o = limit_base + (i - 1) * 2
  local count, retry = sw_peek(KEYS[2 + i], tonumber(ARGV[o]), tonumber(ARGV[o + 1]), now)
  if count >= tonumber(ARGV[o]) then
    return {5, i, retry, {}}
  end
end

local fired, blocking, retry_ms = {}, 0, 0
for r = 1, R do
  local o = rule_base + (r - 1) * 4
  local threshold = tonumber(ARGV[o + 1])
  local count, retry = sw_peek(KEYS[2 + L + r], threshold, tonumber(ARGV[o + 2]), now)
  if count >= threshold then
    fired[#fired + 1] = r
    if ARGV[o + 3] == 'deny' then
      blocking, retry_ms = 6, math.max(retry_ms, retry)
    elseif ARGV[o + 3] == 'challenge' and blocking == 0 then
      blocking = 7
    end
  end
end

if #fired > 0 then
  local ids = {}
  for i = 1, #fired do ids[i] = ARGV[rule_base + (fired[i] - 1) * 4] end
  emit('risk.hit', {'rules', table.concat(ids, ','), 'decision',
                    blocking == 6 and 'deny' or (blocking == 7 and 'challenge' or 'shadow')})
end
if blocking ~= 0 then
  return {blocking, 0, retry_ms, fired}
end

for i = 1, L do
  sw_record(KEYS[2 + i], tonumber(ARGV[limit_base + (i - 1) * 2 + 1]), now)
end
if mode == 'check_fail' then
  count_failure()
end
return {0, 0, 0, fired}
