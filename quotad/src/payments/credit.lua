-- Credits a settled payment (quotad/src/payments.rs): once per ledger entry.
--
-- KEYS     [1] the balance `tollgate:v1:{<domain>:<consumer>}:$credits` (no TTL), [2] the
--          ledger entry `...:$ledger:<digest>`, [3] the consumer's open claims (open.lua).
-- ARGV     [1] credits, [2] the ledger entry's TTL (s), [3] the payment's replay key.
-- Returns  { added (1 or 0), the balance after }.
redis.call('ZREM', KEYS[3], ARGV[3])
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then
  return { 1, redis.call('INCRBY', KEYS[1], ARGV[1]) }
end
return { 0, tonumber(redis.call('GET', KEYS[1]) or '0') }
