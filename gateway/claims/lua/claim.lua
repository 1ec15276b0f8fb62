-- claim.lua: decide a batch of claims on one campaign, in turn, in one atomic step.
-- KEYS: campaign, rejections, events; per claim: voucher, list_logs, rule_keys, nonce,
--   pass_nonce. (list_logs: LIST_LOGS list-log keys in LIMITS order; rule_keys: a counter per
--   velocity rule; nonce if nonce = 1; pass_nonce if passes = 1, set only to lift a challenge.)
-- ARGV: now_ms, now_text, campaign_id, client_id, rules, nonce, passes; per claim: fp,
--   claim_id, masked_code, user_id, device_id, ip, request_id, user_field, device_field; per
--   rule: rule_id, kind, threshold, window_ms, member, effect.
-- Replies, per claim: outcome, a, b, fired. OK: a = voucher expiry, b = stock left; REPLAY:
--   a = the stored record; RATE_LIMITED: a = limit index, b = retry after; DAILY_*: b = time
--   to the next local midnight; fired: the 1-based indexes of the rules that hit, or ''.
-- Units: ms. Every key shares the campaign's tag. Outcomes (gateway/records.py), LIMITS,
--   LIST_LOGS, FW_* and the TTLs are constants of the library text (gateway/claims/desk.py);
--   records, allowance and period fields: gateway/records.py, valkey/keys.py, docs/budgets.md.
-- Why it is shaped so: docs/design/claim-script.md. This chunk runs once, at FUNCTION LOAD;
--   `call` is the function.

local SEP = '\31'
local VOUCHER_KEEP_MS = 2592000000 -- a voucher is kept 30 days past its expiry
local REFUSAL_KEEP_MS = IDEMPOTENCY_TTL_S * 1000
-- LIMITS, flat (limit, window ms, log: a list-log number, 'u' or 'd'; group: hits per log
-- entry), by limit index. COARSE: a list log's group when above 1 (a coarse window), else false.
local LIMIT_COUNT, LIMIT, WINDOW, LOG, COARSE = #LIMITS / 4, {}, {}, {}, {}
for i = 1, LIMIT_COUNT do
  LIMIT[i], WINDOW[i], LOG[i] = LIMITS[4 * i - 3], LIMITS[4 * i - 2], LIMITS[4 * i - 1]
  COARSE[i] = LIMITS[4 * i] > 1 and LIMITS[4 * i]
end
local HEAD_KEYS, HEAD_ARGS = 3, 7
-- Offsets in a claim's keys, its arguments and a rule's arguments (gateway/claims/layout.py).
local VOUCHER, RULE_KEYS_AT = 1, 1 + LIST_LOGS
local FP, CLAIM_ID, MASKED_CODE, USER_ID, DEVICE_ID, IP, REQUEST_ID, USER_FIELD, DEVICE_FIELD =
  1, 2, 3, 4, 5, 6, 7, 8, 9
local CLAIM_ARGS = 9
local RULE_ID, KIND, THRESHOLD, WINDOW_MS, MEMBER, EFFECT = 1, 2, 3, 4, 5, 6
local RULE_ARGS = 6
-- The HMGET of the campaign reads its 9 fields (`read`), then each claim's user and device
-- fields: claim n's user field at CLAIMANTS_AT + 2n, its device's next.
local CAMPAIGN_READ, CLAIMANTS_AT = 9, 8
local DAY_MS = 86400000

