"""Lua sources of the Redis backend; every state change of a job is one of these scripts.

Each script is its body preceded by the helper ``BLOCKS`` it uses, and gets the key prefix
(``"conveyor:"``) as ``ARGV[1]``. Scripts never take ``KEYS``: the layout derives from the
prefix and job ids, which ties this backend to a single Redis node (not Redis Cluster).

Numbers cross the Lua boundary as strings written by Python's ``repr(float)`` and are stored
verbatim, so times read back bit for bit. When Lua must compute a time itself (``now +
result_ttl``) it formats with ``%.17g``, which round-trips a double exactly; plain
``tostring`` would keep only 14 digits and shift timestamps by up to 0.1 ms.

Index writes (the ``idx:*`` zsets, ``running``, ``expires``) are buffered per key and issued
once per script as variadic ZADD/ZREM: a batch of 100 claims moves 100 members with a handful
of calls instead of 500. Queue structures that a script reads back (``ready``) are written
directly.
"""

from __future__ import annotations

import re

#: how many wake tokens a queue's list holds at most (one token wakes one blocked worker)
WAKE_CAP = 8
#: upper bound of due scheduled jobs one claim moves to the ready set per queue
PROMOTE_MIN = 256

#: the job hash's fields, in the order scripts return them (HMGET rows: no field names on the
#: wire, and Python decodes by position)
FIELDS = ("id", "task", "queue", "args", "kwargs", "priority", "status", "run_at", "created_at",
          "attempts", "max_attempts", "timeout", "result_ttl", "key", "started_at",
          "finished_at", "worker_id", "lease_expires_at", "progress", "progress_message",
          "result", "result_expires_at", "cancel_requested", "errors", "history", "headers",
          "version")

# Helpers shared by the scripts, one definition group per block. A script gets only the
# blocks it references (transitively, see ``_assemble``): defining every closure on each call
# cost ~5 µs, as much as the whole of a small script.
BLOCKS: list[str] = [r"""
local P = ARGV[1]
""", r"""
local FIELDS = {@FIELDS@}
""", r"""
local LIVE = {scheduled = true, queued = true, running = true}
""", r"""
local FINISHED = {succeeded = true, failed = true, cancelled = true}
""", r"""
local STATUSES = {'scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled'}
""", r"""
local function jkey(id) return P .. 'job:' .. id end
""", r"""
local function fmt(x) return string.format('%.17g', x) end
""", r"""
-- ready members sort by (run_at, id) inside one priority score: a fixed-width run_at prefix
-- makes lexicographic order numeric. The id starts at byte 21.
local function rmember(run_at, id)
  local r = tonumber(run_at) or 0
  if r < 0 then r = 0 elseif r > 9e12 then r = 9e12 end
  return string.format('%020.6f', r) .. id
end
""", r"""
-- history and errors are JSON arrays kept as text: appending is string surgery, so Lua
-- never decodes (and re-encodes, with cjson's 14-digit numbers) what Python wrote
local function append(arr, item)
  if not arr or arr == '' or arr == '[]' then return '[' .. item .. ']' end
  return string.sub(arr, 1, -2) .. ',' .. item .. ']'
end
""", r"""
local function transition(status, now)
  return '{"status":"' .. status .. '","at":' .. now .. '}'
end
""", r"""
local function row(jk) return redis.call('HMGET', jk, unpack(FIELDS)) end
""", r"""
local function hmap(flat)
  local m = {}
  for i = 1, #flat, 2 do m[flat[i]] = flat[i + 1] end
  return m
end
""", r"""
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
""", r"""
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
    local tokens = {}
    for i = 1, math.min(n, @WAKE_CAP@) do tokens[i] = '1' end
    if redis.call('LPUSH', k, unpack(tokens)) > @WAKE_CAP@ then
      redis.call('LTRIM', k, 0, @WAKE_CAP@ - 1)
    end
  end
  zadds, zrems, sadds, wakes = {}, {}, {}, {}
end
""", r"""
local function move(id, q, old, new)
  zrem(P .. 'idx:qs:' .. q .. ':' .. old, id)
  zadd(P .. 'idx:qs:' .. q .. ':' .. new, 0, id)
end
""", r"""
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
""", r"""
local function live_key_owner(key)
  local other = redis.call('GET', P .. 'key:' .. key)
  if other then
    local st = redis.call('HGET', jkey(other), 'status')
    if st and LIVE[st] then return other end
  end
  return nil
end
""", r"""
-- jobs from ARGV[pos] = n, then per job a presence mask ('1'/'0' per FIELDS entry) and one
-- value per field ('' when absent). Returns the reply (0 = stored, or the row of the live
-- job holding the key) or nil and an error message, having written nothing.
local function enqueue_jobs(pos, retrying)
  local n = tonumber(ARGV[pos])
  pos = pos + 1
  local jobs, seen = {}, {}
  for j = 1, n do
    local s = {at = pos, mask = ARGV[pos], id = ARGV[pos + @I_id@],
               queue = ARGV[pos + @I_queue@], status = ARGV[pos + @I_status@]}
    if string.byte(s.mask, @I_key@) == 49 then s.key = ARGV[pos + @I_key@] end
    pos = pos + 1 + #FIELDS
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
      local pairs_, mask = {}, s.mask
      for i = 1, #FIELDS do
        if string.byte(mask, i) == 49 then
          pairs_[#pairs_ + 1] = FIELDS[i]
          pairs_[#pairs_ + 1] = ARGV[at + i]
        end
      end
      redis.call('HSET', jk, unpack(pairs_))
      if s.key then redis.call('SET', P .. 'key:' .. s.key, id) end
      zadd(P .. 'idx:qs:' .. q .. ':' .. st, 0, id)
      zadd(P .. 'idx:task:' .. ARGV[at + @I_task@], 0, id)
      sadds[q] = true
      if st == 'queued' then
        zadd(P .. 'ready:' .. q, -tonumber(ARGV[at + @I_priority@]),
             rmember(ARGV[at + @I_run_at@], id))
        wake(q)
      elseif st == 'scheduled' then
        zadd(P .. 'sched:' .. q, ARGV[at + @I_run_at@], id)
        wake(q)
      end
      reply[j] = 0
    end
  end
  return reply
end
""", r"""
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
"""]

