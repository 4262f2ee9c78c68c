-- Rate limits. The hash rate_limits maps a task name to "<starts> <period>": at most
-- that many of its jobs start within any period (seconds) of the broker's clock. The
-- starts are counted in a sorted set per task, the task's rate log: key
-- <namespace prefix> .. "rate:" .. task name, one member per job handed out (its
-- hand-out token), scored by the time it was handed out. Members a period old leave
-- it; it expires a period (and a second) after its last start.

-- starts, period of a rate_limits value; nil when it is not one.
local function parse_rate_limit(value)
    local starts, period = string.match(value, "^(%d+) ([%d.e+-]+)$")
    starts, period = tonumber(starts), tonumber(period)
    if starts == nil or period == nil or starts < 1 or period <= 0 then
        return nil
    end
    return starts, period
end

local function rate_log_key(prefix, task_name)
    return prefix .. "rate:" .. task_name
end
