-- wait_for_jobs: register a worker as waiting for jobs of a queue, unless some are in line.
--
-- KEYS[1]  ready list of the queue
-- KEYS[2]  waiting: sorted set of the queue, one member per wait, token prefix of the
--          wait .. the most jobs it takes, scored by when the wait is over (POSIX
--          seconds); enqueue_jobs hands jobs of the queue out to the wait of the
--          highest score not over yet
-- KEYS[3]  calls: hash, worker id -> its last fetch (see get_jobs_from_queue); a
--          waiting worker's is the token prefix of its wait .. "\nw", which every
--          later fetch, end (deregister_worker, requeue_lost_handouts) or takeover
--          (adopt_jobs_of_dead_workers) of the worker replaces: a wait is live while
--          it is there
-- KEYS[4]  inbox of the worker: list where enqueue_jobs puts the jobs it hands out to
--          the wait (token prefix .. "\n" .. a reply of get_jobs_from_queue's form,
--          the more flag then the jobs), and where the worker's wake-ups put ""
-- ARGV[1]  token prefix of the wait (worker id, then a call number)
-- ARGV[2]  the most jobs the worker takes
-- ARGV[3]  now, POSIX seconds
-- ARGV[4]  when the wait is over, POSIX seconds
-- ARGV[5]  the member of this worker's previous wait, if any, else ""
-- The worker then blocks on its inbox (BLPOP) until jobs come, it is woken up, or its
-- wait is over; then it fetches with the token prefix of its wait, unless the jobs
-- came, which returns the jobs handed out to it meanwhile, if any (a lost reply, or
-- one that came after it stopped waiting).
-- Returns: 1 when the worker waits; 0 when jobs are in line (fetch them instead).
-- Safe to retry: a second call registers the same wait again, or, when jobs were
-- handed out to the wait since the first (whose reply was lost), changes nothing and
-- returns 1: they are in the inbox, and the next fetch returns them.

local ready, waiting, calls, inbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local token_prefix, max_jobs, over = ARGV[1], ARGV[2], ARGV[4]
local worker = string.sub(token_prefix, 1, 32)

local last = redis.call("HGET", calls, worker)
if last and string.sub(last, 1, #token_prefix + 1) == token_prefix .. "\n" and last ~= token_prefix .. "\nw" then
    return 1
end
-- The removals first: a full Redis (noeviction) refuses a script whose first write adds data.
if ARGV[5] ~= "" then
    redis.call("ZREM", waiting, ARGV[5])
end
redis.call("DEL", inbox)
if redis.call("LLEN", ready) > 0 then
    return 0
end
-- Waits of any worker that are over go.
redis.call("ZREMRANGEBYSCORE", waiting, "-inf", "(" .. ARGV[3])
redis.call("HSET", calls, worker, token_prefix .. "\nw")
redis.call("ZADD", waiting, over, token_prefix .. max_jobs)
return 1
