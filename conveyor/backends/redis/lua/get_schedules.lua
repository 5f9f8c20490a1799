-- ARGV: prefix; replies every schedule's fields, ordered by id
local out = {}
for _, id in ipairs(redis.call('ZRANGE', P .. 'schedules', 0, -1)) do
  local flat = redis.call('HGETALL', P .. 'schedule:' .. id)
  if #flat > 0 then out[#out + 1] = flat end
end
return out
