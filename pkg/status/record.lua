-- One script for every change to a task's delivery status, so each change is atomic and the
-- ordering rules live in one place.
--
-- KEYS[1] task hash, KEYS[2] attempt log (list), KEYS[3] the customer's time index (sorted set),
-- KEYS[4] the customer's profile hash (only its version is read), KEYS[5] the task's deliveries
-- (hash: chain -> "q:<delivery>" once queued, "b:<delivery>" once begun)
-- ARGV[1]  op: "begin" | "finish" | "queue"
-- ARGV[2]  chain: stream sequence of the message that carries this delivery
-- ARGV[3]  now, unix ms
-- ARGV[4]  retention, seconds
-- ARGV[5]  webhook id
-- ARGV[6]  task JSON (stored on a new chain)
-- ARGV[7]  customer id
-- ARGV[8]  task id
-- begin:  ARGV[9] target, ARGV[10] max attempts
-- finish: ARGV[9] target, ARGV[10] attempt, ARGV[11] outcome, ARGV[12] log entry, ARGV[13] next attempt ms
--
-- A delivery is identified by its chain. A newer chain (a resend, or a new completion event for
-- the same task) supersedes an older one: the older one's results are logged but never change
-- the state or the flag again. Within a chain, "succeeded" is final and "failed" yields only to a
-- success. A superseded resend that never began gets one attempt of its own (each send-callback
-- request is one more delivery), but no retries: only the newest chain retries and sets the flag.
--
-- Every reply is {verdict, number, delivery, profile version}.
local task, log, index, profile, deliveries = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local op = ARGV[1]
local chain = tonumber(ARGV[2])
local now = ARGV[3]
local retention = tonumber(ARGV[4])
local maxlog = 200

local function expire()
  redis.call('EXPIRE', task, retention)
  redis.call('EXPIRE', deliveries, retention)
end

-- Only Begin's answer needs the profile's version; the other operations answer 0.
local version = 0
if op == 'begin' then
  version = tonumber(redis.call('HGET', profile, 'version') or '0')
end

local function touch_index()
  redis.call('ZADD', index, now, ARGV[8])
  -- Pruning old entries costs a range scan; once in a while is enough to bound the index.
  if tonumber(now) % 16 == 0 then
    redis.call('ZREMRANGEBYSCORE', index, '-inf', tonumber(now) - retention * 1000)
  end
  redis.call('EXPIRE', index, retention)
end

local function push_log(entry)
  if redis.call('RPUSH', log, entry) > maxlog then
    redis.call('LTRIM', log, -maxlog, -1)
  end
  redis.call('EXPIRE', log, retention)
end

-- One read of everything the rules below look at.
local h = redis.call('HMGET', task, 'chain', 'delivery', 'webhook_id', 'state', 'next_attempt_at',
  'attempts', 'inflight')
local cur = tonumber(h[1] or '0')
local delivery = tonumber(h[2] or '0')
local state = h[4]
local due = tonumber(h[5] or '0')
local attempts = tonumber(h[6] or '0')
local inflight = tonumber(h[7] or '0')

if chain > cur then
  delivery = delivery + 1
  if h[3] ~= ARGV[5] then
    -- a different completion event: the previous outcome says nothing about this one
    redis.call('HDEL', task, 'succeeded')
  end
  redis.call('HSET', task, 'chain', chain, 'delivery', delivery, 'attempts', 0, 'state', 'pending',
    'webhook_id', ARGV[5], 'task', ARGV[6], 'customer_id', ARGV[7], 'task_id', ARGV[8],
    'queued_at', now, 'updated_at', now)
  if h[5] or h[7] then
    redis.call('HDEL', task, 'inflight', 'next_attempt_at')
  end
  if op ~= 'begin' then
    -- begin marks the delivery as begun right below
    redis.call('HSET', deliveries, chain, 'q:' .. delivery)
  end
  cur, state, due, attempts, inflight = chain, 'pending', 0, 0, 0
end

if op == 'queue' then
  expire()
  return {0, 0, delivery, version}
end

if op == 'begin' then
  if chain < cur then
    local mark = redis.call('HGET', deliveries, chain)
    if mark and string.sub(mark, 1, 2) == 'q:' then
      local d = tonumber(string.sub(mark, 3))
      redis.call('HSET', deliveries, chain, 'b:' .. d)
      return {5, 1, d, version}
    end
    return {1, 0, delivery, version}
  end
  redis.call('HSET', deliveries, chain, 'b:' .. delivery)
  if state == 'succeeded' or state == 'failed' or state == 'no_callback' then return {2, 0, delivery, version} end
  -- A retry that comes back early waits for its turn: the schedule lives here, not in the
  -- broker. It happens when a NakWithDelay is lost and AckWait runs out first, and after every
  -- broker restart, since nats-server stores pending times rounded down to whole seconds.
  if state == 'retrying' and due > tonumber(now) then
    return {4, due - tonumber(now), delivery, version}
  end
  if inflight > 0 then
    push_log(cjson.encode({attempt = inflight, delivery = delivery, at_ms = tonumber(now),
      error = 'interrupted: the worker stopped before this attempt\'s outcome was recorded'}))
    redis.call('HDEL', task, 'inflight')
  end
  if attempts >= tonumber(ARGV[10]) then
    redis.call('HSET', task, 'state', 'failed', 'succeeded', '0', 'updated_at', now)
    redis.call('HDEL', task, 'next_attempt_at')
    touch_index()
    expire()
    return {3, attempts, delivery, version}
  end
  attempts = attempts + 1
  if state == 'pending' and attempts > 1 then state = 'retrying' end
  redis.call('HSET', task, 'attempts', attempts, 'inflight', attempts, 'target', ARGV[9], 'updated_at', now,
    'state', state)
  expire()
  return {0, attempts, delivery, version}
end

-- finish
local attempt = tonumber(ARGV[10])
local outcome = ARGV[11]
if ARGV[12] ~= '' then push_log(ARGV[12]) end
if chain < cur then expire() return {1, 0, delivery, version} end
if inflight == attempt then
  redis.call('HDEL', task, 'inflight')
end
if state == 'succeeded' or (state == 'failed' and outcome ~= 'succeeded') then
  redis.call('HSET', task, 'target', ARGV[9], 'updated_at', now)
  expire()
  return {2, attempts, delivery, version}
end
if outcome == 'succeeded' then
  redis.call('HSET', task, 'state', 'succeeded', 'succeeded', '1', 'last_attempt_at', now,
    'target', ARGV[9], 'updated_at', now)
  if due > 0 then redis.call('HDEL', task, 'next_attempt_at') end
elseif outcome == 'retry' then
  if attempt >= attempts then
    redis.call('HSET', task, 'state', 'retrying', 'next_attempt_at', ARGV[13], 'last_attempt_at', now,
      'target', ARGV[9], 'updated_at', now)
  else
    redis.call('HSET', task, 'target', ARGV[9], 'updated_at', now)
  end
elseif outcome == 'failed' then
  redis.call('HSET', task, 'state', 'failed', 'succeeded', '0', 'last_attempt_at', now,
    'target', ARGV[9], 'updated_at', now)
  redis.call('HDEL', task, 'next_attempt_at')
elseif outcome == 'no_callback' then
  redis.call('HSET', task, 'state', 'no_callback', 'attempts', 0, 'last_attempt_at', now, 'updated_at', now)
  redis.call('HDEL', task, 'succeeded', 'next_attempt_at', 'target')
end
touch_index()
expire()
return {0, attempts, delivery, version}
