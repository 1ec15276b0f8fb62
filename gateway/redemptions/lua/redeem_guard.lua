-- redeem_guard.lua: the redeem route's defences, before any voucher is looked at.
-- Joined after ratelimit/sliding_window.lua and coarse_window.lua; every key shares the guard
-- tag {rg}.
-- KEYS[1] nonce key (unused unless ARGV[3] == '1')   KEYS[2] event stream
--   KEYS[3 .. 2+L] a sliding-window key per limit   KEYS[3+L .. 2+L+R] a failure log per rule
--   KEYS[3+L+R] the challenge pass's nonce key (only when ARGV[15] == '1')
-- ARGV[1] now (ms)  [2] mode  [3] '1' to spend the nonce  [4] nonce and pass ttl (ms)
--   [5] L  [6] R  [7] now as RFC 3339  [8] stream max length  [9] user id  [10] device id  [11] ip
--   [12] request id  [13] client id  [14] claim id of the code tried ('' if malformed)
--   [15] '1' to lift a challenge (never a deny) by spending the pass (SET NX: once)
--   then L triples (limit, window ms, group: 1 for the exact log, else a coarse log's), R tuples (rule id, threshold, window ms, effect
--   'deny'|'challenge'|'shadow'), and for 'refund' the R entries a check wrote.
-- Modes: 'check' (a suspected guesser's attempt is counted now, provisionally), 'check_fail'
--   (check, then count one failure), 'fail' (count one failure), 'refund' (take it back).
-- Returns {outcome, a, b, fired, retries, written}: 0 go on, written = failure entries counted
--   now; 3 nonce spent; 5 rate limited, a = limit index, b = retry (ms); 6 locked out, b = retry
--   (ms); 7 challenge. fired: 1-based indexes of the rules hit; retries[k]: ms until fired[k]
--   stops denying, 0 if it does not deny.

local now = tonumber(ARGV[1])
local mode = ARGV[2]
local L, R = tonumber(ARGV[5]), tonumber(ARGV[6])
local limit_base = 16
local rule_base = limit_base + L * 3

local function emit(kind, extra)
  local fields = {'type', kind, 'ts', ARGV[7], 'campaign_id', '', 'user_id', ARGV[9],
                  'device_id', ARGV[10], 'ip', ARGV[11], 'request_id', ARGV[12],
                  'client_id', ARGV[13], 'claim_id', ARGV[14]}
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

local limit_counts, coarse_logs = {}, {}
for i = 1, L do
  local o = limit_base + (i - 1) * 3
  local key, limit, window, group = KEYS[2 + i], tonumber(ARGV[o]), ARGV[o + 1], ARGV[o + 2]
  local count, retry
  if group == '1' then
    count, retry = sw_peek(key, limit, tonumber(window), now)
  else
    count, retry, coarse_logs[i] = cw_peek(key, limit, window, now, group, cw_log(key))
  end
  if count >= limit then
    for j = 1, i do
      if coarse_logs[j] then cw_flush(KEYS[2 + j], coarse_logs[j]) end
    end
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

-- One event per mode: an event's decision is then every one of its rules' mode.
local enforced, shadow = {}, {}
for i = 1, #fired do
  local o = rule_base + (fired[i] - 1) * 4
  local ids = ARGV[o + 3] == 'shadow' and shadow or enforced
  ids[#ids + 1] = ARGV[o]
end
if #enforced > 0 then
  emit('risk.hit', {'rules', table.concat(enforced, ','), 'decision',
                    blocking == 6 and 'deny' or 'challenge'})
end
if #shadow > 0 then
  emit('risk.hit', {'rules', table.concat(shadow, ','), 'decision', 'shadow'})
end
if blocking == 7 and ARGV[15] == '1' and
   redis.call('SET', KEYS[3 + L + R], '1', 'NX', 'PX', ARGV[4]) then
  blocking = 0
  local lifted = {}
  for i = 1, #fired do
    local o = rule_base + (fired[i] - 1) * 4
    if ARGV[o + 3] == 'challenge' then lifted[#lifted + 1] = ARGV[o] end
  end
  emit('risk.challenge_passed', {'rules', table.concat(lifted, ',')})
end
for i = 1, L do
  local o = limit_base + (i - 1) * 3
  if coarse_logs[i] then
    if blocking == 0 then
      cw_admit(KEYS[2 + i], ARGV[o], ARGV[o + 1], now, ARGV[o + 2], coarse_logs[i])
    end
    cw_flush(KEYS[2 + i], coarse_logs[i])
  elseif blocking == 0 then
    sw_record(KEYS[2 + i], tonumber(ARGV[o + 1]), now, limit_counts[i])
  end
end
if blocking ~= 0 then
  return {blocking, 0, retry_ms, fired, retries, {}}
end
if suspected then
  return {0, 0, 0, fired, retries, count_failure()}
end
return {0, 0, 0, fired, retries, {}}