# ARGV: prefix, retrying ('1' after a connection failure), jobs (see enqueue_jobs)
ENQUEUE = r"""
local reply, err = enqueue_jobs(3, ARGV[2] == '1')
if not reply then return redis.error_reply('CONVEYOR ' .. err) end
flush()
return reply
"""

# ARGV: prefix, now, lease expiry, worker id, limit, queue...
CLAIM = r"""
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
"""

# ARGV: prefix, lease expiry, then (id, attempt) pairs; replies 'ok' | 'cancel' | 'lost' each
EXTEND = r"""
local lease_exp = ARGV[2]
local out = {}
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local jk = jkey(id)
  local f = redis.call('HMGET', jk, 'status', 'attempts', 'cancel_requested')
  if f[1] == 'running' and tonumber(f[2]) == tonumber(ARGV[i + 1]) then
    redis.call('HSET', jk, 'lease_expires_at', lease_exp)
    zadd(P .. 'running', lease_exp, id)
    if f[3] == '1' then out[#out + 1] = 'cancel' else out[#out + 1] = 'ok' end
  else
    out[#out + 1] = 'lost'
  end
end
flush()
return out
"""

# ARGV: prefix, id, attempt, percent, message ('' = None, else '=' .. message)
PROGRESS = r"""
local id = ARGV[2]
local jk = jkey(id)
local f = redis.call('HMGET', jk, 'status', 'attempts', 'cancel_requested', 'version')
if f[1] ~= 'running' or tonumber(f[2]) ~= tonumber(ARGV[3]) then return 'lost' end
local m = {progress = ARGV[4], version = tostring(tonumber(f[4]) + 1)}
if ARGV[5] ~= '' then m.progress_message = string.sub(ARGV[5], 2) end
save(jk, m, {'progress', 'progress_message', 'version'})
notify(id)
if f[3] == '1' then return 'cancel' end
return 'ok'
"""

# ARGV: prefix, now, n, then per outcome: id, attempt, status, result ('' | '=' .. text),
# result_expires_at (''), error JSON (''), run_at (''); replies 1/0 per outcome
FINISH = r"""
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
"""

