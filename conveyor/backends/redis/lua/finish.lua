-- ARGV: prefix, now, n, then per outcome: id, attempt, status, result ('' | '=' .. text),
-- result_expires_at (''), error JSON (''), run_at (''); replies 1/0 per outcome
local now = ARGV[2]
local n = tonumber(ARGV[3])
local out = {}
for i = 0, n - 1 do
  local b = 4 + i * 7
  local id, st, res, rexp, err, ra = ARGV[b], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4],
                                     ARGV[b + 5], ARGV[b + 6]
  local jk = jkey(id)
  local f = redis.call('HMGET', jk, 'status', 'attempts', 'queue', 'priority', 'history',
                       'errors', 'version')
  if f[1] ~= 'running' or tonumber(f[2]) ~= tonumber(ARGV[b + 1]) then
    out[#out + 1] = 0
  else
    local q = f[3]
    local m = {status = st, version = tostring(tonumber(f[7]) + 1),
               history = append(f[5], transition(st, now))}
    local names = {'status', 'version', 'history', 'lease_expires_at'}
    if err ~= '' then
      m.errors = append(f[6], err)
      names[#names + 1] = 'errors'
    end
    if rexp ~= '' then m.result_expires_at = rexp end
    if st == 'succeeded' then
      if res ~= '' then m.result = string.sub(res, 2) end
      m.progress = '100.0'
      names[#names + 1] = 'result'
      names[#names + 1] = 'result_expires_at'
      names[#names + 1] = 'progress'
    elseif st == 'failed' or st == 'cancelled' then
      names[#names + 1] = 'result_expires_at'
    elseif st == 'scheduled' then
      if ra ~= '' then m.run_at = ra else m.run_at = now end
      names[#names + 1] = 'run_at'
    elseif st == 'queued' then
      m.attempts = tostring(tonumber(f[2]) - 1)
      m.run_at = now
      names[#names + 1] = 'attempts'
      names[#names + 1] = 'run_at'
    end
    if FINISHED[st] then
      m.finished_at = now
      names[#names + 1] = 'finished_at'
    else
      m.worker_id = nil
      names[#names + 1] = 'worker_id'
    end
    save(jk, m, names)
    zrem(P .. 'running', id)
    move(id, q, 'running', st)
    if FINISHED[st] and rexp ~= '' then zadd(P .. 'expires', rexp, id) end
    if st == 'scheduled' then
      zadd(P .. 'sched:' .. q, m.run_at, id)
      wake(q)
    elseif st == 'queued' then
      zadd(P .. 'ready:' .. q, -tonumber(f[4]), rmember(now, id))
      wake(q)
    end
    notify(id)
    out[#out + 1] = 1
  end
end
flush()
return out
