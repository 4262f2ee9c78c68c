-- record_outcomes: record the end of running jobs, each one for good or for another run.
-- Used by record_outcomes, remove_job_from_running and retry_job.
--
-- KEYS[1]       running: hash, job id -> its record (step running_record)
-- KEYS[2]       payloads: hash, job id -> stored job (compact JSON array, see spinach/brokers/redis/payload.py)
-- KEYS[3]       in_flight: hash, task name -> running jobs of that limited task
-- KEYS[4]       seq: counter giving each ready entry its place in line
-- KEYS[5]       queues: set of the namespace's queue names
-- KEYS[6]       future: sorted set of the future jobs of every queue (step future_member)
-- KEYS[7..9]    failed_jobs, failed_index, failed_dropped: the failed store (step failed_store)
-- KEYS[10]      activity: hash, jobs started and failed per minute (step activity)
-- KEYS[11]      future_counts: hash, queue -> its jobs in the future set (step future_count)
-- KEYS[11+i]    ready list of the i-th queue of the retried jobs (i = 1..Q)
-- KEYS[11+Q+r]  result key of the r-th job below that keeps its result (string, its record)
-- ARGV[1]       now, POSIX seconds
-- ARGV[2]       notification channel of the engines (told "outcomes" when a slot frees
--               or a job is back)
-- ARGV[3]       notification channel of job ends (told the ids of the jobs that ended
--               with a record kept, comma-separated)
-- ARGV[4]       the bound of the failed store (a number of jobs), or "" for none
-- ARGV[5]       Q, the number of queues of the retried jobs
-- ARGV[6..5+Q]  the queue names, in the order of their keys
-- then          D, the number of jobs that ended for good keeping nothing, then two values
--               per job: id, the token it was handed out with
-- then          K, the number of jobs that ended for good keeping a record, then four
--               values per job: id, token, the milliseconds to keep its result (0 for a
--               failed job, which goes to the failed store), its outcome (spinach/_ended.py)
-- then          six values per job to run again: id, token, queue number (1..Q), at (POSIX
--               seconds), task name, new payload
-- Each job is recorded only while its token is still the one it runs under: a worker
-- declared dead cannot overwrite the work of the one that took its jobs over.
-- A kept record is the outcome, a newline, and the payload as stored.
-- Returns: one digit per job, in the order given, in one string (one reply element is
--          much cheaper for the client to read than one per job): 0 recorded; 1 not ours
--          (unknown job or another token), nothing changed for it.
-- Safe to retry: a job recorded by a first call is not ours any more in the second.

--- @include "place_counter"
--- @include "ready_entry"
--- @include "future_member"
--- @include "running_record"
--- @include "release_slot"
--- @include "failed_store"
--- @include "activity"
--- @include "future_count"

local running, payloads, in_flight, seq, queues, future = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local failed_jobs, failed_index, failed_dropped, activity = KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local now, channel, ended_channel = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local max_failed = tonumber(ARGV[4])
local queue_count = tonumber(ARGV[5])

check_place_counter(seq)

local done_at = 7 + queue_count
local done_count = tonumber(ARGV[done_at - 1])
local kept_at = done_at + 2 * done_count + 1
local kept_count = tonumber(ARGV[kept_at - 1])
local first_retry = kept_at + 4 * kept_count

local results, notify, ended = {}, false, {}

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

-- The jobs ended keeping nothing, the most common outcome, by batches of 1000: one HMGET
-- and two HDEL per batch rather than commands per job; slots looked at only when some
-- task holds one.
local any_slot = redis.call("EXISTS", in_flight) == 1
local seen = {}
for first = done_at, kept_at - 2, 2000 do
    local last = math.min(first + 1998, kept_at - 2)
    local ids = {}
    for j = first, last, 2 do
        table.insert(ids, ARGV[j])
    end
    local records, ended_ids, ended_tasks = redis.call("HMGET", running, unpack(ids)), {}, {}
    for k, id in ipairs(ids) do
        local record = records[k]
        if seen[id] or not runs_under(record, ARGV[first + 2 * k - 1]) then
            table.insert(results, 1)
        else
            seen[id] = true
            table.insert(results, 0)
            table.insert(ended_ids, id)
            if any_slot then
                local _, task_name = parse_running(record)
                table.insert(ended_tasks, task_name)
            end
        end
    end
    -- The removals first: a full Redis (noeviction) refuses a script whose first write
    -- adds data, and releasing a slot (HINCRBY) may be one.
    if #ended_ids > 0 then
        redis.call("HDEL", running, unpack(ended_ids))
        redis.call("HDEL", payloads, unpack(ended_ids))
    end
    for _, task_name in ipairs(ended_tasks) do
        if release_slot(in_flight, task_name) then
            notify = true
        end
    end
end

local future_counts = KEYS[11]
local result_key, failures = 11 + queue_count, 0
for j = kept_at, first_retry - 1, 4 do
    local id, keep_ms, outcome = ARGV[j], tonumber(ARGV[j + 2]), ARGV[j + 3]
    if keep_ms > 0 then
        result_key = result_key + 1
    end
    if end_running(id, ARGV[j + 1]) then
        local record = outcome .. "\n" .. (redis.call("HGET", payloads, id) or "")
        redis.call("HDEL", payloads, id)
        if keep_ms > 0 then
            redis.call("SET", KEYS[result_key], record, "PX", keep_ms)
        else
            add_failed(failed_jobs, failed_index, failed_dropped, id, now, record, max_failed)
            failures = failures + 1
        end
        table.insert(ended, id)
    end
end

for j = first_retry, #ARGV, 6 do
    local id, queue_number, at, task_name = ARGV[j], tonumber(ARGV[j + 2]), tonumber(ARGV[j + 3]), ARGV[j + 4]
    if end_running(id, ARGV[j + 1]) then
        local queue = ARGV[5 + queue_number]
        redis.call("HSET", payloads, id, ARGV[j + 5])
        redis.call("SADD", queues, queue)
        if at <= now then
            push_ready(seq, KEYS[11 + queue_number], id, task_name)
        elseif redis.call("ZADD", future, at, future_member(id, queue, task_name)) == 1 then
            count_future(future_counts, queue, 1)
        end
        notify = true
    end
end

if failures > 0 then
    count_activity(activity, "f", now, failures)
end
if notify then
    redis.call("PUBLISH", channel, "outcomes")
end
if #ended > 0 then
    redis.call("PUBLISH", ended_channel, table.concat(ended, ","))
end
return table.concat(results)
