-- redeem_settle.lua: move a supplier-delivered redemption on, only while it is still pending.
-- KEYS[1] redemption record  [2] event stream  [3] pending redemptions  [4] its voucher
-- ARGV[1] action: 'attempt' (about to call ARGV[5]) | 'pending' | 'delivered' | 'failed'
--   (definite no: the voucher is redeemable again) | 'release' (as failed, and the
--   idempotency record is dropped so the client may retry with the same key)
-- ARGV[2] now (ms)  [3] now as RFC 3339  [4] campaign key less its id  [5] supplier
--   [6] supplier ref  [7] ms of the next look (pending)  [8] stream max length
--   [9] failure code (failed, release)  [10] redemption id  [11] claim id (events only)
--   [12] the supplier's link, sealed ('' if none; delivered only, never evented)
-- The campaign id and idempotency key are learned from the record: the campaign key is
-- ARGV[4] with the id appended, the idempotency key is stored whole (keys.idempotency).
-- Returns the record's status after the call ('pending', 'delivered', 'failed'), or '' when
-- there is no such redemption. Anything but a pending record is left as it is.

local SEP = '\31'
local r = redis.call('HMGET', KEYS[1], 'status', 'code', 'campaign', 'user', 'idem', 'kind',
                     'device', 'ip', 'client')
local status = r[1]
if not status then return '' end
if status ~= 'pending' then return status end
local action = ARGV[1]

if action == 'attempt' then
  redis.call('HSET', KEYS[1], 'supplier', ARGV[5])
  return 'pending'
end
if action == 'pending' then
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'supplier', ARGV[5]) end
  redis.call('ZADD', KEYS[3], ARGV[7], ARGV[10])
  return 'pending'
end

-- The voucher record (gateway/records.py); one without a fingerprint holds the redemption id
-- fifth (docs/design/redemption-path.md).
local voucher_key = KEYS[4]
local raw = redis.call('GET', voucher_key)
local v = {}
for part in string.gmatch(raw or '', '([^' .. SEP .. ']+)') do v[#v + 1] = part end
local fingerprint, holder = v[5] or '-', v[6]
if not holder then fingerprint, holder = '-', v[5] end

local function emit(kind, extra)
  local fields = {'type', kind, 'ts', ARGV[3], 'campaign_id', r[3], 'user_id', r[4],
                  'device_id', r[7] or '', 'ip', r[8] or '', 'request_id', '',
                  'client_id', r[9] or '', 'redemption_id', ARGV[10],
                  'voucher_code', string.sub(r[2], 1, 4) .. '…' .. string.sub(r[2], -3),
                  'claim_id', ARGV[11]}
  for i = 1, #extra do fields[#fields + 1] = extra[i] end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', unpack(fields))
end

redis.call('ZREM', KEYS[3], ARGV[10])
if action == 'delivered' then
  redis.call('HSET', KEYS[1], 'status', 'delivered', 'supplier', ARGV[5], 'supplier_ref', ARGV[6],
             'updated', ARGV[2])
  if ARGV[12] ~= '' then redis.call('HSET', KEYS[1], 'link', ARGV[12]) end
  if v[1] then
    redis.call('SET', voucher_key, 'd' .. SEP .. v[2] .. SEP .. v[3] .. SEP .. v[4] .. SEP ..
               fingerprint .. SEP .. ARGV[10], 'KEEPTTL')
  end
  redis.call('HINCRBY', ARGV[4] .. r[3], 'redeemed', 1)
  emit('redemption.delivered', {'kind', r[6], 'supplier', ARGV[5]})
  return 'delivered'
end

-- failed or release: the voucher is redeemable again.
redis.call('HSET', KEYS[1], 'status', 'failed', 'failure', ARGV[9], 'updated', ARGV[2])
if v[1] == 'r' and holder == ARGV[10] then
  redis.call('SET', voucher_key, 'i' .. SEP .. v[2] .. SEP .. v[3] .. SEP .. v[4] .. SEP ..
             fingerprint, 'KEEPTTL')
end
if action == 'release' then redis.call('DEL', r[5]) end
emit('redemption.failed', {'kind', r[6], 'code', ARGV[9]})
return 'failed'
