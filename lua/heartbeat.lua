-- heartbeat: record that a worker is alive, and tell which of the jobs it holds are no longer its own.
--
-- KEYS[1]  workers: sorted set, worker id scored by its last heartbeat
-- KEYS[2]  running: hash, job id -> its record (step running_record)
-- KEYS[3]  workers_info: hash, worker id -> what it tells of itself (read by inspect)
-- ARGV[1]  the worker's id
-- ARGV[2]  now, POSIX seconds; empty: the Redis server's clock (TIME), which the broker
--          uses unless a test drives time with a clock of its own
-- ARGV[3]  what the worker tells of itself: JSON text, {"host": ..., "pid": ...}
-- ARGV[4..] two values per job the worker holds: its id, the token it was handed out with
-- Returns: {the time recorded, as a string; then the ids of the held jobs that no longer
--          run under their token (taken over by another worker, ended, or unknown)}.
-- Safe to retry.

--- @include "running_record"

local workers, running, workers_info = KEYS[1], KEYS[2], KEYS[3]
local me, now, info = ARGV[1], ARGV[2], ARGV[3]

if now == "" then
    local t = redis.call("TIME")
    now = t[1] .. "." .. string.format("%06d", tonumber(t[2]))
end
-- The removal first: a full Redis (noeviction) refuses a script whose first write adds
-- data, and a heartbeat must go through even then (it replaces the worker's entry).
redis.call("ZREM", workers, me)
redis.call("ZADD", workers, now, me)
if redis.call("HGET", workers_info, me) ~= info then
    redis.call("HSET", workers_info, me, info)
end

local result = {now}
for j = 4, #ARGV, 2 do
    local id, token = ARGV[j], ARGV[j + 1]
    local record = redis.call("HGET", running, id)
    if not runs_under(record, token) then
        table.insert(result, id)
    end
end
return result
