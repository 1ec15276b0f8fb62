-- admin_campaign.lua: create or update a campaign, with its admin event, atomically.
-- KEYS[1] campaign hash   KEYS[2] event stream
-- ARGV[1] campaign id  ARGV[2] now as RFC 3339  ARGV[3] stream max length  ARGV[4] initial stock
-- ARGV[5] actor (the admin user's name)  ARGV[6] the actor's IP
-- ARGV[7 ..] field/value pairs of the campaign's configuration (stock is never among them).
-- A PUT replaces the configuration: an OPTIONAL field not among the pairs is removed.
-- (`periods` is derived from the period budgets for the claim function: docs/budgets.md.)
-- The event names the actor and what changed, as compact JSON of the stored text (null:
-- absent): `after` of every field on create; `before` and `after` of the changed fields on
-- update. It also carries every configured field as it now stands, and on create its stock.
-- Returns 1 when created, 0 when updated (stock untouched on update: use the stock endpoint).
local OPTIONAL = {'unit_cost', 'currency', 'daily_stock', 'daily_rollover', 'timezone',
                  'per_user_daily_limit', 'budget', 'periods'}
local created = redis.call('EXISTS', KEYS[1]) == 0
local names, values, given, pairs_ = {}, {}, {}, {}
for i = 7, #ARGV, 2 do
  names[#names + 1] = ARGV[i]
  values[#values + 1] = ARGV[i + 1]
  given[ARGV[i]] = ARGV[i + 1]
  pairs_[#pairs_ + 1] = ARGV[i]
  pairs_[#pairs_ + 1] = ARGV[i + 1]
end
local gone, read = {}, {}
for i, name in ipairs(names) do read[i] = name end
for _, name in ipairs(OPTIONAL) do
  if not given[name] then
    gone[#gone + 1] = name
    read[#read + 1] = name
  end
end
local old = redis.call('HMGET', KEYS[1], unpack(read))
redis.call('HSET', KEYS[1], unpack(pairs_))
if #gone > 0 then redis.call('HDEL', KEYS[1], unpack(gone)) end

local before, after = {}, {}
for i, name in ipairs(names) do
  if created or old[i] ~= values[i] then
    before[name] = old[i] or cjson.null
    after[name] = values[i]
  end
end
for j, name in ipairs(gone) do
  if old[#names + j] then
    before[name] = old[#names + j]
    after[name] = cjson.null
  end
end

local event = {'type', created and 'campaign.created' or 'campaign.updated', 'ts', ARGV[2],
               'campaign_id', ARGV[1], 'actor', ARGV[5], 'actor_ip', ARGV[6]}
if created then
  local stock = tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'stock_added', stock, 'stock_left', stock, 'granted', 0,
             'redeemed', 0, 'paused', 0)
  for _, field in ipairs({'stock', stock, 'stock_added', stock, 'stock_left', stock}) do
    event[#event + 1] = field
  end
else
  event[#event + 1] = 'before'
  event[#event + 1] = cjson.encode(before)
end
event[#event + 1] = 'after'
event[#event + 1] = cjson.encode(after)
-- The configuration as it now stands, field by field (the ledger reads expiry and cost here).
for i = 1, #pairs_ do event[#event + 1] = pairs_[i] end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(event))
return created and 1 or 0