-- The call's state, set by `call`: upvalues of the helpers below, so a call builds no closure.
local KEYS, ARGV, now_ms, now_text, campaign_id, client_id, rules, nonce, passes
local nonce_at, pass_at, keys_per_claim, args_per_claim
local records, stored -- what the MGET of the vouchers and the HMGET of the campaign found
local found, starts_ms, ends_ms, paused, stock_left, per_user, per_device, ttl_s, granted
local fields     -- allowance field -> its new value (the claimant's later claims read it)
local written    -- voucher key -> its new record (a retry later in the batch replays it)
local keep_ms    -- voucher key -> how long that record is kept
local rejected   -- rejection code -> count
local newest_hit -- list log -> its newest hit, once a claim of the batch put one there
local coarse_log -- coarse log key -> its cw_log, read by the batch's first hit, flushed by write
local ev, events -- per event six entries: claim's ARGV offset, type, 2 field/value pairs
-- The period budgets (the campaign's `periods` field, false when it has none) for this call:
-- the `granted` count at which the budget and today's stock refuse (CAP without them) and
-- the lower of the two (-CAP with a user daily limit, checked per claim); the local day, the
-- next local midnight, grants today before the call; per claim its user's daily field
-- ('U' + the user's digest, `day,grants`) and what it held, and the claim's user's count.
local CAP = 1 / 0 -- infinity (the math library is not there while the chunk loads)
local periods, user_daily, budget_cap, daily_cap, period_cap
local day, day_prefix, midnight_ms, day_granted, daily_names, daily_stored, user_count

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

-- The list logs of the limits before limit i give back the hit they just took.
local function unadmit(k, i)
  for j = 1, i - 1 do
    local log = LOG[j]
    if type(log) == 'number' then
      local key = KEYS[k + VOUCHER + log]
      if COARSE[j] then
        cw_unadmit(key, COARSE[j], coarse_log[key])
      else
        sw_unadmit(key)
        newest_hit[key] = nil -- the hit it knew is gone: read again
      end
    end
  end
end

-- The limits admit the hit in turn; when one refuses, the list logs before it give the hit
-- back, so a refused claim is recorded in none: nil, or that limit's index and retry after.
-- A field log is only checked here: the hit goes in with the field's write.
local function admit(k, user_hits, device_hits)
  for i = 1, LIMIT_COUNT do
    local limit, window, log = LIMIT[i], WINDOW[i], LOG[i]
    local retry
    if log == 'u' then
      retry = fw_check(user_hits, limit, window, now_ms)
    elseif log == 'd' then
      retry = fw_check(device_hits, limit, window, now_ms)
    elseif COARSE[i] then
      local key, _ = KEYS[k + VOUCHER + log]
      coarse_log[key] = coarse_log[key] or cw_log(key)
      _, retry = cw_admit(key, limit, window, now_ms, COARSE[i], coarse_log[key])
    else
      local key, _ = KEYS[k + VOUCHER + log]
      _, retry, newest_hit[key] = sw_admit(key, limit, window, now_ms, newest_hit[key])
    end
    if retry > 0 then
      unadmit(k, i)
      return i, retry
    end
  end
end

-- A challenge pass lifts the claim's challenge when its nonce was never set (it is set now,
-- PASS_TTL_MS: as long as a pass may live); the event names the challenging rules it lifted.
local function lift(k, a, hits)
  if passes == 0 or not redis.call('SET', KEYS[k + pass_at], '1', 'NX', 'PX', PASS_TTL_MS) then
    return false
  end
  local lifted = {}
  for i = 1, #hits do
    local o = a + CLAIM_ARGS + (hits[i] - 1) * RULE_ARGS
    if ARGV[o + EFFECT] == 'challenge' then lifted[#lifted + 1] = ARGV[o + RULE_ID] end
  end
  emit(a, 'risk.challenge_passed', 'rules', table.concat(lifted, ','))
  return true
end

-- The velocity rules: every one that hits, and the strongest enforced effect (DENIED,
-- CHALLENGE or nil), the fired indexes, and for record_rules each rule's count as sw_peek
-- saw it and its window. A challenge (never a deny) may be lifted by the claim's pass.
local function check_rules(k, a)
  local counts, windows, hits, blocking = {}, {}
  for r = 1, rules do
    local o = a + CLAIM_ARGS + (r - 1) * RULE_ARGS
    local key, threshold = KEYS[k + RULE_KEYS_AT + r], ARGV[o + THRESHOLD] + 0
    local window, hit = ARGV[o + WINDOW_MS] + 0
    windows[r] = window
    if ARGV[o + KIND] == 'count' then
      counts[r] = sw_peek(key, threshold, window, now_ms)
      hit = counts[r] >= threshold
    else
      local count, is_new = distinct_peek(key, ARGV[o + MEMBER], window, now_ms)
      hit = is_new == 1 and count >= threshold
    end
    if hit then
      hits = hits or {}
      hits[#hits + 1] = r
      if ARGV[o + EFFECT] == 'deny' then blocking = DENIED
      elseif ARGV[o + EFFECT] == 'challenge' and not blocking then blocking = CHALLENGE end
    end
  end
  if not hits then return blocking, '', counts, windows end
  -- One event per mode: an event's decision is then every one of its rules' mode.
  local enforced, shadow = {}, {}
  for i = 1, #hits do
    local o = a + CLAIM_ARGS + (hits[i] - 1) * RULE_ARGS
    local ids = ARGV[o + EFFECT] == 'shadow' and shadow or enforced
    ids[#ids + 1] = ARGV[o + RULE_ID]
  end
  if #enforced > 0 then
    emit(a, 'risk.hit', 'rules', table.concat(enforced, ','), 'decision',
         blocking == DENIED and 'deny' or 'challenge')
  end
  if #shadow > 0 then
    emit(a, 'risk.hit', 'rules', table.concat(shadow, ','), 'decision', 'shadow')
  end
  if blocking == CHALLENGE and lift(k, a, hits) then blocking = nil end
  return blocking, table.concat(hits, ','), counts, windows
end

-- No rule blocked the claim: every rule's hit is recorded.
local function record_rules(k, a, counts, windows)
  for r = 1, rules do
    local o = a + CLAIM_ARGS + (r - 1) * RULE_ARGS
    if ARGV[o + KIND] == 'count' then
      sw_record(KEYS[k + RULE_KEYS_AT + r], windows[r], now_ms, counts[r])
    else
      distinct_record(KEYS[k + RULE_KEYS_AT + r], ARGV[o + MEMBER], windows[r], now_ms)
    end
  end
end

-- The claimant's allowance fields after the claim. A grant adds one to the user's count, and
-- to the device's when devices have an allowance; a field log takes the hit whatever the
-- outcome.
local function allow(user_field, user_grants, user_hits, device_field, device_grants,
                     device_hits, is_grant)
  local user_added = is_grant and 1 or 0
  local device_added = (per_device > 0 and is_grant) and 1 or 0
  if FW_USER_KEEP then
    fields[user_field] = fw_value(user_grants + user_added, user_hits, now_ms, FW_USER_KEEP,
                                  FW_USER_SPAN)
  elseif user_added > 0 then
    fields[user_field] = user_grants + 1
  end
  if FW_DEVICE_KEEP then
    fields[device_field] = fw_value(device_grants + device_added, device_hits, now_ms,
                                    FW_DEVICE_KEEP, FW_DEVICE_SPAN)
  elseif device_added > 0 then
    fields[device_field] = device_grants + 1
  end
end

-- The local day at now_ms and the next local midnight (UTC ms), from the zone's offsets at
-- `from` in `zone`: `o0,t1,o1,...` (offset o_k holds from instant t_k until t_(k+1)); a
-- midnight that a transition skips is that transition.
local function local_day(zone, from)
  local _, pos, offset = string.find(zone, '^(%-?%d+)', from)
  local found, t, o, next_t, next_o
  offset, pos = offset + 0, pos + 1
  repeat
    found, pos, t, o = string.find(zone, '^,(%-?%d+),(%-?%d+)', pos)
    if found then
      t, o, pos = t + 0, o + 0, pos + 1
      if t > now_ms then next_t, next_o = t, o else offset = o end
    end
  until not found or next_t
  local today = math.floor((now_ms + offset) / DAY_MS)
  local target = (today + 1) * DAY_MS -- local time of the next midnight
  local at = target - offset
  while next_t and at >= next_t do -- the midnight lies past the next transition
    offset, at = next_o, math.max(next_t, target - next_o)
    found, pos, t, o = string.find(zone, '^,(%-?%d+),(%-?%d+)', pos)
    if found then next_t, next_o, pos = t + 0, o + 0, pos + 1 else next_t = nil end
  end
  return today, at
end

-- The period budgets of a campaign that has them (docs/budgets.md): the day, the counts,
-- the caps, and the claimants' daily fields (one HMGET, with `returned` and `today`). A grant
-- passes the budget while (granted - returned + 1) * unit_cost <= budget, and today's stock
-- while grants today < daily (with rollover: granted - returned < daily * days so far).
local function read_periods(claims)
  local daily, rollover, budget, unit_cost, first_day, zone_at
  daily, rollover, user_daily, budget, unit_cost, first_day, zone_at =
    string.match(periods, '^(%d+),(%d),(%d+),(%-?%d+),(%d+),(%-?%d+),()')
  daily, rollover, user_daily = daily + 0, rollover == '1', user_daily + 0
  budget, unit_cost, first_day = budget + 0, unit_cost + 0, first_day + 0
  day_granted, daily_names, budget_cap, daily_cap = 0, {}, CAP, CAP
  local wanted = {KEYS[1], 'returned', 'today'}
  for nth = 1, user_daily > 0 and claims or 0 do
    local user_field = ARGV[HEAD_ARGS + (nth - 1) * args_per_claim + USER_FIELD]
    daily_names[nth] = 'U' .. string.sub(user_field, 2)
    wanted[3 + nth] = daily_names[nth]
  end
  daily_stored = redis.call('HMGET', unpack(wanted))
  local returned = (daily_stored[1] or 0) + 0
  if budget >= 0 and unit_cost > 0 then budget_cap = returned + math.floor(budget / unit_cost) end
  if daily > 0 or user_daily > 0 then
    day, midnight_ms = local_day(periods, zone_at)
    local stored_day, count = string.match(daily_stored[2] or '', '^(%d+),(%d+)$')
    -- A day already counted by a clock ahead of this one (or an hour a DST change repeats)
    -- stays the day counted.
    if stored_day and stored_day + 0 >= day then day, day_granted = stored_day + 0, count + 0 end
    day_prefix = day .. ','
  end
  if daily > 0 then
    daily_cap = rollover and returned + daily * (day - first_day + 1)
                or granted + daily - day_granted
  end
  period_cap = user_daily > 0 and -CAP or math.min(budget_cap, daily_cap)
end

-- The nth claim's user's grants today.
local function user_today(nth)
  local value = fields[daily_names[nth]] or daily_stored[2 + nth]
  if not value then return 0 end
  local stored_day, count = string.match(value, '^(%d+),(%d+)$')
  return stored_day + 0 >= day and count + 0 or 0
end

-- The period budgets' refusal of the nth claim, if any, checked after the campaign's state,
-- the claimant's allowance and the stock: the budget, today's stock, the user's daily limit.
-- The outcome, its code, and for a daily one the ms to the next local midnight.
local function period_refusal(nth)
  if granted >= budget_cap then
    return BUDGET_EXHAUSTED, 'budget_exhausted'
  elseif granted >= daily_cap then
    return DAILY_STOCK_EXHAUSTED, 'daily_stock_exhausted', midnight_ms - now_ms
  elseif user_daily > 0 then
    user_count = user_today(nth)
    if user_count >= user_daily then
      return DAILY_LIMIT_REACHED, 'limit_reached', midnight_ms - now_ms
    end
  end
end

-- Granted. The voucher: state, expiry, campaign, owner, and the fingerprint a replay is
-- checked against, then the device when its allowance counted the grant (a revoke gives it
-- back); kept 30 days past expiry, so late tries get 409 expired.
local function grant(a, voucher_key, fired)
  local expires = now_ms + ttl_s * 1000
  stock_left, granted = stock_left - 1, granted + 1
  local record = 'i' .. SEP .. string.format('%d', expires) .. SEP .. campaign_id .. SEP ..
                 ARGV[a + USER_ID] .. SEP .. ARGV[a + FP]
  written[voucher_key] = per_device > 0 and record .. SEP .. ARGV[a + DEVICE_ID] or record
  keep_ms[voucher_key] = expires - now_ms + VOUCHER_KEEP_MS
  emit(a, 'claim.granted', 'claim_id', ARGV[a + CLAIM_ID], 'voucher_code', ARGV[a + MASKED_CODE])
  return OK, expires, stock_left, fired
end

-- The nth claim, its keys after offset k and its arguments after offset a: its four replies.
local function decide(nth, k, a)
  if nonce == 1 and not redis.call('SET', KEYS[k + nonce_at], '1', 'NX', 'PX', NONCE_TTL_MS) then
    return NONCE_SPENT, 0, 0, ''
  end
  local voucher_key = KEYS[k + VOUCHER]
  local record = written[voucher_key] or records[nth]
  if record then
    return REPLAY, record, 0, ''
  end
  if not found then
    return NOT_FOUND, 0, 0, ''
  end
  local user_field, device_field = ARGV[a + USER_FIELD], ARGV[a + DEVICE_FIELD]
  local user_value, device_value = fields[user_field], fields[device_field]
  if user_value == nil then user_value = stored[CLAIMANTS_AT + 2 * nth] end
  if device_value == nil then device_value = stored[CLAIMANTS_AT + 2 * nth + 1] end
  local user_grants, user_hits = fw_parse(user_value)
  local device_grants, device_hits = fw_parse(device_value)

  local limit, retry = admit(k, user_hits, device_hits)
  if limit then
    return reject(a, RATE_LIMITED, 'rate_limited', limit, retry, '')
  end
  local blocking, fired, counts, windows = nil, ''
  if rules > 0 then
    blocking, fired, counts, windows = check_rules(k, a)
  end
  local outcome, code, wait -- a blocking rule, else state, allowances, stock, periods
  if blocking then
    outcome, code = blocking, blocking == DENIED and 'risk_denied' or 'challenge_required'
  else
    if rules > 0 then record_rules(k, a, counts, windows) end
    if paused == '1' or now_ms < starts_ms + 0 or now_ms >= ends_ms + 0 then
      outcome, code = NOT_ACTIVE, 'campaign_not_active'
    elseif user_grants >= per_user or (per_device > 0 and device_grants >= per_device) then
      outcome, code = LIMIT_REACHED, 'limit_reached'
    elseif stock_left <= 0 then
      outcome, code = SOLD_OUT, 'sold_out'
    elseif granted >= period_cap then
      outcome, code, wait = period_refusal(nth)
    end
  end
  allow(user_field, user_grants, user_hits, device_field, device_grants, device_hits,
        not outcome)
  if not outcome then
    if user_daily > 0 then fields[daily_names[nth]] = day_prefix .. (user_count + 1) end
    return grant(a, voucher_key, fired)
  end
  if wait then -- a daily refusal is not stored: tomorrow the same request may succeed
    return reject(a, outcome, code, 0, wait, fired)
  end
  if not blocking then -- a refusal of the campaign's is stored for replay
    written[voucher_key] = 'x' .. SEP .. outcome .. SEP .. campaign_id .. SEP ..
                           ARGV[a + REQUEST_ID] .. SEP .. ARGV[a + FP]
    keep_ms[voucher_key] = REFUSAL_KEEP_MS
  end
  return reject(a, outcome, code, 0, 0, fired)
end

-- The reads: every claim's voucher record (MGET), the campaign and every claimant's
-- allowance fields (HMGET).
local function read(claims)
  local vouchers = {}
  local wanted = {KEYS[1], 'starts_ms', 'ends_ms', 'paused', 'stock_left', 'per_user_limit',
                  'per_device_limit', 'voucher_ttl_s', 'granted', 'periods'}
  local k, a = HEAD_KEYS, HEAD_ARGS
  for nth = 1, claims do
    vouchers[nth] = KEYS[k + VOUCHER]
    wanted[CLAIMANTS_AT + 2 * nth + 1] = ARGV[a + USER_FIELD]
    wanted[CLAIMANTS_AT + 2 * nth + 2] = ARGV[a + DEVICE_FIELD]
    k, a = k + keys_per_claim, a + args_per_claim
  end
  records = redis.call('MGET', unpack(vouchers))
  stored = redis.call('HMGET', unpack(wanted))
  starts_ms, ends_ms, paused, stock_left, per_user, per_device, ttl_s, granted, periods =
    unpack(stored, 1, CAMPAIGN_READ)
  found = starts_ms
  per_user, per_device = (per_user or 0) + 0, (per_device or 0) + 0
  stock_left, granted = (stock_left or 0) + 0, (granted or 0) + 0
  period_cap, daily_cap, user_daily = CAP, CAP, 0
  if periods then read_periods(claims) end
end

-- Every write, in one place: the coarse logs' pending tails (the hits, as a list log's went in
-- when decided), then counters and fields, so an error in what follows leaves stock taken
-- without its voucher (never the reverse).
local function write(granted_before)
  for key, log in pairs(coarse_log) do cw_flush(key, log) end
  if found then
    local hset, n = {KEYS[1]}, 1
    if granted ~= granted_before then
      hset[2], hset[3], hset[4], hset[5], n = 'stock_left', stock_left, 'granted', granted, 5
      if daily_cap ~= CAP then
        hset[6], hset[7], n = 'today', day_prefix .. (day_granted + granted - granted_before), 7
      end
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
end

-- One event; the stream is trimmed by the batch's last XADD only.
local function append(e, a, kind, ...)
  if e < 6 * (events - 1) then
    redis.call('XADD', KEYS[3], '*', 'type', kind, 'ts', now_text, 'campaign_id', campaign_id,
               'user_id', ARGV[a + USER_ID], 'device_id', ARGV[a + DEVICE_ID], 'ip',
               ARGV[a + IP], 'request_id', ARGV[a + REQUEST_ID], 'client_id', client_id, ...)
  else
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', STREAM_MAX_LEN, '*', 'type', kind, 'ts',
               now_text, 'campaign_id', campaign_id, 'user_id', ARGV[a + USER_ID],
               'device_id', ARGV[a + DEVICE_ID], 'ip', ARGV[a + IP], 'request_id',
               ARGV[a + REQUEST_ID], 'client_id', client_id, ...)
  end
end

-- The function: read for the batch, decide each claim in turn, write, then the events.
local function call(keys, argv)
  KEYS, ARGV = keys, argv
  now_ms, now_text, campaign_id, client_id, rules, nonce, passes = unpack(ARGV, 1, HEAD_ARGS)
  now_ms, rules, nonce, passes = now_ms + 0, rules + 0, nonce + 0, passes + 0
  nonce_at = RULE_KEYS_AT + rules + 1
  pass_at = nonce_at + nonce
  keys_per_claim, args_per_claim = pass_at - 1 + passes, CLAIM_ARGS + RULE_ARGS * rules
  fields, written, keep_ms, rejected, newest_hit, coarse_log, ev, events =
    {}, {}, {}, {}, {}, {}, {}, 0
  local claims = (#KEYS - HEAD_KEYS) / keys_per_claim
  read(claims)
  local granted_before, results, k, a = granted, {}, HEAD_KEYS, HEAD_ARGS
  for nth = 1, claims do
    local o = 4 * nth
    results[o - 3], results[o - 2], results[o - 1], results[o] = decide(nth, k, a)
    k, a = k + keys_per_claim, a + args_per_claim
  end
  write(granted_before)
  for e = 0, 6 * (events - 1), 6 do
    if ev[e + 5] then
      append(e, ev[e + 1], ev[e + 2], ev[e + 3], ev[e + 4], ev[e + 5], ev[e + 6])
    else
      append(e, ev[e + 1], ev[e + 2], ev[e + 3], ev[e + 4])
    end
  end
  return results
end
