-- ARGV: prefix, id, spec, paused, updated_at, state; keeps last_fire/next_fire/state of an
-- existing schedule
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
