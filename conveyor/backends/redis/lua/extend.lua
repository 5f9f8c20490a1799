-- ARGV: prefix, lease expiry, then (id, attempt) pairs; replies 'ok' | 'cancel' | 'lost' each
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
