-- register_periodic_tasks: store the periodic schedule of the given tasks.
--
-- KEYS[1]  periodic: hash, task name -> JSON {queue, max_retries, period}
-- KEYS[2]  periodic_next: sorted set, task name scored by its next run
-- KEYS[3]  queues: set of the namespace's queue names
-- ARGV[1]  now, POSIX seconds
-- ARGV[2..] four values per task: name, period (seconds; 0: not periodic), queue,
--          max_retries
-- A task new to the namespace, or whose period changed, or whose schedule was lost, runs
-- first one period from now; a task registered again unchanged keeps its next run; a
-- task given with period 0 is no longer periodic. Tasks not given are left as they are.
-- Returns: the number of periodic tasks of the namespace.
-- Safe to retry.

local periodic, periodic_next, queues = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[1])

for j = 2, #ARGV, 4 do
    local task_name, period = ARGV[j], tonumber(ARGV[j + 1])
    local queue, max_retries = ARGV[j + 2], tonumber(ARGV[j + 3])
    if period <= 0 then
        redis.call("HDEL", periodic, task_name)
        redis.call("ZREM", periodic_next, task_name)
    else
        -- A definition that is not valid JSON (no Spinach code writes one) is replaced.
        local ok, existing = pcall(cjson.decode, redis.call("HGET", periodic, task_name) or "")
        local scheduled = redis.call("ZSCORE", periodic_next, task_name)
        -- The removal first: a full Redis (noeviction) refuses a script whose first
        -- write adds data, and workers must start then (the definition is replaced).
        redis.call("HDEL", periodic, task_name)
        if not ok or type(existing) ~= "table" or existing.period ~= period or not scheduled then
            redis.call("ZADD", periodic_next, now + period, task_name)
        end
        local definition = {queue = queue, max_retries = max_retries, period = period}
        redis.call("HSET", periodic, task_name, cjson.encode(definition))
        redis.call("SADD", queues, queue)
    end
end
return redis.call("HLEN", periodic)
