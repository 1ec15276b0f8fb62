-- claim.lua: decide one claim in one atomic step.
-- Joined after ratelimit/sliding_window.lua (sw_admit, sw_peek, sw_record), risk/velocity.lua
-- (distinct_peek, distinct_record) and the configuration's constants, which gateway/claim.py
-- writes as Lua (`claim_script_constants`): IDEMPOTENCY_TTL_S, NONCE_TTL_MS, STREAM_MAX_LEN and
-- LIMITS, the claim route's {limit, window ms} pairs. Constants are part of the script text,
-- not arguments: Valkey turns every argument of every call into an object and a Lua string.
-- Every key shares the campaign's tag.
--
-- KEYS[1] campaign hash: settings, counters and each claimant's grants so far (the allowances),
--         one field per user and per device, named by ARGV[14] and ARGV[15]
-- KEYS[2] rejections-by-code hash  KEYS[3] idempotency record
-- KEYS[4] voucher (the code offered if granted)   KEYS[5] event stream
-- KEYS[6 .. 5+L]        one sliding-window key per limit in LIMITS (L = #LIMITS)
-- KEYS[6+L .. 5+L+R]    one counter key per velocity rule
-- KEYS[6+L+R]           the signed request's nonce key, when there is one key more
--
-- ARGV[1] now (ms)          ARGV[2] request fingerprint   ARGV[3] voucher code
-- ARGV[4] claim id          ARGV[5] masked code           ARGV[6] campaign id
-- ARGV[7] user id           ARGV[8] device id             ARGV[9] ip
-- ARGV[10] request id       ARGV[11] client id            ARGV[12] R
-- ARGV[13] now as RFC 3339 text
-- ARGV[14] the user's allowance field   ARGV[15] the device's (digests: gateway/keys.py)
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
-- script is atomic, so nothing moves them in between. Allowances are fields of the campaign
-- hash, so one HMGET reads and one HSET writes every counter a grant moves.
-- Numeric strings become numbers by arithmetic (`s + 0`), as in sliding_window.lua.

local now = ARGV[1] + 0
local L = #LIMITS
local R = ARGV[12] + 0
local SEP = '\31'

if #KEYS > 5 + L + R then
  if not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'PX', NONCE_TTL_MS) then
    return {3, 0, 0, {}}
  end
end

local record = redis.call('GET', KEYS[3])
if record then
  if string.sub(record, 1, #ARGV[2]) ~= ARGV[2] then
    return {2, 0, 0, {}}
  end
  return {1, record, 0, {}}
end

local user_field, device_field = ARGV[14], ARGV[15]
local c = redis.call('HMGET', KEYS[1], 'starts_ms', 'ends_ms', 'paused', 'stock_left',
                     'per_user_limit', 'per_device_limit', 'voucher_ttl_s', 'granted',
                     user_field, device_field)
if not c[1] then
  return {4, 0, 0, {}}
end

-- Appends one event; the varargs are its type-specific field/value pairs.
local function emit(kind, ...)
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', STREAM_MAX_LEN, '*', 'type', kind, 'ts', ARGV[13],
             'campaign_id', ARGV[6], 'user_id', ARGV[7], 'device_id', ARGV[8], 'ip', ARGV[9],
             'request_id', ARGV[10], 'client_id', ARGV[11], ...)
end

local function reject(outcome, code, a, b, fired)
  redis.call('HINCRBY', KEYS[2], code, 1)
  emit('claim.rejected', 'code', code)
  return {outcome, a or 0, b or 0, fired or {}}
end

-- Limits: each admits the hit into its log in turn; when one refuses, the logs before it give
-- the hit back, so a refused request is recorded in none.
for i = 1, L do
  local _, retry = sw_admit(KEYS[5 + i], LIMITS[i][1], LIMITS[i][2], now)
  if retry > 0 then
    for j = 1, i - 1 do sw_unadmit(KEYS[5 + j]) end
    return reject(5, 'rate_limited', i, retry)
  end
end

-- Velocity rules: find every hit; the strongest enforced effect decides. Their hits are
-- recorded only when none blocks: counts[r] is what sw_peek saw in rule r's key, handed to
-- sw_record with windows[r].
local rule_base = 16 -- the first rule tuple's ARGV index
local counts, windows = {}, {}
local fired = {}
local blocking = 0
for r = 1, R do
  local o = rule_base + (r - 1) * 6
  local key, threshold, window = KEYS[5 + L + r], ARGV[o + 2] + 0, ARGV[o + 3] + 0
  windows[r] = window
  local hit
  if ARGV[o + 1] == 'count' then
    counts[r] = sw_peek(key, threshold, window, now)
    hit = counts[r] >= threshold
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
  emit('risk.hit', 'rules', table.concat(ids, ','),
       'decision', blocking == 6 and 'deny' or (blocking == 7 and 'challenge' or 'shadow'))
end

if blocking ~= 0 then
  return reject(blocking, blocking == 6 and 'risk_denied' or 'challenge_required', 0, 0, fired)
end

for r = 1, R do
  local o = rule_base + (r - 1) * 6
  if ARGV[o + 1] == 'count' then
    sw_record(KEYS[5 + L + r], windows[r], now, counts[r])
  else
    distinct_record(KEYS[5 + L + r], ARGV[o + 4], windows[r], now)
  end
end

-- Campaign state, allowances, stock: a rejection here is stored for replay.
local per_user, per_device = c[5] + 0, c[6] + 0
local user_grants, device_grants = (c[9] or 0) + 0, (c[10] or 0) + 0
local stock_left = c[4] + 0
local outcome, code
if c[3] == '1' or now < c[1] + 0 or now >= c[2] + 0 then
  outcome, code = 8, 'campaign_not_active'
elseif user_grants >= per_user or (per_device > 0 and device_grants >= per_device) then
  outcome, code = 9, 'limit_reached'
elseif stock_left <= 0 then
  outcome, code = 10, 'sold_out'
end
if outcome then
  redis.call('SET', KEYS[3], ARGV[2] .. SEP .. outcome .. SEP .. ARGV[10], 'EX',
             IDEMPOTENCY_TTL_S)
  return reject(outcome, code, 0, 0, fired)
end

-- Granted: every write of the grant happens here, after every check has passed.
local expires = now + c[7] * 1000
local granted = (c[8] or 0) + 1
if per_device > 0 then
  redis.call('HSET', KEYS[1], 'stock_left', stock_left - 1, 'granted', granted,
             user_field, user_grants + 1, device_field, device_grants + 1)
else
  redis.call('HSET', KEYS[1], 'stock_left', stock_left - 1, 'granted', granted,
             user_field, user_grants + 1)
end
-- Voucher: state, expiry, campaign, owner. Kept 30 days past expiry so late tries get 409 expired.
local expires_text = string.format('%d', expires) -- once: a number in a concatenation is '%.14g'
redis.call('SET', KEYS[4], 'i' .. SEP .. expires_text .. SEP .. ARGV[6] .. SEP .. ARGV[7],
           'PX', expires - now + 2592000000)
redis.call('SET', KEYS[3], ARGV[2] .. SEP .. '0' .. SEP .. ARGV[3] .. SEP .. expires_text,
           'EX', IDEMPOTENCY_TTL_S)
emit('claim.granted', 'claim_id', ARGV[4], 'voucher_code', ARGV[5])
return {0, expires, stock_left - 1, fired}
