-- admin_stock.lua: add (or with a negative n, remove) stock; stock left is clamped at 0.
-- KEYS[1] campaign hash   KEYS[2] event stream
-- ARGV[1] campaign id  ARGV[2] n  ARGV[3] now as RFC 3339  ARGV[4] stream max length
-- ARGV[5] actor (the admin user's name)  ARGV[6] the actor's IP
-- Returns {found (0|1), stock_added, stock_left}. stock_added moves by what was really added
-- or removed, so granted == stock_added - stock_left always holds. The event carries the
-- asked `add`, `stock_left_before` and the resulting `stock_left` and `stock_added`.
local left = redis.call('HGET', KEYS[1], 'stock_left')
if not left then return {0, 0, 0} end
left = tonumber(left)
local new_left = math.max(0, left + tonumber(ARGV[2]))
local added = redis.call('HINCRBY', KEYS[1], 'stock_added', new_left - left)
redis.call('HSET', KEYS[1], 'stock_left', new_left)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'type', 'campaign.stock_changed',
           'ts', ARGV[3], 'campaign_id', ARGV[1], 'actor', ARGV[5], 'actor_ip', ARGV[6],
           'add', ARGV[2], 'stock_left_before', left, 'stock_left', new_left,
           'stock_added', added, 'added', new_left - left)
return {1, added, new_left}
