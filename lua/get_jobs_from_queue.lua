-- get_jobs_from_queue: hand out up to N ready jobs of one queue, oldest first, within concurrency and rate limits.
--
-- KEYS[1]  ready list of the queue (step ready_entry)
-- KEYS[2]  parked sorted set of the queue: ready entries set aside while their task is at
--          its concurrency or rate limit (step held_back)
-- KEYS[3]  payloads: hash, job id -> stored job (compact JSON array, see spinach/brokers/redis/payload.py)
-- KEYS[4]  running: hash, job id -> its record (step running_record)
-- KEYS[5]  limits: hash, task name -> max concurrency
-- KEYS[6]  in_flight: hash, task name -> running jobs of that limited task
-- KEYS[7]  failed: list of entries that could not be handed out (no payload)
-- KEYS[8]  calls: hash, worker id -> its last fetch: token prefix .. "\n" .. the more
--          flag (1 digit) .. the ids of the jobs it handed out (36 characters each);
--          or, while the worker waits for jobs, the token prefix of its wait .. "\nw"
--          (see wait_for_jobs)
-- KEYS[9]  cancelled set of the queue: ids of cancelled jobs whose entries are still in line
--          (see cancel_job); such an entry is dropped when reached
-- KEYS[10] unique: the unique keys of waiting jobs (step unique_key); a job handed out
--          frees its key
-- KEYS[11] rate_limits: hash, task name -> its rate limit (step rate_limit)
-- KEYS[12] rate_wake: sorted set, the ready list (KEYS[1]) of each queue holding jobs
--          back by a rate limit, scored by when the first of them may start (see
--          move_future_jobs, which wakes the workers then); set by the fetch, which
--          keeps the earliest time not yet due
-- KEYS[13] activity: hash, jobs started and failed per minute (step activity)
-- ARGV[1]  N, the most jobs to hand out
-- ARGV[2]  token prefix, unique to this call (worker id, then a call number)
-- ARGV[3]  now, POSIX seconds: when the jobs are handed out, and the time of the starts
--          counted against rate limits
-- ARGV[4]  the prefix of the namespace's keys, "spinach:{<namespace>}:": the rate log of
--          each rate-limited task is built from it (step rate_limit)
-- ARGV[5]  "w" when the token prefix is that of the worker's last wait for jobs (see
--          wait_for_jobs), else ""
-- The jobs are handed out by step hand_out, which says in which order.
-- Returns: an array: 1 when the call stopped at hand_out's parking budget (call again
--          for more jobs); 2 when it was given the token prefix of a wait whose record
--          in calls is gone (the worker was taken for dead, and its jobs taken over,
--          meanwhile): it hands out nothing (tokens of that prefix may be in rate
--          logs), call again with a new one; else 0. Then the jobs handed out, in one
--          string (one reply element is much cheaper for the client to read than two
--          per job): for each
--          job, its id (36 characters), the length of its payload in bytes, ":", the
--          payload; the k-th job has the token: token prefix .. k. Then the entries that
--          had no payload, if any: they were moved to the failed list, and are returned
--          for the log.
-- Safe to retry: a call run again with the same token prefix (a client retrying after
-- a lost reply) hands out nothing new and returns the jobs of the first run. So does a
-- call with the token prefix of a wait (see wait_for_jobs) whose jobs enqueue_jobs
-- handed out: the reply of that wait may have been lost, or come after it ended. A
-- prefix whose wait got nothing (its record in calls ends with "\nw") is fetched with.

--- @include "hand_out"

local token_prefix = ARGV[2]
local calls = KEYS[8]
local worker = string.sub(token_prefix, 1, 32)

local last = redis.call("HGET", calls, worker)
if last and string.sub(last, 1, #token_prefix + 1) == token_prefix .. "\n" and last ~= token_prefix .. "\nw" then
    local ids = string.sub(last, #token_prefix + 3)
    local jobs = {}
    for k = 1, #ids / 36 do
        local id = string.sub(ids, 36 * k - 35, 36 * k)
        local payload = redis.call("HGET", KEYS[3], id) or ""
        table.insert(jobs, id .. #payload .. ":" .. payload)
    end
    return {tonumber(string.sub(last, #token_prefix + 2, #token_prefix + 2)), table.concat(jobs)}
end
if ARGV[5] == "w" and last ~= token_prefix .. "\nw" then
    return {2, ""}
end
-- The removal first: a full Redis (noeviction) refuses a script whose first write adds
-- data, and fetching must go on then (hand_out replaces the worker's record).
redis.call("HDEL", calls, worker)

local keys = {
    ready = KEYS[1], parked = KEYS[2], payloads = KEYS[3], running = KEYS[4],
    limits = KEYS[5], in_flight = KEYS[6], failed = KEYS[7], calls = calls,
    cancelled = KEYS[9], unique = KEYS[10], rate_limits = KEYS[11], rate_wake = KEYS[12],
    activity = KEYS[13],
}
local more, jobs, no_payload = hand_out(keys, tonumber(ARGV[1]), token_prefix, ARGV[3], ARGV[4])
local result = {more, table.concat(jobs)}
for _, entry in ipairs(no_payload) do
    table.insert(result, entry)
end
return result
