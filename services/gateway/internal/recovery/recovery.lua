-- Every change to a recovery's record, so that each is atomic and checks that the caller still
-- owns the recovery: a gateway that lost its lease (it stalled past it and another took over)
-- must not write progress, claim tasks or finish it.
--
-- KEYS[1] the recovery (hash), KEYS[2] the customer's active recoveries (set of ids),
-- KEYS[3] the customer's claims (hash: task id -> "<id of the recovery that re-sent it> <when that
-- recovery was created, unix microseconds>"),
-- KEYS[4] the customer's pacing clock (string: the next free send slot, unix microseconds),
-- KEYS[5] the recovery's re-deliveries not yet final (hash: task id -> "<stream sequence>:<queued
-- at, unix ms>")
-- ARGV[1] op, ARGV[2] recovery id, ARGV[3] owner token, ARGV[4] how long records are kept, s
--
-- Time is Redis's own, so leases and pacing agree across gateways whatever their clocks.
local rec, active, claims, pace, pending = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local op, id, owner, keep = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])

local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = math.floor(now_us / 1000)

local function kept()
  redis.call('EXPIRE', rec, keep)
  redis.call('EXPIRE', active, keep)
end

if op == 'create' then
  -- ARGV[5] lease ms, ARGV[6] most active recoveries per customer, ARGV[7..] fields
  local n = redis.call('SCARD', active)
  if n >= tonumber(ARGV[6]) then return {0, n} end
  for i = 7, #ARGV, 2 do redis.call('HSET', rec, ARGV[i], ARGV[i + 1]) end
  -- The recoveries running now overlap this one even if they end before it meets their tasks:
  -- claim asks for them.
  redis.call('HSET', rec, 'status', 'running', 'owner', owner, 'lease_ms', now + tonumber(ARGV[5]),
    'created_ms', now, 'created_us', string.format('%.0f', now_us), 'updated_ms', now,
    'overlaps', ' ' .. table.concat(redis.call('SMEMBERS', active), ' ') .. ' ')
  redis.call('SADD', active, id)
  kept()
  return {1, now}
end

local status = redis.call('HGET', rec, 'status')
local finished = status == 'done' or status == 'aborted' or status == 'cancelled'

if op == 'cancel' then
  -- Any gateway may cancel: the owner notices at its next step, which this makes fail.
  if not status then return {-1, 0} end
  if status == 'cancelled' then return {1, 0} end
  if finished then return {0, 0} end
  redis.call('HSET', rec, 'status', 'cancelled', 'finished_ms', now, 'updated_ms', now, 'lease_ms', 0)
  redis.call('SREM', active, id)
  redis.call('DEL', pending)
  if redis.call('SCARD', active) == 0 then redis.call('DEL', claims) end
  kept()
  return {1, 0}
end

if op == 'own' then
  -- ARGV[5] lease ms. Takes the recovery over when its lease ran out, or renews the caller's.
  if not status then
    redis.call('SREM', active, id)
    return {-1, 0}
  end
  if finished then return {-2, 0} end
  local holder = redis.call('HGET', rec, 'owner')
  local lease = tonumber(redis.call('HGET', rec, 'lease_ms') or '0')
  if holder ~= owner and lease > now then return {0, lease} end
  lease = now + tonumber(ARGV[5])
  redis.call('HSET', rec, 'owner', owner, 'lease_ms', lease)
  kept()
  return {1, lease}
end

if redis.call('HGET', rec, 'owner') ~= owner or finished then
  return {-1, 0}
end

if op == 'release' then
  -- A gateway that stops hands the recovery on at once instead of after its lease.
  redis.call('HSET', rec, 'lease_ms', 0)
  return {1, 0}
end

-- claimant reads a claim back: the recovery's id and when it was created (absent in claims made
-- before the creation time was kept).
local function claimant(v)
  if not v then return nil, nil end
  local hid, created = string.match(v, '^(%S+) (%d+)$')
  if hid then return hid, tonumber(created) end
  return v, nil
end