# ARGV: prefix, id, now; replies the job after the change (nil when it does not exist)
CANCEL = r"""
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
"""

# ARGV: prefix, id, now; replies the job after the change (nil when it does not exist), or
# {0, holder id, key} when another live job holds the job's key (nothing changed)
RETRY = r"""
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
"""

# ARGV: prefix, id; replies 1 when the job existed
DELETE = r"""
local existed = remove(ARGV[2])
flush()
if existed then return 1 end
return 0
"""

# ARGV: prefix, now, batch; replies the ids recovered, and a trailing 1 when the batch was
# full (more may be waiting)
REQUEUE = r"""
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
    local msg = 'worker ' .. (f[5] or 'None') .. ' stopped renewing its lease'
    local err = '{"attempt":' .. f[2] .. ',"type":"WorkerLost","message":'
                .. cjson.encode(msg) .. ',"traceback":"","at":' .. now
                .. ',"reason":"worker_lost"}'
    local st
    if f[4] == '1' then st = 'cancelled'
    elseif tonumber(f[2]) < tonumber(f[3]) then st = 'queued'
    else st = 'failed' end
    local m = {errors = append(f[10], err), status = st,
               history = append(f[9], transition(st, now)),
               version = tostring(tonumber(f[11]) + 1)}
    local names = {'errors', 'lease_expires_at', 'worker_id', 'status', 'history', 'version'}
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
"""

# ARGV: prefix, now, batch; replies {pruned, examined}
PRUNE = r"""
local now, batch = ARGV[2], tonumber(ARGV[3])
local nnow = tonumber(now)
local ids = redis.call('ZRANGEBYSCORE', P .. 'expires', '-inf', '(' .. now, 'LIMIT', 0, batch)
local n = 0
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', jkey(id), 'status', 'result_expires_at')
  if f[1] and FINISHED[f[1]] and f[2] and tonumber(f[2]) < nnow then
    remove(id)
    n = n + 1
  elseif f[1] and FINISHED[f[1]] and f[2] then
    zadd(P .. 'expires', f[2], id)
  else
    zrem(P .. 'expires', id)
  end
end
flush()
return {n, #ids}
"""

# ARGV: prefix, cursor ('' = first page), limit, status, queue, task ('' = any)
# replies {next cursor or '', job, job, ...}; newest (highest id) first
LIST = r"""
local cursor, limit = ARGV[2], tonumber(ARGV[3])
local fs, fq, ft = ARGV[4], ARGV[5], ARGV[6]
local max = '+'
if cursor ~= '' then max = '(' .. cursor end
local found, last, exhausted = {}, nil, true
local idx = nil
if ft ~= '' then
  idx = P .. 'idx:task:' .. ft
  if fs ~= '' and fq ~= '' then
    local qs = P .. 'idx:qs:' .. fq .. ':' .. fs
    if redis.call('ZCARD', qs) < redis.call('ZCARD', idx) then idx = qs end
  end
elseif fs ~= '' and fq ~= '' then
  idx = P .. 'idx:qs:' .. fq .. ':' .. fs
end
if idx then
  -- one index, checking the filter fields it does not imply; one call examines a bounded
  -- number of ids, and a short page then carries a cursor
  local check = ft ~= '' and (fs ~= '' or fq ~= '')
  local scanned = 0
  while #found <= limit and scanned < 5000 do
    local want = limit + 1 - #found
    if check then want = 200 end
    local ids = redis.call('ZREVRANGEBYLEX', idx, max, '-', 'LIMIT', 0, want)
    for _, id in ipairs(ids) do
      scanned = scanned + 1
      last = id
      local ok = true
      if check then
        local f = redis.call('HMGET', jkey(id), 'status', 'queue', 'task')
        ok = f[1] and (fs == '' or f[1] == fs) and (fq == '' or f[2] == fq)
             and (ft == '' or f[3] == ft)
      end
      if ok then
        found[#found + 1] = id
        if #found > limit then break end
      end
    end
    if #ids < want then break end
    if #found <= limit and scanned >= 5000 then exhausted = false end
    max = '(' .. last
  end
else
  -- merge the (queue, status) indexes the filter spans: the newest limit+1 ids overall are
  -- among each index's newest limit+1. A scratch zset orders the candidates, in Redis's
  -- byte order (Lua compares strings with the locale's strcoll).
  local queues, statuses = {fq}, {fs}
  if fq == '' then queues = redis.call('SMEMBERS', P .. 'queues') end
  if fs == '' then statuses = STATUSES end
  local tmp = P .. 'tmp:list'
  local cands = {}
  for _, q in ipairs(queues) do
    for _, s in ipairs(statuses) do
      local ids = redis.call('ZREVRANGEBYLEX', P .. 'idx:qs:' .. q .. ':' .. s, max, '-',
                             'LIMIT', 0, limit + 1)
      for _, id in ipairs(ids) do cands[#cands + 1] = 0; cands[#cands + 1] = id end
    end
  end
  for i = 1, #cands, 2000 do
    redis.call('ZADD', tmp, unpack(cands, i, math.min(i + 1999, #cands)))
  end
  if #cands > 0 then
    found = redis.call('ZREVRANGEBYLEX', tmp, '+', '-', 'LIMIT', 0, limit + 1)
    redis.call('DEL', tmp)
  end
end
local out = {''}
if #found > limit then out[1] = found[limit]
elseif not exhausted then out[1] = last end
for i = 1, math.min(limit, #found) do
  out[#out + 1] = row(jkey(found[i]))
end
return out
"""

