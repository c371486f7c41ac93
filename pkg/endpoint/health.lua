-- Endpoint health: one call per delivery attempt, sent in the same pipeline as the attempt's
-- status write, so it costs no round trip of its own. Alerts are decided here, atomically, so
-- however many workers see an endpoint fail at once, one of them sends the alert.
--
-- KEYS[1] the environment's endpoints hash (field: endpoint, value: its health, below),
-- KEYS[2] the environment's profile hash (alert_email, auto_pause; "paused:<endpoint>" fields).
-- ARGV[1] endpoint, ARGV[2] '1' the attempt succeeded, '0' it failed, ARGV[3] now (unix ms),
-- ARGV[4] the failure's error, ARGV[5] failures that raise an alert (0: no alerts),
-- ARGV[6] least time between two alerts (ms), ARGV[7] uninterrupted failure that pauses the
-- endpoint when the profile opted in (ms, 0: never), ARGV[8] retention (s).
-- Batch form (as record.lua's): ARGV[1] 'batch', then per call its argument count and its
-- arguments; KEYS two per call.
--
-- A health value is "fails|failing_since|last_success|last_failure|alerted_at|alert_open|last_error"
-- (times in unix ms, 0 for never): one field per endpoint, read and written whole.
--
-- Reply {alert, fails, failing_since, auto_paused, alert_email, last_error, transition}: alert
-- is 0 (none), 1 (send the failing alert) or 2 (send the recovered mail); transition is 0 (none),
-- 1 (the endpoint started failing) or 2 (it is healthy again).

local function int(n) return string.format('%d', n) end

local function health(KEYS, ARGV)
  local hash, profile, ep, ok, now = KEYS[1], KEYS[2], ARGV[1], ARGV[2] == '1', tonumber(ARGV[3])
  local v = redis.call('HGET', hash, ep)
  local fails, since, last_ok, last_fail, alerted, open, last_err = 0, 0, 0, 0, 0, 0, ''
  if v then
    local f = {}
    local pos = 1
    for i = 1, 6 do
      local bar = string.find(v, '|', pos, true)
      if not bar then break end
      f[i] = tonumber(string.sub(v, pos, bar - 1)) or 0
      pos = bar + 1
    end
    fails, since, last_ok, last_fail, alerted, open = f[1] or 0, f[2] or 0, f[3] or 0, f[4] or 0, f[5] or 0, f[6] or 0
    last_err = string.sub(v, pos)
  end

  local alert, paused, email, transition = 0, 0, '', 0
  if ok then
    -- A healthy endpoint that succeeded within the last second is left as it is: a busy one
    -- costs a read per attempt, not a write.
    if fails == 0 and open == 0 and v and now - last_ok < 1000 then
      return {0, 0, 0, 0, '', '', 0}
    end
    if open == 1 then
      email = redis.call('HGET', profile, 'alert_email') or ''
      if email ~= '' then alert = 2 end
    end
    if fails > 0 then transition = 2 end
    fails, since, last_ok, open = 0, 0, now, 0
  else
    fails = fails + 1
    if fails == 1 then transition = 1 end
    if since == 0 then since = now end
    last_fail = now
    last_err = string.sub(ARGV[4], 1, 300)
    local threshold = tonumber(ARGV[5])
    if threshold > 0 and fails >= threshold and (alerted == 0 or now - alerted >= tonumber(ARGV[6])) then
      email = redis.call('HGET', profile, 'alert_email') or ''
      if email ~= '' then
        alert, alerted, open = 1, now, 1
      end
    end
    local after = tonumber(ARGV[7])
    if after > 0 and now - since >= after and redis.call('HGET', profile, 'auto_pause') == '1' and
        redis.call('HEXISTS', profile, 'paused:' .. ep) == 0 then
      -- The version change makes every worker reload the profile, and so learn the pause, at
      -- its next claim of an attempt for this customer.
      redis.call('HSET', profile, 'paused:' .. ep, 'auto:' .. int(now))
      redis.call('HINCRBY', profile, 'version', 1)
      paused = 1
      if email == '' then email = redis.call('HGET', profile, 'alert_email') or '' end
    end
  end
  redis.call('HSET', hash, ep, int(fails) .. '|' .. int(since) .. '|' .. int(last_ok) .. '|' ..
    int(last_fail) .. '|' .. int(alerted) .. '|' .. int(open) .. '|' .. last_err)
  redis.call('EXPIRE', hash, ARGV[8])
  return {alert, fails, since, paused, email, last_err, transition}
end

if ARGV[1] ~= 'batch' then return health(KEYS, ARGV) end

local out, a = {}, 2
for k = 1, #KEYS, 2 do
  local argc = tonumber(ARGV[a])
  local ok, res = pcall(health, {KEYS[k], KEYS[k + 1]}, {unpack(ARGV, a + 1, a + argc)})
  a = a + 1 + argc
  if ok then
    out[#out + 1] = res
  else
    if type(res) == 'table' and res.err then res = res.err end
    out[#out + 1] = {err = tostring(res)}
  end
end
return out
