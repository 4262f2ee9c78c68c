-- An entry of a ready list: its place in line (12 hex digits, from the place counter),
-- the job id (36 characters), then the task name. Entries sort by place as strings.
local function ready_entry(place, id, task_name)
    return string.format("%012x", place) .. id .. task_name
end

local function ready_entry_id(entry)
    return string.sub(entry, 13, 48)
end

local function ready_entry_task(entry)
    return string.sub(entry, 49)
end

-- Push a job at the tail of a ready list, with the next place of the counter seq.
local function push_ready(seq, ready, id, task_name)
    redis.call("RPUSH", ready, ready_entry(redis.call("INCR", seq), id, task_name))
end
