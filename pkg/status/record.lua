-- One script for every change to a task's delivery status, so each change is atomic and the
-- ordering rules live in one place.
--
-- KEYS[1] the task's record (a string: one compact JSON object, see below), KEYS[2] the
-- customer's time index (sorted set), KEYS[3] the customer's profile hash (only its version is
-- read).
-- ARGV[1]  op: "begin" | "finish" | "queue"
-- ARGV[2]  chain: stream sequence of the message that carries this delivery
-- ARGV[3]  now, unix ms
-- ARGV[4]  retention, seconds
-- ARGV[5]  webhook id
-- ARGV[6]  (unused: the task itself stays in the stream, read back by its chain)
-- ARGV[7]  customer id
-- ARGV[8]  task id
-- begin:  ARGV[9] target, ARGV[10] max attempts
-- finish: ARGV[9] target, ARGV[10] attempt, ARGV[11] outcome, ARGV[12] log entry (a JSON
--         array, see below), ARGV[13] next attempt ms
--
-- The record keeps only what must be fast and mutable; the event stays on disk in the stream, at
-- sequence c. Short names, numbers as numbers, no field for an empty value:
--   c chain, n delivery number, w webhook id, s state (p pending, r retrying, s succeeded,
--   f failed, n no_callback), k callback_succeeded (1/0, absent while unknown), a attempts of
--   the current delivery, i the attempt in flight, x next attempt (unix ms), z last attempt
--   (unix ms), g target, q {chain: delivery} of resends queued behind a newer delivery and never
--   begun, l the attempt log: entries [attempt, delivery, at ms, status code, duration ms, error,
--   response excerpt], trailing empty values left out, the newest maxlog kept; only the newest
--   fulllog keep their excerpt and whole error.
--
-- A delivery is identified by its chain. A newer chain (a resend, or a new completion event for
-- the same task) supersedes an older one: the older one's results are logged but never change
-- the state or the flag again. Within a chain, "succeeded" is final and "failed" yields only to a
-- success. A superseded resend that never began gets one attempt of its own (each send-callback
-- request is one more delivery), but no retries: only the newest chain retries and sets the flag.
--
-- Every reply is {verdict, number, delivery, profile version}.
--
-- Statuses written before the record was compact are hashes under "task:<id>" beside it (its
-- key with "task:" for "t:"; older ones still keep their log in a list under "attempts:<id>").
-- The first change to such a task carries its state and log over; the old hash is left to expire
-- and is read for its stored event only. Same hash tag, so the same Redis Cluster slot.
local maxlog = 200
local fulllog = 5
local errcut = 60

local states = {pending = 'p', retrying = 'r', succeeded = 's', failed = 'f', no_callback = 'n'}

