-- move_future_jobs: move due future jobs to the tail of their queue, then create the jobs of due periodic tasks.
--
-- KEYS[1]  payloads: hash, job id -> stored job (spinach/brokers/redis/payload.py)
-- KEYS[2]  seq: counter giving each ready entry its place in line
-- KEYS[3]  periodic: hash, task name -> JSON {queue, max_retries, period}
-- KEYS[4]  periodic_next: sorted set, task name scored by its next run
-- KEYS[5]  queues: set of the namespace's queue names
-- KEYS[6]  future: sorted set of the future jobs of every queue (step future_member)
-- KEYS[7]  failed: list of entries that are not jobs
-- KEYS[8]  rate_wake: sorted set of the ready lists of queues holding jobs back by a
--          rate limit, scored by when the first of them may start (see get_jobs_from_queue)
-- KEYS[9]  future_counts: hash, queue -> its jobs in the future set (step future_count)
-- ARGV[1]  now, POSIX seconds
-- ARGV[2]  notification channel
-- ARGV[3]  namespace (to derive the ids of periodic jobs)
-- ARGV[4]  the prefix of the namespace's keys, "spinach:{<namespace>}:"
-- Keys built here: the ready list of each queue a due job or periodic task belongs to,
-- ARGV[4] .. "queue:" .. queue. Which queues those are is only known here; the caller
-- cannot pass them without passing every queue's. They carry the namespace's hash tag,
-- so on Redis Cluster they are in the slot of KEYS.
-- Bounded: at most 1000 jobs moved and 100 periodic tasks run, and no more moves once
-- 5 ms have passed, so that no call blocks Redis for long whatever the number of queues
-- and of due jobs; the caller calls again at once when it stopped early. When nothing
-- is due, a call costs a few sorted set lookups.
-- Damage no Spinach code makes is worked around and reported: a future member that is
-- not one goes to the failed list; a due job whose ready list is not a list stays
-- future, due again in 60 s; a periodic task whose definition is not valid JSON leaves
-- the schedule (the engine registering it again puts it back). A place counter that is
-- not a number fails the call, before any write.
-- The workers are woken (a message on the channel) when a rate limit's hold is over, as
-- when jobs were moved; a wake is due once, then the fetch sets the next one if needed.
-- Returns: {seconds until the next due future job, periodic run or end of a rate limit's
--          hold, as a string (0 when it stopped early), or "" when there is none; then
--          one line per problem found}.
-- Safe to retry.

--- @include "place_counter"
--- @include "ready_entry"
--- @include "future_member"
--- @include "payload"
--- @include "future_count"

local payloads, seq, periodic, periodic_next = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local queues, future, failed, rate_wake = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local future_counts = KEYS[9]
local now = tonumber(ARGV[1])
local channel, namespace, prefix = ARGV[2], ARGV[3], ARGV[4]
check_place_counter(seq)

local max_moves, max_periodic, max_ms, retry_later = 1000, 100, 5, 60

local problems, reported = {}, {}
local function report(problem)
    if not reported[problem] then
        reported[problem] = true
        table.insert(problems, problem)
    end
end

local started = redis.call("TIME")
local function spent_ms()
    local t = redis.call("TIME")
    return (tonumber(t[1]) - tonumber(started[1])) * 1000 + (tonumber(t[2]) - tonumber(started[2])) / 1000
end

-- Push a job at the tail of its queue; false when the queue's ready list holds
-- something else.
local function push_ready_here(queue, id, task_name)
    local ready = prefix .. "queue:" .. queue
    local pushed = redis.pcall("RPUSH", ready, ready_entry(redis.call("INCR", seq), id, task_name))
    if type(pushed) == "table" and pushed.err then
        report("key " .. ready .. " is not a list (" .. pushed.err .. "): its jobs wait")
        return false
    end
    return true
end

-- First: a removal, as a full Redis (noeviction) refuses a script whose first write
-- adds data.
local woken = redis.call("ZREMRANGEBYSCORE", rate_wake, "-inf", now)
local moved, more = 0, false
local due = redis.call("ZRANGEBYSCORE", future, "-inf", now, "LIMIT", 0, max_moves)
for k, member in ipairs(due) do
    local id, queue, task_name = parse_future_member(member)
    if id == nil then
        redis.call("ZREM", future, member)
        redis.call("RPUSH", failed, member)
        report("future entry " .. member .. " is not a job's: moved to " .. failed)
    else
        -- The removal first: a full Redis (noeviction) refuses a script whose first
        -- write adds data, and removing makes room for the push.
        redis.call("ZREM", future, member)
        if push_ready_here(queue, id, task_name) then
            moved = moved + 1
            count_future(future_counts, queue, -1)
        else
            redis.call("ZADD", future, now + retry_later, member)
        end
    end
    if k % 100 == 0 and spent_ms() > max_ms then
        more = k < #due
        break
    end
end
more = more or #due == max_moves

local due_tasks = redis.call("ZRANGEBYSCORE", periodic_next, "-inf", now, "WITHSCORES", "LIMIT", 0, max_periodic)
for j = 1, #due_tasks, 2 do
    local task_name, next_run = due_tasks[j], tonumber(due_tasks[j + 1])
    -- The removal first, as above; the next run is set again below.
    redis.call("ZREM", periodic_next, task_name)
    local ok, definition = pcall(cjson.decode, redis.call("HGET", periodic, task_name) or "")
    if not ok or type(definition) ~= "table" or type(definition.queue) ~= "string"
        or type(definition.period) ~= "number" or definition.period <= 0
        or type(definition.max_retries) ~= "number" then
        report("periodic task " .. task_name .. " has no valid definition in "
            .. periodic .. ": it runs again once an engine registers it")
    else
        local h = redis.sha1hex(namespace .. "\0" .. task_name .. "\0" .. string.format("%.6f", next_run))
        local id = string.sub(h, 1, 8) .. "-" .. string.sub(h, 9, 12) .. "-" .. string.sub(h, 13, 16)
            .. "-" .. string.sub(h, 17, 20) .. "-" .. string.sub(h, 21, 32)
        local payload = new_payload(task_name, definition.queue, definition.max_retries, now)
        if redis.call("HSETNX", payloads, id, payload) == 1 then
            redis.pcall("SADD", queues, definition.queue)
            if push_ready_here(definition.queue, id, task_name) then
                moved = moved + 1
            else
                redis.call("HDEL", payloads, id)
            end
        end
        -- One period later; after a delay, one period from now: never twice within a period.
        redis.call("ZADD", periodic_next, math.max(next_run, now) + definition.period, task_name)
    end
end
more = more or #due_tasks == 2 * max_periodic

if moved + woken > 0 then
    redis.call("PUBLISH", channel, "due")
end

local next_time
for _, key in ipairs({future, periodic_next, rate_wake}) do
    local first = redis.call("ZRANGE", key, 0, 0, "WITHSCORES")
    if first[2] ~= nil and (next_time == nil or tonumber(first[2]) < next_time) then
        next_time = tonumber(first[2])
    end
end
if more then
    next_time = now
end
local result = {next_time == nil and "" or string.format("%.6f", math.max(0, next_time - now))}
for _, problem in ipairs(problems) do
    table.insert(result, problem)
end
return result
