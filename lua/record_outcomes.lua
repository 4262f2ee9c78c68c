-- record_outcomes: record the end of running jobs, each one for good or for another run.
-- Used by record_outcomes, remove_job_from_running and retry_job.
--
-- KEYS[1]       running: hash, job id -> its record (step running_record)
-- KEYS[2]       payloads: hash, job id -> stored job (compact JSON array, see spinach/brokers/redis/payload.py)
-- KEYS[3]       in_flight: hash, task name -> running jobs of that limited task
-- KEYS[4]       seq: counter giving each ready entry its place in line
-- KEYS[5]       queues: set of the namespace's queue names
-- KEYS[6]       future: sorted set of the future jobs of every queue (step future_member)
-- KEYS[6+i]     ready list of the i-th queue of the retried jobs (i = 1..Q)
-- ARGV[1]       now, POSIX seconds
-- ARGV[2]       notification channel (told when a slot frees or a job is back)
-- ARGV[3]       Q, the number of queues of the retried jobs
-- ARGV[4..3+Q]  the queue names, in the order of their keys
-- ARGV[4+Q]     D, the number of jobs that ended for good
-- then          two values per job that ended for good: id, the token it was handed out with
-- then          six values per job to run again: id, token, queue number (1..Q), at (POSIX
--               seconds), task name, new payload
-- Each job is recorded only while its token is still the one it runs under: a worker
-- declared dead cannot overwrite the work of the one that took its jobs over.
-- Returns: one number per job, in the order given: 0 recorded; 1 not ours (unknown job or
--          another token), nothing changed for it.
-- Safe to retry: a job recorded by a first call is not ours any more in the second.

--- @include "place_counter"
--- @include "ready_entry"
--- @include "future_member"
--- @include "running_record"
--- @include "release_slot"

local running, payloads, in_flight, seq, queues, future = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local now, channel = tonumber(ARGV[1]), ARGV[2]
local queue_count = tonumber(ARGV[3])

check_place_counter(seq)

local done_count = tonumber(ARGV[4 + queue_count])
local first_retry = 5 + queue_count + 2 * done_count

local results, notify = {}, false

-- Ends the job if it still runs under token; true when it did.
local function end_running(id, token)
    local record = redis.call("HGET", running, id)
    if not runs_under(record, token) then
        table.insert(results, 1)
        return false
    end
    table.insert(results, 0)
    redis.call("HDEL", running, id)
    local _, task_name = parse_running(record)
    if release_slot(in_flight, task_name) then
        notify = true
    end
    return true
end

for j = 5 + queue_count, first_retry - 1, 2 do
    if end_running(ARGV[j], ARGV[j + 1]) then
        redis.call("HDEL", payloads, ARGV[j])
    end
end

for j = first_retry, #ARGV, 6 do
    local id, queue_number, at, task_name = ARGV[j], tonumber(ARGV[j + 2]), tonumber(ARGV[j + 3]), ARGV[j + 4]
    if end_running(id, ARGV[j + 1]) then
        local queue = ARGV[3 + queue_number]
        redis.call("HSET", payloads, id, ARGV[j + 5])
        redis.call("SADD", queues, queue)
        if at <= now then
            push_ready(seq, KEYS[6 + queue_number], id, task_name)
        else
            redis.call("ZADD", future, at, future_member(id, queue, task_name))
        end
        notify = true
    end
end

if notify then
    redis.call("PUBLISH", channel, "outcomes")
end
return results
