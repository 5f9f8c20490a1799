-- ARGV: prefix, id, attempt, percent, message ('' = None, else '=' .. message)
local id = ARGV[2]
local jk = jkey(id)
local f = redis.call('HMGET', jk, 'status', 'attempts', 'cancel_requested', 'version')
if f[1] ~= 'running' or tonumber(f[2]) ~= tonumber(ARGV[3]) then return 'lost' end
local m = {progress = ARGV[4], version = tostring(tonumber(f[4]) + 1)}
if ARGV[5] ~= '' then m.progress_message = string.sub(ARGV[5], 2) end
save(jk, m, {'progress', 'progress_message', 'version'})
notify(id)
if f[3] == '1' then return 'cancel' end
return 'ok'
