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
--          flag (1 digit) .. the ids of the jobs it handed out (36 characters each)
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
-- A parked entry is always older than every entry of the ready list: it was the head
-- of the list when it was parked. So parked jobs whose task has a free slot go first,
-- and a fetch costs the jobs it hands out plus the jobs it parks, never the jobs
-- already waiting behind a limit.
-- At most 1000 entries are parked per call, so that no call blocks Redis for long.
-- Returns: an array: 1 when the call stopped at that parking budget (call again for
--          more jobs), else 0; then the jobs handed out, in one string (one reply
--          element is much cheaper for the client to read than two per job): for each
--          job, its id (36 characters), the length of its payload in bytes, ":", the
--          payload; the k-th job has the token: token prefix .. k. Then the entries that
--          had no payload, if any: they were moved to the failed list, and are returned
--          for the log.
-- Safe to retry: a call run again with the same token prefix (a client retrying after
-- a lost reply) hands out nothing new and returns the jobs of the first run.

--- @include "ready_entry"
--- @include "held_back"
--- @include "running_record"
--- @include "unique_key"
--- @include "rate_limit"
--- @include "activity"

local ready, parked, payloads, running = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local limits_key, in_flight_key, failed, calls = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local max_jobs = tonumber(ARGV[1])
local token_prefix = ARGV[2]
local now = ARGV[3]
local worker = string.sub(token_prefix, 1, 32)

