-- get_job: what the namespace holds of one job, wherever it is.
--
-- KEYS[1]  running: hash, job id -> its record (step running_record)
-- KEYS[2]  payloads: hash, job id -> stored job (compact JSON array, see spinach/brokers/redis/payload.py)
-- KEYS[3]  failed_jobs: hash, job id -> record of a failed job (step failed_store)
-- KEYS[4]  the job's result key (string, the record of a job that succeeded, kept a while)
-- ARGV[1]  the job id
-- Returns: {1, payload, running record} for a running job; {2, payload} for a stored job
--          not running (queued or waiting); {3, record} for a job of the failed store;
--          {4, record} for a job whose result is kept; {0} when nothing of it is held.
-- Read only: one script, so that a job moving meanwhile is seen on one side of the move.

local running, payloads, failed_jobs, result = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id = ARGV[1]

local payload = redis.call("HGET", payloads, id)
if payload then
    local record = redis.call("HGET", running, id)
    if record then
        return {1, payload, record}
    end
    return {2, payload}
end
local failed = redis.call("HGET", failed_jobs, id)
if failed then
    return {3, failed}
end
local kept = redis.call("GET", result)
if kept then
    return {4, kept}
end
return {0}
