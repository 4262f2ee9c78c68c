-- cancel_job: take a waiting, queued or running job out for good, and keep its record CANCELLED.
--
-- KEYS[1]  payloads: hash, job id -> stored job (compact JSON array, see spinach/brokers/redis/payload.py)
-- KEYS[2]  running: hash, job id -> its record (step running_record)
-- KEYS[3]  in_flight: hash, task name -> running jobs of that limited task (step release_slot)
-- KEYS[4]  future: sorted set of the future jobs (step future_member)
-- KEYS[5]  unique: the unique keys of waiting jobs (step unique_key)
-- KEYS[6]  the job's result key: its record is kept there (string, like a kept result)
-- KEYS[7]  future_counts: hash, queue -> its jobs in the future set (step future_count)
-- ARGV[1]  the job id
-- ARGV[2]  the outcome, JSON text (see spinach/_ended.py)
-- ARGV[3]  milliseconds the record is kept
-- ARGV[4]  notification channel: told "cancel <id>" when the job was running
-- ARGV[5]  channel of job ends: told the id
-- ARGV[6]  the key prefix of the namespace, for the cancelled set of the job's queue
-- A running job leaves the running hash: the outcome its worker records later is not its
-- own any more. A future job leaves the future set. A ready job's entry stays in its ready
-- list or parked set, where finding it would cost a scan: its id goes to the set
-- <prefix>cancelled:<queue>, and the fetch that reaches the entry (which has no payload
-- any more) drops it. Counting subtracts that set.
-- Returns: nil when the namespace holds no such job; else {status, payload}, status the
--          job's before: 1 waiting, 2 queued, 3 running.
-- Safe to retry: a second call finds no payload and returns nil.

--- @include "running_record"
--- @include "release_slot"
--- @include "future_member"
--- @include "unique_key"
--- @include "future_count"

local payloads, running, in_flight, future_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local unique, result, future_counts = KEYS[5], KEYS[6], KEYS[7]
local id, outcome, keep_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local channel, ended_channel, prefix = ARGV[4], ARGV[5], ARGV[6]

local payload = redis.call("HGET", payloads, id)
if not payload then
    return nil
end
local status
local record = redis.call("HGET", running, id)
if record then
    status = 3
    redis.call("HDEL", running, id)
    local _, task_name = parse_running(record)
    if task_name then
        release_slot(in_flight, task_name)
    end
else
    release_unique(unique, id)
    local ok, fields = pcall(cjson.decode, payload)
    local task_name, queue = "", ""
    if ok and type(fields) == "table" and type(fields[1]) == "string" and type(fields[2]) == "string" then
        task_name, queue = fields[1], fields[2]
    end
    if redis.call("ZREM", future_key, future_member(id, queue, task_name)) == 1 then
        status = 1
        count_future(future_counts, queue, -1)
    else
        status = 2
        if queue ~= "" then
            redis.call("SADD", prefix .. "cancelled:" .. queue, id)
        end
        -- Else the payload cannot be read: the fetch that reaches its entry sets the
        -- entry aside in the failed list, as for any entry without a payload.
    end
end
redis.call("HDEL", payloads, id)
redis.call("SET", result, outcome .. "\n" .. payload, "PX", keep_ms)
if status == 3 then
    redis.call("PUBLISH", channel, "cancel " .. id)
end
redis.call("PUBLISH", ended_channel, id)
return {status, payload}
