-- card_add.lua: append encrypted card secrets to a campaign's pool, with an admin event.
-- KEYS[1] campaign hash   KEYS[2] card pool (list)   KEYS[3] event stream
-- ARGV[1] campaign id   ARGV[2] now as RFC 3339   ARGV[3] stream max length
-- ARGV[4] actor (the admin user's name)   ARGV[5] the actor's IP
-- ARGV[6 ..] sealed cards (never plaintext: the gateway encrypts before calling)
-- Returns the pool size after the call, or -1 when there is no such campaign.
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local sealed = {}
for i = 6, #ARGV do sealed[#sealed + 1] = ARGV[i] end
local size = redis.call('RPUSH', KEYS[2], unpack(sealed))
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'type', 'campaign.cards_added',
           'ts', ARGV[2], 'campaign_id', ARGV[1], 'actor', ARGV[4], 'actor_ip', ARGV[5],
           'count', #sealed, 'pool_size', size)
return size
