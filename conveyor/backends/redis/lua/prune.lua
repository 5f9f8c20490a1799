-- ARGV: prefix, now, batch; replies {pruned, examined}
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
