-- redeem.lua: look a voucher up and deliver or reserve it, in one atomic step.
-- KEYS[1] voucher  [2] idempotency record  [3] redemption record (new id)  [4] event stream
--   [5] pending redemptions (sorted set: ms of the next look); all in the voucher's tag
-- ARGV[1] now (ms)  [2] request fingerprint  [3] redemption id  [4] masked code  [5] user id
--   [6] device id  [7] ip  [8] request id  [9] client id  [10] idempotency ttl (s)
--   [11] account ('' if none)  [12] now as RFC 3339  [13] stream max length
--   [14] campaign key less its id  [15] ms until a reservation is swept  [16] voucher code
--   [17] card pool key less its id  [18] claim id (events only)
-- The campaign id is learned here, from the voucher: its keys are ARGV[14] and ARGV[17] with
-- the id appended (keys.campaign / keys.card_pool of the voucher's tag and an empty id).
-- Returns {outcome, a, b} (gateway.records.Outcome): 0 delivered, a = kind SEP campaign id,
--   b = the pool card it took ('' if none): all the answer needs beyond the arguments;
--   1 replay, a = the stored record; 11 reserved (direct_recharge, link: for the suppliers),
--   a = sku, b = comma-separated supplier ids;
--   2 key reused; 4 not found (missing or not this user's); 12-16, 21 refused; 17 no account.
-- Stored for replay: 0, 11 (as the redemption id), 12, 14, 21.

local SEP = '\31'
local now = tonumber(ARGV[1])

local record = redis.call('GET', KEYS[2])
if record then
  if string.sub(record, 1, #ARGV[2]) ~= ARGV[2] then return {2, 0, 0} end
  return {1, record, 0}
end

-- The voucher record (layout: gateway/records.py); 'x' is a refused claim, not a voucher.
local raw = redis.call('GET', KEYS[1])
if not raw then return {4, 0, 0} end
local v = {}
for part in string.gmatch(raw, '([^' .. SEP .. ']+)') do v[#v + 1] = part end
local state, expires, campaign_id, owner = v[1], tonumber(v[2]), v[3], v[4]
if state == 'x' or owner ~= ARGV[5] then return {4, 0, 0} end

local campaign_key = ARGV[14] .. campaign_id

local function emit(kind, extra)
  local fields = {'type', kind, 'ts', ARGV[12], 'campaign_id', campaign_id, 'user_id', ARGV[5],
                  'device_id', ARGV[6], 'ip', ARGV[7], 'request_id', ARGV[8],
                  'client_id', ARGV[9], 'voucher_code', ARGV[4], 'claim_id', ARGV[18]}
  for i = 1, #extra do fields[#fields + 1] = extra[i] end
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[13], '*', unpack(fields))
end

local function reject(outcome, code, stored)
  if stored then
    redis.call('SET', KEYS[2], ARGV[2] .. SEP .. 'E' .. SEP .. outcome .. SEP .. ARGV[8],
               'EX', ARGV[10])
  end
  emit('redemption.rejected', {'code', code})
  return {outcome, 0, 0}
end

if state == 'd' then return reject(12, 'voucher_redeemed', true) end
if state == 'v' then return reject(21, 'voucher_revoked', true) end
if state == 'f' then return reject(13, 'voucher_frozen', false) end
if state == 'r' then return reject(15, 'request_in_progress', false) end
if now >= expires then return reject(14, 'voucher_expired', true) end

local c = redis.call('HMGET', campaign_key, 'kind', 'sku', 'suppliers')
local kind = c[1]
local card = false
if kind == 'card_secret' then
  card = redis.call('LPOP', ARGV[17] .. campaign_id)
  if not card then return reject(16, 'pool_empty', false) end
elseif kind == 'direct_recharge' and ARGV[11] == '' then
  return {17, 0, 0}
end

-- Every check has passed: write the redemption.
local rid = ARGV[3]
local delivered = kind ~= 'direct_recharge' and kind ~= 'link'
redis.call('HSET', KEYS[3], 'client', ARGV[9], 'code', ARGV[16], 'user', ARGV[5],
           'campaign', campaign_id, 'kind', kind, 'status', delivered and 'delivered' or 'pending',
           'created', now, 'account', ARGV[11], 'idem', KEYS[2], 'sku', c[2] or '',
           'suppliers', c[3] or '', 'device', ARGV[6], 'ip', ARGV[7])
if card then redis.call('HSET', KEYS[3], 'card', card) end
-- '-' stands in for a missing fingerprint, keeping the layout (docs/design/redemption-path.md).
redis.call('SET', KEYS[1], (delivered and 'd' or 'r') .. SEP .. v[2] .. SEP .. campaign_id ..
           SEP .. owner .. SEP .. (v[5] or '-') .. SEP .. rid, 'KEEPTTL')
redis.call('SET', KEYS[2], ARGV[2] .. SEP .. 'R' .. SEP .. rid, 'EX', ARGV[10])
if delivered then
  redis.call('HINCRBY', campaign_key, 'redeemed', 1)
  emit('redemption.delivered', {'redemption_id', rid, 'kind', kind})
  return {0, kind .. SEP .. campaign_id, card or ''}
end
redis.call('ZADD', KEYS[5], now + tonumber(ARGV[15]), rid)
emit('redemption.reserved', {'redemption_id', rid, 'kind', kind})
return {11, c[2] or '', c[3] or ''}
