-- A member of a queue's parked sorted set (entries set aside while their task is at its
-- concurrency limit; all scored 0): the byte length of the task name (8 digits), the
-- task name, then the ready entry. The entries of one task sort together, oldest first.
local function task_prefix(task_name)
    return string.format("%08d", #task_name) .. task_name
end

local function parked_member(task_name, entry)
    return task_prefix(task_name) .. entry
end

-- task name, ready entry of a member.
local function parse_parked_member(member)
    local length = tonumber(string.sub(member, 1, 8))
    return string.sub(member, 9, 8 + length), string.sub(member, 9 + length)
end
