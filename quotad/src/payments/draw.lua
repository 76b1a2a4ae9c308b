-- Pays one request from a consumer's prepaid balance and counts it in the limits credits do
-- not stand in for: all of it, or nothing (quotad/src/payments.rs).
--
-- KEYS     [1] the balance (credit.lua), [2..] the other limits' counters (take.lua).
-- ARGV     [1] the cost; then three per counter, in KEYS order from KEYS[2]: its size, the
--          hits to add, its TTL in seconds (applied when it is created).
-- Returns  { drawn (1 or 0), the balance after, used_1, ..., used_n } (counts before).
local cost = tonumber(ARGV[1])
local balance = tonumber(redis.call('GET', KEYS[1]) or '0')
local drawn = 1
if balance < cost then drawn = 0 end
local used = {}
for j = 1, #KEYS - 1 do
  used[j] = tonumber(redis.call('GET', KEYS[j + 1]) or '0')
  if used[j] + tonumber(ARGV[3 * j]) > tonumber(ARGV[3 * j - 1]) then
    drawn = 0
  end
end
if drawn == 1 then
  if cost > 0 then
    balance = redis.call('DECRBY', KEYS[1], ARGV[1])
  end
  for j = 1, #KEYS - 1 do
    local hits = tonumber(ARGV[3 * j])
    if hits > 0 then
      if used[j] == 0 then
        redis.call('SET', KEYS[j + 1], hits, 'EX', ARGV[3 * j + 1])
      else
        redis.call('INCRBY', KEYS[j + 1], hits)
      end
    end
  end
end
local reply = { drawn, balance }
for j = 1, #used do
  reply[j + 2] = used[j]
end
return reply
