-- The newest ARGV[1] entries of a task's attempt log, oldest first.
-- KEYS[1] task hash (entries "l:<n>", the last one numbered "logn"), KEYS[2] the list that held
-- the log before it moved into the task hash: statuses written before then keep it until they
-- expire, so it is read first.
local want = tonumber(ARGV[1])
local n = tonumber(redis.call('HGET', KEYS[1], 'logn') or '0')
local out = {}
if n < want then
  out = redis.call('LRANGE', KEYS[2], n - want, -1)
end
local first = math.max(1, n - want + 1)
if n >= first then
  local fields = {}
  for i = first, n do fields[#fields + 1] = 'l:' .. string.format('%d', i) end
  local vals = redis.call('HMGET', KEYS[1], unpack(fields))
  for i = 1, #vals do
    if vals[i] then out[#out + 1] = vals[i] end
  end
end
return out
