-- Sets the state of a payment's claim (quotad/src/payments.rs).
--
-- KEYS[1]  the claim (claim.lua).
-- ARGV     [1] the state (ClaimState; 0 drops the claim), [2] now (ms), [3] seconds a claim
--          is kept at least once its settlement began.
-- Returns  { found (1 or 0), the consumer who presented it ('' if none), its state after the
--          call (0: dropped) }. SETTLED is final:
--          a late mark from another request never downgrades it, and a claim whose money may
--          have moved (SETTLED, UNKNOWN) is never dropped.
local claim = redis.call('HMGET', KEYS[1], 's', 'c')
if not claim[1] then return { 0, '', 0 } end
local state = tonumber(ARGV[1])
local now_state = tonumber(claim[1])
if state == 0 then
  if now_state == 3 or now_state == 5 then return { 1, claim[2], now_state } end
  redis.call('DEL', KEYS[1])
  return { 1, claim[2], 0 }
end
if now_state == 3 and state ~= 3 then return { 1, claim[2], now_state } end
redis.call('HSET', KEYS[1], 's', state, 't', ARGV[2])
if state == 2 and redis.call('TTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return { 1, claim[2], state }
