-- ARGV: prefix, now, batch; replies the ids recovered, and a trailing 1 when the batch was
-- full (more may be waiting)
local now, batch = ARGV[2], tonumber(ARGV[3])
local nnow = tonumber(now)
local ids = redis.call('ZRANGEBYSCORE', P .. 'running', '-inf', '(' .. now, 'LIMIT', 0, batch)
local out = {}
for _, id in ipairs(ids) do
  local jk = jkey(id)
  local f = redis.call('HMGET', jk, 'status', 'attempts', 'max_attempts', 'cancel_requested',
                       'worker_id', 'result_ttl', 'queue', 'priority', 'history', 'errors',
                       'version', 'lease_expires_at')
  if f[1] ~= 'running' or not f[12] then
    zrem(P .. 'running', id)
  elseif tonumber(f[12]) < nnow then
    local q = f[7]
    -- handed to an idle worker that died before it took the job: it never ran, so the
    -- attempt does not count and no error is recorded
    local untaken = f[5] and take_back(f[5], id)
    local st
    if f[4] == '1' then st = 'cancelled'
    elseif untaken or tonumber(f[2]) < tonumber(f[3]) then st = 'queued'
    else st = 'failed' end
    local m = {status = st, history = append(f[9], transition(st, now)),
               version = tostring(tonumber(f[11]) + 1)}
    local names = {'lease_expires_at', 'worker_id', 'status', 'history', 'version'}
    if untaken then
      m.attempts = tostring(tonumber(f[2]) - 1)
      names[#names + 1] = 'attempts'
    else
      local msg = 'worker ' .. (f[5] or 'None') .. ' stopped renewing its lease'
      m.errors = append(f[10], '{"attempt":' .. f[2] .. ',"type":"WorkerLost","message":'
                        .. cjson.encode(msg) .. ',"traceback":"","at":' .. now
                        .. ',"reason":"worker_lost"}')
      names[#names + 1] = 'errors'
    end
    if st == 'queued' then
      m.run_at = now
      names[#names + 1] = 'run_at'
      zadd(P .. 'ready:' .. q, -tonumber(f[8]), rmember(now, id))
      wake(q)
    else
      m.finished_at = now
      names[#names + 1] = 'finished_at'
      if f[6] then
        m.result_expires_at = fmt(nnow + tonumber(f[6]))
        names[#names + 1] = 'result_expires_at'
        zadd(P .. 'expires', m.result_expires_at, id)
      end
    end
    save(jk, m, names)
    zrem(P .. 'running', id)
    move(id, q, 'running', st)
    notify(id)
    out[#out + 1] = id
  end
end
flush()
if #ids == batch then out[#out + 1] = 1 end
return out
