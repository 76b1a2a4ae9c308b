-- A payment's claim (fleet mode's payments API: quotad/src/payments.rs, docs/payments.md).
--
-- KEYS[1]  the claim, `tollgate:v1:claim:{<domain>:<replay key>}`: a hash of s (its state, as
--          tollgate.payments.v1.ClaimState numbers it), c (the consumer who presented it) and
--          t (when the state was set, ms).
-- ARGV     [1] consumer, [2] now (ms), [3] stale after (ms), [4] kept until (Unix s) when
--          created, [5] untimely (1: create nothing, drop a stale verification), [6] look (1:
--          change nothing), [7] seconds a claim is kept at least once its settlement began,
--          [8] a SETTLING claim is stale after (ms; 0: as [3]).
-- Returns  { outcome, state }: tollgate.payments.v1.Claimed and ClaimState numbers.
local FRESH, RETRY, BUSY, SETTLED, FAILED, TAKEN, UNTIMELY, ABSENT = 1, 2, 3, 4, 5, 6, 8, 9
local VERIFYING, SETTLING, S_SETTLED, S_FAILED = 1, 2, 3, 4
local now = tonumber(ARGV[2])
local look = ARGV[6] == '1'
local untimely = ARGV[5] == '1'
local claim = redis.call('HMGET', KEYS[1], 's', 'c', 't')
if not claim[1] then
  if look then return { ABSENT, 0 } end
  -- Nothing may have happened to it yet: its time is checked.
  if untimely then return { UNTIMELY, 0 } end
  redis.call('HSET', KEYS[1], 's', VERIFYING, 'c', ARGV[1], 't', now)
  redis.call('EXPIREAT', KEYS[1], ARGV[4])
  return { FRESH, VERIFYING }
end
local state = tonumber(claim[1])
if claim[2] ~= ARGV[1] then
  if look then return { ABSENT, 0 } end
  return { TAKEN, state }
end
if look then return { 0, state } end
if state == S_SETTLED then return { SETTLED, state } end
if state == S_FAILED then return { FAILED, state } end
local stale_after = tonumber(ARGV[3])
if state == SETTLING and tonumber(ARGV[8]) > 0 then stale_after = tonumber(ARGV[8]) end
local stale = now - tonumber(claim[3] or '0') > stale_after
if (state == VERIFYING or state == SETTLING) and not stale then return { BUSY, state } end
if state == VERIFYING then
  -- A verification nobody finished moved no money: taken over if it can still be settled,
  -- dropped otherwise.
  if untimely then
    redis.call('DEL', KEYS[1])
    return { UNTIMELY, 0 }
  end
  redis.call('HSET', KEYS[1], 't', now)
  return { FRESH, VERIFYING }
end
-- SETTLING gone stale, or UNKNOWN: the money may have moved: settled again, whatever its time.
redis.call('HSET', KEYS[1], 's', SETTLING, 't', now)
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[7]) then
  redis.call('EXPIRE', KEYS[1], ARGV[7])
end
return { RETRY, SETTLING }
