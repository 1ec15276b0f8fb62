-- redeem.lua: look a voucher up and deliver or reserve it, in one atomic step.
-- Every key shares the voucher's shard tag (the code's first two characters). The campaign and
-- card-pool keys are built here from the campaign id stored in the voucher, under the same
-- tag (ARGV[14]), so they are in this call's slot by construction.
--
-- KEYS[1] voucher   KEYS[2] idempotency record   KEYS[3] redemption record (the new id)
-- KEYS[4] event stream   KEYS[5] pending redemptions (sorted set: ms of next look)
--
-- ARGV[1] now (ms)   ARGV[2] request fingerprint   ARGV[3] redemption id   ARGV[4] masked code
-- ARGV[5] user id    ARGV[6] device id   ARGV[7] ip   ARGV[8] request id   ARGV[9] client id
-- ARGV[10] idempotency ttl (s)   ARGV[11] account ('' if none)   ARGV[12] now as RFC 3339
-- ARGV[13] stream max length   ARGV[14] key prefix of the tag ('gw:{XY}:')
-- ARGV[15] ms until a reservation is swept   ARGV[16] the voucher code
--
-- Returns {outcome, a, b}:
--   0 delivered (voucher or card_secret kind)  a = redemption id
--   1 replay                                   a = the stored record 'fp \31 kind \31 ...'
--   2 key reused with another body
--   4 voucher not found (missing, or not this user's)
--   11 reserved for a supplier call            a = sku, b = comma-separated supplier ids
--   12 voucher_redeemed   13 voucher_frozen   14 voucher_expired   15 request_in_progress
--   16 pool_empty         17 account required   21 voucher_revoked
-- Stored for replay: 0, 11 (the redemption id), 12, 14, 21.

local SEP = '\31'
local now = tonumber(ARGV[1])

local record = redis.call('GET', KEYS[2])
if record then
  if string.sub(record, 1, #ARGV[2]) ~= ARGV[2] then return {2, 0, 0} end
  return {1, record, 0}
end

-- The voucher: state, expiry, campaign, owner, the claim's fingerprint (the voucher is also
-- the claim's idempotency record, lua/claim.lua), then the redemption id while one holds it.
-- Vouchers granted before the fingerprint was kept have none ('-' is written in its place).
-- State 'x' is a refused claim stored for replay at the code it would have granted: no voucher.
local raw = redis.call('GET', KEYS[1])
if not raw then return {4, 0, 0} end
local v = {}
for part in string.gmatch(raw, '([^' .. SEP .. ']+)') do v[#v + 1] = part end
local state, expires, campaign_id, owner = v[1], tonumber(v[2]), v[3], v[4]
if state == 'x' or owner ~= ARGV[5] then return {4, 0, 0} end

local campaign_key = ARGV[14] .. 'c:' .. campaign_id

local function emit(kind, extra)
  local fields = {'type', kind, 'ts', ARGV[12], 'campaign_id', campaign_id, 'user_id', ARGV[5],
                  'device_id', ARGV[6], 'ip', ARGV[7], 'request_id', ARGV[8],
                  'client_id', ARGV[9], 'voucher_code', ARGV[4]}
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
  card = redis.call('LPOP', ARGV[14] .. 'cards:' .. campaign_id)
  if not card then return reject(16, 'pool_empty', false) end
elseif kind == 'direct_recharge' and ARGV[11] == '' then
  return {17, 0, 0}
end

-- Every check has passed: write the redemption.
local rid = ARGV[3]
local delivered = kind ~= 'direct_recharge'
redis.call('HSET', KEYS[3], 'client', ARGV[9], 'code', ARGV[16], 'user', ARGV[5],
           'campaign', campaign_id, 'kind', kind, 'status', delivered and 'delivered' or 'pending',
           'created', now, 'account', ARGV[11], 'idem', KEYS[2], 'sku', c[2] or '',
           'suppliers', c[3] or '', 'device', ARGV[6], 'ip', ARGV[7])
if card then redis.call('HSET', KEYS[3], 'card', card) end
redis.call('SET', KEYS[1], (delivered and 'd' or 'r') .. SEP .. v[2] .. SEP .. campaign_id ..
           SEP .. owner .. SEP .. (v[5] or '-') .. SEP .. rid, 'KEEPTTL')
redis.call('SET', KEYS[2], ARGV[2] .. SEP .. 'R' .. SEP .. rid, 'EX', ARGV[10])
if delivered then
  redis.call('HINCRBY', campaign_key, 'redeemed', 1)
  emit('redemption.delivered', {'redemption_id', rid, 'kind', kind})
  return {0, rid, 0}
end
redis.call('ZADD', KEYS[5], now + tonumber(ARGV[15]), rid)
emit('redemption.reserved', {'redemption_id', rid, 'kind', kind})
return {11, c[2] or '', c[3] or ''}
