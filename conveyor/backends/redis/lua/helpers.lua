-- Helpers shared by the scripts. scripts.py splits this file into blocks at the "-- @block"
-- lines and gives each script only the blocks it references, directly or through other
-- blocks: defining every closure on each call cost ~5 us, as much as the whole of a small
-- script. A block may use the blocks above it; the first (the prefix) goes to every script.
-- @NAME@ placeholders are filled in by scripts.py.

-- @block prefix
local P = ARGV[1]

-- @block fields
local FIELDS = {@FIELDS@}

-- @block live
local LIVE = {scheduled = true, queued = true, running = true}

-- @block finished
local FINISHED = {succeeded = true, failed = true, cancelled = true}

-- @block statuses
local STATUSES = {'scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled'}

-- @block jkey
local function jkey(id) return P .. 'job:' .. id end

-- @block fmt
local function fmt(x) return string.format('%.17g', x) end

-- @block rmember
-- ready members sort by (run_at, id) inside one priority score: a fixed-width run_at prefix
-- makes lexicographic order numeric. The id starts at byte 21.
local function rmember(run_at, id)
  local r = tonumber(run_at) or 0
  if r < 0 then r = 0 elseif r > 9e12 then r = 9e12 end
  return string.format('%020.6f', r) .. id
end

