-- pending_lease.lua: take the redemptions due for a look, leasing each so only one worker
-- looks at a time (its score moves to now + lease; a settle removes it).
-- KEYS[1] pending redemptions (sorted set: ms of the next look)
-- ARGV[1] now (ms)   ARGV[2] lease (ms)   ARGV[3] at most this many
-- Returns the redemption ids taken.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for i = 1, #due do
  redis.call('ZADD', KEYS[1], 'XX', tonumber(ARGV[1]) + tonumber(ARGV[2]), due[i])
end
return due
