-- admin_state.lua: pause or resume a campaign, with its event.
-- KEYS[1] campaign hash   KEYS[2] event stream
-- ARGV[1] campaign id  ARGV[2] '1' pause | '0' resume  ARGV[3] now RFC 3339  ARGV[4] max length
-- Returns 1 when the campaign exists, 0 otherwise.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'paused', ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'type',
           ARGV[2] == '1' and 'campaign.paused' or 'campaign.resumed', 'ts', ARGV[3],
           'campaign_id', ARGV[1])
return 1
