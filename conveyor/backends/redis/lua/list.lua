-- ARGV: prefix, cursor ('' = first page), limit, status, queue, task ('' = any)
-- replies {next cursor or '', job, job, ...}; newest (highest id) first
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