-- @block append
-- history and errors are JSON arrays kept as text: appending is string surgery, so Lua
-- never decodes (and re-encodes, with cjson's 14-digit numbers) what Python wrote
local function append(arr, item)
  if not arr or arr == '' or arr == '[]' then return '[' .. item .. ']' end
  return string.sub(arr, 1, -2) .. ',' .. item .. ']'
end

-- @block transition
local function transition(status, now)
  return '{"status":"' .. status .. '","at":' .. now .. '}'
end

-- @block row
local function row(jk) return redis.call('HMGET', jk, unpack(FIELDS)) end

-- @block hmap
local function hmap(flat)
  local m = {}
  for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  return m
end

-- @block save
-- write the named fields of m; a nil field is deleted (absent means None)
local function save(jk, m, names)
  local sets, dels = {}, {}
  for _, k in ipairs(names) do
    local v = m[k]
    if v == nil then dels[#dels + 1] = k else sets[#sets + 1] = k; sets[#sets + 1] = v end
  end
  if #sets > 0 then redis.call('HSET', jk, unpack(sets)) end
  if #dels > 0 then redis.call('HDEL', jk, unpack(dels)) end
end

-- @block index_writes
local zadds, zrems, sadds, wakes = {}, {}, {}, {}
local function zadd(key, score, member)
  local t = zadds[key]
  if not t then t = {}; zadds[key] = t end
  t[#t + 1] = score; t[#t + 1] = member
end
local function zrem(key, member)
  local t = zrems[key]
  if not t then t = {}; zrems[key] = t end
  t[#t + 1] = member
end
local function wake(q) wakes[q] = (wakes[q] or 0) + 1 end
local function flush()
  for key, t in pairs(zrems) do
    for i = 1, #t, 1000 do
      redis.call('ZREM', key, unpack(t, i, math.min(i + 999, #t)))
    end
  end
  for key, t in pairs(zadds) do
    for i = 1, #t, 2000 do
      redis.call('ZADD', key, unpack(t, i, math.min(i + 1999, #t)))
    end
  end
  local qs = {}
  for q in pairs(sadds) do qs[#qs + 1] = q end
  if #qs > 0 then redis.call('SADD', P .. 'queues', unpack(qs)) end
  for q, n in pairs(wakes) do
    local k = P .. 'wake:' .. q
    -- a full list (no worker is waiting) is left as it is: one read instead of two writes
    local room = @WAKE_CAP@ - redis.call('LLEN', k)
    if room > 0 then
      local tokens = {}
      for i = 1, math.min(n, room) do tokens[i] = '1' end
      redis.call('LPUSH', k, unpack(tokens))
    end
  end
  zadds, zrems, sadds, wakes = {}, {}, {}, {}
end

-- @block move
local function move(id, q, old, new)
  zrem(P .. 'idx:qs:' .. q .. ':' .. old, id)
  zadd(P .. 'idx:qs:' .. q .. ':' .. new, 0, id)
end

-- @block notify
-- wait_for_change waiters register a private list in watch:<id>; every change pushes a token
-- to each. The 'watching' marker (alive while any waiter is) spares the per-job SMEMBERS in
-- the hot path when nobody waits.
local watching = nil
local function notify(id)
  if watching == nil then watching = redis.call('EXISTS', P .. 'watching') == 1 end
  if not watching then return end
  local wk = P .. 'watch:' .. id
  local lists = redis.call('SMEMBERS', wk)
  if #lists > 0 then
    for i = 1, #lists do
      redis.call('LPUSH', lists[i], '1')
      redis.call('PEXPIRE', lists[i], 60000)
    end
    redis.call('DEL', wk)
  end
end

-- @block live_key_owner
local function live_key_owner(key)
  local other = redis.call('GET', P .. 'key:' .. key)
  if other then
    local st = redis.call('HGET', jkey(other), 'status')
    if st and LIVE[st] then return other end
  end
  return nil
end

-- @block earliest_scheduled
-- the earliest scheduled run_at among the queues ARGV[first..], as stored (nil when none)
local function earliest_scheduled(first)
  local earliest, text = nil, nil
  for i = first, #ARGV do
    local head = redis.call('ZRANGE', P .. 'sched:' .. ARGV[i], 0, 0, 'WITHSCORES')
    if head[2] then
      local at = tonumber(head[2])
      if earliest == nil or at < earliest then earliest = at; text = head[2] end
    end
  end
  return text
end

-- @block take
-- the claim of one due job by worker wid: its running transition (fenced by the new attempt
-- number); the row, or nil when the job is not queued or scheduled any more
local function take(id, now, lease_exp, wid)
  local jk = jkey(id)
  -- read only what the transition needs and return the row untouched: a Lua table of every
  -- field, built and flattened again, cost more than the Redis commands
  local f = redis.call('HMGET', jk, 'status', 'attempts', 'version', 'history', 'queue')
  local old = f[1]
  if old ~= 'queued' and old ~= 'scheduled' then return nil end
  redis.call('HSET', jk, 'status', 'running', 'attempts', tonumber(f[2]) + 1,
             'version', tonumber(f[3]) + 1, 'started_at', now, 'worker_id', wid,
             'lease_expires_at', lease_exp, 'history', append(f[4], transition('running', now)))
  zadd(P .. 'running', lease_exp, id)
  move(id, f[5], old, 'running')
  notify(id)
  return row(jk)
end

-- @block unregister
-- forget worker wid's idle registration (see hand_off)
local function unregister(wid, queues_json)
  for _, q in ipairs(cjson.decode(queues_json)) do
    redis.call('LREM', P .. 'idle:' .. q, 0, wid)
  end
  redis.call('DEL', P .. 'idler:' .. wid)
end

-- @block hand_off
-- A worker that found nothing to claim registers as idle (claim.lua): idler:<wid> holds its
-- free slots, lease, clock offset and queues, and idle:<q> lists it. A job enqueued for such a
-- queue is stored already claimed by that worker and pushed to its handoff:<wid> list, which
-- it BLPOPs: one round trip from enqueue to a running job instead of wake, claim and reply.
-- Times are the worker's clock: Redis's TIME plus the offset the worker registered with.
-- A worker that dies registered holds what it was handed until its lease expires; what it
-- never took off its list then goes back uncounted (take_back in requeue.lua). Queues with no
-- live registration are remembered for the rest of the call.
local no_idler = {}
local server_now = nil

-- the next live idle worker on queue q: its id and registration, or nil
local function idle_worker(q)
  if no_idler[q] then return nil end
  local idle = P .. 'idle:' .. q
  for _ = 1, @STALE_SKIP@ do
    local wid = redis.call('LINDEX', idle, -1)
    if not wid then break end
    if not server_now then
      local t = redis.call('TIME')
      server_now = tonumber(t[1]) + tonumber(t[2]) / 1000000
    end
    local w = redis.call('HMGET', P .. 'idler:' .. wid, 'until', 'lease', 'offset', 'free',
                         'queues')
    if w[1] and tonumber(w[1]) > server_now then return wid, w end
    redis.call('RPOP', idle)  -- a registration that expired: its worker stopped waiting
  end
  no_idler[q] = true
  return nil
end

-- push job id's fields (a flat field/value list, a later value of a field replacing an
-- earlier one) to idle worker wid on queue q
local function hand_to(q, wid, w, id, fields)
  local hk = P .. 'handoff:' .. wid
  -- every value is a string: cjson changes no number
  redis.call('RPUSH', hk, id .. ' ' .. cjson.encode(fields))
  redis.call('PEXPIRE', hk, math.ceil((tonumber(w[1]) - server_now + tonumber(w[2])) * 1000))
  local free = tonumber(w[4]) - 1
  if free > 0 then
    redis.call('HSET', P .. 'idler:' .. wid, 'free', free)
    local idle = P .. 'idle:' .. q
    redis.call('RPOPLPUSH', idle, idle)  -- the next job goes to the next worker
  else
    unregister(wid, w[5])
  end
end

-- @block take_back
-- remove job id from worker wid's handoff list; whether it was there (handed, never taken)
local function take_back(wid, id)
  local hk = P .. 'handoff:' .. wid
  local head = id .. ' '
  for _, item in ipairs(redis.call('LRANGE', hk, 0, -1)) do
    if string.sub(item, 1, #head) == head then
      redis.call('LREM', hk, 1, item)
      return true
    end
  end
  return false
end

-- @block enqueue_jobs
-- Jobs from ARGV[pos] = n, then per job a head of 11 (id, queue, status, task, priority,
-- run_at, key ('' for none, else '=' .. key), attempts, version, history ('' for none), m)
-- and the m field/value pairs the job has: HSET takes them as they are, without a Lua loop.
-- Returns the reply (0 = stored, or the row of the live job holding the key) or nil and an
-- error message, having written nothing.
local function enqueue_jobs(pos, retrying)
  local n = tonumber(ARGV[pos])
  pos = pos + 1
  local jobs, seen = {}, {}
  for j = 1, n do
    local key = ARGV[pos + 6]
    local s = {at = pos, id = ARGV[pos], queue = ARGV[pos + 1], status = ARGV[pos + 2],
               key = key ~= '' and string.sub(key, 2) or nil, first = pos + 11,
               last = pos + 10 + 2 * tonumber(ARGV[pos + 10])}
    pos = s.last + 1
    jobs[j] = s
    if seen[s.id] then return nil, 'job id ' .. s.id .. ' appears twice in one batch' end
    seen[s.id] = true
    if not retrying and redis.call('EXISTS', jkey(s.id)) == 1
        and not (s.key and live_key_owner(s.key)) then
      return nil, 'a job with id ' .. s.id .. ' already exists'
    end
  end
  local reply = {}
  for j = 1, n do
    local s = jobs[j]
    local id, q, st, at = s.id, s.queue, s.status, s.at
    local jk = jkey(id)
    local owner = s.key and live_key_owner(s.key)
    if owner then
      reply[j] = row(jkey(owner))
    elseif retrying and redis.call('EXISTS', jk) == 1 then
      -- our first attempt stored it before the connection broke
      reply[j] = row(jk)
    else
      local wid, w = nil, nil
      if st == 'queued' then wid, w = idle_worker(q) end
      if wid then
        -- stored as claimed by that worker: the running transition of take(), written
        -- after the job's own fields (HSET's last value of a field wins)
        local now = server_now + tonumber(w[3])
        local t, lease_exp = fmt(now), fmt(now + tonumber(w[2]))
        local history = ARGV[at + 9]
        local fields = {unpack(ARGV, s.first, s.last)}
        local claimed = {'status', 'running', 'attempts', tonumber(ARGV[at + 7]) + 1,
                         'version', tonumber(ARGV[at + 8]) + 1, 'started_at', t,
                         'worker_id', wid, 'lease_expires_at', lease_exp,
                         'history', append(history ~= '' and history, transition('running', t))}
        for i = 1, #claimed do fields[#fields + 1] = tostring(claimed[i]) end
        redis.call('HSET', jk, unpack(fields))
        st = 'running'
        zadd(P .. 'running', lease_exp, id)
        hand_to(q, wid, w, id, fields)
      else
        redis.call('HSET', jk, unpack(ARGV, s.first, s.last))
        if st == 'queued' then
          zadd(P .. 'ready:' .. q, -tonumber(ARGV[at + 4]), rmember(ARGV[at + 5], id))
          wake(q)
        elseif st == 'scheduled' then
          zadd(P .. 'sched:' .. q, ARGV[at + 5], id)
          wake(q)
        end
      end
      if s.key then redis.call('SET', P .. 'key:' .. s.key, id) end
      zadd(P .. 'idx:task:' .. ARGV[at + 3], 0, id)
      zadd(P .. 'idx:qs:' .. q .. ':' .. st, 0, id)
      sadds[q] = true
      reply[j] = 0
    end
  end
  return reply
end

-- @block remove
-- remove every trace of a job; false when it does not exist
local function remove(id)
  local jk = jkey(id)
  local f = redis.call('HMGET', jk, 'status', 'queue', 'task', 'key', 'run_at')
  if not f[1] then return false end
  local st, q = f[1], f[2]
  redis.call('DEL', jk)
  zrem(P .. 'idx:qs:' .. q .. ':' .. st, id)
  zrem(P .. 'idx:task:' .. f[3], id)
  zrem(P .. 'ready:' .. q, rmember(f[5], id))
  zrem(P .. 'sched:' .. q, id)
  zrem(P .. 'running', id)
  zrem(P .. 'expires', id)
  if f[4] then
    local kk = P .. 'key:' .. f[4]
    if redis.call('GET', kk) == id then redis.call('DEL', kk) end
  end
  notify(id)
  return true
end
