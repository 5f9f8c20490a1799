-- ARGV: prefix, now, forget_before; replies the JSON of live workers
local alive = P .. 'workers:alive'
local dead = redis.call('ZRANGEBYSCORE', alive, '-inf', '(' .. ARGV[3])
if #dead > 0 then
  redis.call('ZREM', alive, unpack(dead))
  redis.call('HDEL', P .. 'workers', unpack(dead))
end
local ids = redis.call('ZRANGEBYSCORE', alive, '(' .. ARGV[2], '+inf')
if #ids == 0 then return {} end
return redis.call('HMGET', P .. 'workers', unpack(ids))
