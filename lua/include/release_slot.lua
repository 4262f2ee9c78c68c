-- Free the concurrency slot a job of task_name held (in_flight: hash, task name ->
-- running jobs of that limited task). Returns true when the task is limited, that is
-- when a job waiting for a slot may start now.
local function release_slot(in_flight, task_name)
    if redis.call("HEXISTS", in_flight, task_name) == 0 then
        return false
    end
    if redis.call("HINCRBY", in_flight, task_name, -1) <= 0 then
        redis.call("HDEL", in_flight, task_name)
    end
    return true
end
