-- remove_job_from_running: record that a running job ended for good, freeing its concurrency slot.
--
-- KEYS[1]  running: hash, job id -> token .. " " .. task name
-- KEYS[2]  payloads: hash, job id -> job JSON
-- KEYS[3]  in_flight: hash, task name -> running jobs of that limited task
-- ARGV[1]  job id
-- ARGV[2]  the token the job was handed out with
-- ARGV[3]  notification channel (told when a slot frees)
-- Returns: 0 recorded; 1 not ours (unknown job or another token), nothing changed.
-- Safe to retry: a second call returns 1.

local running, payloads, in_flight = KEYS[1], KEYS[2], KEYS[3]
local id, token, channel = ARGV[1], ARGV[2], ARGV[3]

local record = redis.call("HGET", running, id)
if not record or string.sub(record, 1, #token + 1) ~= token .. " " then
    return 1
end
redis.call("HDEL", running, id)
redis.call("HDEL", payloads, id)
local task_name = string.sub(record, #token + 2)
if redis.call("HEXISTS", in_flight, task_name) == 1 then
    if redis.call("HINCRBY", in_flight, task_name, -1) <= 0 then
        redis.call("HDEL", in_flight, task_name)
    end
    redis.call("PUBLISH", channel, "slot")
end
return 0
