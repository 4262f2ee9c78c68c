-- move_future_jobs: move due future jobs to the tail of their queue, then create the jobs of due periodic tasks.
--
-- KEYS[1]       payloads: hash, job id -> stored job (spinach/brokers/_redis_payload.py)
-- KEYS[2]       seq: counter giving each ready entry its place in line
-- KEYS[3]       periodic: hash, task name -> JSON {queue, max_retries, period}
-- KEYS[4]       periodic_next: sorted set, task name scored by its next run
-- KEYS[5]       queues: set of the namespace's queue names
-- KEYS[4+2i]    ready list of the i-th queue (i = 1..Q)
-- KEYS[5+2i]    future sorted set of the i-th queue
-- ARGV[1]       now, POSIX seconds
-- ARGV[2]       notification channel
-- ARGV[3]       namespace (to derive the ids of periodic jobs)
-- ARGV[4]       Q, the number of queues passed: every queue of the namespace
-- ARGV[5..4+Q]  the queue names, in the order of their keys
-- A periodic job's id is derived from its task, namespace and scheduled time, so that
-- one period can never create two jobs. Its payload is built here, with no arguments.
-- Returns: {-1} when the queues passed are not all the namespace's queues (nothing
--          changed: call again with all of them); else {0, seconds until the next due
--          future job or periodic run, as a string, or "" when there is none}.
-- Safe to retry.

local payloads, seq, periodic, periodic_next, queues = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now = tonumber(ARGV[1])
local channel, namespace = ARGV[2], ARGV[3]
local queue_count = tonumber(ARGV[4])
-- Jobs moved per call, so that one call never blocks Redis for long.
local max_moves = 1000

if redis.call("SCARD", queues) ~= queue_count then
    return {-1}
end
local queue_number = {}
for i = 1, queue_count do
    if redis.call("SISMEMBER", queues, ARGV[4 + i]) == 0 then
        return {-1}
    end
    queue_number[ARGV[4 + i]] = i
end

local function push_ready(i, member)
    local place = string.format("%012x", redis.call("INCR", seq))
    redis.call("RPUSH", KEYS[4 + 2 * i], place .. member)
end

local moved, more = 0, false
for i = 1, queue_count do
    local future = KEYS[5 + 2 * i]
    local due = redis.call("ZRANGEBYSCORE", future, "-inf", now, "LIMIT", 0, max_moves)
    for _, member in ipairs(due) do
        redis.call("ZREM", future, member)
        push_ready(i, member)
    end
    moved = moved + #due
    more = more or #due == max_moves
end

local due_tasks = redis.call("ZRANGEBYSCORE", periodic_next, "-inf", now, "WITHSCORES")
for j = 1, #due_tasks, 2 do
    local task_name, next_run = due_tasks[j], tonumber(due_tasks[j + 1])
    local definition = cjson.decode(redis.call("HGET", periodic, task_name))
    local i = queue_number[definition.queue]
    if i == nil then
        return {-1}
    end
    local h = redis.sha1hex(namespace .. "\0" .. task_name .. "\0" .. string.format("%.6f", next_run))
    local id = string.sub(h, 1, 8) .. "-" .. string.sub(h, 9, 12) .. "-" .. string.sub(h, 13, 16)
        .. "-" .. string.sub(h, 17, 20) .. "-" .. string.sub(h, 21, 32)
    -- The stored form of spinach/brokers/_redis_payload.py.
    local payload = "[" .. cjson.encode(task_name) .. "," .. cjson.encode(definition.queue)
        .. "," .. string.format("%d", definition.max_retries)
        .. ",0," .. string.format("%.6f", now) .. ",[],{}]"
    if redis.call("HSETNX", payloads, id, payload) == 1 then
        push_ready(i, id .. task_name)
        moved = moved + 1
    end
    -- One period later; after a delay, one period from now: never twice within a period.
    redis.call("ZADD", periodic_next, math.max(next_run, now) + definition.period, task_name)
end

if moved > 0 then
    redis.call("PUBLISH", channel, "due")
end

local next_time
local function consider(first)
    if first[2] ~= nil then
        local t = tonumber(first[2])
        if next_time == nil or t < next_time then
            next_time = t
        end
    end
end
for i = 1, queue_count do
    consider(redis.call("ZRANGE", KEYS[5 + 2 * i], 0, 0, "WITHSCORES"))
end
consider(redis.call("ZRANGE", periodic_next, 0, 0, "WITHSCORES"))
if more then
    next_time = now
end
if next_time == nil then
    return {0, ""}
end
return {0, string.format("%.6f", math.max(0, next_time - now))}