# ARGV: prefix; replies {queue, status, count, ...} for non-zero counts
STATS = r"""
local out = {}
for _, q in ipairs(redis.call('SMEMBERS', P .. 'queues')) do
  for _, s in ipairs(STATUSES) do
    local n = redis.call('ZCARD', P .. 'idx:qs:' .. q .. ':' .. s)
    if n > 0 then out[#out + 1] = q; out[#out + 1] = s; out[#out + 1] = n end
  end
end
return out
"""

# ARGV: prefix, queue...; replies 'ready' when a claimable job waits, else the earliest
# scheduled run_at among the queues (nil when none)
PEEK = r"""
local earliest, text = nil, nil
for i = 2, #ARGV do
  local q = ARGV[i]
  if redis.call('ZCARD', P .. 'ready:' .. q) > 0 then return 'ready' end
  local first = redis.call('ZRANGE', P .. 'sched:' .. q, 0, 0, 'WITHSCORES')
  if first[2] then
    local at = tonumber(first[2])
    if earliest == nil or at < earliest then earliest = at; text = first[2] end
  end
end
return text
"""

# ARGV: prefix, id, version, waiter list, ttl ms; replies 0 (no such job), the job (its
# version differs) or 1 (registered: a token will be pushed to the waiter list on change)
WATCH = r"""
local id, version, list, ttl = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local jk = jkey(id)
local v = redis.call('HGET', jk, 'version')
if not v then return 0 end
if v ~= version then return row(jk) end
local wk = P .. 'watch:' .. id
redis.call('SADD', wk, list)
if redis.call('PTTL', wk) < ttl then redis.call('PEXPIRE', wk, ttl) end
if redis.call('PTTL', P .. 'watching') < ttl then
  redis.call('SET', P .. 'watching', '1', 'PX', ttl)
end
return 1
"""

# ARGV: prefix, id, spec, paused, updated_at, state; keeps last_fire/next_fire/state of an
# existing schedule
PUT_SCHEDULE = r"""
local id = ARGV[2]
local k = P .. 'schedule:' .. id
if redis.call('EXISTS', k) == 1 then
  redis.call('HSET', k, 'spec', ARGV[3], 'paused', ARGV[4], 'updated_at', ARGV[5])
else
  redis.call('HSET', k, 'id', id, 'spec', ARGV[3], 'paused', ARGV[4], 'updated_at', ARGV[5],
             'state', ARGV[6])
end
redis.call('ZADD', P .. 'schedules', 0, id)
return 1
"""

# ARGV: prefix; replies every schedule's fields, ordered by id
GET_SCHEDULES = r"""
local out = {}
for _, id in ipairs(redis.call('ZRANGE', P .. 'schedules', 0, -1)) do
  local flat = redis.call('HGETALL', P .. 'schedule:' .. id)
  if #flat > 0 then out[#out + 1] = flat end
end
return out
"""

