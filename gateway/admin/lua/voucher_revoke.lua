-- voucher_revoke.lua: revoke an unredeemed voucher (admin), optionally giving its unit back to
-- stock and its allowances back to its owner, with its event, in one atomic step.
-- KEYS[1] voucher   KEYS[2] its campaign hash   KEYS[3] event stream
-- ARGV[1] '1' to return the stock, else '0'   ARGV[2] reason   ARGV[3] now as RFC 3339
-- ARGV[4] stream max length   ARGV[5] masked code   ARGV[6] claim id   ARGV[7] actor
-- ARGV[8] the actor's IP   ARGV[9] the voucher record as the caller read it, without its state
-- letter (the campaign and the allowance fields were derived from it)   ARGV[10] the owner's
-- user allowance field   ARGV[11] the device allowance field the grant counted, '' for none
-- ARGV[12] the grant's local day ('' when the campaign counts no days)   ARGV[13] the owner's
-- daily field ('' for none)
-- Returns {outcome, returned (0|1)}, outcomes numbered as gateway/records.py `Outcome`:
--   0 revoked now or before (returned: as the first revoke decided)   4 no such voucher
--   12 redeemed   15 the record is not the one the caller read: read it again
--   22 a direct recharge is in flight
-- The record (gateway/records.py) goes from 'i' or 'f' to 'v', its fields kept, then whether
-- the unit was returned: a replayed claim still answers its 201, a redemption 409 revoked.
-- With the stock returned: stock_left and `returned` + 1 (so stock_added - stock_left ==
-- granted - returned), the leading grant count of the owner's user field and of the device
-- field the grant counted - 1, and, when the grant's day is still the one counted, today's
-- grants and the owner's daily grants - 1 (the budget follows `returned`).
local SEP = '\31'
local OK, NOT_FOUND, REDEEMED, STALE, PENDING = 0, 4, 12, 15, 22

local raw = redis.call('GET', KEYS[1])
local state = raw and string.sub(raw, 1, 1)
if not raw or state == 'x' then return {NOT_FOUND, 0} end
local v = {}
for part in string.gmatch(raw, '([^' .. SEP .. ']+)') do v[#v + 1] = part end
if state == 'v' then return {OK, v[6] + 0} end
if state == 'd' then return {REDEEMED, 0} end
if state == 'r' then return {PENDING, 0} end
if string.sub(raw, 2) ~= ARGV[9] then return {STALE, 0} end

local returned = ARGV[1] == '1'
redis.call('SET', KEYS[1], 'v' .. SEP .. v[2] .. SEP .. v[3] .. SEP .. v[4] .. SEP ..
           (v[5] or '-') .. SEP .. (returned and '1' or '0'), 'KEEPTTL')
redis.call('HINCRBY', KEYS[2], 'revoked', 1)

-- One grant less in an allowance field: its leading count, whatever follows it.
local function give_back(field)
  local value = redis.call('HGET', KEYS[2], field)
  local count, rest = string.match(value or '', '^(%d+)(.*)$')
  if count and count + 0 > 0 then
    redis.call('HSET', KEYS[2], field, string.format('%d', count - 1) .. rest)
  end
end

if returned then
  redis.call('HINCRBY', KEYS[2], 'stock_left', 1)
  redis.call('HINCRBY', KEYS[2], 'returned', 1)
  give_back(ARGV[10])
  if ARGV[11] ~= '' then give_back(ARGV[11]) end
  -- A day field holds 'day,grants' of the day it last counted: only that day gives back.
  for _, field in ipairs({ARGV[12] ~= '' and 'today' or nil, ARGV[13] ~= '' and ARGV[13] or nil}) do
    local day, count = string.match(redis.call('HGET', KEYS[2], field) or '', '^(%d+),(%d+)$')
    if day == ARGV[12] and count + 0 > 0 then
      redis.call('HSET', KEYS[2], field, day .. ',' .. (count - 1))
    end
  end
end

redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'type', 'voucher.revoked', 'ts', ARGV[3],
           'campaign_id', v[3], 'user_id', v[4], 'voucher_code', ARGV[5], 'claim_id', ARGV[6],
           'actor', ARGV[7], 'actor_ip', ARGV[8], 'reason', ARGV[2],
           'returned', returned and 'true' or 'false')
return {OK, returned and 1 or 0}
