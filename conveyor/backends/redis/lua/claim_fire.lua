-- ARGV: prefix, id, fire_time, next_fire (''), state, retrying, jobs (see enqueue_jobs)
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
