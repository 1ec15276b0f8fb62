-- wrk script: every request is a fresh claim (new user_id, device_id and Idempotency-Key).
--
--   wrk -t1 -c64 -d10s --latency -s bench/claim.lua http://127.0.0.1:PORT/v1/campaigns/ID/claims
--   wrk ... -s bench/claim.lua URL -- 50000    # each thread stops after 50000 responses
--
-- Randomness is wrk's math.random, seeded per thread from the clock and the thread number.

local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_no", threads)
end

local function hex()
  return string.format("%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
end

function init(args)
  math.randomseed(os.time() * 1000 + (thread_no or 0) * 7919 + math.floor(os.clock() * 1e6))
  local cap = tonumber(args[1])
  if cap then
    -- defined only when capped: wrk skips response parsing when no response() exists
    local seen = 0
    function response()
      seen = seen + 1
      if seen >= cap then
        wrk.thread:stop()
      end
    end
  end
end

function request()
  local id = hex()
  local body = '{"user_id":"u-' .. id .. '","device_id":"d-' .. id .. '"}'
  return wrk.format("POST", nil, {
    ["Authorization"] = "Bearer bench-key",
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = "k-" .. id .. hex(),
  }, body)
end
