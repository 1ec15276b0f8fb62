-- admin_state.lua: pause or resume a campaign, with its event.
-- KEYS[1] campaign hash   KEYS[2] event stream
-- ARGV[1] campaign id  ARGV[2] '1' pause | '0' resume  ARGV[3] now RFC 3339  ARGV[4] max length
-- ARGV[5] actor (the admin user's name)  ARGV[6] the actor's IP
-- The event carries `paused_before` ('0' | '1'): a pause of a paused campaign changed nothing.
-- Returns 1 when the campaign exists, 0 otherwise.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local was = redis.call('HGET', KEYS[1], 'paused') or '0'
redis.call('HSET', KEYS[1], 'paused', ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'type',
           ARGV[2] == '1' and 'campaign.paused' or 'campaign.resumed', 'ts', ARGV[3],
           'campaign_id', ARGV[1], 'actor', ARGV[5], 'actor_ip', ARGV[6], 'paused_before', was)
return 1
