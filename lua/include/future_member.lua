-- A member of the future sorted set (scored by at): the job id (36 characters), the
-- byte length of its queue (8 digits), the queue, then the task name.
local function future_member(id, queue, task_name)
    return id .. string.format("%08d", #queue) .. queue .. task_name
end

-- id, queue, task name of a member; nil when it is not one.
local function parse_future_member(member)
    local length = tonumber(string.sub(member, 37, 44))
    if #member < 44 or length == nil then
        return nil
    end
    return string.sub(member, 1, 36), string.sub(member, 45, 44 + length), string.sub(member, 45 + length)
end
