-- admin_campaign.lua: create or update a campaign, with its admin event, atomically.
-- KEYS[1] campaign hash   KEYS[2] event stream
-- ARGV[1] campaign id  ARGV[2] now as RFC 3339  ARGV[3] stream max length  ARGV[4] initial stock
-- ARGV[5 ..] field/value pairs of the campaign's configuration (stock is never among them)
-- Returns 1 when created, 0 when updated (stock untouched on update: use the stock endpoint).
local created = redis.call('EXISTS', KEYS[1]) == 0
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
if created then
  local stock = tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'stock_added', stock, 'stock_left', stock, 'granted', 0,
             'redeemed', 0, 'paused', 0)
end
-- The event carries the configuration and, on create, the initial stock: the ledger
-- (backend/) needs them for voucher expiry, cost and the funnel's stock_added.
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'type',
           created and 'campaign.created' or 'campaign.updated', 'ts', ARGV[2],
           'campaign_id', ARGV[1], 'stock', created and ARGV[4] or '0', unpack(fields))
return created and 1 or 0
