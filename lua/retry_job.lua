-- retry_job: put a running job back for another run, freeing its slot, with its new payload.
--
-- KEYS[1]  running: hash, job id -> token .. " " .. task name
-- KEYS[2]  payloads: hash, job id -> job JSON
-- KEYS[3]  in_flight: hash, task name -> running jobs of that limited task
-- KEYS[4]  seq: counter giving each ready entry its place in line
-- KEYS[5]  ready list of the job's queue
-- KEYS[6]  future sorted set of the job's queue
-- KEYS[7]  queues: set of the namespace's queue names
-- ARGV[1]  job id
-- ARGV[2]  the token the job was handed out with
-- ARGV[3]  the job's new payload (retries and at updated by the caller)
-- ARGV[4]  at, when the job may run again, POSIX seconds
-- ARGV[5]  now, POSIX seconds
-- ARGV[6]  task name
-- ARGV[7]  queue name
-- ARGV[8]  notification channel
-- Returns: 0 recorded; 1 not ours (unknown job or another token), nothing changed.
-- Safe to retry: a second call returns 1.

local running, payloads, in_flight, seq = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ready, future, queues = KEYS[5], KEYS[6], KEYS[7]
local id, token, payload = ARGV[1], ARGV[2], ARGV[3]
local at, now = tonumber(ARGV[4]), tonumber(ARGV[5])
local task_name, queue, channel = ARGV[6], ARGV[7], ARGV[8]

local record = redis.call("HGET", running, id)
if not record or string.sub(record, 1, #token + 1) ~= token .. " " then
    return 1
end
redis.call("HDEL", running, id)
local running_task = string.sub(record, #token + 2)
if redis.call("HEXISTS", in_flight, running_task) == 1 then
    if redis.call("HINCRBY", in_flight, running_task, -1) <= 0 then
        redis.call("HDEL", in_flight, running_task)
    end
end
redis.call("HSET", payloads, id, payload)
redis.call("SADD", queues, queue)
if at <= now then
    local place = string.format("%016d", redis.call("INCR", seq))
    redis.call("RPUSH", ready, place .. id .. task_name)
else
    redis.call("ZADD", future, at, id .. task_name)
end
redis.call("PUBLISH", channel, "retry")
return 0
