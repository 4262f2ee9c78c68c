-- job_activity: jobs started and failed for good in each of the last minutes.
--
-- KEYS[1]  activity: hash, jobs started and failed per minute (step activity)
-- ARGV[1]  now, POSIX seconds; empty: the Redis server's clock (TIME)
-- ARGV[2]  M, how many minutes, the current one included (1 to 60)
-- Returns: {the current minute (POSIX seconds // 60), then two counts per minute, jobs
--          started then jobs failed, the oldest minute first}. Reads only.

local activity = KEYS[1]
local now, minutes = ARGV[1], tonumber(ARGV[2])

if now == "" then
    now = redis.call("TIME")[1]
end
local current = math.floor(tonumber(now) / 60)
local fields = {}
for minute = current - minutes + 1, current do
    table.insert(fields, "s" .. minute)
    table.insert(fields, "f" .. minute)
end
local result = {current}
for _, count in ipairs(redis.call("HMGET", activity, unpack(fields))) do
    table.insert(result, tonumber(count) or 0)
end
return result
