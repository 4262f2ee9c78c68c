-- The record of a running job in the running hash (job id -> record): the token it was
-- handed out with (starting with its worker's 32-character id), a space, the task name.
local function running_record(token, task_name)
    return token .. " " .. task_name
end

-- Whether record (false when the job has none) is of a job running under token.
local function runs_under(record, token)
    return record and string.sub(record, 1, #token + 1) == token .. " " or false
end

-- token, task name of a record; nil for a record without its separator (no Spinach
-- code writes one).
local function parse_running(record)
    local space = string.find(record, " ", 1, true)
    if not space then
        return nil
    end
    return string.sub(record, 1, space - 1), string.sub(record, space + 1)
end
