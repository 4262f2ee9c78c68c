-- inspect: what a namespace holds by queue, its workers and its failed store, in one read.
--
-- KEYS[1]  queues: set of the names of the namespace's queues
-- KEYS[2]  future: sorted set of the future jobs (step future_member)
-- KEYS[3]  running: hash, job id -> its record (step running_record)
-- KEYS[4]  payloads: hash, job id -> stored job (compact JSON array, see spinach/brokers/redis/payload.py)
-- KEYS[5]  workers: sorted set, worker id scored by its last heartbeat
-- KEYS[6]  workers_info: hash, worker id -> what it told of itself (JSON text, see heartbeat)
-- KEYS[7]  failed_index: sorted set of the failed store's job ids
-- KEYS[8]  failed_dropped: count of the jobs dropped from the failed store
-- KEYS[9]  future_counts: hash, queue -> its jobs in the future set (step future_count)
-- ARGV[1]  the key prefix of the namespace, "spinach:{<namespace>}:": the ready list,
--          parked set and cancelled set of queue q are <prefix>queue:<q>, <prefix>parked:<q>
--          and <prefix>cancelled:<q> (the same hash slot as the keys above)
-- A queue's ready jobs can start now; its held-back jobs were set aside while their task
-- was at its concurrency or rate limit (a job of such a task that no fetch has reached yet
-- still counts as ready). Cancelled jobs whose entries are still in line count nowhere.
-- A future or running job counts in its own queue, which may be one the queues set does
-- not name; a running job whose payload cannot be read counts for its worker only.
-- Queues with no job are left out. The cost grows with the running jobs, not with the
-- future ones (counted by future_counts), but for the rare reads noted below.
-- Returns: {queues, workers, failed, dropped}; queues a flat array of name, ready, held
--          back, future, running; workers a flat array of id, last heartbeat (text), what
--          it told of itself ("" when nothing), running jobs. Reads only.

--- @include "future_member"
--- @include "payload"
--- @include "ready_entry"
--- @include "parked_member"

local queues_key, future, running, payloads = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local workers, workers_info, failed_index, failed_dropped = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local future_counts = KEYS[9]
local prefix = ARGV[1]

local names, counts = {}, {}
local function counts_of(queue)
    local c = counts[queue]
    if not c then
        c = {ready = 0, held = 0, future = 0, running = 0}
        counts[queue] = c
        table.insert(names, queue)
    end
    return c
end

for _, queue in ipairs(redis.call("SMEMBERS", queues_key)) do
    local c = counts_of(queue)
    local ready = redis.call("LLEN", prefix .. "queue:" .. queue)
    local held = redis.call("ZCARD", prefix .. "parked:" .. queue)
    local cancelled_key = prefix .. "cancelled:" .. queue
    local cancelled, cancelled_held = redis.call("SCARD", cancelled_key), 0
    if cancelled > 0 and held > 0 then
        -- Which of them are held back: a read of the parked set, rare (while a
        -- cancelled job of a task at its limit waits for a slot).
        for _, member in ipairs(redis.call("ZRANGE", prefix .. "parked:" .. queue, 0, -1)) do
            local _, entry = parse_parked_member(member)
            if redis.call("SISMEMBER", cancelled_key, ready_entry_id(entry)) == 1 then
                cancelled_held = cancelled_held + 1
            end
        end
    end
    c.ready = math.max(0, ready - (cancelled - cancelled_held))
    c.held = held - cancelled_held
end

-- The future jobs by queue: the counts the scripts keep, unless they do not add up to
-- the future set (jobs put there by a Spinach without them): then the set itself.
local by_queue, total = redis.call("HGETALL", future_counts), 0
for i = 2, #by_queue, 2 do
    total = total + tonumber(by_queue[i])
end
if total == redis.call("ZCARD", future) then
    for i = 1, #by_queue, 2 do
        counts_of(by_queue[i]).future = tonumber(by_queue[i + 1])
    end
else
    for _, member in ipairs(redis.call("ZRANGE", future, 0, -1)) do
        local _, queue = parse_future_member(member)
        if queue then
            local c = counts_of(queue)
            c.future = c.future + 1
        end
    end
end

local running_by_worker = {}
local records = redis.call("HGETALL", running)
for i = 1, #records, 2 do
    local worker = string.sub(records[i + 1], 1, 32)
    running_by_worker[worker] = (running_by_worker[worker] or 0) + 1
    local queue = payload_queue(redis.call("HGET", payloads, records[i]))
    if queue ~= "" then
        local c = counts_of(queue)
        c.running = c.running + 1
    end
end

local queues = {}
for _, queue in ipairs(names) do
    local c = counts[queue]
    if c.ready + c.held + c.future + c.running > 0 then
        table.insert(queues, queue)
        table.insert(queues, c.ready)
        table.insert(queues, c.held)
        table.insert(queues, c.future)
        table.insert(queues, c.running)
    end
end

local registered = {}
local beats = redis.call("ZRANGE", workers, 0, -1, "WITHSCORES")
for i = 1, #beats, 2 do
    local worker = beats[i]
    table.insert(registered, worker)
    table.insert(registered, beats[i + 1])
    table.insert(registered, redis.call("HGET", workers_info, worker) or "")
    table.insert(registered, running_by_worker[worker] or 0)
end

local dropped = tonumber(redis.call("GET", failed_dropped) or "0") or 0
return {queues, registered, redis.call("ZCARD", failed_index), dropped}
