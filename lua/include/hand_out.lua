-- Hand out up to max_jobs ready jobs of one queue to one fetch, oldest first, within
-- concurrency and rate limits: the step behind get_jobs_from_queue, and behind
-- enqueue_jobs when it hands its jobs straight to a worker waiting for them (see
-- wait_for_jobs).
--
-- k: the keys, as the fields ready, parked, payloads, running, limits, in_flight,
--    failed, calls, cancelled, unique, rate_limits, rate_wake and activity (see
--    get_jobs_from_queue, or queue_keys for the same keys made from the namespace's
--    key prefix); key_prefix: that prefix, "spinach:{<namespace>}:" (the rate log of
--    each rate-limited task is built from it, step rate_limit).
-- token_prefix: unique to the fetch (its worker's id, then a call number); the k-th job
--    handed out has the token token_prefix .. k. now: POSIX seconds, as text.
-- A parked entry is always older than every entry of the ready list: it was the head
-- of the list when it was parked. So parked jobs whose task has a free slot go first,
-- and a fetch costs the jobs it hands out plus the jobs it parks, never the jobs
-- already waiting behind a limit.
-- At most 1000 entries are parked per call, so that no call blocks Redis for long.
-- Records the fetch in calls (worker id -> token prefix .. "\n" .. the more flag ..
-- the ids handed out), so that it can be asked for again (see get_jobs_from_queue).
-- Returns: 1 when it stopped at that parking budget (call again for more jobs), else
-- 0; the jobs handed out, each as its id (36 characters), the length of its payload in
-- bytes, ":", the payload; and the entries that had no payload (moved to the failed
-- list, for the log).

--- @include "ready_entry"
--- @include "held_back"
--- @include "running_record"
--- @include "unique_key"
--- @include "rate_limit"
--- @include "activity"

local function hand_out(k, max_jobs, token_prefix, now, key_prefix)
    local ready, parked, payloads, running = k.ready, k.parked, k.payloads, k.running
    local limits_key, in_flight_key, failed, calls = k.limits, k.in_flight, k.failed, k.calls
    local cancelled, unique = k.cancelled, k.unique
    local worker = string.sub(token_prefix, 1, 32)
    local limits, in_flight = {}, {}
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
    local rate_pairs = redis.call("HGETALL", k.rate_limits)
    for i = 1, #rate_pairs, 2 do
        local task_name = rate_pairs[i]
        local starts, period = parse_rate_limit(rate_pairs[i + 1])
        -- A value that is not a limit (no Spinach code writes one) limits nothing, but
        -- the task's parked jobs must still be reached.
        if starts then
            rates[task_name] = {starts = starts, period = period, log = rate_log_key(key_prefix, task_name)}
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
                local score = redis.call("ZSCORE", k.rate_wake, ready)
                local wake = score and tonumber(score) or nil
                if wake == nil or wake <= now_seconds or free_at < wake then
                    redis.call("ZADD", k.rate_wake, free_at, ready)
                end
            end
        end
    end
    if #handed_ids > 0 then
        count_activity(k.activity, "s", now_seconds, #handed_ids)
    end

    local more = park_budget == 0 and 1 or 0
    redis.call("HSET", calls, worker, token_prefix .. "\n" .. more .. table.concat(handed_ids))
    return more, jobs, no_payload
end
