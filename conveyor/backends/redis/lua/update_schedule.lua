-- ARGV: prefix, id, next_fire ('' = None), state
local k = P .. 'schedule:' .. ARGV[2]
if redis.call('EXISTS', k) == 0 then return 0 end
local m = {state = ARGV[4]}
if ARGV[3] ~= '' then m.next_fire = ARGV[3] end
save(k, m, {'state', 'next_fire'})
return 1
