-- ARGV: prefix, queue...; replies 'ready' when a claimable job waits, else the earliest
-- scheduled run_at among the queues (nil when none)
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
