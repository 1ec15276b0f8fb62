-- claim.lua: decide one claim in one atomic step.
-- Joined after ratelimit/sliding_window.lua (sw_peek, sw_record) and risk/velocity.lua
-- (distinct_peek, distinct_record) by gateway/scripts.py. Every key shares the campaign's tag.
--
-- KEYS[1] campaign hash            KEYS[2] rejections-by-code hash
-- KEYS[3] allowances hash: grants so far, field 'u:<user id>' and 'd:<device id>'
-- KEYS[4] idempotency record       KEYS[5] voucher (the code offered if granted)
-- KEYS[6] event stream             KEYS[7] nonce key (unused unless ARGV[13] == '1')
-- KEYS[8 .. 7+L]        one sliding-window key per configured limit
-- KEYS[8+L .. 7+L+R]    one counter key per velocity rule
--
-- ARGV[1] now (ms)          ARGV[2] request fingerprint   ARGV[3] voucher code
-- ARGV[4] claim id          ARGV[5] masked code           ARGV[6] campaign id
-- ARGV[7] user id           ARGV[8] device id             ARGV[9] ip
-- ARGV[10] request id       ARGV[11] client id            ARGV[12] idempotency ttl (s)
-- ARGV[13] '1' to spend the nonce   ARGV[14] nonce ttl (ms)   ARGV[15] stream max length
-- ARGV[16] L   ARGV[17] R   ARGV[18] now as RFC 3339 text
-- then L pairs  (limit, window ms)
-- then R tuples (rule id, kind 'count'|'distinct', threshold, window ms, member,
--                 effect 'deny'|'challenge'|'shadow')
--
-- Returns {outcome, a, b, fired}: fired lists the 1-based indexes of velocity rules that hit.
--   0 granted          a = voucher expiry (ms), b = stock left
--   1 replay           a = the stored record "fp \31 outcome \31 ..."
--   2 key reused with another body      3 nonce already spent
--   4 campaign not found                5 rate limited: a = limit index, b = retry after (ms)
--   6 risk denied      7 challenge required
--   8 campaign not active   9 limit reached   10 sold out
-- Stored for replay: 0, 8, 9, 10. Everything after the nonce check reads before it writes.
-- The grant writes counters as values read earlier in this call (HSET, not HINCRBY): the
-- script is atomic, so nothing moves them in between, and it saves a command per counter.

local now = tonumber(ARGV[1])
local L = tonumber(ARGV[16])
local R = tonumber(ARGV[17])
local SEP = '\31'

if ARGV[13] == '1' then
  if not redis.call('SET', KEYS[7], '1', 'NX', 'PX', ARGV[14]) then
    return {3, 0, 0, {}}
  end
end

local record = redis.call('GET', KEYS[4])
if record then
  if string.sub(record, 1, #ARGV[2]) ~= ARGV[2] then
    return {2, 0, 0, {}}
  end
  return {1, record, 0, {}}
end

local c = redis.call('HMGET', KEYS[1], 'starts_ms', 'ends_ms', 'paused', 'stock_left',
                     'per_user_limit', 'per_device_limit', 'voucher_ttl_s', 'granted')
if not c[1] then
  return {4, 0, 0, {}}
end

local function emit(kind, extra)
  local fields = {'type', kind, 'ts', ARGV[18], 'campaign_id', ARGV[6], 'user_id', ARGV[7],
                  'device_id', ARGV[8], 'ip', ARGV[9], 'request_id', ARGV[10],
                  'client_id', ARGV[11]}
  for i = 1, #extra do fields[#fields + 1] = extra[i] end
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[15], '*', unpack(fields))
end

local function reject(outcome, code, a, b, fired)
  redis.call('HINCRBY', KEYS[2], code, 1)
  emit('claim.rejected', {'code', code})
  return {outcome, a or 0, b or 0, fired or {}}
end

-- Limits: every one is checked before any is recorded. counts[k] is what sw_peek saw in the
-- k-th sliding-window key (limits, then count rules), handed to sw_record.
local limit_base = 19
local counts = {}
for i = 1, L do
  local o = limit_base + (i - 1) * 2
  local count, retry = sw_peek(KEYS[7 + i], tonumber(ARGV[o]), tonumber(ARGV[o + 1]), now)
  if count >= tonumber(ARGV[o]) then
    return reject(5, 'rate_limited', i, retry)
  end
  counts[i] = count
