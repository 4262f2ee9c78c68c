-- set_rate_limits: store the given tasks' rate limits.
--
-- KEYS[1]       rate_limits: hash, task name -> its rate limit (step rate_limit)
-- KEYS[2]       limits: hash, task name -> max concurrency
-- KEYS[3]       queues: set of the namespace's queue names
-- KEYS[4]       rate_wake: sorted set of the ready lists of queues holding jobs back by a
--               rate limit (see get_jobs_from_queue)
-- KEYS[3+2i]    ready list of the i-th queue (i = 1..Q)
-- KEYS[4+2i]    parked sorted set of the i-th queue
-- ARGV[1]       the prefix of the namespace's keys, "spinach:{<namespace>}:" (the rate
--               log of each task given is built from it, step rate_limit)
-- ARGV[2]       Q, the number of queues passed: every queue of the namespace
-- ARGV[3..2+Q]  the queue names, in the order of their keys
-- ARGV[3+Q..]   two values per task: name, then its rate limit ("<starts> <period>",
--               step rate_limit), or "" when it has none
-- Tasks not given keep their limits: engines with different registries share a namespace.
-- A task's rate log keeps its starts: those within the period count against a changed
-- limit. Its expiry is set to the new period (and a second), so that a longer period
-- does not lose them. Parked entries of tasks left with neither a
-- concurrency nor a rate limit go back to the head of their ready list, in their order.
-- Returns: -1 when the queues passed are not all the namespace's queues (nothing
--          changed: call again with all of them); else the number of rate-limited tasks.
-- Safe to retry.

--- @include "held_back"
--- @include "queue_set"
--- @include "rate_limit"

local rate_limits, limits, queues = KEYS[1], KEYS[2], KEYS[3]
local prefix, queue_count = ARGV[1], tonumber(ARGV[2])
local first_task = 3 + queue_count

if not all_queues_given(queues, 3, queue_count) then
    return -1
end

for j = first_task, #ARGV, 2 do
    if ARGV[j + 1] ~= "" and parse_rate_limit(ARGV[j + 1]) == nil then
        return redis.error_reply("rate limit " .. ARGV[j + 1] .. " of task " .. ARGV[j]
            .. " is not <starts> <period>: nothing was changed")
    end
end
-- Only the changes are written (an engine started again changes nothing), and
-- removals first: a full Redis (noeviction) refuses a script whose first write adds
-- data, and workers must start then. So a change first deletes the wake-up times of
-- held-back jobs, which the next fetch of each queue sets again.
local changed = {}
for j = first_task, #ARGV, 2 do
    if redis.call("HGET", rate_limits, ARGV[j]) ~= (ARGV[j + 1] ~= "" and ARGV[j + 1] or false) then
        table.insert(changed, j)
    end
end
for _, j in ipairs(changed) do
    if ARGV[j + 1] == "" then
        redis.call("HDEL", rate_limits, ARGV[j])
    end
end
if #changed > 0 then
    redis.call("DEL", KEYS[4])
end
for _, j in ipairs(changed) do
    if ARGV[j + 1] ~= "" then
        redis.call("HSET", rate_limits, ARGV[j], ARGV[j + 1])
        local _, period = parse_rate_limit(ARGV[j + 1])
        redis.call("PEXPIRE", rate_log_key(prefix, ARGV[j]), math.ceil(period * 1000) + 1000)
    end
end

local held_back = limited_tasks(limits, rate_limits)
for i = 1, queue_count do
    release_parked(KEYS[3 + 2 * i], KEYS[4 + 2 * i], held_back)
end
return redis.call("HLEN", rate_limits)
