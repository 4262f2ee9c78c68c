-- The unique keys of waiting jobs: unique, a hash holding both ways of each pair, unique
-- key (32 hex digits) -> id of the job holding it, and job id (36 characters) -> its key.
-- A job holds its key from when it is stored until it is handed out or cancelled.

-- The id of the job holding key while it waits (stored, not running), else nil.
local function unique_holder(unique, payloads, running, key)
    local holder = redis.call("HGET", unique, key)
    if holder and redis.call("HEXISTS", payloads, holder) == 1 and redis.call("HEXISTS", running, holder) == 0 then
        return holder
    end
    return nil
end

-- Free the key the job id holds, if any.
local function release_unique(unique, id)
    local key = redis.call("HGET", unique, id)
    if key then
        redis.call("HDEL", unique, id)
        if redis.call("HGET", unique, key) == id then
            redis.call("HDEL", unique, key)
        end
    end
end
