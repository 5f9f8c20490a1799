-- ARGV: prefix, id, now; replies the job after the change (nil when it does not exist), or
-- {0, holder id, key} when another live job holds the job's key (nothing changed)
local id, now = ARGV[2], ARGV[3]
local jk = jkey(id)
local flat = redis.call('HGETALL', jk)
if #flat == 0 then return nil end
local j = hmap(flat)
local old = j.status
if old == 'failed' or old == 'cancelled' then
  if j.key then
    local kk = P .. 'key:' .. j.key
    local holder = redis.call('GET', kk)
    if holder and holder ~= id then
      local held = redis.call('HGET', jkey(holder), 'status')
      if held and LIVE[held] then return {0, holder, j.key} end
    end
    redis.call('SET', kk, id)
  end
  local allowed = tonumber(j.attempts) + 1
  if tonumber(j.max_attempts) < allowed then j.max_attempts = tostring(allowed) end
  j.cancel_requested = nil
  j.result = nil
  j.result_expires_at = nil
  j.finished_at = nil
  j.worker_id = nil
  j.run_at = now
  j.status = 'queued'
  j.history = append(j.history, transition('queued', now))
  j.version = tostring(tonumber(j.version) + 1)
  save(jk, j, {'max_attempts', 'cancel_requested', 'result', 'result_expires_at',
               'finished_at', 'worker_id', 'run_at', 'status', 'history', 'version'})
  zrem(P .. 'expires', id)
  zadd(P .. 'ready:' .. j.queue, -tonumber(j.priority), rmember(now, id))
  move(id, j.queue, old, 'queued')
  wake(j.queue)
  notify(id)
end
flush()
return row(jk)
