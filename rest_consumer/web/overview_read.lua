-- KEYS, 7 per job: heartbeats, counters, last error, dead-letter index, index-rebuilt mark,
-- the throughput window before the current one, the current one. ARGV: the number of
-- sparkline buckets, how many of them lie in the window before, then their field names,
-- oldest first.
local n, split = tonumber(ARGV[1]), tonumber(ARGV[2])
local found = {}
for j = 0, #KEYS / 7 - 1 do
  local k = j * 7
  local spark = {}
  for b = 1, n do
    local window = KEYS[k + (b <= split and 6 or 7)]
    spark[b] = redis.call('HGET', window, ARGV[2 + b]) or false
  end
  found[j + 1] = {redis.call('HGETALL', KEYS[k + 1]), redis.call('HGETALL', KEYS[k + 2]),
                  redis.call('GET', KEYS[k + 3]), redis.call('ZCARD', KEYS[k + 4]),
                  redis.call('EXISTS', KEYS[k + 5]), spark}
end
return found