end

local function record_limits()
  for i = 1, L do
    sw_record(KEYS[7 + i], tonumber(ARGV[limit_base + (i - 1) * 2 + 1]), now, counts[i])
  end
end

-- Velocity rules: find every hit; the strongest enforced effect decides.
local rule_base = limit_base + L * 2
local fired = {}
local blocking = 0
for r = 1, R do
  local o = rule_base + (r - 1) * 6
  local key, threshold, window = KEYS[7 + L + r], tonumber(ARGV[o + 2]), tonumber(ARGV[o + 3])
  local hit
  if ARGV[o + 1] == 'count' then
    counts[L + r] = sw_peek(key, threshold, window, now)
    hit = counts[L + r] >= threshold
  else
    local count, is_new = distinct_peek(key, ARGV[o + 4], window, now)
    hit = is_new == 1 and count >= threshold
  end
  if hit then
    fired[#fired + 1] = r
    if ARGV[o + 5] == 'deny' then blocking = 6
    elseif ARGV[o + 5] == 'challenge' and blocking == 0 then blocking = 7 end
  end
end

if #fired > 0 then
  local ids = {}
  for i = 1, #fired do ids[i] = ARGV[rule_base + (fired[i] - 1) * 6] end
  emit('risk.hit', {'rules', table.concat(ids, ','),
                    'decision', blocking == 6 and 'deny' or (blocking == 7 and 'challenge' or 'shadow')})
end

record_limits()
if blocking ~= 0 then
  return reject(blocking, blocking == 6 and 'risk_denied' or 'challenge_required', 0, 0, fired)
end

for r = 1, R do
  local o = rule_base + (r - 1) * 6
  if ARGV[o + 1] == 'count' then
    sw_record(KEYS[7 + L + r], tonumber(ARGV[o + 3]), now, counts[L + r])
  else
    distinct_record(KEYS[7 + L + r], ARGV[o + 4], tonumber(ARGV[o + 3]), now)
  end
end

local function final(outcome, code)
  redis.call('SET', KEYS[4], ARGV[2] .. SEP .. outcome .. SEP .. ARGV[10], 'EX', ARGV[12])
  return reject(outcome, code, 0, 0, fired)
end

if c[3] == '1' or now < tonumber(c[1]) or now >= tonumber(c[2]) then
  return final(8, 'campaign_not_active')
end
local per_user, per_device = tonumber(c[5]), tonumber(c[6])
local user_field, device_field = 'u:' .. ARGV[7], 'd:' .. ARGV[8]
local had = redis.call('HMGET', KEYS[3], user_field, device_field)
local user_grants, device_grants = tonumber(had[1] or '0'), tonumber(had[2] or '0')
if user_grants >= per_user then
  return final(9, 'limit_reached')
end
if per_device > 0 and device_grants >= per_device then
  return final(9, 'limit_reached')
end
local stock_left = tonumber(c[4])
if stock_left <= 0 then
  return final(10, 'sold_out')
end

-- Granted: every write of the grant happens here, after every check has passed.
local expires = now + tonumber(c[7]) * 1000
redis.call('HSET', KEYS[1], 'stock_left', stock_left - 1, 'granted', tonumber(c[8] or '0') + 1)
if per_device > 0 then
  redis.call('HSET', KEYS[3], user_field, user_grants + 1, device_field, device_grants + 1)
else
  redis.call('HSET', KEYS[3], user_field, user_grants + 1)
end
-- Voucher: state, expiry, campaign, owner. Kept 30 days past expiry so late tries get 409 expired.
redis.call('SET', KEYS[5], 'i' .. SEP .. expires .. SEP .. ARGV[6] .. SEP .. ARGV[7],
           'PX', expires - now + 2592000000)
redis.call('SET', KEYS[4], ARGV[2] .. SEP .. '0' .. SEP .. ARGV[3] .. SEP .. expires,
           'EX', ARGV[12])
emit('claim.granted', {'claim_id', ARGV[4], 'voucher_code', ARGV[5]})
return {0, expires, stock_left - 1, fired}
