-- set_concurrency_limits: store the given tasks' limits, and recount the slots in use.
--
-- KEYS[1]       limits: hash, task name -> max concurrency
-- KEYS[2]       in_flight: hash, task name -> running jobs of that limited task
-- KEYS[3]       running: hash, job id -> its record (step running_record)
-- KEYS[4]       queues: set of the namespace's queue names
-- KEYS[5]       rate_limits: hash, task name -> its rate limit (step rate_limit)
-- KEYS[4+2i]    ready list of the i-th queue (i = 1..Q)
-- KEYS[5+2i]    parked sorted set of the i-th queue
-- ARGV[1]       Q, the number of queues passed: every queue of the namespace
-- ARGV[2..1+Q]  the queue names, in the order of their keys
-- ARGV[2+Q..]   two values per task: name, max concurrency (0: the task has no limit)
-- Tasks not given keep their limits: engines with different registries share a namespace.
-- Parked entries of tasks left with neither a concurrency nor a rate limit go back to
-- the head of their ready list, in their order: they are older than every entry of it.
-- Returns: -1 when the queues passed are not all the namespace's queues (nothing
--          changed: call again with all of them); else the number of limited tasks.
-- Safe to retry.

--- @include "running_record"
--- @include "held_back"
--- @include "queue_set"

local limits, in_flight, running, queues, rate_limits = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local queue_count = tonumber(ARGV[1])

if not all_queues_given(queues, 2, queue_count) then
    return -1
end

-- Recounted below; deleted first, as a full Redis (noeviction) refuses a script whose
-- first write adds data, and workers must start then.
redis.call("DEL", in_flight)
for j = 2 + queue_count, #ARGV, 2 do
    if tonumber(ARGV[j + 1]) > 0 then
        redis.call("HSET", limits, ARGV[j], ARGV[j + 1])
    else
        redis.call("HDEL", limits, ARGV[j])
    end
end
local limited, count = {}, 0
for _, task_name in ipairs(redis.call("HKEYS", limits)) do
    limited[task_name] = true
    count = count + 1
end

local records = redis.call("HVALS", running)
for _, record in ipairs(records) do
    -- A record without its separator (no Spinach code writes one) names no task.
    local _, task_name = parse_running(record)
    if task_name and limited[task_name] then
        redis.call("HINCRBY", in_flight, task_name, 1)
    end
end

local held_back = limited_tasks(limits, rate_limits)
for i = 1, queue_count do
    release_parked(KEYS[4 + 2 * i], KEYS[5 + 2 * i], held_back)
end
return count
