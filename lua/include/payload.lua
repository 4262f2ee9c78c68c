-- The stored form of a job, as spinach/brokers/redis/payload.py writes and reads it:
-- a compact JSON array [task_name, queue, max_retries, retries, at, task_args, task_kwargs].

-- The payload of a new job without arguments (the job of a periodic task).
local function new_payload(task_name, queue, max_retries, at)
    return "[" .. cjson.encode(task_name) .. "," .. cjson.encode(queue)
        .. "," .. string.format("%d", max_retries)
        .. ",0," .. string.format("%.6f", at) .. ",[],{}]"
end

-- The task name of a payload, or "" when it cannot be read.
local function payload_task_name(payload)
    local ok, fields = pcall(cjson.decode, payload or "")
    if ok and type(fields) == "table" and type(fields[1]) == "string" then
        return fields[1]
    end
    return ""
end

-- The queue of a payload, or "" when it cannot be read.
local function payload_queue(payload)
    local ok, fields = pcall(cjson.decode, payload or "")
    if ok and type(fields) == "table" and type(fields[2]) == "string" then
        return fields[2]
    end
    return ""
end
