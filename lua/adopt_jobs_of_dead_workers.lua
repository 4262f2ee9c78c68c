-- adopt_jobs_of_dead_workers: take over the running jobs of workers silent for too long.
--
-- KEYS[1]  workers: sorted set, worker id scored by its last heartbeat
-- KEYS[2]  running: hash, job id -> token .. " " .. task name (a token starts with the
--          32-character id of its worker)
-- KEYS[3]  payloads: hash, job id -> stored job (compact JSON array, see _redis_payload.py)
-- KEYS[4]  calls: hash, worker id -> its last fetch (see get_jobs_from_queue); the
--          fields of dead workers are removed
-- ARGV[1]  now, POSIX seconds
-- ARGV[2]  dead_after: seconds without a heartbeat after which a worker is dead
-- ARGV[3]  the adopting worker's id
-- ARGV[4]  token prefix, unique to this call
-- ARGV[5..] token prefixes of earlier calls of this worker whose reply was lost: their
--          jobs are adopted again
-- A worker is dead when its last heartbeat is too old, or when it is not in the workers
-- set at all (it deregistered, or never heartbeated). Its jobs get new tokens under the
-- adopter, keeping their concurrency slots; dead workers are forgotten.
-- Returns: a flat array of token, job id, payload triples of the adopted jobs; a job
--          with no payload (never written by Spinach) gets an empty one.
-- Safe to retry: a call run again with the same token prefix (a client retrying after
-- a lost reply) returns the jobs the first run adopted, with the same tokens.

local workers, running, payloads, calls = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, dead_after = tonumber(ARGV[1]), tonumber(ARGV[2])
local me, token_prefix = ARGV[3], ARGV[4]

local function lost_before(record)
    for i = 5, #ARGV do
        if string.sub(record, 1, #ARGV[i]) == ARGV[i] then
            return true
        end
    end
    return false
end

local alive = {}
local beats = redis.call("ZRANGE", workers, 0, -1, "WITHSCORES")
for i = 1, #beats, 2 do
    if now - tonumber(beats[i + 1]) <= dead_after then
        alive[beats[i]] = true
    end
end
local oldest_alive = "(" .. string.format("%.6f", now - dead_after)
for _, worker in ipairs(redis.call("ZRANGEBYSCORE", workers, "-inf", oldest_alive)) do
    redis.call("HDEL", calls, worker)
end
redis.call("ZREMRANGEBYSCORE", workers, "-inf", oldest_alive)

local result, adopted = {}, 0
local records = redis.call("HGETALL", running)
for i = 1, #records, 2 do
    local id, record = records[i], records[i + 1]
    local owner = string.sub(record, 1, 32)
    local space = string.find(record, " ", 1, true)
    if string.sub(record, 1, #token_prefix) == token_prefix then
        -- Adopted by an earlier run of this very call.
        table.insert(result, string.sub(record, 1, space - 1))
        table.insert(result, id)
        table.insert(result, redis.call("HGET", payloads, id) or "")
    elseif (owner ~= me and not alive[owner]) or lost_before(record) then
        adopted = adopted + 1
        local token = token_prefix .. adopted
        local task_name = string.sub(record, space + 1)
        redis.call("HSET", running, id, token .. " " .. task_name)
        table.insert(result, token)
        table.insert(result, id)
        table.insert(result, redis.call("HGET", payloads, id) or "")
    end
end
return result
