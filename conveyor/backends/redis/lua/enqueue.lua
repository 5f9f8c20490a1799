-- ARGV: prefix, retrying ('1' after a connection failure), jobs (see enqueue_jobs)
local reply, err = enqueue_jobs(3, ARGV[2] == '1')
if not reply then return redis.error_reply('CONVEYOR ' .. err) end
flush()
return reply
