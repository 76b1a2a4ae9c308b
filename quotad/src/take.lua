-- quotad's decision: check every limit of one request, then take from all of them or from none.
--
-- KEYS[i]  the counter of limit i: `tollgate:v1:{<domain>:<consumer>}:<limit>:<window>:<start>`
--          (one consumer's keys share one hash tag, so one Redis Cluster slot).
-- ARGV     three per key, in KEYS order: ARGV[3i-2] the limit's size (requests),
--          ARGV[3i-1] the hits to add (0 = only look), ARGV[3i] the key's TTL in seconds
--          (until the window's end plus a margin), applied when the key is created.
-- Returns  { admitted (1 or 0), used_1, ..., used_n }: each counter's value before this request.
--
-- A counter exists only once something was taken from it, and always with a TTL.
local used = {}
local admitted = 1
for i = 1, #KEYS do
  used[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used[i] + tonumber(ARGV[3 * i - 1]) > tonumber(ARGV[3 * i - 2]) then
    admitted = 0
  end
end
if admitted == 1 then
  for i = 1, #KEYS do
    local hits = tonumber(ARGV[3 * i - 1])
    if hits > 0 then
      if used[i] == 0 then
        redis.call('SET', KEYS[i], hits, 'EX', ARGV[3 * i])
      else
        redis.call('INCRBY', KEYS[i], hits)
      end
    end
  end
end
local reply = { admitted }
for i = 1, #KEYS do
  reply[i + 1] = used[i]
end
return reply
