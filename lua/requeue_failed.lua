-- requeue_failed: move jobs from the failed store to the tail of their queues.
--
-- KEYS[1]       failed_jobs: hash, job id -> record (step failed_store)
-- KEYS[2]       failed_index: sorted set of the same ids, scored by when they failed
-- KEYS[3]       payloads: hash, job id -> stored job (compact JSON array, see spinach/brokers/redis/payload.py)
-- KEYS[4]       seq: counter giving each ready entry its place in line
-- KEYS[5]       queues: set of the namespace's queue names
-- KEYS[5+i]     ready list of the i-th queue (i = 1..Q)
-- ARGV[1]       notification channel (told when jobs were queued)
-- ARGV[2]       Q, the number of queues
-- ARGV[3..2+Q]  the queue names, in the order of their keys
-- then          four values per job: id, queue number (1..Q), task name, the payload to
--               store (the client read it from the record and reset it: retries 0, at now)
-- A job leaves the store and enters its queue in one step; a job no longer in the store
-- (requeued or purged meanwhile) is skipped, and so is one whose id has a payload
-- already (it then only leaves the store).
-- Returns: the number of jobs queued.
-- Safe to retry: a job queued by a first call is no longer in the store.

--- @include "place_counter"
--- @include "ready_entry"
--- @include "failed_store"

local failed_jobs, failed_index, payloads, seq, queues = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local channel, queue_count = ARGV[1], tonumber(ARGV[2])

check_place_counter(seq)

local queued = 0
for j = 3 + queue_count, #ARGV, 4 do
    local id, queue_number, task_name, payload = ARGV[j], tonumber(ARGV[j + 1]), ARGV[j + 2], ARGV[j + 3]
    if remove_failed(failed_jobs, failed_index, id) and redis.call("HEXISTS", payloads, id) == 0 then
        redis.call("HSET", payloads, id, payload)
        redis.call("SADD", queues, ARGV[2 + queue_number])
        push_ready(seq, KEYS[5 + queue_number], id, task_name)
        queued = queued + 1
    end
end
if queued > 0 then
    redis.call("PUBLISH", channel, "requeued")
end
return queued
