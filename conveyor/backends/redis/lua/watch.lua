-- ARGV: prefix, id, version, waiter list, ttl ms; replies 0 (no such job), the job (its
-- version differs) or 1 (registered: a token will be pushed to the waiter list on change)
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
