-- KEYS: the permits, the endpoint's health, its limit history.
-- ARGV: 1 concurrency, 2 wanted, 3 lease ms, 4 token prefix, 5 adaptive (1/0),
-- 6 breaker failures (0: never), 7 and 8 the breaker window's least and most ms,
-- 9 good, 10 overload, 11 failed, 12 Retry-After ms, 13 last error, 14... permits given back.
-- Reply: wait ms (a pause or an open breaker), healthy (1/0), permits in use over the limit,
-- permits in use, the breaker's change ('closed>open', or ''), then the permits granted.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = redis.call('ZCARD', KEYS[1])
for i = 14, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
end
local concurrency = tonumber(ARGV[1])
local h = redis.call('HMGET', KEYS[2], 'limit', 'state', 'failures', 'open_until',
                     'pause_until', 'window', 'probe_until', 'down_since', 'streak_since',
                     'cool')
local limit = tonumber(h[1]) or concurrency
local state = h[2] or 'closed'
local failures = tonumber(h[3]) or 0
local open_until = tonumber(h[4]) or 0
local pause_until = tonumber(h[5]) or 0
local window = tonumber(h[6]) or tonumber(ARGV[7])
local probe_until = tonumber(h[7]) or 0
local down_since = tonumber(h[8]) or 0
local streak_since = tonumber(h[9]) or 0
local cool = tonumber(h[10]) or 0
local was = {limit, state, failures, pause_until, probe_until}
local good, overload, failed = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
if ARGV[5] ~= '1' then
  limit = concurrency
elseif overload > 0 then
  limit = math.max(1, math.min(limit * 0.9, out - overload))
elseif good > 0 and out >= math.floor(limit) then  -- grow only when the limit was used
  limit = limit + good / (4 * limit)
end
limit = math.min(limit, concurrency)
if good > 0 then
  failures, cool = 0, 0
elseif failed > 0 then
  if failures == 0 then streak_since = now end
  failures = failures + failed
end
-- Refused even at one request at a time, with no good answer for PACE_AFTER ms: pace the
-- job (100 ms, doubling to 1 s) until an answer is good, so a dead endpoint is not hammered
-- before the breaker opens. A flaky endpoint (60 % refused) answers well every few requests,
-- well within that; pacing each of its refusals made a storm crawl at a few records a second.
local PACE_AFTER = 250
if overload > 0 and limit <= 1 and good == 0 and failures > 0
    and now - streak_since >= PACE_AFTER then
  cool = math.min(math.max(cool * 2, 100), 1000)
  pause_until = math.max(pause_until, now + cool)
end
if tonumber(ARGV[12]) > 0 then pause_until = math.max(pause_until, now + tonumber(ARGV[12])) end
if state == 'open' and now >= open_until then
  state = 'half-open'
  probe_until = 0
end
if state == 'half-open' and good > 0 then
  state, window, failures, probe_until, down_since = 'closed', tonumber(ARGV[7]), 0, 0, 0
elseif state == 'half-open' and failed > 0 then
  window = math.min(window * 2, tonumber(ARGV[8]))
  state, open_until, probe_until = 'open', now + window, 0
elseif state == 'closed' and tonumber(ARGV[6]) > 0 and failures >= tonumber(ARGV[6])
    and now - streak_since >= 500 then  -- a burst refused at once is load, not an outage
  state, open_until, down_since = 'open', now + window, now
end
local wanted = tonumber(ARGV[2])
local wait = 0
if pause_until > now then wait = pause_until - now end
if state == 'open' then wait = math.max(wait, open_until - now) end
if state == 'half-open' and wait == 0 and wanted > 0 then
  if probe_until > now then
    wait = 1000  -- another task's probe is out: its answer decides
  else
    wanted, probe_until = 1, now + tonumber(ARGV[3])
  end
end
local in_use = redis.call('ZCARD', KEYS[1])
local moved = ''
if h[2] ~= false and h[2] ~= state then moved = h[2] .. '>' .. state end
local reply = {wait, '0', math.max(0, in_use - math.floor(limit)), in_use, moved}
if wait == 0 and wanted > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  local n = math.min(math.floor(limit) - redis.call('ZCARD', KEYS[1]), wanted)
  for i = 1, n do
    local token = ARGV[4] .. ':' .. i
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), token)
    reply[#reply + 1] = token
  end
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) + 60000)
end
if state == 'closed' and limit >= concurrency and failures == 0 and pause_until <= now then
  reply[2] = '1'
end
if h[2] == false or was[1] ~= limit or was[2] ~= state or was[3] ~= failures
    or was[4] ~= pause_until or was[5] ~= probe_until then
  redis.call('HSET', KEYS[2], 'limit', limit, 'state', state, 'failures', failures,
             'open_until', open_until, 'pause_until', pause_until, 'window', window,
             'probe_until', probe_until, 'down_since', down_since,
             'streak_since', streak_since, 'cool', cool)
  if h[2] == false or was[2] ~= state then
    redis.call('HSET', KEYS[2], 'since', now)
  end
  if failed > 0 then redis.call('HSET', KEYS[2], 'last_error', ARGV[13]) end
  if overload > 0 then redis.call('HINCRBY', KEYS[2], 'refused', overload) end
  if h[2] == false or math.floor(was[1]) ~= math.floor(limit) or was[2] ~= state then
    redis.call('RPUSH', KEYS[3], cjson.encode({now / 1000, limit, state}))
    redis.call('LTRIM', KEYS[3], -120, -1)
    redis.call('PEXPIRE', KEYS[3], 86400000)
  end
  redis.call('PEXPIRE', KEYS[2], 86400000)
end
return reply
