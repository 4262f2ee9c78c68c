-- Jobs started and failed for good per minute, for the dashboard's chart: the activity
-- hash has a field "s<minute>" and "f<minute>" (minute: POSIX seconds // 60) per minute
-- that saw one. Once it holds over 240 fields, a new minute drops those over an hour old:
-- the hash stays small, and the trimming runs about once an hour.
local ACTIVITY_MINUTES = 60

-- Add n jobs of kind ("s" started, "f" failed) to the minute of now (POSIX seconds).
local function count_activity(activity, kind, now, n)
    local minute = math.floor(now / 60)
    if redis.call("HINCRBY", activity, kind .. minute, n) == n
        and redis.call("HLEN", activity) > 4 * ACTIVITY_MINUTES then
        for _, field in ipairs(redis.call("HKEYS", activity)) do
            local of = tonumber(string.sub(field, 2))
            if of == nil or of < minute - ACTIVITY_MINUTES then
                redis.call("HDEL", activity, field)
            end
        end
    end
end
