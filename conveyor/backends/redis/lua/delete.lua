-- ARGV: prefix, id; replies 1 when the job existed
local existed = remove(ARGV[2])
flush()
if existed then return 1 end
return 0
