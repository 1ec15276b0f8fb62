-- voucher_state.lua: freeze or unfreeze a voucher (admin), with its event.
-- KEYS[1] voucher   KEYS[2] event stream
-- ARGV[1] 'freeze' | 'unfreeze'   ARGV[2] now as RFC 3339   ARGV[3] stream max length
-- ARGV[4] masked code   ARGV[5] claim id (the code's look-up digest: events never carry a code)
-- ARGV[6] actor (the admin user's name)   ARGV[7] the actor's IP
-- Returns 0 no such voucher, 1 done (or already so), 2 already redeemed, 3 being redeemed,
-- 4 revoked. The record is lua/claim.lua's: a state letter first ('x': a refused claim, no
-- voucher; 'v' revoked, lua/voucher_revoke.lua).
local SEP = '\31'
local raw = redis.call('GET', KEYS[1])
local state = raw and string.sub(raw, 1, 1)
if not raw or state == 'x' then return 0 end
if state == 'd' then return 2 end
if state == 'r' then return 3 end
if state == 'v' then return 4 end
local target = ARGV[1] == 'freeze' and 'f' or 'i'
if state ~= target then
  redis.call('SET', KEYS[1], target .. string.sub(raw, 2), 'KEEPTTL')
  local parts = {}
  for part in string.gmatch(raw, '([^' .. SEP .. ']+)') do parts[#parts + 1] = part end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'type',
             ARGV[1] == 'freeze' and 'voucher.frozen' or 'voucher.unfrozen', 'ts', ARGV[2],
             'campaign_id', parts[3], 'user_id', parts[4], 'voucher_code', ARGV[4],
             'claim_id', ARGV[5], 'actor', ARGV[6], 'actor_ip', ARGV[7])
end
return 1
