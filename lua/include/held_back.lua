-- Jobs held back: ready entries set aside in their queue's parked sorted set (step
-- parked_member) while their task is at its concurrency limit or its rate limit.

--- @include "parked_member"

-- The tasks whose jobs may be held back: those in the hash limits (concurrency) or in
-- the hash rate_limits (step rate_limit), as a set.
local function limited_tasks(limits, rate_limits)
    local limited = {}
    for _, key in ipairs({limits, rate_limits}) do
        for _, task_name in ipairs(redis.call("HKEYS", key)) do
            limited[task_name] = true
        end
    end
    return limited
end

-- Put the parked entries of tasks not in the set limited back at the head of the ready
-- list, in their order: they are older than every entry of that list.
local function release_parked(ready, parked, limited)
    local released = {}
    for _, member in ipairs(redis.call("ZRANGE", parked, 0, -1)) do
        local task_name, entry = parse_parked_member(member)
        if not limited[task_name] then
            redis.call("ZREM", parked, member)
            table.insert(released, entry)
        end
    end
    table.sort(released)
    for k = #released, 1, -1 do
        redis.call("LPUSH", ready, released[k])
    end
end
