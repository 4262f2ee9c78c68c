-- The failed store: failed_jobs, a hash job id -> record (see spinach/_ended.py), and
-- failed_index, a sorted set of the same ids scored by when they failed (POSIX seconds).

-- Put a record in the store; beyond max_failed jobs (a number, or nil for no bound),
-- drop the oldest and add how many to the counter failed_dropped.
local function add_failed(failed_jobs, failed_index, failed_dropped, id, at, record, max_failed)
    redis.call("HSET", failed_jobs, id, record)
    redis.call("ZADD", failed_index, at, id)
    if max_failed then
        local over = redis.call("ZCARD", failed_index) - max_failed
        if over > 0 then
            local oldest = redis.call("ZRANGE", failed_index, 0, over - 1)
            redis.call("ZREMRANGEBYRANK", failed_index, 0, over - 1)
            for _, oldest_id in ipairs(oldest) do
                redis.call("HDEL", failed_jobs, oldest_id)
            end
            redis.call("INCRBY", failed_dropped, over)
        end
    end
end

-- Take a job out of the store; true when it was there.
local function remove_failed(failed_jobs, failed_index, id)
    redis.call("ZREM", failed_index, id)
    return redis.call("HDEL", failed_jobs, id) == 1
end
