-- ARGV: prefix, queue...; replies 'ready' when a claimable job waits, else the earliest
-- scheduled run_at among the queues (nil when none)
for i = 2, #ARGV do
  if redis.call('ZCARD', P .. 'ready:' .. ARGV[i]) > 0 then return 'ready' end
end
return earliest_scheduled(2)