local last = redis.call("HGET", calls, worker)
if last and string.sub(last, 1, #token_prefix + 1) == token_prefix .. "\n" then
    local ids = string.sub(last, #token_prefix + 3)
    local jobs = {}
    for k = 1, #ids / 36 do
        local id = string.sub(ids, 36 * k - 35, 36 * k)
        local payload = redis.call("HGET", payloads, id) or ""
        table.insert(jobs, id .. #payload .. ":" .. payload)
    end
    return {tonumber(string.sub(last, #token_prefix + 2, #token_prefix + 2)), table.concat(jobs)}
end
-- The removal first: a full Redis (noeviction) refuses a script whose first write adds
-- data, and fetching must go on then (it replaces the worker's record, set below).
redis.call("HDEL", calls, worker)

local limits, in_flight = {}, {}
local cancelled, unique = KEYS[9], KEYS[10]
-- One look per call: what a fetch costs when no task is unique does not grow.
local any_unique = redis.call("EXISTS", unique) == 1

-- Every task with a limit of either kind.
local limited_names = {}
local limit_pairs = redis.call("HGETALL", limits_key)
for i = 1, #limit_pairs, 2 do
    limits[limit_pairs[i]] = tonumber(limit_pairs[i + 1])
    table.insert(limited_names, limit_pairs[i])
end
if next(limits) ~= nil then
    local count_pairs = redis.call("HGETALL", in_flight_key)
    for i = 1, #count_pairs, 2 do
        in_flight[count_pairs[i]] = tonumber(count_pairs[i + 1])
    end
end
-- Rate-limited tasks: task name -> {starts, period, log key, count}; count is the
-- number of starts within the period, read once per call when first needed.
local rates = {}
local rate_pairs = redis.call("HGETALL", KEYS[11])
for i = 1, #rate_pairs, 2 do
    local task_name = rate_pairs[i]
    local starts, period = parse_rate_limit(rate_pairs[i + 1])
    -- A value that is not a limit (no Spinach code writes one) limits nothing, but
    -- the task's parked jobs must still be reached.
    if starts then
        rates[task_name] = {starts = starts, period = period, log = rate_log_key(ARGV[4], task_name)}
    end
    if limits[task_name] == nil then
        table.insert(limited_names, task_name)
    end
end
local limited = #limited_names > 0
local now_seconds = tonumber(now)

local function rate_full(rate)
    if rate.count == nil then
        redis.call("ZREMRANGEBYSCORE", rate.log, "-inf", now_seconds - rate.period)
        rate.count = redis.call("ZCARD", rate.log)
    end
    return rate.count >= rate.starts
end

local function at_limit(task_name)
    local limit, rate = limits[task_name], rates[task_name]
    return (limit ~= nil and (in_flight[task_name] or 0) >= limit) or (rate ~= nil and rate_full(rate))
end

-- The oldest parked member of a task (nil when it has none), and the task's prefix.
local function first_parked(task_name)
    local prefix = task_prefix(task_name)
    return redis.call("ZRANGEBYLEX", parked, "[" .. prefix, "(" .. prefix .. "\255", "LIMIT", 0, 1)[1], prefix
end

-- The oldest parked entry of a task with a free slot, removed from the parked set.
local function pop_parked()
    local best, best_prefix
    for _, task_name in ipairs(limited_names) do
        if not at_limit(task_name) then
            local member, prefix = first_parked(task_name)
            if member and (best == nil or string.sub(member, #prefix + 1) < string.sub(best, #best_prefix + 1)) then
                best, best_prefix = member, prefix
            end
        end
    end
    if best == nil then
        return nil
    end
    redis.call("ZREM", parked, best)
    return string.sub(best, #best_prefix + 1)
end

local park_budget = 1000

-- The head of the ready list, after parking the blocked entries in front of it.
local function pop_ready()
    local entry = redis.call("LPOP", ready)
    while entry and limited and at_limit(ready_entry_task(entry)) do
        redis.call("ZADD", parked, 0, parked_member(ready_entry_task(entry), entry))
        park_budget = park_budget - 1
        if park_budget == 0 then
            return nil
        end
        entry = redis.call("LPOP", ready)
    end
    return entry
end

local handed, jobs, handed_ids, no_payload = 0, {}, {}, {}

-- An entry whose job has no payload: a cancelled job's (dropped), else damage (moved
-- to the failed list, and returned for the log).
local function drop(entry, id)
    if redis.call("SREM", cancelled, id) == 0 then
        redis.call("RPUSH", failed, entry)
        table.insert(no_payload, entry)
    end
end

-- Without limits, by batches: one LPOP, one HMGET and one HSET for up to 1000 jobs,
-- rather than three commands per job.
while not limited and handed < max_jobs do
    local entries = redis.call("LPOP", ready, math.min(max_jobs - handed, 1000))
    if not entries then
        break
    end
    local ids, records = {}, {}
    for i, entry in ipairs(entries) do
        ids[i] = ready_entry_id(entry)
    end
    local found = redis.call("HMGET", payloads, unpack(ids))
    for i, entry in ipairs(entries) do
        local id, payload = ids[i], found[i]
        if any_unique then
            release_unique(unique, id)
        end
        if not payload then
            drop(entry, id)
        else
            handed = handed + 1
            table.insert(records, id)
            table.insert(records, running_record(token_prefix .. handed, now, ready_entry_task(entry)))
            table.insert(jobs, id .. #payload .. ":" .. payload)
            table.insert(handed_ids, id)
        end
    end
    if #records > 0 then
        redis.call("HSET", running, unpack(records))
    end
end

while limited and handed < max_jobs do
    local entry = pop_parked() or pop_ready()
    if not entry then
        break
    end
    local id, task_name = ready_entry_id(entry), ready_entry_task(entry)
    local payload = redis.call("HGET", payloads, id)
    if any_unique then
        release_unique(unique, id)
    end
    if not payload then
        drop(entry, id)
    else
        handed = handed + 1
        local token = token_prefix .. handed
        redis.call("HSET", running, id, running_record(token, now, task_name))
        if limits[task_name] then
            in_flight[task_name] = (in_flight[task_name] or 0) + 1
            redis.call("HINCRBY", in_flight_key, task_name, 1)
        end
        local rate = rates[task_name]
        if rate then
            rate_full(rate)
            redis.call("ZADD", rate.log, now_seconds, token)
            rate.count, rate.started = rate.count + 1, true
        end
        table.insert(jobs, id .. #payload .. ":" .. payload)
        table.insert(handed_ids, id)
    end
end
-- A rate-limited task held back with jobs parked here (whatever else holds them):
-- the workers are woken (by move_future_jobs) when its oldest start within the
-- period leaves it, a microsecond past the period so that it has left it whatever
-- the rounding of the times.
for task_name, rate in pairs(rates) do
    if rate.started then
        redis.call("PEXPIRE", rate.log, math.ceil(rate.period * 1000) + 1000)
    end
    if rate_full(rate) then
        if first_parked(task_name) then
            local rank = rate.count - rate.starts
            local oldest = tonumber(redis.call("ZRANGE", rate.log, rank, rank, "WITHSCORES")[2])
            local free_at = oldest + rate.period + 0.000001
            -- The earliest is kept, but for one already due: this fetch is what it
            -- woke the workers for.
            local score = redis.call("ZSCORE", KEYS[12], ready)
            local wake = score and tonumber(score) or nil
            if wake == nil or wake <= now_seconds or free_at < wake then
                redis.call("ZADD", KEYS[12], free_at, ready)
            end
        end
    end
end
local more = park_budget == 0 and 1 or 0
if #handed_ids > 0 then
    count_activity(KEYS[13], "s", now_seconds, #handed_ids)
end
redis.call("HSET", calls, worker, token_prefix .. "\n" .. more .. table.concat(handed_ids))
local result = {more, table.concat(jobs)}
for _, entry in ipairs(no_payload) do
    table.insert(result, entry)
end
return result