-- legacy turns a status of the old form (a hash with long field names) into a record.
local function legacy(task, taskid)
  local base = string.sub(task, 1, #task - #taskid - 2)
  local h = redis.call('HGETALL', base .. 'task:' .. taskid)
  if #h == 0 then return nil end
  local m = {}
  for j = 1, #h, 2 do m[h[j]] = h[j + 1] end
  local num = function(k) return tonumber(m[k] or '0') or 0 end
  local r = {c = num('chain'), n = num('delivery'), w = m['webhook_id'], s = states[m['state'] or ''] or 'p',
    a = num('attempts'), g = m['target']}
  if m['succeeded'] == '1' then r.k = 1 elseif m['succeeded'] == '0' then r.k = 0 end
  if num('inflight') > 0 then r.i = num('inflight') end
  if num('next_attempt_at') > 0 then r.x = num('next_attempt_at') end
  if num('last_attempt_at') > 0 then r.z = num('last_attempt_at') end
  if r.g == '' then r.g = nil end
  for k, v in pairs(m) do
    local ch = string.match(k, '^d:(%d+)$')
    if ch and string.sub(v, 1, 2) == 'q:' and tonumber(ch) < r.c then
      r.q = r.q or {}
      r.q[ch] = tonumber(string.sub(v, 3))
    end
  end
  -- the log: first the list that held it before it moved into the hash, then the hash's entries
  local raw = redis.call('LRANGE', base .. 'attempts:' .. taskid, -maxlog, -1)
  local logn = num('logn')
  for j = math.max(1, logn - maxlog + 1), logn do
    raw[#raw + 1] = m['l:' .. string.format('%d', j)]
  end
  local entries = {}
  for _, e in ipairs(raw) do
    if e then
      local ok, o = pcall(cjson.decode, e)
      if ok and type(o) == 'table' then
        local sc, er, ex = o.status_code or 0, o.error or '', o.response_excerpt or ''
        local entry = {o.attempt or 0, o.delivery or 0, o.at_ms or 0, sc, o.duration_ms or 0, er, ex}
        if ex == '' then entry[7] = nil; if er == '' then entry[6] = nil end end
        entries[#entries + 1] = entry
      end
    end
  end
  while #entries > maxlog do table.remove(entries, 1) end
  if #entries > 0 then r.l = entries end
  return r
end

-- record is one status operation; KEYS and ARGV are its own (see the top of this file).
local function record(KEYS, ARGV)
  local task, index, profile = KEYS[1], KEYS[2], KEYS[3]
  local op = ARGV[1]
  local chain = tonumber(ARGV[2])
  local now = tonumber(ARGV[3])
  local retention = ARGV[4]

  -- Only Begin's answer needs the profile's version; the other operations answer 0.
  local version = 0
  if op == 'begin' then
    version = tonumber(redis.call('HGET', profile, 'version') or '0')
  end

  local function touch_index()
    redis.call('ZADD', index, now, ARGV[8])
    -- Pruning old entries costs a range scan; once in a while (now ends in 0) is enough to
    -- bound the index.
    if now % 10 == 0 then
      redis.call('ZREMRANGEBYSCORE', index, '-inf', now - tonumber(retention) * 1000)
    end
    redis.call('EXPIRE', index, retention)
  end

  local raw = redis.call('GET', task)
  local r
  if raw then
    r = cjson.decode(raw)
  else
    r = legacy(task, ARGV[8]) or {c = 0, n = 0, a = 0}
  end
  local function save()
    redis.call('SET', task, cjson.encode(r), 'EX', retention)
  end

  local function push_log(entry)
    local l = r.l or {}
    l[#l + 1] = entry
    -- Older entries keep their numbers, the start of their error and no excerpt: the newest
    -- say what is happening now, and a task that fails for hours should not cost kilobytes.
    local old = l[#l - fulllog]
    if old then
      old[7] = nil
      if old[6] and #old[6] > errcut then old[6] = string.sub(old[6], 1, errcut) end
    end
    if #l > maxlog then table.remove(l, 1) end
    r.l = l
  end

  local cur = r.c
  local fresh = chain > cur
  if fresh then
    if cur > 0 and r.s == 'p' and r.a == 0 then
      -- the superseded delivery was queued and never begun: it may still make its one attempt
      r.q = r.q or {}
      r.q[string.format('%d', cur)] = r.n
    end
    if r.w and r.w ~= ARGV[5] then
      -- a different completion event: the previous outcome says nothing about this one
      r.k = nil
    end
    r.c, r.n, r.a, r.s, r.w = chain, r.n + 1, 0, 'p', ARGV[5]
    r.x, r.i = nil, nil
  end

  if op == 'queue' then
    save()
    return {0, 0, r.n, version}
  end

  if op == 'begin' then
    if chain < cur then
      local key = string.format('%d', chain)
      local d = r.q and r.q[key]
      if d then
        r.q[key] = nil
        if next(r.q) == nil then r.q = nil end
        save()
        return {5, 1, d, version}
      end
      return {1, 0, r.n, version}
    end
    if r.s == 's' or r.s == 'f' or r.s == 'n' then
      if fresh then save() end
      return {2, 0, r.n, version}
    end
    -- A retry that comes back early waits for its turn: the schedule lives here, not in the
    -- broker. It happens when a NakWithDelay is lost and AckWait runs out first, and after every
    -- broker restart, since nats-server stores pending times rounded down to whole seconds.
    if r.s == 'r' and r.x and r.x > now then
      if fresh then save() end
      return {4, r.x - now, r.n, version}
    end
    if r.i then
      push_log({r.i, r.n, now, 0, 0, 'interrupted: the worker stopped before this attempt\'s outcome was recorded'})
    end
    if r.a >= tonumber(ARGV[10]) then
      r.s, r.k, r.i, r.x = 'f', 0, nil, nil
      save()
      touch_index()
      return {3, r.a, r.n, version}
    end
    r.a = r.a + 1
    if r.s == 'p' and r.a > 1 then r.s = 'r' end
    r.i = r.a
    r.g = ARGV[9] ~= '' and ARGV[9] or nil
    -- Each write renews the retention, so the status outlives its last attempt by at least that.
    save()
    return {0, r.a, r.n, version}
  end

  -- finish
  local attempt = tonumber(ARGV[10])
  local outcome = ARGV[11]
  if ARGV[12] ~= '' then push_log(cjson.decode(ARGV[12])) end
  if chain < cur then
    save()
    return {1, 0, r.n, version}
  end
  if r.i == attempt then r.i = nil end
  local target = ARGV[9] ~= '' and ARGV[9] or nil
  if r.s == 's' or (r.s == 'f' and outcome ~= 'succeeded') then
    r.g = target
    save()
    return {2, r.a, r.n, version}
  end
  if outcome == 'succeeded' or outcome == 'failed' then
    r.s = states[outcome]
    r.k = outcome == 'succeeded' and 1 or 0
    r.z, r.g, r.x = now, target, nil
  elseif outcome == 'retry' then
    -- an older attempt's late outcome does not move the schedule of a newer one
    if attempt >= r.a then
      r.s, r.x, r.z = 'r', tonumber(ARGV[13]), now
    end
    r.g = target
  elseif outcome == 'no_callback' then
    r.s, r.a, r.z, r.g, r.x, r.k = 'n', 0, now, nil, nil, nil
  end
  save()
  touch_index()
  return {0, r.a, r.n, version}
end

if ARGV[1] ~= 'batch' then return record(KEYS, ARGV) end

-- A batch: the operations of several deliveries in one script call, so that they share Redis's
-- per-call cost (measured: ~16% of a call). KEYS holds three keys per operation; ARGV[2..]
-- holds, per operation, its argument count and then its arguments. Each operation runs as it
-- would alone, in order; one that fails answers its own error and the others go on.
local out, a = {}, 2
for k = 1, #KEYS, 3 do
  local argc = tonumber(ARGV[a])
  local ok, res = pcall(record, {KEYS[k], KEYS[k + 1], KEYS[k + 2]}, {unpack(ARGV, a + 1, a + argc)})
  a = a + 1 + argc
  if ok then
    out[#out + 1] = res
  else
    if type(res) == 'table' and res.err then res = res.err end
    out[#out + 1] = {err = tostring(res)}
  end
end
return out
