-- ARGV: prefix, now, lease expiry, worker id, limit, queue...
local now, lease_exp, wid, limit = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local running = P .. 'running'
local out = {}
for i = 6, #ARGV do
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
    local id = string.sub(popped[k], 21)
    local jk = jkey(id)
    -- read only what the transition needs and return the row untouched: a Lua table of
    -- every field, built and flattened again, cost more than the Redis commands
    local f = redis.call('HMGET', jk, 'status', 'attempts', 'version', 'history', 'queue')
    local old = f[1]
    if old == 'queued' or old == 'scheduled' then
      redis.call('HSET', jk, 'status', 'running', 'attempts', tonumber(f[2]) + 1,
                 'version', tonumber(f[3]) + 1, 'started_at', now, 'worker_id', wid,
                 'lease_expires_at', lease_exp,
                 'history', append(f[4], transition('running', now)))
      zadd(running, lease_exp, id)
      move(id, f[5], old, 'running')
      notify(id)
      out[#out + 1] = row(jk)
    end
  end
end
flush()
return out
