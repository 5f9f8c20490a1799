-- ARGV: prefix; replies {queue, status, count, ...} for non-zero counts
local out = {}
for _, q in ipairs(redis.call('SMEMBERS', P .. 'queues')) do
  for _, s in ipairs(STATUSES) do
    local n = redis.call('ZCARD', P .. 'idx:qs:' .. q .. ':' .. s)
    if n > 0 then out[#out + 1] = q; out[#out + 1] = s; out[#out + 1] = n end
  end
end
return out
