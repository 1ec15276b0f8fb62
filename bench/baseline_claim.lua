-- Baseline claim: the whole decision in one call (bench/baseline.py, the "obvious lean design").
--
-- KEYS[1] idempotency key   (string: "<fingerprint>|<status>|<response body>")
-- KEYS[2] per-IP window     (sorted set, sliding log: member = claim id, score = ms)
-- KEYS[3] per-user window   (sorted set, same)
-- KEYS[4] user allowance    (integer: grants this user got in the campaign)
-- KEYS[5] stock left        (integer)
-- KEYS[6] granted count     (integer)
-- KEYS[7] voucher           (hash)
-- KEYS[8] event stream
-- ARGV[1] now (ms)
-- ARGV[2] per-IP window (ms)  ARGV[3] per-IP limit
-- ARGV[4] per-user window (ms) ARGV[5] per-user limit
-- ARGV[6] per-user allowance  ARGV[7] idempotency TTL (s) ARGV[8] request fingerprint
-- ARGV[9] claim id            ARGV[10] 201 body         ARGV[11] voucher code
-- ARGV[12] user id            ARGV[13] device id        ARGV[14] ip
-- ARGV[15] expires_at (RFC 3339)                        ARGV[16] voucher TTL (s)
-- ARGV[17] campaign id
--
-- Returns {status, body}: 201 granted, 409 sold_out / limit_reached, 429 rate limited (body is
-- Retry-After in seconds), 422 key reused with another body; a negative status is a replay of
-- the stored answer. Every check runs before the first write, except pruning expired window
-- entries, which changes no decision.
local now = tonumber(ARGV[1])
local ip_window, ip_limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local user_window, user_limit = tonumber(ARGV[4]), tonumber(ARGV[5])
local allowance = tonumber(ARGV[6])
local idem_ttl = tonumber(ARGV[7])
local fingerprint = ARGV[8]
local claim_id = ARGV[9]

local stored = redis.call('GET', KEYS[1])
if stored then
  local fp, status, body = string.match(stored, '^([^|]*)|(%d+)|(.*)$')
  if fp ~= fingerprint then
    return {422, ''}
  end
  return {-tonumber(status), body}
end

local function full(key, window, limit)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  return redis.call('ZCARD', key) >= limit
end

if full(KEYS[2], ip_window, ip_limit) then
  return {429, tostring(math.ceil(ip_window / 1000))}
end
if full(KEYS[3], user_window, user_limit) then
  return {429, tostring(math.ceil(user_window / 1000))}
end

local status, code = 201, ''
if tonumber(redis.call('GET', KEYS[4]) or '0') >= allowance then
  status, code = 409, 'limit_reached'
elseif tonumber(redis.call('GET', KEYS[5]) or '0') <= 0 then
  status, code = 409, 'sold_out'
end
local body = ARGV[10]
if status ~= 201 then
  body = '{"error":{"code":"' .. code .. '","message":"' .. code:gsub('_', ' ') .. '"}}'
end

-- writes
redis.call('ZADD', KEYS[2], now, claim_id)
redis.call('PEXPIRE', KEYS[2], ip_window)
redis.call('ZADD', KEYS[3], now, claim_id)
redis.call('PEXPIRE', KEYS[3], user_window)
if status == 201 then
  redis.call('DECR', KEYS[5])
  redis.call('INCR', KEYS[4])
  redis.call('INCR', KEYS[6])
  redis.call('HSET', KEYS[7], 'claim_id', claim_id, 'campaign_id', ARGV[17], 'user_id', ARGV[12],
    'device_id', ARGV[13], 'state', 'issued', 'expires_at', ARGV[15])
  redis.call('EXPIRE', KEYS[7], tonumber(ARGV[16]))
end
redis.call('SET', KEYS[1], fingerprint .. '|' .. status .. '|' .. body, 'EX', idem_ttl)
redis.call('XADD', KEYS[8], '*', 'type', status == 201 and 'claim_granted' or 'claim_rejected',
  'ts', ARGV[1], 'campaign_id', ARGV[17], 'user_id', ARGV[12], 'device_id', ARGV[13],
  'ip', ARGV[14], 'claim_id', claim_id, 'voucher_code', status == 201 and ARGV[11] or '',
  'code', code)
return {status, body}
