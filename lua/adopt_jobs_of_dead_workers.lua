-- adopt_jobs_of_dead_workers: take over the running jobs of dead workers.
--
-- KEYS[1]  workers: sorted set, worker id scored by its last heartbeat
-- KEYS[2]  running: hash, job id -> its record (step running_record)
-- KEYS[3]  payloads: hash, job id -> stored job (compact JSON array, see spinach/brokers/redis/payload.py)
-- KEYS[4]  calls: hash, worker id -> its last fetch (see get_jobs_from_queue); the
--          fields of dead workers are removed
-- KEYS[5]  workers_info: hash, worker id -> what it told of itself (see heartbeat); the
--          fields of workers not alive are removed (also those an older Spinach, which
--          did not remove them, left behind)
-- ARGV[1]  silent_since, POSIX seconds: a worker whose last heartbeat is older is dead
-- ARGV[2]  the adopting worker's id
-- ARGV[3]  token prefix, unique to this call
-- ARGV[4..] token prefixes of earlier calls of this worker whose reply was lost: their
--          jobs are adopted again
-- A worker is dead when its last heartbeat is older than silent_since, or when it is not
-- in the workers set at all (it deregistered, or never heartbeated). Its jobs get new
-- tokens under the adopter, keeping their concurrency slots; dead workers are forgotten.
-- A running record without its separator (no Spinach code writes one) still names its
-- worker in its first 32 characters; its task name is read from the payload if it can be.
-- Returns: a flat array of token, job id, payload triples of the adopted jobs; a job
--          with no payload (never written by Spinach) gets an empty one.
-- Safe to retry: a call run again with the same token prefix (a client retrying after
-- a lost reply) returns the jobs the first run adopted, with the same tokens.

--- @include "running_record"
--- @include "payload"

local workers, running, payloads, calls, workers_info = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local silent_since = ARGV[1]
local me, token_prefix = ARGV[2], ARGV[3]

local function lost_before(record)
    for i = 4, #ARGV do
        if string.sub(record, 1, #ARGV[i]) == ARGV[i] then
            return true
        end
    end
    return false
end

local alive = {}
for _, worker in ipairs(redis.call("ZRANGEBYSCORE", workers, silent_since, "+inf")) do
    alive[worker] = true
end
for _, worker in ipairs(redis.call("ZRANGEBYSCORE", workers, "-inf", "(" .. silent_since)) do
    redis.call("HDEL", calls, worker)
end
for _, worker in ipairs(redis.call("HKEYS", workers_info)) do
    if not alive[worker] and worker ~= me then
        redis.call("HDEL", workers_info, worker)
    end
end
redis.call("ZREMRANGEBYSCORE", workers, "-inf", "(" .. silent_since)

local result, adopted = {}, 0
local records = redis.call("HGETALL", running)
for i = 1, #records, 2 do
    local id, record = records[i], records[i + 1]
    local owner = string.sub(record, 1, 32)
    local record_token, task_name, started = parse_running(record)
    if record_token and string.sub(record, 1, #token_prefix) == token_prefix then
        -- Adopted by an earlier run of this very call.
        table.insert(result, record_token)
        table.insert(result, id)
        table.insert(result, redis.call("HGET", payloads, id) or "")
    elseif (owner ~= me and not alive[owner]) or lost_before(record) then
        adopted = adopted + 1
        local token = token_prefix .. adopted
        local payload = redis.call("HGET", payloads, id)
        -- A damaged record's task name: the one its payload gives, if readable.
        task_name = task_name or payload_task_name(payload)
        -- The removal first: a full Redis (noeviction) refuses a script whose first
        -- write adds data, and adoption must go on then (it replaces the record).
        redis.call("HDEL", running, id)
        redis.call("HSET", running, id, running_record(token, started or "", task_name))
        table.insert(result, token)
        table.insert(result, id)
        table.insert(result, payload or "")
    end
end
return result
