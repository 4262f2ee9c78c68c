-- The stored form of a job, as spinach/brokers/redis/payload.py writes and reads it:
-- a compact JSON array [task_name, queue, max_retries, retries, at, task_args, task_kwargs].

-- The payload of a new job without arguments (the job of a periodic task).
local function new_payload(task_name, queue, max_retries, at)
    return "[" .. cjson.encode(task_name) .. "," .. cjson.encode(queue)
        .. "," .. string.format("%d", max_retries)
        .. ",0," .. string.format("%.6f", at) .. ",[],{}]"
end

-- Field i of a payload (1 the task name, 2 the queue) when it is a string, else "" (a
-- payload that cannot be read).
local function payload_text(payload, i)
    local ok, fields = pcall(cjson.decode, payload or "")
    if ok and type(fields) == "table" and type(fields[i]) == "string" then
        return fields[i]
    end
    return ""
end

local function payload_task_name(payload)
    return payload_text(payload, 1)
end

local function payload_queue(payload)
    return payload_text(payload, 2)
end
