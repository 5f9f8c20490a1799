-- ARGV: prefix, now, lease expiry, worker id, limit, wait, lease, queue...
-- Replies the claimed rows: first those handed to this worker while it waited (hand_off),
-- then due jobs. With nothing to claim and a wait ('' for none), registers the worker as idle
-- for that many seconds and replies {'idle', earliest scheduled run_at or ''}.
local now, lease_exp, wid, limit = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local wait, lease = ARGV[6], ARGV[7]
local out = {}
local registered = redis.call('HGET', P .. 'idler:' .. wid, 'queues')
if registered then unregister(wid, registered) end
local hk = P .. 'handoff:' .. wid
local handed = redis.call('LRANGE', hk, 0, -1)
if #handed > 0 then
  redis.call('DEL', hk)
  for _, item in ipairs(handed) do
    local id = string.match(item, '^%S+')
    local f = redis.call('HMGET', jkey(id), 'status', 'worker_id')
    -- still ours unless its lease ran out before we came back for it
    if f[1] == 'running' and f[2] == wid then out[#out + 1] = row(jkey(id)) end
  end
end
for i = 8, #ARGV do
  if #out >= limit then break end
  local q = ARGV[i]
  local ready = P .. 'ready:' .. q
  local sched = P .. 'sched:' .. q
  -- promote due scheduled jobs (bounded) so one ZPOPMIN yields the claim order; their
  -- status stays 'scheduled' until claimed, as in the reference backend
  local due = redis.call('ZRANGEBYSCORE', sched, '-inf', now, 'LIMIT', 0,
                         math.max(limit, @PROMOTE_MIN@))
  if #due > 0 then
    local adds = {}
    for _, id in ipairs(due) do
      local f = redis.call('HMGET', jkey(id), 'priority', 'run_at', 'status')
      if f[3] == 'scheduled' then
        adds[#adds + 1] = -tonumber(f[1])
        adds[#adds + 1] = rmember(f[2], id)
      end
    end
    redis.call('ZREM', sched, unpack(due))
    if #adds > 0 then redis.call('ZADD', ready, unpack(adds)) end
  end
  local popped = redis.call('ZPOPMIN', ready, limit - #out)
  for k = 1, #popped, 2 do
    local got = take(string.sub(popped[k], 21), now, lease_exp, wid)
    if got then out[#out + 1] = got end
  end
end
flush()
if #out > 0 or wait == '' then return out end
local t = redis.call('TIME')
local server_now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local queues = {}
for i = 8, #ARGV do
  local q = ARGV[i]
  queues[#queues + 1] = q
  local idle = P .. 'idle:' .. q
  redis.call('LREM', idle, 0, wid)
  redis.call('LPUSH', idle, wid)
  -- wake tokens are for workers that have not registered; this one has just seen the queue
  redis.call('DEL', P .. 'wake:' .. q)
end
local ik = P .. 'idler:' .. wid
-- a margin past the wait: the worker's BLPOP may return a little after it
local ttl = tonumber(wait) + 2
redis.call('HSET', ik, 'until', fmt(server_now + ttl), 'lease', lease,
           'offset', fmt(tonumber(now) - server_now), 'free', limit,
           'queues', cjson.encode(queues))
redis.call('PEXPIRE', ik, math.ceil(ttl * 1000))
return {'idle', earliest_scheduled(8) or ''}