# ARGV: prefix, id, paused
SET_PAUSED = r"""
local k = P .. 'schedule:' .. ARGV[2]
if redis.call('EXISTS', k) == 0 then return 0 end
redis.call('HSET', k, 'paused', ARGV[3])
return 1
"""

# ARGV: prefix, id, next_fire ('' = None), state
UPDATE_SCHEDULE = r"""
local k = P .. 'schedule:' .. ARGV[2]
if redis.call('EXISTS', k) == 0 then return 0 end
local m = {state = ARGV[4]}
if ARGV[3] ~= '' then m.next_fire = ARGV[3] end
save(k, m, {'state', 'next_fire'})
return 1
"""

# ARGV: prefix, id, fire_time, next_fire (''), state, retrying, jobs (see enqueue_jobs)
CLAIM_FIRE = r"""
local k = P .. 'schedule:' .. ARGV[2]
local fire = ARGV[3]
if redis.call('EXISTS', k) == 0 then return 0 end
local last = redis.call('HGET', k, 'last_fire')
if last and tonumber(last) >= tonumber(fire) then return 0 end
local reply, err = enqueue_jobs(7, ARGV[6] == '1')
if not reply then return redis.error_reply('CONVEYOR ' .. err) end
local m = {last_fire = fire, state = ARGV[5]}
if ARGV[4] ~= '' then m.next_fire = ARGV[4] end
save(k, m, {'last_fire', 'state', 'next_fire'})
flush()
return 1
"""

# ARGV: prefix, now, forget_before; replies the JSON of live workers
LIST_WORKERS = r"""
local alive = P .. 'workers:alive'
local dead = redis.call('ZRANGEBYSCORE', alive, '-inf', '(' .. ARGV[3])
if #dead > 0 then
  redis.call('ZREM', alive, unpack(dead))
  redis.call('HDEL', P .. 'workers', unpack(dead))
end
local ids = redis.call('ZRANGEBYSCORE', alive, '(' .. ARGV[2], '+inf')
if #ids == 0 then return {} end
return redis.call('HMGET', P .. 'workers', unpack(ids))
"""

_DEFINES = re.compile(r"^local (?:function )?([\w, ]+?)(?: =|\()", re.M)
_PLACEHOLDER = re.compile(r"@(\w+)@")


def _fill(text: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("I_"):
            return str(FIELDS.index(name[2:]) + 1)
        return {"FIELDS": ", ".join(f"'{f}'" for f in FIELDS), "WAKE_CAP": str(WAKE_CAP),
                "PROMOTE_MIN": str(PROMOTE_MIN)}[name]

    return _PLACEHOLDER.sub(value, text)


def _code(text: str) -> str:
    """Lua without comments and string literals, so that only real references count."""
    return re.sub(r"--[^\n]*|'[^'\n]*'|\"[^\"\n]*\"", "", text)


def _assemble(body: str) -> str:
    """``body`` preceded by the helper blocks it uses, directly or through other blocks."""
    defined = [[n.strip() for group in _DEFINES.findall(block) for n in group.split(",")]
               for block in BLOCKS]
    used = [False] * len(BLOCKS)
    used[0] = True  # the prefix
    pending = [body]
    while pending:
        text = _code(pending.pop())
        for i, names in enumerate(defined):
            if not used[i] and any(re.search(rf"\b{n}\b", text) for n in names):
                used[i] = True
                pending.append(BLOCKS[i])
    return _fill("".join(b for b, u in zip(BLOCKS, used, strict=True) if u) + body)


SCRIPTS: dict[str, str] = {
    name: _assemble(body) for name, body in {
        "enqueue": ENQUEUE, "claim": CLAIM, "extend": EXTEND, "progress": PROGRESS,
        "finish": FINISH, "cancel": CANCEL, "retry": RETRY, "delete": DELETE,
        "requeue": REQUEUE, "prune": PRUNE, "list": LIST, "stats": STATS, "peek": PEEK,
        "watch": WATCH, "put_schedule": PUT_SCHEDULE, "get_schedules": GET_SCHEDULES,
        "set_paused": SET_PAUSED, "update_schedule": UPDATE_SCHEDULE,
        "claim_fire": CLAIM_FIRE, "list_workers": LIST_WORKERS,
    }.items()
}
