-- redeem_guard.lua: the redeem route's defences, before any voucher is looked at.
-- Joined after ratelimit/sliding_window.lua. Every key shares the guard tag {rg}, so failed
-- attempts from one IP or device are counted in one place whatever codes they guess.
--
-- KEYS[1] nonce key (unused unless ARGV[3] == '1')   KEYS[2] event stream
-- KEYS[3 .. 2+L]       one sliding-window key per redeem-route limit
-- KEYS[3+L .. 2+L+R]   one failure log per failed-redemption rule
--
-- ARGV[1] now (ms)   ARGV[2] mode:
--   'check'      check; an identity already at half a rule's threshold (a suspected guesser)
--                also has this attempt counted as a failure now, provisionally, so concurrent
--                guesses can never all pass the check before any is counted;
--   'check_fail' check, then count one failure (a code refused locally);
--   'fail'       count one failure (an unknown or foreign code not counted provisionally);
--   'refund'     the voucher was real: take back the provisional failure (ARGV after the rule
--                tuples: the entry recorded in each failure log).
-- ARGV[3] '1' to spend the nonce   ARGV[4] nonce ttl (ms)   ARGV[5] L   ARGV[6] R
-- ARGV[7] now as RFC 3339   ARGV[8] stream max length
-- ARGV[9] user id  ARGV[10] device id  ARGV[11] ip  ARGV[12] request id  ARGV[13] client id
-- then L pairs  (limit, window ms)
-- then R tuples (rule id, threshold, window ms, effect 'deny'|'challenge'|'shadow')
--
-- Returns {outcome, a, b, fired, retries, written}: written (outcome 0) the failure entries
-- recorded now, one per failure log (empty when nothing was counted yet); fired lists the 1-based indexes of rules that hit,
-- retries[k] the ms until fired[k] stops firing if it denies, else 0 (a caller remembering a
-- lockout keeps each rule's key for its own time, never another rule's longer one).
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

-- Records one failure in every failure log; returns the entry written in each (for a refund).
local function count_failure()
  local written = {}
  for r = 1, R do
    local key = KEYS[2 + L + r]
    local newest = tonumber(redis.call('LINDEX', key, -1) or '0')
    sw_record(key, tonumber(ARGV[rule_base + (r - 1) * 4 + 2]), now)
    written[r] = tostring(math.max(now, newest))
  end
  return written
end

if mode == 'fail' then
  count_failure()
  return {0, 0, 0, {}, {}, {}}
end

if mode == 'refund' then
  for r = 1, R do
    redis.call('LREM', KEYS[2 + L + r], -1, ARGV[rule_base + R * 4 + r - 1])
  end
  return {0, 0, 0, {}, {}, {}}
end

if ARGV[3] == '1' then
  if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[4]) then
    return {3, 0, 0, {}, {}, {}}
  end
end

local limit_counts = {}
for i = 1, L do
  local o = limit_base + (i - 1) * 2
  local count, retry = sw_peek(KEYS[2 + i], tonumber(ARGV[o]), tonumber(ARGV[o + 1]), now)
  if count >= tonumber(ARGV[o]) then
    return {5, i, retry, {}, {}, {}}
  end
  limit_counts[i] = count
end

local fired, retries, blocking, retry_ms = {}, {}, 0, 0
local suspected = mode == 'check_fail'
for r = 1, R do
  local o = rule_base + (r - 1) * 4
  local threshold = tonumber(ARGV[o + 1])
  -- Trimmed from half the threshold up, so the count is exact wherever the test below reads it.
  local count, retry = sw_peek(KEYS[2 + L + r], threshold, tonumber(ARGV[o + 2]), now,
                               math.ceil(threshold / 2))
  if count * 2 >= threshold then suspected = true end
  if count >= threshold then
    fired[#fired + 1] = r
    retries[#fired] = 0
    if ARGV[o + 3] == 'deny' then
      blocking, retry_ms = 6, math.max(retry_ms, retry)
      retries[#fired] = retry
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
  return {blocking, 0, retry_ms, fired, retries, {}}
end

for i = 1, L do
  sw_record(KEYS[2 + i], tonumber(ARGV[limit_base + (i - 1) * 2 + 1]), now, limit_counts[i])
end
if suspected then
  return {0, 0, 0, fired, retries, count_failure()}
end
return {0, 0, 0, fired, retries, {}}
