-- A consumer's claims not settled yet, bounded (quotad/src/payments.rs).
--
-- KEYS[1]  `tollgate:v1:{<domain>:<consumer>}:$open`: a sorted set of replay keys, each
--          scored by when its claim expires (Unix s).
-- ARGV     [1] the replay key, [2] when its claim expires (Unix s), [3] now (Unix s), [4] the
--          most a consumer may have open, [5] 1 adds, 0 removes.
-- Returns  1, or 0 when the consumer has that many open already (nothing added).
if ARGV[5] == '0' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
if not redis.call('ZSCORE', KEYS[1], ARGV[1])
    and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local ttl = tonumber(ARGV[2]) - tonumber(ARGV[3])
if redis.call('TTL', KEYS[1]) < ttl then
  redis.call('EXPIRE', KEYS[1], math.max(ttl, 1))
end
return 1
