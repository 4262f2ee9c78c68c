-- requeue_lost_handouts: put back at the head of their queue the jobs of a fetch whose reply was lost.
--
-- KEYS[1]  running: hash, job id -> its record (step running_record)
-- KEYS[2]  in_flight: hash, task name -> running jobs of that limited task
-- KEYS[3]  ready list of the queue the lost fetch read
-- KEYS[4]  calls: hash, worker id -> its last fetch (see get_jobs_from_queue)
-- ARGV[1]  the token prefix of the lost fetch call
-- The jobs of that call never reached a worker: they go back to the head of the ready
-- list, in their order, and free their concurrency slots. RedisBroker calls this after
-- a fetch that failed with a connection error, before its next fetch; and for a wait
-- (see wait_for_jobs) that its worker gives up without fetching, when it stops: the
-- worker's record of the call goes, so that no job is handed out to the wait after.
-- Returns: the number of jobs put back.
-- Safe to retry: a second call finds nothing.

--- @include "ready_entry"
--- @include "running_record"
--- @include "release_slot"

local running, in_flight, ready, calls = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix = ARGV[1]

local worker = string.sub(prefix, 1, 32)
local last = redis.call("HGET", calls, worker)
if last and string.sub(last, 1, #prefix + 1) == prefix .. "\n" then
    redis.call("HDEL", calls, worker)
end

local lost = {}
local records = redis.call("HGETALL", running)
for i = 1, #records, 2 do
    local id, record = records[i], records[i + 1]
    local token, task_name = parse_running(record)
    if token and string.sub(token, 1, #prefix) == prefix then
        -- The number after the prefix is the job's rank in the lost reply.
        local rank = tonumber(string.sub(token, #prefix + 1)) or 0
        table.insert(lost, {rank, id, task_name})
    end
end
table.sort(lost, function(a, b) return a[1] < b[1] end)
for k = #lost, 1, -1 do
    local id, task_name = lost[k][2], lost[k][3]
    redis.call("HDEL", running, id)
    release_slot(in_flight, task_name)
    -- Place 0: at the head, where they were.
    redis.call("LPUSH", ready, ready_entry(0, id, task_name))
end
return #lost
