-- claim.lua: decide one claim in one atomic step.
-- The body of a function of the gateway's function library (gateway/scripts.py), which holds
-- ratelimit/sliding_window.lua (sw_admit, sw_peek, sw_record), ratelimit/field_window.lua
-- (fw_parse, fw_check, fw_value), risk/velocity.lua (distinct_peek, distinct_record) and the
-- configuration's constants, which gateway/claim.py writes as Lua (`claim_script_constants`):
-- IDEMPOTENCY_TTL_S, NONCE_TTL_MS, STREAM_MAX_LEN, LIMITS, LIST_LOGS and the FW_ field-window
-- sizes. Constants are part of the library text, built once at FUNCTION LOAD, not arguments:
-- Valkey turns every argument of every call into an object and a Lua string. KEYS and ARGV
-- are the function's parameters. Every key shares the campaign's tag.
--
-- LIMITS holds the claim route's limits in configuration order, flat: limit, window ms, log
-- for each. `log` says where the limit's
-- sliding-window log lives: a number k for a list at KEYS[4 + k] (LIST_LOGS of them), or
-- 'u' / 'd' for a log in the user's / device's allowance field (field_window.lua), which the
-- HMGET below reads and every path past the limits writes, so it costs no call.
-- FW_USER_KEEP, FW_USER_SPAN: the most hits and the longest window (ms) the user's field log
-- keeps, false when it has none; FW_DEVICE_KEEP, FW_DEVICE_SPAN the same for the device's.
--
-- KEYS[1] campaign hash: settings, counters and each claimant's grants so far (the allowances),
--         one field per user and per device, named by ARGV[12] and ARGV[13]: "grants", or
--         "grants,hit,hit..." with the claimant's field window
-- KEYS[2] rejections-by-code hash
-- KEYS[3] voucher, which is also the claim's idempotency record: its code is derived from the
--         client and the Idempotency-Key (gateway/codes.py), so a retry names the same key.
--         Granted:  "i \31 expires ms \31 campaign \31 owner \31 fp" (the redeem scripts add
--                   "\31 redemption id" and change the state letter; voucher_state.lua too)
--         Refused and stored for replay (24 h):  "x \31 outcome \31 campaign \31 request id
--                   \31 fp", which the redeem and admin scripts treat as no voucher.
-- KEYS[4] event stream
-- KEYS[5 .. 4+L]        the list logs, in LIMITS order (L = LIST_LOGS, a constant)
-- KEYS[5+L .. 4+L+R]    one counter key per velocity rule
-- KEYS[5+L+R]           the signed request's nonce key, when there is one key more
--
-- ARGV[1] now (ms)          ARGV[2] request fingerprint   ARGV[3] claim id
-- ARGV[4] masked code       ARGV[5] campaign id           ARGV[6] user id
-- ARGV[7] device id         ARGV[8] ip                    ARGV[9] request id
-- ARGV[10] client id        ARGV[11] now as RFC 3339 text
-- ARGV[12] the user's allowance field   ARGV[13] the device's (digests: gateway/keys.py)
-- then R tuples (rule id, kind 'count'|'distinct', threshold, window ms, member,
--                 effect 'deny'|'challenge'|'shadow')
--
-- Returns {outcome, a, b, fired}: fired lists the 1-based indexes of velocity rules that hit.
--   0 granted          a = voucher expiry (ms), b = stock left
--   1 replay           a = the record at KEYS[3]; the caller compares its fingerprint (a
--                      different one is the same key reused with another body)
--   3 nonce already spent
--   4 campaign not found                5 rate limited: a = limit index, b = retry after (ms)
--   6 risk denied      7 challenge required
--   8 campaign not active   9 limit reached   10 sold out
-- Stored for replay: 0, 8, 9, 10. Everything after the nonce check reads before it writes.
-- The grant writes counters as values read earlier in this call (HSET, not HINCRBY): the
-- script is atomic, so nothing moves them in between. Allowances are fields of the campaign
-- hash, so one HMGET reads and one HSET writes every counter a grant moves.
-- Numeric strings become numbers by arithmetic (`s + 0`), as in sliding_window.lua.

local now = ARGV[1] + 0
local L = LIST_LOGS
local R = (#ARGV - 13) / 6 -- the velocity rules, one tuple each after ARGV[13]
local SEP = '\31'

if #KEYS > 4 + L + R then
  if not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'PX', NONCE_TTL_MS) then
    return {3, 0, 0, {}}
  end
end

local record = redis.call('GET', KEYS[3])
if record then
  return {1, record, 0, {}}
end

local user_field, device_field = ARGV[12], ARGV[13]
local c = redis.call('HMGET', KEYS[1], 'starts_ms', 'ends_ms', 'paused', 'stock_left',
                     'per_user_limit', 'per_device_limit', 'voucher_ttl_s', 'granted',
                     user_field, device_field)
if not c[1] then
  return {4, 0, 0, {}}
end

-- Appends one event; the varargs are its type-specific field/value pairs.
local function emit(kind, ...)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', STREAM_MAX_LEN, '*', 'type', kind, 'ts', ARGV[11],
             'campaign_id', ARGV[5], 'user_id', ARGV[6], 'device_id', ARGV[7], 'ip', ARGV[8],
             'request_id', ARGV[9], 'client_id', ARGV[10], ...)
