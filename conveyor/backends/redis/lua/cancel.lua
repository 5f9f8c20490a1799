-- ARGV: prefix, id, now; replies the job after the change (nil when it does not exist)
local id, now = ARGV[2], ARGV[3]
local jk = jkey(id)
local flat = redis.call('HGETALL', jk)
if #flat == 0 then return nil end
local j = hmap(flat)
local old = j.status
if old == 'scheduled' or old == 'queued' then
  j.finished_at = now
  if j.result_ttl then
    j.result_expires_at = fmt(tonumber(now) + tonumber(j.result_ttl))
    zadd(P .. 'expires', j.result_expires_at, id)
  end
  j.status = 'cancelled'
  j.history = append(j.history, transition('cancelled', now))
  j.version = tostring(tonumber(j.version) + 1)
  save(jk, j, {'finished_at', 'result_expires_at', 'status', 'history', 'version'})
  redis.call('ZREM', P .. 'ready:' .. j.queue, rmember(j.run_at, id))
  redis.call('ZREM', P .. 'sched:' .. j.queue, id)
  move(id, j.queue, old, 'cancelled')
  notify(id)
elseif old == 'running' and j.cancel_requested ~= '1' then
  j.cancel_requested = '1'
  j.version = tostring(tonumber(j.version) + 1)
  save(jk, j, {'cancel_requested', 'version'})
  notify(id)
end
flush()
return row(jk)