if op == 'claim' then
  -- ARGV[5] task id, ARGV[6] its index score, ARGV[7] pacing interval, microseconds
  local task = ARGV[5]
  local mine = tonumber(redis.call('HGET', rec, 'created_us') or '0')
  if mine == 0 then mine = tonumber(redis.call('HGET', rec, 'created_ms') or '0') * 1000 end
  local holder, since = claimant(redis.call('HGET', claims, task))
  -- Another recovery of this customer that ran while this one runs re-sent it: once is what
  -- both asked for. That one may have ended meanwhile: its re-delivery moved the task to the
  -- end of the index, inside this recovery's window when it was asked for just after, where
  -- the walk meets it last.
  local overlapped = holder and holder ~= id and (redis.call('SISMEMBER', active, holder) == 1
    or (since and since >= mine)
    or string.find(redis.call('HGET', rec, 'overlaps') or '', ' ' .. holder .. ' ', 1, true))
  if overlapped then
    redis.call('HINCRBY', rec, 'matched', 1)
    redis.call('HINCRBY', rec, 'skipped', 1)
    redis.call('HSET', rec, 'cursor_ms', ARGV[6], 'cursor_task', task, 'updated_ms', now)
    return {0, 0}
  end
  redis.call('HSET', claims, task, id .. ' ' .. string.format('%.0f', mine))
  redis.call('EXPIRE', claims, keep)
  -- One send slot every interval for the whole customer, whichever recovery or gateway sends.
  local interval = tonumber(ARGV[7])
  local slot = tonumber(redis.call('GET', pace) or '0')
  if slot < now_us then slot = now_us end
  local nxt = slot + interval
  redis.call('SET', pace, string.format('%.0f', nxt), 'PX', math.floor((nxt - now_us) / 1000) + 1000)
  return {1, slot - now_us}
end

if op == 'commit' then
  -- ARGV[5] task id, ARGV[6] its index score, ARGV[7] "queued" or "skipped", ARGV[8] chain
  local task = ARGV[5]
  redis.call('HINCRBY', rec, 'matched', 1)
  if ARGV[7] == 'queued' then
    redis.call('HINCRBY', rec, 'queued', 1)
    redis.call('HSET', pending, task, ARGV[8] .. ':' .. now)
    redis.call('EXPIRE', pending, keep)
  else
    redis.call('HINCRBY', rec, 'skipped', 1)
    if claimant(redis.call('HGET', claims, task)) == id then redis.call('HDEL', claims, task) end
  end
  redis.call('HSET', rec, 'cursor_ms', ARGV[6], 'cursor_task', task, 'updated_ms', now)
  return {1, 0}
end

if op == 'advance' then
  -- ARGV[5] index score, ARGV[6] task id: the walk is past every task up to this one.
  redis.call('HSET', rec, 'cursor_ms', ARGV[5], 'cursor_task', ARGV[6], 'updated_ms', now)
  return {1, 0}
end

if op == 'settle' then
  -- ARGV[5..] pairs: task id, outcome ("succeeded", "failed" or "other"). A pair is counted
  -- once, however often it is reported.
  for i = 5, #ARGV, 2 do
    if redis.call('HDEL', pending, ARGV[i]) == 1 then
      redis.call('HINCRBY', rec, 'done', 1)
      if ARGV[i + 1] == 'succeeded' or ARGV[i + 1] == 'failed' then
        redis.call('HINCRBY', rec, ARGV[i + 1], 1)
      end
    end
  end
  redis.call('HSET', rec, 'updated_ms', now)
  return {1, redis.call('HLEN', pending)}
end

if op == 'scanned' then
  redis.call('HSET', rec, 'status', 'delivering', 'scan_done', 1, 'updated_ms', now)
  return {1, 0}
end

if op == 'finish' then
  -- ARGV[5] final status, ARGV[6] error
  redis.call('HSET', rec, 'status', ARGV[5], 'error', ARGV[6], 'finished_ms', now, 'updated_ms', now,
    'lease_ms', 0)
  redis.call('SREM', active, id)
  redis.call('DEL', pending)
  -- Claims only matter while a recovery that made them runs.
  if redis.call('SCARD', active) == 0 then redis.call('DEL', claims) end
  kept()
  return {1, 0}
end

return redis.error_reply('recovery: unknown op ' .. tostring(op))
