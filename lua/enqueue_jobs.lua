-- enqueue_jobs: store jobs, ready ones at the tail of their queue, future ones aside until due.
--
-- KEYS[1]       payloads: hash, job id -> job JSON (every stored job)
-- KEYS[2]       seq: counter giving each ready entry its place in line
-- KEYS[3]       queues: set of the namespace's queue names
-- KEYS[4]       marker of this call: a string key named after an id unique to the call
--               (the same when the call is sent again)
-- KEYS[3+2i]    ready list of the i-th queue of this call (i = 1..Q)
-- KEYS[4+2i]    future sorted set of the i-th queue of this call
-- ARGV[1]       now, POSIX seconds
-- ARGV[2]       notification channel
-- ARGV[3]       seconds the marker is kept; 0: no marker
-- ARGV[4]       Q, the number of queues in this call
-- ARGV[5..4+Q]  the queue names, in the order of their keys
-- ARGV[5+Q..]   five values per job: id, queue number (1..Q), at, task name, payload
-- Entries: a ready list holds seq (16 digits) .. id (36 chars) .. task name;
--          a future set holds id .. task name, scored by at.
-- Returns: the number of jobs stored.
-- Safe to retry: a job whose id is already stored is skipped; with a marker, a call sent
-- again (after a lost reply) stores nothing, even if its jobs already ran and were removed.

local payloads, seq, queues, marker = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = tonumber(ARGV[1])
local channel = ARGV[2]
local marker_seconds = tonumber(ARGV[3])
local queue_count = tonumber(ARGV[4])

if marker_seconds > 0 and not redis.call("SET", marker, "1", "NX", "EX", marker_seconds) then
    return 0
end
for i = 1, queue_count do
    redis.call("SADD", queues, ARGV[4 + i])
end

local stored = 0
for j = 5 + queue_count, #ARGV, 5 do
    local id, queue_number, at = ARGV[j], tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2])
    local task_name, payload = ARGV[j + 3], ARGV[j + 4]
    if redis.call("HSETNX", payloads, id, payload) == 1 then
        stored = stored + 1
        if at <= now then
            local place = string.format("%016d", redis.call("INCR", seq))
            redis.call("RPUSH", KEYS[3 + 2 * queue_number], place .. id .. task_name)
        else
            redis.call("ZADD", KEYS[4 + 2 * queue_number], at, id .. task_name)
        end
    end
end

if stored > 0 then
    -- Ready jobs can start; a future one may be due before idle engines look again.
    redis.call("PUBLISH", channel, "stored")
end
return stored
