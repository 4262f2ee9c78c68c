-- set_rate_limits: store the given tasks' rate limits.
--
-- KEYS[1]       rate_limits: hash, task name -> its rate limit (step rate_limit)
-- KEYS[2]       limits: hash, task name -> max concurrency
-- KEYS[3]       queues: set of the namespace's queue names
-- KEYS[2+2i]    ready list of the i-th queue (i = 1..Q)
-- KEYS[3+2i]    parked sorted set of the i-th queue
-- ARGV[1]       Q, the number of queues passed: every queue of the namespace
-- ARGV[2..1+Q]  the queue names, in the order of their keys
-- ARGV[2+Q..]   two values per task: name, then its rate limit ("<starts> <period>",
--               step rate_limit), or "" when it has none
-- Tasks not given keep their limits: engines with different registries share a namespace.
-- A task's rate log is left as it is: the starts within the period count against a
-- changed limit, and it expires on its own. Parked entries of tasks left with neither a
-- concurrency nor a rate limit go back to the head of their ready list, in their order.
-- Returns: -1 when the queues passed are not all the namespace's queues (nothing
--          changed: call again with all of them); else the number of rate-limited tasks.
-- Safe to retry.

--- @include "held_back"
--- @include "queue_set"
--- @include "rate_limit"

local rate_limits, limits, queues = KEYS[1], KEYS[2], KEYS[3]
local queue_count = tonumber(ARGV[1])

if not all_queues_given(queues, 2, queue_count) then
    return -1
end

for j = 2 + queue_count, #ARGV, 2 do
    if ARGV[j + 1] ~= "" and parse_rate_limit(ARGV[j + 1]) == nil then
        return redis.error_reply("rate limit " .. ARGV[j + 1] .. " of task " .. ARGV[j]
            .. " is not <starts> <period>: nothing was changed")
    end
end
-- Removals first, as a full Redis (noeviction) refuses a script whose first write
-- adds data, and workers must start then.
for j = 2 + queue_count, #ARGV, 2 do
    if ARGV[j + 1] == "" then
        redis.call("HDEL", rate_limits, ARGV[j])
    end
end
for j = 2 + queue_count, #ARGV, 2 do
    if ARGV[j + 1] ~= "" then
        redis.call("HSET", rate_limits, ARGV[j], ARGV[j + 1])
    end
end

local held_back = limited_tasks(limits, rate_limits)
for i = 1, queue_count do
    release_parked(KEYS[2 + 2 * i], KEYS[3 + 2 * i], held_back)
end
return redis.call("HLEN", rate_limits)