end

local function reject(outcome, code, a, b, fired)
  redis.call('HINCRBY', KEYS[2], code, 1)
  emit('claim.rejected', 'code', code)
  return {outcome, a or 0, b or 0, fired or {}}
end

-- Limits: each admits the hit in turn; when one refuses, the list logs before it give the hit
-- back, so a refused request is recorded in none. A field log is only checked here: the hit
-- goes in with the field's write, on every path past this loop.
local user_grants, user_hits = fw_parse(c[9])
local device_grants, device_hits = fw_parse(c[10])
for i = 1, #LIMITS / 3 do
  local limit, window, log = LIMITS[3 * i - 2], LIMITS[3 * i - 1], LIMITS[3 * i]
  local retry
  if log == 'u' then
    retry = fw_check(user_hits, limit, window, now)
  elseif log == 'd' then
    retry = fw_check(device_hits, limit, window, now)
  else
    local _
    _, retry = sw_admit(KEYS[4 + log], limit, window, now)
  end
  if retry > 0 then
    for j = 1, i - 1 do
      local earlier = LIMITS[3 * j]
      if type(earlier) == 'number' then sw_unadmit(KEYS[4 + earlier]) end
    end
    return reject(5, 'rate_limited', i, retry)
  end
end

-- Velocity rules: find every hit; the strongest enforced effect decides. Their hits are
-- recorded only when none blocks: counts[r] is what sw_peek saw in rule r's key, handed to
-- sw_record with windows[r].
local rule_base = 14 -- the first rule tuple's ARGV index
local counts, windows = {}, {}
local fired = {}
local blocking = 0
for r = 1, R do
  local o = rule_base + (r - 1) * 6
  local key, threshold, window = KEYS[4 + L + r], ARGV[o + 2] + 0, ARGV[o + 3] + 0
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

-- The outcome: a blocking rule, else campaign state, allowances, stock (stored for replay).
local per_user, per_device = c[5] + 0, c[6] + 0
local stock_left = c[4] + 0
local outcome, code
if blocking ~= 0 then
  outcome, code = blocking, blocking == 6 and 'risk_denied' or 'challenge_required'
else
  for r = 1, R do
    local o = rule_base + (r - 1) * 6
    if ARGV[o + 1] == 'count' then
      sw_record(KEYS[4 + L + r], windows[r], now, counts[r])
    else
      distinct_record(KEYS[4 + L + r], ARGV[o + 4], windows[r], now)
    end
  end
  if c[3] == '1' or now < c[1] + 0 or now >= c[2] + 0 then
    outcome, code = 8, 'campaign_not_active'
  elseif user_grants >= per_user or (per_device > 0 and device_grants >= per_device) then
    outcome, code = 9, 'limit_reached'
  elseif stock_left <= 0 then
    outcome, code = 10, 'sold_out'
  end
end

-- The claimant's allowance fields after this claim (nil: left as they are). A grant adds one
-- to the user's count, and to the device's when devices have an allowance; a field window
-- takes the hit whatever the outcome.
local user_added = outcome and 0 or 1
local device_added = (per_device > 0 and not outcome) and 1 or 0
local user_value, device_value
if FW_USER_KEEP then
  user_value = fw_value(user_grants + user_added, user_hits, now, FW_USER_KEEP, FW_USER_SPAN)
elseif user_added > 0 then
  user_value = user_grants + 1
end
if FW_DEVICE_KEEP then
  device_value = fw_value(device_grants + device_added, device_hits, now, FW_DEVICE_KEEP,
                          FW_DEVICE_SPAN)
elseif device_added > 0 then
  device_value = device_grants + 1
end

if outcome then
  if user_value and device_value then
    redis.call('HSET', KEYS[1], user_field, user_value, device_field, device_value)
  elseif user_value or device_value then
    redis.call('HSET', KEYS[1], user_value and user_field or device_field,
               user_value or device_value)
  end
  if outcome >= 8 then
    redis.call('SET', KEYS[3], 'x' .. SEP .. outcome .. SEP .. ARGV[5] .. SEP .. ARGV[9] .. SEP ..
               ARGV[2], 'EX', IDEMPOTENCY_TTL_S)
  end
  return reject(outcome, code, 0, 0, fired)
end

-- Granted: every write of the grant happens here, after every check has passed.
local expires = now + c[7] * 1000
local granted = (c[8] or 0) + 1
if device_value then
  redis.call('HSET', KEYS[1], 'stock_left', stock_left - 1, 'granted', granted,
             user_field, user_value, device_field, device_value)
else
  redis.call('HSET', KEYS[1], 'stock_left', stock_left - 1, 'granted', granted,
             user_field, user_value)
end
-- Voucher: state, expiry, campaign, owner, and the fingerprint a replay is checked against.
-- Kept 30 days past expiry, so late tries get 409 expired and the claim replays as long.
redis.call('SET', KEYS[3], 'i' .. SEP .. string.format('%d', expires) .. SEP .. ARGV[5] .. SEP ..
           ARGV[6] .. SEP .. ARGV[2], 'PX', expires - now + 2592000000)
emit('claim.granted', 'claim_id', ARGV[3], 'voucher_code', ARGV[4])
return {0, expires, stock_left - 1, fired}
