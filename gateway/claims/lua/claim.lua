-- claim.lua: decide a batch of claims on one campaign in one atomic step.
-- The body of a function of the gateway's function library (gateway/scripts.py), which holds
-- ratelimit/sliding_window.lua (sw_admit, sw_unadmit, sw_peek, sw_record),
-- ratelimit/field_window.lua (fw_parse, fw_check, fw_value), risk/velocity.lua
-- (distinct_peek, distinct_record) and the configuration's constants, which gateway/claim.py
-- writes as Lua (`claim_script_constants`): IDEMPOTENCY_TTL_S, NONCE_TTL_MS, STREAM_MAX_LEN,
-- LIMITS, LIST_LOGS and the FW_ field-window sizes. Constants are part of the library text,
-- built once at FUNCTION LOAD, not arguments: Valkey turns every argument of every call into
-- an object and a Lua string. KEYS and ARGV are the function's parameters. Every key shares
-- the campaign's tag.
--
-- Why a batch: the claims a worker has in flight on one campaign in one event-loop turn
-- (gateway/claim_batch.py) are decided in turn, exactly as one call each would decide them,
-- but their voucher records are read by one MGET, the campaign and every claimant's allowance
-- field by one HMGET, and the counters and fields they move written by one HSET. Per claim
-- there remain its voucher's SET and its events' XADDs (and the list logs' and rules' calls).
-- Every write of the campaign, the vouchers, the rejection counts and the stream waits until
-- every claim is decided, so an error part-way (a key of the wrong type) leaves at most some
-- rate-limit and risk hits behind, never a voucher without its stock taken.
--
-- LIMITS holds the claim route's limits in configuration order, flat: limit, window ms, log
-- for each. `log` says where the limit's sliding-window log lives: a number k for a list, the
-- claim's k-th list-log key, or 'u' / 'd' for a log in the user's / device's allowance field
-- (field_window.lua), which the HMGET reads and the HSET writes, so it costs no call.
-- FW_USER_KEEP, FW_USER_SPAN: the most hits and the longest window (ms) the user's field log
-- keeps, false when it has none; FW_DEVICE_KEEP, FW_DEVICE_SPAN the same for the device's.
--
-- KEYS[1] campaign hash: settings, counters and each claimant's grants so far (the allowances),
--         one field per user and per device: "grants", or "grants,hit,hit..." with the
--         claimant's field window
-- KEYS[2] rejections-by-code hash
-- KEYS[3] event stream
-- then per claim, K = 1 + LIST_LOGS + R + N keys:
--   its voucher, which is also its idempotency record: the code is derived from the client
--         and the Idempotency-Key (gateway/codes.py), so a retry names the same key.
--         Granted:  "i \31 expires ms \31 campaign \31 owner \31 fp" (the redeem scripts add
--                   "\31 redemption id" and change the state letter; voucher_state.lua too)
--         Refused and stored for replay (24 h):  "x \31 outcome \31 campaign \31 request id
--                   \31 fp", which the redeem and admin scripts treat as no voucher.
--   its list logs, in LIMITS order; one counter key per velocity rule; its nonce key if N = 1
--
-- ARGV[1] now (ms)   ARGV[2] now as RFC 3339 text   ARGV[3] campaign id   ARGV[4] client id
-- ARGV[5] R, the velocity rules each claim carries   ARGV[6] N, 1 when each carries a nonce
-- then per claim, 9 + 6R arguments: request fingerprint, claim id, masked code, user id,
--   device id, ip, request id, the user's allowance field, the device's (gateway/keys.py),
--   then R tuples (rule id, kind 'count'|'distinct', threshold, window ms, member,
--   effect 'deny'|'challenge'|'shadow')
--
-- Returns four entries per claim, in order: outcome, a, b, fired (the 1-based indexes of the
-- claim's velocity rules that hit, comma separated, '' for none).
--   0 granted          a = voucher expiry (ms), b = stock left
--   1 replay           a = the claim's voucher record; the caller compares its fingerprint
--                      (a different one is the same key reused with another body)
--   3 nonce already spent
--   4 campaign not found                5 rate limited: a = limit index, b = retry after (ms)
--   6 risk denied      7 challenge required
--   8 campaign not active   9 limit reached   10 sold out
-- Stored for replay: 0, 8, 9, 10. A grant writes counters as values carried from the HMGET
-- (HSET, not HINCRBY): the function is atomic, so nothing moves them in between. Numeric
-- strings become numbers by arithmetic (`s + 0`), as in sliding_window.lua.

local now = ARGV[1] + 0
local ts, campaign_id, client_id = ARGV[2], ARGV[3], ARGV[4]
local R, N = ARGV[5] + 0, ARGV[6] + 0
local L = LIST_LOGS
local KS, AS = 1 + L + R + N, 9 + 6 * R -- keys and arguments per claim
local B = (#KEYS - 3) / KS
local SEP = '\31'
local VOUCHER_KEEP_MS = 2592000000 -- a voucher is kept 30 days past its expiry
local REFUSAL_KEEP_MS = IDEMPOTENCY_TTL_S * 1000

-- The reads: every claim's voucher record; the campaign and every claimant's fields, which
-- the n-th claim finds at c[7 + 2n] (user) and c[8 + 2n] (device).
local voucher_keys = {}
local wanted = {KEYS[1], 'starts_ms', 'ends_ms', 'paused', 'stock_left', 'per_user_limit',
                'per_device_limit', 'voucher_ttl_s', 'granted'}
for nth = 1, B do
  local a = 6 + (nth - 1) * AS
  voucher_keys[nth] = KEYS[4 + (nth - 1) * KS]
  wanted[8 + 2 * nth], wanted[9 + 2 * nth] = ARGV[a + 8], ARGV[a + 9]
end
local records = redis.call('MGET', unpack(voucher_keys))
local c = redis.call('HMGET', unpack(wanted))
local found = c[1]
local per_user, per_device = (c[5] or 0) + 0, (c[6] or 0) + 0
local stock_left, granted = (c[4] or 0) + 0, (c[8] or 0) + 0
local granted_before = granted

-- What the batch decides, written once every claim is decided. No table per claim: this is
-- the hot path, and Lua's allocator and collector cost more than the work.
local fields = {}   -- allowance field -> its new value (the claimant's later claims read it)
local written = {}  -- voucher key -> its new record (a retry later in the batch replays it)
local keep_ms = {}  -- voucher key -> how long that record is kept
local rejected = {} -- rejection code -> count
local newest_hit = {} -- list log -> its newest hit, once a claim of the batch put one there
local ev, events = {}, 0 -- per event six entries: claim's ARGV offset, type, 2 field/value

local function emit(a, kind, f1, v1, f2, v2)
  local e = 6 * events
  ev[e + 1], ev[e + 2], ev[e + 3], ev[e + 4], ev[e + 5], ev[e + 6] =
    a, kind, f1, v1, f2 or false, v2 or false
  events = events + 1
end

local function reject(a, outcome, code, x, y, fired)
  rejected[code] = (rejected[code] or 0) + 1
  emit(a, 'claim.rejected', 'code', code)
  return outcome, x, y, fired
end

-- The nth claim, its KEYS from k + 1 (its voucher), its ARGV from a + 1: outcome, a, b, and
-- the indexes of the velocity rules that hit, comma separated.
local function decide(nth, k, a)
  if N == 1 and not redis.call('SET', KEYS[k + KS], '1', 'NX', 'PX', NONCE_TTL_MS) then
    return 3, 0, 0, ''
  end
  local voucher_key = KEYS[k + 1]
  local record = written[voucher_key] or records[nth]
  if record then
    return 1, record, 0, ''
  end
  if not found then
    return 4, 0, 0, ''
  end
  local user_field, device_field = ARGV[a + 8], ARGV[a + 9]
  local user_value, device_value = fields[user_field], fields[device_field]
  if user_value == nil then user_value = c[7 + 2 * nth] end
  if device_value == nil then device_value = c[8 + 2 * nth] end
  local user_grants, user_hits = fw_parse(user_value)
  local device_grants, device_hits = fw_parse(device_value)

  -- Limits: each admits the hit in turn; when one refuses, the list logs before it give the
  -- hit back, so a refused request is recorded in none. A field log is only checked here: the
  -- hit goes in with the field's write, on every path past this loop.
  for i = 1, #LIMITS / 3 do
    local limit, window, log = LIMITS[3 * i - 2], LIMITS[3 * i - 1], LIMITS[3 * i]
    local retry
    if log == 'u' then
      retry = fw_check(user_hits, limit, window, now)
    elseif log == 'd' then
      retry = fw_check(device_hits, limit, window, now)
    else
      local key, _ = KEYS[k + 1 + log]
      _, retry, newest_hit[key] = sw_admit(key, limit, window, now, newest_hit[key])
    end
    if retry > 0 then
      for j = 1, i - 1 do
        local earlier = LIMITS[3 * j]
        if type(earlier) == 'number' then
          sw_unadmit(KEYS[k + 1 + earlier])
          newest_hit[KEYS[k + 1 + earlier]] = nil -- the hit it knew is gone: read it again
        end
      end
      return reject(a, 5, 'rate_limited', i, retry, '')
    end
  end

  -- Velocity rules: find every hit; the strongest enforced effect decides. Their hits are
  -- recorded only when none blocks: counts[r] is what sw_peek saw in rule r's key, handed to
  -- sw_record with windows[r].
  local counts, windows, hits
  if R > 0 then counts, windows = {}, {} end
  local blocking = 0
  for r = 1, R do
    local o = a + 9 + (r - 1) * 6
    local key, threshold, window = KEYS[k + 1 + L + r], ARGV[o + 3] + 0, ARGV[o + 4] + 0
    windows[r] = window
    local hit
    if ARGV[o + 2] == 'count' then
      counts[r] = sw_peek(key, threshold, window, now)
      hit = counts[r] >= threshold
    else
      local count, is_new = distinct_peek(key, ARGV[o + 5], window, now)
      hit = is_new == 1 and count >= threshold
    end
    if hit then
      hits = hits or {}
      hits[#hits + 1] = r
      if ARGV[o + 6] == 'deny' then blocking = 6
      elseif ARGV[o + 6] == 'challenge' and blocking == 0 then blocking = 7 end
    end
  end
  local fired = ''
  if hits then
    local ids = {}
    for i = 1, #hits do ids[i] = ARGV[a + 10 + (hits[i] - 1) * 6] end
    fired = table.concat(hits, ',')
    emit(a, 'risk.hit', 'rules', table.concat(ids, ','), 'decision',
         blocking == 6 and 'deny' or (blocking == 7 and 'challenge' or 'shadow'))
  end

  -- The outcome: a blocking rule, else campaign state, allowances, stock (stored for replay).
  local outcome, code
  if blocking ~= 0 then
    outcome, code = blocking, blocking == 6 and 'risk_denied' or 'challenge_required'
  else
    for r = 1, R do
      local o = a + 9 + (r - 1) * 6
      if ARGV[o + 2] == 'count' then
        sw_record(KEYS[k + 1 + L + r], windows[r], now, counts[r])
      else
        distinct_record(KEYS[k + 1 + L + r], ARGV[o + 5], windows[r], now)
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

  -- The claimant's allowance fields after this claim. A grant adds one to the user's count,
  -- and to the device's when devices have an allowance; a field window takes the hit
  -- whatever the outcome.
  local user_added = outcome and 0 or 1
  local device_added = (per_device > 0 and not outcome) and 1 or 0
  if FW_USER_KEEP then
    fields[user_field] = fw_value(user_grants + user_added, user_hits, now, FW_USER_KEEP,
                                  FW_USER_SPAN)
  elseif user_added > 0 then
    fields[user_field] = user_grants + 1
  end
  if FW_DEVICE_KEEP then
    fields[device_field] = fw_value(device_grants + device_added, device_hits, now,
                                    FW_DEVICE_KEEP, FW_DEVICE_SPAN)
  elseif device_added > 0 then
    fields[device_field] = device_grants + 1
  end

  if outcome then
    if outcome >= 8 then
      written[voucher_key] = 'x' .. SEP .. outcome .. SEP .. campaign_id .. SEP .. ARGV[a + 7] ..
                             SEP .. ARGV[a + 1]
      keep_ms[voucher_key] = REFUSAL_KEEP_MS
    end
    return reject(a, outcome, code, 0, 0, fired)
  end

  -- Granted. The voucher: state, expiry, campaign, owner, and the fingerprint a replay is
  -- checked against. Kept 30 days past expiry, so late tries get 409 expired and the claim
  -- replays as long.
  local expires = now + c[7] * 1000
  stock_left, granted = stock_left - 1, granted + 1
  written[voucher_key] = 'i' .. SEP .. string.format('%d', expires) .. SEP .. campaign_id .. SEP ..
                         ARGV[a + 4] .. SEP .. ARGV[a + 1]
  keep_ms[voucher_key] = expires - now + VOUCHER_KEEP_MS
  emit(a, 'claim.granted', 'claim_id', ARGV[a + 2], 'voucher_code', ARGV[a + 3])
  return 0, expires, stock_left, fired
end

local results = {}
for nth = 1, B do
  local o = 4 * nth
  results[o - 3], results[o - 2], results[o - 1], results[o] =
    decide(nth, 3 + (nth - 1) * KS, 6 + (nth - 1) * AS)
end

-- Every write, in one place: counters and fields first, so an error in what follows leaves
-- stock taken without its voucher (never the reverse).
if found then
  local hset, n = {KEYS[1]}, 1
  if granted ~= granted_before then
    hset[2], hset[3], hset[4], hset[5], n = 'stock_left', stock_left, 'granted', granted, 5
  end
  for field, value in pairs(fields) do
    hset[n + 1], hset[n + 2], n = field, value, n + 2
  end
  if n > 1 then redis.call('HSET', unpack(hset, 1, n)) end
end
for code, count in pairs(rejected) do
  redis.call('HINCRBY', KEYS[2], code, count)
end
for key, record in pairs(written) do
  redis.call('SET', key, record, 'PX', keep_ms[key])
end

-- The stream is trimmed by the batch's last XADD only: MAXLEN on each cost a check per event.
local function append(e, a, kind, ...)
  if e < 6 * (events - 1) then
    redis.call('XADD', KEYS[3], '*', 'type', kind, 'ts', ts, 'campaign_id', campaign_id,
               'user_id', ARGV[a + 4], 'device_id', ARGV[a + 5], 'ip', ARGV[a + 6],
               'request_id', ARGV[a + 7], 'client_id', client_id, ...)
  else
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', STREAM_MAX_LEN, '*', 'type', kind, 'ts', ts,
               'campaign_id', campaign_id, 'user_id', ARGV[a + 4], 'device_id', ARGV[a + 5],
               'ip', ARGV[a + 6], 'request_id', ARGV[a + 7], 'client_id', client_id, ...)
  end
end
for e = 0, 6 * (events - 1), 6 do
  if ev[e + 5] then
    append(e, ev[e + 1], ev[e + 2], ev[e + 3], ev[e + 4], ev[e + 5], ev[e + 6])
  else
    append(e, ev[e + 1], ev[e + 2], ev[e + 3], ev[e + 4])
  end
end
return results
